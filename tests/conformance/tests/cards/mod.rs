//! Plan-mode task cards and the Discord command manifest (WIT 0.2):
//! `AdapterHandle::task_card` / `task_card_stop` (the frame, the card id,
//! op-gating, Slack's `thread_ts`, a decline) and
//! `AdapterConfig::command_manifest` on the recorded `hello` frames.
//!
//! "Nothing was sent" is checked against a later send, as in the lanes
//! module: the socket is ordered, so a frame the refused call had written
//! would be recorded before the later send's.

use super::*;

/// The card ops listed, with the stub's usual ones.
const CARD_OPS: [&str; 5] = ["send", "edit", "typing", "task_card", "task_card_stop"];

/// `base` with `supported_ops` = `ops`.
fn listing(mut base: Value, ops: &[&str]) -> Value {
    base["supported_ops"] = json!(ops);
    base
}

/// A ready Discord world (bot `B1`) whose descriptor is `descriptor`, past
/// one accepted guild message in `chan1` (route: scope `guildA`, user `u1`).
async fn discord_world(descriptor: Value) -> World {
    let stub = StubConfig::default().with_descriptor("discord", descriptor);
    let mut w = world_with(stub, |_| {}).await;
    w.state(State::Ready).await;
    w.inbound_accepted(events::discord_text("route")).await;
    w
}

/// The steps of a card, as the connector renders them.
fn steps() -> Vec<Value> {
    vec![
        json!({"text": "read the logs", "status": "done"}),
        json!({"text": "fix the flaky test", "status": "in_progress"}),
    ]
}

impl World {
    /// The `action` objects of the outbound frames recorded so far.
    fn card_actions(&self) -> Vec<Value> {
        self.stub
            .frames_of_type("outbound")
            .into_iter()
            .filter_map(|f| f.json)
            .map(|f| f["action"].clone())
            .collect()
    }

    /// Sends `text` into `chat` and waits for its frame; returns every
    /// action recorded up to it.
    async fn card_sentinel(&self, chat: &str, text: &str) -> Vec<Value> {
        let r = self.send(chat, text, json!({})).await;
        assert!(r.success, "{r:?}");
        self.frame(|f| {
            f.json
                .as_ref()
                .is_some_and(|j| j["action"]["content"] == text)
        })
        .await;
        self.card_actions()
    }

    /// The next frame with `action.op` = `op` at or after `after` (a
    /// [`StubConnector::frame_count`] taken before the call).
    async fn op_frame_after(&self, after: usize, op: &str) -> Value {
        self.stub
            .wait_for_frame_after(after, |f| f.op() == Some(op), WAIT)
            .await
            .expect("the frame arrives")
            .json
            .expect("json")
    }

    /// The recorded `hello` frames, in order.
    fn hellos(&self) -> Vec<Value> {
        self.stub
            .frames_of_type("hello")
            .into_iter()
            .filter_map(|f| f.json)
            .collect()
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

/// The `card_id`s of the `op` actions in `actions`.
fn card_ids(actions: &[Value], op: &str) -> Vec<Value> {
    actions
        .iter()
        .filter(|a| a["op"] == op)
        .map(|a| a["card_id"].clone())
        .collect()
}

// ---------------------------------------------------------------------------
// Task cards

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_card_frames_carry_the_turns_card_id_and_the_chunks() {
    let w = discord_world(listing(descriptors::discord(), &CARD_OPS)).await;
    let guild = json!({"scope_id": "guildA", "user_id": "u1"});

    let at = w.stub.frame_count();
    let r = within(
        w.handle
            .task_card("chan1", Some("m-7".into()), steps(), Map::new()),
    )
    .await;
    assert!(r.success, "{r:?}");
    let frame = w.op_frame_after(at, "task_card").await;
    assert_eq!(frame["platform"], "discord");
    assert_eq!(frame["botId"], "B1");
    // Exactly these fields: a Discord card gets no `thread_ts`.
    assert_eq!(
        frame["action"],
        json!({"op": "task_card", "chat_id": "chan1", "card_id": "turn:m-7",
               "chunks": steps(), "metadata": guild})
    );

    // No reply-to: the metadata's anchors in order, else `root`.
    let anchors = [
        (json!({}), "turn:root"),
        (json!({"thread_id": "th-1"}), "turn:th-1"),
        (
            json!({"thread_id": "th-1", "thread_ts": "1700.5"}),
            "turn:1700.5",
        ),
        (
            json!({"thread_ts": "1700.5", "reply_to_message_id": "m-3"}),
            "turn:m-3",
        ),
        (
            json!({"reply_to_message_id": "m-3", "message_id": "m-2"}),
            "turn:m-2",
        ),
    ];
    for (metadata, _) in &anchors {
        let r = within(
            w.handle
                .task_card("chan1", None, steps(), meta(metadata.clone())),
        )
        .await;
        assert!(r.success, "{metadata}: {r:?}");
    }
    // An empty reply-to is no anchor; a given one beats the metadata's.
    let r = within(
        w.handle
            .task_card("chan1", Some(String::new()), steps(), Map::new()),
    )
    .await;
    assert!(r.success, "{r:?}");
    let r = within(w.handle.task_card(
        "chan1",
        Some("m-9".into()),
        steps(),
        meta(json!({"message_id": "m-2"})),
    ))
    .await;
    assert!(r.success, "{r:?}");
    let actions = w.card_sentinel("chan1", "after the cards").await;
    let mut expected: Vec<Value> = vec![json!("turn:m-7")];
    expected.extend(anchors.iter().map(|(_, id)| json!(id)));
    expected.extend([json!("turn:root"), json!("turn:m-9")]);
    assert_eq!(card_ids(&actions, "task_card"), expected);

    // The stop: the same turn's card id, no chunks.
    let at = w.stub.frame_count();
    let r = within(
        w.handle
            .task_card_stop("chan1", Some("m-7".into()), Map::new()),
    )
    .await;
    assert!(r.success, "{r:?}");
    let frame = w.op_frame_after(at, "task_card_stop").await;
    assert_eq!(
        frame["action"],
        json!({"op": "task_card_stop", "chat_id": "chan1", "card_id": "turn:m-7",
               "metadata": guild})
    );
    let r = within(w.handle.task_card_stop("chan1", None, Map::new())).await;
    assert!(r.success, "{r:?}");
    let actions = w.card_sentinel("chan1", "after the stops").await;
    assert_eq!(
        card_ids(&actions, "task_card_stop"),
        vec![json!("turn:m-7"), json!("turn:root")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_cards_are_sent_only_when_the_descriptor_lists_the_op() {
    // The stub's Discord descriptor lists neither card op.
    let w = discord_world(descriptors::discord()).await;
    let r = within(
        w.handle
            .task_card("chan1", Some("m-1".into()), steps(), Map::new()),
    )
    .await;
    refused(&r, "relay op task_card not supported by the connector");
    let r = within(
        w.handle
            .task_card_stop("chan1", Some("m-1".into()), Map::new()),
    )
    .await;
    refused(&r, "relay op task_card_stop not supported by the connector");
    let actions = w.card_sentinel("chan1", "after the refused cards").await;
    assert!(
        actions.iter().all(|a| a["op"] == "send"),
        "nothing but the sentinel: {actions:?}"
    );

    // A legacy descriptor (no `supported_ops`): the legacy op set does not
    // cover the cards.
    let w = discord_world(descriptors::minimal("discord")).await;
    assert!(
        !within(w.handle.supports_op(Some("chan1"), "task_card"))
            .await
            .expect("query")
    );
    let r = within(
        w.handle
            .task_card("chan1", Some("m-1".into()), steps(), Map::new()),
    )
    .await;
    refused(&r, "relay op task_card not supported by the connector");
    let actions = w.card_sentinel("chan1", "after the legacy refusal").await;
    assert!(actions.iter().all(|a| a["op"] == "send"), "{actions:?}");

    // Each op on its own: `task_card` listed, `task_card_stop` not.
    let w = discord_world(listing(
        descriptors::discord(),
        &["send", "edit", "typing", "task_card"],
    ))
    .await;
    let r = within(
        w.handle
            .task_card("chan1", Some("m-1".into()), steps(), Map::new()),
    )
    .await;
    assert!(r.success, "{r:?}");
    let r = within(
        w.handle
            .task_card_stop("chan1", Some("m-1".into()), Map::new()),
    )
    .await;
    refused(&r, "relay op task_card_stop not supported by the connector");
    // Chunks that are not objects, and an empty chat: refused too.
    let r = within(
        w.handle
            .task_card("chan1", None, vec![json!("a step")], Map::new()),
    )
    .await;
    refused(
        &r,
        "relay task_card not sent: chunks must be a JSON array of objects",
    );
    let r = within(w.handle.task_card("", None, steps(), Map::new())).await;
    refused(&r, "relay task_card not sent: no chat");
    let actions = w.card_sentinel("chan1", "after the partial listing").await;
    let ops: Vec<&Value> = actions.iter().map(|a| &a["op"]).collect();
    assert_eq!(ops, vec!["task_card", "send"], "{actions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_card_threads_on_the_reply_to_by_default() {
    let stub =
        StubConfig::default().with_descriptor("slack", listing(descriptors::slack(), &CARD_OPS));
    let mut w = world_with(stub, |c| c.identities = vec![Identity::new("slack", "S1")]).await;
    w.state(State::Ready).await;

    // Not yet learned as a Slack chat: no `thread_ts` is added.
    let at = w.stub.frame_count();
    let r = within(
        w.handle
            .task_card("D1", Some("1700.0001".into()), steps(), Map::new()),
    )
    .await;
    assert!(r.success, "{r:?}");
    let frame = w.op_frame_after(at, "task_card").await;
    assert_eq!(frame["action"]["card_id"], "turn:1700.0001");
    assert_eq!(
        frame["action"]["metadata"].get("thread_ts"),
        None,
        "{frame}"
    );

    // Learned from its inbound: the card threads on the reply-to id.
    w.inbound_accepted(events::dm("slack", "D1", "U1", "plan it"))
        .await;
    let at = w.stub.frame_count();
    let r = within(
        w.handle
            .task_card("D1", Some("1700.0002".into()), steps(), Map::new()),
    )
    .await;
    assert!(r.success, "{r:?}");
    let frame = w.op_frame_after(at, "task_card").await;
    assert_eq!(frame["platform"], "slack");
    let action = &frame["action"];
    assert_eq!(action["card_id"], "turn:1700.0002");
    assert_eq!(action["metadata"]["thread_ts"], "1700.0002", "{frame}");
    assert_eq!(action["metadata"]["user_id"], "U1", "route re-attached");

    // The caller's own `thread_ts` is kept (it does not key the card: the
    // reply-to does).
    let at = w.stub.frame_count();
    let r = within(w.handle.task_card(
        "D1",
        Some("1700.0003".into()),
        steps(),
        meta(json!({"thread_ts": "1699.0000"})),
    ))
    .await;
    assert!(r.success, "{r:?}");
    let frame = w.op_frame_after(at, "task_card").await;
    assert_eq!(frame["action"]["card_id"], "turn:1700.0003");
    assert_eq!(frame["action"]["metadata"]["thread_ts"], "1699.0000");

    // No reply-to: nothing to thread on.
    let at = w.stub.frame_count();
    let r = within(w.handle.task_card("D1", None, steps(), Map::new())).await;
    assert!(r.success, "{r:?}");
    let frame = w.op_frame_after(at, "task_card").await;
    assert_eq!(frame["action"]["card_id"], "turn:root");
    assert_eq!(
        frame["action"]["metadata"].get("thread_ts"),
        None,
        "{frame}"
    );

    // The stop threads the same way.
    let at = w.stub.frame_count();
    let r = within(
        w.handle
            .task_card_stop("D1", Some("1700.0002".into()), Map::new()),
    )
    .await;
    assert!(r.success, "{r:?}");
    let frame = w.op_frame_after(at, "task_card_stop").await;
    assert_eq!(frame["action"]["card_id"], "turn:1700.0002");
    assert_eq!(frame["action"]["metadata"]["thread_ts"], "1700.0002");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_is_reported_declined_and_nothing_replaces_it() {
    let w = discord_world(listing(descriptors::discord(), &CARD_OPS)).await;
    w.stub
        .queue_outbound_reply(Some("task_card"), OutboundReply::EgressDeclined);
    let r = within(
        w.handle
            .task_card("chan1", Some("m-1".into()), steps(), Map::new()),
    )
    .await;
    assert!(!r.success && r.declined, "{r:?}");
    assert!(!r.ambiguous, "{r:?}");
    assert!(
        r.error.as_deref().is_some_and(|e| !e.is_empty()),
        "the decline's text: {r:?}"
    );
    w.stub
        .queue_outbound_reply(Some("task_card_stop"), OutboundReply::EgressDeclined);
    let r = within(
        w.handle
            .task_card_stop("chan1", Some("m-1".into()), Map::new()),
    )
    .await;
    assert!(!r.success && r.declined && !r.ambiguous, "{r:?}");
    // One frame each, never retried, no text fallback.
    let actions = w.card_sentinel("chan1", "after the declines").await;
    let ops: Vec<&Value> = actions.iter().map(|a| &a["op"]).collect();
    assert_eq!(
        ops,
        vec!["task_card", "task_card_stop", "send"],
        "{actions:?}"
    );
}

// ---------------------------------------------------------------------------
// The command manifest

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_manifest_goes_validated_on_the_discord_hello_only() {
    let stub = StubConfig::default()
        .with_descriptor("telegram", descriptors::telegram())
        .with_replay_after_hellos(2);
    // 60 emoji are 120 UTF-16 units (60 chars, 240 bytes): cut to 50.
    let long = "😀".repeat(60);
    let mut w = world_with(stub, |c| {
        c.identities = vec![Identity::new("discord", "B1"), Identity::new("telegram", "")];
        c.command_manifest = vec![
            json!({"name": "ask", "description": long}),
            json!({"name": "Not Valid", "description": "dropped: the name"}),
            json!({"name": "nodesc"}),
            json!("not an object"),
            json!({"name": "reset", "description": "  Start over  ", "options": [
                {"type": 5, "name": "hard", "description": "Forget everything", "required": false}]}),
            json!({"name": "ask", "description": "dropped: a duplicate"}),
        ];
    })
    .await;
    w.state(State::Ready).await;
    w.handshakes(1).await;
    let hellos = w.hellos();
    assert_eq!(hellos.len(), 2, "{hellos:?}");
    assert_eq!(hellos[0]["platform"], "discord");
    assert_eq!(
        hellos[0]["command_manifest"],
        json!([
            {"name": "ask", "description": "😀".repeat(50)},
            {"name": "reset", "description": "Start over", "options": [
                {"type": 5, "name": "hard", "description": "Forget everything", "required": false}]},
        ])
    );
    // A non-Discord hello carries none.
    assert_eq!(
        hellos[1],
        json!({"type": "hello", "platform": "telegram", "botId": ""})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_of_only_bad_entries_still_completes_the_handshake() {
    let mut w = world_with(StubConfig::default(), |c| {
        c.command_manifest = vec![
            json!({"name": "UPPER", "description": "x"}),
            json!({"description": "no name"}),
            json!(7),
        ];
    })
    .await;
    w.state(State::Ready).await;
    // Nothing valid: the hello goes without a manifest.
    assert_eq!(
        w.hellos(),
        vec![json!({"type": "hello", "platform": "discord", "botId": "B1"})]
    );
    // And the adapter works.
    w.inbound_accepted(events::discord_text("still here")).await;
    assert!(w.send("chan1", "yes", json!({})).await.success);
}
