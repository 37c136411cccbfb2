//! End-to-end conformance: the real component in the real host, over a real
//! WebSocket, against the independent stub connector. One test per rule;
//! timers run at millisecond scale from the adapter config; every wait has a
//! deadline and none stands in for synchronisation.

use base64::Engine as _;
use relay_host::{
    Adapter, AdapterConfig, AdapterHandle, Event, EventStream, Identity, MessageEvent, Secret,
    SendResult, State,
};
use relay_stub::{
    ConnState, HelloReply, IdleReply, OutboundReply, Passthrough, ReceivedFrame, StubConfig,
    StubConnector, descriptors, events,
};
use serde_json::{Map, Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use relay_test_support::{WAIT, next_event_seen, plugin};

mod backpressure;
mod cards;
mod drafts;
mod faults;
mod hostile;
mod lanes;
mod soak;

/// Held by the tests that load the process (the bursts, the soak) or
/// measure its memory (the hostile catalogue): run one at a time, they
/// neither starve nor inflate each other on a 2-core machine.
async fn heavy() -> tokio::sync::MutexGuard<'static, ()> {
    static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    HEAVY.lock().await
}

/// The shared fast timers with one Discord identity (bot `B1`).
fn fast(url: String) -> AdapterConfig {
    let mut c = relay_test_support::fast(url);
    c.identities = vec![Identity {
        platform: "discord".into(),
        bot_id: "B1".into(),
    }];
    c
}

struct World {
    stub: StubConnector,
    handle: AdapterHandle,
    events: EventStream,
    /// Every state seen so far, in order.
    states: Vec<(State, String)>,
    fatals: Vec<(String, bool)>,
}

async fn world_with(stub: StubConfig, tweak: impl FnOnce(&mut AdapterConfig)) -> World {
    let stub = StubConnector::start(stub).await.expect("stub starts");
    let mut config = fast(stub.url());
    tweak(&mut config);
    let (handle, events) = Adapter::spawn(plugin(), config)
        .await
        .expect("adapter spawns");
    World {
        stub,
        handle,
        events,
        states: Vec::new(),
        fatals: Vec::new(),
    }
}

async fn world() -> World {
    world_with(StubConfig::default(), |_| {}).await
}

/// A world past its first handshake.
async fn ready_world() -> World {
    let mut w = world().await;
    w.state(State::Ready).await;
    w
}

fn meta(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

impl World {
    /// The next event `pick` accepts; states and fatals are recorded on the way.
    async fn expect<T>(&mut self, what: &str, pick: impl FnMut(Event) -> Option<T>) -> T {
        let (states, fatals) = (&mut self.states, &mut self.fatals);
        let record = |event: &Event| match event {
            Event::State { state, detail } => states.push((*state, detail.clone())),
            Event::Fatal {
                code, retryable, ..
            } => fatals.push((code.clone(), *retryable)),
            _ => {}
        };
        next_event_seen(&mut self.events, what, record, pick).await
    }

    async fn state(&mut self, want: State) -> String {
        self.expect(&format!("state {want:?}"), |e| match e {
            Event::State { state, detail } if state == want => Some(detail),
            _ => None,
        })
        .await
    }

    async fn message(&mut self) -> MessageEvent {
        self.expect("a message", |e| match e {
            Event::Message(m) => Some(m),
            _ => None,
        })
        .await
    }

    async fn accept_next(&mut self) -> Value {
        let m = self.message().await;
        let v = m.json_value().expect("event json");
        m.accept();
        v
    }

    async fn frame(&self, pred: impl Fn(&ReceivedFrame) -> bool) -> ReceivedFrame {
        self.stub
            .wait_for_frame(pred, WAIT)
            .await
            .expect("frame arrives")
    }

    async fn send(&self, chat: &str, text: &str, metadata: Value) -> SendResult {
        tokio::time::timeout(
            WAIT,
            self.handle.send(chat, text, None, meta(metadata), None),
        )
        .await
        .expect("send resolves")
    }

    /// Pushes a live inbound and accepts it (teaches the routing cache).
    async fn inbound_accepted(&mut self, event: Value) -> Value {
        self.stub.push_inbound(event).await.expect("push");
        self.accept_next().await
    }

    async fn handshakes(&self, n: usize) {
        self.stub
            .wait_for_handshakes(n, WAIT)
            .await
            .expect("handshake");
    }
}

fn retry_ms(detail: &str) -> Option<u64> {
    let rest = detail.split("retry in ").nth(1)?;
    rest.split(' ').next()?.parse().ok()
}

// ---------------------------------------------------------------------------
// Handshake and tagging

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_identity_handshake_and_per_frame_tagging() {
    let stub = StubConfig::default()
        .with_descriptor("telegram", descriptors::telegram())
        .with_replay_after_hellos(2);
    let mut w = world_with(stub, |c| {
        c.identities = vec![
            Identity {
                platform: "discord".into(),
                bot_id: "B1".into(),
            },
            Identity {
                platform: "telegram".into(),
                bot_id: "".into(),
            },
        ];
    })
    .await;
    w.state(State::Ready).await;
    w.handshakes(1).await;
    let hellos: Vec<Value> = w
        .stub
        .frames_of_type("hello")
        .into_iter()
        .filter_map(|f| f.json)
        .collect();
    assert_eq!(
        hellos[0],
        json!({"type":"hello","platform":"discord","botId":"B1"})
    );
    assert_eq!(
        hellos[1],
        json!({"type":"hello","platform":"telegram","botId":""})
    );
    w.inbound_accepted(events::discord_text("hi")).await;
    w.inbound_accepted(events::dm("telegram", "t1", "u7", "yo"))
        .await;
    assert!(w.send("chan1", "a", json!({})).await.success);
    assert!(w.send("t1", "b", json!({})).await.success);
    let sends = w.stub.frames_of_type("outbound");
    assert_eq!(sends[0].get("platform"), Some(&json!("discord")));
    assert_eq!(sends[0].get("botId"), Some(&json!("B1")));
    assert_eq!(sends[1].get("platform"), Some(&json!("telegram")));
    assert_eq!(sends[1].get("botId"), None, "no bot id for telegram");
    assert_eq!(
        w.handle
            .max_message_length(Some("t1"))
            .await
            .expect("query"),
        4096
    );
    assert_eq!(
        w.handle
            .message_len(Some("t1"), "\u{1F600}")
            .await
            .expect("query"),
        2
    );
    assert_eq!(
        w.handle
            .max_message_length(Some("chan1"))
            .await
            .expect("query"),
        2000
    );
}

// ---------------------------------------------------------------------------
// Re-attachment

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guild_and_dm_reattachment_on_send_edit_typing_and_raw_actions() {
    let mut w = ready_world().await;
    w.stub.set_descriptor(None, HelloReply::Descriptor(json!({
        "contract_version": 1, "platform": "discord", "label": "Discord", "max_message_length": 2000,
        "supports_draft_streaming": false, "supports_edit": true, "supports_threads": true,
        "markdown_dialect": "discord", "len_unit": "chars",
        "supported_ops": ["send", "edit", "typing", "follow_up", "get_chat_info", "react"]})));
    // Re-dial so the new descriptor (with `react`) applies.
    w.stub.close(1011, "reconfigure").await.expect("close");
    w.state(State::Ready).await;
    w.inbound_accepted(events::discord_text("guild")).await;
    w.inbound_accepted(events::dm("discord", "dm1", "u9", "dm"))
        .await;

    assert!(w.send("chan1", "x", json!({})).await.success);
    assert!(w.handle.edit("chan1", "m1", "y", Map::new()).await.success);
    assert!(w.handle.typing("dm1", Map::new(), None).await.success);
    let r = w
        .handle
        .raw_action(
            json!({"op":"react","chat_id":"chan1","message_id":"m1","emoji":"👀","remove":false}),
            None,
        )
        .await;
    assert!(r.success, "{r:?}");
    assert!(w.send("dm1", "z", json!({})).await.success);
    let out: Vec<Value> = w
        .stub
        .frames_of_type("outbound")
        .into_iter()
        .filter_map(|f| f.json)
        .collect();
    let guild = json!({"scope_id":"guildA","user_id":"u1"});
    assert_eq!(out[0]["action"]["metadata"], guild);
    assert_eq!(out[1]["action"]["metadata"], guild);
    assert_eq!(out[2]["action"]["metadata"], json!({"user_id":"u9"}));
    assert_eq!(
        out[2]["action"].get("content"),
        None,
        "default typing indicator"
    );
    assert_eq!(out[3]["action"]["metadata"], guild);
    assert_eq!(out[3]["platform"], "discord");
    assert_eq!(out[4]["action"]["metadata"], json!({"user_id":"u9"}));
    for f in &out {
        assert!(f["action"]["metadata"].get("guild_id").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_metadata_is_never_overwritten() {
    let mut w = ready_world().await;
    w.inbound_accepted(events::discord_text("guild")).await;
    let caller = json!({"scope_id":"mine","user_id":"","thread_id":"t1","_interim_send":true,"_stream_reply_to_message_id":"m"});
    assert!(w.send("chan1", "x", caller).await.success);
    let f = w.frame(|f| f.op() == Some("send")).await;
    assert_eq!(
        f.get("action").and_then(|a| a.get("metadata")),
        Some(&json!({"scope_id":"mine","user_id":"u1","thread_id":"t1"}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_up_without_token_is_tagged_by_kind() {
    let w = ready_world().await;
    let r = w
        .handle
        .follow_up(
            "agent:main:discord:group:chan1:u1",
            "discord.interaction_token",
            "Done!",
            Map::new(),
        )
        .await;
    assert!(r.success);
    let f = w.frame(|f| f.op() == Some("follow_up")).await;
    let v = f.json.expect("json");
    assert_eq!(v["platform"], "discord");
    assert_eq!(v["botId"], "B1");
    assert_eq!(v["action"]["kind"], "discord.interaction_token");
    assert!(!v.to_string().contains("token\":"), "no token on the wire");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_chat_info_is_op_gated() {
    let stub = StubConfig::default().with_chat_info("chan1", "#ops", "group");
    let mut w = world_with(stub, |_| {}).await;
    w.state(State::Ready).await;
    let info = w.handle.get_chat_info("chan1").await.expect("chat info");
    assert_eq!(
        (info.name.as_str(), info.chat_type.as_str()),
        ("#ops", "group")
    );
    assert_eq!(
        w.stub
            .frames()
            .iter()
            .filter(|f| f.op() == Some("get_chat_info"))
            .count(),
        1
    );

    // A legacy connector without supported_ops: answered locally.
    let stub = StubConfig {
        descriptor: HelloReply::Descriptor(descriptors::minimal("discord")),
        ..StubConfig::default()
    };
    let mut w = world_with(stub, |_| {}).await;
    w.state(State::Ready).await;
    let info = w.handle.get_chat_info("chan1").await.expect("chat info");
    assert_eq!(
        (info.name.as_str(), info.chat_type.as_str()),
        ("chan1", "dm")
    );
    assert_eq!(
        w.stub.frames_of_type("outbound").len(),
        0,
        "no wire traffic"
    );
}

// ---------------------------------------------------------------------------
// Passthrough

fn interaction(body: Value) -> Passthrough {
    Passthrough::new("discord", "B1").body(body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_slash_command_with_options_and_sub_commands() {
    let mut w = ready_world().await;
    w.stub
        .push(interaction(json!({"type":2,"id":"i1","channel_id":"c1","guild_id":"g1",
            "data":{"name":"skill","options":[{"name":"run","type":1,"options":[{"name":"target","type":3,"value":"deploy"}]}]},
            "member":{"user":{"id":"u1","username":"ben"}}})))
        .await
        .expect("push");
    let m = w.message().await;
    assert_eq!(
        (m.text.as_str(), m.message_type.as_str()),
        ("/skill run deploy", "command")
    );
    assert_eq!(
        (m.chat_type.as_str(), m.scope_id.as_deref()),
        ("group", Some("g1"))
    );
    let v = m.json_value().expect("json");
    assert_eq!(v["message_id"], "i1");
    assert!(
        v["source"]["message_id"].is_null(),
        "no anchor for slash commands"
    );
    m.accept();
    // The reply carries the interaction's scope.
    assert!(w.send("c1", "ok", json!({})).await.success);
    let f = w.frame(|f| f.op() == Some("send")).await;
    assert_eq!(
        f.get("action").and_then(|a| a.get("metadata")),
        Some(&json!({"scope_id":"g1","user_id":"u1"}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_component_modal_and_dm_interactions() {
    let mut w = ready_world().await;
    w.stub
        .push(interaction(json!({"type":3,"id":"press-1","channel_id":"c1","guild_id":"g1",
            "data":{"custom_id":"inspect"},"message":{"id":"bot-1"},"member":{"user":{"id":"u1","username":"ben"}}})))
        .await
        .expect("push");
    let v = w.accept_next().await;
    assert_eq!(
        (v["text"].as_str(), v["message_type"].as_str()),
        (Some("inspect"), Some("text"))
    );
    assert_eq!(v["source"]["message_id"], "bot-1");
    assert_eq!(v["metadata"]["discord_interaction_id"], "press-1");

    w.stub
        .push(interaction(json!({"type":5,"id":"m1","channel_id":"c1","guild_id":"g1","data":{"custom_id":"f","components":[
            {"type":18,"component":{"type":4,"custom_id":"answer","value":"café 東京"}},
            {"type":1,"components":[{"type":4,"custom_id":"optional","value":""}]}]}})))
        .await
        .expect("push");
    let v = w.accept_next().await;
    assert_eq!(v["text"], "answer=café 東京\noptional=");
    assert_eq!(
        v["metadata"]["discord_modal_fields"][1],
        json!({"custom_id":"optional","value":""})
    );

    w.stub
        .push(interaction(
            json!({"type":2,"id":"i9","channel_id":"d1","data":{"name":"new"},
            "user":{"id":"u5","username":"ben","global_name":"New Name"}}),
        ))
        .await
        .expect("push");
    let m = w.message().await;
    assert_eq!((m.chat_type.as_str(), m.scope_id.as_deref()), ("dm", None));
    let v = m.json_value().expect("json");
    assert_eq!(v["source"]["user_name"], "New Name");
    m.accept();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_non_discord_is_acked_if_buffered_and_non_json_is_dropped() {
    let mut w = ready_world().await;
    let id = w
        .stub
        .push_buffered(Passthrough::new("twilio", "B1").body("{}"), None)
        .await;
    w.stub
        .wait_for_ack(&id, WAIT)
        .await
        .expect("acked though dropped");
    w.stub
        .push(Passthrough::new("discord", "B1").body("not json"))
        .await
        .expect("push");
    // A valid message after the bad ones is still handled.
    w.stub
        .push_inbound(events::discord_text("after"))
        .await
        .expect("push");
    let m = w.message().await;
    assert_eq!(m.text, "after");
    m.accept();
}

// ---------------------------------------------------------------------------
// Interrupts

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupts_both_ways() {
    let mut w = ready_world().await;
    w.stub
        .interrupt_inbound("agent:main:discord:group:chanA:userX", "chanA")
        .await
        .expect("interrupt");
    let (key, chat) = w
        .expect("interrupt", |e| match e {
            Event::Interrupt {
                session_key,
                chat_id,
            } => Some((session_key, chat_id)),
            _ => None,
        })
        .await;
    assert_eq!(
        (key.as_str(), chat.as_str()),
        ("agent:main:discord:group:chanA:userX", "chanA")
    );
    w.handle.interrupt("k2", None).await.expect("interrupt");
    let f = w.frame(|f| f.is("interrupt")).await;
    assert_eq!(
        f.json,
        Some(json!({"type":"interrupt","session_key":"k2","reason":null}))
    );
    // With a reason, it is carried verbatim.
    w.handle
        .interrupt("s2", Some("user pressed stop".into()))
        .await
        .expect("interrupt");
    let frames = w
        .stub
        .wait_for_frames(2, |f| f.is("interrupt"), WAIT)
        .await
        .expect("two interrupts");
    assert_eq!(frames[1].get("reason"), Some(&json!("user pressed stop")));
}

// ---------------------------------------------------------------------------
// Buffered delivery and dedupe

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_inbound_is_acked_exactly_once_after_accept() {
    let mut w = ready_world().await;
    let id = w.stub.push_buffered(events::discord_text("b"), None).await;
    let m = w.message().await;
    assert_eq!(m.buffer_id.as_deref(), Some(id.as_str()));
    assert!(w.stub.acked_buffer_ids().is_empty(), "no ack before accept");
    m.accept();
    w.stub.wait_for_ack(&id, WAIT).await.expect("ack");
    // A live message is never acked.
    w.inbound_accepted(events::discord_text("live")).await;
    w.send("chan1", "sync", json!({})).await;
    assert_eq!(w.stub.acked_buffer_ids(), vec![id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_buffered_inbound_is_not_acked_and_is_replayed_after_a_drop() {
    let mut w = ready_world().await;
    let id = w.stub.push_buffered(events::discord_text("b"), None).await;
    w.message().await.reject();
    w.send("chan1", "sync", json!({})).await;
    assert!(w.stub.acked_buffer_ids().is_empty());
    w.stub.drop_connection().await.expect("drop");
    let m = w.message().await;
    assert_eq!(
        m.buffer_id.as_deref(),
        Some(id.as_str()),
        "replayed on the new connection"
    );
    m.accept();
    w.stub.wait_for_ack(&id, WAIT).await.expect("ack");
    assert_eq!(w.stub.state().ack_count(&id), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_dedupe_including_a_duplicate_awaiting_its_verdict() {
    let mut w = ready_world().await;
    let event = events::discord_text("once");
    w.stub
        .send_inbound(event.clone(), Some("b1"))
        .await
        .expect("send");
    let first = w.message().await;
    // The same message again while the first awaits its verdict.
    w.stub
        .send_inbound(event.clone(), Some("b1"))
        .await
        .expect("send");
    w.send("chan1", "sync", json!({})).await;
    while let Some(e) = w.events.try_next() {
        assert!(
            !matches!(e, Event::Message(_)),
            "the duplicate was delivered"
        );
    }
    first.accept();
    w.stub
        .wait_until(|s| s.ack_count("b1") == 2, WAIT)
        .await
        .expect("one ack per delivery attempt");
    // And once more after it was seen: acked, not delivered.
    w.stub.send_inbound(event, Some("b1")).await.expect("send");
    w.stub
        .wait_until(|s| s.ack_count("b1") == 3, WAIT)
        .await
        .expect("acked again");
    w.stub
        .push_inbound(events::discord_text("next"))
        .await
        .expect("push");
    let m = w.message().await;
    assert_eq!(m.text, "next", "the duplicate was never delivered");
    m.accept();
}

// ---------------------------------------------------------------------------
// Going idle, dormancy, holds

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn going_idle_on_shutdown_with_an_ack() {
    let mut w = ready_world().await;
    w.handle.shutdown().await.expect("shutdown");
    w.frame(|f| f.is("going_idle")).await;
    assert!(w.stub.is_idle(), "the connector flipped to buffered-only");
    w.state(State::Stopped).await;
    let conn = w.stub.connections().last().expect("conn").index;
    w.stub.wait_for_close(conn, WAIT).await.expect("closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn going_idle_on_shutdown_without_an_ack() {
    let mut w = world_with(
        StubConfig::default().with_going_idle(IdleReply::Withhold),
        |_| {},
    )
    .await;
    w.state(State::Ready).await;
    let started = std::time::Instant::now();
    w.handle.shutdown().await.expect("shutdown");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "waited for the ack"
    );
    w.frame(|f| f.is("going_idle")).await;
    w.state(State::Stopped).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_dormant_and_replay_on_redial() {
    let mut w = ready_world().await;
    assert!(w.handle.go_dormant().await);
    w.state(State::Dormant).await;
    // Pushed while idle: the connector buffers it and replays it after the re-dial.
    let d = w
        .stub
        .push(events::discord_text("while asleep"))
        .await
        .expect("push");
    assert!(matches!(d, relay_stub::Delivery::Buffered { .. }));
    let m = w.message().await;
    let id = m.buffer_id.clone().expect("a replay");
    m.accept();
    w.stub.wait_for_ack(&id, WAIT).await.expect("ack");
    assert_eq!(w.handle.state().await.expect("state"), State::Ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_and_release_redial() {
    let mut w = ready_world().await;
    w.handle.hold_redial().await.expect("hold");
    w.stub.close(1011, "overloaded").await.expect("close");
    w.state(State::Reconnecting).await;
    // Well past the first rung: still parked.
    let r = w
        .stub
        .wait_for_connections(2, Duration::from_millis(300))
        .await;
    assert!(r.is_err(), "no dial while held");
    w.handle.release_redial().await.expect("release");
    w.state(State::Ready).await;
    assert_eq!(w.stub.connections().len(), 2, "exactly one dial");
}

// ---------------------------------------------------------------------------
// Reconnect and the ladder

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_after_close_1011() {
    let mut w = ready_world().await;
    w.stub.close(1011, "overloaded").await.expect("close");
    w.state(State::Reconnecting).await;
    w.state(State::Ready).await;
    w.handshakes(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_after_an_abrupt_tcp_drop() {
    let mut w = ready_world().await;
    w.stub.drop_connection().await.expect("drop");
    w.state(State::Reconnecting).await;
    w.state(State::Ready).await;
    assert!(w.send("chan1", "back", json!({})).await.success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ladder_is_observed_through_reconnecting_states_with_jitter_pinned() {
    let stub = StubConfig::default().with_close_after_handshake(1011, "overloaded");
    let mut w = world_with(stub, |_| {}).await;
    let mut waits = Vec::new();
    while waits.len() < 5 {
        let detail = w.state(State::Reconnecting).await;
        waits.push(retry_ms(&detail).expect("retry detail"));
    }
    assert_eq!(waits, vec![20, 40, 80, 160, 160]);
}

// ---------------------------------------------------------------------------
// 4401

const SECRET: &str = "s3cret";

fn authed(c: &mut AdapterConfig) {
    c.gateway_id = "gw-test".into();
    c.secret = Some(Secret::new(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_before_handshake_is_retried() {
    let stub = StubConfig::default().with_secret("another-secret");
    let mut w = world_with(stub, authed).await;
    w.stub
        .wait_for_connections(3, WAIT)
        .await
        .expect("keeps retrying");
    w.stub.set_secrets(vec![SECRET.into()]);
    w.state(State::Ready).await;
    assert!(w.fatals.is_empty());
}

/// The secret is revoked after the handshake: the 4401 close gets exactly
/// one immediate re-dial with a freshly minted token; its refusal is
/// terminal (§5.4, §6.16).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_after_handshake_gets_one_fresh_token_retry_then_disables() {
    let mut w = world_with(StubConfig::default().with_secret(SECRET), |c| {
        authed(c);
        // Only the immediate fresh-token re-dial can beat this ladder.
        c.reconnect_initial = Duration::from_secs(60);
        c.reconnect_max = Duration::from_secs(60);
    })
    .await;
    w.state(State::Ready).await;
    let first = w.stub.connections().remove(0);
    assert_eq!(
        first.gateway_id.as_deref(),
        Some("gw-test"),
        "token verified"
    );

    // Tokens carry whole seconds: let the wall clock pass the first dial's
    // second so the re-dial's token is visibly fresh (a clock condition,
    // bounded, not a synchronisation).
    let second = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let deadline = tokio::time::Instant::now() + WAIT;
    while second(SystemTime::now()) <= second(first.accepted_at) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the clock stands still"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The secret is revoked: the re-dial's token no longer verifies.
    w.stub.set_secrets(vec!["rotated".into()]);
    w.stub.close(4401, "unauthorized").await.expect("close");

    let detail = w.state(State::Disabled).await;
    assert!(detail.contains("Relay disabled"), "{detail}");
    let (code, retryable) = w
        .expect("fatal", |e| match e {
            Event::Fatal {
                code, retryable, ..
            } => Some((code, retryable)),
            _ => None,
        })
        .await;
    assert_eq!((code.as_str(), retryable), ("relay_disabled", false));

    let conns = w.stub.wait_for_connections(2, WAIT).await.expect("re-dial");
    assert_eq!(conns.len(), 2, "exactly one fresh-token retry");
    assert_eq!(
        conns[1].state,
        ConnState::Rejected {
            code: 4401,
            reason: "unauthorized".into()
        }
    );
    let bearer = |i: usize| {
        conns[i]
            .header("authorization")
            .unwrap_or_default()
            .to_string()
    };
    assert!(bearer(0).starts_with("Bearer ") && bearer(1).starts_with("Bearer "));
    assert_ne!(bearer(0), bearer(1), "the re-dial mints a fresh token");
    let retry = bearer(1);
    let token = relay_stub::auth::bearer_token(&retry).unwrap_or_default();
    assert_eq!(
        relay_stub::auth::verify_token(token, &[SECRET], second(SystemTime::now())),
        Ok("gw-test".to_string()),
        "the fresh token is valid for the old secret"
    );

    // Terminal: nothing more is dialed, not even after a redial release,
    // and sends fail.
    assert_eq!(w.handle.state().await.expect("state"), State::Disabled);
    w.handle.release_redial().await.expect("release");
    let more = w
        .stub
        .wait_for_connections(3, Duration::from_millis(300))
        .await;
    assert!(more.is_err(), "no dial after revocation");
    assert!(!w.send("chan1", "x", json!({})).await.success);
    let stats = w.handle.stats().await.expect("stats");
    assert_eq!(stats["dials"], 2, "{stats}");
    assert_eq!(stats["unauthorized"], 2, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_reason_is_not_a_revocation() {
    let mut w = world_with(StubConfig::default().with_secret(SECRET), authed).await;
    w.state(State::Ready).await;
    w.stub.close(4401, "expired").await.expect("close");
    w.state(State::Reconnecting).await;
    w.state(State::Ready).await;
    w.stub.close(4401, "expired").await.expect("close");
    w.state(State::Reconnecting).await;
    w.state(State::Ready).await;
    assert!(w.fatals.is_empty());
}

// ---------------------------------------------------------------------------
// Outbound failures

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_timeout_is_ambiguous() {
    let mut w = world_with(
        StubConfig::default().with_outbound_reply("send", OutboundReply::NoAnswer),
        |c| c.outbound_timeout = Duration::from_millis(200),
    )
    .await;
    w.state(State::Ready).await;
    let r = w.send("chan1", "x", json!({})).await;
    assert!(!r.success && r.ambiguous, "{r:?}");
    assert_eq!(r.error.as_deref(), Some("relay outbound timed out"));
    // The connector still holds it (it may apply it), and it is counted.
    assert_eq!(w.stub.pending_requests().len(), 1);
    let stats = w.handle.stats().await.expect("stats");
    assert_eq!(stats["timeouts"], 1, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_lost_resolves_every_pending_at_once() {
    let mut w = world_with(
        StubConfig::default().with_outbound_reply("send", OutboundReply::NoAnswer),
        |_| {},
    )
    .await;
    w.state(State::Ready).await;
    let h1 = w.handle.clone();
    let h2 = w.handle.clone();
    let a = tokio::spawn(async move { h1.send("c", "1", None, Map::new(), None).await });
    let b = tokio::spawn(async move { h2.send("c", "2", None, Map::new(), None).await });
    w.stub
        .wait_until(|s| s.pending_requests.len() == 2, WAIT)
        .await
        .expect("both written");
    w.stub.drop_connection().await.expect("drop");
    for j in [a, b] {
        let r = tokio::time::timeout(WAIT, j)
            .await
            .expect("resolves")
            .expect("task");
        assert_eq!(r.error.as_deref(), Some("relay transport connection lost"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_fail_fast_during_an_outage_and_succeed_once_the_socket_is_back() {
    let mut w = ready_world().await;
    w.handle.hold_redial().await.expect("hold");
    w.stub.close(1011, "bye").await.expect("close");
    w.state(State::Reconnecting).await;
    let started = std::time::Instant::now();
    let r = w.send("chan1", "x", json!({})).await;
    assert_eq!(r.error.as_deref(), Some("relay transport not connected"));
    assert!(started.elapsed() < Duration::from_secs(1), "fails fast");
    w.handle.release_redial().await.expect("release");
    w.state(State::Ready).await;
    assert!(w.send("chan1", "x", json!({})).await.success);
}

// ---------------------------------------------------------------------------
// Overload

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_flood_delivers_every_message_once_and_every_reply_succeeds() {
    const FLOOD: usize = 1000;
    let mut w = world_with(StubConfig::default(), |c| c.max_undelivered = 4).await;
    w.state(State::Ready).await;
    let started = std::time::Instant::now();

    // The connector pushes as fast as it can: live while the gateway is not
    // idle, into its buffer (replayed with bufferIds after a re-dial) while
    // it is.
    let stub = w.stub.clone();
    let producer = tokio::spawn(async move {
        let (mut ids, mut buffered) = (Vec::new(), 0);
        for n in 0..FLOOD {
            let event = events::discord_text(&format!("flood {n}"));
            ids.push(event["message_id"].as_str().expect("id").to_owned());
            if let relay_stub::Delivery::Buffered { .. } = stub.push(event).await.expect("push") {
                buffered += 1;
            }
        }
        (ids, buffered)
    });

    // A gateway that takes one event at a time and answers it before the next.
    let mut delivered: std::collections::HashMap<String, usize> = Default::default();
    let mut replays = 0;
    while delivered.len() < FLOOD {
        let m = w.message().await;
        let id = m.json_value().expect("json")["message_id"]
            .as_str()
            .expect("message id")
            .to_owned();
        replays += usize::from(m.buffer_id.is_some());
        let count = delivered.entry(id.clone()).or_default();
        *count += 1;
        assert_eq!(*count, 1, "{id} delivered twice");
        m.accept();
        let reply = w.send("chan1", &format!("re {id}"), json!({})).await;
        assert!(reply.success, "reply to {id}: {reply:?}");
    }
    let (ids, buffered) = producer.await.expect("producer");
    assert_eq!(ids.len(), FLOOD);
    assert!(ids.iter().all(|id| delivered.get(id) == Some(&1)));
    assert!(buffered > 0, "the flood made the connector buffer");
    w.stub
        .wait_until(|s| s.buffer.is_empty(), WAIT)
        .await
        .expect("the connector's buffer drains");
    // Nothing more arrives: the next message is a fresh one.
    w.stub
        .wait_until(|s| !s.idle, WAIT)
        .await
        .expect("live again");
    w.stub
        .push_inbound(events::discord_text("after the flood"))
        .await
        .expect("push");
    let m = w.message().await;
    assert_eq!(m.text, "after the flood");
    m.accept();
    let stats = w.handle.stats().await.expect("stats");
    assert_eq!(stats["timeouts"], 0, "{stats}");
    assert!(replays > 0, "buffered messages came back as replays");
    assert!(
        stats["frames_out"]["going_idle"].as_u64() > Some(1),
        "the adapter shed load more than once: {stats}"
    );
    println!(
        "overload flood: {FLOOD} messages, {buffered} buffered by the connector, \
         {replays} delivered as replays, {} connections, {} inbound frames, {} dedupe hits, {:?}",
        w.stub.connections().len(),
        stats["frames_in"]["inbound"],
        stats["dedupe_hits"],
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// Hostile framing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_split_batched_and_binary_frames() {
    let mut w = ready_world().await;
    for bad in [
        "not json",
        "[1,2]",
        "{\"type\":\"mystery\"}",
        "{\"type\":\"inbound\",\"event\":7}",
    ] {
        w.stub.send_line(bad).await.expect("send");
    }
    let frame = |text: &str| json!({"type":"inbound","event":events::discord_text(text)});
    w.stub
        .send_frames_batched(&[frame("b1"), frame("b2")])
        .await
        .expect("batch");
    w.stub
        .send_split_frame(&frame("split"), 4)
        .await
        .expect("split");
    let mut bytes = serde_json::to_vec(&frame("bin é")).expect("json");
    bytes.push(b'\n');
    let cut = bytes.iter().position(|&b| b == 0xc3).expect("é") + 1;
    w.stub
        .send_split_binary(&bytes, &[cut])
        .await
        .expect("binary");
    let mut texts = Vec::new();
    for _ in 0..4 {
        texts.push(
            w.accept_next().await["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    assert_eq!(texts, vec!["b1", "b2", "split", "bin é"]);
    assert_eq!(w.stub.connections().len(), 1, "the connection stayed up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_long_line_within_small_messages_is_skipped() {
    let mut w = world_with(StubConfig::default(), |c| c.max_line_bytes = 4096).await;
    w.state(State::Ready).await;
    let chunk = "x".repeat(1000);
    for _ in 0..10 {
        w.stub.send_text(chunk.clone()).await.expect("chunk");
    }
    w.stub.send_text("tail\n".to_owned()).await.expect("tail");
    w.stub
        .push_inbound(events::discord_text("next"))
        .await
        .expect("push");
    let m = w.message().await;
    assert_eq!(m.text, "next");
    m.accept();
    assert_eq!(w.stub.connections().len(), 1, "the connection stayed up");
    let stats = w.handle.stats().await.expect("stats");
    assert_eq!(stats["skipped"]["line_too_long"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_size_limit_closes_and_the_adapter_recovers() {
    let mut w = world_with(StubConfig::default(), |c| c.max_line_bytes = 4096).await;
    w.state(State::Ready).await;
    let id = w
        .stub
        .push_buffered(events::discord_text("kept"), None)
        .await;
    let m = w.message().await;
    m.accept();
    w.stub.wait_for_ack(&id, WAIT).await.expect("ack");
    w.stub
        .send_sized_frame(
            json!({"type":"inbound","event":events::discord_text("huge")}),
            10_000,
        )
        .await
        .expect("oversized");
    w.state(State::Reconnecting).await;
    w.state(State::Ready).await;
    // Nothing acked is lost or replayed: the buffer is empty.
    assert!(w.stub.pending_buffer().is_empty());
    w.stub
        .push_inbound(events::discord_text("after"))
        .await
        .expect("push");
    assert_eq!(w.message().await.text, "after");
}

#[test]
fn base64_helper_is_standard() {
    // Guards the passthrough fixtures above against an alphabet mix-up.
    assert_eq!(
        base64::engine::general_purpose::STANDARD.encode("hi?>"),
        "aGk/Pg=="
    );
}
