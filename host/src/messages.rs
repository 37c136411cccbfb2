//! The actor's mailbox: what handles send ([`Mail`]: a [`Request`] that
//! completes through the component's `complete` import, or a synchronous
//! [`Query`]) and how they are answered ([`Completion`], [`Answer`]).

use relay_core::machine::Command;
use tokio::sync::oneshot;

use crate::admission::Slot;
use crate::error::AdapterError;
use crate::types::{ChatInfo, Health, SendResult, State};

/// How a request completed (host form of the WIT `completion`).
#[derive(Debug)]
pub(crate) enum Completion {
    Sent(SendResult),
    ChatInfo(ChatInfo),
    Flag(bool),
    Done,
}

/// A command for the component; it completes through `complete`.
#[derive(Debug)]
pub(crate) enum Request {
    Send {
        chat_id: String,
        content: String,
        reply_to: Option<String>,
        metadata: String,
        platform: Option<String>,
    },
    Edit {
        chat_id: String,
        message_id: String,
        content: String,
        metadata: String,
    },
    Typing {
        chat_id: String,
        metadata: String,
        content: Option<String>,
    },
    FollowUp {
        session_key: String,
        kind: String,
        content: String,
        metadata: String,
    },
    GetChatInfo {
        chat_id: String,
    },
    RawAction {
        action: String,
        platform: Option<String>,
    },
    Interrupt {
        session_key: String,
        reason: Option<String>,
    },
    Shutdown,
    GoDormant,
    HoldRedial,
    ReleaseRedial,
}

impl Request {
    /// Whether the command can create a pending entry in the component, so
    /// it needs an admission slot first. Interrupts, shutdown, dormancy and
    /// redial holds never wait.
    pub(crate) fn needs_slot(&self) -> bool {
        matches!(
            self,
            Request::Send { .. }
                | Request::Edit { .. }
                | Request::Typing { .. }
                | Request::FollowUp { .. }
                | Request::GetChatInfo { .. }
                | Request::RawAction { .. }
        )
    }

    /// The chat whose route the request needs (held while it waits).
    pub(crate) fn route_chat(&self) -> Option<String> {
        match self {
            Request::Send { chat_id, .. }
            | Request::Edit { chat_id, .. }
            | Request::Typing { chat_id, .. }
            | Request::GetChatInfo { chat_id } => Some(chat_id.clone()),
            Request::RawAction { action, .. } => serde_json::from_str::<serde_json::Value>(action)
                .ok()?
                .get("chat_id")?
                .as_str()
                .map(str::to_owned),
            _ => None,
        }
    }

    /// The machine's form of the command (borrowing its fields), as the
    /// component's exports build it; the native engine feeds it directly.
    pub(crate) fn as_command(&self) -> Command<'_> {
        match self {
            Request::Send {
                chat_id,
                content,
                reply_to,
                metadata,
                platform,
            } => Command::Send {
                chat_id,
                content,
                reply_to: reply_to.as_deref(),
                metadata,
                platform: platform.as_deref(),
            },
            Request::Edit {
                chat_id,
                message_id,
                content,
                metadata,
            } => Command::Edit {
                chat_id,
                message_id,
                content,
                metadata,
            },
            Request::Typing {
                chat_id,
                metadata,
                content,
            } => Command::Typing {
                chat_id,
                metadata,
                content: content.as_deref(),
            },
            Request::FollowUp {
                session_key,
                kind,
                content,
                metadata,
            } => Command::FollowUp {
                session_key,
                kind,
                content,
                metadata,
            },
            Request::GetChatInfo { chat_id } => Command::GetChatInfo { chat_id },
            Request::RawAction { action, platform } => Command::RawAction {
                action,
                platform: platform.as_deref(),
            },
            Request::Interrupt {
                session_key,
                reason,
            } => Command::Interrupt {
                session_key,
                reason: reason.as_deref(),
            },
            Request::Shutdown => Command::Shutdown,
            Request::GoDormant => Command::GoDormant,
            Request::HoldRedial => Command::HoldRedial,
            Request::ReleaseRedial => Command::ReleaseRedial,
        }
    }

    /// The command's name, for logs and metrics.
    pub(crate) fn op(&self) -> &'static str {
        match self {
            Request::Send { .. } => "send",
            Request::Edit { .. } => "edit",
            Request::Typing { .. } => "typing",
            Request::FollowUp { .. } => "follow_up",
            Request::GetChatInfo { .. } => "get_chat_info",
            Request::RawAction { .. } => "raw_action",
            Request::Interrupt { .. } => "interrupt",
            Request::Shutdown => "shutdown",
            Request::GoDormant => "go_dormant",
            Request::HoldRedial => "hold_redial",
            Request::ReleaseRedial => "release_redial",
        }
    }
}

/// A synchronous export call.
#[derive(Debug)]
pub(crate) enum Query {
    State,
    Descriptor(Option<String>),
    MaxMessageLength(Option<String>),
    MessageLen(Option<String>, String),
    SupportsOp(Option<String>, String),
    FrontsPlatform(String),
    Stats,
    Health,
    /// Hold (or release) one pin of a chat's route.
    HoldRoute {
        chat_id: String,
        hold: bool,
    },
    PrimeRoute {
        chat_id: String,
        platform: String,
        scope_id: Option<String>,
        user_id: Option<String>,
        profile: Option<String>,
    },
}

/// Answer to a [`Query`].
#[derive(Debug)]
pub(crate) enum Answer {
    State(State),
    Text(Option<String>),
    Number(u32),
    Flag(bool),
    Unit,
    Health(Health),
    /// The component's half of a health answer (state, stats JSON); the
    /// actor completes it into [`Answer::Health`].
    Guest(State, String),
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, AdapterError>>;

/// What handles send to the actor.
#[derive(Debug)]
pub(crate) enum Mail {
    /// A request with its admission slot (held until it completes).
    Request(Request, Reply<Completion>, Option<Slot>),
    Query(Query, Reply<Answer>),
}
