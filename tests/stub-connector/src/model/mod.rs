//! The stub's vocabulary: configuration and behaviour policies, what it
//! records (connections, frames, buffer entries), and the payloads it can
//! deliver. Frame shapes follow the wire contract (§2) with no shared code.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{Map, Value, json};

/// Where "now" comes from when verifying bearer tokens.
#[derive(Clone, Default)]
pub enum Clock {
    /// The system clock (unix seconds, truncated).
    #[default]
    System,
    /// A frozen instant, for expiry tests (`now == exp` is still valid).
    Fixed(u64),
    /// Any other source, e.g. a clock a test advances by hand.
    Custom(Arc<dyn Fn() -> u64 + Send + Sync>),
}

impl Clock {
    /// The current unix time in whole seconds according to this clock.
    pub fn now(&self) -> u64 {
        match self {
            Clock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            Clock::Fixed(t) => *t,
            Clock::Custom(f) => f(),
        }
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Clock::System => f.write_str("System"),
            Clock::Fixed(t) => write!(f, "Fixed({t})"),
            Clock::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// How the stub answers one `hello`.
#[derive(Debug, Clone, PartialEq)]
pub enum HelloReply {
    /// `{"type":"descriptor","descriptor": <value>}` — the value is sent as
    /// given, so an invalid descriptor is just a value missing a field.
    Descriptor(Value),
    /// A raw line (a `\n` is appended), e.g. non-JSON garbage.
    RawLine(String),
    /// No answer at all: the gateway's handshake should time out.
    Nothing,
}

/// How the stub answers one `outbound` request.
#[derive(Debug, Clone, PartialEq)]
pub enum OutboundReply {
    /// `success: true` plus what the op normally returns: a generated
    /// `message_id` (`m1`, `m2`, … counted across the stub's life) for
    /// message-producing ops, a `thread_id` (`th1`, …) for `thread_create`,
    /// the chat-info fixture for `get_chat_info`.
    Success,
    /// This exact result object.
    Result(Value),
    /// `{"success": false, "error": error}` plus `code` when given.
    Fail {
        /// The `error` text.
        error: String,
        /// An optional `code`.
        code: Option<String>,
    },
    /// The §6.15 decline: `code: "egress_declined"` and the uniform text
    /// naming the frame's platform (or the connection's default platform).
    EgressDeclined,
    /// Never answer; the request shows up in
    /// [`StubState::pending_requests`] for [`crate::StubConnector::answer`].
    NoAnswer,
    /// Answer as the inner reply does, after a delay.
    Delayed(Duration, Box<OutboundReply>),
}

impl OutboundReply {
    /// Shorthand for [`OutboundReply::Fail`] without a code.
    pub fn fail(error: impl Into<String>) -> Self {
        OutboundReply::Fail {
            error: error.into(),
            code: None,
        }
    }

    /// Shorthand for [`OutboundReply::Delayed`].
    pub fn delayed(delay: Duration, reply: OutboundReply) -> Self {
        OutboundReply::Delayed(delay, Box::new(reply))
    }
}

/// How the stub answers `going_idle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdleReply {
    /// Flip to buffered-only and send `going_idle_ack` at once.
    #[default]
    Ack,
    /// Neither flip nor ack (the gateway's `go_idle` must time out and keep
    /// serving live traffic).
    Withhold,
    /// Flip and ack after this delay; live delivery continues until then.
    Delayed(Duration),
}

/// How buffered entries are replayed on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplayMode {
    /// Send every pending entry right after the handshake.
    #[default]
    AllAtOnce,
    /// Send one entry and the next only after the previous one is acked
    /// (a cursor-style drain).
    OneAtATime,
}

/// What happens to the next upgrade attempt (queued with
/// [`crate::StubConnector::refuse_next_upgrades`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeFate {
    /// Answer the HTTP upgrade with this status (and body) instead of 101.
    Http {
        /// HTTP status, e.g. 503. Must not be a 2xx.
        status: u16,
        /// Response body.
        body: String,
    },
    /// Complete the upgrade, then close at once with this code and reason
    /// (e.g. 4401 "unauthorized") without reading any frame.
    CloseAfterAccept {
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// Hold the upgrade for this long, then handle it normally.
    Delay(Duration),
}

/// Static configuration; every policy can also be changed at runtime through
/// the setters on [`crate::StubConnector`].
#[derive(Debug, Clone)]
pub struct StubConfig {
    /// TCP port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Bearer-token verify list (primary first). Empty = no verification.
    pub secrets: Vec<String>,
    /// Clock for token expiry.
    pub clock: Clock,
    /// Reply to a `hello` whose platform has no entry in `descriptors`.
    pub descriptor: HelloReply,
    /// Per-platform hello replies.
    pub descriptors: BTreeMap<String, HelloReply>,
    /// Reply to an outbound op without an entry in `outbound_by_op`.
    pub outbound: OutboundReply,
    /// Per-op outbound replies (key = `action.op`).
    pub outbound_by_op: BTreeMap<String, OutboundReply>,
    /// `get_chat_info` fixture: chat id → `(name, type)`. Unknown chats
    /// answer `{name: <chat id>, type: "dm"}`.
    pub chat_info: BTreeMap<String, (String, String)>,
    /// Reply to `going_idle`.
    pub going_idle: IdleReply,
    /// How many hellos must arrive on a connection before it counts as
    /// handshaken (live delivery starts and the buffer is replayed). Set it
    /// to the gateway's identity count for multi-platform gateways.
    pub replay_after_hellos: usize,
    /// Replay style for the buffer.
    pub replay_mode: ReplayMode,
    /// Largest WebSocket message the stub accepts (None = library default).
    pub max_message_size: Option<usize>,
    /// Close every connection with this code and reason right after its
    /// handshake (and replay), e.g. `(1011, "overloaded")` to drive a
    /// gateway's reconnect ladder.
    pub close_after_handshake: Option<(u16, String)>,
    /// Largest `POST /relay/media` body accepted; a declared
    /// `Content-Length` above it is answered 413 without reading the body.
    pub max_media_size: usize,
}

impl Default for StubConfig {
    fn default() -> Self {
        StubConfig {
            port: 0,
            secrets: Vec::new(),
            clock: Clock::System,
            descriptor: HelloReply::Descriptor(descriptors::discord()),
            descriptors: BTreeMap::new(),
            outbound: OutboundReply::Success,
            outbound_by_op: BTreeMap::new(),
            chat_info: BTreeMap::new(),
            going_idle: IdleReply::Ack,
            replay_after_hellos: 1,
            replay_mode: ReplayMode::AllAtOnce,
            max_message_size: None,
            close_after_handshake: None,
            max_media_size: DEFAULT_MAX_MEDIA_SIZE,
        }
    }
}

impl StubConfig {
    /// Adds a secret to the verify list (turning verification on).
    pub fn with_secret(mut self, secret: impl Into<String>) -> Self {
        self.secrets.push(secret.into());
        self
    }

    /// Uses this clock for token expiry.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Answers hellos for `platform` with this descriptor.
    pub fn with_descriptor(mut self, platform: impl Into<String>, descriptor: Value) -> Self {
        self.descriptors
            .insert(platform.into(), HelloReply::Descriptor(descriptor));
        self
    }

    /// Answers the op (`"send"`, `"typing"`, …) with this reply.
    pub fn with_outbound_reply(mut self, op: impl Into<String>, reply: OutboundReply) -> Self {
        self.outbound_by_op.insert(op.into(), reply);
        self
    }

    /// Adds a `get_chat_info` fixture entry.
    pub fn with_chat_info(
        mut self,
        chat_id: impl Into<String>,
        name: impl Into<String>,
        chat_type: impl Into<String>,
    ) -> Self {
        self.chat_info
            .insert(chat_id.into(), (name.into(), chat_type.into()));
        self
    }

    /// Sets the `going_idle` reply.
    pub fn with_going_idle(mut self, reply: IdleReply) -> Self {
        self.going_idle = reply;
        self
    }

    /// Sets how many hellos complete a handshake.
    pub fn with_replay_after_hellos(mut self, n: usize) -> Self {
        self.replay_after_hellos = n.max(1);
        self
    }

    /// Closes every connection with `code`/`reason` right after its handshake.
    pub fn with_close_after_handshake(mut self, code: u16, reason: impl Into<String>) -> Self {
        self.close_after_handshake = Some((code, reason.into()));
        self
    }

    /// Sets the replay style.
    pub fn with_replay_mode(mut self, mode: ReplayMode) -> Self {
        self.replay_mode = mode;
        self
    }

    /// Sets the media upload cap in bytes.
    pub fn with_max_media_size(mut self, max: usize) -> Self {
        self.max_media_size = max;
        self
    }
}

pub mod descriptors;

pub mod events;

mod media;
pub use media::{DEFAULT_MAX_MEDIA_SIZE, MediaRequest, StoredMedia};

/// A `passthrough_forward` payload (§2.11). The body is kept as the exact
/// `bodyB64` string so a test can also send invalid base64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passthrough {
    /// Passthrough plane (`"discord"`, `"twilio"`, …).
    pub platform: String,
    /// Bot/app id.
    pub bot_id: String,
    /// Original HTTP method.
    pub method: String,
    /// Original request path.
    pub path: String,
    /// Header pairs in arrival order.
    pub headers: Vec<(String, String)>,
    /// The `bodyB64` value as sent.
    pub body_b64: String,
    /// Target profile (multiplex mode); omitted from the wire when `None`.
    pub profile: Option<String>,
}

impl Passthrough {
    /// A POST to `/interactions/<platform>/<bot_id>` with a JSON content
    /// type and an empty body.
    pub fn new(platform: impl Into<String>, bot_id: impl Into<String>) -> Self {
        let platform = platform.into();
        let bot_id = bot_id.into();
        Passthrough {
            path: format!("/interactions/{platform}/{bot_id}"),
            platform,
            bot_id,
            method: "POST".to_owned(),
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body_b64: String::new(),
            profile: None,
        }
    }

    /// Sets the body bytes (encoded as standard, padded base64).
    pub fn body(mut self, bytes: impl AsRef<[u8]>) -> Self {
        self.body_b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        self
    }

    /// Sets `bodyB64` verbatim (e.g. invalid base64).
    pub fn body_b64(mut self, raw: impl Into<String>) -> Self {
        self.body_b64 = raw.into();
        self
    }

    /// Sets the method.
    pub fn method(mut self, method: impl Into<String>) -> Self {
        self.method = method.into();
        self
    }

    /// Sets the path.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Replaces the header list.
    pub fn headers(mut self, headers: Vec<(String, String)>) -> Self {
        self.headers = headers;
        self
    }

    /// Sets the target profile.
    pub fn profile(mut self, profile: impl Into<String>) -> Self {
        self.profile = Some(profile.into());
        self
    }

    /// The `forward` object as it goes on the wire.
    pub fn to_forward(&self) -> Value {
        let headers: Vec<Value> = self.headers.iter().map(|(n, v)| json!([n, v])).collect();
        let mut forward = json!({
            "platform": self.platform, "botId": self.bot_id, "method": self.method,
            "path": self.path, "headers": headers, "bodyB64": self.body_b64,
        });
        if let (Some(profile), Some(obj)) = (&self.profile, forward.as_object_mut()) {
            obj.insert("profile".to_owned(), Value::String(profile.clone()));
        }
        forward
    }
}

/// Something the connector delivers to the gateway and may buffer.
#[derive(Debug, Clone, PartialEq)]
pub enum Deliverable {
    /// An `inbound` frame carrying this `event`.
    Inbound(Value),
    /// A `passthrough_forward` frame.
    Passthrough(Passthrough),
}

impl Deliverable {
    /// The frame for this payload, with `bufferId` when given.
    pub fn to_frame(&self, buffer_id: Option<&str>) -> Value {
        let mut frame = Map::new();
        match self {
            Deliverable::Inbound(event) => {
                frame.insert("type".into(), "inbound".into());
                frame.insert("event".into(), event.clone());
            }
            Deliverable::Passthrough(p) => {
                frame.insert("type".into(), "passthrough_forward".into());
                frame.insert("forward".into(), p.to_forward());
            }
        }
        if let Some(id) = buffer_id {
            frame.insert("bufferId".into(), id.into());
        }
        Value::Object(frame)
    }
}

/// A bare JSON value is taken as an inbound `event`.
impl From<Value> for Deliverable {
    fn from(event: Value) -> Self {
        Deliverable::Inbound(event)
    }
}

impl From<Passthrough> for Deliverable {
    fn from(p: Passthrough) -> Self {
        Deliverable::Passthrough(p)
    }
}

/// Where a push went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Sent live (no `bufferId`) on this connection.
    Live {
        /// Connection index.
        conn: usize,
    },
    /// Stored in the buffer under this id (and, if a live connection
    /// exists, already sent with that `bufferId`).
    Buffered {
        /// The buffer id.
        buffer_id: String,
    },
}

/// One entry of the connector-side buffer, pending until acked.
#[derive(Debug, Clone, PartialEq)]
pub struct BufferEntry {
    /// The `bufferId`.
    pub buffer_id: String,
    /// What it delivers.
    pub payload: Deliverable,
    /// Connection indices this entry was sent on, in order.
    pub delivered_on: Vec<usize>,
}

/// One `hello` seen on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// `platform` (empty when missing).
    pub platform: String,
    /// `botId` (empty when missing).
    pub bot_id: String,
}

/// Who ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closer {
    /// The gateway sent a close frame.
    Gateway,
    /// The stub sent a close frame.
    Stub,
    /// The TCP stream ended or failed without a completed close handshake
    /// (including the stub's own [`crate::StubConnector::drop_connection`]).
    Dropped,
}

/// Lifecycle of one upgrade attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnState {
    /// TCP accepted, upgrade not decided yet.
    Upgrading,
    /// Upgrade answered with a non-101 HTTP status.
    Refused {
        /// The HTTP status sent.
        status: u16,
    },
    /// Upgrade completed, then closed by the stub before serving: failed
    /// bearer verification or an [`UpgradeFate::CloseAfterAccept`].
    Rejected {
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// Serving frames.
    Open,
    /// Was open, now ended.
    Closed {
        /// Who ended it.
        by: Closer,
        /// Close code, if a close frame carried one.
        code: Option<u16>,
        /// Close reason (empty if none).
        reason: String,
    },
    /// The HTTP/WebSocket handshake itself failed.
    Failed {
        /// What went wrong.
        error: String,
    },
}

/// One upgrade attempt and what became of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionInfo {
    /// Index in [`StubState::connections`] (0-based); frames carry it.
    pub index: usize,
    /// When the TCP connection was accepted.
    pub accepted_at: SystemTime,
    /// The gateway's address.
    pub peer: SocketAddr,
    /// Request path of the upgrade.
    pub path: String,
    /// Request headers in order (names lowercase).
    pub headers: Vec<(String, String)>,
    /// The verified bearer payload (gateway id) when verification is on.
    pub gateway_id: Option<String>,
    /// Hellos received, in order.
    pub hellos: Vec<Hello>,
    /// True once `replay_after_hellos` hellos arrived.
    pub handshaken: bool,
    /// Current state.
    pub state: ConnState,
}

impl ConnectionInfo {
    /// The first value of a request header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// True while the connection serves frames.
    pub fn is_open(&self) -> bool {
        self.state == ConnState::Open
    }

    /// The platform of the first hello (the session default), if any.
    pub fn default_platform(&self) -> Option<&str> {
        self.hellos.first().map(|h| h.platform.as_str())
    }
}

/// One newline-terminated line the gateway sent, in arrival order.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedFrame {
    /// Position in [`StubState::frames`] (0-based).
    pub seq: usize,
    /// Connection index it arrived on.
    pub conn: usize,
    /// Arrival time.
    pub at: SystemTime,
    /// The line without its `\n` (invalid UTF-8 replaced).
    pub raw: String,
    /// The parsed JSON, `None` when the line is not valid JSON.
    pub json: Option<Value>,
}

impl ReceivedFrame {
    /// The `type` field, if the line is a JSON object with a string `type`.
    pub fn frame_type(&self) -> Option<&str> {
        self.get("type").and_then(Value::as_str)
    }

    /// A top-level field.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.json.as_ref().and_then(|v| v.get(key))
    }

    /// `action.op` of an `outbound` frame.
    pub fn op(&self) -> Option<&str> {
        self.get("action")
            .and_then(|a| a.get("op"))
            .and_then(Value::as_str)
    }

    /// `requestId`, if present.
    pub fn request_id(&self) -> Option<&str> {
        self.get("requestId").and_then(Value::as_str)
    }

    /// True when the frame is of this `type`.
    pub fn is(&self, frame_type: &str) -> bool {
        self.frame_type() == Some(frame_type)
    }
}

/// An `outbound` the stub was told not to answer, waiting for
/// [`crate::StubConnector::answer`].
#[derive(Debug, Clone, PartialEq)]
pub struct PendingRequest {
    /// Connection it arrived on.
    pub conn: usize,
    /// Its `requestId`.
    pub request_id: String,
    /// The whole `outbound` frame.
    pub frame: Value,
}

/// Everything the stub has observed, as handed to
/// [`crate::StubConnector::wait_until`] and returned by
/// [`crate::StubConnector::state`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StubState {
    /// Every upgrade attempt, in accept order.
    pub connections: Vec<ConnectionInfo>,
    /// Every line received, in order, across connections.
    pub frames: Vec<ReceivedFrame>,
    /// The `bufferId` of every `inbound_ack` received, in order, duplicates
    /// and unknown ids included.
    pub acked_buffer_ids: Vec<String>,
    /// Buffer entries not yet acked, oldest first.
    pub buffer: Vec<BufferEntry>,
    /// True between an acked `going_idle` and the next handshake.
    pub idle: bool,
    /// Outbound requests held by [`OutboundReply::NoAnswer`], oldest first.
    pub pending_requests: Vec<PendingRequest>,
    /// Every media HTTP request answered, in the order they were decided.
    pub media_requests: Vec<MediaRequest>,
}

impl StubState {
    /// Frames of one `type`.
    pub fn frames_of_type<'a>(
        &'a self,
        frame_type: &'a str,
    ) -> impl Iterator<Item = &'a ReceivedFrame> + 'a {
        self.frames.iter().filter(move |f| f.is(frame_type))
    }

    /// How many times `buffer_id` was acked.
    pub fn ack_count(&self, buffer_id: &str) -> usize {
        self.acked_buffer_ids
            .iter()
            .filter(|id| id.as_str() == buffer_id)
            .count()
    }

    /// Connections that completed their handshake, in order.
    pub fn handshaken(&self) -> impl Iterator<Item = &ConnectionInfo> {
        self.connections.iter().filter(|c| c.handshaken)
    }

    /// The newest open connection (the target of actions).
    pub fn current_connection(&self) -> Option<&ConnectionInfo> {
        self.connections.iter().rev().find(|c| c.is_open())
    }
}
