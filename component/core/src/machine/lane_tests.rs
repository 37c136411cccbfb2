//! The WIT 0.2 lanes on a fake clock (spec §6.6.2, §6.6.4, §6.9, §6.12,
//! §6.13, §6.15, §9.5): what goes on the wire, what is refused locally,
//! and how each command completes.

use super::tests::{
    Harness, actions, answer, completion, deliveries, inbound_line, lane, outbound_frames, sent,
    sent_result, test_config, warns,
};
use super::*;
use serde_json::json;

const SLACK_DESCRIPTOR: &str = r#"{"contract_version":1,"platform":"slack","label":"Slack","max_message_length":4000,"supports_draft_streaming":false,"supports_edit":true,"supports_threads":true,"markdown_dialect":"mrkdwn","len_unit":"chars","supported_ops":["send","typing","delete","react","thread_create","thread_rename"]}"#;
const TELEGRAM_REACT_DESCRIPTOR: &str = r#"{"contract_version":1,"platform":"telegram","label":"Telegram","max_message_length":4096,"supports_draft_streaming":false,"supports_edit":true,"supports_threads":false,"markdown_dialect":"markdown_v2","len_unit":"utf16","supported_ops":["send","react"]}"#;

/// A harness whose default descriptor is Slack-like (delete, react and
/// threads listed), with one Slack DM `D1` and one Slack channel `C1`.
fn slack() -> (Harness, u32) {
    let mut cfg = test_config();
    cfg.identities = vec![Identity::new("slack", "AS1")];
    let mut h = Harness::new(cfg);
    let conn = h.open();
    h.recv(
        conn,
        &format!(r#"{{"type":"descriptor","descriptor":{SLACK_DESCRIPTOR}}}"#),
    );
    assert_eq!(h.m.state(), State::Ready);
    h.recv(conn, r#"{"type":"inbound","event":{"text":"hi","message_id":"1700.0001","source":{"platform":"slack","chat_id":"D1","chat_type":"dm","user_id":"U1"}}}"#);
    h.recv(conn, r#"{"type":"inbound","event":{"text":"yo","message_id":"1700.0002","source":{"platform":"slack","chat_id":"C1","chat_type":"group","user_id":"U2","scope_id":"T1"}}}"#);
    (h, conn)
}

// ----- delete ----------------------------------------------------------------

#[test]
fn delete_goes_out_only_when_the_chats_descriptor_lists_it() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    h.recv(conn, &inbound_line("chan1", "m1", None));
    // The Discord descriptor does not list `delete`: refused, no traffic.
    let (r, out) = lane(
        &mut h,
        Lane::Delete {
            chat_id: "chan1".into(),
            message_id: "m9".into(),
            metadata: "{}".into(),
        },
    );
    let res = sent_result(&out, r);
    assert!(!res.success && !res.declined);
    assert!(
        res.error
            .as_deref()
            .unwrap_or("")
            .contains("delete not supported")
    );
    assert!(sent(&out).is_empty());

    let (mut h, conn) = slack();
    let (r, out) = lane(
        &mut h,
        Lane::Delete {
            chat_id: "C1".into(),
            message_id: "1700.0009".into(),
            metadata: r#"{"k":"v"}"#.into(),
        },
    );
    assert_eq!(
        actions(&out),
        vec![
            json!({"op":"delete","chat_id":"C1","message_id":"1700.0009",
            "metadata":{"k":"v","scope_id":"T1","user_id":"U2"}})
        ]
    );
    assert_eq!(outbound_frames(&out)[0]["platform"], "slack");
    assert!(completion(&out, r).is_none(), "waits for its result");
    let out = answer(&mut h, conn, &out, json!({"success":true}));
    assert!(sent_result(&out, r).success);
}

// ----- typing status -----------------------------------------------------------

#[test]
fn stop_typing_clears_only_slack_chats_with_the_status_anchor() {
    let (mut h, _conn) = slack();
    // A Slack DM without a thread gets the last inbound ts as its anchor.
    let (r, out) = lane(
        &mut h,
        Lane::StopTyping {
            chat_id: "D1".into(),
            metadata: "{}".into(),
        },
    );
    assert_eq!(
        actions(&out),
        vec![json!({"op":"typing","chat_id":"D1","content":"",
            "metadata":{"user_id":"U1","thread_id":"1700.0001"}})]
    );
    assert!(completion(&out, r).is_none());
    // A channel is not anchored; an explicit thread is never overwritten.
    let (_, out) = lane(
        &mut h,
        Lane::StopTyping {
            chat_id: "C1".into(),
            metadata: "{}".into(),
        },
    );
    assert_eq!(actions(&out)[0]["metadata"].get("thread_id"), None);
    let (_, out) = lane(
        &mut h,
        Lane::StopTyping {
            chat_id: "D1".into(),
            metadata: r#"{"thread_ts":"1699.5"}"#.into(),
        },
    );
    assert_eq!(actions(&out)[0]["metadata"].get("thread_id"), None);

    // Not a Slack chat: refused, nothing on the wire.
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    h.recv(conn, &inbound_line("chan1", "m1", None));
    let (r, out) = lane(
        &mut h,
        Lane::StopTyping {
            chat_id: "chan1".into(),
            metadata: "{}".into(),
        },
    );
    assert!(!sent_result(&out, r).success);
    assert!(sent(&out).is_empty());
}

#[test]
fn typing_never_sends_the_empty_clear_and_anchors_slack_dms() {
    let (mut h, _conn) = slack();
    let (_, out) = h.command(Command::Typing {
        chat_id: "D1",
        metadata: "{}",
        content: Some(""),
    });
    let a = &actions(&out)[0];
    assert_eq!(a.get("content"), None, "an empty phrase is no phrase");
    assert_eq!(a["metadata"]["thread_id"], "1700.0001");
    let (_, out) = h.command(Command::Typing {
        chat_id: "D1",
        metadata: "{}",
        content: Some("reading files…"),
    });
    assert_eq!(actions(&out)[0]["content"], "reading files…");
}

#[test]
fn an_interrupt_clears_a_slack_chats_typing_in_the_background() {
    let (mut h, conn) = slack();
    let out = h.recv(
        conn,
        r#"{"type":"interrupt_inbound","session_key":"s1","chat_id":"D1"}"#,
    );
    // The gateway's signal comes first, then the clear.
    let first = out
        .iter()
        .position(|o| matches!(o, Output::Interrupt { .. }))
        .expect("interrupt");
    let clear = out
        .iter()
        .position(|o| matches!(o, Output::SendText { .. }))
        .expect("clear");
    assert!(first < clear);
    assert_eq!(
        actions(&out),
        vec![json!({"op":"typing","chat_id":"D1","content":"",
            "metadata":{"user_id":"U1","thread_id":"1700.0001"}})]
    );
    // Its result completes nobody.
    let before = h.outputs.len();
    let out = answer(&mut h, conn, &out, json!({"success":true}));
    assert!(!out.iter().any(|o| matches!(o, Output::Complete { .. })));
    assert!(h.outputs.len() > before);

    // A Discord chat has no typing status to clear.
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    h.recv(conn, &inbound_line("chan1", "m1", None));
    let out = h.recv(
        conn,
        r#"{"type":"interrupt_inbound","session_key":"s1","chat_id":"chan1"}"#,
    );
    assert!(sent(&out).is_empty());
}

// ----- reactions ---------------------------------------------------------------

#[test]
fn react_is_gated_and_always_carries_remove() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    h.recv(conn, &inbound_line("chan1", "m1", None));
    let (r, out) = lane(
        &mut h,
        Lane::React {
            chat_id: "chan1".into(),
            message_id: "m1".into(),
            emoji: "👀".into(),
            remove: false,
            metadata: "{}".into(),
        },
    );
    assert_eq!(
        actions(&out),
        vec![
            json!({"op":"react","chat_id":"chan1","message_id":"m1","emoji":"👀",
            "remove":false,"metadata":{"scope_id":"guildA","user_id":"u1"}})
        ]
    );
    let out = answer(&mut h, conn, &out, json!({"success":true}));
    assert!(sent_result(&out, r).success);

    // No message id: refused locally.
    let (r, out) = lane(
        &mut h,
        Lane::React {
            chat_id: "chan1".into(),
            message_id: String::new(),
            emoji: "👀".into(),
            remove: true,
            metadata: "{}".into(),
        },
    );
    assert!(!sent_result(&out, r).success);
    assert!(sent(&out).is_empty());

    // A connector that does not advertise `react`: refused locally.
    let mut cfg = test_config();
    cfg.identities = vec![Identity::new("telegram", "")];
    let mut h = Harness::new(cfg);
    let conn = h.open();
    h.recv(
        conn,
        r#"{"type":"descriptor","descriptor":{"contract_version":1,"platform":"telegram","label":"T","max_message_length":4096,"supports_draft_streaming":false,"supports_edit":true,"supports_threads":false,"markdown_dialect":"plain","len_unit":"chars","supported_ops":["send"]}}"#,
    );
    let (r, out) = lane(
        &mut h,
        Lane::React {
            chat_id: "t1".into(),
            message_id: "5".into(),
            emoji: "👀".into(),
            remove: false,
            metadata: "{}".into(),
        },
    );
    assert!(
        sent_result(&out, r)
            .error
            .unwrap_or_default()
            .contains("react not supported")
    );
    assert!(sent(&out).is_empty());
}

#[test]
fn a_declined_reaction_is_a_marked_failure_with_one_warning() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    h.recv(conn, &inbound_line("chan1", "m1", None));
    let (r, out) = lane(
        &mut h,
        Lane::React {
            chat_id: "chan1".into(),
            message_id: "m1".into(),
            emoji: "👀".into(),
            remove: false,
            metadata: "{}".into(),
        },
    );
    let out = answer(
        &mut h,
        conn,
        &out,
        json!({"success":false,"code":"egress_declined","error":"discord egress declined: target is not an approved destination for this connection"}),
    );
    let res = sent_result(&out, r);
    assert!(res.declined && !res.ambiguous);
    assert_eq!(warns(&out, "relay react DECLINED for chan1"), 1);
}

fn delivered_json(h: &mut Harness, conn: u32, line: &str) -> String {
    let out = h.recv(conn, line);
    deliveries(&out).pop().expect("a delivery").json
}

#[test]
fn processing_reactions_mark_the_reply_anchor_and_complete_at_once() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    let event = delivered_json(&mut h, conn, &inbound_line("chan1", "m7", None));

    let (r, out) = lane(
        &mut h,
        Lane::ProcessingStart {
            event: event.clone(),
        },
    );
    assert_eq!(completion(&out, r), Some(Completion::Done));
    let a = actions(&out);
    assert_eq!(a.len(), 1);
    assert_eq!(
        (
            &a[0]["op"],
            &a[0]["chat_id"],
            &a[0]["message_id"],
            &a[0]["emoji"],
            &a[0]["remove"]
        ),
        (
            &json!("react"),
            &json!("chan1"),
            &json!("m7"),
            &json!("👀"),
            &json!(false)
        )
    );
    // Best-effort: the result completes nobody.
    let out = answer(&mut h, conn, &out, json!({"success":false,"error":"gone"}));
    assert!(!out.iter().any(|o| matches!(o, Output::Complete { .. })));

    let (r, out) = lane(
        &mut h,
        Lane::ProcessingComplete {
            event: event.clone(),
            outcome: ProcessingOutcome::Success,
        },
    );
    assert_eq!(completion(&out, r), Some(Completion::Done));
    let emoji: Vec<(Value, Value)> = actions(&out)
        .iter()
        .map(|a| (a["emoji"].clone(), a["remove"].clone()))
        .collect();
    assert_eq!(
        emoji,
        vec![(json!("👀"), json!(true)), (json!("✅"), json!(false))]
    );
    let (_, out) = lane(
        &mut h,
        Lane::ProcessingComplete {
            event: event.clone(),
            outcome: ProcessingOutcome::Failure,
        },
    );
    assert_eq!(actions(&out)[1]["emoji"], "❌");
    let (_, out) = lane(
        &mut h,
        Lane::ProcessingComplete {
            event,
            outcome: ProcessingOutcome::Cancelled,
        },
    );
    assert_eq!(actions(&out).len(), 1, "cancelled only removes 👀");
}

#[test]
fn processing_reactions_use_the_platforms_set_and_skip_unanchored_events() {
    let mut cfg = test_config();
    cfg.identities = vec![Identity::new("telegram", "")];
    let mut h = Harness::new(cfg);
    let conn = h.open();
    h.recv(
        conn,
        &format!(r#"{{"type":"descriptor","descriptor":{TELEGRAM_REACT_DESCRIPTOR}}}"#),
    );
    // The event names no platform: the descriptor's decides (Telegram).
    let event = delivered_json(
        &mut h,
        conn,
        r#"{"type":"inbound","event":{"text":"hi","message_id":"42","source":{"chat_id":"t1"}}}"#,
    );
    let (_, out) = lane(
        &mut h,
        Lane::ProcessingComplete {
            event,
            outcome: ProcessingOutcome::Success,
        },
    );
    assert_eq!(actions(&out)[1]["emoji"], "👍");
    let (_, out) = lane(
        &mut h,
        Lane::ProcessingComplete {
            event: r#"{"source":{"platform":"telegram","chat_id":"t1","message_id":"43"}}"#.into(),
            outcome: ProcessingOutcome::Failure,
        },
    );
    assert_eq!(actions(&out)[1]["emoji"], "👎");

    // A Discord slash command has no reply anchor (§7.4 step 7): nothing.
    let (r, out) = lane(
        &mut h,
        Lane::ProcessingStart {
            event: r#"{"message_id":"i1","source":{"platform":"discord","chat_id":"c1"}}"#.into(),
        },
    );
    assert_eq!(completion(&out, r), Some(Completion::Done));
    assert!(sent(&out).is_empty());
    // Not even JSON: nothing, and still completed.
    let (r, out) = lane(&mut h, Lane::ProcessingStart { event: "{".into() });
    assert_eq!(completion(&out, r), Some(Completion::Done));
    assert!(sent(&out).is_empty());
}

#[test]
fn background_frames_never_take_an_admitted_callers_pending_slot() {
    let mut cfg = test_config();
    cfg.max_pending = 1;
    let mut h = Harness::new(cfg);
    let conn = h.connect();
    let event = delivered_json(&mut h, conn, &inbound_line("chan1", "m7", None));
    let (_, out) = lane(&mut h, Lane::ProcessingStart { event });
    assert_eq!(actions(&out).len(), 1, "one reaction pending");
    let (r, out) = h.send("chan1", "reply");
    assert_eq!(actions(&out).len(), 1, "the send still goes out");
    assert!(completion(&out, r).is_none());
}

// ----- threads -----------------------------------------------------------------

#[test]
fn thread_create_applies_the_name_rules_and_returns_the_thread() {
    let (mut h, conn) = slack();
    let (r, out) = lane(
        &mut h,
        Lane::ThreadCreate {
            parent_chat_id: "C1".into(),
            name: "  fix the build  ".into(),
            metadata: "{}".into(),
        },
    );
    assert_eq!(
        actions(&out),
        vec![
            json!({"op":"thread_create","chat_id":"C1","thread_name":"fix the build",
            "metadata":{"scope_id":"T1","user_id":"U2"}})
        ]
    );
    let out = answer(
        &mut h,
        conn,
        &out,
        json!({"success":true,"thread_id":"th1"}),
    );
    assert_eq!(sent_result(&out, r).thread_id.as_deref(), Some("th1"));

    let (_, out) = lane(
        &mut h,
        Lane::ThreadCreate {
            parent_chat_id: "C1".into(),
            name: "   ".into(),
            metadata: "{}".into(),
        },
    );
    assert_eq!(actions(&out)[0]["thread_name"], "handoff");
    let long = "é".repeat(150);
    let (_, out) = lane(
        &mut h,
        Lane::ThreadCreate {
            parent_chat_id: "C1".into(),
            name: long,
            metadata: "{}".into(),
        },
    );
    assert_eq!(actions(&out)[0]["thread_name"], "é".repeat(100));

    // Not advertised (the Discord descriptor here): refused locally.
    let mut h = Harness::new(test_config());
    h.connect();
    let (r, out) = lane(
        &mut h,
        Lane::ThreadCreate {
            parent_chat_id: "chan1".into(),
            name: "x".into(),
            metadata: "{}".into(),
        },
    );
    assert!(!sent_result(&out, r).success);
    assert!(sent(&out).is_empty());
}

#[test]
fn thread_rename_collapses_the_name_and_sends_one_guard() {
    let (mut h, _conn) = slack();
    let (_, out) = lane(
        &mut h,
        Lane::ThreadRename {
            thread_id: "th-9".into(),
            name: "  Real \n\t Title ".into(),
            guard: RenameGuard::ConnectorCreated,
            parent_chat_id: Some("C1".into()),
            metadata: "{}".into(),
        },
    );
    assert_eq!(
        actions(&out),
        vec![
            json!({"op":"thread_rename","chat_id":"C1","message_id":"th-9",
            "thread_name":"Real Title","only_if_connector_created":true,
            "metadata":{"scope_id":"T1","user_id":"U2"}})
        ]
    );
    // Without a parent the thread itself is addressed.
    let (_, out) = lane(
        &mut h,
        Lane::ThreadRename {
            thread_id: "th-9".into(),
            name: "New".into(),
            guard: RenameGuard::CurrentName("Old".into()),
            parent_chat_id: None,
            metadata: "{}".into(),
        },
    );
    let a = &actions(&out)[0];
    assert_eq!(a["chat_id"], "th-9");
    assert_eq!(a["only_if_current_name"], "Old");
    assert_eq!(a.get("only_if_connector_created"), None);
    // An empty name or thread id: refused, nothing sent.
    for (thread, name) in [("th-9", " \t "), ("", "Name")] {
        let (r, out) = lane(
            &mut h,
            Lane::ThreadRename {
                thread_id: thread.into(),
                name: name.into(),
                guard: RenameGuard::None,
                parent_chat_id: None,
                metadata: "{}".into(),
            },
        );
        assert!(!sent_result(&out, r).success);
        assert!(sent(&out).is_empty());
    }
}

// ----- auto-thread feedback -----------------------------------------------------

fn auto_thread_info(h: &mut Harness, chat: &str, timeout_ms: u64) -> (u64, Vec<Output>) {
    lane(
        h,
        Lane::AutoThreadInfo {
            chat_id: chat.into(),
            timeout_ms,
        },
    )
}

#[test]
fn a_waiter_is_answered_by_the_next_send_into_its_chat() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    h.recv(conn, &inbound_line("chan1", "m1", None));
    let (w, out) = auto_thread_info(&mut h, "chan1", 5_000);
    assert!(completion(&out, w).is_none(), "nothing known yet: waits");
    // A send into another chat does not wake it.
    let (_, out) = h.send("other", "x");
    let out = answer(
        &mut h,
        conn,
        &out,
        json!({"success":true,"thread_id":"t0","auto_thread_name":"n0"}),
    );
    assert!(completion(&out, w).is_none());

    let (s, out) = h.send("chan1", "hello");
    let out = answer(
        &mut h,
        conn,
        &out,
        json!({"success":true,"message_id":"m2","thread_id":"th7","auto_thread_name":"hello"}),
    );
    assert!(sent_result(&out, s).success);
    let info = sent_result(&out, w);
    assert!(info.success);
    assert_eq!(info.thread_id.as_deref(), Some("th7"));
    assert_eq!(info.auto_thread_name.as_deref(), Some("hello"));
    // Now it is known: answered at once.
    let (again, out) = auto_thread_info(&mut h, "chan1", 5_000);
    assert_eq!(sent_result(&out, again).thread_id.as_deref(), Some("th7"));
}

#[test]
fn a_send_without_an_auto_thread_or_the_timeout_reports_a_miss() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    let (w, _) = auto_thread_info(&mut h, "chan1", 5_000);
    let (_, out) = h.send("chan1", "plain");
    let out = answer(
        &mut h,
        conn,
        &out,
        json!({"success":true,"message_id":"m2"}),
    );
    let miss = sent_result(&out, w);
    assert!(!miss.success && miss.thread_id.is_none());

    // A failed send (timed out here) wakes the waiter with a miss too.
    let (w, _) = auto_thread_info(&mut h, "chan1", 60_000);
    let (_, _) = h.send("chan1", "lost");
    let out = h.advance(30_000);
    assert!(!sent_result(&out, w).success);

    // No send at all: the timeout answers.
    let (w, _) = auto_thread_info(&mut h, "chan2", 2_000);
    assert!(completion(&h.advance(1_999), w).is_none());
    let out = h.advance(1);
    assert!(!sent_result(&out, w).success);
}

#[test]
fn auto_thread_waiters_are_bounded() {
    let mut cfg = test_config();
    cfg.max_pending = 2;
    let mut h = Harness::new(cfg);
    h.connect();
    let (a, out_a) = auto_thread_info(&mut h, "c1", 60_000);
    let (b, out_b) = auto_thread_info(&mut h, "c2", 60_000);
    assert!(completion(&out_a, a).is_none() && completion(&out_b, b).is_none());
    let (c, out) = auto_thread_info(&mut h, "c3", 60_000);
    let refused = sent_result(&out, c);
    assert!(!refused.success && !refused.ambiguous);
    assert!(
        refused
            .error
            .unwrap_or_default()
            .contains("already waiting")
    );
}

#[test]
fn auto_thread_feedback_is_bounded_and_waiters_end_with_the_adapter() {
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    for i in 0..=lanes::AUTO_THREAD_CAPACITY {
        let chat = format!("c{i}");
        let (_, out) = h.send(&chat, "x");
        answer(
            &mut h,
            conn,
            &out,
            json!({"success":true,"thread_id":format!("t{i}"),"auto_thread_name":"n"}),
        );
    }
    // The oldest was evicted: that chat waits; the newest is known.
    let (newest, out) =
        auto_thread_info(&mut h, &format!("c{}", lanes::AUTO_THREAD_CAPACITY), 1_000);
    assert!(sent_result(&out, newest).success);
    let (oldest, out) = auto_thread_info(&mut h, "c0", 60_000);
    assert!(completion(&out, oldest).is_none());
    // Shutting down ends the wait with "transport closed".
    let (_, _) = h.command(Command::Shutdown);
    let out = h.advance(10_000);
    let r = sent_result(&out, oldest);
    assert!(!r.success);
    assert_eq!(r.error.as_deref(), Some("relay transport closed"));
}

#[test]
fn name_rules() {
    assert_eq!(thread_create_name(""), "handoff");
    assert_eq!(thread_create_name(" a  b "), "a  b");
    assert_eq!(thread_rename_name(" a \n b "), "a b");
    assert_eq!(thread_rename_name("   "), "");
    assert_eq!(reaction_set("telegram").success, "👍");
    assert_eq!(reaction_set("discord").failure, "❌");
}
