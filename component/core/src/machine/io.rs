//! What crosses the machine's boundary: inputs, commands, outputs. These
//! mirror the WIT world (`wit/v0.2/relay.wit`) one to one, so the component's
//! glue only converts types.

use super::labels::ChatLabels;
use super::media::{MediaOutcome, MediaRequest, MediaSend};
use super::prompts::{PromptAnswer, PromptSend};
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
    /// A command of a typed lane new in WIT 0.2 (§6.6.2, §6.12, §6.13).
    Lane(&'a Lane),
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

/// A command of a typed lane new in WIT 0.2 (the `lane-command` variant).
/// Owned, since these lanes are off the hot path and the host keeps the
/// command while it waits for admission. Each completes once: the
/// processing reactions with [`Completion::Done`] as soon as their frames
/// are queued (best-effort, §6.12), every other lane with
/// [`Completion::Sent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lane {
    /// Delete a message; only when the chat's descriptor lists `delete`
    /// (no legacy fallback), else a failed result and no wire traffic.
    Delete {
        /// Target chat.
        chat_id: String,
        /// Message to delete.
        message_id: String,
        /// Metadata JSON object.
        metadata: String,
    },
    /// Clear a Slack chat's typing status (`typing` with `content: ""`);
    /// nothing is sent for other chats.
    StopTyping {
        /// Target chat.
        chat_id: String,
        /// Metadata JSON object.
        metadata: String,
    },
    /// Add or remove one reaction; op-gated on `react`.
    React {
        /// Target chat.
        chat_id: String,
        /// Message reacted to.
        message_id: String,
        /// The emoji.
        emoji: String,
        /// Remove instead of add.
        remove: bool,
        /// Metadata JSON object.
        metadata: String,
    },
    /// React "in progress" on the event's reply anchor (§6.12).
    ProcessingStart {
        /// The event's JSON as delivered.
        event: String,
    },
    /// Replace "in progress" with the outcome's emoji (§6.12).
    ProcessingComplete {
        /// The event's JSON as delivered.
        event: String,
        /// How the turn ended.
        outcome: ProcessingOutcome,
    },
    /// Create a thread under a parent chat (§6.13); the result's
    /// `thread_id` (or `message_id`) names it.
    ThreadCreate {
        /// The parent chat.
        parent_chat_id: String,
        /// Thread name before the §2.7 rules.
        name: String,
        /// Metadata JSON object.
        metadata: String,
    },
    /// Rename a thread (§6.13).
    ThreadRename {
        /// The thread.
        thread_id: String,
        /// New name before the §2.7 rules.
        name: String,
        /// The rename guard.
        guard: RenameGuard,
        /// Address the parent instead of the thread.
        parent_chat_id: Option<String>,
        /// Metadata JSON object.
        metadata: String,
    },
    /// One interim native draft frame (§6.14).
    SendDraft {
        /// Target chat.
        chat_id: String,
        /// The stream's id.
        draft_id: u64,
        /// The stream's text so far.
        content: String,
        /// Metadata JSON object (keys the turn).
        metadata: String,
    },
    /// Seal the chat's open stream in place (§6.14, `/stop`, `/new`).
    AbandonOpenDraft {
        /// Target chat.
        chat_id: String,
        /// The final text.
        content: String,
    },
    /// Show or update a plan-mode task card (§2.7 `task_card`, §9.10); a
    /// content lane, op-gated on a literal `supported_ops` entry.
    TaskCard {
        /// Target chat.
        chat_id: String,
        /// The turn's reply-to id (keys the card, threads a Slack card).
        reply_to: Option<String>,
        /// The card's chunks: a JSON array of objects.
        chunks: String,
        /// Metadata JSON object.
        metadata: String,
    },
    /// Stop the turn's task card (§2.7 `task_card_stop`); cosmetic.
    TaskCardStop {
        /// Target chat.
        chat_id: String,
        /// The same reply-to id as the card's.
        reply_to: Option<String>,
        /// Metadata JSON object (the same turn keys as the card's).
        metadata: String,
    },
    /// Send a prompt minted by [`super::Machine::mint_prompt`] (§6.11).
    Prompt(PromptSend),
    /// Send a file or a public URL as media (§2.7 `send_media`, §9.1).
    SendMedia(MediaSend),
    /// The chat's auto-thread feedback (§6.13, §9.5): at once when known,
    /// else from the next send into the chat, else a miss at the timeout.
    AutoThreadInfo {
        /// The chat.
        chat_id: String,
        /// Longest wait in milliseconds.
        timeout_ms: u64,
    },
}

/// How a turn ended, for the processing reactions (§6.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessingOutcome {
    /// Success emoji.
    Success,
    /// Failure emoji.
    Failure,
    /// No emoji; "in progress" is only removed.
    Cancelled,
}

/// The guard of a thread rename (§2.7 `thread_rename`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenameGuard {
    /// Unconditional.
    None,
    /// `only_if_connector_created: true` (preferred: the connector enforces
    /// "a human rename wins").
    ConnectorCreated,
    /// `only_if_current_name`.
    CurrentName(String),
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
    /// The host's report of an [`Output::FetchMedia`] or
    /// [`Output::UploadMedia`].
    MediaDone {
        /// The job id from the output.
        job: u64,
        /// How it went.
        outcome: MediaOutcome,
    },
    /// Restore a stored chat-label record (§7.7) after a restart; an
    /// observation the adapter made itself is never overridden.
    PrimeLabels(&'a ChatLabels),
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
    /// The answer to a prompt this instance minted (§6.11); the answering
    /// event is never delivered as chat.
    PromptAnswer(Box<PromptAnswer>),
    /// Download `request.url` to a file the host names (§9.1); answer with
    /// [`Input::MediaDone`].
    FetchMedia {
        /// Echoed in the report.
        job: u64,
        /// What to fetch.
        request: MediaRequest,
    },
    /// Upload the local file `path` (§9.1); answer with
    /// [`Input::MediaDone`].
    UploadMedia {
        /// Echoed in the report.
        job: u64,
        /// Where to post it.
        request: MediaRequest,
        /// The file the gateway named.
        path: String,
    },
    /// Delete these downloaded files (rejected deliveries, retention over).
    DeleteMedia(Vec<String>),
    /// The Discord text lane observed new chat labels (§7.7): store them
    /// and give them back with [`Input::PrimeLabels`] after a restart.
    LabelsObserved(Box<ChatLabels>),
}
