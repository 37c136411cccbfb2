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

mod conn;
mod control;
mod inner;
mod media;
mod plain_http;
mod waiters;

use crate::model::{
    BufferEntry, Clock, Closer, ConnState, ConnectionInfo, Deliverable, Delivery, Hello,
    HelloReply, IdleReply, OutboundReply, Passthrough, PendingRequest, ReceivedFrame, ReplayMode,
    StubConfig, StubState, UpgradeFate,
};
use conn::*;
use control::*;
pub(crate) use control::{even_cuts, line_of};

/// A gateway that never finishes its HTTP upgrade (or a media request its
/// head) must not pin a task forever. Counted from the TCP accept.
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
    /// Uploads, re-hosts, public entries and scripted media failures.
    media: media::MediaStore,
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
                media: media::MediaStore::default(),
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
}
