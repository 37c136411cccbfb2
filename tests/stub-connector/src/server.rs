//! The stub connector server and its test-facing handle: the accept loop on
//! 127.0.0.1, one task per connection, the protocol reactions (descriptor,
//! outbound results, idle flip, buffer replay) and deadline-bounded waiters.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;

use crate::auth;
use crate::model::{
    BufferEntry, Clock, Closer, ConnState, ConnectionInfo, Deliverable, Delivery, Hello,
    HelloReply, IdleReply, OutboundReply, Passthrough, PendingRequest, ReceivedFrame, ReplayMode,
    StubConfig, StubState, UpgradeFate,
};

/// A gateway that never finishes its HTTP upgrade must not pin a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the peer's half of a close handshake before dropping.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// A test action waits this long for its bytes to reach the socket; a peer
/// that stops reading would otherwise stall the test without a message.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A gateway that streams bytes without ever sending `\n` is cut off here
/// rather than growing the line buffer without bound.
const MAX_PARTIAL_LINE: usize = 16 * 1024 * 1024;

/// Errors of the stub's actions and waiters. Nothing in the API panics on
/// a timeout or a closed connection; it returns one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StubError {
    /// A waiter's deadline passed.
    #[error("timed out after {waited:?} waiting for {what} ({summary})")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The timeout that elapsed.
        waited: Duration,
        /// A short description of the state at the deadline.
        summary: String,
    },
    /// The action needs an open connection and there is none.
    #[error("no open gateway connection")]
    NotConnected,
    /// The targeted connection is (or became) closed.
    #[error("connection {0} is not open")]
    ConnectionClosed(usize),
    /// The socket write failed.
    #[error("write on connection {conn} failed: {error}")]
    Write {
        /// Connection index.
        conn: usize,
        /// The library's error text.
        error: String,
    },
    /// The arguments cannot be turned into what was asked.
    #[error("invalid argument: {0}")]
    Invalid(String),
}

/// One WebSocket-level thing to do on a connection (see
/// [`StubConnector::send_to`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireMessage {
    /// A text message, sent verbatim (add the `\n` yourself).
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A close frame with this code and reason.
    Close {
        /// Close code (e.g. 1011, 4401).
        code: u16,
        /// Close reason (at most 123 bytes).
        reason: String,
    },
    /// Drop the TCP connection without a close frame.
    Drop,
}

type Done = oneshot::Sender<Result<(), String>>;

enum Cmd {
    Send(Message, Option<Done>),
    Close(u16, String, Option<Done>),
    Drop(Option<Done>),
}

impl WireMessage {
    fn into_cmd(self, done: Option<Done>) -> Cmd {
        match self {
            WireMessage::Text(t) => Cmd::Send(Message::Text(t.into()), done),
            WireMessage::Binary(b) => Cmd::Send(Message::Binary(b.into()), done),
            WireMessage::Close { code, reason } => Cmd::Close(code, reason, done),
            WireMessage::Drop => Cmd::Drop(done),
        }
    }
}

/// Work a frame handler schedules for later (delayed answers).
enum Deferred {
    Line {
        conn: usize,
        after: Duration,
        line: String,
    },
    IdleAck {
        conn: usize,
        after: Duration,
    },
}

#[derive(Debug)]
enum Admission {
    Open { gateway_id: Option<String> },
    Close { code: u16, reason: String },
    Refused { status: u16, body: Option<String> },
}

/// Mutable stub state behind one lock: records plus policies plus the
/// command channels of open connections.
struct Inner {
    state: StubState,
    config: StubConfig,
    outbound_once: VecDeque<(Option<String>, OutboundReply)>,
    links: BTreeMap<usize, mpsc::UnboundedSender<Cmd>>,
    fates: VecDeque<UpgradeFate>,
    next_message: u64,
    next_thread: u64,
    next_buffer: u64,
}

struct Shared {
    addr: SocketAddr,
    inner: Mutex<Inner>,
    /// Bumped on every state change; waiters sleep on it.
    version: watch::Sender<u64>,
    shutdown: watch::Receiver<bool>,
    ws_config: WebSocketConfig,
}

/// Shuts the server down when the last handle clone goes away.
struct Lifetime {
    shutdown: watch::Sender<bool>,
}

impl Drop for Lifetime {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// Handle to a running stub connector. Cheap to clone; all clones control
/// the same server, which stops when the last clone is dropped (or on
/// [`StubConnector::shutdown`]).
///
/// Actions target the *current* connection — the newest open one — unless
/// a method takes a connection index. Closures given to the waiters run
/// under the stub's lock: read the state they get, don't call the stub
/// from inside them.
#[derive(Clone)]
pub struct StubConnector {
    shared: Arc<Shared>,
    life: Arc<Lifetime>,
}

impl std::fmt::Debug for StubConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StubConnector")
            .field("addr", &self.shared.addr)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not turn every later call into a panic.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let result = f(&mut self.lock());
        self.version.send_modify(|v| *v = v.wrapping_add(1));
        result
    }

    fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

async fn until_shutdown(mut rx: watch::Receiver<bool>) {
    // A dropped sender also means "stop".
    let _ = rx.wait_for(|stop| *stop).await;
}

impl StubConnector {
    /// Binds 127.0.0.1:`config.port` (0 = any free port) and starts serving.
    pub async fn start(config: StubConfig) -> io::Result<StubConnector> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, config.port)).await?;
        let addr = listener.local_addr()?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (version, _) = watch::channel(0u64);
        let ws_config = match config.max_message_size {
            Some(max) => WebSocketConfig::default()
                .max_message_size(Some(max))
                .max_frame_size(Some(max)),
            None => WebSocketConfig::default(),
        };
        let shared = Arc::new(Shared {
            addr,
            inner: Mutex::new(Inner {
                state: StubState::default(),
                config,
                outbound_once: VecDeque::new(),
                links: BTreeMap::new(),
                fates: VecDeque::new(),
                next_message: 0,
                next_thread: 0,
                next_buffer: 0,
            }),
            version,
            shutdown: shutdown_rx,
            ws_config,
        });
        tokio::spawn(accept_loop(Arc::clone(&shared), listener));
        Ok(StubConnector {
            shared,
            life: Arc::new(Lifetime {
                shutdown: shutdown_tx,
            }),
        })
    }

    /// Starts with [`StubConfig::default`].
    pub async fn start_default() -> io::Result<StubConnector> {
        StubConnector::start(StubConfig::default()).await
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The dial URL, `ws://127.0.0.1:PORT/relay`.
    pub fn url(&self) -> String {
        format!("ws://{}/relay", self.shared.addr)
    }

    /// The base URL without `/relay`, `http://127.0.0.1:PORT`, as an
    /// operator would configure it (the gateway normalizes it, §1.2).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// Stops accepting and closes every connection with 1001. Idempotent.
    pub fn shutdown(&self) {
        self.life.shutdown.send_replace(true);
    }

    /// True once [`StubConnector::shutdown`] was called.
    pub fn is_shut_down(&self) -> bool {
        self.shared.shutting_down()
    }

    // ----- snapshots -------------------------------------------------------

    /// A copy of everything recorded so far.
    pub fn state(&self) -> StubState {
        self.shared.lock().state.clone()
    }

    /// Runs `f` on the live state without copying it.
    pub fn with_state<R>(&self, f: impl FnOnce(&StubState) -> R) -> R {
        f(&self.shared.lock().state)
    }

    /// Every upgrade attempt so far.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        self.with_state(|s| s.connections.clone())
    }

    /// Every line received so far.
    pub fn frames(&self) -> Vec<ReceivedFrame> {
        self.with_state(|s| s.frames.clone())
    }

    /// Number of lines received so far: a cursor for
    /// [`StubConnector::wait_for_frame_after`].
    pub fn frame_count(&self) -> usize {
        self.with_state(|s| s.frames.len())
    }

    /// Received frames of one `type`.
    pub fn frames_of_type(&self, frame_type: &str) -> Vec<ReceivedFrame> {
        self.with_state(|s| s.frames_of_type(frame_type).cloned().collect())
    }

    /// `bufferId`s of every `inbound_ack`, in order, duplicates included.
    pub fn acked_buffer_ids(&self) -> Vec<String> {
        self.with_state(|s| s.acked_buffer_ids.clone())
    }

    /// Buffer entries not yet acked.
    pub fn pending_buffer(&self) -> Vec<BufferEntry> {
        self.with_state(|s| s.buffer.clone())
    }

    /// Outbound requests waiting for [`StubConnector::answer`].
    pub fn pending_requests(&self) -> Vec<PendingRequest> {
        self.with_state(|s| s.pending_requests.clone())
    }

    /// Index of the newest open connection.
    pub fn current_connection(&self) -> Option<usize> {
        self.with_state(|s| s.current_connection().map(|c| c.index))
    }

    /// True between an acked `going_idle` and the next handshake.
    pub fn is_idle(&self) -> bool {
        self.with_state(|s| s.idle)
    }

    // ----- waiters ---------------------------------------------------------

    /// Waits until `pred` holds for the state (checked now and after every
    /// change), or fails with [`StubError::Timeout`].
    pub async fn wait_until(
        &self,
        mut pred: impl FnMut(&StubState) -> bool,
        timeout: Duration,
    ) -> Result<(), StubError> {
        self.wait_named("condition", |s| pred(s).then_some(()), timeout)
            .await
    }

    /// Waits until `f` returns `Some`, and returns that value.
    pub async fn wait_for<T>(
        &self,
        f: impl FnMut(&StubState) -> Option<T>,
        timeout: Duration,
    ) -> Result<T, StubError> {
        self.wait_named("condition", f, timeout).await
    }

    /// Waits for a frame (received at any time, earlier ones included)
    /// satisfying `pred`, and returns the first such frame.
    pub async fn wait_for_frame(
        &self,
        pred: impl FnMut(&ReceivedFrame) -> bool,
        timeout: Duration,
    ) -> Result<ReceivedFrame, StubError> {
        self.wait_for_frame_after(0, pred, timeout).await
    }

    /// Like [`StubConnector::wait_for_frame`], but only frames with
    /// `seq >= after` count (take `after` from
    /// [`StubConnector::frame_count`] before triggering the gateway).
    pub async fn wait_for_frame_after(
        &self,
        after: usize,
        mut pred: impl FnMut(&ReceivedFrame) -> bool,
        timeout: Duration,
    ) -> Result<ReceivedFrame, StubError> {
        self.wait_named(
            &format!("a matching frame at seq >= {after}"),
            |s| s.frames.iter().skip(after).find(|f| pred(f)).cloned(),
            timeout,
        )
        .await
    }

    /// Waits for a frame of this `type` (earlier ones included).
    pub async fn wait_for_frame_type(
        &self,
        frame_type: &str,
        timeout: Duration,
    ) -> Result<ReceivedFrame, StubError> {
        self.wait_named(
            &format!("a {frame_type:?} frame"),
            |s| s.frames_of_type(frame_type).next().cloned(),
            timeout,
        )
        .await
    }

    /// Waits until `n` frames satisfy `pred` and returns the first `n`.
    pub async fn wait_for_frames(
        &self,
        n: usize,
        mut pred: impl FnMut(&ReceivedFrame) -> bool,
        timeout: Duration,
    ) -> Result<Vec<ReceivedFrame>, StubError> {
        self.wait_named(
            &format!("{n} matching frames"),
            |s| {
                let found: Vec<ReceivedFrame> = s
                    .frames
                    .iter()
                    .filter(|f| pred(f))
                    .take(n)
                    .cloned()
                    .collect();
                (found.len() >= n).then_some(found)
            },
            timeout,
        )
        .await
    }

    /// Waits until `n` upgrade attempts have been decided (accepted,
    /// refused or rejected alike) and returns all attempts so far. Use
    /// [`StubConnector::wait_for_handshakes`] to wait for working
    /// connections.
    pub async fn wait_for_connections(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<ConnectionInfo>, StubError> {
        self.wait_named(
            &format!("{n} connections"),
            |s| {
                let decided = s
                    .connections
                    .iter()
                    .filter(|c| c.state != ConnState::Upgrading)
                    .count();
                (decided >= n).then(|| s.connections.clone())
            },
            timeout,
        )
        .await
    }

    /// Waits until `n` connections have completed their hello handshake
    /// and returns the `n`-th of them.
    pub async fn wait_for_handshakes(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<ConnectionInfo, StubError> {
        let nth = n.max(1) - 1;
        self.wait_named(
            &format!("{n} handshaken connections"),
            |s| s.handshaken().nth(nth).cloned(),
            timeout,
        )
        .await
    }

    /// Waits until `buffer_id` has been acked at least once.
    pub async fn wait_for_ack(&self, buffer_id: &str, timeout: Duration) -> Result<(), StubError> {
        self.wait_named(
            &format!("inbound_ack {buffer_id:?}"),
            |s| (s.ack_count(buffer_id) > 0).then_some(()),
            timeout,
        )
        .await
    }

    /// Waits until connection `conn` is no longer open (or upgrading) and
    /// returns its final state.
    pub async fn wait_for_close(
        &self,
        conn: usize,
        timeout: Duration,
    ) -> Result<ConnState, StubError> {
        self.wait_named(
            &format!("connection {conn} to close"),
            |s| {
                s.connections.get(conn).and_then(|c| match c.state {
                    ConnState::Open | ConnState::Upgrading => None,
                    ref other => Some(other.clone()),
                })
            },
            timeout,
        )
        .await
    }

    /// Waits for the oldest outbound held by [`OutboundReply::NoAnswer`].
    pub async fn wait_for_pending_request(
        &self,
        timeout: Duration,
    ) -> Result<PendingRequest, StubError> {
        self.wait_named(
            "an unanswered outbound",
            |s| s.pending_requests.first().cloned(),
            timeout,
        )
        .await
    }

    async fn wait_named<T>(
        &self,
        what: &str,
        mut f: impl FnMut(&StubState) -> Option<T>,
        timeout: Duration,
    ) -> Result<T, StubError> {
        let deadline = Instant::now() + timeout;
        let mut changes = self.shared.version.subscribe();
        // Each pass re-checks after a state change; the deadline ends it.
        loop {
            changes.borrow_and_update();
            if let Some(found) = f(&self.shared.lock().state) {
                return Ok(found);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    let summary = self.with_state(|s| {
                        format!(
                            "{} connections, {} frames, {} acks, {} buffered, idle={}",
                            s.connections.len(),
                            s.frames.len(),
                            s.acked_buffer_ids.len(),
                            s.buffer.len(),
                            s.idle
                        )
                    });
                    return Err(StubError::Timeout {
                        what: what.to_owned(),
                        waited: timeout,
                        summary,
                    });
                }
            }
        }
    }

    // ----- behaviour -------------------------------------------------------

    /// Sets the hello reply for `platform`, or the default when `None`.
    pub fn set_descriptor(&self, platform: Option<&str>, reply: HelloReply) {
        self.shared.update(|inner| match platform {
            Some(p) => {
                inner.config.descriptors.insert(p.to_owned(), reply);
            }
            None => inner.config.descriptor = reply,
        });
    }

    /// Sets the standing reply for outbound `op`, or the default when `None`.
    pub fn set_outbound_reply(&self, op: Option<&str>, reply: OutboundReply) {
        self.shared.update(|inner| match op {
            Some(op) => {
                inner.config.outbound_by_op.insert(op.to_owned(), reply);
            }
            None => inner.config.outbound = reply,
        });
    }

    /// Queues a one-shot reply used by the next outbound of `op` (any op
    /// when `None`) before the standing policy applies again.
    pub fn queue_outbound_reply(&self, op: Option<&str>, reply: OutboundReply) {
        self.shared.update(|inner| {
            inner
                .outbound_once
                .push_back((op.map(str::to_owned), reply));
        });
    }

    /// Adds or replaces a `get_chat_info` fixture entry.
    pub fn set_chat_info(&self, chat_id: &str, name: &str, chat_type: &str) {
        self.shared.update(|inner| {
            inner
                .config
                .chat_info
                .insert(chat_id.to_owned(), (name.to_owned(), chat_type.to_owned()));
        });
    }

    /// Sets the `going_idle` reply.
    pub fn set_going_idle_reply(&self, reply: IdleReply) {
        self.shared.update(|inner| inner.config.going_idle = reply);
    }

    /// Sets the clock used for token expiry.
    pub fn set_clock(&self, clock: Clock) {
        self.shared.update(|inner| inner.config.clock = clock);
    }

    /// Replaces the verify list (empty = verification off).
    pub fn set_secrets(&self, secrets: Vec<String>) {
        self.shared.update(|inner| inner.config.secrets = secrets);
    }

    /// Sets the replay style for later replays.
    pub fn set_replay_mode(&self, mode: ReplayMode) {
        self.shared.update(|inner| inner.config.replay_mode = mode);
    }

    /// Sets how many hellos complete a handshake on later connections.
    pub fn set_replay_after_hellos(&self, n: usize) {
        self.shared
            .update(|inner| inner.config.replay_after_hellos = n.max(1));
    }

    /// Closes every later connection with `code`/`reason` right after its
    /// handshake (`None` turns that off).
    pub fn set_close_after_handshake(&self, close: Option<(u16, &str)>) {
        self.shared.update(|inner| {
            inner.config.close_after_handshake = close.map(|(code, r)| (code, r.to_owned()));
        });
    }

    /// Applies `fate` to each of the next `n` upgrade attempts (after any
    /// fates already queued). A `Delay` fate is followed by normal handling.
    pub fn refuse_next_upgrades(&self, n: usize, fate: UpgradeFate) -> Result<(), StubError> {
        if let UpgradeFate::Http { status, .. } = &fate
            && !(300..=599).contains(status)
        {
            return Err(StubError::Invalid(format!(
                "refusal status {status} must be 300..=599"
            )));
        }
        self.shared.update(|inner| {
            inner.fates.extend(std::iter::repeat_n(fate, n));
        });
        Ok(())
    }

    /// Holds the next upgrade for `delay` before handling it.
    pub fn delay_next_upgrade(&self, delay: Duration) {
        self.shared
            .update(|inner| inner.fates.push_back(UpgradeFate::Delay(delay)));
    }

    /// Forgets queued upgrade fates.
    pub fn clear_upgrade_fates(&self) {
        self.shared.update(|inner| inner.fates.clear());
    }

    // ----- deliveries ------------------------------------------------------

    /// Delivers like a connector: live (no `bufferId`) when a handshaken,
    /// non-idle connection exists; otherwise into the buffer under a
    /// generated id (`buf-1`, …) for replay after the next handshake.
    pub async fn push(&self, payload: impl Into<Deliverable>) -> Result<Delivery, StubError> {
        let payload = payload.into();
        let (delivery, wait) = self.shared.update(|inner| match inner.live_conn() {
            Some(conn) => {
                let (tx, rx) = oneshot::channel();
                inner.send_frame(conn, &payload.to_frame(None), Some(tx));
                (Delivery::Live { conn }, Some((conn, rx)))
            }
            None => {
                let buffer_id = inner.add_to_buffer(payload, None);
                (Delivery::Buffered { buffer_id }, None)
            }
        });
        if let Some((conn, rx)) = wait {
            wait_written(conn, rx).await?;
        }
        Ok(delivery)
    }

    /// Delivers `events` as a connector drains a backlog: in text messages
    /// of up to `per_message` `inbound` frames each, live while a
    /// handshaken, non-idle connection exists, else into the buffer (for
    /// replay after the next handshake). Decided message by message, so a
    /// `going_idle` acknowledged mid-burst sends the rest to the buffer, as
    /// a real connector does. Returns (frames sent live, frames buffered).
    pub async fn push_burst(
        &self,
        events: &[Value],
        per_message: usize,
    ) -> Result<(usize, usize), StubError> {
        let (mut live, mut buffered) = (0, 0);
        for chunk in events.chunks(per_message.max(1)) {
            let wait = self.shared.update(|inner| match inner.live_conn() {
                Some(conn) => {
                    let text: String = chunk
                        .iter()
                        .map(|e| line_of(&Deliverable::Inbound(e.clone()).to_frame(None)))
                        .collect();
                    let (tx, rx) = oneshot::channel();
                    inner.send_text(conn, text, Some(tx));
                    Some((conn, rx))
                }
                None => {
                    for event in chunk {
                        inner.add_to_buffer(Deliverable::Inbound(event.clone()), None);
                    }
                    None
                }
            });
            match wait {
                Some((conn, rx)) => {
                    wait_written(conn, rx).await?;
                    live += chunk.len();
                }
                None => buffered += chunk.len(),
            }
        }
        Ok((live, buffered))
    }

    /// [`StubConnector::push`] of an `inbound` event.
    pub async fn push_inbound(&self, event: Value) -> Result<Delivery, StubError> {
        self.push(Deliverable::Inbound(event)).await
    }

    /// [`StubConnector::push`] of a `passthrough_forward`.
    pub async fn push_passthrough(&self, forward: Passthrough) -> Result<Delivery, StubError> {
        self.push(Deliverable::Passthrough(forward)).await
    }

    /// Stores `payload` in the buffer under `buffer_id` (generated when
    /// `None`) and returns the id. If a handshaken, non-idle connection
    /// exists it is sent there at once with its `bufferId`; either way it
    /// stays pending, and is replayed on later connections, until acked.
    pub async fn push_buffered(
        &self,
        payload: impl Into<Deliverable>,
        buffer_id: Option<&str>,
    ) -> String {
        let payload = payload.into();
        self.shared.update(|inner| {
            let id = inner.add_to_buffer(payload, buffer_id.map(str::to_owned));
            if let Some(conn) = inner.live_conn() {
                inner.pump(conn);
            }
            id
        })
    }

    /// Sends an `inbound` frame on the current connection as given (with
    /// `bufferId` when `Some`), bypassing the buffer bookkeeping.
    pub async fn send_inbound(
        &self,
        event: Value,
        buffer_id: Option<&str>,
    ) -> Result<(), StubError> {
        self.send_frame(&Deliverable::Inbound(event).to_frame(buffer_id))
            .await
    }

    /// Sends a `passthrough_forward` frame on the current connection as
    /// given, bypassing the buffer bookkeeping.
    pub async fn send_passthrough(
        &self,
        forward: &Passthrough,
        buffer_id: Option<&str>,
    ) -> Result<(), StubError> {
        self.send_frame(&Deliverable::Passthrough(forward.clone()).to_frame(buffer_id))
            .await
    }

    /// Sends `interrupt_inbound` on the current connection.
    pub async fn interrupt_inbound(
        &self,
        session_key: &str,
        chat_id: &str,
    ) -> Result<(), StubError> {
        self.send_frame(&json!({
            "type": "interrupt_inbound", "session_key": session_key, "chat_id": chat_id
        }))
        .await
    }

    /// Sends `outbound_result` for `request_id` with this `result` object,
    /// on the connection the request came from if it is pending, else on
    /// the current connection (so unknown ids can be tested too).
    pub async fn answer(&self, request_id: &str, result: Value) -> Result<(), StubError> {
        let target = self.shared.update(|inner| {
            let pending = &mut inner.state.pending_requests;
            pending
                .iter()
                .position(|p| p.request_id == request_id)
                .map(|pos| pending.remove(pos).conn)
        });
        let line = line_of(&json!({
            "type": "outbound_result", "requestId": request_id, "result": result
        }));
        self.dispatch(target, vec![WireMessage::Text(line)]).await
    }

    // ----- raw wire --------------------------------------------------------

    /// Sends one frame as one text message (JSON + `\n`).
    pub async fn send_frame(&self, frame: &Value) -> Result<(), StubError> {
        self.send_text(line_of(frame)).await
    }

    /// Sends `line` + `\n` as one text message (e.g. malformed JSON).
    pub async fn send_line(&self, line: &str) -> Result<(), StubError> {
        self.send_text(format!("{line}\n")).await
    }

    /// Sends one text message verbatim.
    pub async fn send_text(&self, text: impl Into<String>) -> Result<(), StubError> {
        self.dispatch(None, vec![WireMessage::Text(text.into())])
            .await
    }

    /// Sends several frames as ONE text message (one line each).
    pub async fn send_frames_batched(&self, frames: &[Value]) -> Result<(), StubError> {
        let text: String = frames.iter().map(line_of).collect();
        self.send_text(text).await
    }

    /// Sends `text` as consecutive text messages cut at the byte offsets
    /// `at` (strictly increasing, inside the text, on char boundaries).
    pub async fn send_split(&self, text: &str, at: &[usize]) -> Result<(), StubError> {
        let parts = split_at_offsets(text.as_bytes(), at)?;
        let mut messages = Vec::with_capacity(parts.len());
        for part in parts {
            let part = std::str::from_utf8(part).map_err(|_| {
                StubError::Invalid("text split offsets must fall on char boundaries".into())
            })?;
            messages.push(WireMessage::Text(part.to_owned()));
        }
        self.dispatch(None, messages).await
    }

    /// Sends `bytes` as consecutive binary messages cut at the byte offsets
    /// `at`; offsets may split a multi-byte UTF-8 character.
    pub async fn send_split_binary(&self, bytes: &[u8], at: &[usize]) -> Result<(), StubError> {
        let messages = split_at_offsets(bytes, at)?
            .into_iter()
            .map(|p| WireMessage::Binary(p.to_vec()))
            .collect();
        self.dispatch(None, messages).await
    }

    /// Sends one frame (JSON + `\n`) split into `parts` text messages of
    /// roughly equal size.
    pub async fn send_split_frame(&self, frame: &Value, parts: usize) -> Result<(), StubError> {
        let line = line_of(frame);
        self.send_split(&line, &even_cuts(&line, parts)).await
    }

    /// Sends one binary message.
    pub async fn send_binary(&self, bytes: impl Into<Vec<u8>>) -> Result<(), StubError> {
        self.dispatch(None, vec![WireMessage::Binary(bytes.into())])
            .await
    }

    /// Sends `frame` padded (with an extra top-level `"_pad"` string, which
    /// the gateway ignores as an unknown key) so that the text message,
    /// newline included, is exactly `size` bytes.
    pub async fn send_sized_frame(&self, frame: Value, size: usize) -> Result<(), StubError> {
        let text = sized_line(frame, size)?;
        self.send_text(text).await
    }

    /// Closes the current connection with a close frame.
    pub async fn close(&self, code: u16, reason: &str) -> Result<(), StubError> {
        self.dispatch(
            None,
            vec![WireMessage::Close {
                code,
                reason: reason.to_owned(),
            }],
        )
        .await
    }

    /// Drops the current connection's TCP stream without a close frame.
    pub async fn drop_connection(&self) -> Result<(), StubError> {
        self.dispatch(None, vec![WireMessage::Drop]).await
    }

    /// Sends messages on connection `conn` (or the current one when
    /// `None`), back to back with nothing interleaved, and waits until they
    /// are written.
    pub async fn send_to(
        &self,
        conn: Option<usize>,
        messages: Vec<WireMessage>,
    ) -> Result<(), StubError> {
        self.dispatch(conn, messages).await
    }

    async fn dispatch(
        &self,
        target: Option<usize>,
        messages: Vec<WireMessage>,
    ) -> Result<(), StubError> {
        let (conn, waits) = {
            let inner = self.shared.lock();
            let conn = match target {
                Some(conn) => conn,
                None => inner.current_conn().ok_or(StubError::NotConnected)?,
            };
            let link = inner
                .links
                .get(&conn)
                .ok_or(StubError::ConnectionClosed(conn))?;
            let mut waits = Vec::with_capacity(messages.len());
            // Queued under one lock so nothing interleaves with a split frame.
            for message in messages {
                let (tx, rx) = oneshot::channel();
                link.send(message.into_cmd(Some(tx)))
                    .map_err(|_| StubError::ConnectionClosed(conn))?;
                waits.push(rx);
            }
            (conn, waits)
        };
        for rx in waits {
            wait_written(conn, rx).await?;
        }
        Ok(())
    }
}

async fn wait_written(
    conn: usize,
    rx: oneshot::Receiver<Result<(), String>>,
) -> Result<(), StubError> {
    match tokio::time::timeout(WRITE_TIMEOUT, rx).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(error))) => Err(StubError::Write { conn, error }),
        Ok(Err(_)) => Err(StubError::ConnectionClosed(conn)),
        Err(_) => Err(StubError::Timeout {
            what: format!("a write on connection {conn}"),
            waited: WRITE_TIMEOUT,
            summary: "the gateway is not reading".into(),
        }),
    }
}

/// Byte offsets cutting `text` into `parts` near-equal pieces on char
/// boundaries (fewer pieces when the text is too short).
pub(crate) fn even_cuts(text: &str, parts: usize) -> Vec<usize> {
    let parts = parts.clamp(1, text.len().max(1));
    let step = text.len() / parts;
    let mut cuts = Vec::with_capacity(parts);
    let mut last = 0;
    for i in 1..parts {
        let mut cut = (i * step).max(last + 1);
        // Bounded: UTF-8 char boundaries are at most 4 bytes apart.
        while cut < text.len() && !text.is_char_boundary(cut) {
            cut += 1;
        }
        if cut < text.len() && cut > last {
            cuts.push(cut);
            last = cut;
        }
    }
    cuts
}

pub(crate) fn line_of(frame: &Value) -> String {
    format!("{frame}\n")
}

fn sized_line(frame: Value, size: usize) -> Result<String, StubError> {
    let Value::Object(mut obj) = frame else {
        return Err(StubError::Invalid(
            "sized frames must be JSON objects".into(),
        ));
    };
    obj.insert("_pad".into(), Value::String(String::new()));
    let base = line_of(&Value::Object(obj.clone())).len();
    let Some(pad) = size.checked_sub(base) else {
        return Err(StubError::Invalid(format!(
            "frame needs at least {base} bytes, asked for {size}"
        )));
    };
    obj.insert("_pad".into(), Value::String("x".repeat(pad)));
    Ok(line_of(&Value::Object(obj)))
}

fn split_at_offsets<'a>(bytes: &'a [u8], at: &[usize]) -> Result<Vec<&'a [u8]>, StubError> {
    let mut parts = Vec::with_capacity(at.len() + 1);
    let mut start = 0;
    for &cut in at {
        if cut <= start || cut >= bytes.len() {
            return Err(StubError::Invalid(format!(
                "split offsets must be strictly increasing and inside 1..{}: {at:?}",
                bytes.len()
            )));
        }
        parts.push(&bytes[start..cut]);
        start = cut;
    }
    parts.push(&bytes[start..]);
    Ok(parts)
}

fn stringify(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

impl Inner {
    fn current_conn(&self) -> Option<usize> {
        self.state.current_connection().map(|c| c.index)
    }

    /// The connection live deliveries go to: the current one, once
    /// handshaken, while the gateway is not idle.
    fn live_conn(&self) -> Option<usize> {
        let conn = self.state.current_connection()?;
        (conn.handshaken && !self.state.idle && self.links.contains_key(&conn.index))
            .then_some(conn.index)
    }

    fn send_text(&self, conn: usize, text: String, done: Option<Done>) {
        if let Some(link) = self.links.get(&conn) {
            // A closed receiver means the connection just ended; the caller
            // learns that through the dropped `done`.
            let _ = link.send(Cmd::Send(Message::Text(text.into()), done));
        }
    }

    fn send_frame(&self, conn: usize, frame: &Value, done: Option<Done>) {
        self.send_text(conn, line_of(frame), done);
    }

    fn add_to_buffer(&mut self, payload: Deliverable, buffer_id: Option<String>) -> String {
        let buffer_id = buffer_id.unwrap_or_else(|| {
            self.next_buffer += 1;
            format!("buf-{}", self.next_buffer)
        });
        self.state.buffer.push(BufferEntry {
            buffer_id: buffer_id.clone(),
            payload,
            delivered_on: Vec::new(),
        });
        buffer_id
    }

    /// Sends buffered entries not yet sent on `conn`, if it is live.
    fn pump(&mut self, conn: usize) {
        if self.live_conn() != Some(conn) {
            return;
        }
        let one_at_a_time = self.config.replay_mode == ReplayMode::OneAtATime;
        if one_at_a_time
            && self
                .state
                .buffer
                .iter()
                .any(|e| e.delivered_on.contains(&conn))
        {
            return;
        }
        let mut frames = Vec::new();
        for entry in &mut self.state.buffer {
            if entry.delivered_on.contains(&conn) {
                continue;
            }
            entry.delivered_on.push(conn);
            frames.push(entry.payload.to_frame(Some(&entry.buffer_id)));
            if one_at_a_time {
                break;
            }
        }
        for frame in &frames {
            self.send_frame(conn, frame, None);
        }
    }

    fn on_line(&mut self, conn: usize, line: &[u8]) -> Vec<Deferred> {
        let raw = String::from_utf8_lossy(line).into_owned();
        if raw.trim().is_empty() {
            return Vec::new();
        }
        let json = serde_json::from_str::<Value>(&raw).ok();
        let seq = self.state.frames.len();
        self.state.frames.push(ReceivedFrame {
            seq,
            conn,
            at: SystemTime::now(),
            raw,
            json: json.clone(),
        });
        let Some(frame) = json.filter(Value::is_object) else {
            return Vec::new();
        };
        match frame.get("type").and_then(Value::as_str) {
            Some("hello") => {
                self.on_hello(conn, &frame);
                Vec::new()
            }
            Some("outbound") => self.on_outbound(conn, &frame),
            Some("inbound_ack") => {
                self.on_ack(conn, &frame);
                Vec::new()
            }
            Some("going_idle") => self.on_going_idle(conn),
            _ => Vec::new(),
        }
    }

    fn on_hello(&mut self, conn: usize, frame: &Value) {
        let hello = Hello {
            platform: stringify(frame.get("platform")),
            bot_id: stringify(frame.get("botId")),
        };
        let reply = self
            .config
            .descriptors
            .get(&hello.platform)
            .unwrap_or(&self.config.descriptor)
            .clone();
        match reply {
            HelloReply::Descriptor(descriptor) => self.send_frame(
                conn,
                &json!({"type": "descriptor", "descriptor": descriptor}),
                None,
            ),
            HelloReply::RawLine(line) => self.send_text(conn, format!("{line}\n"), None),
            HelloReply::Nothing => {}
        }
        let needed = self.config.replay_after_hellos.max(1);
        let Some(info) = self.state.connections.get_mut(conn) else {
            return;
        };
        info.hellos.push(hello);
        if !info.handshaken && info.hellos.len() >= needed {
            info.handshaken = true;
            // A new handshake ends the idle period: replay, then live again.
            self.state.idle = false;
            self.pump(conn);
            if let (Some((code, reason)), Some(link)) =
                (&self.config.close_after_handshake, self.links.get(&conn))
            {
                let _ = link.send(Cmd::Close(*code, reason.clone(), None));
            }
        }
    }

    fn on_ack(&mut self, conn: usize, frame: &Value) {
        let Some(id) = frame.get("bufferId") else {
            return;
        };
        let id = stringify(Some(id));
        self.state.buffer.retain(|e| e.buffer_id != id);
        self.state.acked_buffer_ids.push(id);
        self.pump(conn);
    }

    fn on_going_idle(&mut self, conn: usize) -> Vec<Deferred> {
        match self.config.going_idle {
            IdleReply::Ack => {
                self.flip_idle(conn);
                Vec::new()
            }
            IdleReply::Withhold => Vec::new(),
            IdleReply::Delayed(after) => vec![Deferred::IdleAck { conn, after }],
        }
    }

    fn flip_idle(&mut self, conn: usize) {
        if self.links.contains_key(&conn) {
            self.state.idle = true;
            self.send_frame(conn, &json!({"type": "going_idle_ack"}), None);
        }
    }

    fn take_reply(&mut self, op: &str) -> OutboundReply {
        let queued = self
            .outbound_once
            .iter()
            .position(|(o, _)| o.as_deref().is_none_or(|o| o == op));
        if let Some((_, reply)) = queued.and_then(|pos| self.outbound_once.remove(pos)) {
            return reply;
        }
        self.config
            .outbound_by_op
            .get(op)
            .unwrap_or(&self.config.outbound)
            .clone()
    }

    fn on_outbound(&mut self, conn: usize, frame: &Value) -> Vec<Deferred> {
        let Some(request_id) = frame.get("requestId").and_then(Value::as_str) else {
            return Vec::new();
        };
        let op = frame
            .get("action")
            .and_then(|a| a.get("op"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let mut reply = self.take_reply(&op);
        let mut delay = Duration::ZERO;
        // Unwraps nested delays; terminates because the value is finite.
        while let OutboundReply::Delayed(d, inner) = reply {
            delay += d;
            reply = *inner;
        }
        if reply == OutboundReply::NoAnswer {
            self.state.pending_requests.push(PendingRequest {
                conn,
                request_id: request_id.to_owned(),
                frame: frame.clone(),
            });
            return Vec::new();
        }
        let result = self.result_for(conn, frame, &op, reply);
        let line = line_of(&json!({
            "type": "outbound_result", "requestId": request_id, "result": result
        }));
        if delay.is_zero() {
            self.send_text(conn, line, None);
            Vec::new()
        } else {
            vec![Deferred::Line {
                conn,
                after: delay,
                line,
            }]
        }
    }

    fn result_for(&mut self, conn: usize, frame: &Value, op: &str, reply: OutboundReply) -> Value {
        match reply {
            OutboundReply::Result(value) => value,
            OutboundReply::Fail { error, code } => {
                let mut result = json!({"success": false, "error": error});
                if let (Some(code), Some(obj)) = (code, result.as_object_mut()) {
                    obj.insert("code".into(), Value::String(code));
                }
                result
            }
            OutboundReply::EgressDeclined => {
                let platform = frame
                    .get("platform")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .or_else(|| {
                        self.state
                            .connections
                            .get(conn)
                            .and_then(|c| c.default_platform().map(str::to_owned))
                    })
                    .unwrap_or_else(|| "relay".to_owned());
                json!({
                    "success": false, "code": "egress_declined",
                    "error": format!(
                        "{platform} egress declined: target is not an approved destination for this connection"
                    )
                })
            }
            // Delays and NoAnswer were handled by the caller.
            OutboundReply::Success | OutboundReply::NoAnswer | OutboundReply::Delayed(..) => {
                self.success_result(frame, op)
            }
        }
    }

    fn success_result(&mut self, frame: &Value, op: &str) -> Value {
        let action = frame.get("action");
        let field = |key: &str| action.and_then(|a| a.get(key)).and_then(Value::as_str);
        match op {
            "send" | "send_media" | "prompt" | "follow_up" | "draft" => {
                json!({"success": true, "message_id": self.next_message_id()})
            }
            "edit" => {
                let id = field("message_id")
                    .map(str::to_owned)
                    .unwrap_or_else(|| self.next_message_id());
                json!({"success": true, "message_id": id})
            }
            "thread_create" => {
                self.next_thread += 1;
                json!({"success": true, "thread_id": format!("th{}", self.next_thread)})
            }
            "get_chat_info" => {
                let chat_id = field("chat_id").unwrap_or("");
                let (name, chat_type) = self
                    .config
                    .chat_info
                    .get(chat_id)
                    .cloned()
                    .unwrap_or_else(|| (chat_id.to_owned(), "dm".to_owned()));
                json!({"success": true, "chat_info": {"name": name, "type": chat_type}})
            }
            _ => json!({"success": true}),
        }
    }

    fn next_message_id(&mut self) -> String {
        self.next_message += 1;
        format!("m{}", self.next_message)
    }
}

fn spawn_deferred(shared: &Arc<Shared>, items: Vec<Deferred>) {
    for item in items {
        let shared = Arc::clone(shared);
        tokio::spawn(async move {
            let after = match &item {
                Deferred::Line { after, .. } | Deferred::IdleAck { after, .. } => *after,
            };
            // The delay is the behaviour under test, not a synchronisation.
            tokio::select! {
                () = tokio::time::sleep(after) => {}
                () = until_shutdown(shared.shutdown.clone()) => return,
            }
            shared.update(|inner| match item {
                Deferred::Line { conn, line, .. } => inner.send_text(conn, line, None),
                Deferred::IdleAck { conn, .. } => inner.flip_idle(conn),
            });
        });
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    // Runs until shutdown; each pass handles one accepted socket.
    loop {
        tokio::select! {
            () = until_shutdown(shared.shutdown.clone()) => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    tokio::spawn(serve(Arc::clone(&shared), tcp, peer));
                }
                Err(error) => tracing::warn!(%error, "accept failed"),
            },
        }
    }
}

fn set_conn_state(inner: &mut Inner, index: usize, state: ConnState) {
    if let Some(info) = inner.state.connections.get_mut(index) {
        info.state = state;
    }
}

// The upgrade callback's error type is fixed by tungstenite's `Callback`.
#[allow(clippy::result_large_err)]
async fn serve(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr) {
    // Frames are small and latency matters more than throughput here.
    let _ = tcp.set_nodelay(true);
    let (index, fate) = shared.update(|inner| {
        let index = inner.state.connections.len();
        inner.state.connections.push(ConnectionInfo {
            index,
            accepted_at: SystemTime::now(),
            peer,
            path: String::new(),
            headers: Vec::new(),
            gateway_id: None,
            hellos: Vec::new(),
            handshaken: false,
            state: ConnState::Upgrading,
        });
        (index, inner.fates.pop_front())
    });
    let fate = match fate {
        Some(UpgradeFate::Delay(delay)) => {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = until_shutdown(shared.shutdown.clone()) => return,
            }
            None
        }
        other => other,
    };

    let admission: Arc<Mutex<Option<Admission>>> = Arc::new(Mutex::new(None));
    let callback = {
        let shared = Arc::clone(&shared);
        let admission = Arc::clone(&admission);
        move |request: &Request, response: Response| {
            let decided = shared.update(|inner| admit(inner, index, request, fate));
            let refusal = match &decided {
                Admission::Refused { status, body } => Some(error_response(*status, body.clone())),
                _ => None,
            };
            *admission.lock().unwrap_or_else(PoisonError::into_inner) = Some(decided);
            match refusal {
                Some(refusal) => Err(refusal),
                None => Ok(response),
            }
        }
    };
    let accepted = tokio::select! {
        r = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            tokio_tungstenite::accept_hdr_async_with_config(tcp, callback, Some(shared.ws_config)),
        ) => r,
        () = until_shutdown(shared.shutdown.clone()) => return,
    };
    let admission = admission
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    match (accepted, admission) {
        (Ok(Ok(ws)), Some(Admission::Close { code, reason })) => {
            reject(&shared, index, ws, code, reason).await;
        }
        (Ok(Ok(ws)), Some(Admission::Open { gateway_id })) => {
            run_connection(&shared, index, ws, gateway_id).await;
        }
        (Ok(Ok(ws)), _) => run_connection(&shared, index, ws, None).await,
        (Ok(Err(_)), Some(Admission::Refused { status, .. })) => {
            shared.update(|inner| set_conn_state(inner, index, ConnState::Refused { status }));
        }
        (Ok(Err(error)), _) => {
            let error = error.to_string();
            shared.update(|inner| set_conn_state(inner, index, ConnState::Failed { error }));
        }
        (Err(_), _) => {
            let error = "upgrade timed out".to_owned();
            shared.update(|inner| set_conn_state(inner, index, ConnState::Failed { error }));
        }
    }
}

/// Decides an upgrade: path, queued fate, then bearer verification.
fn admit(
    inner: &mut Inner,
    index: usize,
    request: &Request,
    fate: Option<UpgradeFate>,
) -> Admission {
    let path = request.uri().path().to_owned();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let authorization = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    if let Some(info) = inner.state.connections.get_mut(index) {
        info.path = path.clone();
        info.headers = headers;
    }
    if path != "/relay" {
        return Admission::Refused {
            status: 400,
            body: None,
        };
    }
    match fate {
        Some(UpgradeFate::Http { status, body }) => {
            return Admission::Refused {
                status,
                body: Some(body),
            };
        }
        Some(UpgradeFate::CloseAfterAccept { code, reason }) => {
            return Admission::Close { code, reason };
        }
        Some(UpgradeFate::Delay(_)) | None => {}
    }
    if inner.config.secrets.is_empty() {
        return Admission::Open { gateway_id: None };
    }
    let now = inner.config.clock.now();
    let verdict = authorization
        .as_deref()
        .and_then(auth::bearer_token)
        .ok_or(auth::AuthError::Missing)
        .and_then(|token| auth::verify_token(token, &inner.config.secrets, now));
    match verdict {
        Ok(gateway_id) => Admission::Open {
            gateway_id: Some(gateway_id),
        },
        Err(error) => {
            tracing::info!(%error, index, "rejecting upgrade");
            Admission::Close {
                code: 4401,
                reason: error.close_reason().to_owned(),
            }
        }
    }
}

fn error_response(status: u16, body: Option<String>) -> ErrorResponse {
    let body = body.unwrap_or_else(|| {
        if status == 400 {
            "websocket upgrades are served only on /relay\n".to_owned()
        } else {
            format!("refused by stub connector ({status})\n")
        }
    });
    let status = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_REQUEST);
    let mut response = http::Response::new(Some(body.clone()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    headers.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(body.len()),
    );
    headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    response
}

fn close_message(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: code.into(),
        reason: reason.to_owned().into(),
    }))
}

async fn reject(
    shared: &Arc<Shared>,
    index: usize,
    mut ws: WebSocketStream<TcpStream>,
    code: u16,
    reason: String,
) {
    let _ = ws.send(close_message(code, &reason)).await;
    shared.update(|inner| set_conn_state(inner, index, ConnState::Rejected { code, reason }));
    // Let the client answer the close so it sees a clean close frame; the
    // grace period bounds a client that never does.
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Splits a byte stream into `\n`-terminated lines across messages.
#[derive(Default)]
struct LineBuffer {
    partial: Vec<u8>,
}

impl LineBuffer {
    fn feed(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.partial.extend_from_slice(bytes);
        let mut lines = Vec::new();
        let mut start = 0;
        for (i, b) in self.partial.iter().enumerate() {
            if *b == b'\n' {
                lines.push(self.partial[start..i].to_vec());
                start = i + 1;
            }
        }
        self.partial.drain(..start);
        lines
    }
}

async fn run_connection(
    shared: &Arc<Shared>,
    index: usize,
    ws: WebSocketStream<TcpStream>,
    gateway_id: Option<String>,
) {
    let (link, mut commands) = mpsc::unbounded_channel();
    shared.update(|inner| {
        inner.links.insert(index, link);
        if let Some(info) = inner.state.connections.get_mut(index) {
            info.gateway_id = gateway_id;
            info.state = ConnState::Open;
        }
    });
    let (mut sink, mut stream) = ws.split();
    let mut lines = LineBuffer::default();
    let mut our_close: Option<(u16, String)> = None;
    let mut peer_close: Option<(Option<u16>, String)> = None;
    let mut close_deadline: Option<Instant> = None;
    let shutdown = until_shutdown(shared.shutdown.clone());
    tokio::pin!(shutdown);

    // Runs until the socket ends, the stub drops it, or shutdown.
    let dropped_by_stub = loop {
        let deadline = close_deadline;
        let close_timer = async move {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut shutdown, if our_close.is_none() => {
                let reason = "stub connector shutting down".to_owned();
                let _ = sink.send(close_message(1001, &reason)).await;
                our_close = Some((1001, reason));
                close_deadline = Some(Instant::now() + CLOSE_GRACE);
            }
            () = close_timer => break false,
            command = commands.recv() => match command {
                Some(Cmd::Send(message, done)) => {
                    let result = if our_close.is_some() {
                        Err("connection is closing".to_owned())
                    } else {
                        sink.send(message).await.map_err(|e| e.to_string())
                    };
                    let failed = result.is_err() && our_close.is_none();
                    if let Some(done) = done {
                        let _ = done.send(result);
                    }
                    if failed {
                        break false;
                    }
                }
                Some(Cmd::Close(code, reason, done)) => {
                    let result = if our_close.is_some() {
                        Err("connection is already closing".to_owned())
                    } else {
                        sink.send(close_message(code, &reason)).await.map_err(|e| e.to_string())
                    };
                    if result.is_ok() {
                        our_close = Some((code, reason));
                        close_deadline = Some(Instant::now() + CLOSE_GRACE);
                    }
                    if let Some(done) = done {
                        let _ = done.send(result);
                    }
                }
                Some(Cmd::Drop(done)) => {
                    if let Some(done) = done {
                        let _ = done.send(Ok(()));
                    }
                    break true;
                }
                None => break false,
            },
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    if !feed(shared, index, &mut lines, text.as_bytes()) {
                        let _ = sink.send(close_message(1009, "line too long")).await;
                        break false;
                    }
                }
                Some(Ok(Message::Binary(bytes))) => {
                    if !feed(shared, index, &mut lines, &bytes) {
                        let _ = sink.send(close_message(1009, "line too long")).await;
                        break false;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    if our_close.is_none() {
                        peer_close = Some(match frame {
                            Some(f) => (Some(u16::from(f.code)), f.reason.as_str().to_owned()),
                            None => (None, String::new()),
                        });
                    }
                    // Keep polling: the library sends our close reply and
                    // then ends the stream.
                    close_deadline.get_or_insert_with(|| Instant::now() + CLOSE_GRACE);
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break false,
            },
        }
    };

    let state = if dropped_by_stub {
        ConnState::Closed {
            by: Closer::Dropped,
            code: None,
            reason: "dropped by stub".into(),
        }
    } else if let Some((code, reason)) = our_close {
        ConnState::Closed {
            by: Closer::Stub,
            code: Some(code),
            reason,
        }
    } else if let Some((code, reason)) = peer_close {
        ConnState::Closed {
            by: Closer::Gateway,
            code,
            reason,
        }
    } else {
        ConnState::Closed {
            by: Closer::Dropped,
            code: None,
            reason: String::new(),
        }
    };
    shared.update(|inner| {
        inner.links.remove(&index);
        set_conn_state(inner, index, state);
    });
    if shared.shutting_down() {
        tracing::debug!(index, "connection ended by shutdown");
    }
}

/// Records and reacts to every complete line; false when the gateway sent
/// an over-long partial line.
fn feed(shared: &Arc<Shared>, index: usize, lines: &mut LineBuffer, bytes: &[u8]) -> bool {
    for line in lines.feed(bytes) {
        let deferred = shared.update(|inner| inner.on_line(index, &line));
        spawn_deferred(shared, deferred);
    }
    lines.partial.len() <= MAX_PARTIAL_LINE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_buffer_joins_and_splits() {
        let mut buf = LineBuffer::default();
        assert!(buf.feed(b"{\"a\":").is_empty());
        assert_eq!(
            buf.feed(b"1}\n{\"b\":2}\n{\"c\""),
            vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]
        );
        assert_eq!(buf.partial, b"{\"c\"".to_vec());
        // A UTF-8 character cut across two feeds comes out whole.
        let snow = "☃".as_bytes();
        assert!(buf.feed(&snow[..1]).is_empty());
        let out = buf.feed(&[&snow[1..], b"\n"].concat());
        assert_eq!(String::from_utf8(out[0].clone()).unwrap(), "{\"c\"☃");
    }

    #[test]
    fn sized_line_is_exact() {
        let line = sized_line(json!({"type": "x"}), 100).unwrap();
        assert_eq!(line.len(), 100);
        assert!(line.ends_with('\n'));
        let v: Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["type"], "x");
        assert!(sized_line(json!({"type": "x"}), 5).is_err());
        assert!(sized_line(json!([1]), 100).is_err());
    }

    #[test]
    fn even_cuts_respect_char_boundaries() {
        assert_eq!(even_cuts("abcdef", 3), vec![2, 4]);
        assert_eq!(even_cuts("ab", 5), vec![1]);
        assert!(even_cuts("", 3).is_empty());
        let text = "ééé";
        for cut in even_cuts(text, 3) {
            assert!(text.is_char_boundary(cut));
        }
        assert_eq!(even_cuts(text, 3).len(), 2);
    }

    #[test]
    fn split_offsets_are_validated() {
        assert_eq!(
            split_at_offsets(b"abcdef", &[2, 4]).unwrap(),
            vec![&b"ab"[..], &b"cd"[..], &b"ef"[..]]
        );
        assert!(split_at_offsets(b"abc", &[0]).is_err());
        assert!(split_at_offsets(b"abc", &[2, 2]).is_err());
        assert!(split_at_offsets(b"abc", &[3]).is_err());
    }

    #[test]
    fn stringify_matches_wire_rules() {
        assert_eq!(stringify(None), "");
        assert_eq!(stringify(Some(&json!(null))), "");
        assert_eq!(stringify(Some(&json!("x"))), "x");
        assert_eq!(stringify(Some(&json!(12))), "12");
    }
}
