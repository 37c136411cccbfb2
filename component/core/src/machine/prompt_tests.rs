//! Interactive prompts on a fake clock (spec §6.11, §7.6): minting, the
//! gated frame, declines, and the consumption of answers.

use super::tests::{
    Harness, acks, actions, completion, deliveries, forward_line, result_line, sent_result,
    test_config,
};
use super::*;
use serde_json::json;

const PROMPTING: &str = r#"{"contract_version":1,"platform":"discord","label":"Discord","max_message_length":2000,"supports_draft_streaming":false,"supports_edit":true,"supports_threads":true,"markdown_dialect":"discord","len_unit":"chars","supported_ops":["send","prompt","react"]}"#;

fn request_ids(outputs: &[Output]) -> Vec<String> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::SendText { text, .. } => serde_json::from_str::<Value>(text).ok(),
            _ => None,
        })
        .filter_map(|f| f["requestId"].as_str().map(str::to_owned))
        .collect()
}

fn answers(outputs: &[Output]) -> Vec<PromptAnswer> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::PromptAnswer(a) => Some((**a).clone()),
            _ => None,
        })
        .collect()
}

/// A Discord gateway whose connector advertises `prompt`, nonce `3fa9c1`,
/// with the chat `chan1` known.
fn prompting() -> (Harness, u32) {
    let mut cfg = test_config();
    cfg.prompt_nonce = "3fa9c1".into();
    let mut h = Harness::new(cfg);
    let conn = h.open();
    h.recv(
        conn,
        &format!(r#"{{"type":"descriptor","descriptor":{PROMPTING}}}"#),
    );
    h.recv(conn, r#"{"type":"inbound","event":{"text":"hi","message_id":"m1","source":{"platform":"discord","chat_id":"chan1","scope_id":"g1","user_id":"u1","thread_id":"th9"}}}"#);
    (h, conn)
}

fn mint(h: &mut Harness, chat: &str, kind: &str) -> String {
    let now = Now::at_ms(h.now_ms);
    h.m.mint_prompt(now, chat, kind)
}

fn prompt(id: &str, chat: &str, options: &[&str]) -> PromptSend {
    PromptSend {
        prompt_id: id.into(),
        chat_id: chat.into(),
        question: "❓ Which environment?".into(),
        options: options
            .iter()
            .map(|o| PromptOption {
                id: (*o).into(),
                label: format!("label {o}"),
                style: (*o == "deny").then(|| "danger".to_owned()),
            })
            .collect(),
        choices: vec!["staging".into(), "production".into()],
        reply_to: None,
        metadata: "{}".into(),
        timeout_s: Some(300),
        prompt_kind: "clarify".into(),
    }
}

fn press(h: &mut Harness, conn: u32, id: &str, option: &str, buffer: Option<&str>) -> Vec<Output> {
    let mut v = json!({"type":"inbound","event":{"text":format!("/{option}"),"message_id":format!("press-{id}-{option}"),
        "source":{"platform":"discord","chat_id":"chan1","user_id":"u7","thread_id":"th9"},
        "prompt_response":{"prompt_id":id,"option_id":option,"prompt_message_id":"pm1"}}});
    if let Some(b) = buffer {
        v["bufferId"] = json!(b);
    }
    h.recv(conn, &v.to_string())
}

#[test]
fn minted_ids_carry_the_nonce_and_fit_a_callback() {
    let (mut h, _) = prompting();
    let id = mint(&mut h, "chan1", "approval");
    let (nonce, suffix) = id.split_once('.').expect("a dot");
    assert_eq!(nonce, "3fa9c1");
    assert_eq!(suffix.len(), 8);
    assert!(valid_prompt_part(&id));
    assert!(format!("hp1:{id}:session").len() <= 64);
    assert_ne!(mint(&mut h, "chan1", "approval"), id);

    let mut cfg = test_config();
    cfg.prompt_nonce = "XYZ".into();
    assert_eq!(Machine::new(cfg, 1).err(), Some(ConfigError::PromptNonce));
    // None given: one is drawn.
    let mut h = Harness::new(test_config());
    let id = mint(&mut h, "c", "k");
    assert!(valid_nonce(
        id.split_once('.').map(|(n, _)| n).unwrap_or("")
    ));
}

#[test]
fn a_minted_prompt_goes_out_as_one_gated_frame() {
    let (mut h, conn) = prompting();
    let id = mint(&mut h, "chan1", "clarify");
    let p = prompt(&id, "chan1", &["c0", "c1", "deny"]);
    let (r, out) = h.command(Command::Lane(&Lane::Prompt(p)));
    assert_eq!(
        actions(&out),
        vec![
            json!({"op":"prompt","chat_id":"chan1","content":"❓ Which environment?",
            "prompt_kind":"clarify","prompt_id":id,
            "options":[{"id":"c0","label":"label c0"},{"id":"c1","label":"label c1"},
                {"id":"deny","label":"label deny","style":"danger"}],
            "reply_to":null,"metadata":{"scope_id":"g1","user_id":"u1"},"timeout_s":300})
        ]
    );
    let rid = request_ids(&out).remove(0);
    let out = h.recv(
        conn,
        &result_line(&rid, json!({"success":true,"message_id":"pm1"})),
    );
    assert!(sent_result(&out, r).success);
}

#[test]
fn an_unusable_prompt_is_refused_locally_and_forgotten() {
    let mut h = Harness::new(test_config());
    h.connect();
    // The Discord descriptor here does not list `prompt`.
    let id = mint(&mut h, "chan1", "approval");
    let (r, out) = h.command(Command::Lane(&Lane::Prompt(prompt(
        &id,
        "chan1",
        &["once"],
    ))));
    assert_eq!(
        sent_result(&out, r).error.as_deref(),
        Some("relay prompt op unavailable")
    );
    assert!(actions(&out).is_empty());

    let (mut h, _) = prompting();
    // Never minted, minted for another chat, bad option ids.
    let other = mint(&mut h, "elsewhere", "approval");
    let ours = mint(&mut h, "chan1", "approval");
    for p in [
        prompt("3fa9c1.deadbeef", "chan1", &["once"]),
        prompt(&other, "chan1", &["once"]),
        prompt(&ours, "chan1", &["bad id"]),
        prompt(&ours, "chan1", &["once"]),
    ] {
        let (r, out) = h.command(Command::Lane(&Lane::Prompt(p)));
        assert!(!sent_result(&out, r).success);
        assert!(actions(&out).is_empty());
    }
}

#[test]
fn a_declined_prompt_is_forgotten_and_a_press_on_it_gets_the_notice() {
    let (mut h, conn) = prompting();
    let id = mint(&mut h, "chan1", "approval");
    let (r, out) = h.command(Command::Lane(&Lane::Prompt(prompt(
        &id,
        "chan1",
        &["once"],
    ))));
    let rid = request_ids(&out).remove(0);
    let out = h.recv(
        conn,
        &result_line(&rid, json!({"success":false,"code":"egress_declined","error":"discord egress declined: target is not an approved destination for this connection"})),
    );
    assert!(sent_result(&out, r).declined);
    let out = press(&mut h, conn, &id, "once", None);
    assert!(answers(&out).is_empty());
    assert_eq!(actions(&out)[0]["content"], NO_LONGER_WAITING);
}

#[test]
fn one_answer_wins_and_is_never_delivered_as_chat() {
    let (mut h, conn) = prompting();
    let id = mint(&mut h, "chan1", "approval");
    let out = press(&mut h, conn, &id, "session", Some("buf-1"));
    let a = answers(&out);
    assert_eq!(a.len(), 1);
    assert_eq!(
        (
            a[0].prompt_id.as_str(),
            a[0].kind.as_str(),
            a[0].option_id.as_str(),
            a[0].chat_id.as_str()
        ),
        (id.as_str(), "approval", "session", "chan1")
    );
    assert_eq!(a[0].user_id.as_deref(), Some("u7"));
    assert_eq!(a[0].prompt_message_id.as_deref(), Some("pm1"));
    assert!(deliveries(&out).is_empty());
    assert_eq!(acks(&out), vec!["buf-1"], "consumed: admitted at once");
    assert!(actions(&out).is_empty(), "the ack text is the gateway's");
    // A second press: nothing at all.
    let out = press(&mut h, conn, &id, "deny", None);
    assert!(answers(&out).is_empty() && actions(&out).is_empty() && deliveries(&out).is_empty());
    // The buffered replay of the first press: acked again, nothing else.
    let out = press(&mut h, conn, &id, "session", Some("buf-1"));
    assert!(answers(&out).is_empty());
    assert_eq!(acks(&out), vec!["buf-1"]);
}

#[test]
fn other_instances_answers_are_ignored_and_expired_ones_get_a_notice() {
    let (mut h, conn) = prompting();
    let out = press(&mut h, conn, "a1b2c3.0b7e44d2", "once", None);
    assert!(answers(&out).is_empty() && actions(&out).is_empty() && deliveries(&out).is_empty());

    let id = mint(&mut h, "chan1", "approval");
    h.advance(PROMPT_TTL_MS);
    let out = press(&mut h, conn, &id, "once", None);
    assert!(answers(&out).is_empty());
    let a = actions(&out);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0]["content"], NO_LONGER_WAITING);
    assert_eq!(
        a[0]["metadata"]["thread_id"], "th9",
        "the thread placement only"
    );
    // The notice is fire-and-forget: its result completes nobody.
    let rid = request_ids(&out).remove(0);
    let out = h.recv(conn, &result_line(&rid, json!({"success":true})));
    assert!(!out.iter().any(|o| matches!(o, Output::Complete { .. })));
    // A legacy id without a nonce counts as ours: the notice too.
    let out = press(&mut h, conn, "legacy123", "once", None);
    assert_eq!(actions(&out)[0]["content"], NO_LONGER_WAITING);
}

#[test]
fn clarify_answers_carry_the_choice_or_ask_for_text() {
    let (mut h, conn) = prompting();
    let id = mint(&mut h, "chan1", "clarify");
    let (r, out) = h.command(Command::Lane(&Lane::Prompt(prompt(
        &id,
        "chan1",
        &["c0", "c1", "other"],
    ))));
    assert!(completion(&out, r).is_none());
    let out = press(&mut h, conn, &id, "c1", None);
    let a = answers(&out);
    assert_eq!(a[0].choice.as_deref(), Some("production"));
    assert!(!a[0].text_capture);

    let id = mint(&mut h, "chan1", "clarify");
    h.command(Command::Lane(&Lane::Prompt(prompt(
        &id,
        "chan1",
        &["c0", "other"],
    ))));
    let a = answers(&press(&mut h, conn, &id, "other", None));
    assert!(a[0].text_capture && a[0].choice.is_none());
}

#[test]
fn a_discord_button_token_answers_a_prompt() {
    let (mut h, conn) = prompting();
    let id = mint(&mut h, "c1", "approval");
    let body = format!(
        r#"{{"type":3,"id":"i9","channel_id":"c1","guild_id":"g1","message":{{"id":"pm55"}},"data":{{"custom_id":"hp1:{id}:deny"}},"member":{{"user":{{"id":"u1"}}}}}}"#
    );
    let out = h.recv(
        conn,
        &forward_line("discord", body.as_bytes(), Some("pb-1")),
    );
    let a = answers(&out);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].option_id, "deny");
    assert_eq!(a[0].prompt_message_id.as_deref(), Some("pm55"));
    assert!(deliveries(&out).is_empty());
    assert_eq!(acks(&out), vec!["pb-1"]);
}
