//! The bridge's input: one JSON object per line, `{"id": ..., "op": ...,
//! ...arguments}`, parsed into an [`Command`] (strictly: unknown ops, missing
//! or extra arguments and wrong types are errors naming what was wrong),
//! and the future that runs it against the adapter.

use std::future::Future;
use std::pin::Pin;

use relay_host::{AdapterError, AdapterHandle, Health, SendResult};
use serde::Deserialize;
use serde_json::{Map, Value, json};

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
    Health {},
    State {},
    Stats {},
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
    "interrupt",
    "go_dormant",
    "hold_redial",
    "release_redial",
    "prime_route",
    "shutdown",
    "descriptor",
    "max_message_length",
    "message_len",
    "supports_op",
    "fronts_platform",
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
