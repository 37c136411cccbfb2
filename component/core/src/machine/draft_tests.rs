//! Native drafts and the egress knobs on a fake clock (spec §6.6.3,
//! §6.6.4, §6.14, §6.15): what goes on the wire for each outcome.

use super::tests::{
    Harness, actions, completion, deliveries, outbound_frames as frames, result_line, sent_result,
    test_config,
};
use super::*;
use serde_json::json;

/// Slack with native drafts, block formatting, delete.
const SLACK: &str = r#"{"contract_version":1,"platform":"slack","label":"Slack","max_message_length":4000,"supports_draft_streaming":true,"supports_edit":true,"supports_threads":true,"markdown_dialect":"mrkdwn","len_unit":"chars","supports_block_formatting":true,"supported_ops":["send","edit","typing","draft","delete"]}"#;
/// Telegram with native drafts (the stream is not the message there).
const TELEGRAM: &str = r#"{"contract_version":1,"platform":"telegram","label":"Telegram","max_message_length":4096,"supports_draft_streaming":true,"supports_edit":true,"supports_threads":false,"markdown_dialect":"markdown_v2","len_unit":"utf16","supported_ops":["send","draft"]}"#;

/// Answers the one outbound frame in `out`.
fn answer(h: &mut Harness, conn: u32, out: &[Output], result: Value) -> Vec<Output> {
    let f = frames(out);
    assert_eq!(f.len(), 1, "one frame to answer: {f:?}");
    let rid = f[0]["requestId"].as_str().unwrap_or_default().to_owned();
    h.recv(conn, &result_line(&rid, result))
}

/// A Slack gateway (knobs from `extra`), with the channel `C1` and the DM
/// `D1` known from inbound.
fn slack_with(extra: Value) -> (Harness, u32) {
    let mut cfg = test_config();
    cfg.identities = vec![Identity::new("slack", "AS1")];
    cfg.platform_extra = if extra.is_null() {
        String::new()
    } else {
        extra.to_string()
    };
    let mut h = Harness::new(cfg);
    let conn = h.open();
    h.recv(
        conn,
        &format!(r#"{{"type":"descriptor","descriptor":{SLACK}}}"#),
    );
    assert_eq!(h.m.state(), State::Ready);
    h.recv(conn, r#"{"type":"inbound","event":{"text":"yo","message_id":"1700.0002","source":{"platform":"slack","chat_id":"C1","chat_type":"group","user_id":"U2","scope_id":"T1","thread_id":"1700.0001"}}}"#);
    h.recv(conn, r#"{"type":"inbound","event":{"text":"hi","message_id":"1700.0003","source":{"platform":"slack","chat_id":"D1","chat_type":"dm","user_id":"U1"}}}"#);
    (h, conn)
}

fn slack() -> (Harness, u32) {
    slack_with(Value::Null)
}

fn draft(h: &mut Harness, chat: &str, id: u64, text: &str, metadata: Value) -> (u64, Vec<Output>) {
    let lane = Lane::SendDraft {
        chat_id: chat.into(),
        draft_id: id,
        content: text.into(),
        metadata: metadata.to_string(),
    };
    h.command(Command::Lane(&lane))
}

fn send(h: &mut Harness, chat: &str, text: &str, metadata: Value) -> (u64, Vec<Output>) {
    let metadata = metadata.to_string();
    h.command(Command::Send {
        chat_id: chat,
        content: text,
        reply_to: None,
        metadata: &metadata,
        platform: None,
    })
}

const TURN: fn() -> Value = || json!({"message_id":"m.1"});

// ----- drafts ------------------------------------------------------------------

#[test]
fn a_draft_needs_the_chats_draft_support_and_no_unfurl_knob() {
    let mut h = Harness::new(test_config());
    h.connect();
    let (r, out) = draft(&mut h, "chan1", 1, "x", json!({}));
    assert!(
        sent_result(&out, r)
            .error
            .unwrap_or_default()
            .contains("not implemented")
    );
    assert!(frames(&out).is_empty());

    let (mut h, _) = slack_with(json!({"slack":{"unfurl_links":false}}));
    assert!(!h.m.supports_draft_streaming("C1"));
    let (r, out) = draft(&mut h, "C1", 1, "x", json!({}));
    assert!(!sent_result(&out, r).success);
    assert!(frames(&out).is_empty());
}

#[test]
fn the_turn_final_send_seals_the_armed_stream() {
    let (mut h, conn) = slack();
    let (r, out) = draft(&mut h, "C1", 7, "partial…", TURN());
    assert_eq!(
        actions(&out),
        vec![
            json!({"op":"draft","chat_id":"C1","draft_id":7,"content":"partial…","final":false,
            "metadata":{"message_id":"m.1","scope_id":"T1","user_id":"U2"}})
        ]
    );
    let out = answer(&mut h, conn, &out, json!({"success":true}));
    assert!(sent_result(&out, r).success);

    let (s, out) = send(&mut h, "C1", "the answer", TURN());
    let a = actions(&out);
    assert_eq!(
        (
            &a[0]["op"],
            &a[0]["draft_id"],
            &a[0]["final"],
            &a[0]["content"]
        ),
        (
            &json!("draft"),
            &json!(7),
            &json!(true),
            &json!("the answer")
        )
    );
    let out = answer(
        &mut h,
        conn,
        &out,
        json!({"success":true,"message_id":"1700.9"}),
    );
    assert_eq!(sent_result(&out, s).message_id.as_deref(), Some("1700.9"));

    // A straggler after the seal: success, nothing on the wire.
    let (r, out) = draft(&mut h, "C1", 7, "late", TURN());
    assert!(sent_result(&out, r).success);
    assert!(frames(&out).is_empty());
    // The stream is disarmed: the next send is a plain send.
    let (_, out) = send(&mut h, "C1", "more", TURN());
    assert_eq!(actions(&out)[0]["op"], "send");
}

#[test]
fn one_lost_seal_ack_resends_the_same_frame_and_two_fall_open() {
    let (mut h, conn) = slack();
    let (_, out) = draft(&mut h, "C1", 7, "p", TURN());
    answer(&mut h, conn, &out, json!({"success":true}));
    let (s, out) = send(&mut h, "C1", "final", TURN());
    let first = frames(&out)[0].clone();
    // The ack never comes: the same frame once more, under a new id.
    let out = h.advance(OUTBOUND_TIMEOUT_MS);
    assert!(completion(&out, s).is_none());
    let retry = frames(&out)[0].clone();
    assert_eq!(retry["action"], first["action"]);
    assert_ne!(retry["requestId"], first["requestId"]);
    // Lost again: the final goes out as a plain send, which answers.
    let out = h.advance(OUTBOUND_TIMEOUT_MS);
    let a = actions(&out);
    assert_eq!(
        (&a[0]["op"], &a[0]["content"]),
        (&json!("send"), &json!("final"))
    );
    assert!(completion(&out, s).is_none());
    let out = answer(
        &mut h,
        conn,
        &out,
        json!({"success":true,"message_id":"m9"}),
    );
    assert_eq!(sent_result(&out, s).message_id.as_deref(), Some("m9"));
}

#[test]
fn a_retried_seal_that_lands_answers_without_a_plain_send() {
    let (mut h, conn) = slack();
    let (_, out) = draft(&mut h, "C1", 7, "p", TURN());
    answer(&mut h, conn, &out, json!({"success":true}));
    let (s, _) = send(&mut h, "C1", "final", TURN());
    let out = h.advance(OUTBOUND_TIMEOUT_MS);
    let out = answer(
        &mut h,
        conn,
        &out,
        json!({"success":true,"message_id":"ts"}),
    );
    assert_eq!(sent_result(&out, s).message_id.as_deref(), Some("ts"));
    assert!(frames(&out).is_empty());
}

#[test]
fn a_failed_seal_sends_plainly_but_a_declined_one_never_does() {
    let (mut h, conn) = slack();
    let (_, out) = draft(&mut h, "C1", 7, "p", TURN());
    answer(&mut h, conn, &out, json!({"success":true}));
    let (s, out) = send(&mut h, "C1", "final", TURN());
    let out = answer(
        &mut h,
        conn,
        &out,
        json!({"success":false,"error":"stream expired"}),
    );
    assert_eq!(actions(&out)[0]["op"], "send");
    let out = answer(
        &mut h,
        conn,
        &out,
        json!({"success":true,"message_id":"m2"}),
    );
    let r = sent_result(&out, s);
    assert!(r.success && !r.ambiguous);

    let (_, out) = draft(&mut h, "C1", 8, "p", json!({"message_id":"m.2"}));
    answer(&mut h, conn, &out, json!({"success":true}));
    let (s, out) = send(&mut h, "C1", "final", json!({"message_id":"m.2"}));
    let out = answer(
        &mut h,
        conn,
        &out,
        json!({"success":false,"code":"egress_declined","error":"slack egress declined: target is not an approved destination for this connection"}),
    );
    let r = sent_result(&out, s);
    assert!(r.declined);
    assert!(frames(&out).is_empty(), "no plain send after a decline");
}

#[test]
fn a_lost_draft_ack_keeps_the_stream_and_a_rejection_disarms_it() {
    let (mut h, conn) = slack();
    let (r, _) = draft(&mut h, "C1", 7, "p", TURN());
    let out = h.advance(OUTBOUND_TIMEOUT_MS);
    let lost = sent_result(&out, r);
    assert!(!lost.success && lost.ambiguous);
    let (_, out) = send(&mut h, "C1", "final", TURN());
    assert_eq!(
        actions(&out)[0]["final"],
        true,
        "still armed: the final seals"
    );

    let (r, out) = draft(&mut h, "C1", 9, "p", json!({"message_id":"m.3"}));
    let out = answer(
        &mut h,
        conn,
        &out,
        json!({"success":false,"error":"no stream"}),
    );
    assert!(!sent_result(&out, r).success);
    let (_, out) = send(&mut h, "C1", "final", json!({"message_id":"m.3"}));
    assert_eq!(actions(&out)[0]["op"], "send", "disarmed: a plain send");
}

#[test]
fn interim_sends_never_seal_and_identity_rules_pick_the_stream() {
    let (mut h, conn) = slack();
    let (_, out) = draft(&mut h, "C1", 7, "p", TURN());
    answer(&mut h, conn, &out, json!({"success":true}));
    // An ack or notice is interim: a plain send, the marker stripped.
    let (_, out) = send(
        &mut h,
        "C1",
        "✅ Approved",
        json!({"_interim_send":true,"thread_id":"1700.0001"}),
    );
    let a = actions(&out);
    assert_eq!(a[0]["op"], "send");
    assert_eq!(a[0]["metadata"].get("_interim_send"), None);
    // Another turn's id never falls back to this stream.
    let (_, out) = send(&mut h, "C1", "other turn", json!({"message_id":"m.other"}));
    assert_eq!(actions(&out)[0]["op"], "send");
    // An identity-less send absorbs the chat's single open stream.
    let (_, out) = send(&mut h, "C1", "final", json!({}));
    assert_eq!(actions(&out)[0]["final"], true);

    // Two open streams: an identity-less send seals neither.
    let (_, out) = draft(&mut h, "C1", 1, "a", json!({"message_id":"a"}));
    answer(&mut h, conn, &out, json!({"success":true}));
    let (_, out) = draft(&mut h, "C1", 2, "b", json!({"message_id":"b"}));
    answer(&mut h, conn, &out, json!({"success":true}));
    let (_, out) = send(&mut h, "C1", "which?", json!({}));
    assert_eq!(actions(&out)[0]["op"], "send");
}

#[test]
fn where_the_stream_is_not_the_message_the_final_is_a_real_send() {
    let mut cfg = test_config();
    cfg.identities = vec![Identity::new("telegram", "")];
    let mut h = Harness::new(cfg);
    let conn = h.open();
    h.recv(
        conn,
        &format!(r#"{{"type":"descriptor","descriptor":{TELEGRAM}}}"#),
    );
    let (_, out) = draft(&mut h, "t1", 3, "p", TURN());
    assert_eq!(actions(&out)[0]["op"], "draft");
    answer(&mut h, conn, &out, json!({"success":true}));
    let (_, out) = send(&mut h, "t1", "final", TURN());
    assert_eq!(actions(&out)[0]["op"], "send");
}

#[test]
fn abandon_seals_the_chats_open_stream_in_place() {
    let (mut h, conn) = slack();
    let abandon = Lane::AbandonOpenDraft {
        chat_id: "C1".into(),
        content: "(stopped)".into(),
    };
    let (r, out) = h.command(Command::Lane(&abandon));
    assert!(!sent_result(&out, r).success, "nothing open");
    assert!(frames(&out).is_empty());
    let (_, out) = draft(&mut h, "C1", 4, "p", TURN());
    answer(&mut h, conn, &out, json!({"success":true}));
    let (r, out) = h.command(Command::Lane(&abandon));
    let a = actions(&out);
    assert_eq!(
        (&a[0]["draft_id"], &a[0]["final"], &a[0]["content"]),
        (&json!(4), &json!(true), &json!("(stopped)"))
    );
    let out = answer(
        &mut h,
        conn,
        &out,
        json!({"success":true,"message_id":"ts"}),
    );
    assert!(sent_result(&out, r).success);
}

// ----- format hints and Slack rules ----------------------------------------------

#[test]
fn format_hints_follow_the_destinations_capability_and_the_knobs() {
    let (mut h, conn) =
        slack_with(json!({"slack":{"rich_blocks":"true","markdown_blocks":"false"}}));
    let (_, out) = send(&mut h, "C1", "x", json!({}));
    assert_eq!(
        actions(&out)[0]["metadata"]["format_hints"],
        json!({"rich_blocks":true})
    );
    // Never over the caller's own.
    let (_, out) = send(&mut h, "C1", "x", json!({"format_hints":{"mine":1}}));
    assert_eq!(
        actions(&out)[0]["metadata"]["format_hints"],
        json!({"mine":1})
    );
    // Edits and both draft frames carry them.
    let (_, out) = h.command(Command::Edit {
        chat_id: "C1",
        message_id: "m",
        content: "x",
        metadata: "{}",
    });
    assert_eq!(
        actions(&out)[0]["metadata"]["format_hints"],
        json!({"rich_blocks":true})
    );
    let (_, out) = draft(&mut h, "C1", 1, "p", TURN());
    assert_eq!(
        actions(&out)[0]["metadata"]["format_hints"],
        json!({"rich_blocks":true})
    );
    answer(&mut h, conn, &out, json!({"success":true}));
    let (_, out) = send(&mut h, "C1", "final", TURN());
    assert_eq!(
        actions(&out)[0]["metadata"]["format_hints"],
        json!({"rich_blocks":true})
    );

    // A chat whose platform lacks block formatting gets none.
    let (mut h, conn) = slack_with(json!({"rich_blocks":true}));
    h.recv(conn, r#"{"type":"descriptor","descriptor":{"contract_version":1,"platform":"discord","label":"D","max_message_length":2000,"supports_draft_streaming":false,"supports_edit":true,"supports_threads":true,"markdown_dialect":"discord","len_unit":"chars"}}"#);
    h.recv(conn, r#"{"type":"inbound","event":{"message_id":"d","source":{"platform":"discord","chat_id":"dc1"}}}"#);
    let (_, out) = send(&mut h, "dc1", "x", json!({}));
    assert_eq!(actions(&out)[0]["metadata"].get("format_hints"), None);
    // With the knobs off, nothing anywhere.
    let (mut h, _) = slack();
    let (_, out) = send(&mut h, "C1", "x", json!({}));
    assert_eq!(actions(&out)[0]["metadata"].get("format_hints"), None);
}

fn send_reply(h: &mut Harness, chat: &str, reply_to: &str, metadata: Value) -> Value {
    let metadata = metadata.to_string();
    let (_, out) = h.command(Command::Send {
        chat_id: chat,
        content: "x",
        reply_to: Some(reply_to),
        metadata: &metadata,
        platform: None,
    });
    actions(&out)[0].clone()
}

#[test]
fn slack_reply_anchors_are_promoted_or_dropped_by_mode() {
    // Thread-per-message (default): a DM keeps the anchor, promoted.
    let (mut h, _) = slack();
    let a = send_reply(&mut h, "D1", "1700.0003", json!({}));
    assert_eq!(a["reply_to"], "1700.0003");
    assert_eq!(a["metadata"]["thread_id"], "1700.0003");
    // A real thread is kept and nothing promoted.
    let a = send_reply(&mut h, "D1", "1700.0003", json!({"thread_ts":"1699.1"}));
    assert_eq!(a["reply_to"], "1700.0003");
    assert_eq!(a["metadata"].get("thread_id"), None);

    // Flat mode: a DM without a thread loses the anchor and its mirror.
    let (mut h, _) = slack_with(json!({"slack":{"reply_in_thread":" no "}}));
    let a = send_reply(
        &mut h,
        "D1",
        "1700.0003",
        json!({"reply_to_message_id":"1700.0003"}),
    );
    assert_eq!(a["reply_to"], Value::Null);
    assert_eq!(a["metadata"].get("reply_to_message_id"), None);
    assert_eq!(a["metadata"].get("thread_id"), None);
    // A channel keeps and promotes it even in flat mode (the drop is for DMs).
    let a = send_reply(&mut h, "C1", "1700.0002", json!({}));
    assert_eq!(a["metadata"]["thread_id"], "1700.0002");

    // Not Slack: untouched.
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    h.recv(conn, r#"{"type":"inbound","event":{"message_id":"d","source":{"platform":"discord","chat_id":"dm9","chat_type":"dm"}}}"#);
    let a = send_reply(&mut h, "dm9", "d", json!({}));
    assert_eq!(a["reply_to"], "d");
    assert_eq!(a["metadata"].get("thread_id"), None);
}

#[test]
fn unfurl_knobs_are_stamped_as_booleans_on_slack_chats_only() {
    let (mut h, _) = slack_with(json!({"slack":{"unfurl_links":"off","unfurl_media":"junk"}}));
    let (_, out) = send(&mut h, "C1", "x", json!({}));
    let m = &actions(&out)[0]["metadata"];
    assert_eq!(m["unfurl_links"], false);
    assert_eq!(m.get("unfurl_media"), None, "junk is dropped");
    // An unknown chat falls back to the descriptor's platform (Slack).
    let (_, out) = send(&mut h, "C-unknown", "x", json!({}));
    assert_eq!(actions(&out)[0]["metadata"]["unfurl_links"], false);

    let mut cfg = test_config();
    cfg.platform_extra = json!({"unfurl_links":true}).to_string();
    let mut h = Harness::new(cfg);
    let conn = h.connect();
    h.recv(conn, r#"{"type":"inbound","event":{"message_id":"d","source":{"platform":"discord","chat_id":"c"}}}"#);
    let (_, out) = send(&mut h, "c", "x", json!({}));
    assert_eq!(actions(&out)[0]["metadata"].get("unfurl_links"), None);
}

#[test]
fn top_level_slack_messages_key_their_own_session() {
    let (mut h, conn) = slack();
    let thread_of = |h: &mut Harness, line: &str| {
        let out = h.recv(conn, line);
        let d = deliveries(&out).pop().expect("a delivery");
        serde_json::from_str::<Value>(&d.json).unwrap_or_default()["source"]["thread_id"].clone()
    };
    let top = r#"{"type":"inbound","event":{"message_id":"1700.5","source":{"platform":"slack","chat_id":"C1","chat_type":"group"}}}"#;
    assert_eq!(thread_of(&mut h, top), "1700.5");
    let threaded = r#"{"type":"inbound","event":{"message_id":"1700.6","source":{"platform":"slack","chat_id":"C1","thread_id":"1700.1"}}}"#;
    assert_eq!(
        thread_of(&mut h, threaded),
        "1700.1",
        "a real thread is kept"
    );

    let (mut h, conn) = slack_with(
        json!({"slack":{"dm_top_level_threads_as_sessions":false,"channel_reply_modes":{"C2":"channel"}}}),
    );
    let mut thread_of = |line: &str| {
        let out = h.recv(conn, line);
        let d = deliveries(&out).pop().expect("a delivery");
        serde_json::from_str::<Value>(&d.json).unwrap_or_default()["source"]["thread_id"].clone()
    };
    let dm = r#"{"type":"inbound","event":{"message_id":"1700.7","source":{"platform":"slack","chat_id":"D1","chat_type":"dm"}}}"#;
    assert_eq!(thread_of(dm), Value::Null);
    let flat = r#"{"type":"inbound","event":{"message_id":"1700.8","source":{"platform":"slack","chat_id":"C2","chat_type":"group"}}}"#;
    assert_eq!(thread_of(flat), Value::Null);
}

#[test]
fn fresh_finals_only_for_forced_unfurls_with_a_link_on_slack() {
    let (h, _) = slack_with(json!({"slack":{"unfurl_links":"yes"}}));
    assert!(h.m.prefers_fresh_final("C1", "see https://example.com"));
    assert!(!h.m.prefers_fresh_final("C1", "no link"));
    let (h, _) = slack_with(json!({"slack":{"unfurl_links":false}}));
    assert!(!h.m.prefers_fresh_final("C1", "see https://example.com"));
    let mut cfg = test_config();
    cfg.platform_extra = json!({"slack":{"unfurl_links":true}}).to_string();
    let mut h = Harness::new(cfg);
    h.connect();
    assert!(!h.m.prefers_fresh_final("chan1", "https://x"), "not Slack");
}

#[test]
fn platform_extra_must_be_an_object() {
    let mut cfg = test_config();
    cfg.platform_extra = "[true]".into();
    assert_eq!(Machine::new(cfg, 1).err(), Some(ConfigError::PlatformExtra));
}
