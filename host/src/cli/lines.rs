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
