//! The script language: the `"do"` actions and `"expect"` expectations
//! a line may hold, as serde types, and the frame filters.

use super::*;

#[derive(Debug, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum Action {
    PushInbound {
        event: Value,
        #[serde(rename = "bufferId")]
        buffer_id: Option<String>,
    },
    SendInbound {
        event: Value,
        #[serde(rename = "bufferId")]
        buffer_id: Option<String>,
    },
    PassthroughForward {
        platform: Option<String>,
        #[serde(rename = "botId")]
        bot_id: Option<String>,
        method: Option<String>,
        path: Option<String>,
        headers: Option<Vec<(String, String)>>,
        body: Option<String>,
        #[serde(rename = "bodyB64")]
        body_b64: Option<String>,
        profile: Option<String>,
        #[serde(rename = "bufferId")]
        buffer_id: Option<String>,
    },
    InterruptInbound {
        session_key: String,
        chat_id: String,
    },
    SendFrame {
        frame: Value,
    },
    SendLine {
        line: String,
    },
    SendRaw {
        text: String,
    },
    SendBatch {
        frames: Vec<Value>,
    },
    SendSplit {
        frame: Option<Value>,
        text: Option<String>,
        parts: Option<usize>,
        at: Option<Vec<usize>>,
        #[serde(default)]
        binary: bool,
    },
    SendBinary {
        frame: Option<Value>,
        text: Option<String>,
        b64: Option<String>,
    },
    SendSized {
        size: usize,
        frame: Option<Value>,
    },
    Close {
        code: u16,
        #[serde(default)]
        reason: String,
    },
    Drop {},
    RefuseNext {
        status: Option<u16>,
        body: Option<String>,
        close_code: Option<u16>,
        reason: Option<String>,
        count: Option<usize>,
    },
    DelayNext {
        ms: u64,
    },
    CloseAfterHandshake {
        code: Option<u16>,
        #[serde(default)]
        reason: String,
        #[serde(default)]
        off: bool,
    },
    SetDescriptor {
        platform: Option<String>,
        descriptor: Option<Value>,
        raw: Option<String>,
        #[serde(default)]
        none: bool,
    },
    SetOutbound {
        op: Option<String>,
        reply: String,
        error: Option<String>,
        code: Option<String>,
        result: Option<Value>,
        delay_ms: Option<u64>,
        #[serde(default)]
        once: bool,
    },
    SetChatInfo {
        chat_id: String,
        name: String,
        #[serde(rename = "type")]
        chat_type: String,
    },
    SetGoingIdle {
        reply: String,
        delay_ms: Option<u64>,
    },
    SetReplayMode {
        mode: String,
    },
    Answer {
        #[serde(rename = "requestId")]
        request_id: Option<String>,
        result: Value,
        timeout_ms: Option<u64>,
    },
    WaitConnections {
        n: usize,
        timeout_ms: Option<u64>,
    },
    WaitHandshakes {
        n: usize,
        timeout_ms: Option<u64>,
    },
    SleepMs {
        ms: u64,
    },
    Print {
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(tag = "expect", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum Expect {
    Frame {
        #[serde(rename = "type")]
        frame_type: Option<String>,
        op: Option<String>,
        #[serde(rename = "match")]
        pattern: Option<Value>,
        conn: Option<usize>,
        timeout_ms: Option<u64>,
    },
    NoFrame {
        #[serde(rename = "type")]
        frame_type: Option<String>,
        op: Option<String>,
        #[serde(rename = "match")]
        pattern: Option<Value>,
        conn: Option<usize>,
        within_ms: u64,
    },
    Acked {
        #[serde(rename = "bufferId")]
        buffer_id: String,
        count: Option<usize>,
        timeout_ms: Option<u64>,
    },
    Connections {
        n: usize,
        timeout_ms: Option<u64>,
    },
    Handshakes {
        n: usize,
        timeout_ms: Option<u64>,
    },
    Closed {
        conn: Option<usize>,
        code: Option<u16>,
        by: Option<String>,
        timeout_ms: Option<u64>,
    },
    Header {
        name: String,
        value: Option<String>,
        conn: Option<usize>,
    },
    Idle {
        timeout_ms: Option<u64>,
    },
    Buffered {
        n: usize,
        timeout_ms: Option<u64>,
    },
}

pub(super) struct FrameFilter {
    pub(super) frame_type: Option<String>,
    pub(super) op: Option<String>,
    pub(super) pattern: Option<Value>,
    pub(super) conn: Option<usize>,
}

impl FrameFilter {
    pub(super) fn matches(&self, frame: &ReceivedFrame) -> bool {
        self.frame_type
            .as_deref()
            .is_none_or(|t| frame.frame_type() == Some(t))
            && self.op.as_deref().is_none_or(|op| frame.op() == Some(op))
            && self.conn.is_none_or(|c| frame.conn == c)
            && self.pattern.as_ref().is_none_or(|p| {
                frame
                    .json
                    .as_ref()
                    .is_some_and(|json| json_contains(json, p))
            })
    }
}

/// True when `pattern` is a subset of `value`: objects match key by key
/// (recursively), everything else must be equal.
pub fn json_contains(value: &Value, pattern: &Value) -> bool {
    match (value, pattern) {
        (Value::Object(v), Value::Object(p)) => p
            .iter()
            .all(|(k, pv)| v.get(k).is_some_and(|vv| json_contains(vv, pv))),
        _ => value == pattern,
    }
}

pub(super) fn timeout_of(ms: Option<u64>) -> Duration {
    ms.map_or(DEFAULT_TIMEOUT, Duration::from_millis)
}
