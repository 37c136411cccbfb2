//! The typed lanes new in WIT 0.2 (`AdapterHandle::delete_message`,
//! `react`, `processing_start` / `processing_complete`, `create_thread`,
//! `rename_thread`, `auto_thread_info`, `stop_typing`): what each puts on
//! the wire, when it sends nothing, and what it resolves with.
//!
//! "Nothing was sent" is always checked against a later send: the socket is
//! ordered, so a frame the refused lane had written would be recorded
//! before the send's.

use super::*;
use futures_util::FutureExt as _;
use relay_host::{ProcessingOutcome, RenameGuard};

/// Every op the lanes use, listed (the stub's Discord descriptor lists none
/// of them).
const LANE_OPS: [&str; 9] = [
    "send",
    "edit",
    "typing",
    "follow_up",
    "get_chat_info",
    "react",
    "delete",
    "thread_create",
    "thread_rename",
];

/// The stub's Discord descriptor with `supported_ops` = `ops`.
fn discord_listing(ops: &[&str]) -> Value {
    let mut d = descriptors::discord();
    d["supported_ops"] = json!(ops);
    d
}

/// A ready world whose Discord descriptor lists every lane op, past one
/// accepted guild message in `chan1` (its route: scope `guildA`, user `u1`).
async fn lane_world() -> World {
    let stub = StubConfig::default().with_descriptor("discord", discord_listing(&LANE_OPS));
    let mut w = world_with(stub, |_| {}).await;
    w.state(State::Ready).await;
    w.inbound_accepted(events::discord_text("route")).await;
    w
}

impl World {
    /// The `action` objects of the outbound frames recorded so far.
    fn actions(&self) -> Vec<Value> {
        self.stub
            .frames_of_type("outbound")
            .into_iter()
            .filter_map(|f| f.json)
            .map(|f| f["action"].clone())
            .collect()
    }

    /// Sends `text` into `chan1` and waits for its frame; returns the
    /// actions recorded up to it (so a refused lane's frame would show).
    async fn sentinel(&self, text: &str) -> Vec<Value> {
        let r = self.send("chan1", text, json!({})).await;
        assert!(r.success, "{r:?}");
        self.frame(|f| {
            f.json
                .as_ref()
                .is_some_and(|j| j["action"]["content"] == text)
        })
        .await;
        self.actions()
    }
}

/// A definite local refusal: a failure, not ambiguous, not a decline.
#[track_caller]
fn refused(r: &SendResult, error: &str) {
    assert!(!r.success, "{r:?}");
    assert!(!r.ambiguous && !r.declined, "{r:?}");
    assert_eq!(r.error.as_deref(), Some(error), "{r:?}");
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.expect("resolves")
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_is_sent_only_when_the_descriptor_lists_it() {
    // The stub's Discord descriptor lists no `delete`: there is no legacy
    // fallback for it.
    let mut w = ready_world().await;
    w.inbound_accepted(events::discord_text("route")).await;
    let r = within(w.handle.delete_message("chan1", "m-9", Map::new())).await;
    refused(&r, "relay op delete not supported by the connector");
    let actions = w.sentinel("after the refused delete").await;
    assert!(
        actions.iter().all(|a| a["op"] != "delete"),
        "nothing deleted: {actions:?}"
    );

    // Listed after a re-dial: one `delete` frame with the route re-attached.
    w.stub.set_descriptor(
        Some("discord"),
        HelloReply::Descriptor(discord_listing(&LANE_OPS)),
    );
    w.stub.close(1011, "reconfigure").await.expect("close");
    w.state(State::Ready).await;
    let r = within(w.handle.delete_message("chan1", "m-9", Map::new())).await;
    assert!(r.success, "{r:?}");
    let f = w.frame(|f| f.op() == Some("delete")).await;
    let frame = f.json.expect("json");
    assert_eq!(
        frame["action"],
        json!({"op": "delete", "chat_id": "chan1", "message_id": "m-9",
               "metadata": {"scope_id": "guildA", "user_id": "u1"}})
    );
    assert_eq!(frame["platform"], "discord");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn react_frames_always_carry_remove_and_need_the_op() {
    let w = lane_world().await;
    let add = within(w.handle.react("chan1", "m-1", "👀", false, Map::new())).await;
    assert!(add.success, "{add:?}");
    let remove = within(w.handle.react("chan1", "m-1", "👀", true, Map::new())).await;
    assert!(remove.success, "{remove:?}");
    let reacts: Vec<Value> = w
        .actions()
        .into_iter()
        .filter(|a| a["op"] == "react")
        .collect();
    let guild = json!({"scope_id": "guildA", "user_id": "u1"});
    assert_eq!(
        reacts,
        vec![
            json!({"op": "react", "chat_id": "chan1", "message_id": "m-1", "emoji": "👀",
                   "remove": false, "metadata": guild}),
            json!({"op": "react", "chat_id": "chan1", "message_id": "m-1", "emoji": "👀",
                   "remove": true, "metadata": guild}),
        ]
    );

    // An empty emoji is refused before the wire.
    let r = within(w.handle.react("chan1", "m-1", "", false, Map::new())).await;
    refused(
        &r,
        "relay react not sent: a chat id, a message id and an emoji are required",
    );
    let actions = w.sentinel("after the refused react").await;
    assert_eq!(actions.iter().filter(|a| a["op"] == "react").count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn react_is_refused_when_the_descriptor_does_not_allow_it() {
    let mut w = ready_world().await;
    w.inbound_accepted(events::discord_text("route")).await;
    let r = within(w.handle.react("chan1", "m-1", "👀", false, Map::new())).await;
    refused(&r, "relay op react not supported by the connector");
    let actions = w.sentinel("after the refused react").await;
    assert!(actions.iter().all(|a| a["op"] != "react"), "{actions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_create_applies_the_name_rules_and_resolves_with_the_thread_id() {
    let w = lane_world().await;
    let long = "x".repeat(150);
    let mut ids = Vec::new();
    for name in ["  Deploy notes \n", "   ", long.as_str()] {
        let r = within(w.handle.create_thread("chan1", name, Map::new())).await;
        assert!(r.success, "{r:?}");
        ids.push(r.created_thread_id().map(str::to_owned));
        assert_eq!(r.thread_id.as_deref(), r.created_thread_id(), "{r:?}");
    }
    // The stub numbers the threads it creates.
    assert_eq!(
        ids,
        vec![Some("th1".into()), Some("th2".into()), Some("th3".into())]
    );
    let creates: Vec<Value> = w
        .actions()
        .into_iter()
        .filter(|a| a["op"] == "thread_create")
        .collect();
    let names: Vec<&str> = creates
        .iter()
        .map(|a| a["thread_name"].as_str().expect("a thread name"))
        .collect();
    let cut = "x".repeat(100);
    assert_eq!(names, vec!["Deploy notes", "handoff", cut.as_str()]);
    assert_eq!(creates[0]["chat_id"], "chan1");
    assert_eq!(
        creates[0]["metadata"],
        json!({"scope_id": "guildA", "user_id": "u1"})
    );

    // A connector that names the thread with `message_id` instead.
    w.stub.queue_outbound_reply(
        Some("thread_create"),
        OutboundReply::Result(json!({"success": true, "message_id": "t-77"})),
    );
    let r = within(w.handle.create_thread("chan1", "other", Map::new())).await;
    assert_eq!(r.created_thread_id(), Some("t-77"), "{r:?}");
    // A connector failure names no thread.
    w.stub.queue_outbound_reply(
        Some("thread_create"),
        OutboundReply::fail("missing permission"),
    );
    let r = within(w.handle.create_thread("chan1", "third", Map::new())).await;
    assert!(!r.success && r.created_thread_id().is_none(), "{r:?}");
    assert_eq!(r.error.as_deref(), Some("missing permission"));

    let r = within(w.handle.create_thread("", "no parent", Map::new())).await;
    refused(&r, "relay thread_create not sent: no parent chat");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_rename_carries_its_guard_and_addresses_the_parent_when_given() {
    let w = lane_world().await;
    let r = within(w.handle.rename_thread(
        "th-5",
        "  New \n\t name  ",
        RenameGuard::ConnectorCreated,
        Some("chan1".into()),
        Map::new(),
    ))
    .await;
    assert!(r.success, "{r:?}");
    let r = within(w.handle.rename_thread(
        "th-5",
        "Newer",
        RenameGuard::CurrentName("New name".into()),
        None,
        Map::new(),
    ))
    .await;
    assert!(r.success, "{r:?}");
    let r = within(
        w.handle
            .rename_thread("th-5", "Plain", RenameGuard::None, None, Map::new()),
    )
    .await;
    assert!(r.success, "{r:?}");
    let renames: Vec<Value> = w
        .actions()
        .into_iter()
        .filter(|a| a["op"] == "thread_rename")
        .collect();
    assert_eq!(renames.len(), 3, "{renames:?}");
    // Addressed to the parent: its route is re-attached.
    assert_eq!(
        renames[0],
        json!({"op": "thread_rename", "chat_id": "chan1", "message_id": "th-5",
               "thread_name": "New name", "only_if_connector_created": true,
               "metadata": {"scope_id": "guildA", "user_id": "u1"}})
    );
    // Addressed to the thread itself.
    assert_eq!(renames[1]["chat_id"], "th-5");
    assert_eq!(renames[1]["message_id"], "th-5");
    assert_eq!(renames[1]["thread_name"], "Newer");
    assert_eq!(renames[1]["only_if_current_name"], "New name");
    assert!(renames[1].get("only_if_connector_created").is_none());
    for guard in ["only_if_current_name", "only_if_connector_created"] {
        assert!(renames[2].get(guard).is_none(), "{}", renames[2]);
    }

    // A name that is only whitespace is refused locally.
    let r = within(
        w.handle
            .rename_thread("th-5", " \n ", RenameGuard::None, None, Map::new()),
    )
    .await;
    refused(
        &r,
        "relay thread_rename not sent: the thread id and the name must not be empty",
    );
    let actions = w.sentinel("after the refused rename").await;
    assert_eq!(
        actions
            .iter()
            .filter(|a| a["op"] == "thread_rename")
            .count(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processing_reactions_mark_the_events_message() {
    let stub = StubConfig::default().with_descriptor("discord", discord_listing(&LANE_OPS));
    let mut w = world_with(stub, |_| {}).await;
    w.state(State::Ready).await;

    // A turn that succeeds: 👀, then 👀 removed and ✅ added.
    w.stub
        .push_inbound(events::discord_text("do it"))
        .await
        .expect("push");
    let m = w.message().await;
    let event = m.json.clone();
    let anchor = m.json_value().expect("event json")["source"]["message_id"]
        .as_str()
        .expect("the event has a message id")
        .to_owned();
    m.accept();
    within(w.handle.processing_start(event.clone()))
        .await
        .expect("processing_start");
    within(
        w.handle
            .processing_complete(event, ProcessingOutcome::Success),
    )
    .await
    .expect("processing_complete");
    let frames = w
        .stub
        .wait_for_frames(
            3,
            |f| {
                f.op() == Some("react")
                    && f.json.as_ref().unwrap()["action"]["message_id"] == anchor
            },
            WAIT,
        )
        .await
        .expect("three react frames");
    let seen: Vec<(Value, Value, Value)> = frames
        .iter()
        .map(|f| {
            let a = &f.json.as_ref().unwrap()["action"];
            (
                a["chat_id"].clone(),
                a["emoji"].clone(),
                a["remove"].clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (json!("chan1"), json!("👀"), json!(false)),
            (json!("chan1"), json!("👀"), json!(true)),
            (json!("chan1"), json!("✅"), json!(false)),
        ]
    );
    assert_eq!(frames[0].get("platform"), Some(&json!("discord")));

    // A cancelled turn only removes 👀.
    w.stub
        .push_inbound(events::discord_text("never mind"))
        .await
        .expect("push");
    let m = w.message().await;
    let event = m.json.clone();
    let anchor = m.json_value().expect("event json")["source"]["message_id"]
        .as_str()
        .expect("the event has a message id")
        .to_owned();
    m.accept();
    within(w.handle.processing_start(event.clone()))
        .await
        .expect("processing_start");
    within(
        w.handle
            .processing_complete(event, ProcessingOutcome::Cancelled),
    )
    .await
    .expect("processing_complete");
    let actions = w.sentinel("after the cancelled turn").await;
    let on_anchor: Vec<(Value, Value)> = actions
        .iter()
        .filter(|a| a["op"] == "react" && a["message_id"] == anchor.as_str())
        .map(|a| (a["emoji"].clone(), a["remove"].clone()))
        .collect();
    assert_eq!(
        on_anchor,
        vec![(json!("👀"), json!(false)), (json!("👀"), json!(true))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processing_reactions_send_nothing_without_the_react_op() {
    let mut w = ready_world().await;
    w.stub
        .push_inbound(events::discord_text("do it"))
        .await
        .expect("push");
    let m = w.message().await;
    let event = m.json.clone();
    m.accept();
    within(w.handle.processing_start(event.clone()))
        .await
        .expect("processing_start resolves done");
    within(
        w.handle
            .processing_complete(event, ProcessingOutcome::Failure),
    )
    .await
    .expect("processing_complete resolves done");
    let actions = w.sentinel("after the turn").await;
    assert!(actions.iter().all(|a| a["op"] != "react"), "{actions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_thread_info_is_answered_by_the_next_send_into_the_chat() {
    let mut w = lane_world().await;
    let handle = w.handle.clone();
    // The wait is queued before the send: the actor takes mail in order.
    let info = handle.auto_thread_info("chan1", WAIT);
    tokio::pin!(info);
    assert!(info.as_mut().now_or_never().is_none(), "no info yet");
    w.stub.queue_outbound_reply(
        Some("send"),
        OutboundReply::Result(json!({"success": true, "message_id": "m-50",
            "thread_id": "th-auto", "auto_thread_name": "Deploy chat"})),
    );
    let sent = w.send("chan1", "threaded reply", json!({})).await;
    assert_eq!(sent.thread_id.as_deref(), Some("th-auto"), "{sent:?}");
    let r = within(info).await;
    assert!(r.success, "{r:?}");
    assert_eq!(r.thread_id.as_deref(), Some("th-auto"));
    assert_eq!(r.auto_thread_name.as_deref(), Some("Deploy chat"));

    // Known now: answered at once, with no send.
    let r = within(w.handle.auto_thread_info("chan1", Duration::from_millis(1))).await;
    assert_eq!(
        (
            r.success,
            r.thread_id.as_deref(),
            r.auto_thread_name.as_deref()
        ),
        (true, Some("th-auto"), Some("Deploy chat")),
        "{r:?}"
    );

    // A send that was not auto-threaded answers the waiter with a miss.
    w.inbound_accepted(events::dm("discord", "dm-7", "u7", "hi"))
        .await;
    let info = handle.auto_thread_info("dm-7", WAIT);
    tokio::pin!(info);
    assert!(info.as_mut().now_or_never().is_none(), "no info yet");
    assert!(w.send("dm-7", "plain reply", json!({})).await.success);
    refused(
        &within(info).await,
        "no auto-thread info: the send into the chat was not auto-threaded",
    );

    // No send at all: a miss when the wait runs out.
    let r = within(
        w.handle
            .auto_thread_info("quiet", Duration::from_millis(20)),
    )
    .await;
    refused(&r, "no auto-thread info: no send into the chat in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_typing_clears_the_status_of_a_slack_chat_only() {
    let stub = StubConfig::default()
        .with_descriptor("slack", descriptors::slack())
        .with_replay_after_hellos(2);
    let mut w = world_with(stub, |c| {
        c.identities.push(Identity {
            platform: "slack".into(),
            bot_id: "S1".into(),
        });
    })
    .await;
    w.state(State::Ready).await;
    w.handshakes(1).await;
    w.inbound_accepted(events::discord_text("route")).await;
    w.inbound_accepted(events::dm("slack", "D1", "u5", "hi"))
        .await;

    let r = within(w.handle.stop_typing("D1", Map::new())).await;
    assert!(r.success, "{r:?}");
    let f = w.frame(|f| f.op() == Some("typing")).await;
    let frame = f.json.expect("json");
    assert_eq!(frame["platform"], "slack");
    assert_eq!(frame["action"]["chat_id"], "D1");
    assert_eq!(frame["action"]["content"], "", "{frame}");

    // Discord has no typing status to clear: nothing is sent.
    let r = within(w.handle.stop_typing("chan1", Map::new())).await;
    refused(
        &r,
        "relay stop-typing not sent: only Slack chats have a typing status to clear",
    );
    let actions = w.sentinel("after the refused stop").await;
    let typing: Vec<&Value> = actions.iter().filter(|a| a["op"] == "typing").collect();
    assert_eq!(typing.len(), 1, "{typing:?}");
}
