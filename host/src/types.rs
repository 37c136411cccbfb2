//! Plain public types of the API: connection [`State`], [`SendResult`],
//! [`ChatInfo`], [`Health`], the lane arguments [`ProcessingOutcome`],
//! [`RenameGuard`] and [`PromptRequest`], and the interface version. The bottom layer: no
//! wasmtime, no channels.

use serde_json::{Map, Value, json};

/// The newest WIT interface version this host speaks: the one the built-in
/// component is built against (`wit/v0.2`, released and frozen).
pub const HOST_API_VERSION: &str = "0.2.0";

/// Every WIT interface version this host binds, oldest first (one folder
/// under `wit/` each). A component exports one of them, and its
/// `api-version` must report the same major and minor.
pub const SUPPORTED_API_VERSIONS: &[&str] = &["0.1.0", "0.2.0"];

/// A health snapshot of one adapter ([`AdapterHandle::health`](crate::AdapterHandle::health)); answered by
/// the host even while the component is restarting or down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The component's connection state; `None` while no instance is live
    /// (restarting, or down).
    pub state: Option<State>,
    /// Outbound requests awaiting a result (0 without a live instance).
    pub pending: u64,
    /// Deliveries awaiting the gateway's accept/reject (0 without a live
    /// instance).
    pub undelivered: u64,
    /// Linear memory the live instance holds, in bytes (0 without one).
    /// Linear memory never shrinks, so this is also the instance's peak.
    pub guest_memory_bytes: usize,
    /// The highest `guest_memory_bytes` of any instance of this adapter.
    pub guest_memory_peak_bytes: usize,
    /// The cap ([`HostLimits::memory_bytes`](crate::HostLimits::memory_bytes)).
    pub memory_limit_bytes: usize,
    /// The longest export call of any instance of this adapter, in
    /// milliseconds (1 ms epoch ticks, rounded down); compare with
    /// [`HostLimits::call_budget`](crate::HostLimits::call_budget).
    pub guest_call_max_ms: u64,
    /// Re-instantiations since the adapter was spawned.
    pub restarts: u64,
    /// Why the adapter is down for good (restart budget spent); `None` while
    /// it runs.
    pub down: Option<String>,
}

/// Connection state as a gateway sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Dialing the connector.
    Connecting,
    /// Socket open, waiting for the first descriptor.
    Handshaking,
    /// A descriptor is applied; traffic flows.
    Ready,
    /// Waiting out the reconnect ladder.
    Reconnecting,
    /// `going_idle` acknowledged; the connector buffers inbound.
    Idle,
    /// Closed on purpose by `go-dormant`; re-dials on the dormant cadence.
    Dormant,
    /// Credentials revoked (terminal 4401); nothing more is dialed.
    Disabled,
    /// Shut down; nothing more is dialed.
    Stopped,
}

impl State {
    /// The WIT name (`connecting`, `ready`, ...).
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

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Outcome of an outbound operation, real or synthesized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendResult {
    /// Whether the connector reported success.
    pub success: bool,
    /// Platform id of the sent message.
    pub message_id: Option<String>,
    /// Error text on failure.
    pub error: Option<String>,
    /// Error code (e.g. `egress_declined`).
    pub code: Option<String>,
    /// The connector may have applied the frame (timeout, lost ack, instance
    /// died after the request reached it).
    pub ambiguous: bool,
    /// A definite egress refusal; never retry or fall back.
    pub declined: bool,
    /// Thread the message went to, if the connector created one.
    pub thread_id: Option<String>,
    /// Name of that auto-created thread.
    pub auto_thread_name: Option<String>,
    /// The result object as JSON.
    pub raw: String,
}

impl SendResult {
    /// A failed result with `error`, synthesized by the host.
    pub fn failed(error: impl Into<String>, ambiguous: bool) -> Self {
        let error = error.into();
        let mut raw = json!({"success": false, "error": error});
        if ambiguous {
            raw["ambiguous"] = Value::Bool(true);
        }
        Self {
            success: false,
            message_id: None,
            error: Some(error),
            code: None,
            ambiguous,
            declined: false,
            thread_id: None,
            auto_thread_name: None,
            raw: raw.to_string(),
        }
    }

    /// The thread a successful
    /// [`create_thread`](crate::AdapterHandle::create_thread) made: the
    /// result's `thread_id`, else its `message_id` (connectors name the new
    /// thread with either). `None` when the result is a failure or names
    /// neither. Meant for `create_thread` results: for a send, `message_id`
    /// is the message, not a thread.
    pub fn created_thread_id(&self) -> Option<&str> {
        if !self.success {
            return None;
        }
        self.thread_id
            .as_deref()
            .or(self.message_id.as_deref())
            .filter(|id| !id.is_empty())
    }
}

/// How a turn ended, for
/// [`processing_complete`](crate::AdapterHandle::processing_complete): which
/// emoji replaces the "in progress" reaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProcessingOutcome {
    /// The success emoji (✅; 👍 on Telegram).
    Success,
    /// The failure emoji (❌; 👎 on Telegram).
    Failure,
    /// No emoji: "in progress" is only removed.
    Cancelled,
}

impl ProcessingOutcome {
    /// The wire name (`success`, `failure`, `cancelled`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessingOutcome::Success => "success",
            ProcessingOutcome::Failure => "failure",
            ProcessingOutcome::Cancelled => "cancelled",
        }
    }
}

impl From<ProcessingOutcome> for relay_core::machine::ProcessingOutcome {
    fn from(outcome: ProcessingOutcome) -> Self {
        match outcome {
            ProcessingOutcome::Success => Self::Success,
            ProcessingOutcome::Failure => Self::Failure,
            ProcessingOutcome::Cancelled => Self::Cancelled,
        }
    }
}

/// When a [`rename_thread`](crate::AdapterHandle::rename_thread) may apply.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RenameGuard {
    /// Rename unconditionally.
    None,
    /// Only a thread the connector created and no human renamed since
    /// (`only_if_connector_created: true`; the connector keeps that memory,
    /// so "a human rename wins"). The preferred guard for automatic names.
    ConnectorCreated,
    /// Only while the thread's current name is this one
    /// (`only_if_current_name`).
    CurrentName(String),
}

impl From<RenameGuard> for relay_core::machine::RenameGuard {
    fn from(guard: RenameGuard) -> Self {
        match guard {
            RenameGuard::None => Self::None,
            RenameGuard::ConnectorCreated => Self::ConnectorCreated,
            RenameGuard::CurrentName(name) => Self::CurrentName(name),
        }
    }
}

/// One button of a [`PromptRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptOption {
    /// The option id, `[A-Za-z0-9_.-]{1,32}`; the answer names it
    /// ([`PromptAnswer::option_id`](crate::PromptAnswer::option_id)). For a
    /// `clarify` prompt, `c<i>` picks `choices[i]` and `other` asks for a
    /// typed answer.
    pub id: String,
    /// The button's text.
    pub label: String,
    /// `primary`, `success`, `danger` or `secondary`; `None` for the
    /// platform's default.
    pub style: Option<String>,
}

impl PromptOption {
    /// A button with the default style.
    pub fn new(id: impl Into<String>, label: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            label: label.into(),
            style: None,
        }
    }

    /// The same button with `style` (`primary`, `success`, `danger`,
    /// `secondary`).
    #[must_use]
    pub fn with_style(mut self, style: impl Into<String>) -> Self {
        self.style = Some(style.into());
        self
    }
}

/// A prompt with buttons, for
/// [`AdapterHandle::prompt`](crate::AdapterHandle::prompt) (the WIT
/// `prompt` record). `prompt_id` comes from
/// [`AdapterHandle::mint_prompt`](crate::AdapterHandle::mint_prompt) for the
/// same chat. Build it with [`PromptRequest::new`] and the `with_*`
/// methods, or fill the fields.
///
/// ```
/// use relay_host::{PromptOption, PromptRequest};
/// let request = PromptRequest::new("3fa9c1.0b7e44d2", "chan1", "Deploy to production?")
///     .with_kind("approval")
///     .with_option(PromptOption::new("once", "Approve once").with_style("success"))
///     .with_option(PromptOption::new("deny", "Deny").with_style("danger"))
///     .with_timeout_s(300);
/// assert_eq!(request.options.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptRequest {
    /// From [`mint_prompt`](crate::AdapterHandle::mint_prompt) for this
    /// chat, not expired (a prompt waits one hour).
    pub prompt_id: String,
    /// The chat to ask in.
    pub chat_id: String,
    /// The question (the frame's `content`).
    pub question: String,
    /// The wire's styling hint: `approval`, `clarify` or `choice`; empty
    /// sends `choice`.
    pub prompt_kind: String,
    /// The buttons. Each id must be valid and `hp1:<prompt_id>:<option_id>`
    /// must fit 64 bytes, else nothing is sent.
    pub options: Vec<PromptOption>,
    /// For a `clarify` prompt: the full text of choice `c<i>` at index i,
    /// returned in the answer's `choice`.
    pub choices: Vec<String>,
    /// The message the prompt replies to.
    pub reply_to: Option<String>,
    /// Metadata (the route is re-attached, as for a send).
    pub metadata: Map<String, Value>,
    /// Advisory timeout for the connector, in seconds.
    pub timeout_s: Option<u32>,
}

impl PromptRequest {
    /// A prompt with no buttons yet, kind `choice`, no reply anchor, empty
    /// metadata and no timeout.
    pub fn new(
        prompt_id: impl Into<String>,
        chat_id: impl Into<String>,
        question: impl Into<String>,
    ) -> Self {
        Self {
            prompt_id: prompt_id.into(),
            chat_id: chat_id.into(),
            question: question.into(),
            prompt_kind: String::new(),
            options: Vec::new(),
            choices: Vec::new(),
            reply_to: None,
            metadata: Map::new(),
            timeout_s: None,
        }
    }

    /// Sets the styling hint (`approval`, `clarify`, `choice`).
    #[must_use]
    pub fn with_kind(mut self, kind: impl Into<String>) -> Self {
        self.prompt_kind = kind.into();
        self
    }

    /// Adds one button.
    #[must_use]
    pub fn with_option(mut self, option: PromptOption) -> Self {
        self.options.push(option);
        self
    }

    /// Sets the `clarify` choices (`c0`, `c1`, ... in order).
    #[must_use]
    pub fn with_choices(mut self, choices: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.choices = choices.into_iter().map(Into::into).collect();
        self
    }

    /// Replies to this message.
    #[must_use]
    pub fn with_reply_to(mut self, message_id: impl Into<String>) -> Self {
        self.reply_to = Some(message_id.into());
        self
    }

    /// Sets the metadata object.
    #[must_use]
    pub fn with_metadata(mut self, metadata: Map<String, Value>) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets the connector's advisory timeout, in seconds.
    #[must_use]
    pub fn with_timeout_s(mut self, seconds: u32) -> Self {
        self.timeout_s = Some(seconds);
        self
    }
}

impl From<PromptRequest> for relay_core::machine::PromptSend {
    fn from(p: PromptRequest) -> Self {
        Self {
            prompt_id: p.prompt_id,
            chat_id: p.chat_id,
            question: p.question,
            options: p
                .options
                .into_iter()
                .map(|o| relay_core::machine::PromptOption {
                    id: o.id,
                    label: o.label,
                    style: o.style,
                })
                .collect(),
            choices: p.choices,
            reply_to: p.reply_to,
            metadata: Value::Object(p.metadata).to_string(),
            timeout_s: p.timeout_s,
            prompt_kind: p.prompt_kind,
        }
    }
}

/// What `send_media` sends (spec §2.7 `send_media`, §9.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// A picture.
    Image,
    /// A voice note.
    Voice,
    /// An audio file.
    Audio,
    /// A video.
    Video,
    /// Any other file.
    Document,
}

impl MediaKind {
    /// The wire's `media_kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Voice => "voice",
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
            MediaKind::Document => "document",
        }
    }
}

/// A media message for [`send_media`](crate::AdapterHandle::send_media).
///
/// ```
/// use relay_host::{MediaKind, MediaSendRequest};
/// let request = MediaSendRequest::new("chan1", MediaKind::Document, "/tmp/report.pdf")
///     .with_caption("the report");
/// assert_eq!(request.filename, None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSendRequest {
    /// The chat.
    pub chat_id: String,
    /// What it is.
    pub kind: MediaKind,
    /// A local file (uploaded to the connector first; needs
    /// [`AdapterConfig::media`](crate::AdapterConfig::media)) or a public
    /// `http(s)` URL (sent as is).
    pub source: String,
    /// The caption (the frame's `content`).
    pub caption: String,
    /// The message replied to.
    pub reply_to: Option<String>,
    /// The file name shown; also the upload's `X-Media-Filename` (default:
    /// the local file's name).
    pub filename: Option<String>,
    /// Metadata (the route is re-attached, as for a send).
    pub metadata: Map<String, Value>,
}

impl MediaSendRequest {
    /// A media message with no caption, anchor, file name or metadata.
    pub fn new(chat_id: impl Into<String>, kind: MediaKind, source: impl Into<String>) -> Self {
        Self {
            chat_id: chat_id.into(),
            kind,
            source: source.into(),
            caption: String::new(),
            reply_to: None,
            filename: None,
            metadata: Map::new(),
        }
    }

    /// With a caption.
    pub fn with_caption(mut self, caption: impl Into<String>) -> Self {
        self.caption = caption.into();
        self
    }

    /// Replying to a message.
    pub fn with_reply_to(mut self, message_id: impl Into<String>) -> Self {
        self.reply_to = Some(message_id.into());
        self
    }

    /// With a file name.
    pub fn with_filename(mut self, name: impl Into<String>) -> Self {
        self.filename = Some(name.into());
        self
    }

    /// With metadata.
    pub fn with_metadata(mut self, metadata: Map<String, Value>) -> Self {
        self.metadata = metadata;
        self
    }
}

impl From<MediaSendRequest> for relay_core::machine::MediaSend {
    fn from(m: MediaSendRequest) -> Self {
        Self {
            chat_id: m.chat_id,
            kind: m.kind.as_str().to_owned(),
            source: m.source,
            caption: m.caption,
            reply_to: m.reply_to,
            filename: m.filename,
            metadata: Value::Object(m.metadata).to_string(),
        }
    }
}

/// What the Discord text lane observed about a chat (spec §7.7): its name,
/// topic and parent, and an author's display name in it. Interactions
/// (slash commands, buttons, modals) present these labels instead of their
/// payload's, so a session's labels do not flip between a slash command
/// and a text message. `None` values are observations too.
///
/// The adapter reports each change as [`Event::Labels`](crate::Event::Labels);
/// store the latest per (`scope_id`, `chat_id`, `user_id`) and give them
/// back with [`prime_labels`](crate::AdapterHandle::prime_labels) after a
/// restart.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ChatLabels {
    /// The guild, `""` for none.
    pub scope_id: String,
    /// The chat.
    pub chat_id: String,
    /// The chat's name.
    pub chat_name: Option<String>,
    /// The chat's topic.
    pub chat_topic: Option<String>,
    /// The parent channel when the chat is a thread.
    pub parent_chat_id: Option<String>,
    /// The author whose display name this is.
    pub user_id: Option<String>,
    /// The author's display name in the chat.
    pub user_name: Option<String>,
}

/// Answer to `get_chat_info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatInfo {
    /// Chat name.
    pub name: String,
    /// Chat type (`dm`, `group`, ...).
    pub chat_type: String,
}
