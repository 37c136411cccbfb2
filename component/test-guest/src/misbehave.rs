//! TEST ONLY adapter behaviour (formerly the placeholder guest).
//!
//! Just enough protocol to talk to the stub connector: dial, one `hello` per
//! identity, `descriptor` -> ready, `inbound` -> `deliver`, `send` ->
//! `outbound` -> `outbound_result` -> `complete`, shutdown, and a
//! timer-driven re-dial. Connector frames whose `type` starts with `__test_`
//! make it misbehave on purpose, inside the `on-text` export call:
//!
//! | frame | effect |
//! |---|---|
//! | `{"type":"__test_panic"}` | panics (an `unreachable` trap) |
//! | `{"type":"__test_spin"}` | loops forever (the host's CPU budget must interrupt it) |
//! | `{"type":"__test_grow"}` | allocates 1 MiB chunks without bound (the memory cap must trap it) |
//! | `{"type":"__test_flood","import":"log"\|"deliver","count":N}` | calls that import N times (forever without `count`) |
//! | `{"type":"__test_stdio","text":T}` | writes T to stderr and `T (stdout)` to stdout |
//! | `{"type":"__test_dial","url":U}` | dials U on a fresh conn id; the outcome is logged |

use std::cell::RefCell;
use std::collections::HashMap;

use serde_json::{Value, json};
use wasip2::clocks::monotonic_clock;

use crate::hermes::relay::host;
use crate::hermes::relay::types::{
    ChatInfo, Completion, Config, LogLevel, MessageEvent, SendResult, State,
};

#[derive(Default)]
struct Machine {
    config: Option<Config>,
    url: String,
    conn: Option<u32>,
    open: bool,
    next_conn: u32,
    buffer: String,
    state: Option<State>,
    descriptor: Option<String>,
    next_delivery: u64,
    /// Deliveries handed to the gateway: id -> bufferId to ack on accept.
    deliveries: HashMap<u64, Option<String>>,
    /// Wire `requestId` -> host request id.
    pending: HashMap<String, u64>,
    stopped: bool,
    /// Conn ids dialed by `__test_dial`.
    probes: Vec<u32>,
}

thread_local! {
    static MACHINE: RefCell<Machine> = RefCell::new(Machine::default());
}

fn with<R>(f: impl FnOnce(&mut Machine) -> R) -> R {
    MACHINE.with(|m| f(&mut m.borrow_mut()))
}

fn failed(error: &str) -> Completion {
    Completion::Sent(SendResult {
        success: false,
        message_id: None,
        error: Some(error.to_string()),
        code: None,
        ambiguous: false,
        declined: false,
        thread_id: None,
        auto_thread_name: None,
        raw: json!({"success": false, "error": error}).to_string(),
    })
}

fn set_state(m: &mut Machine, state: State, detail: &str) {
    m.state = Some(state);
    host::state_changed(state, detail);
}

fn dial(m: &mut Machine) {
    m.next_conn += 1;
    let conn = m.next_conn;
    m.conn = Some(conn);
    m.open = false;
    m.buffer.clear();
    host::dial(conn, &m.url, &[]);
    set_state(m, State::Connecting, "");
}

fn lost(m: &mut Machine, reason: &str) {
    m.conn = None;
    m.open = false;
    for (_, request) in m.pending.drain() {
        host::complete(request, &failed("relay transport connection lost"));
    }
    if m.stopped {
        return;
    }
    let reconnect = m
        .config
        .as_ref()
        .filter(|c| c.reconnect)
        .map(|c| c.reconnect_initial_ms);
    match reconnect {
        Some(ms) => {
            set_state(m, State::Reconnecting, reason);
            host::set_deadline(Some(monotonic_clock::now() + ms.saturating_mul(1_000_000)));
        }
        None => set_state(m, State::Stopped, reason),
    }
}

pub fn start(config: Config) -> Result<(), String> {
    // Spec §1.2 dial-URL normalisation.
    let trimmed = config.connector_url.trim();
    let rewritten = if let Some(rest) = trimmed.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = trimmed.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        trimmed.to_string()
    };
    let base = rewritten.trim_end_matches('/');
    let url = if base.ends_with("/relay") {
        base.to_string()
    } else {
        format!("{base}/relay")
    };
    with(|m| {
        if m.config.is_some() {
            return Err("start called twice".to_string());
        }
        m.url = url;
        m.config = Some(config);
        dial(m);
        Ok(())
    })
}

pub fn on_open(conn: u32) {
    with(|m| {
        if m.probes.contains(&conn) {
            host::log(LogLevel::Warn, &format!("test dial {conn} opened"));
            host::close(conn, 1000, "test dial done");
            return;
        }
        if m.conn != Some(conn) {
            return;
        }
        m.open = true;
        let identities = m
            .config
            .as_ref()
            .map(|c| c.identities.clone())
            .unwrap_or_default();
        let mut hellos: Vec<(String, String)> = identities
            .into_iter()
            .map(|i| (i.platform, i.bot_id))
            .collect();
        if hellos.is_empty() {
            hellos.push(("relay".to_string(), String::new()));
        }
        for (platform, bot_id) in hellos {
            let frame = json!({"type": "hello", "platform": platform, "botId": bot_id});
            let _ = host::send_text(conn, &format!("{frame}\n"));
        }
        set_state(m, State::Handshaking, "");
    });
}

pub fn on_dial_failed(conn: u32, code: u16, reason: String) {
    with(|m| {
        if m.probes.contains(&conn) {
            host::log(
                LogLevel::Warn,
                &format!("test dial {conn} failed ({code}): {reason}"),
            );
            return;
        }
        if m.conn == Some(conn) {
            host::log(LogLevel::Warn, &format!("dial failed ({code}): {reason}"));
            lost(m, &format!("dial failed {code}: {reason}"));
        }
    });
}

pub fn on_text(conn: u32, text: String) {
    let lines = with(|m| {
        if m.conn != Some(conn) {
            return Vec::new();
        }
        m.buffer.push_str(&text);
        let Some(end) = m.buffer.rfind('\n') else {
            return Vec::new();
        };
        let rest = m.buffer.split_off(end + 1);
        let complete = std::mem::replace(&mut m.buffer, rest);
        complete.lines().map(str::to_string).collect()
    });
    for line in lines.iter().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Value>(line) {
            Ok(frame) if frame.is_object() => with(|m| handle_frame(m, conn, frame)),
            _ => host::log(LogLevel::Warn, "skipping malformed frame"),
        }
    }
}

fn text_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

fn handle_frame(m: &mut Machine, conn: u32, frame: Value) {
    match frame
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
    {
        "descriptor" => {
            m.descriptor = frame.get("descriptor").map(Value::to_string);
            set_state(m, State::Ready, "");
        }
        "inbound" => {
            let event = frame.get("event").cloned().unwrap_or_else(|| json!({}));
            let source = event.get("source").cloned().unwrap_or_else(|| json!({}));
            m.next_delivery += 1;
            let delivery = m.next_delivery;
            let buffer_id = text_field(&frame, "bufferId");
            m.deliveries.insert(delivery, buffer_id.clone());
            host::deliver(&[MessageEvent {
                delivery,
                buffer_id,
                platform: text_field(&source, "platform").unwrap_or_else(|| "relay".into()),
                chat_id: text_field(&source, "chat_id").unwrap_or_default(),
                chat_type: text_field(&source, "chat_type").unwrap_or_else(|| "dm".into()),
                user_id: text_field(&source, "user_id"),
                scope_id: text_field(&source, "scope_id"),
                thread_id: text_field(&source, "thread_id"),
                message_type: text_field(&event, "message_type").unwrap_or_else(|| "text".into()),
                text: text_field(&event, "text").unwrap_or_default(),
                json: event.to_string(),
            }]);
        }
        "outbound_result" => {
            let id = text_field(&frame, "requestId").unwrap_or_default();
            if let Some(request) = m.pending.remove(&id) {
                let r = frame.get("result").cloned().unwrap_or_else(|| json!({}));
                host::complete(
                    request,
                    &Completion::Sent(SendResult {
                        success: r.get("success").and_then(Value::as_bool).unwrap_or(false),
                        message_id: text_field(&r, "message_id"),
                        error: text_field(&r, "error"),
                        code: text_field(&r, "code"),
                        ambiguous: false,
                        declined: text_field(&r, "code").as_deref() == Some("egress_declined"),
                        thread_id: text_field(&r, "thread_id"),
                        auto_thread_name: text_field(&r, "auto_thread_name"),
                        raw: r.to_string(),
                    }),
                );
            }
        }
        "interrupt_inbound" => host::interrupt(
            &text_field(&frame, "session_key").unwrap_or_default(),
            &text_field(&frame, "chat_id").unwrap_or_default(),
        ),
        // Test hooks for the host's sandbox tests.
        "__test_panic" => panic!("test guest panic requested on conn {conn}"),
        "__test_spin" => {
            let mut n = 0u64;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "__test_grow" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![7u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "__test_flood" => flood(
            m,
            text_field(&frame, "import").as_deref().unwrap_or("log"),
            frame.get("count").and_then(Value::as_u64),
        ),
        "__test_stdio" => {
            let text = text_field(&frame, "text").unwrap_or_default();
            eprintln!("{text}");
            println!("{text} (stdout)");
        }
        "__test_dial" => {
            m.next_conn += 1;
            let probe = m.next_conn;
            m.probes.push(probe);
            host::dial(probe, &text_field(&frame, "url").unwrap_or_default(), &[]);
        }
        _ => {}
    }
}

/// Calls `import` `count` times (forever when `None`) in this one export call.
fn flood(m: &mut Machine, import: &str, count: Option<u64>) {
    let mut n = 0u64;
    while count.is_none_or(|c| n < c) {
        n += 1;
        match import {
            "deliver" => {
                m.next_delivery += 1;
                let delivery = m.next_delivery;
                m.deliveries.insert(delivery, None);
                host::deliver(&[MessageEvent {
                    delivery,
                    buffer_id: None,
                    platform: "relay".into(),
                    chat_id: "flood".into(),
                    chat_type: "dm".into(),
                    user_id: None,
                    scope_id: None,
                    thread_id: None,
                    message_type: "text".into(),
                    text: format!("flood {n}"),
                    json: "{}".into(),
                }]);
            }
            _ => host::log(LogLevel::Info, &format!("test guest flood line {n}")),
        }
    }
}

pub fn on_binary(conn: u32, data: Vec<u8>) {
    on_text(conn, String::from_utf8_lossy(&data).into_owned());
}

pub fn on_closed(conn: u32, code: u16, reason: String) {
    with(|m| {
        if m.conn == Some(conn) {
            host::log(
                LogLevel::Info,
                &format!("connection closed ({code}): {reason}"),
            );
            lost(m, &format!("closed {code}: {reason}"));
        }
    });
}

pub fn on_deadline() {
    with(|m| {
        if !m.stopped && m.conn.is_none() {
            dial(m);
        }
    });
}

pub fn accept_delivery(delivery: u64) {
    with(|m| {
        if let (Some(Some(buffer_id)), Some(conn)) = (m.deliveries.remove(&delivery), m.conn) {
            let ack = json!({"type": "inbound_ack", "bufferId": buffer_id});
            let _ = host::send_text(conn, &format!("{ack}\n"));
        }
    });
}

pub fn reject_delivery(delivery: u64) {
    with(|m| m.deliveries.remove(&delivery));
}

pub fn send(
    request: u64,
    chat_id: String,
    content: String,
    reply_to: Option<String>,
    metadata: String,
    platform: Option<String>,
) {
    let metadata: Value = serde_json::from_str(&metadata).unwrap_or_else(|_| json!({}));
    let action = json!({
        "op": "send", "chat_id": chat_id, "content": content,
        "reply_to": reply_to, "metadata": metadata,
    });
    with(|m| {
        let conn = match m.conn {
            Some(conn) if m.open => conn,
            _ => return host::complete(request, &failed("relay transport not connected")),
        };
        let id = format!(
            "{:016x}{:016x}",
            wasip2::random::random::get_random_u64(),
            request
        );
        let mut frame = json!({"type": "outbound", "requestId": id, "action": action});
        if let Some(platform) = platform {
            frame["platform"] = json!(platform);
        }
        match host::send_text(conn, &format!("{frame}\n")) {
            Ok(()) => {
                m.pending.insert(id, request);
            }
            Err(e) => host::complete(request, &failed(&format!("relay send failed: {e}"))),
        }
    });
}

pub fn edit(
    request: u64,
    _chat_id: String,
    _message_id: String,
    _content: String,
    _metadata: String,
) {
    host::complete(request, &failed("edit: not implemented in the test guest"));
}

pub fn typing(request: u64, _chat_id: String, _metadata: String, _content: Option<String>) {
    host::complete(
        request,
        &failed("typing: not implemented in the test guest"),
    );
}

pub fn follow_up(request: u64, _key: String, _kind: String, _content: String, _metadata: String) {
    host::complete(
        request,
        &failed("follow_up: not implemented in the test guest"),
    );
}

pub fn get_chat_info(request: u64, chat_id: String) {
    let info = ChatInfo {
        name: chat_id,
        chat_type: "dm".to_string(),
    };
    host::complete(request, &Completion::ChatInfo(info));
}

pub fn raw_action(request: u64, _action: String, _platform: Option<String>) {
    host::complete(
        request,
        &failed("raw_action: not implemented in the test guest"),
    );
}

pub fn lane(request: u64, _command: crate::hermes::relay::types::LaneCommand) {
    host::complete(request, &failed("lane: not implemented in the test guest"));
}

pub fn interrupt(request: u64, _session_key: String, _reason: Option<String>) {
    host::complete(request, &Completion::Done);
}

pub fn shutdown(request: u64) {
    with(|m| {
        m.stopped = true;
        host::set_deadline(None);
        if let Some(conn) = m.conn.take() {
            host::close(conn, 1000, "shutdown");
        }
        for (_, pending) in m.pending.drain() {
            host::complete(pending, &failed("relay transport closed"));
        }
        set_state(m, State::Stopped, "shutdown");
    });
    host::complete(request, &Completion::Done);
}

pub fn go_dormant(request: u64) {
    host::complete(request, &Completion::Flag(false));
}

pub fn hold_redial(request: u64) {
    host::complete(request, &Completion::Done);
}

pub fn release_redial(request: u64) {
    host::complete(request, &Completion::Done);
}

pub fn hold_route(_chat: String, _hold: bool) {}

pub fn prime_route(
    _chat: String,
    _platform: String,
    _scope: Option<String>,
    _user: Option<String>,
    _profile: Option<String>,
) {
}

pub fn current_state() -> State {
    with(|m| m.state.unwrap_or(State::Connecting))
}

pub fn descriptor(_platform: Option<String>) -> Option<String> {
    with(|m| m.descriptor.clone())
}

pub fn max_message_length(_chat_id: Option<String>) -> u32 {
    4096
}

pub fn message_len(_chat_id: Option<String>, text: String) -> u32 {
    u32::try_from(text.chars().count()).unwrap_or(u32::MAX)
}

pub fn supports_op(_chat_id: Option<String>, op: String) -> bool {
    op == "send"
}

pub fn fronts_platform(platform: String) -> bool {
    with(|m| match m.config.as_ref() {
        Some(c) if !c.identities.is_empty() => c.identities.iter().any(|i| i.platform == platform),
        _ => platform == "relay",
    })
}

pub fn stats() -> String {
    with(|m| json!({"pending": m.pending.len(), "undelivered": m.deliveries.len()}).to_string())
}
