//! The stdout JSON lines of `run` (every agent): their shapes, in one place,
//! so `print`, `echo` and `stdio` write the same bytes for the same event.

use relay_host::SendResult;
use serde::Serialize;
use serde_json::value::RawValue;

/// One stdout line; `kind` first, fields in the documented order.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Line<'a> {
    Message {
        delivery: u64,
        buffer_id: Option<&'a str>,
        event: &'a RawValue,
    },
    Interrupt {
        session_key: &'a str,
        chat_id: &'a str,
    },
    /// New chat labels to store (§7.7); give them back with `prime_labels`.
    Labels {
        labels: &'a relay_host::ChatLabels,
    },
    State {
        state: &'a str,
        detail: &'a str,
    },
    Fatal {
        code: &'a str,
        message: &'a str,
        retryable: bool,
    },
    Sent {
        chat_id: &'a str,
        result: SentResult<'a>,
    },
    /// The answer to a prompt this adapter minted (the answering event is
    /// in `event`; it is never a `message` line).
    PromptAnswer {
        prompt_id: &'a str,
        /// The minted kind (`kind` is the line's own tag).
        prompt_kind: &'a str,
        option_id: &'a str,
        chat_id: &'a str,
        user_id: Option<&'a str>,
        prompt_message_id: Option<&'a str>,
        choice: Option<&'a str>,
        text_capture: bool,
        event: &'a RawValue,
    },
}

impl<'a> Line<'a> {
    /// The line of a prompt answer; `event` is its JSON, parsed once.
    pub fn prompt_answer(a: &'a relay_host::PromptAnswer, event: &'a RawValue) -> Line<'a> {
        Line::PromptAnswer {
            prompt_id: &a.prompt_id,
            prompt_kind: &a.kind,
            option_id: &a.option_id,
            chat_id: &a.chat_id,
            user_id: a.user_id.as_deref(),
            prompt_message_id: a.prompt_message_id.as_deref(),
            choice: a.choice.as_deref(),
            text_capture: a.text_capture,
            event,
        }
    }
}

/// `text` as a raw JSON value (it is the component's own JSON); `null` if
/// it is not JSON.
pub fn raw_json(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_owned()).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// The typed fields of a send result.
#[derive(Serialize)]
pub struct SentResult<'a> {
    pub success: bool,
    pub message_id: Option<&'a str>,
    pub error: Option<&'a str>,
    pub code: Option<&'a str>,
    pub ambiguous: bool,
    pub declined: bool,
    pub thread_id: Option<&'a str>,
    pub auto_thread_name: Option<&'a str>,
}

impl<'a> From<&'a SendResult> for SentResult<'a> {
    fn from(r: &'a SendResult) -> Self {
        Self {
            success: r.success,
            message_id: r.message_id.as_deref(),
            error: r.error.as_deref(),
            code: r.code.as_deref(),
            ambiguous: r.ambiguous,
            declined: r.declined,
            thread_id: r.thread_id.as_deref(),
            auto_thread_name: r.auto_thread_name.as_deref(),
        }
    }
}

/// Writes the `message` line of `json` (the event as the component gave it)
/// with `serialize`: validated in place and written as is (no copy) when it
/// is compact JSON, re-serialised otherwise.
pub fn with_message_line<T>(
    delivery: u64,
    buffer_id: Option<&str>,
    json: &str,
    serialize: impl FnOnce(&Line<'_>) -> T,
) -> T {
    let fallback;
    let event: &RawValue = match serde_json::from_str::<&RawValue>(json) {
        Ok(raw) if !raw.get().contains(['\n', '\r']) => raw,
        _ => {
            fallback = event_json(json);
            &fallback
        }
    };
    serialize(&Line::Message {
        delivery,
        buffer_id,
        event,
    })
}

/// The fallback of [`with_message_line`] for event JSON that is not compact
/// JSON: re-serialised when it spans lines; a JSON string if it ever is not
/// JSON, so the line still parses.
fn event_json(json: &str) -> Box<RawValue> {
    let text = match serde_json::from_str::<serde_json::Value>(json) {
        Ok(value) => value.to_string(),
        Err(_) => serde_json::Value::String(json.to_string()).to_string(),
    };
    RawValue::from_string(text).unwrap_or_else(|_| RawValue::NULL.to_owned())
}
