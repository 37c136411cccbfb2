//! Native drafts, the egress knobs and interactive prompts (WIT 0.2):
//! `AdapterHandle::send_draft` / `abandon_open_draft` and the sealing send,
//! `supports_draft_streaming` / `prefers_fresh_final`,
//! `AdapterConfig::platform_extra` (format hints, unfurl knobs),
//! `mint_prompt` / `prompt` and `Event::PromptAnswer`.
//!
//! "Nothing was sent" is checked against a later send, as in the lanes
//! module: the socket is ordered, so a frame the refused call had written
//! would be recorded before the later send's.

use super::*;
use relay_host::{PromptAnswer, PromptOption, PromptRequest};

/// The stub's Slack descriptor with native drafts (`supports_draft_streaming`
/// and `draft` listed) and `prompt`.
fn slack_drafting() -> Value {
    let mut d = descriptors::slack();
    d["supports_draft_streaming"] = json!(true);
    d["supported_ops"] = json!(["send", "edit", "typing", "draft", "prompt", "delete"]);
    d
}

/// A ready world fronting only Slack (bot `S1`) with `descriptor` and the
/// egress knobs `extra`, past one accepted DM in `D1` from `U1`.
async fn slack_world(descriptor: Value, extra: Value) -> World {
    let stub = StubConfig::default().with_descriptor("slack", descriptor);
    let mut w = world_with(stub, |c| {
        c.identities = vec![Identity::new("slack", "S1")];
        c.platform_extra = extra.as_object().cloned().unwrap_or_default();
    })
    .await;
    w.state(State::Ready).await;
    w.inbound_accepted(events::dm("slack", "D1", "U1", "hi"))
        .await;
    w
}

/// The turn metadata: `message_id` keys the draft stream.
fn turn(id: &str) -> Map<String, Value> {
    meta(json!({ "message_id": id }))
}

impl World {
    /// The `action` objects of the outbound frames recorded so far.
    fn outbound_actions(&self) -> Vec<Value> {
        self.stub
            .frames_of_type("outbound")
            .into_iter()
            .filter_map(|f| f.json)
            .map(|f| f["action"].clone())
            .collect()
    }

    /// Sends `text` into `chat` as its own turn and waits for its frame;
    /// returns every action recorded up to it.
    async fn sentinel_in(&self, chat: &str, text: &str) -> Vec<Value> {
        let r = self.send(chat, text, json!({"message_id": text})).await;
        assert!(r.success, "{r:?}");
        self.frame(|f| {
            f.json
                .as_ref()
                .is_some_and(|j| j["action"]["content"] == text)
        })
        .await;
        self.outbound_actions()
    }

    /// The events up to the message whose text is `text` (accepted): every
    /// prompt answer on the way, and the texts of any other message.
    async fn answers_until(&mut self, text: &str) -> (Vec<PromptAnswer>, Vec<String>) {
        let mut answers = Vec::new();
        let mut others = Vec::new();
        loop {
            let found = self
                .expect(&format!("the message {text:?}"), |e| match e {
                    Event::PromptAnswer(a) => Some(Err(a)),
                    Event::Message(m) => Some(Ok(m)),
                    _ => None,
                })
                .await;
            match found {
                Err(answer) => answers.push(answer),
                Ok(m) if m.text == text => {
                    m.accept();
                    return (answers, others);
                }
                Ok(m) => {
                    others.push(m.text.clone());
                    m.accept();
                }
            }
        }
    }
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.expect("resolves")
}

/// A definite local refusal: a failure, not ambiguous, not a decline.
#[track_caller]
fn refused(r: &SendResult, error: &str) {
    assert!(!r.success, "{r:?}");
    assert!(!r.ambiguous && !r.declined, "{r:?}");
    assert_eq!(r.error.as_deref(), Some(error), "{r:?}");
}

/// Of `actions`, the `draft` frames as (draft_id, final, content).
fn drafts(actions: &[Value]) -> Vec<(Value, Value, Value)> {
    actions
        .iter()
        .filter(|a| a["op"] == "draft")
        .map(|a| {
            (
                a["draft_id"].clone(),
                a["final"].clone(),
                a["content"].clone(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Drafts

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_drafts_stream_and_the_turns_final_send_seals_them() {
    let w = slack_world(slack_drafting(), Value::Null).await;
    assert!(
        within(w.handle.supports_draft_streaming("D1"))
            .await
            .expect("query")
    );

    for text in ["Looking…", "Looking… found it"] {
        let r = within(w.handle.send_draft("D1", 7, text, turn("m.1"))).await;
        assert!(r.success, "{r:?}");
    }
    // The turn's final send goes out as the sealing draft frame.
    let sealed = w
        .send("D1", "Found it: 42", json!({"message_id": "m.1"}))
        .await;
    assert!(sealed.success, "{sealed:?}");
    let seal = w
        .frame(|f| {
            f.op() == Some("draft")
                && f.json
                    .as_ref()
                    .is_some_and(|j| j["action"]["final"] == true)
        })
        .await;
    let frame = seal.json.expect("json");
    assert_eq!(frame["platform"], "slack");
    assert_eq!(frame["action"]["chat_id"], "D1");
    assert_eq!(frame["action"]["metadata"]["message_id"], "m.1");
    assert!(sealed.message_id.is_some(), "the seal's result: {sealed:?}");

    // A straggler after the seal: success, nothing on the wire.
    let late = within(w.handle.send_draft("D1", 7, "late", turn("m.1"))).await;
    assert!(late.success, "{late:?}");
    let actions = w.sentinel_in("D1", "next turn").await;
    assert_eq!(
        drafts(&actions),
        vec![
            (json!(7), json!(false), json!("Looking…")),
            (json!(7), json!(false), json!("Looking… found it")),
            (json!(7), json!(true), json!("Found it: 42")),
        ]
    );
    let sends: Vec<&Value> = actions
        .iter()
        .filter(|a| a["op"] == "send")
        .map(|a| &a["content"])
        .collect();
    assert_eq!(
        sends,
        vec!["next turn"],
        "the final was not also sent plainly"
    );
    // No knob set: no format hints.
    assert!(
        actions
            .iter()
            .all(|a| a["metadata"].get("format_hints").is_none()),
        "{actions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_seal_is_never_sent_as_a_plain_send() {
    let w = slack_world(slack_drafting(), Value::Null).await;
    let r = within(w.handle.send_draft("D1", 8, "partial", turn("m.2"))).await;
    assert!(r.success, "{r:?}");
    w.stub
        .queue_outbound_reply(Some("draft"), OutboundReply::EgressDeclined);
    let sealed = w
        .send("D1", "the final", json!({"message_id": "m.2"}))
        .await;
    assert!(!sealed.success && sealed.declined, "{sealed:?}");
    assert!(!sealed.ambiguous, "{sealed:?}");

    let actions = w.sentinel_in("D1", "after the decline").await;
    assert_eq!(
        drafts(&actions),
        vec![
            (json!(8), json!(false), json!("partial")),
            (json!(8), json!(true), json!("the final")),
        ]
    );
    assert!(
        actions
            .iter()
            .all(|a| !(a["op"] == "send" && a["content"] == "the final")),
        "no fallback send after a decline: {actions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandon_open_draft_seals_the_chats_stream_in_place() {
    let w = slack_world(slack_drafting(), Value::Null).await;
    // No stream open: a failure, nothing sent.
    let r = within(w.handle.abandon_open_draft("D1", "⏹ Stopped.")).await;
    assert!(!r.success && !r.ambiguous, "{r:?}");

    let r = within(w.handle.send_draft("D1", 9, "working", turn("m.3"))).await;
    assert!(r.success, "{r:?}");
    let r = within(w.handle.abandon_open_draft("D1", "⏹ Stopped.")).await;
    assert!(r.success, "{r:?}");
    let actions = w.sentinel_in("D1", "after the stop").await;
    assert_eq!(
        drafts(&actions),
        vec![
            (json!(9), json!(false), json!("working")),
            (json!(9), json!(true), json!("⏹ Stopped.")),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draft_support_follows_the_descriptor_and_the_unfurl_knobs() {
    // Discord's stub descriptor has no native drafts: refused, no frame.
    let mut w = ready_world().await;
    w.inbound_accepted(events::discord_text("route")).await;
    assert!(
        !within(w.handle.supports_draft_streaming("chan1"))
            .await
            .expect("query")
    );
    let r = within(w.handle.send_draft("chan1", 1, "x", turn("t1"))).await;
    refused(&r, "relay draft streaming not implemented for this chat");
    let actions = w.sentinel_in("chan1", "after the refused draft").await;
    assert!(actions.iter().all(|a| a["op"] != "draft"), "{actions:?}");

    // Slack without `draft` listed: the flag alone is not enough.
    let mut flag_only = slack_drafting();
    flag_only["supported_ops"] = json!(["send", "edit"]);
    let w = slack_world(flag_only, Value::Null).await;
    assert!(
        !within(w.handle.supports_draft_streaming("D1"))
            .await
            .expect("query")
    );

    // An explicit unfurl knob turns native drafts off for Slack.
    let w = slack_world(slack_drafting(), json!({"slack": {"unfurl_links": false}})).await;
    assert!(
        !within(w.handle.supports_draft_streaming("D1"))
            .await
            .expect("query")
    );
    assert!(
        !within(
            w.handle
                .prefers_fresh_final("D1", "see https://example.com")
        )
        .await
        .expect("query"),
        "unfurling off: no need for a fresh final"
    );
    let r = within(w.handle.send_draft("D1", 1, "x", turn("t1"))).await;
    refused(&r, "relay draft streaming not implemented for this chat");
    let sent = w.send("D1", "plain", json!({})).await;
    assert!(sent.success, "{sent:?}");
    let f = w.frame(|f| f.op() == Some("send")).await;
    assert_eq!(
        f.json.expect("json")["action"]["metadata"]["unfurl_links"],
        false,
        "the explicit knob is stamped"
    );

    // Unfurling on: a final with a link prefers a fresh send.
    let w = slack_world(slack_drafting(), json!({"slack": {"unfurl_links": true}})).await;
    let handle = &w.handle;
    assert!(
        within(handle.prefers_fresh_final("D1", "see https://example.com"))
            .await
            .expect("query")
    );
    assert!(
        !within(handle.prefers_fresh_final("D1", "no link here"))
            .await
            .expect("query")
    );
    // Without the knob, never.
    let w = slack_world(slack_drafting(), Value::Null).await;
    assert!(
        !within(
            w.handle
                .prefers_fresh_final("D1", "see https://example.com")
        )
        .await
        .expect("query")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rich_blocks_become_format_hints_where_the_descriptor_formats_blocks() {
    let w = slack_world(slack_drafting(), json!({"slack": {"rich_blocks": true}})).await;
    let r = within(w.handle.send_draft("D1", 3, "draft", turn("m.4"))).await;
    assert!(r.success, "{r:?}");
    assert!(
        w.send("D1", "plain", json!({"message_id": "other"}))
            .await
            .success
    );
    let actions = w.sentinel_in("D1", "sentinel").await;
    let hinted: Vec<(&Value, &Value)> = actions
        .iter()
        .map(|a| (&a["op"], &a["metadata"]["format_hints"]))
        .collect();
    let hint = json!({"rich_blocks": true});
    assert_eq!(
        hinted,
        vec![
            (&json!("draft"), &hint),
            (&json!("send"), &hint),
            (&json!("send"), &hint)
        ]
    );

    // The same knob where the descriptor does not format blocks: no hints.
    let mut plain = slack_drafting();
    plain["supports_block_formatting"] = json!(false);
    let w = slack_world(plain, json!({"slack": {"rich_blocks": true}})).await;
    let actions = w.sentinel_in("D1", "no blocks").await;
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert!(
        actions[0]["metadata"].get("format_hints").is_none(),
        "{actions:?}"
    );
}

// ---------------------------------------------------------------------------
// Prompts

/// A ready Discord world whose descriptor lists `prompt`, with the prompt
/// nonce `3fa9c1`, past one accepted guild message in `chan1`.
async fn prompt_world() -> World {
    let mut d = descriptors::discord();
    d["supported_ops"] = json!(["send", "edit", "typing", "prompt"]);
    let stub = StubConfig::default().with_descriptor("discord", d);
    let mut w = world_with(stub, |c| c.prompt_nonce = Some("3fa9c1".into())).await;
    w.state(State::Ready).await;
    w.inbound_accepted(events::discord_text("route")).await;
    w
}

/// A button press on `prompt_id` as the connector delivers it.
fn press(prompt_id: &str, option: &str, n: u32) -> Value {
    json!({
        "text": format!("/{option}"), "message_type": "text", "message_id": format!("press-{n}"),
        "source": {"platform": "discord", "chat_id": "chan1", "chat_type": "group",
                   "scope_id": "guildA", "user_id": "u7", "user_name": "ann"},
        "prompt_response": {"prompt_id": prompt_id, "option_id": option, "prompt_message_id": "pm-1"}
    })
}

fn approval(id: &str) -> PromptRequest {
    PromptRequest::new(id, "chan1", "Deploy to production?")
        .with_kind("approval")
        .with_option(PromptOption::new("once", "Approve once").with_style("success"))
        .with_option(PromptOption::new("deny", "Deny").with_style("danger"))
        .with_timeout_s(300)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_goes_out_and_its_first_press_is_the_answer() {
    let mut w = prompt_world().await;
    let id = within(w.handle.mint_prompt("chan1", "approval"))
        .await
        .expect("mint");
    let suffix = id.strip_prefix("3fa9c1.").expect("the configured nonce");
    assert_eq!(suffix.len(), 8, "{id}");
    assert!(suffix.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    let other = within(w.handle.mint_prompt("chan1", "approval"))
        .await
        .expect("mint");
    assert_ne!(other, id, "each mint is a new prompt");

    let r = within(w.handle.prompt(approval(&id))).await;
    assert!(r.success, "{r:?}");
    let f = w.frame(|f| f.op() == Some("prompt")).await;
    let frame = f.json.expect("json");
    assert_eq!(frame["platform"], "discord");
    assert_eq!(
        frame["action"],
        json!({"op": "prompt", "chat_id": "chan1", "content": "Deploy to production?",
               "prompt_kind": "approval", "prompt_id": id,
               "options": [{"id": "once", "label": "Approve once", "style": "success"},
                           {"id": "deny", "label": "Deny", "style": "danger"}],
               "reply_to": null, "metadata": {"scope_id": "guildA", "user_id": "u1"},
               "timeout_s": 300})
    );

    // The press is an answer, never a message; a second press does nothing.
    w.stub
        .push_inbound(press(&id, "once", 1))
        .await
        .expect("push");
    w.stub
        .push_inbound(press(&id, "deny", 2))
        .await
        .expect("push");
    w.stub
        .push_inbound(events::discord_text("sentinel"))
        .await
        .expect("push");
    let (answers, others) = w.answers_until("sentinel").await;
    assert!(
        others.is_empty(),
        "presses delivered as messages: {others:?}"
    );
    assert_eq!(answers.len(), 1, "{answers:?}");
    let a = &answers[0];
    assert_eq!(
        (
            a.prompt_id.as_str(),
            a.kind.as_str(),
            a.option_id.as_str(),
            a.chat_id.as_str()
        ),
        (id.as_str(), "approval", "once", "chan1")
    );
    assert_eq!(a.user_id.as_deref(), Some("u7"));
    assert_eq!(a.prompt_message_id.as_deref(), Some("pm-1"));
    assert_eq!((a.choice.as_deref(), a.text_capture), (None, false));
    let event: Value = serde_json::from_str(&a.event_json).expect("event json");
    assert_eq!(event["prompt_response"]["option_id"], "once", "{event}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clarify_answer_carries_the_choice_text() {
    let mut w = prompt_world().await;
    let id = within(w.handle.mint_prompt("chan1", "clarify"))
        .await
        .expect("mint");
    let request = PromptRequest::new(&id, "chan1", "Which environment?")
        .with_kind("clarify")
        .with_option(PromptOption::new("c0", "staging"))
        .with_option(PromptOption::new("c1", "production"))
        .with_option(PromptOption::new("other", "Other…"))
        .with_choices(["staging (eu-west)", "production (all regions)"]);
    assert!(within(w.handle.prompt(request)).await.success);
    w.stub
        .push_inbound(press(&id, "c1", 3))
        .await
        .expect("push");
    w.stub
        .push_inbound(events::discord_text("sentinel"))
        .await
        .expect("push");
    let (answers, _) = w.answers_until("sentinel").await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].kind, "clarify");
    assert_eq!(
        answers[0].choice.as_deref(),
        Some("production (all regions)")
    );
    assert!(!answers[0].text_capture);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_without_the_op_is_refused_without_a_frame() {
    // The stub's Discord descriptor lists no `prompt`.
    let mut w = ready_world().await;
    w.inbound_accepted(events::discord_text("route")).await;
    let id = within(w.handle.mint_prompt("chan1", "approval"))
        .await
        .expect("mint");
    assert!(id.contains('.'), "a drawn nonce: {id}");
    let r = within(w.handle.prompt(approval(&id))).await;
    refused(&r, "relay prompt op unavailable");
    let actions = w.sentinel_in("chan1", "after the refused prompt").await;
    assert!(actions.iter().all(|a| a["op"] != "prompt"), "{actions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_id_never_minted_or_a_bad_option_sends_nothing() {
    let w = prompt_world().await;
    let r = within(w.handle.prompt(approval("3fa9c1.00000000"))).await;
    assert!(!r.success && !r.ambiguous, "{r:?}");
    let id = within(w.handle.mint_prompt("chan1", "approval"))
        .await
        .expect("mint");
    let bad =
        PromptRequest::new(&id, "chan1", "?").with_option(PromptOption::new("no spaces", "x"));
    let r = within(w.handle.prompt(bad)).await;
    assert!(!r.success && !r.ambiguous, "{r:?}");
    // The refusal forgot the id: the same id is refused now.
    let r = within(w.handle.prompt(approval(&id))).await;
    assert!(!r.success && !r.ambiguous, "{r:?}");
    let actions = w.sentinel_in("chan1", "after the refusals").await;
    assert!(actions.iter().all(|a| a["op"] != "prompt"), "{actions:?}");
}
