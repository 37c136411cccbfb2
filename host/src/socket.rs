//! WebSocket connections the component asked for: one tokio task per
//! connection (tokio-tungstenite), reading and writing concurrently so a slow
//! write never stops reads. What is read goes to the actor bounded in bytes
//! ([`IoSink`]): when the component is behind, the reader stops reading and
//! TCP backpressure makes the connector buffer. Nothing here waits on the
//! gateway. Also the dial policy: only the configured connector's scheme,
//! host and port are dialed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::AbortHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue, Uri};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};

/// Close code for a connection lost without a close frame (RFC 6455 §7.4.1).
pub(crate) const CLOSE_ABNORMAL: u16 = 1006;
/// Close code for a message over the size limit.
pub(crate) const CLOSE_TOO_BIG: u16 = 1009;
/// Close code for a keepalive timeout (spec §1.3).
pub(crate) const CLOSE_INTERNAL: u16 = 1011;
/// A close frame without a status code.
const CLOSE_NO_STATUS: u16 = 1005;
/// How long a closing connection waits for the peer's close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(1);
/// Longest close reason a close frame can carry (125 - 2 bytes of code).
const CLOSE_REASON_MAX_BYTES: usize = 123;

/// A connection of the current instance, by the component's `conn` id.
pub(crate) struct Conn {
    /// Host-unique id; events carrying another token are stale.
    pub token: u64,
    /// Queue to the connection's writer; never blocks.
    pub out: mpsc::UnboundedSender<Outgoing>,
    /// The connection task; aborted when closed before it opened.
    pub task: AbortHandle,
    /// Whether `on-open` was reported.
    pub open: bool,
}

/// Host-unique connection tokens (a `conn` id may be reused by the component
/// or by the next instance; stale events are recognised by their token).
static NEXT_TOKEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A fresh connection token.
pub(crate) fn next_token() -> u64 {
    NEXT_TOKEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Tungstenite's read chunk. Its default (128 KiB) is zero-filled before
/// every read and stays resident per connection: with many idle adapters
/// that is most of their memory, and with small frames most of a read's
/// cost. Larger messages still grow the buffer as needed.
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// Most queued messages written behind one flush.
const WRITE_BURST: usize = 64;

/// What the writer sends.
pub(crate) enum Outgoing {
    /// One text message.
    Text(String),
    /// A close frame; the connection ends after it.
    Close(u16, String),
}

/// Something that happened on a connection, for the actor.
pub(crate) struct IoEvent {
    pub conn: u32,
    pub token: u64,
    pub kind: IoKind,
}

/// Kinds of [`IoEvent`].
pub(crate) enum IoKind {
    Opened,
    DialFailed {
        code: u16,
        reason: String,
    },
    /// Tungstenite's own buffer, passed on without a copy, and the read
    /// credit it holds until the component has taken it.
    Text(Utf8Bytes, Credit),
    Binary(Vec<u8>, Credit),
    Closed {
        code: u16,
        reason: String,
    },
}

/// Smallest read budget of one adapter (see [`IoSink::new`]).
const MIN_READ_BUDGET: usize = 4 << 20;

/// Where an adapter's connection tasks report, with its read budget: bytes
/// read from any of its connections and not yet fed to the component. A
/// reader that finds the budget spent waits (stops reading the socket)
/// until the actor has fed earlier messages, so a connector that streams
/// faster than the component works meets TCP backpressure instead of
/// growing host memory.
#[derive(Clone, Debug)]
pub(crate) struct IoSink {
    tx: mpsc::UnboundedSender<IoEvent>,
    credit: Arc<Semaphore>,
    budget: usize,
}

/// Read credit held by one message on its way to the component; released
/// when dropped (after the export call that took the bytes).
#[derive(Debug)]
pub(crate) struct Credit(
    #[allow(dead_code, reason = "held for its drop")] Option<OwnedSemaphorePermit>,
);

impl IoSink {
    /// A sink whose budget holds at least two of the largest messages
    /// (`max_message_bytes`) and [`MIN_READ_BUDGET`].
    pub(crate) fn new(tx: mpsc::UnboundedSender<IoEvent>, max_message_bytes: usize) -> Self {
        // The semaphore's ceiling is `usize::MAX >> 3`; absurd limits are
        // clamped to it.
        let budget = max_message_bytes
            .saturating_mul(2)
            .clamp(MIN_READ_BUDGET, Semaphore::MAX_PERMITS);
        Self {
            tx,
            credit: Arc::new(Semaphore::new(budget)),
            budget,
        }
    }

    /// Credit for `bytes`; the bool says whether the reader had to wait. A
    /// message larger than the whole budget takes all of it (it still
    /// passes, alone). Without an actor (closed channel) no credit is due.
    async fn credit(&self, bytes: usize) -> (Credit, bool) {
        let want = u32::try_from(bytes.clamp(1, self.budget)).unwrap_or(u32::MAX);
        match self.credit.clone().try_acquire_many_owned(want) {
            Ok(permit) => (Credit(Some(permit)), false),
            Err(_) if self.tx.is_closed() => (Credit(None), false),
            Err(_) => match self.credit.clone().acquire_many_owned(want).await {
                Ok(permit) => (Credit(Some(permit)), true),
                Err(_) => (Credit(None), true),
            },
        }
    }

    /// Bytes read and not yet fed to the component (for health).
    pub(crate) fn held_bytes(&self) -> usize {
        self.budget.saturating_sub(self.credit.available_permits())
    }
}

/// Socket settings taken from the adapter config.
#[derive(Clone)]
pub(crate) struct SocketSettings {
    /// TLS for `wss://` (bundled roots plus the configured CA file).
    pub tls: Arc<rustls::ClientConfig>,
    pub connect_timeout: Duration,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// Largest WebSocket message and frame accepted (line limit + 1 byte).
    pub max_message_bytes: usize,
}

/// Which URLs the component may dial: the configured connector's scheme,
/// host and port (after the spec §1.2 `http`→`ws` / `https`→`wss` rewrite).
#[derive(Clone, Debug)]
pub(crate) struct DialPolicy {
    target: Option<Target>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    scheme: String,
    host: String,
    port: u16,
}

impl Target {
    fn parse(url: &str) -> Option<Self> {
        let uri: Uri = url.trim().parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "ws" => 80,
            "wss" => 443,
            _ => return None,
        };
        Some(Self {
            host: uri.host()?.to_ascii_lowercase(),
            port: uri.port_u16().unwrap_or(default_port),
            scheme,
        })
    }
}

impl DialPolicy {
    /// The policy for a configured connector base URL. The scheme is matched
    /// case-insensitively, as the component's normalisation does (spec §1.2):
    /// `HTTP://host` is dialed as `ws://host/relay`.
    pub(crate) fn for_connector(connector_url: &str) -> Self {
        let url = connector_url.trim();
        let url = match url.split_once("://") {
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "https" => format!("wss://{rest}"),
                "http" => format!("ws://{rest}"),
                scheme => format!("{scheme}://{rest}"),
            },
            None => url.to_string(),
        };
        Self {
            target: Target::parse(&url),
        }
    }

    /// Whether `url` points at the configured connector.
    pub(crate) fn allows(&self, url: &str) -> bool {
        match (&self.target, Target::parse(url)) {
            (Some(ours), Some(theirs)) => *ours == theirs,
            _ => false,
        }
    }
}

/// Starts dialing `url`; the outcome arrives on `events` as `Opened` or
/// `DialFailed`, then the connection's traffic.
pub(crate) fn spawn_connection(
    conn: u32,
    token: u64,
    url: String,
    headers: Vec<(String, String)>,
    settings: SocketSettings,
    events: IoSink,
    out: mpsc::UnboundedReceiver<Outgoing>,
) -> AbortHandle {
    let report = Reporter {
        conn,
        token,
        events,
        opened: AtomicBool::new(false),
        finished: AtomicBool::new(false),
    };
    // Boxed before the spawn: this runs inside the guest's `dial` import, on
    // the instance's fiber stack, and the unboxed future (~12 KiB) copied
    // down tokio's spawn path touched ~70 KiB of that stack, which each idle
    // adapter then kept resident (docs/benchmarks.md, "What moved the numbers").
    tokio::spawn(Box::pin(run_connection(
        url, headers, settings, report, out,
    )))
    .abort_handle()
}

/// A connection's reports to the actor. After `Opened`, exactly one
/// `Closed` (or nothing, if the dial failed): the drop guard reports a
/// connection whose task ended without one (cancelled, or a panic), so the
/// component never waits on a connection that is gone.
struct Reporter {
    conn: u32,
    token: u64,
    events: IoSink,
    /// `Opened` was reported.
    opened: AtomicBool,
    /// `DialFailed` or `Closed` was reported.
    finished: AtomicBool,
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if self.opened.load(Ordering::Relaxed) && !self.finished.load(Ordering::Relaxed) {
            self.closed(CLOSE_ABNORMAL, "connection lost: its task ended");
        }
    }
}

impl Reporter {
    fn send(&self, kind: IoKind) {
        match kind {
            IoKind::Opened => self.opened.store(true, Ordering::Relaxed),
            IoKind::DialFailed { .. } | IoKind::Closed { .. } => {
                if self.finished.swap(true, Ordering::Relaxed) {
                    // One report per connection.
                    return;
                }
            }
            IoKind::Text(..) | IoKind::Binary(..) => {}
        }
        // The actor being gone is fine: nobody is listening any more.
        let _ = self.events.tx.send(IoEvent {
            conn: self.conn,
            token: self.token,
            kind,
        });
    }

    fn closed(&self, code: u16, reason: impl Into<String>) {
        self.send(IoKind::Closed {
            code,
            reason: reason.into(),
        });
    }
}

enum Control {
    Ping,
    Close(u16, String),
}

async fn run_connection(
    url: String,
    headers: Vec<(String, String)>,
    settings: SocketSettings,
    report: Reporter,
    mut out: mpsc::UnboundedReceiver<Outgoing>,
) {
    let request = match build_request(&url, &headers) {
        Ok(request) => request,
        Err(reason) => return report.send(IoKind::DialFailed { code: 0, reason }),
    };
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(settings.max_message_bytes))
        .max_frame_size(Some(settings.max_message_bytes));
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(ws_config),
        true,
        Some(tokio_tungstenite::Connector::Rustls(settings.tls.clone())),
    );
    let ws = match tokio::time::timeout(settings.connect_timeout, connect).await {
        Ok(Ok((ws, _response))) => ws,
        Ok(Err(WsError::Http(response))) => {
            let status = response.status();
            return report.send(IoKind::DialFailed {
                code: status.as_u16(),
                reason: format!("upgrade refused: HTTP {status}"),
            });
        }
        Ok(Err(e)) => {
            return report.send(IoKind::DialFailed {
                code: 0,
                reason: e.to_string(),
            });
        }
        Err(_) => {
            return report.send(IoKind::DialFailed {
                code: 0,
                reason: "opening handshake timed out".to_string(),
            });
        }
    };
    report.send(IoKind::Opened);

    let (mut sink, mut stream) = ws.split();
    let (control_tx, mut control_rx) = mpsc::unbounded_channel::<Control>();

    // Writer: the component's messages, pings, and a final close frame.
    let writer = async {
        loop {
            let message = tokio::select! {
                next = out.recv() => match next {
                    Some(Outgoing::Text(text)) => Message::text(text),
                    Some(Outgoing::Close(code, reason)) => close_message(code, &reason),
                    // The instance is gone: leave quietly.
                    None => close_message(1001, "relay adapter stopped"),
                },
                Some(control) = control_rx.recv() => match control {
                    Control::Ping => Message::Ping(Bytes::new()),
                    Control::Close(code, reason) => close_message(code, &reason),
                },
            };
            if matches!(message, Message::Close(_)) {
                sink.send(message).await?;
                return Ok::<(), WsError>(());
            }
            sink.feed(message).await?;
            // What is already queued goes out with it: one flush (one write
            // syscall) per burst instead of one per message.
            for _ in 0..WRITE_BURST {
                match out.try_recv() {
                    Ok(Outgoing::Text(text)) => sink.feed(Message::text(text)).await?,
                    Ok(Outgoing::Close(code, reason)) => {
                        sink.send(close_message(code, &reason)).await?;
                        return Ok(());
                    }
                    Err(_) => break,
                }
            }
            sink.flush().await?;
        }
    };

    // Zero would panic in `interval_at`; absurd values would overflow
    // `Instant` arithmetic. Clamp both to [1 ms, 1 day].
    let clamp = |d: Duration| d.clamp(Duration::from_millis(1), Duration::from_secs(86_400));
    let ping_interval = clamp(settings.ping_interval);
    let ping_timeout = clamp(settings.ping_timeout);

    // Reader: messages to the actor, keepalive, close reporting. Returns
    // whether it queued a close frame for the writer.
    let reader = async {
        let mut ping = tokio::time::interval_at(Instant::now() + ping_interval, ping_interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut pong_due: Option<Instant> = None;
        loop {
            let far = Instant::now() + Duration::from_secs(86_400);
            tokio::select! {
                next = stream.next() => match next {
                    Some(Ok(Message::Text(text))) => {
                        let (credit, waited) = report.events.credit(text.len()).await;
                        if waited {
                            resumed(&mut ping, &mut pong_due, ping_interval);
                        }
                        report.send(IoKind::Text(text, credit));
                    }
                    Some(Ok(Message::Binary(data))) => {
                        let (credit, waited) = report.events.credit(data.len()).await;
                        if waited {
                            resumed(&mut ping, &mut pong_due, ping_interval);
                        }
                        report.send(IoKind::Binary(data.to_vec(), credit));
                    }
                    Some(Ok(Message::Pong(_))) => pong_due = None,
                    Some(Ok(Message::Ping(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(frame))) => {
                        let (code, reason) = frame
                            .map(|f| (u16::from(f.code), f.reason.as_str().to_owned()))
                            .unwrap_or((CLOSE_NO_STATUS, String::new()));
                        report.closed(code, reason);
                        // Keep polling so tungstenite flushes its close reply.
                        let _ = tokio::time::timeout(CLOSE_LINGER, async {
                            while stream.next().await.is_some() {}
                        })
                        .await;
                        return false;
                    }
                    Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                        report.closed(CLOSE_TOO_BIG, format!("message too big: {size} > {max_size} bytes"));
                        let _ = control_tx.send(Control::Close(CLOSE_TOO_BIG, "message too big".into()));
                        return true;
                    }
                    Some(Err(e)) => {
                        report.closed(CLOSE_ABNORMAL, format!("connection lost: {e}"));
                        return false;
                    }
                    None => {
                        report.closed(CLOSE_ABNORMAL, "connection lost");
                        return false;
                    }
                },
                _ = ping.tick() => {
                    if pong_due.is_none() {
                        pong_due = Some(Instant::now() + ping_timeout);
                    }
                    let _ = control_tx.send(Control::Ping);
                }
                _ = tokio::time::sleep_until(pong_due.unwrap_or(far)), if pong_due.is_some() => {
                    // Treated as lost; the close frame is a courtesy.
                    report.closed(CLOSE_INTERNAL, "keepalive ping timeout");
                    let _ = control_tx.send(Control::Close(CLOSE_INTERNAL, "keepalive ping timeout".into()));
                    return true;
                }
            }
        }
    };

    tokio::pin!(writer, reader);
    tokio::select! {
        close_queued = &mut reader => {
            if close_queued {
                // Give the queued close frame a moment to go out.
                let _ = tokio::time::timeout(CLOSE_LINGER, &mut writer).await;
            }
        }
        result = &mut writer => match result {
            // Our close frame went out; wait briefly for the peer's.
            Ok(()) => {
                let _ = tokio::time::timeout(CLOSE_LINGER, &mut reader).await;
            }
            // A write can fail on a connection the peer just closed while its
            // close frame is still unread; let the reader report the real code.
            Err(e) => {
                if tokio::time::timeout(CLOSE_LINGER, &mut reader).await.is_err() {
                    report.closed(CLOSE_ABNORMAL, format!("connection lost: write failed: {e}"));
                }
            }
        },
    }
}

/// After a backpressure pause: the reader read nothing meanwhile, so a pong
/// may be waiting unread in the socket. The keepalive starts over instead
/// of mistaking a busy adapter for a dead link.
fn resumed(ping: &mut tokio::time::Interval, pong_due: &mut Option<Instant>, interval: Duration) {
    *pong_due = None;
    ping.reset_after(interval);
}

fn close_message(code: u16, reason: &str) -> Message {
    let mut end = reason.len().min(CLOSE_REASON_MAX_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason[..end].into(),
    }))
}

fn build_request(
    url: &str,
    headers: &[(String, String)],
) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request, String> {
    let mut request = url
        .into_client_request()
        .map_err(|e| format!("invalid dial URL: {e}"))?;
    for (name, value) in headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid upgrade header name {name:?}"))?;
        // Never echo a value: it may be the bearer token.
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("invalid value for upgrade header {name:?}"))?;
        request.headers_mut().insert(header, value);
    }
    Ok(request)
}
