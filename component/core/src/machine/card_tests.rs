//! Task cards and the command manifest on a fake clock (spec §2.2, §2.7
//! `task_card`, §9.6, §9.10).

use super::tests::{
    Harness, actions, answer, inbound_line, lane, sent, sent_result, test_config, warns,
};
use super::*;
use serde_json::json;

// ----- command manifest ------------------------------------------------------------

#[test]
fn the_manifest_goes_on_the_discord_hello_only_and_bad_entries_are_logged() {
    let mut cfg = test_config();
    cfg.command_manifest = json!([
        {"name":"model","description":"Pick a model","options":[{"type":3,"name":"name","description":"Model","required":false}]},
        {"name":"Bad","description":"x"}
    ])
    .to_string();
    let mut h = Harness::new(cfg);
    assert_eq!(
        warns(&h.outputs, "relay command manifest: entry 1 skipped"),
        1,
        "logged once at start"
    );
    let conn = h.open();
    let hellos: Vec<Value> = h
        .outputs
        .iter()
        .filter_map(|o| match o {
            Output::SendText { text, conn: c } if *c == conn => serde_json::from_str(text).ok(),
            _ => None,
        })
        .collect();
    assert_eq!(hellos.len(), 2, "discord and telegram");
    assert_eq!(hellos[0]["platform"], "discord");
    assert_eq!(
        hellos[0]["command_manifest"],
        json!([{"name":"model","description":"Pick a model","options":[{"type":3,"name":"name","description":"Model","required":false}]}])
    );
    assert_eq!(hellos[1].get("command_manifest"), None);

    // Not an array: the hello goes without it, the handshake is unaffected.
    let mut cfg = test_config();
    cfg.command_manifest = "{oops".into();
    let mut h = Harness::new(cfg);
    h.connect();
    assert_eq!(warns(&h.outputs, "not a JSON array"), 1);
    assert!(
        !h.outputs.iter().any(
            |o| matches!(o, Output::SendText { text, .. } if text.contains("command_manifest"))
        )
    );
}

// ----- task cards ---------------------------------------------------------------------

const CARDS: &str = r#"{"contract_version":1,"platform":"slack","label":"Slack","max_message_length":4000,"supports_draft_streaming":false,"supports_edit":true,"supports_threads":true,"markdown_dialect":"mrkdwn","len_unit":"chars","supported_ops":["send","task_card","task_card_stop"]}"#;

fn cards() -> (Harness, u32) {
    let mut cfg = test_config();
    cfg.identities = vec![Identity::new("slack", "AS1")];
    let mut h = Harness::new(cfg);
    let conn = h.open();
    h.recv(
        conn,
        &format!(r#"{{"type":"descriptor","descriptor":{CARDS}}}"#),
    );
    h.recv(conn, r#"{"type":"inbound","event":{"text":"go","message_id":"1700.0001","source":{"platform":"slack","chat_id":"C1","chat_type":"group","user_id":"U2"}}}"#);
    (h, conn)
}

fn card(
    h: &mut Harness,
    reply_to: Option<&str>,
    chunks: &str,
    metadata: Value,
) -> (u64, Vec<Output>) {
    lane(
        h,
        Lane::TaskCard {
            chat_id: "C1".into(),
            reply_to: reply_to.map(str::to_owned),
            chunks: chunks.into(),
            metadata: metadata.to_string(),
        },
    )
}

#[test]
fn a_task_card_is_keyed_by_its_turn_and_threads_on_slack() {
    let (mut h, conn) = cards();
    let (r, out) = card(
        &mut h,
        Some("1700.0001"),
        r#"[{"text":"step one"}]"#,
        json!({}),
    );
    assert_eq!(
        actions(&out),
        vec![
            json!({"op":"task_card","chat_id":"C1","card_id":"turn:1700.0001",
            "chunks":[{"text":"step one"}],
            "metadata":{"thread_ts":"1700.0001","user_id":"U2"}})
        ]
    );
    let out = answer(&mut h, conn, &out, json!({"success":true}));
    assert!(sent_result(&out, r).success);
    // No anchor at all: the root card; metadata keys anchor it otherwise.
    let (_, out) = card(&mut h, None, "[]", json!({}));
    assert_eq!(actions(&out)[0]["card_id"], "turn:root");
    let (_, out) = card(&mut h, None, "[]", json!({"thread_id":"1699.9"}));
    assert_eq!(actions(&out)[0]["card_id"], "turn:1699.9");
    // The stop names the same card.
    let (_, out) = lane(
        &mut h,
        Lane::TaskCardStop {
            chat_id: "C1".into(),
            reply_to: Some("1700.0001".into()),
            metadata: "{}".into(),
        },
    );
    let a = &actions(&out)[0];
    assert_eq!(
        (&a["op"], &a["card_id"]),
        (&json!("task_card_stop"), &json!("turn:1700.0001"))
    );
    assert_eq!(a.get("chunks"), None);
}

#[test]
fn task_cards_need_their_op_listed_and_object_chunks() {
    let (mut h, _) = cards();
    for chunks in ["{}", r#"["text"]"#, "nope"] {
        let (r, out) = card(&mut h, None, chunks, json!({}));
        assert!(!sent_result(&out, r).success, "{chunks}");
        assert!(sent(&out).is_empty());
    }
    // The Discord descriptor does not list them (the legacy set never does).
    let mut h = Harness::new(test_config());
    let conn = h.connect();
    h.recv(conn, &inbound_line("chan1", "m1", None));
    let (r, out) = lane(
        &mut h,
        Lane::TaskCard {
            chat_id: "chan1".into(),
            reply_to: None,
            chunks: "[]".into(),
            metadata: "{}".into(),
        },
    );
    assert!(
        sent_result(&out, r)
            .error
            .unwrap_or_default()
            .contains("task_card not supported")
    );
    assert!(sent(&out).is_empty());
}

#[test]
fn a_declined_task_card_is_reported_without_a_fallback() {
    let (mut h, conn) = cards();
    let (r, out) = card(&mut h, Some("1700.0001"), "[]", json!({}));
    let out = answer(
        &mut h,
        conn,
        &out,
        json!({"success":false,"code":"egress_declined","error":"slack egress declined: target is not an approved destination for this connection"}),
    );
    let res = sent_result(&out, r);
    assert!(res.declined);
    assert!(
        res.raw.contains("egress_declined"),
        "the raw result is carried"
    );
    assert!(sent(&out).is_empty(), "no fallback frame");
    assert_eq!(warns(&out, "relay task_card DECLINED for C1"), 1);
}
