//! What crosses the machine's boundary: inputs, commands, outputs. These
//! mirror the WIT world (`wit/v0.2/relay.wit`) one to one, so the component's
//! glue only converts types.

use crate::event::MessageEvent;
use crate::outcome::{ChatInfo, SendResult};
use serde::Serialize;

/// The clocks at the moment of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Now {
    /// Monotonic nanoseconds (timers and deadlines).
    pub mono_ns: u64,
    /// Wall-clock Unix seconds (token expiry only).
    pub wall_secs: u64,
}

impl Now {
    /// A `Now` at `mono_ns` with the wall clock derived from it (tests).
    pub fn at_ms(ms: u64) -> Now {
        Now {
            mono_ns: ms.saturating_mul(1_000_000),
            wall_secs: 1_700_000_000 + ms / 1000,
        }
    }
}

/// A gateway command; each completes exactly once through
/// [`Output::Complete`], possibly during the same input.
#[derive(Debug, Clone, PartialEq)]
pub enum Command<'a> {
    /// Send a message; `metadata` is a JSON object; `platform` forces the
    /// egress platform (fails closed when not fronted, §6.5).
    Send {
        /// Target chat.
        chat_id: &'a str,
        /// Text.
        content: &'a str,
        /// Message replied to.
        reply_to: Option<&'a str>,
        /// Metadata JSON object.
        metadata: &'a str,
        /// Explicit egress platform.
        platform: Option<&'a str>,
    },
    /// Edit a message.
    Edit {
        /// Target chat.
        chat_id: &'a str,
        /// Message to edit.
        message_id: &'a str,
        /// New text.
        content: &'a str,
        /// Metadata JSON object.
        metadata: &'a str,
    },
    /// Typing indicator.
    Typing {
        /// Target chat.
        chat_id: &'a str,
        /// Metadata JSON object.
        metadata: &'a str,
        /// Status phrase.
        content: Option<&'a str>,
    },
    /// Token-less follow-up (§6.7).
    FollowUp {
        /// Session the capability is bound to.
        session_key: &'a str,
        /// Capability kind.
        kind: &'a str,
        /// Text.
        content: &'a str,
        /// Metadata JSON object.
        metadata: &'a str,
    },
    /// Chat name and type (§6.8).
    GetChatInfo {
        /// Target chat.
        chat_id: &'a str,
    },
    /// Any other op as a JSON action object.
    RawAction {
        /// The action object (`{"op": ...}`).
        action: &'a str,
        /// Explicit egress platform.
        platform: Option<&'a str>,
    },
    /// Ask the connector to interrupt a session (§2.9).
    Interrupt {
        /// The session.
        session_key: &'a str,
        /// Optional reason.
        reason: Option<&'a str>,
    },
    /// Go idle, drain, close and stop for good (§6.17).
    Shutdown,
    /// Go idle and close without stopping (§6.18).
    GoDormant,
    /// Park re-dialing (§6.18).
    HoldRedial,
    /// Resume re-dialing.
    ReleaseRedial,
}

/// One input to the machine.
#[derive(Debug, Clone, PartialEq)]
pub enum Input<'a> {
    /// Begin: dial the connector.
    Start,
    /// The socket of `conn` opened.
    SocketOpened {
        /// Connection id from [`Output::Dial`].
        conn: u32,
    },
    /// Dialing `conn` failed.
    DialFailed {
        /// Connection id.
        conn: u32,
        /// HTTP status, close code, or 0 for a network error.
        code: u16,
        /// Reason text.
        reason: &'a str,
    },
    /// A text message arrived.
    SocketText {
        /// Connection id.
        conn: u32,
        /// The message.
        text: &'a str,
    },
    /// A binary message arrived.
    SocketBinary {
        /// Connection id.
        conn: u32,
        /// The message.
        data: &'a [u8],
    },
    /// Writing the last polled [`Output::SendText`] failed. The host reports
    /// the socket's close (with its code) separately.
    WriteFailed {
        /// Connection id.
        conn: u32,
        /// Error text.
        error: &'a str,
    },
    /// `conn` closed (peer or network; 1006 when no close frame).
    SocketClosed {
        /// Connection id.
        conn: u32,
        /// Close code.
        code: u16,
        /// Close reason.
        reason: &'a str,
    },
    /// The deadline from [`Output::SetDeadline`] passed.
    Deadline,
    /// The gateway took a delivery.
    AcceptDelivery(u64),
    /// The gateway refused a delivery (the connector may replay it).
    RejectDelivery(u64),
    /// A gateway command with its host-allocated request id.
    Command {
        /// Request id, echoed in [`Output::Complete`].
        request: u64,
        /// The command.
        command: Command<'a>,
    },
    /// Hold (`hold`) or release one pin of a chat's route: the host holds
    /// it while a caller waits for admission, so the route a reply needs is
    /// still there when the request is made.
    HoldRoute {
        /// Chat id.
        chat_id: &'a str,
        /// Hold (true) or release (false).
        hold: bool,
    },
    /// Seed the routing cache for a chat (§6.3 step 4).
    PrimeRoute {
        /// Chat id.
        chat_id: &'a str,
        /// Logical platform.
        platform: &'a str,
        /// Tenant scope.
        scope_id: Option<&'a str>,
        /// Author.
        user_id: Option<&'a str>,
        /// Profile.
        profile: Option<&'a str>,
    },
}

/// Connection state as the gateway sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Dialing.
    Connecting,
    /// Socket open, waiting for the first descriptor.
    Handshaking,
    /// A descriptor is applied.
    Ready,
    /// Waiting out the reconnect ladder.
    Reconnecting,
    /// `going_idle` acknowledged; the connector buffers inbound.
    Idle,
    /// Closed by `go_dormant`; re-dials on the dormant cadence.
    Dormant,
    /// Credentials revoked; terminal.
    Disabled,
    /// Shut down; terminal.
    Stopped,
}

impl State {
    /// The wire-style name (`ready`, `reconnecting`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Handshaking => "handshaking",
            State::Ready => "ready",
            State::Reconnecting => "reconnecting",
            State::Idle => "idle",
            State::Dormant => "dormant",
            State::Disabled => "disabled",
            State::Stopped => "stopped",
        }
    }
}

/// How a command completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// `send`, `edit`, `typing`, `follow_up`, raw actions.
    Sent(SendResult),
    /// `get_chat_info`.
    ChatInfo(ChatInfo),
    /// `go_dormant`: whether the connector acknowledged going idle.
    Flag(bool),
    /// Everything else.
    Done,
}

/// Log severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Very chatty.
    Trace,
    /// Diagnostics.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that was handled.
    Warn,
    /// Something failed.
    Error,
}

/// An inbound message for the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Pass to accept/reject exactly once.
    pub delivery: u64,
    /// Set when replayed from the connector's buffer.
    pub buffer_id: Option<String>,
    /// The normalised event.
    pub event: Box<MessageEvent>,
    /// The event as gateway JSON (wire names, nested source).
    pub json: String,
}

/// Upgrade headers. `Debug` prints names only: the bearer token is a live
/// credential for its TTL and must not reach logs.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Headers(pub Vec<(String, String)>);

impl std::ops::Deref for Headers {
    type Target = Vec<(String, String)>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| (name, "<redacted>")))
            .finish()
    }
}

/// One output, drained after each input with [`super::Machine::poll_output`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Open a WebSocket.
    Dial {
        /// Connection id for the reports about it.
        conn: u32,
        /// `ws://` or `wss://` URL ending in `/relay`.
        url: String,
        /// Upgrade headers (the bearer, when configured).
        headers: Headers,
    },
    /// Send one text message.
    SendText {
        /// Connection id.
        conn: u32,
        /// One frame plus `\n`.
        text: String,
    },
    /// Close a socket; no close report follows.
    Close {
        /// Connection id.
        conn: u32,
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// Arm the single timer (monotonic ns), or disarm it.
    SetDeadline(Option<u64>),
    /// Hand a message to the gateway.
    Deliver(Delivery),
    /// The connector asked to interrupt a session.
    Interrupt {
        /// The session.
        session_key: String,
        /// Its chat.
        chat_id: String,
    },
    /// A command finished.
    Complete {
        /// The command's request id.
        request: u64,
        /// How it finished.
        completion: Completion,
    },
    /// The state changed.
    State {
        /// The new state.
        state: State,
        /// A human-readable detail.
        detail: String,
    },
    /// A fatal condition.
    Fatal {
        /// Stable code (`relay_disabled`, ...).
        code: String,
        /// Message for operators.
        message: String,
        /// Whether retrying may help.
        retryable: bool,
    },
    /// A log line; never contains a secret.
    Log {
        /// Severity.
        level: Level,
        /// Text.
        message: String,
    },
}
