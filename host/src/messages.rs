//! The actor's mailbox: what handles send ([`Mail`]: a [`Request`] that
//! completes through the component's `complete` import, or a synchronous
//! [`Query`]) and how they are answered ([`Completion`], [`Answer`]).

use relay_core::machine::{Command, Lane};
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
    /// A typed lane new in WIT 0.2 (delete, reactions, threads, ...).
    Lane(Lane),
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
    /// redial holds never wait; neither do the processing reactions (their
    /// frames are background entries nobody waits for) nor auto-thread
    /// info (it waits for another send, it makes none).
    pub(crate) fn needs_slot(&self) -> bool {
        match self {
            Request::Send { .. }
            | Request::Edit { .. }
            | Request::Typing { .. }
            | Request::FollowUp { .. }
            | Request::GetChatInfo { .. }
            | Request::RawAction { .. } => true,
            Request::Lane(lane) => match lane {
                Lane::Delete { .. }
                | Lane::StopTyping { .. }
                | Lane::React { .. }
                | Lane::ThreadCreate { .. }
                | Lane::ThreadRename { .. }
                | Lane::SendDraft { .. }
                | Lane::AbandonOpenDraft { .. }
                | Lane::Prompt(_)
                | Lane::TaskCard { .. }
                | Lane::TaskCardStop { .. }
                | Lane::SendMedia(_) => true,
                Lane::ProcessingStart { .. }
                | Lane::ProcessingComplete { .. }
                | Lane::AutoThreadInfo { .. } => false,
            },
            Request::Interrupt { .. }
            | Request::Shutdown
            | Request::GoDormant
            | Request::HoldRedial
            | Request::ReleaseRedial => false,
        }
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
            Request::Lane(lane) => match lane {
                Lane::Delete { chat_id, .. }
                | Lane::StopTyping { chat_id, .. }
                | Lane::React { chat_id, .. }
                | Lane::SendDraft { chat_id, .. }
                | Lane::AbandonOpenDraft { chat_id, .. }
                | Lane::TaskCard { chat_id, .. }
                | Lane::TaskCardStop { chat_id, .. }
                | Lane::AutoThreadInfo { chat_id, .. } => Some(chat_id.clone()),
                Lane::ThreadCreate { parent_chat_id, .. } => Some(parent_chat_id.clone()),
                Lane::Prompt(prompt) => Some(prompt.chat_id.clone()),
                Lane::SendMedia(m) => Some(m.chat_id.clone()),
                // The machine addresses the parent when one is given.
                Lane::ThreadRename {
                    thread_id,
                    parent_chat_id,
                    ..
                } => Some(
                    parent_chat_id
                        .as_deref()
                        .filter(|p| !p.is_empty())
                        .unwrap_or(thread_id)
                        .to_owned(),
                ),
                Lane::ProcessingStart { .. } | Lane::ProcessingComplete { .. } => None,
            },
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
            Request::Lane(lane) => Command::Lane(lane),
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
            Request::Lane(lane) => match lane {
                Lane::Delete { .. } => "delete",
                Lane::StopTyping { .. } => "stop_typing",
                Lane::React { .. } => "react",
                Lane::ProcessingStart { .. } => "processing_start",
                Lane::ProcessingComplete { .. } => "processing_complete",
                Lane::ThreadCreate { .. } => "thread_create",
                Lane::ThreadRename { .. } => "thread_rename",
                Lane::SendDraft { .. } => "send_draft",
                Lane::AbandonOpenDraft { .. } => "abandon_open_draft",
                Lane::Prompt(_) => "prompt",
                Lane::TaskCard { .. } => "task_card",
                Lane::TaskCardStop { .. } => "task_card_stop",
                Lane::AutoThreadInfo { .. } => "auto_thread_info",
                Lane::SendMedia(_) => "send_media",
            },
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
    /// 0.2: register a prompt for a chat and answer its id (the one query
    /// besides the route ones that changes state).
    MintPrompt {
        chat_id: String,
        kind: String,
    },
    /// 0.2: whether `send-draft` is usable for the chat.
    SupportsDraftStreaming(String),
    /// 0.2: whether a streamed reply with this final text should end with
    /// a fresh send.
    PrefersFreshFinal(String, String),
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
    /// 0.2: restore a stored chat-label record.
    PrimeLabels(crate::types::ChatLabels),
}

/// Answer to a [`Query`].
#[derive(Debug)]
pub(crate) enum Answer {
    State(State),
    Text(Option<String>),
    Number(u32),
    Flag(bool),
    Unit,
    /// The component has no such export (an older WIT version); the text
    /// says so.
    Unsupported(&'static str),
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
