//! Machine behaviour on a fake clock against a scripted connector.

use super::*;
use crate::frame::{Action, GatewayFrame};
use serde_json::json;

const DISCORD_DESCRIPTOR: &str = r#"{"contract_version":1,"platform":"discord","label":"Discord","max_message_length":2000,"supports_draft_streaming":false,"supports_edit":true,"supports_threads":true,"markdown_dialect":"discord","len_unit":"chars","supported_ops":["send","edit","typing","follow_up","get_chat_info","react"]}"#;
const TELEGRAM_DESCRIPTOR: &str = r#"{"contract_version":1,"platform":"telegram","label":"Telegram","max_message_length":4096,"supports_draft_streaming":false,"supports_edit":true,"supports_threads":false,"markdown_dialect":"markdown_v2","len_unit":"utf16","supported_ops":["send","delete"]}"#;

pub(super) struct Harness {
    pub m: Machine,
    pub now_ms: u64,
    pub deadline: Option<u64>,
    pub outputs: Vec<Output>,
    pub next_request: u64,
}

pub(super) fn test_config() -> Config {
    let mut cfg = Config::new("ws://127.0.0.1:9100");
    cfg.identities = vec![
        Identity::new("discord", "B1"),
        Identity::new("telegram", ""),
    ];
    cfg.reconnect_jitter = Some(1.0);
    cfg.gateway_id = "gw-test".into();
    cfg.secret = crate::auth::Secret::new("s3cret");
    cfg
}

impl Harness {
    pub fn new(cfg: Config) -> Harness {
        let mut h = Harness {
            m: Machine::new(cfg, 42).expect("valid config"),
            now_ms: 0,
            deadline: None,
            outputs: Vec::new(),
            next_request: 1,
        };
        h.input(Input::Start);
        h
    }

    fn now(&self) -> Now {
        Now::at_ms(self.now_ms)
    }

    pub fn input(&mut self, input: Input<'_>) -> Vec<Output> {
        let now = self.now();
        self.m.handle(now, input);
        let mut got = Vec::new();
        while let Some(o) = self.m.poll_output() {
            if let Output::SetDeadline(d) = &o {
                self.deadline = *d;
            }
            got.push(o);
        }
        self.outputs.extend(got.iter().cloned());
        got
    }

    /// Moves the clock, firing the deadline every time it passes.
    pub fn advance(&mut self, ms: u64) -> Vec<Output> {
        let target = self.now_ms + ms;
        let mut got = Vec::new();
        while let Some(d) = self.deadline {
            let d_ms = d.div_ceil(1_000_000);
            if d_ms > target {
                break;
            }
            self.now_ms = self.now_ms.max(d_ms);
            got.extend(self.input(Input::Deadline));
        }
        self.now_ms = target;
        got
    }

    pub fn last_dial(&self) -> Option<(u32, Vec<(String, String)>)> {
        self.outputs.iter().rev().find_map(|o| match o {
            Output::Dial { conn, headers, .. } => Some((*conn, headers.0.clone())),
            _ => None,
        })
    }

    pub fn dials(&self) -> usize {
        self.outputs
            .iter()
            .filter(|o| matches!(o, Output::Dial { .. }))
            .count()
    }

    pub fn open(&mut self) -> u32 {
        let (conn, _) = self.last_dial().expect("a dial");
        self.input(Input::SocketOpened { conn });
        conn
    }

    pub fn recv(&mut self, conn: u32, line: &str) -> Vec<Output> {
        let text = format!("{line}\n");
        self.input(Input::SocketText { conn, text: &text })
    }

    /// Dial, open, answer with the Discord descriptor; returns the conn.
    pub fn connect(&mut self) -> u32 {
        let conn = self.open();
        let line = format!(r#"{{"type":"descriptor","descriptor":{DISCORD_DESCRIPTOR}}}"#);
        self.recv(conn, &line);
        assert_eq!(self.m.state(), State::Ready);
        conn
    }

    pub fn command(&mut self, command: Command<'_>) -> (u64, Vec<Output>) {
        let request = self.next_request;
        self.next_request += 1;
        let out = self.input(Input::Command { request, command });
        (request, out)
    }

    pub fn send(&mut self, chat: &str, text: &str) -> (u64, Vec<Output>) {
        self.command(Command::Send {
            chat_id: chat,
            content: text,
            reply_to: None,
            metadata: "{}",
            platform: None,
        })
    }
}

pub(super) fn sent(outputs: &[Output]) -> Vec<GatewayFrame> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::SendText { text, .. } => GatewayFrame::decode(text),
            _ => None,
        })
        .collect()
}

/// Feeds one 0.2 lane command.
pub(super) fn lane(h: &mut Harness, lane: Lane) -> (u64, Vec<Output>) {
    h.command(Command::Lane(&lane))
}

/// Answers the outbound request in `out` with `result`.
pub(super) fn answer(h: &mut Harness, conn: u32, out: &[Output], result: Value) -> Vec<Output> {
    let rid = outbound_request_id(&sent(out));
    h.recv(conn, &result_line(&rid, result))
}

/// The outbound frames in `outputs`, as JSON.
pub(super) fn outbound_frames(outputs: &[Output]) -> Vec<serde_json::Value> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::SendText { text, .. } => serde_json::from_str::<serde_json::Value>(text).ok(),
            _ => None,
        })
        .filter(|f| f["type"] == "outbound")
        .collect()
}

/// The `action` objects of the outbound frames in `outputs`.
pub(super) fn actions(outputs: &[Output]) -> Vec<serde_json::Value> {
    outbound_frames(outputs)
        .into_iter()
        .map(|f| f["action"].clone())
        .collect()
}

/// How many WARN log lines in `outputs` contain `needle`.
pub(super) fn warns(outputs: &[Output], needle: &str) -> usize {
    outputs
        .iter()
        .filter(|o| matches!(o, Output::Log { level: Level::Warn, message } if message.contains(needle)))
        .count()
}

pub(super) fn completion(outputs: &[Output], request: u64) -> Option<Completion> {
    outputs.iter().find_map(|o| match o {
        Output::Complete {
            request: r,
            completion,
        } if *r == request => Some(completion.clone()),
        _ => None,
    })
}

pub(super) fn sent_result(outputs: &[Output], request: u64) -> SendResult {
    match completion(outputs, request) {
        Some(Completion::Sent(r)) => r,
        other => panic!("request {request} completed as {other:?}"),
    }
}

pub(super) fn deliveries(outputs: &[Output]) -> Vec<Delivery> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Deliver(d) => Some(d.clone()),
            _ => None,
        })
        .collect()
}

pub(super) fn outbound_request_id(frames: &[GatewayFrame]) -> String {
    frames
        .iter()
        .find_map(|f| match f {
            GatewayFrame::Outbound { request_id, .. } => Some(request_id.clone()),
            _ => None,
        })
        .expect("an outbound frame")
}

pub(super) fn result_line(request_id: &str, result: serde_json::Value) -> String {
    json!({"type":"outbound_result","requestId":request_id,"result":result}).to_string()
}

pub(super) fn inbound_line(chat: &str, message_id: &str, buffer_id: Option<&str>) -> String {
    let mut v = json!({"type":"inbound","event":{"text":"hi","message_id":message_id,
        "source":{"platform":"discord","chat_id":chat,"chat_type":"group","scope_id":"guildA","user_id":"u1"}}});
    if let Some(b) = buffer_id {
        v["bufferId"] = json!(b);
    }
    v.to_string()
}

pub(super) fn acks(outputs: &[Output]) -> Vec<String> {
    sent(outputs)
        .into_iter()
        .filter_map(|f| match f {
            GatewayFrame::InboundAck { buffer_id } => Some(buffer_id),
            _ => None,
        })
        .collect()
}

fn states(outputs: &[Output]) -> Vec<State> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::State { state, .. } => Some(*state),
            _ => None,
        })
        .collect()
}

// ----- 1. connect ----------------------------------------------------------

#[test]
fn one_hello_per_identity_in_order_with_a_fresh_bearer() {
    let mut h = Harness::new(test_config());
    let (conn, headers) = h.last_dial().expect("dialed on start");
    assert_eq!(headers.len(), 1);
    assert_eq!(headers[0].0, "Authorization");
    assert!(headers[0].1.starts_with("Bearer "));
    let out = h.input(Input::SocketOpened { conn });
    assert_eq!(
        sent(&out),
        vec![
            GatewayFrame::Hello {
                platform: "discord".into(),
                bot_id: "B1".into(),
                command_manifest: None
            },
            GatewayFrame::Hello {
                platform: "telegram".into(),
                bot_id: "".into(),
                command_manifest: None
            },
        ]
    );
    assert_eq!(h.m.state(), State::Handshaking);
}

#[test]
fn default_identity_is_relay() {
    let mut cfg = test_config();
    cfg.identities.clear();
    cfg.gateway_id.clear();
    let mut h = Harness::new(cfg);
    let (conn, headers) = h.last_dial().expect("dial");
    assert!(headers.is_empty(), "no gateway id: unauthenticated dial");
    let out = h.input(Input::SocketOpened { conn });
    assert_eq!(
        sent(&out),
        vec![GatewayFrame::Hello {
            platform: "relay".into(),
            bot_id: "".into(),
            command_manifest: None
        }]
    );
}

#[test]
fn first_descriptor_is_default_and_later_ones_are_per_platform() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    h.recv(
        conn,
        &format!(r#"{{"type":"descriptor","descriptor":{TELEGRAM_DESCRIPTOR}}}"#),
    );
    assert_eq!(h.m.descriptor(None).platform(), "discord");
    assert_eq!(h.m.descriptor(Some("telegram")).max_message_length(), 4096);
    assert_eq!(h.m.max_message_length(None), 2000);
    // A telegram chat uses the telegram descriptor (UTF-16 lengths).
    h.recv(
        conn,
        r#"{"type":"inbound","event":{"source":{"platform":"telegram","chat_id":"t1"}}}"#,
    );
    assert_eq!(h.m.max_message_length(Some("t1")), 4096);
    assert_eq!(h.m.message_len(Some("t1"), "\u{1F600}"), 2);
    assert_eq!(h.m.message_len(Some("other"), "\u{1F600}"), 1);
    assert!(h.m.supports_op(Some("t1"), "delete"));
    assert!(!h.m.supports_op(None, "delete"));
    assert!(h.m.fronts_platform("telegram") && !h.m.fronts_platform("slack"));
}

#[test]
fn invalid_descriptor_fails_the_handshake_and_retries() {
    let mut h = Harness::new(test_config());
    let conn = h.open();
    let out = h.recv(
        conn,
        r#"{"type":"descriptor","descriptor":{"platform":"discord"}}"#,
    );
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Close { conn: c, .. } if *c == conn))
    );
    assert_eq!(h.m.state(), State::Reconnecting);
    h.advance(1000);
    assert_eq!(h.dials(), 2);
}

#[test]
fn handshake_timeout_closes_and_retries() {
    let mut cfg = test_config();
    cfg.handshake_timeout_ms = 50;
    let mut h = Harness::new(cfg);
    let conn = h.open();
    let out = h.advance(50);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Close { conn: c, .. } if *c == conn))
    );
    assert_eq!(h.m.state(), State::Reconnecting);
}

#[test]
fn frames_for_a_stale_connection_are_ignored() {
    let mut h = Harness::new(test_config());
    let old = h.connect();
    h.input(Input::SocketClosed {
        conn: old,
        code: 1011,
        reason: "overloaded",
    });
    h.advance(1000);
    let new = h.open();
    assert_ne!(old, new);
    let out = h.recv(old, &inbound_line("c", "m1", None));
    assert!(deliveries(&out).is_empty());
    let out = h.input(Input::SocketClosed {
        conn: old,
        code: 1000,
        reason: "",
    });
    assert!(states(&out).is_empty());
    assert_eq!(h.m.state(), State::Handshaking);
}

// ----- 2. outbound ---------------------------------------------------------

#[test]
fn send_round_trips_by_request_id() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    let (req, out) = h.send("chan1", "Hi there");
    let rid = outbound_request_id(&sent(&out));
    assert_eq!(rid.len(), 32);
    assert!(rid.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(completion(&out, req).is_none(), "waits for its result");
    let out = h.recv(
        conn,
        &result_line(&rid, json!({"success":true,"message_id":"srv-send"})),
    );
    let r = sent_result(&out, req);
    assert!(r.success);
    assert_eq!(r.message_id.as_deref(), Some("srv-send"));
    // A second result for the same id is ignored.
    let out = h.recv(conn, &result_line(&rid, json!({"success":false})));
    assert!(completion(&out, req).is_none());
}

#[test]
fn outbound_timeout_is_ambiguous() {
    let mut cfg = test_config();
    cfg.outbound_timeout_ms = 100;
    let mut h = Harness::new(cfg);
    h.connect();
    let (req, _) = h.send("c", "x");
    assert!(h.advance(99).is_empty() || completion(&h.outputs, req).is_none());
    let out = h.advance(1);
    let r = sent_result(&out, req);
    assert!(!r.success && r.ambiguous);
    assert_eq!(r.error.as_deref(), Some("relay outbound timed out"));
}

#[test]
fn socket_loss_resolves_every_pending_at_once() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    let (a, _) = h.send("c", "1");
    let (b, _) = h.send("c", "2");
    let (c, _) = h.command(Command::GetChatInfo { chat_id: "c" });
    let out = h.input(Input::SocketClosed {
        conn,
        code: 1006,
        reason: "",
    });
    for r in [a, b] {
        let res = sent_result(&out, r);
        assert_eq!(
            res.error.as_deref(),
            Some("relay transport connection lost")
        );
        assert!(
            res.ambiguous,
            "written frames: the connector may have applied them"
        );
    }
    assert_eq!(
        completion(&out, c),
        Some(Completion::ChatInfo(ChatInfo::local("c")))
    );
    assert_eq!(h.m.stats().pending, 0);
}

#[test]
fn sends_fail_fast_during_an_outage_and_work_once_the_socket_is_back() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    h.input(Input::SocketClosed {
        conn,
        code: 1011,
        reason: "overloaded",
    });
    let (req, out) = h.send("c", "x");
    assert_eq!(
        sent_result(&out, req).error.as_deref(),
        Some("relay transport not connected")
    );
    h.advance(1000);
    let conn = h.open();
    // Accepted while still handshaking.
    let (req, out) = h.send("c", "x");
    let rid = outbound_request_id(&sent(&out));
    let out = h.recv(conn, &result_line(&rid, json!({"success":true})));
    assert!(sent_result(&out, req).success);
}

#[test]
fn write_failure_is_a_definite_send_failure() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    let (req, out) = h.send("c", "x");
    assert!(out.iter().any(|o| matches!(o, Output::SendText { .. })));
    let out = h.input(Input::WriteFailed {
        conn,
        error: "broken pipe",
    });
    let r = sent_result(&out, req);
    assert_eq!(r.error.as_deref(), Some("relay send failed: broken pipe"));
    assert!(!r.ambiguous);
    // The close report that follows decides what happens to the connection.
    h.input(Input::SocketClosed {
        conn,
        code: 4401,
        reason: "unauthorized",
    });
    assert_eq!(h.dials(), 2, "a post-handshake 4401, not a network error");
}

#[test]
fn pending_is_bounded() {
    let mut cfg = test_config();
    cfg.max_pending = 2;
    let mut h = Harness::new(cfg);
    h.connect();
    h.send("c", "1");
    h.send("c", "2");
    let (req, out) = h.send("c", "3");
    let r = sent_result(&out, req);
    assert!(r.error.unwrap_or_default().contains("pending limit"));
    assert!(sent(&out).is_empty(), "nothing written past the bound");
}

#[test]
fn replies_are_tagged_and_reattached_from_inbound() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    h.recv(conn, &inbound_line("chan1", "m1", None));
    h.recv(conn, r#"{"type":"inbound","event":{"message_id":"d1","source":{"platform":"telegram","chat_id":"dm1","user_id":"u9"}}}"#);
    let (_, out) = h.send("chan1", "hi");
    match &sent(&out)[0] {
        GatewayFrame::Outbound {
            action: Action::Send {
                metadata, reply_to, ..
            },
            platform,
            bot_id,
            ..
        } => {
            assert_eq!(
                serde_json::Value::Object(metadata.clone()),
                json!({"scope_id":"guildA","user_id":"u1"})
            );
            assert_eq!(reply_to, &None);
            assert_eq!(platform.as_deref(), Some("discord"));
            assert_eq!(bot_id.as_deref(), Some("B1"));
        }
        other => panic!("unexpected {other:?}"),
    }
    let (_, out) = h.command(Command::Typing {
        chat_id: "dm1",
        metadata: "{}",
        content: None,
    });
    match &sent(&out)[0] {
        GatewayFrame::Outbound {
            action: Action::Typing {
                metadata, content, ..
            },
            platform,
            bot_id,
            ..
        } => {
            assert_eq!(
                serde_json::Value::Object(metadata.clone()),
                json!({"user_id":"u9"})
            );
            assert_eq!(content, &None);
            assert_eq!(platform.as_deref(), Some("telegram"));
            assert_eq!(bot_id, &None, "telegram has no bot id");
        }
        other => panic!("unexpected {other:?}"),
    }
    let (_, out) = h.command(Command::Edit {
        chat_id: "chan1",
        message_id: "m9",
        content: "x",
        metadata: r#"{"scope_id":"explicit","_interim_send":true}"#,
    });
    match &sent(&out)[0] {
        GatewayFrame::Outbound {
            action: Action::Edit { metadata, .. },
            ..
        } => {
            assert_eq!(
                serde_json::Value::Object(metadata.clone()),
                json!({"scope_id":"explicit","user_id":"u1"})
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn explicit_platform_fails_closed_when_not_fronted() {
    let mut h = Harness::new(test_config());
    h.connect();
    let (req, out) = h.command(Command::Send {
        chat_id: "c",
        content: "x",
        reply_to: None,
        metadata: "{}",
        platform: Some("slack"),
    });
    assert_eq!(
        sent_result(&out, req).error.as_deref(),
        Some("relay does not front platform slack")
    );
    assert!(sent(&out).is_empty());
    let (_, out) = h.command(Command::Send {
        chat_id: "c",
        content: "x",
        reply_to: None,
        metadata: "{}",
        platform: Some("telegram"),
    });
    assert!(
        matches!(&sent(&out)[0], GatewayFrame::Outbound { platform: Some(p), .. } if p == "telegram")
    );
}

#[test]
fn follow_up_is_tagged_by_kind_prefix_only_when_fronted() {
    let mut h = Harness::new(test_config());
    h.connect();
    let (_, out) = h.command(Command::FollowUp {
        session_key: "agent:main:discord:group:chan1:u1",
        kind: "discord.interaction_token",
        content: "Done!",
        metadata: "{}",
    });
    match &sent(&out)[0] {
        GatewayFrame::Outbound {
            action: Action::FollowUp { kind, metadata, .. },
            platform,
            bot_id,
            ..
        } => {
            assert_eq!(kind, "discord.interaction_token");
            assert!(metadata.is_empty());
            assert_eq!(
                (platform.as_deref(), bot_id.as_deref()),
                (Some("discord"), Some("B1"))
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    let (_, out) = h.command(Command::FollowUp {
        session_key: "k",
        kind: "slack.x",
        content: "",
        metadata: "{}",
    });
    assert!(matches!(
        &sent(&out)[0],
        GatewayFrame::Outbound { platform: None, .. }
    ));
}

#[test]
fn get_chat_info_only_when_advertised() {
    let mut h = Harness::new(test_config());
    let conn = h.open();
    // A legacy connector without supported_ops: answered locally.
    h.recv(conn, r#"{"type":"descriptor","descriptor":{"contract_version":1,"platform":"discord","label":"D","max_message_length":2000,"supports_draft_streaming":false,"supports_edit":true,"supports_threads":true,"markdown_dialect":"discord","len_unit":"chars"}}"#);
    let (req, out) = h.command(Command::GetChatInfo { chat_id: "chan1" });
    assert!(sent(&out).is_empty(), "no wire traffic");
    assert_eq!(
        completion(&out, req),
        Some(Completion::ChatInfo(ChatInfo::local("chan1")))
    );

    let mut h = Harness::new(test_config());
    let conn = h.connect();
    let (req, out) = h.command(Command::GetChatInfo { chat_id: "chan1" });
    let frames = sent(&out);
    assert!(matches!(
        &frames[0],
        GatewayFrame::Outbound {
            action: Action::GetChatInfo { .. },
            platform: None,
            ..
        }
    ));
    let rid = outbound_request_id(&frames);
    let out = h.recv(
        conn,
        &result_line(
            &rid,
            json!({"success":true,"chat_info":{"name":"#ops","type":"group"}}),
        ),
    );
    assert_eq!(
        completion(&out, req),
        Some(Completion::ChatInfo(ChatInfo {
            name: "#ops".into(),
            chat_type: "group".into()
        }))
    );
}

#[test]
fn raw_actions_are_gated_reattached_and_tagged() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    h.recv(conn, &inbound_line("chan1", "m1", None));
    let (_, out) = h.command(Command::RawAction {
        action: r#"{"op":"react","chat_id":"chan1","message_id":"m1","emoji":"x","remove":false,"metadata":{"_notice_reply":true}}"#,
        platform: None,
    });
    match &sent(&out)[0] {
        GatewayFrame::Outbound {
            action: Action::Raw(a),
            platform,
            ..
        } => {
            assert_eq!(a["metadata"], json!({"scope_id":"guildA","user_id":"u1"}));
            assert_eq!(a["emoji"], "x");
            assert_eq!(platform.as_deref(), Some("discord"));
        }
        other => panic!("unexpected {other:?}"),
    }
    // Not advertised: refused locally, nothing on the wire.
    let (req, out) = h.command(Command::RawAction {
        action: r#"{"op":"thread_create","chat_id":"chan1"}"#,
        platform: None,
    });
    assert!(sent(&out).is_empty());
    assert!(!sent_result(&out, req).success);
    // `delete` has no legacy fallback even though the discord list is explicit.
    let (req, out) = h.command(Command::RawAction {
        action: r#"{"op":"delete","chat_id":"chan1","message_id":"m"}"#,
        platform: None,
    });
    assert!(sent(&out).is_empty());
    assert!(!sent_result(&out, req).success);
    let (req, out) = h.command(Command::RawAction {
        action: "[1]",
        platform: None,
    });
    assert!(
        sent_result(&out, req)
            .error
            .unwrap_or_default()
            .contains("not a JSON object")
    );
}

#[test]
fn egress_decline_is_marked() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    let (req, out) = h.send("c", "x");
    let rid = outbound_request_id(&sent(&out));
    let out = h.recv(conn, &result_line(&rid, json!({"success":false,"code":"egress_declined","error":"discord egress declined: target is not an approved destination for this connection"})));
    let r = sent_result(&out, req);
    assert!(r.declined && !r.ambiguous);
    assert!(out.iter().any(
        |o| matches!(o, Output::Log { level: Level::Warn, message } if message.contains("DECLINED"))
    ));
}

// ----- 3. inbound ----------------------------------------------------------

#[test]
fn buffered_inbound_is_acked_once_after_accept() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    let out = h.recv(conn, &inbound_line("c", "m1", Some("buf-42")));
    let d = deliveries(&out);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].buffer_id.as_deref(), Some("buf-42"));
    assert!(acks(&out).is_empty(), "no ack before accept");
    let out = h.input(Input::AcceptDelivery(d[0].delivery));
    assert_eq!(acks(&out), vec!["buf-42"]);
    let out = h.input(Input::AcceptDelivery(d[0].delivery));
    assert!(acks(&out).is_empty(), "a verdict counts once");
}

#[test]
fn live_inbound_is_never_acked() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    let out = h.recv(conn, &inbound_line("c", "m1", None));
    let d = deliveries(&out);
    let out = h.input(Input::AcceptDelivery(d[0].delivery));
    assert!(acks(&out).is_empty());
}

#[test]
fn rejected_delivery_is_not_acked_nor_seen() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    let out = h.recv(conn, &inbound_line("c", "m1", Some("b1")));
    let d = deliveries(&out);
    let out = h.input(Input::RejectDelivery(d[0].delivery));
    assert!(acks(&out).is_empty());
    let out = h.recv(conn, &inbound_line("c", "m1", Some("b1")));
    assert_eq!(deliveries(&out).len(), 1, "the replay is delivered again");
}

#[test]
fn replay_of_a_seen_message_is_acked_again_and_not_redelivered() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    let d = deliveries(&h.recv(conn, &inbound_line("c", "m1", Some("b1"))));
    h.input(Input::AcceptDelivery(d[0].delivery));
    let out = h.recv(conn, &inbound_line("c", "m1", Some("b1")));
    assert!(deliveries(&out).is_empty());
    assert_eq!(acks(&out), vec!["b1"]);
    assert_eq!(h.m.stats().dedupe_hits, 1);
}

#[test]
fn duplicate_awaiting_a_verdict_is_never_delivered_twice() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    let d = deliveries(&h.recv(conn, &inbound_line("c", "m1", Some("b1"))));
    let out = h.recv(conn, &inbound_line("c", "m1", Some("b1")));
    assert!(deliveries(&out).is_empty());
    let out = h.input(Input::AcceptDelivery(d[0].delivery));
    assert_eq!(acks(&out), vec!["b1", "b1"], "one ack per delivery attempt");
}

#[test]
fn a_parked_duplicate_is_delivered_when_its_owner_is_rejected() {
    // Issue 19: before, the buffered copies waiting on a rejected owner
    // were dropped until the next connection replayed them.
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    let d = deliveries(&h.recv(conn, &inbound_line("c", "m1", Some("b1"))));
    for b in ["b2", "b3"] {
        let out = h.recv(conn, &inbound_line("c", "m1", Some(b)));
        assert!(deliveries(&out).is_empty(), "parked while the owner waits");
    }
    let out = h.input(Input::RejectDelivery(d[0].delivery));
    let again = deliveries(&out);
    assert_eq!(again.len(), 1, "the first parked copy, now: {out:?}");
    assert_eq!(again[0].buffer_id.as_deref(), Some("b2"));
    assert_ne!(again[0].delivery, d[0].delivery);
    assert!(acks(&out).is_empty(), "a rejection acks nothing");
    let out = h.input(Input::AcceptDelivery(again[0].delivery));
    assert_eq!(acks(&out), vec!["b2", "b3"], "it carries the other copy");
    let out = h.recv(conn, &inbound_line("c", "m1", Some("b4")));
    assert!(deliveries(&out).is_empty(), "accepted: now a replay");
    assert_eq!(acks(&out), vec!["b4"]);
}

#[test]
fn parked_copies_survive_a_second_rejection() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    let d = deliveries(&h.recv(conn, &inbound_line("c", "m1", Some("b1"))));
    h.recv(conn, &inbound_line("c", "m1", Some("b2")));
    h.recv(conn, &inbound_line("c", "m1", Some("b3")));
    let second = deliveries(&h.input(Input::RejectDelivery(d[0].delivery)));
    let third = deliveries(&h.input(Input::RejectDelivery(second[0].delivery)));
    assert_eq!(third.len(), 1, "the last parked copy is delivered");
    assert_eq!(third[0].buffer_id.as_deref(), Some("b3"));
    let out = h.input(Input::AcceptDelivery(third[0].delivery));
    assert_eq!(acks(&out), vec!["b3"]);
}

#[test]
fn a_parked_copy_from_a_closed_connection_is_admitted_on_the_live_one() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    let d = deliveries(&h.recv(conn, &inbound_line("c", "m1", Some("b1"))));
    h.recv(conn, &inbound_line("c", "m1", Some("b2")));
    h.input(Input::SocketClosed {
        conn,
        code: 1006,
        reason: "",
    });
    h.advance(1000);
    let live = h.connect();
    let again = deliveries(&h.input(Input::RejectDelivery(d[0].delivery)));
    assert_eq!(again.len(), 1);
    let out = h.input(Input::AcceptDelivery(again[0].delivery));
    assert_eq!(acks(&out), vec!["b2"]);
    assert!(
        out.iter().all(|o| match o {
            Output::SendText { conn, .. } => *conn == live,
            _ => true,
        }),
        "acked on the live connection: {out:?}"
    );
}

#[test]
fn a_rejected_owner_without_buffered_copies_delivers_nothing_more() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    let d = deliveries(&h.recv(conn, &inbound_line("c", "m1", Some("b1"))));
    // A live copy (no bufferId) needs no answer and is not parked.
    h.recv(conn, &inbound_line("c", "m1", None));
    let out = h.input(Input::RejectDelivery(d[0].delivery));
    assert!(deliveries(&out).is_empty(), "{out:?}");
}

#[test]
fn accept_after_the_socket_is_gone_marks_seen_and_sends_nothing() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    let d = deliveries(&h.recv(conn, &inbound_line("c", "m1", Some("b1"))));
    h.input(Input::SocketClosed {
        conn,
        code: 1006,
        reason: "",
    });
    let out = h.input(Input::AcceptDelivery(d[0].delivery));
    assert!(sent(&out).is_empty());
    h.advance(1000);
    let conn = h.connect();
    let out = h.recv(conn, &inbound_line("c", "m1", Some("b1")));
    assert!(deliveries(&out).is_empty(), "seen: not delivered again");
    assert_eq!(acks(&out), vec!["b1"], "but acked on the new connection");
}

#[test]
fn events_carry_the_trust_stamp_and_routing_is_captured() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    let d = deliveries(&h.recv(conn, &inbound_line("c", "m1", None)));
    let v: serde_json::Value = serde_json::from_str(&d[0].json).expect("json");
    assert_eq!(v["source"]["delivered_via_upstream_relay"], true);
    assert_eq!(h.m.routes().platform("c"), Some("discord"));
}

// ----- 4. interrupts and passthrough ----------------------------------------

#[test]
fn interrupts_both_ways() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    let out = h.recv(
        conn,
        r#"{"type":"interrupt_inbound","session_key":"k1","chat_id":"chanA"}"#,
    );
    assert!(out.contains(&Output::Interrupt {
        session_key: "k1".into(),
        chat_id: "chanA".into()
    }));
    let (req, out) = h.command(Command::Interrupt {
        session_key: "k2",
        reason: None,
    });
    assert_eq!(
        sent(&out),
        vec![GatewayFrame::Interrupt {
            session_key: "k2".into(),
            reason: None
        }]
    );
    assert_eq!(completion(&out, req), Some(Completion::Done));
}

pub(super) fn forward_line(platform: &str, body: &[u8], buffer_id: Option<&str>) -> String {
    use base64::Engine as _;
    let mut v = json!({"type":"passthrough_forward","forward":{"platform":platform,"botId":"B1","method":"POST",
        "path":"/interactions","headers":[],"bodyB64":base64::engine::general_purpose::STANDARD.encode(body)}});
    if let Some(b) = buffer_id {
        v["bufferId"] = json!(b);
    }
    v.to_string()
}

#[test]
fn discord_forward_becomes_an_event_and_is_acked_after_accept() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    let body = br#"{"type":2,"id":"i1","channel_id":"c1","guild_id":"g1","data":{"name":"model","options":[{"name":"name","type":3,"value":"gpt-x"}]},"member":{"user":{"id":"u1","username":"ben"}}}"#;
    let out = h.recv(conn, &forward_line("discord", body, Some("pbuf-7")));
    let d = deliveries(&out);
    assert_eq!(d[0].event.text, "/model gpt-x");
    assert!(acks(&out).is_empty());
    let out = h.input(Input::AcceptDelivery(d[0].delivery));
    assert_eq!(acks(&out), vec!["pbuf-7"]);
    // A replay of the same buffer entry is acked without re-dispatch.
    let out = h.recv(conn, &forward_line("discord", body, Some("pbuf-7")));
    assert!(deliveries(&out).is_empty());
    assert_eq!(acks(&out), vec!["pbuf-7"]);
    assert_eq!(
        h.m.routes().get("c1").and_then(|r| r.scope_id.as_deref()),
        Some("g1")
    );
}

#[test]
fn non_discord_and_non_json_forwards_are_dropped_and_acked_if_buffered() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    let out = h.recv(conn, &forward_line("twilio", b"{}", Some("t1")));
    assert!(deliveries(&out).is_empty());
    assert_eq!(acks(&out), vec!["t1"]);
    let out = h.recv(conn, &forward_line("discord", b"not json", None));
    assert!(deliveries(&out).is_empty());
    assert!(acks(&out).is_empty());
}

// ----- 5. reconnect ---------------------------------------------------------

fn waits_between_dials(h: &mut Harness, drops: usize) -> Vec<u64> {
    let mut waits = Vec::new();
    for _ in 0..drops {
        let conn = h.connect();
        h.input(Input::SocketClosed {
            conn,
            code: 1011,
            reason: "overloaded",
        });
        let dropped_at = h.now_ms;
        let before = h.dials();
        while h.dials() == before {
            h.advance(1);
        }
        waits.push(h.now_ms - dropped_at);
    }
    waits
}

#[test]
fn ladder_waits_exactly_1_2_4_8_with_jitter_pinned() {
    let mut h = Harness::new(test_config());
    assert_eq!(
        waits_between_dials(&mut h, 5),
        vec![1000, 2000, 4000, 8000, 16000]
    );
}

#[test]
fn ladder_is_capped() {
    let mut h = Harness::new(test_config());
    let waits = waits_between_dials(&mut h, 7);
    assert_eq!(waits[5..], [30000, 30000]);
}

#[test]
fn a_stable_connection_resets_the_ladder() {
    let mut h = Harness::new(test_config());
    waits_between_dials(&mut h, 3);
    let conn = h.connect();
    h.advance(10_000);
    h.input(Input::SocketClosed {
        conn,
        code: 1011,
        reason: "",
    });
    let dropped_at = h.now_ms;
    while h.dials() == 4 {
        h.advance(1);
    }
    assert_eq!(h.now_ms - dropped_at, 1000, "back to the first rung");
}

#[test]
fn jitter_stays_within_half_to_full_rung() {
    let mut cfg = test_config();
    cfg.reconnect_jitter = None;
    let mut h = Harness::new(cfg);
    for w in waits_between_dials(&mut h, 4)
        .into_iter()
        .zip([1000, 2000, 4000, 8000])
    {
        assert!(w.0 >= w.1 / 2 && w.0 <= w.1, "{w:?}");
    }
}

#[test]
fn hold_parks_dialing_until_release_then_exactly_one_dial() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    h.command(Command::HoldRedial);
    h.input(Input::SocketClosed {
        conn,
        code: 1011,
        reason: "",
    });
    h.advance(5000);
    assert_eq!(h.dials(), 1, "parked");
    h.command(Command::ReleaseRedial);
    assert_eq!(h.dials(), 2);
    h.advance(5000);
    assert_eq!(h.dials(), 2, "exactly one dial");
}

#[test]
fn hold_expires_after_its_maximum() {
    let mut cfg = test_config();
    cfg.redial_hold_max_ms = 50;
    let mut h = Harness::new(cfg);
    let conn = h.connect();
    h.command(Command::HoldRedial);
    h.input(Input::SocketClosed {
        conn,
        code: 1011,
        reason: "",
    });
    h.advance(49);
    assert_eq!(h.dials(), 1);
    h.advance(1000);
    assert_eq!(h.dials(), 2);
}

#[test]
fn reconnect_disabled_stops_after_a_drop() {
    let mut cfg = test_config();
    cfg.reconnect = false;
    let mut h = Harness::new(cfg);
    let conn = h.connect();
    h.input(Input::SocketClosed {
        conn,
        code: 1011,
        reason: "",
    });
    h.advance(60_000);
    assert_eq!(h.dials(), 1);
    let (req, out) = h.send("c", "x");
    assert!(!sent_result(&out, req).success);
}

// ----- 6. 4401 --------------------------------------------------------------

#[test]
fn unauthorized_before_any_handshake_is_retried() {
    let mut h = Harness::new(test_config());
    for _ in 0..3 {
        let conn = h.open();
        h.input(Input::SocketClosed {
            conn,
            code: 4401,
            reason: "unauthorized",
        });
        assert_eq!(h.m.state(), State::Reconnecting);
        h.advance(30_000);
    }
    assert_eq!(h.dials(), 4);
}

#[test]
fn unauthorized_after_handshake_gets_one_fresh_token_retry_then_disables() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    let (req, _) = h.send("c", "x");
    h.now_ms += 1000;
    let out = h.input(Input::SocketClosed {
        conn,
        code: 4401,
        reason: "unauthorized",
    });
    assert_eq!(
        sent_result(&out, req).error.as_deref(),
        Some("relay transport connection lost")
    );
    assert_eq!(h.dials(), 2, "immediate re-dial, no backoff");
    let (_, first_headers) = h
        .outputs
        .iter()
        .find_map(|o| match o {
            Output::Dial { conn, headers, .. } => Some((*conn, headers.0.clone())),
            _ => None,
        })
        .expect("first dial");
    let (_, second_headers) = h.last_dial().expect("second dial");
    assert_ne!(first_headers, second_headers, "a fresh token on every dial");
    let conn = h.connect();
    let out = h.input(Input::SocketClosed {
        conn,
        code: 4401,
        reason: "revoked",
    });
    assert_eq!(h.m.state(), State::Disabled);
    assert!(out.contains(&Output::Fatal {
        code: "relay_disabled".into(),
        message: RELAY_DISABLED_MESSAGE.into(),
        retryable: false
    }));
    h.advance(120_000);
    assert_eq!(h.dials(), 2, "no dial after revocation");
    let (req, out) = h.send("c", "x");
    assert!(!sent_result(&out, req).success);
}

#[test]
fn unauthorized_at_the_retry_upgrade_is_terminal() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    h.input(Input::SocketClosed {
        conn,
        code: 4401,
        reason: "unauthorized",
    });
    let (conn, _) = h.last_dial().expect("retry dial");
    h.input(Input::DialFailed {
        conn,
        code: 4401,
        reason: "unauthorized",
    });
    assert_eq!(h.m.state(), State::Disabled);
}

#[test]
fn expired_reason_is_never_a_revocation() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    h.input(Input::SocketClosed {
        conn,
        code: 4401,
        reason: "expired",
    });
    assert_eq!(h.m.state(), State::Reconnecting);
    h.advance(1000);
    let conn = h.connect();
    h.input(Input::SocketClosed {
        conn,
        code: 4401,
        reason: "expired",
    });
    assert_eq!(h.m.state(), State::Reconnecting);
    h.advance(2000);
    assert_eq!(h.dials(), 3);
}

#[test]
fn a_network_failure_does_not_consume_the_fresh_token_marker() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    h.input(Input::SocketClosed {
        conn,
        code: 4401,
        reason: "unauthorized",
    });
    let (conn, _) = h.last_dial().expect("retry dial");
    h.input(Input::DialFailed {
        conn,
        code: 0,
        reason: "connection refused",
    });
    h.advance(1000);
    let conn = h.connect();
    h.input(Input::SocketClosed {
        conn,
        code: 4401,
        reason: "unauthorized",
    });
    assert_eq!(h.m.state(), State::Disabled);
}

// ----- 7. shutdown and dormancy ---------------------------------------------

#[test]
fn shutdown_goes_idle_waits_for_the_ack_then_closes() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    let (req, out) = h.command(Command::Shutdown);
    assert_eq!(sent(&out), vec![GatewayFrame::GoingIdle]);
    assert!(completion(&out, req).is_none());
    // Inbound in the flip window is still delivered.
    let out = h.recv(conn, &inbound_line("c", "m1", None));
    assert_eq!(deliveries(&out).len(), 1);
    let out = h.recv(conn, r#"{"type":"going_idle_ack"}"#);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Close { conn: c, .. } if *c == conn))
    );
    assert_eq!(completion(&out, req), Some(Completion::Done));
    assert_eq!(h.m.state(), State::Stopped);
    h.advance(60_000);
    assert_eq!(h.dials(), 1, "no dial after shutdown");
}

#[test]
fn shutdown_without_an_ack_times_out_and_drains_pending() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    let (send_req, out) = h.send("c", "x");
    let rid = outbound_request_id(&sent(&out));
    let (req, _) = h.command(Command::Shutdown);
    h.advance(2000);
    assert!(
        completion(&h.outputs, req).is_none(),
        "pending may still finish"
    );
    let (late, out) = h.send("c", "late");
    assert_eq!(
        sent_result(&out, late).error.as_deref(),
        Some("relay transport closed")
    );
    let out = h.recv(conn, &result_line(&rid, json!({"success":true})));
    assert!(sent_result(&out, send_req).success);
    assert_eq!(completion(&out, req), Some(Completion::Done));
}

#[test]
fn drain_grace_fails_what_is_left() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    let (send_req, _) = h.send("c", "x");
    let (req, _) = h.command(Command::Shutdown);
    h.recv(conn, r#"{"type":"going_idle_ack"}"#);
    let out = h.advance(1500);
    let r = sent_result(&out, send_req);
    assert_eq!(
        r.error.as_deref(),
        Some("relay send failed: relay transport closed")
    );
    assert!(r.ambiguous, "written before the teardown (§1.6)");
    assert_eq!(completion(&out, req), Some(Completion::Done));
}

#[test]
fn go_dormant_with_ack_closes_and_redials_on_the_dormant_cadence() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    let (req, out) = h.command(Command::GoDormant);
    assert_eq!(sent(&out), vec![GatewayFrame::GoingIdle]);
    let out = h.recv(conn, r#"{"type":"going_idle_ack"}"#);
    assert_eq!(completion(&out, req), Some(Completion::Flag(true)));
    assert!(out.iter().any(|o| matches!(o, Output::Close { .. })));
    assert_eq!(h.m.state(), State::Dormant);
    h.advance(1000);
    assert_eq!(h.dials(), 2);
    let conn = h.connect();
    let out = h.recv(conn, &inbound_line("c", "m1", Some("b1")));
    let d = deliveries(&out);
    let out = h.input(Input::AcceptDelivery(d[0].delivery));
    assert_eq!(acks(&out), vec!["b1"]);
    assert_eq!(h.m.state(), State::Ready);
}

#[test]
fn go_dormant_without_ack_stays_connected() {
    let mut h = Harness::new(test_config());
    h.connect();
    let (req, _) = h.command(Command::GoDormant);
    let out = h.advance(2000);
    assert_eq!(completion(&out, req), Some(Completion::Flag(false)));
    assert_eq!(h.m.state(), State::Ready);
    let (req, out) = h.command(Command::GoDormant);
    assert_eq!(sent(&out), vec![GatewayFrame::GoingIdle]);
    assert!(completion(&out, req).is_none());
}

#[test]
fn go_dormant_when_never_connected_is_false() {
    let mut h = Harness::new(test_config());
    let (req, out) = h.command(Command::GoDormant);
    assert_eq!(completion(&out, req), Some(Completion::Flag(false)));
}

// ----- overload -------------------------------------------------------------

#[test]
fn overload_goes_idle_and_redials_once_caught_up() {
    let mut cfg = test_config();
    cfg.max_undelivered = 2;
    let mut h = Harness::new(cfg);
    let conn = h.connect();
    let mut ds = Vec::new();
    for i in 0..2 {
        ds.extend(deliveries(
            &h.recv(conn, &inbound_line("c", &format!("m{i}"), None)),
        ));
    }
    // Third live one: still delivered (never lost) and the adapter asks to buffer.
    let out = h.recv(conn, &inbound_line("c", "m2", None));
    ds.extend(deliveries(&out));
    assert_eq!(ds.len(), 3);
    assert_eq!(sent(&out), vec![GatewayFrame::GoingIdle]);
    // A buffered one past the cap stays unacked for replay.
    let out = h.recv(conn, &inbound_line("c", "m3", Some("b3")));
    assert!(deliveries(&out).is_empty() && acks(&out).is_empty());
    h.recv(conn, r#"{"type":"going_idle_ack"}"#);
    assert_eq!(h.m.state(), State::Idle);
    for d in &ds {
        h.input(Input::AcceptDelivery(d.delivery));
    }
    assert_eq!(h.dials(), 2, "re-dialed to drain the replay");
}

/// Overloaded, idle, and caught up: returns the harness right after the
/// drain re-dial went out (the new socket not open yet).
fn drain_redial_started() -> Harness {
    let mut cfg = test_config();
    cfg.max_undelivered = 2;
    let mut h = Harness::new(cfg);
    let conn = h.connect();
    let mut ds = Vec::new();
    for i in 0..3 {
        ds.extend(deliveries(
            &h.recv(conn, &inbound_line("c", &format!("m{i}"), None)),
        ));
    }
    h.recv(conn, r#"{"type":"going_idle_ack"}"#);
    for d in &ds {
        h.input(Input::AcceptDelivery(d.delivery));
    }
    assert_eq!(h.dials(), 2, "re-dialed to drain the replay");
    assert_eq!(h.m.state(), State::Connecting);
    h
}

#[test]
fn a_request_made_during_the_drain_redial_is_held_until_the_socket_opens() {
    let mut h = drain_redial_started();
    // The gateway answers the message it just accepted: not an outage, so
    // the reply waits for the new socket instead of failing fast.
    let (req, out) = h.send("c", "reply");
    assert_eq!(completion(&out, req), None, "not failed as not connected");
    assert!(sent(&out).is_empty());
    let (conn, _) = h.last_dial().expect("dial");
    let out = h.input(Input::SocketOpened { conn });
    let frames = sent(&out);
    assert!(matches!(frames[0], GatewayFrame::Hello { .. }));
    let id = outbound_request_id(&frames);
    match frames.last() {
        Some(GatewayFrame::Outbound {
            action: Action::Send { content, .. },
            ..
        }) => assert_eq!(content, "reply"),
        other => panic!("expected the held send after the hellos, got {other:?}"),
    }
    let out = h.recv(
        conn,
        &result_line(&id, json!({"success":true,"message_id":"x1"})),
    );
    match completion(&out, req) {
        Some(Completion::Sent(r)) => assert!(r.success, "{r:?}"),
        other => panic!("{other:?}"),
    }
    // Only that re-dial holds: a later outage fails fast again.
    h.recv(
        conn,
        &format!(r#"{{"type":"descriptor","descriptor":{DISCORD_DESCRIPTOR}}}"#),
    );
    assert_eq!(h.m.state(), State::Ready);
    h.input(Input::SocketClosed {
        conn,
        code: 1011,
        reason: "gone",
    });
    let (req, out) = h.send("c", "during an outage");
    match completion(&out, req) {
        Some(Completion::Sent(r)) => {
            assert_eq!(r.error.as_deref(), Some("relay transport not connected"))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_request_held_for_a_drain_redial_that_fails_is_not_connected() {
    let mut h = drain_redial_started();
    let (req, _) = h.send("c", "reply");
    let (conn, _) = h.last_dial().expect("dial");
    let out = h.input(Input::DialFailed {
        conn,
        code: 0,
        reason: "refused",
    });
    match completion(&out, req) {
        Some(Completion::Sent(r)) => {
            assert_eq!(r.error.as_deref(), Some("relay transport not connected"));
            assert!(!r.ambiguous, "never written");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.m.stats().pending, 0);
}

#[test]
fn descriptors_for_platforms_not_fronted_are_ignored() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    let slack = TELEGRAM_DESCRIPTOR.replace("telegram", "slack");
    h.recv(
        conn,
        &format!(r#"{{"type":"descriptor","descriptor":{slack}}}"#),
    );
    assert_eq!(
        h.m.descriptor(Some("slack")).platform(),
        "discord",
        "falls back to the default"
    );
    h.recv(
        conn,
        &format!(r#"{{"type":"descriptor","descriptor":{TELEGRAM_DESCRIPTOR}}}"#),
    );
    assert_eq!(h.m.descriptor(Some("telegram")).platform(), "telegram");
}

#[test]
fn long_dedupe_keys_are_digested() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    let long_id = "m".repeat(10_000);
    let line = inbound_line("c", &long_id, Some("b1"));
    let d = deliveries(&h.recv(conn, &line));
    h.input(Input::AcceptDelivery(d[0].delivery));
    let out = h.recv(conn, &line);
    assert!(deliveries(&out).is_empty(), "still deduplicated");
    assert_eq!(acks(&out), vec!["b1"]);
    let key = dedupe_key(&d[0].event).expect("key");
    assert!(key.starts_with("sha256:") && key.len() <= MAX_KEY_BYTES);
}

#[test]
fn requests_still_pending_at_the_end_of_shutdown_are_ambiguous() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    let (send_req, _) = h.send("c", "x");
    h.command(Command::Shutdown);
    h.recv(conn, r#"{"type":"going_idle_ack"}"#);
    let out = h.advance(1500);
    let r = sent_result(&out, send_req);
    assert_eq!(
        r.error.as_deref(),
        Some("relay send failed: relay transport closed")
    );
    assert!(
        r.ambiguous,
        "the frame was written: the connector may have applied it"
    );
}

#[test]
fn duplicates_awaiting_a_verdict_are_bounded() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    let d = deliveries(&h.recv(conn, &inbound_line("c", "m1", Some("b0"))));
    for i in 0..100 {
        h.recv(
            conn,
            &inbound_line("c", "m1", Some(&format!("b{}", i % 20 + 1))),
        );
        h.recv(conn, &inbound_line("c", "m1", None));
    }
    let out = h.input(Input::AcceptDelivery(d[0].delivery));
    assert_eq!(acks(&out).len(), 1 + MAX_DUPLICATES_PER_KEY);
}

#[test]
fn live_inbound_far_past_the_cap_closes_instead_of_growing() {
    let mut cfg = test_config();
    cfg.max_undelivered = 2;
    let mut h = Harness::new(cfg);
    let conn = h.connect();
    // Past the cap the adapter asks the connector to buffer; frames in the
    // flip window are still delivered.
    for i in 0..6 {
        h.recv(conn, &inbound_line("c", &format!("m{i}"), None));
    }
    assert_eq!(
        h.m.stats().undelivered,
        6,
        "the flip window is not cut short"
    );
    // The connector ignores `going_idle` and keeps sending live messages.
    h.advance(2000);
    let out = h.recv(conn, &inbound_line("c", "m6", None));
    assert!(deliveries(&out).is_empty());
    assert!(out.contains(&Output::Close {
        conn,
        code: 1013,
        reason: "gateway overloaded".into()
    }));
    assert_eq!(h.m.state(), State::Reconnecting);
    assert_eq!(h.m.stats().undelivered, 6, "nothing more was taken");
}

#[test]
fn a_late_going_idle_ack_drains_through_a_redial() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    let (req, _) = h.command(Command::GoDormant);
    let out = h.advance(2000);
    assert_eq!(completion(&out, req), Some(Completion::Flag(false)));
    h.recv(conn, r#"{"type":"going_idle_ack"}"#);
    // The connector now buffers: the adapter re-dials to get the replay.
    assert_eq!(h.dials(), 2);
}

#[test]
fn overload_drain_waits_for_a_release_of_the_redial_hold() {
    let mut cfg = test_config();
    cfg.max_undelivered = 2;
    let mut h = Harness::new(cfg);
    let conn = h.connect();
    let mut ds = Vec::new();
    for i in 0..3 {
        ds.extend(deliveries(
            &h.recv(conn, &inbound_line("c", &format!("m{i}"), None)),
        ));
    }
    h.recv(conn, r#"{"type":"going_idle_ack"}"#);
    h.command(Command::HoldRedial);
    for d in &ds {
        h.input(Input::AcceptDelivery(d.delivery));
    }
    assert_eq!(h.dials(), 1, "held");
    h.command(Command::ReleaseRedial);
    assert_eq!(h.dials(), 2);
}

#[test]
fn dial_headers_are_redacted_in_debug_output() {
    let h = Harness::new(test_config());
    let dial = h
        .outputs
        .iter()
        .find(|o| matches!(o, Output::Dial { .. }))
        .expect("dial");
    let text = format!("{dial:?} {:?}", h.m);
    assert!(text.contains("Authorization"));
    assert!(!text.contains("Bearer"), "{text}");
    assert!(!text.contains("s3cret"));
}

fn inbound_for(chat: &str, scope: &str, user: &str, message_id: &str) -> String {
    json!({"type":"inbound","event":{"text":"hi","message_id":message_id,
        "source":{"platform":"discord","chat_id":chat,"chat_type":"group","scope_id":scope,"user_id":user}}})
    .to_string()
}

fn send_metadata(outputs: &[Output]) -> serde_json::Value {
    match sent(outputs).first() {
        Some(GatewayFrame::Outbound {
            action: Action::Send { metadata, .. },
            ..
        }) => serde_json::Value::Object(metadata.clone()),
        other => panic!("expected an outbound send, got {other:?}"),
    }
}

#[test]
fn a_route_is_pinned_while_its_delivery_awaits_a_verdict() {
    let mut cfg = test_config();
    cfg.route_capacity = 4;
    cfg.max_undelivered = 100;
    let mut h = Harness::new(cfg);
    let conn = h.connect();
    let out = h.recv(conn, &inbound_for("first", "gFirst", "uFirst", "m0"));
    let first = deliveries(&out)[0].delivery;
    // Many more chats than the cache holds, each accepted at once.
    for i in 0..50 {
        let out = h.recv(
            conn,
            &inbound_for(&format!("c{i}"), "g", "u", &format!("m{i}")),
        );
        let d = deliveries(&out)[0].delivery;
        h.input(Input::AcceptDelivery(d));
    }
    let s = h.m.stats();
    assert!(
        s.routes <= 4 + 1 + s.reply_holds,
        "bounded: capacity + pinned (the first delivery, the reply holds)"
    );
    h.input(Input::AcceptDelivery(first));
    let (_, out) = h.send("first", "reply");
    assert_eq!(
        send_metadata(&out),
        json!({"scope_id":"gFirst","user_id":"uFirst"})
    );
    assert_eq!(h.m.stats().route_misses, 0);
}

#[test]
fn a_route_is_pinned_while_a_request_to_its_chat_is_pending_or_held_by_the_host() {
    let mut cfg = test_config();
    cfg.route_capacity = 2;
    let mut h = Harness::new(cfg);
    let conn = h.connect();
    let out = h.recv(conn, &inbound_for("a", "gA", "uA", "m0"));
    h.input(Input::AcceptDelivery(deliveries(&out)[0].delivery));
    // A caller waits for admission to reply into "a": the host holds it.
    h.input(Input::HoldRoute {
        chat_id: "a",
        hold: true,
    });
    let (_, out) = h.send("b", "x"); // pending; chat "b" has no route
    let pending_id = outbound_request_id(&sent(&out));
    for i in 0..10 {
        let out = h.recv(
            conn,
            &inbound_for(&format!("c{i}"), "g", "u", &format!("m{i}")),
        );
        h.input(Input::AcceptDelivery(deliveries(&out)[0].delivery));
    }
    let (_, out) = h.send("a", "reply");
    h.input(Input::HoldRoute {
        chat_id: "a",
        hold: false,
    });
    assert_eq!(send_metadata(&out), json!({"scope_id":"gA","user_id":"uA"}));
    // The pending request to "b" pinned it from its capture on.
    let out = h.recv(conn, &inbound_for("b", "gB", "uB", "mb"));
    h.input(Input::AcceptDelivery(deliveries(&out)[0].delivery));
    for i in 10..20 {
        let out = h.recv(
            conn,
            &inbound_for(&format!("c{i}"), "g", "u", &format!("m{i}")),
        );
        h.input(Input::AcceptDelivery(deliveries(&out)[0].delivery));
    }
    assert!(
        h.m.routes().get("b").is_some(),
        "pinned by the pending send"
    );
    h.recv(conn, &result_line(&pending_id, json!({"success":true})));
    let s = h.m.stats();
    assert_eq!(s.reply_holds, 2, "the last two accepts, at capacity 2");
    assert_eq!(
        s.route_pins,
        1 + s.reply_holds,
        "the second send to a, and the holds"
    );
    assert_eq!(s.route_misses, 0);
}

#[test]
fn an_accepted_route_is_held_for_its_reply_past_the_cache_capacity() {
    // A gateway accepts, then starts its reply later (a spawned task): the
    // route must survive the captures in between.
    let mut cfg = test_config();
    cfg.route_capacity = 2;
    let mut h = Harness::new(cfg);
    let conn = h.connect();
    let out = h.recv(conn, &inbound_for("first", "gFirst", "uFirst", "m0"));
    h.input(Input::AcceptDelivery(deliveries(&out)[0].delivery));
    for i in 0..10 {
        let out = h.recv(
            conn,
            &inbound_for(&format!("c{i}"), "g", "u", &format!("m{i}")),
        );
        h.input(Input::RejectDelivery(deliveries(&out)[0].delivery));
    }
    let (_, out) = h.send("first", "late reply");
    assert_eq!(
        send_metadata(&out),
        json!({"scope_id":"gFirst","user_id":"uFirst"})
    );
    let s = h.m.stats();
    assert_eq!(s.route_misses, 0);
    assert_eq!(s.reply_holds, 0, "the reply took the hold over");
}

#[test]
fn reply_holds_are_bounded_by_the_cache_capacity() {
    let mut cfg = test_config();
    cfg.route_capacity = 2;
    let mut h = Harness::new(cfg);
    let conn = h.connect();
    let out = h.recv(conn, &inbound_for("first", "gFirst", "uFirst", "m0"));
    h.input(Input::AcceptDelivery(deliveries(&out)[0].delivery));
    // Two more accepts roll the first hold off (holds: c1, c2) ...
    for i in 0..3 {
        let out = h.recv(
            conn,
            &inbound_for(&format!("c{i}"), "g", "u", &format!("m{i}")),
        );
        h.input(Input::AcceptDelivery(deliveries(&out)[0].delivery));
    }
    assert_eq!(h.m.stats().reply_holds, 2);
    // ... and one more unpinned route evicts it.
    let out = h.recv(conn, &inbound_for("c3", "g", "u", "m3"));
    h.input(Input::RejectDelivery(deliveries(&out)[0].delivery));
    assert!(h.m.routes().get("first").is_none());
    h.send("first", "too late");
    assert_eq!(h.m.stats().route_misses, 1);
}

#[test]
fn a_reply_to_a_forgotten_route_is_counted_and_logged_not_silent() {
    let mut cfg = test_config();
    cfg.route_capacity = 1;
    let mut h = Harness::new(cfg);
    let conn = h.connect();
    // Accepted, then rejected: no reply holds keep them (see the tests
    // above), so "a" is evicted by "b".
    for chat in ["a", "b"] {
        let out = h.recv(conn, &inbound_for(chat, "g", "u", &format!("m{chat}")));
        h.input(Input::RejectDelivery(deliveries(&out)[0].delivery));
    }
    let (_, out) = h.send("a", "late reply");
    assert_eq!(send_metadata(&out), json!({}), "sent, without routing keys");
    assert_eq!(h.m.stats().route_misses, 1);
    assert!(
        out.iter().any(|o| matches!(o,
            Output::Log { level: Level::Warn, message } if message.contains("without its route"))),
        "a warning names the miss"
    );
    let (_, _) = h.send("never-seen", "x");
    assert_eq!(h.m.stats().route_misses, 1, "an unknown chat is no miss");
}

#[test]
fn a_verdict_given_after_a_redial_is_acked_on_the_current_connection() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    let d = deliveries(&h.recv(conn, &inbound_line("c", "m1", Some("b1"))));
    h.input(Input::SocketClosed {
        conn,
        code: 1006,
        reason: "",
    });
    h.advance(1000);
    let next = h.connect();
    assert_ne!(next, conn);
    let out = h.input(Input::AcceptDelivery(d[0].delivery));
    assert_eq!(acks(&out), vec!["b1"], "no replay needed");
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::SendText { conn, .. } if *conn == next)),
        "on the new connection"
    );
}
