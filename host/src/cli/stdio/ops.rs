//! The bridge's input: one JSON object per line, `{"id": ..., "op": ...,
//! ...arguments}`, parsed into an [`Command`] (strictly: unknown ops, missing
//! or extra arguments and wrong types are errors naming what was wrong),
//! and the future that runs it against the adapter.

use std::future::Future;
use std::pin::Pin;

use std::time::Duration;

use relay_host::{
    AdapterError, AdapterHandle, Health, ProcessingOutcome, PromptOption, PromptRequest,
    RenameGuard, SendResult,
};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value, json};

use super::media::SendMedia;
use crate::cli::lines::SentResult;

/// The caller's id for a command: a string or an integer, echoed back.
pub type Id = Value;

/// What a command resolved to: the `result` object, or the `error` text.
pub type Outcome = Result<Value, String>;

/// A command running against the adapter.
pub type Running = Pin<Box<dyn Future<Output = (Id, Outcome)> + Send>>;

/// One command, with the wire's snake_case names.
#[derive(Debug, Deserialize)]
// Externally tagged: `parse` takes `op` out and nests the arguments under
// it, so an error names the op once.
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// The gateway took a delivered message.
    Accept {
        delivery: u64,
    },
    /// The gateway refused a delivered message (the connector may replay it).
    Reject {
        delivery: u64,
    },
    Send {
        chat_id: String,
        content: String,
        #[serde(default)]
        reply_to: Option<String>,
        #[serde(default)]
        metadata: Map<String, Value>,
        #[serde(default)]
        platform: Option<String>,
    },
    Edit {
        chat_id: String,
        message_id: String,
        content: String,
        #[serde(default)]
        metadata: Map<String, Value>,
    },
    Typing {
        chat_id: String,
        #[serde(default)]
        metadata: Map<String, Value>,
        #[serde(default)]
        content: Option<String>,
    },
    FollowUp {
        session_key: String,
        kind: String,
        content: String,
        #[serde(default)]
        metadata: Map<String, Value>,
    },
    GetChatInfo {
        chat_id: String,
    },
    RawAction {
        action: Map<String, Value>,
        #[serde(default)]
        platform: Option<String>,
    },
    /// Only when the chat's descriptor lists `delete`.
    Delete {
        chat_id: String,
        message_id: String,
        #[serde(default)]
        metadata: Map<String, Value>,
    },
    /// Clear a Slack chat's typing status.
    StopTyping {
        chat_id: String,
        #[serde(default)]
        metadata: Map<String, Value>,
    },
    React {
        chat_id: String,
        message_id: String,
        emoji: String,
        #[serde(default)]
        remove: bool,
        #[serde(default)]
        metadata: Map<String, Value>,
    },
    /// `event`: the `message` line's `event` (object), or its JSON text.
    ProcessingStart {
        #[serde(deserialize_with = "event_json")]
        event: String,
    },
    ProcessingComplete {
        #[serde(deserialize_with = "event_json")]
        event: String,
        outcome: TurnOutcome,
    },
    ThreadCreate {
        parent_chat_id: String,
        /// Optional: an empty name becomes `handoff`.
        #[serde(default, alias = "thread_name")]
        name: String,
        #[serde(default)]
        metadata: Map<String, Value>,
    },
    /// The guard as on the wire: `only_if_connector_created: true` or
    /// `only_if_current_name: "..."` (at most one); neither renames
    /// unconditionally.
    ThreadRename {
        thread_id: String,
        #[serde(alias = "thread_name")]
        name: String,
        #[serde(default)]
        only_if_connector_created: bool,
        #[serde(default)]
        only_if_current_name: Option<String>,
        #[serde(default)]
        parent_chat_id: Option<String>,
        #[serde(default)]
        metadata: Map<String, Value>,
    },
    AutoThreadInfo {
        chat_id: String,
        timeout_ms: u64,
    },
    /// One native draft frame (`final: false`).
    SendDraft {
        chat_id: String,
        draft_id: u64,
        content: String,
        #[serde(default)]
        metadata: Map<String, Value>,
    },
    /// Show or update the turn's plan-mode task card.
    TaskCard {
        chat_id: String,
        #[serde(default)]
        reply_to: Option<String>,
        chunks: Vec<Map<String, Value>>,
        #[serde(default)]
        metadata: Map<String, Value>,
    },
    /// Stop the turn's task card.
    TaskCardStop {
        chat_id: String,
        #[serde(default)]
        reply_to: Option<String>,
        #[serde(default)]
        metadata: Map<String, Value>,
    },
    /// Seal the chat's open draft stream with `content`.
    AbandonOpenDraft {
        chat_id: String,
        content: String,
    },
    /// A prompt with buttons; `prompt_id` from `mint_prompt`.
    Prompt {
        prompt_id: String,
        chat_id: String,
        question: String,
        #[serde(default)]
        prompt_kind: String,
        options: Vec<PromptButton>,
        #[serde(default)]
        choices: Vec<String>,
        #[serde(default)]
        reply_to: Option<String>,
        #[serde(default)]
        metadata: Map<String, Value>,
        #[serde(default)]
        timeout_s: Option<u32>,
    },
    /// A file or a public URL as one media message; the arguments are
    /// [`SendMedia`]'s.
    SendMedia(SendMedia),
    Interrupt {
        session_key: String,
        #[serde(default)]
        reason: Option<String>,
    },
    GoDormant {},
    HoldRedial {},
    ReleaseRedial {},
    PrimeRoute {
        chat_id: String,
        platform: String,
        #[serde(default)]
        scope_id: Option<String>,
        #[serde(default)]
        user_id: Option<String>,
        #[serde(default)]
        profile: Option<String>,
    },
    /// A stored chat-label record (a `labels` line's `labels`).
    PrimeLabels {
        labels: relay_host::ChatLabels,
    },
    Shutdown {},
    Descriptor {
        #[serde(default)]
        platform: Option<String>,
    },
    MaxMessageLength {
        #[serde(default)]
        chat_id: Option<String>,
    },
    MessageLen {
        #[serde(default)]
        chat_id: Option<String>,
        text: String,
    },
    /// `operation`, not `op`: the command's own name is `op`.
    SupportsOp {
        #[serde(default)]
        chat_id: Option<String>,
        operation: String,
    },
    FrontsPlatform {
        platform: String,
    },
    MintPrompt {
        chat_id: String,
        kind: String,
    },
    SupportsDraftStreaming {
        chat_id: String,
    },
    PrefersFreshFinal {
        chat_id: String,
        text: String,
    },
    Health {},
    State {},
    Stats {},
}

/// One of `prompt`'s `options`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptButton {
    id: String,
    label: String,
    #[serde(default)]
    style: Option<String>,
}

impl From<PromptButton> for PromptOption {
    fn from(b: PromptButton) -> Self {
        PromptOption {
            id: b.id,
            label: b.label,
            style: b.style,
        }
    }
}

/// `processing_complete`'s `outcome`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnOutcome {
    Success,
    Failure,
    Cancelled,
}

impl From<TurnOutcome> for ProcessingOutcome {
    fn from(outcome: TurnOutcome) -> Self {
        match outcome {
            TurnOutcome::Success => ProcessingOutcome::Success,
            TurnOutcome::Failure => ProcessingOutcome::Failure,
            TurnOutcome::Cancelled => ProcessingOutcome::Cancelled,
        }
    }
}

/// An `event` argument: the event object (as the `message` line carries
/// it) or its JSON text, passed on as text.
fn event_json<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::String(text) => Ok(text),
        event @ Value::Object(_) => Ok(event.to_string()),
        _ => Err(serde::de::Error::custom(
            "`event` must be the event object or its JSON text",
        )),
    }
}

/// Every op name, for the "unknown op" error.
pub const OP_NAMES: &[&str] = &[
    "accept",
    "reject",
    "send",
    "edit",
    "typing",
    "follow_up",
    "get_chat_info",
    "raw_action",
    "delete",
    "stop_typing",
    "react",
    "processing_start",
    "processing_complete",
    "thread_create",
    "thread_rename",
    "auto_thread_info",
    "send_draft",
    "task_card",
    "task_card_stop",
    "abandon_open_draft",
    "prompt",
    "send_media",
    "interrupt",
    "go_dormant",
    "hold_redial",
    "release_redial",
    "prime_route",
    "prime_labels",
    "shutdown",
    "descriptor",
    "max_message_length",
    "message_len",
    "supports_op",
    "fronts_platform",
    "mint_prompt",
    "supports_draft_streaming",
    "prefers_fresh_final",
    "health",
    "state",
    "stats",
];

/// Parses one input line into the caller's id and the op. The id is taken
/// first so an error about the rest still carries it; `Err` holds the id
/// (null when the line had no usable one) and the error text.
pub fn parse(line: &[u8]) -> Result<(Id, Command), (Id, String)> {
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| (Value::Null, format!("the line is not JSON: {e}")))?;
    let Value::Object(mut object) = value else {
        return Err((Value::Null, "the line is not a JSON object".into()));
    };
    let id = match object.remove("id") {
        None => Value::Null,
        Some(id @ (Value::String(_) | Value::Number(_))) if is_id(&id) => id,
        Some(_) => {
            return Err((Value::Null, "`id` must be a string or an integer".into()));
        }
    };
    let op = match object.remove("op") {
        None => return Err((id, "missing `op`".into())),
        Some(Value::String(op)) if OP_NAMES.contains(&op.as_str()) => op,
        Some(Value::String(op)) => {
            return Err((
                id,
                format!("unknown op `{op}` (ops: {})", OP_NAMES.join(", ")),
            ));
        }
        Some(_) => return Err((id, "`op` must be a string".into())),
    };
    let mut tagged = Map::new();
    tagged.insert(op.clone(), Value::Object(object));
    match serde_json::from_value::<Command>(Value::Object(tagged)) {
        Ok(parsed) => Ok((id, parsed)),
        Err(e) => Err((id, format!("{op}: {e}"))),
    }
}

/// Strings and integers only (not 1.5).
fn is_id(id: &Value) -> bool {
    match id {
        Value::String(_) => true,
        Value::Number(n) => n.is_i64() || n.is_u64(),
        _ => false,
    }
}

/// The future that runs `op` (every op but `accept` and `reject`, which the
/// bridge answers from its delivery table).
pub fn start(handle: &AdapterHandle, id: Id, op: Command) -> Running {
    let handle = handle.clone();
    Box::pin(async move {
        let outcome = execute(&handle, op).await;
        (id, outcome)
    })
}

async fn execute(handle: &AdapterHandle, op: Command) -> Outcome {
    match op {
        Command::Accept { .. } | Command::Reject { .. } => {
            Err("accept and reject are answered by the bridge".into())
        }
        Command::Send {
            chat_id,
            content,
            reply_to,
            metadata,
            platform,
        } => Ok(sent(
            &handle
                .send(chat_id, content, reply_to, metadata, platform)
                .await,
        )),
        Command::Edit {
            chat_id,
            message_id,
            content,
            metadata,
        } => Ok(sent(
            &handle.edit(chat_id, message_id, content, metadata).await,
        )),
        Command::Typing {
            chat_id,
            metadata,
            content,
        } => Ok(sent(&handle.typing(chat_id, metadata, content).await)),
        Command::FollowUp {
            session_key,
            kind,
            content,
            metadata,
        } => Ok(sent(
            &handle.follow_up(session_key, kind, content, metadata).await,
        )),
        Command::GetChatInfo { chat_id } => handle
            .get_chat_info(chat_id)
            .await
            .map(|info| json!({"name": info.name, "chat_type": info.chat_type}))
            .map_err(text),
        Command::RawAction { action, platform } => Ok(sent(
            &handle.raw_action(Value::Object(action), platform).await,
        )),
        Command::Delete {
            chat_id,
            message_id,
            metadata,
        } => Ok(sent(
            &handle.delete_message(chat_id, message_id, metadata).await,
        )),
        Command::StopTyping { chat_id, metadata } => {
            Ok(sent(&handle.stop_typing(chat_id, metadata).await))
        }
        Command::React {
            chat_id,
            message_id,
            emoji,
            remove,
            metadata,
        } => Ok(sent(
            &handle
                .react(chat_id, message_id, emoji, remove, metadata)
                .await,
        )),
        Command::ProcessingStart { event } => empty(handle.processing_start(event).await),
        Command::ProcessingComplete { event, outcome } => {
            empty(handle.processing_complete(event, outcome.into()).await)
        }
        Command::ThreadCreate {
            parent_chat_id,
            name,
            metadata,
        } => Ok(sent(
            &handle.create_thread(parent_chat_id, name, metadata).await,
        )),
        Command::ThreadRename {
            thread_id,
            name,
            only_if_connector_created,
            only_if_current_name,
            parent_chat_id,
            metadata,
        } => {
            let guard = match (only_if_connector_created, only_if_current_name) {
                (true, Some(_)) => {
                    return Err(
                        "thread_rename: give at most one of `only_if_connector_created` \
                                and `only_if_current_name`"
                            .into(),
                    );
                }
                (true, None) => RenameGuard::ConnectorCreated,
                (false, Some(current)) => RenameGuard::CurrentName(current),
                (false, None) => RenameGuard::None,
            };
            Ok(sent(
                &handle
                    .rename_thread(thread_id, name, guard, parent_chat_id, metadata)
                    .await,
            ))
        }
        Command::AutoThreadInfo {
            chat_id,
            timeout_ms,
        } => Ok(sent(
            &handle
                .auto_thread_info(chat_id, Duration::from_millis(timeout_ms))
                .await,
        )),
        Command::SendDraft {
            chat_id,
            draft_id,
            content,
            metadata,
        } => Ok(sent(
            &handle
                .send_draft(chat_id, draft_id, content, metadata)
                .await,
        )),
        Command::TaskCard {
            chat_id,
            reply_to,
            chunks,
            metadata,
        } => Ok(sent(
            &handle
                .task_card(
                    chat_id,
                    reply_to,
                    chunks.into_iter().map(Value::Object).collect(),
                    metadata,
                )
                .await,
        )),
        Command::TaskCardStop {
            chat_id,
            reply_to,
            metadata,
        } => Ok(sent(
            &handle.task_card_stop(chat_id, reply_to, metadata).await,
        )),
        Command::AbandonOpenDraft { chat_id, content } => {
            Ok(sent(&handle.abandon_open_draft(chat_id, content).await))
        }
        Command::Prompt {
            prompt_id,
            chat_id,
            question,
            prompt_kind,
            options,
            choices,
            reply_to,
            metadata,
            timeout_s,
        } => Ok(sent(
            &handle
                .prompt(PromptRequest {
                    prompt_id,
                    chat_id,
                    question,
                    prompt_kind,
                    options: options.into_iter().map(Into::into).collect(),
                    choices,
                    reply_to,
                    metadata,
                    timeout_s,
                })
                .await,
        )),
        Command::SendMedia(args) => Ok(sent(&handle.send_media(args.into()).await)),
        Command::Interrupt {
            session_key,
            reason,
        } => empty(handle.interrupt(session_key, reason).await),
        Command::GoDormant {} => Ok(json!({"acknowledged": handle.go_dormant().await})),
        Command::HoldRedial {} => empty(handle.hold_redial().await),
        Command::ReleaseRedial {} => empty(handle.release_redial().await),
        Command::PrimeRoute {
            chat_id,
            platform,
            scope_id,
            user_id,
            profile,
        } => empty(
            handle
                .prime_route(chat_id, platform, scope_id, user_id, profile)
                .await,
        ),
        Command::PrimeLabels { labels } => empty(handle.prime_labels(labels).await),
        Command::Shutdown {} => empty(handle.shutdown().await),
        Command::Descriptor { platform } => {
            let text = handle.descriptor(platform.as_deref()).await.map_err(text)?;
            // The descriptor is JSON; kept as text if it ever is not.
            let descriptor = text.map(|t| serde_json::from_str(&t).unwrap_or(Value::String(t)));
            Ok(json!({"descriptor": descriptor}))
        }
        Command::MaxMessageLength { chat_id } => handle
            .max_message_length(chat_id.as_deref())
            .await
            .map(|n| json!({"max_message_length": n}))
            .map_err(text),
        Command::MessageLen { chat_id, text: t } => handle
            .message_len(chat_id.as_deref(), &t)
            .await
            .map(|n| json!({"length": n}))
            .map_err(text),
        Command::SupportsOp { chat_id, operation } => handle
            .supports_op(chat_id.as_deref(), &operation)
            .await
            .map(|b| json!({"supported": b}))
            .map_err(text),
        Command::FrontsPlatform { platform } => handle
            .fronts_platform(&platform)
            .await
            .map(|b| json!({"fronts": b}))
            .map_err(text),
        Command::MintPrompt { chat_id, kind } => handle
            .mint_prompt(chat_id, kind)
            .await
            .map(|id| json!({"prompt_id": id}))
            .map_err(text),
        Command::SupportsDraftStreaming { chat_id } => handle
            .supports_draft_streaming(chat_id)
            .await
            .map(|b| json!({"supported": b}))
            .map_err(text),
        Command::PrefersFreshFinal { chat_id, text: t } => handle
            .prefers_fresh_final(chat_id, t)
            .await
            .map(|b| json!({"prefers_fresh_final": b}))
            .map_err(text),
        Command::Health {} => handle.health().await.map(|h| health(&h)).map_err(text),
        Command::State {} => handle
            .state()
            .await
            .map(|s| json!({"state": s.as_str()}))
            .map_err(text),
        Command::Stats {} => handle.stats().await.map_err(text),
    }
}

/// A send-like op's result: `ok:true` with the typed fields, also when
/// the connector reported a failure (`success:false`): the op ran.
fn sent(result: &SendResult) -> Value {
    serde_json::to_value(SentResult::from(result)).unwrap_or(Value::Null)
}

fn empty(result: Result<(), AdapterError>) -> Outcome {
    result.map(|()| json!({})).map_err(text)
}

fn text(e: AdapterError) -> String {
    e.to_string()
}

fn health(h: &Health) -> Value {
    json!({
        "state": h.state.map(|s| s.as_str()),
        "pending": h.pending,
        "undelivered": h.undelivered,
        "guest_memory_bytes": h.guest_memory_bytes,
        "guest_memory_peak_bytes": h.guest_memory_peak_bytes,
        "memory_limit_bytes": h.memory_limit_bytes,
        "guest_call_max_ms": h.guest_call_max_ms,
        "restarts": h.restarts,
        "down": h.down,
    })
}
