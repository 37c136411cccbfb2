//! Host integration tests: the real relay component (`component/guest`, the
//! `relay-core` machine) on the real host, against the independent stub
//! connector (`relay-stub`) over real WebSockets on 127.0.0.1.
//!
//! Tests named `test_guest_*` load the TEST ONLY misbehaving component
//! (`component/test-guest`, built by `tests/artifacts` (`relay-test-artifacts`)):
//! connector frames `__test_panic|spin|grow|flood|stdio|dial` make it trap,
//! spin, grow, flood imports, write to stdio or dial elsewhere.
//!
//! This is the crate's only test binary (each one links wasmtime again).
//! Every wait has a deadline: the stub's waiters, [`next_event`] and
//! [`wait_until`]; timers in [`config`] are milliseconds so tests stay fast.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use relay_host::{
    Adapter, AdapterConfig, AdapterError, AdapterHandle, CacheUse, Event, EventStream, Identity,
    Plugin, PluginOptions, ProcessingOutcome, PromptOption, PromptRequest, RenameGuard, Secret,
    SendResult, State,
};
use relay_stub::{
    Closer, ConnState, Deliverable, Delivery, Hello, OutboundReply, StubConfig, StubConnector,
    UpgradeFate, descriptors, events,
};
use relay_test_support::{
    WAIT, capture_logs, fatal, global_logs, message, misbehaving_plugin as test_plugin, next_event,
    plugin, state_detail,
};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[path = "host/labels.rs"]
mod labels;
#[path = "host/media_client.rs"]
mod media_client;
#[path = "host/media_e2e.rs"]
mod media_e2e;

// ---------------------------------------------------------------- harness

/// Polls `cond` until it holds or [`WAIT`] passes.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn stub_with(config: StubConfig) -> StubConnector {
    global_logs();
    StubConnector::start(config).await.expect("stub starts")
}

async fn stub() -> StubConnector {
    stub_with(StubConfig::default()).await
}

/// The shared fast timers ([`relay_test_support::fast`]) for `stub`.
fn config(stub: &StubConnector) -> AdapterConfig {
    relay_test_support::fast(stub.url())
}

async fn spawn_on(plugin: &Plugin, config: AdapterConfig) -> (AdapterHandle, EventStream) {
    global_logs();
    Adapter::spawn(plugin, config)
        .await
        .expect("adapter starts")
}

async fn spawn(config: AdapterConfig) -> (AdapterHandle, EventStream) {
    spawn_on(plugin(), config).await
}

/// Waits for the `n`-th handshaken connection (1-based) and its `ready`.
async fn handshake(stub: &StubConnector, events: &mut EventStream, n: usize) {
    stub.wait_for_handshakes(n, WAIT)
        .await
        .expect("handshake with the stub");
    state_detail(events, State::Ready).await;
}

async fn send(handle: &AdapterHandle, chat_id: &str, content: &str) -> SendResult {
    tokio::time::timeout(WAIT, handle.send(chat_id, content, None, Map::new(), None))
        .await
        .expect("send resolves")
}

/// An `inbound` frame (no `bufferId`) carrying `event`.
fn inbound_frame(event: Value) -> Value {
    Deliverable::Inbound(event).to_frame(None)
}

fn is_request_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// A TCP relay between the adapter and the stub that can freeze: no byte
/// passes either way afterwards but the sockets stay open, so the stub's
/// automatic pongs never arrive.
struct FreezableProxy {
    addr: SocketAddr,
    freeze: watch::Sender<bool>,
}

impl FreezableProxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (freeze, frozen) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                let (in_read, in_write) = inbound.into_split();
                let (out_read, out_write) = outbound.into_split();
                tokio::spawn(pump(in_read, out_write, frozen.clone()));
                tokio::spawn(pump(out_read, in_write, frozen.clone()));
            }
        });
        Self { addr, freeze }
    }

    fn freeze(&self) {
        self.freeze.send_replace(true);
    }
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut frozen: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            frozen_now = async { frozen.wait_for(|f| *f).await.is_ok() } => {
                if !frozen_now {
                    return;
                }
                break;
            }
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if to.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            },
        }
    }
    // Frozen: keep both sockets open and pass nothing.
    std::future::pending::<()>().await;
    drop((from, to));
}

// ------------------------------------------- real component: handshake

#[tokio::test]
async fn handshake_sends_one_hello_per_identity_and_is_ready_after_the_descriptor() {
    let stub = stub_with(
        StubConfig::default()
            .with_replay_after_hellos(2)
            .with_descriptor("telegram", descriptors::telegram()),
    )
    .await;
    let mut config = config(&stub);
    config.identities = vec![
        Identity::new("discord", "1234"),
        Identity::new("telegram", ""),
    ];
    let (handle, mut events) = spawn(config).await;

    let mut states = Vec::new();
    let detail = next_event(&mut events, "state ready", |e| match e {
        Event::State { state, detail } => {
            states.push(state);
            (state == State::Ready).then_some(detail)
        }
        _ => None,
    })
    .await;
    assert_eq!(
        states,
        [State::Connecting, State::Handshaking, State::Ready],
        "ready only after the descriptor"
    );
    assert!(detail.contains("platform=discord"), "{detail}");

    let conn = stub.wait_for_handshakes(1, WAIT).await.unwrap();
    assert_eq!(conn.path, "/relay");
    assert_eq!(
        conn.hellos,
        [
            Hello {
                platform: "discord".into(),
                bot_id: "1234".into()
            },
            Hello {
                platform: "telegram".into(),
                bot_id: String::new()
            },
        ]
    );
    let hellos = stub.frames_of_type("hello");
    assert_eq!(hellos.len(), 2, "one hello per identity");
    assert_eq!(hellos[0].get("botId"), Some(&json!("1234")));

    assert_eq!(handle.state().await.unwrap(), State::Ready);
    // The second descriptor (answer to the telegram hello) is kept per platform.
    let telegram: Value =
        serde_json::from_str(&handle.descriptor(Some("telegram")).await.unwrap().unwrap()).unwrap();
    assert_eq!(telegram["platform"], "telegram");
    assert_eq!(stub.connections().len(), 1);
}

#[tokio::test]
async fn an_uppercase_base_url_is_normalised_and_dialed() {
    let stub = stub().await;
    let mut config = config(&stub);
    // `HTTP://127.0.0.1:PORT`: the component rewrites it to
    // `ws://127.0.0.1:PORT/relay`; the host's dial policy must agree.
    config.connector_url = stub.base_url().replacen("http", "HTTP", 1);
    let (_handle, mut events) = spawn(config).await;
    handshake(&stub, &mut events, 1).await;
    assert_eq!(stub.connections()[0].path, "/relay");
}

#[tokio::test]
async fn a_configuration_the_component_refuses_fails_the_spawn() {
    let mut config = AdapterConfig::new("ftp://127.0.0.1:9");
    config.limits.connect_timeout = Duration::from_secs(1);
    global_logs();
    match Adapter::spawn(plugin(), config).await {
        Err(AdapterError::Start(reason)) => {
            assert!(reason.contains("unsupported scheme"), "{reason}")
        }
        other => panic!("expected a start refusal, got {:?}", other.map(|_| ())),
    }
}

// ------------------------------------------- real component: inbound

#[tokio::test]
async fn inbound_becomes_a_message_and_only_an_accepted_buffered_one_is_acked() {
    let stub = stub().await;
    let (handle, mut events) = spawn(config(&stub)).await;
    handshake(&stub, &mut events, 1).await;

    // Live (no bufferId): accepting it sends no ack.
    let delivery = stub
        .push_inbound(events::discord_text("live one"))
        .await
        .unwrap();
    assert_eq!(delivery, Delivery::Live { conn: 0 });
    let live = message(&mut events).await;
    assert_eq!(live.text, "live one");
    assert_eq!(live.buffer_id, None);
    live.accept();

    // Buffered: accepting it acks its bufferId.
    stub.send_inbound(events::discord_text("buffered one"), Some("buf-1"))
        .await
        .unwrap();
    let event = message(&mut events).await;
    assert_eq!(event.text, "buffered one");
    assert_eq!(event.chat_id, "chan1");
    assert_eq!(event.platform, "discord");
    assert_eq!(event.chat_type, "group");
    assert_eq!(event.user_id.as_deref(), Some("u1"));
    assert_eq!(event.scope_id.as_deref(), Some("guildA"));
    assert_eq!(event.buffer_id.as_deref(), Some("buf-1"));
    assert_eq!(event.message_type, "text");
    assert_eq!(event.json_value().unwrap()["text"], "buffered one");
    event.accept();
    stub.wait_for_ack("buf-1", WAIT).await.unwrap();

    // Buffered but rejected: no ack. Verdicts are fed in order, so once the
    // accepted one after it is acked, the reject has been handled.
    stub.send_inbound(events::discord_text("rejected"), Some("buf-2"))
        .await
        .unwrap();
    message(&mut events).await.reject();
    stub.send_inbound(events::discord_text("after"), Some("buf-3"))
        .await
        .unwrap();
    message(&mut events).await.accept();
    stub.wait_for_ack("buf-3", WAIT).await.unwrap();

    assert_eq!(stub.acked_buffer_ids(), ["buf-1", "buf-3"]);
    let stats = handle.stats().await.unwrap();
    assert_eq!(stats["acks"], 2, "{stats}");
    assert_eq!(stats["deliveries"], 4, "{stats}");
    assert_eq!(stats["undelivered"], 0, "{stats}");
}

/// Verdicts given back to back reach the component as one
/// `answer-deliveries` call (the actor batches what is queued), applied in
/// order: only the accepted buffered ones are acked.
#[tokio::test]
async fn verdicts_given_together_are_applied_in_order() {
    let stub = stub().await;
    let (handle, mut events) = spawn(config(&stub)).await;
    handshake(&stub, &mut events, 1).await;
    for id in ["buf-a", "buf-b", "buf-c"] {
        stub.send_inbound(events::discord_text(id), Some(id))
            .await
            .unwrap();
    }
    let mut messages = Vec::new();
    for _ in 0..3 {
        messages.push(message(&mut events).await);
    }
    // On this single-threaded runtime the actor does not run between these
    // three calls, so it finds all three verdicts queued.
    let mut messages = messages.into_iter();
    let (a, b, c) = (
        messages.next().unwrap(),
        messages.next().unwrap(),
        messages.next().unwrap(),
    );
    assert_eq!(
        (a.text.as_str(), b.text.as_str(), c.text.as_str()),
        ("buf-a", "buf-b", "buf-c")
    );
    a.accept();
    b.reject();
    c.accept();
    stub.wait_for_ack("buf-c", WAIT).await.unwrap();
    assert_eq!(stub.acked_buffer_ids(), ["buf-a", "buf-c"]);
    let stats = handle.stats().await.unwrap();
    assert_eq!(
        (stats["acks"].as_u64(), stats["undelivered"].as_u64()),
        (Some(2), Some(0)),
        "{stats}"
    );
}

#[tokio::test]
async fn a_message_event_dropped_unanswered_is_rejected() {
    let stub = stub().await;
    let (handle, mut events) = spawn(config(&stub)).await;
    handshake(&stub, &mut events, 1).await;

    stub.send_inbound(events::discord_text("nobody takes this"), Some("buf-9"))
        .await
        .unwrap();
    drop(message(&mut events).await);
    stub.send_inbound(events::discord_text("taken"), Some("buf-10"))
        .await
        .unwrap();
    message(&mut events).await.accept();
    stub.wait_for_ack("buf-10", WAIT).await.unwrap();
    assert_eq!(
        stub.acked_buffer_ids(),
        ["buf-10"],
        "only the accepted delivery is acked"
    );
    let stats = handle.stats().await.unwrap();
    assert_eq!(stats["undelivered"], 0, "{stats}");
}

#[tokio::test]
async fn several_frames_in_one_message_and_split_frames_all_arrive() {
    let stub = stub().await;
    let (_handle, mut events) = spawn(config(&stub)).await;
    handshake(&stub, &mut events, 1).await;

    stub.send_frames_batched(&[
        inbound_frame(events::discord_text("one")),
        inbound_frame(events::discord_text("two")),
    ])
    .await
    .unwrap();
    stub.send_split_frame(&inbound_frame(events::discord_text("three")), 3)
        .await
        .unwrap();
    // Binary messages cut inside a multi-byte character.
    let four = format!("{}\n", inbound_frame(events::discord_text("fö☃r")));
    let snowman = four.find('☃').unwrap();
    stub.send_split_binary(four.as_bytes(), &[snowman + 1, snowman + 2])
        .await
        .unwrap();

    let mut texts = Vec::new();
    for _ in 0..4 {
        let event = message(&mut events).await;
        texts.push(event.text.clone());
        event.reject();
    }
    assert_eq!(texts, ["one", "two", "three", "fö☃r"]);
}

#[tokio::test]
async fn results_still_resolve_while_the_gateway_reads_no_events() {
    let stub = stub().await;
    let (handle, mut events) = spawn(config(&stub)).await;
    handshake(&stub, &mut events, 1).await;

    for n in 0..200 {
        stub.push_inbound(events::discord_text(&format!("backlog {n}")))
            .await
            .unwrap();
    }
    // Nobody reads `events`; the send's result still comes through.
    let result = send(&handle, "chan1", "through the backlog").await;
    assert!(result.success, "{result:?}");
    let first = message(&mut events).await;
    assert_eq!(first.text, "backlog 0");
}

// ------------------------------------------- real component: outbound

#[tokio::test]
async fn send_goes_out_as_an_outbound_frame_with_the_route_and_resolves_with_its_result() {
    let stub = stub().await;
    let (handle, mut events) = spawn(config(&stub)).await;
    handshake(&stub, &mut events, 1).await;

    // An inbound in chan1 teaches the route (platform, scope, user).
    stub.push_inbound(events::discord_text("hi")).await.unwrap();
    message(&mut events).await.accept();

    let mut metadata = Map::new();
    metadata.insert("tag".into(), json!("x"));
    let result = tokio::time::timeout(
        WAIT,
        handle.send("chan1", "Hi there", Some("m-1".into()), metadata, None),
    )
    .await
    .expect("send resolves");
    assert!(result.success, "{result:?}");
    assert_eq!(result.message_id.as_deref(), Some("m1"));
    assert!(!result.ambiguous);

    let outbound = stub.wait_for_frame_type("outbound", WAIT).await.unwrap();
    let id = outbound.request_id().unwrap();
    assert!(is_request_id(id), "requestId {id:?} is 32 lowercase hex");
    let frame = outbound.json.unwrap();
    assert_eq!(frame["platform"], "discord");
    let action = &frame["action"];
    assert_eq!(action["op"], "send");
    assert_eq!(action["chat_id"], "chan1");
    assert_eq!(action["content"], "Hi there");
    assert_eq!(action["reply_to"], "m-1");
    assert_eq!(action["metadata"]["tag"], "x");
    assert_eq!(action["metadata"]["scope_id"], "guildA", "{action}");
    assert_eq!(action["metadata"]["user_id"], "u1", "{action}");

    // Two sends get distinct request ids.
    assert!(send(&handle, "chan1", "again").await.success);
    let ids: Vec<String> = stub
        .frames_of_type("outbound")
        .iter()
        .map(|f| f.request_id().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1]);

    // A decline comes back as such.
    stub.queue_outbound_reply(Some("send"), OutboundReply::EgressDeclined);
    let declined = send(&handle, "chan1", "nope").await;
    assert!(!declined.success && declined.declined, "{declined:?}");
    assert_eq!(declined.code.as_deref(), Some("egress_declined"));
}

#[tokio::test]
async fn queries_and_commands_resolve_through_the_component() {
    let stub = stub().await;
    stub.set_chat_info("chan1", "ops", "group");
    let mut config = config(&stub);
    config.identities = vec![Identity::new("discord", "1")];
    let (handle, mut events) = spawn(config).await;
    handshake(&stub, &mut events, 1).await;

    assert_eq!(handle.state().await.unwrap(), State::Ready);
    assert!(handle.fronts_platform("discord").await.unwrap());
    assert!(!handle.fronts_platform("slack").await.unwrap());
    assert_eq!(handle.message_len(None, "héllo").await.unwrap(), 5);
    assert_eq!(
        handle.max_message_length(Some("chan1")).await.unwrap(),
        2000
    );
    assert!(handle.supports_op(None, "send").await.unwrap());
    assert!(!handle.supports_op(None, "delete").await.unwrap());
    let descriptor: Value =
        serde_json::from_str(&handle.descriptor(None).await.unwrap().unwrap()).unwrap();
    assert_eq!(descriptor["platform"], "discord");
    assert!(descriptor.get("restarts").is_none(), "{descriptor}");
    let stats = handle.stats().await.unwrap();
    assert_eq!(stats["dials"], 1, "{stats}");
    // The host's gauges ride along with the component's counters.
    assert_eq!(stats["restarts"], 0, "{stats}");
    assert!(stats["guest_memory_bytes"].as_u64() > Some(0), "{stats}");
    let health = handle.health().await.unwrap();
    assert_eq!(health.state, Some(State::Ready));
    assert_eq!(
        (health.pending, health.undelivered, health.restarts),
        (0, 0, 0)
    );
    assert_eq!(health.memory_limit_bytes, relay_host::DEFAULT_MEMORY_BYTES);
    assert!(
        health.guest_memory_bytes > 0 && health.down.is_none(),
        "{health:?}"
    );

    // A primed route is re-attached to later sends in that chat.
    handle
        .prime_route(
            "chan9",
            "discord",
            Some("g9".into()),
            Some("u9".into()),
            None,
        )
        .await
        .unwrap();
    assert!(send(&handle, "chan9", "primed").await.success);
    let sent = stub.wait_for_frame_type("outbound", WAIT).await.unwrap();
    let sent = sent.json.unwrap();
    assert_eq!(sent["action"]["metadata"]["scope_id"], "g9", "{sent}");
    assert_eq!(sent["platform"], "discord");
    assert_eq!(sent["botId"], "1");

    let info = handle.get_chat_info("chan1").await.unwrap();
    assert_eq!(
        (info.name.as_str(), info.chat_type.as_str()),
        ("ops", "group")
    );
    let typing = tokio::time::timeout(
        WAIT,
        handle.typing("chan1", Map::new(), Some("thinking".into())),
    )
    .await
    .unwrap();
    assert!(typing.success, "{typing:?}");
    let edited = tokio::time::timeout(WAIT, handle.edit("chan1", "m7", "new text", Map::new()))
        .await
        .unwrap();
    assert_eq!(edited.message_id.as_deref(), Some("m7"), "{edited:?}");
    // `delete` is not in the discord descriptor's op list: refused locally.
    let deleted = tokio::time::timeout(
        WAIT,
        handle.raw_action(
            json!({"op": "delete", "chat_id": "chan1", "message_id": "m7"}),
            None,
        ),
    )
    .await
    .unwrap();
    assert!(!deleted.success, "{deleted:?}");
    let forced = send_forced(&handle, "slack").await;
    assert!(!forced.success, "slack is not fronted: {forced:?}");
    handle.hold_redial().await.unwrap();
    handle.release_redial().await.unwrap();

    // go-dormant: the stub acks going_idle; the adapter re-dials on the
    // dormant cadence and the connector replays into the new connection.
    assert!(
        tokio::time::timeout(WAIT, handle.go_dormant())
            .await
            .unwrap()
    );
    state_detail(&mut events, State::Dormant).await;
    handshake(&stub, &mut events, 2).await;
}

async fn send_forced(handle: &AdapterHandle, platform: &str) -> SendResult {
    tokio::time::timeout(
        WAIT,
        handle.send("chan1", "x", None, Map::new(), Some(platform.into())),
    )
    .await
    .expect("send resolves")
}

#[tokio::test]
async fn shutdown_resolves_closes_the_socket_and_ends_the_adapter() {
    let stub = stub().await;
    let (handle, mut events) = spawn(config(&stub)).await;
    handshake(&stub, &mut events, 1).await;

    tokio::time::timeout(WAIT, handle.shutdown())
        .await
        .expect("shutdown resolves")
        .unwrap();
    assert_eq!(stub.frames_of_type("going_idle").len(), 1);
    match stub.wait_for_close(0, WAIT).await.unwrap() {
        ConnState::Closed {
            by: Closer::Gateway,
            code,
            ..
        } => assert_eq!(code, Some(1000)),
        other => panic!("expected a close by the gateway, got {other:?}"),
    }
    // The event stream ends once the adapter stopped ...
    assert_eq!(state_detail(&mut events, State::Stopped).await, "shutdown");
    let end = async { while events.next().await.is_some() {} };
    tokio::time::timeout(WAIT, end)
        .await
        .expect("event stream ends");
    // ... and later calls resolve at once.
    let late = send(&handle, "chan1", "too late").await;
    assert!(!late.success);
    assert_eq!(late.error.as_deref(), Some("relay adapter stopped"));
    assert!(!late.ambiguous);
    assert!(
        handle.shutdown().await.is_ok(),
        "a second shutdown is a no-op"
    );
    assert!(!handle.is_running());
}

/// `Plugin::native` (the benchmarks' native row) drives the same machine
/// through the same actor and imports: same frames, routes, acks, queries
/// and shutdown as the component, and no guest memory.
#[tokio::test]
async fn the_native_plugin_speaks_the_same_protocol_without_the_sandbox() {
    let native = Plugin::native().expect("native plugin");
    assert!(native.is_native() && !plugin().is_native());
    let stub = stub().await;
    let (handle, mut events) = spawn_on(&native, config(&stub)).await;
    handshake(&stub, &mut events, 1).await;

    stub.send_inbound(events::discord_text("buffered"), Some("buf-1"))
        .await
        .unwrap();
    let event = message(&mut events).await;
    assert_eq!(
        (event.text.as_str(), event.chat_id.as_str()),
        ("buffered", "chan1")
    );
    assert_eq!(event.scope_id.as_deref(), Some("guildA"));
    event.accept();
    stub.wait_for_ack("buf-1", WAIT).await.unwrap();

    let result = send(&handle, "chan1", "echo").await;
    assert!(result.success, "{result:?}");
    assert_eq!(result.message_id.as_deref(), Some("m1"));
    let sent = stub.wait_for_frame_type("outbound", WAIT).await.unwrap();
    let id = sent.request_id().unwrap().to_string();
    assert!(is_request_id(&id), "{id}");
    let action = &sent.json.unwrap()["action"];
    assert_eq!(action["metadata"]["scope_id"], "guildA", "{action}");

    assert_eq!(handle.state().await.unwrap(), State::Ready);
    assert!(handle.supports_op(None, "send").await.unwrap());
    let stats = handle.stats().await.unwrap();
    assert_eq!(
        (stats["acks"].as_u64(), stats["dials"].as_u64()),
        (Some(1), Some(1)),
        "{stats}"
    );
    assert_eq!(stats["guest_memory_bytes"], 0, "{stats}");

    tokio::time::timeout(WAIT, handle.shutdown())
        .await
        .expect("shutdown resolves")
        .unwrap();
    assert_eq!(state_detail(&mut events, State::Stopped).await, "shutdown");
    assert_eq!(stub.frames_of_type("going_idle").len(), 1);
}

// ------------------------------------------- real component: sockets

#[tokio::test]
async fn a_dropped_tcp_connection_reports_1006_and_the_timer_redials() {
    let logs = capture_logs();
    let stub = stub().await;
    let (handle, mut events) = spawn(config(&stub)).await;
    handshake(&stub, &mut events, 1).await;

    stub.drop_connection().await.unwrap();
    let detail = state_detail(&mut events, State::Reconnecting).await;
    assert!(detail.contains("connection lost"), "{detail}");
    logs.wait_for("relay connection closed (code 1006)").await;
    // The component armed `set-deadline`; the host fired it and it re-dialed.
    handshake(&stub, &mut events, 2).await;
    let stats = handle.stats().await.unwrap();
    assert_eq!(stats["reconnects"], 1, "{stats}");
}

#[tokio::test]
async fn a_close_frame_reports_its_code_and_reason() {
    let logs = capture_logs();
    let stub = stub().await;
    let (_handle, mut events) = spawn(config(&stub)).await;
    handshake(&stub, &mut events, 1).await;

    stub.close(1011, "overloaded for a test").await.unwrap();
    state_detail(&mut events, State::Reconnecting).await;
    logs.wait_for("relay connection closed (code 1011): overloaded for a test")
        .await;
    handshake(&stub, &mut events, 2).await;
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009() {
    let logs = capture_logs();
    let stub = stub().await;
    let mut config = config(&stub);
    config.max_line_bytes = 1024;
    let (_handle, mut events) = spawn(config).await;
    handshake(&stub, &mut events, 1).await;

    // A line of exactly the limit (one message of limit + newline) fits ...
    stub.send_sized_frame(inbound_frame(events::discord_text("fits")), 1025)
        .await
        .unwrap();
    assert_eq!(message(&mut events).await.text, "fits");
    // ... one more byte does not: the host closes with 1009.
    stub.send_text("y".repeat(1026)).await.unwrap();
    match stub.wait_for_close(0, WAIT).await.unwrap() {
        ConnState::Closed {
            by: Closer::Gateway,
            code,
            ..
        } => assert_eq!(code, Some(1009)),
        other => panic!("expected a close by the gateway, got {other:?}"),
    }
    state_detail(&mut events, State::Reconnecting).await;
    logs.wait_for("relay connection closed (code 1009)").await;
}

#[tokio::test]
async fn an_unanswered_ping_closes_the_socket_as_1011_keepalive_timeout() {
    let logs = capture_logs();
    let stub = stub().await;
    let proxy = FreezableProxy::start(stub.addr()).await;
    let mut config = config(&stub);
    config.connector_url = format!("ws://{}", proxy.addr);
    config.limits.ping_interval = Duration::from_millis(50);
    // Generous against a loaded machine: a late pong must not fail the
    // window below.
    config.limits.ping_timeout = Duration::from_millis(1000);
    let (_handle, mut events) = spawn(config).await;
    handshake(&stub, &mut events, 1).await;

    // While pongs come back, the socket stays up across several ping
    // intervals (a negative check, so it needs a fixed window).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(events.try_next().is_none(), "no state change while pinging");

    proxy.freeze();
    state_detail(&mut events, State::Reconnecting).await;
    logs.wait_for("relay connection closed (code 1011): keepalive ping timeout")
        .await;
}

#[tokio::test]
async fn a_refused_upgrade_reports_the_http_status() {
    let logs = capture_logs();
    let stub = stub().await;
    stub.refuse_next_upgrades(
        1,
        UpgradeFate::Http {
            status: 503,
            body: "busy".into(),
        },
    )
    .unwrap();
    let mut config = config(&stub);
    config.reconnect = false;
    let (_handle, mut events) = spawn(config).await;

    let detail = state_detail(&mut events, State::Stopped).await;
    assert!(detail.contains("dial failed"), "{detail}");
    logs.wait_for("relay dial failed (code 503)").await;
    let conns = stub.connections();
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].state, ConnState::Refused { status: 503 });
    assert!(!conns[0].handshaken);
}

#[tokio::test]
async fn a_wss_connector_is_dialed_over_tls() {
    let logs = capture_logs();
    // A plain TCP server that answers the TLS ClientHello with HTTP garbage:
    // the dial must fail in the TLS handshake (proving TLS is compiled in and
    // a crypto provider is installed), not with "TLS support not compiled in".
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    let mut config = AdapterConfig::new(format!("https://127.0.0.1:{port}"));
    config.reconnect = false;
    let (_handle, mut events) = spawn(config).await;
    let detail = state_detail(&mut events, State::Stopped).await;
    assert!(detail.contains("dial failed"), "{detail}");
    logs.wait_for("relay dial failed (code 0)").await;
    let text = logs.text();
    assert!(!text.contains("not compiled in"), "TLS missing: {text}");
    assert!(
        text.to_lowercase().contains("tls")
            || text.contains("InvalidContentType")
            || text.contains("corrupt"),
        "{text}"
    );
}

// ------------------------------------------- real component: auth

#[tokio::test]
async fn the_secret_never_reaches_debug_output_or_logs() {
    let logs = capture_logs();
    let stub = stub_with(StubConfig::default().with_secret("very-secret-value")).await;
    let mut config = config(&stub);
    config.gateway_id = "gw-1".into();
    config.secret = Some(Secret::new("very-secret-value"));
    assert!(!format!("{config:?}").contains("very-secret-value"));
    let (handle, mut events) = spawn(config).await;
    handshake(&stub, &mut events, 1).await;

    let conn = stub.connections().remove(0);
    assert_eq!(conn.gateway_id.as_deref(), Some("gw-1"));
    assert!(conn.header("authorization").is_some());
    assert!(!format!("{handle:?}").contains("very-secret-value"));
    logs.wait_for("relay state changed").await;
    assert!(!logs.contains("very-secret-value"));
}

#[test]
fn bytes_that_are_not_a_component_are_rejected_with_a_clear_error() {
    let err = Plugin::from_bytes(b"not wasm").unwrap_err();
    assert!(
        err.to_string().starts_with("relay component rejected"),
        "{err}"
    );
    let err = Plugin::from_file("/nonexistent/relay.wasm").unwrap_err();
    assert!(err.to_string().contains("/nonexistent/relay.wasm"), "{err}");
}

/// The compilation cache through the Rust API: a miss stores, the next
/// plugin is a hit and runs the protocol, a file in the cache's place is a
/// refusal and a plain compile (never a failed load).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compilation_cache_is_filled_then_hit_and_its_plugin_runs() {
    let root =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("host-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let options = PluginOptions::new().cache_dir(root.join("cache"));
    let cold = Plugin::new_with(&options).expect("compiles");
    assert_eq!(cold.cache_use(), &CacheUse::Miss);
    let warm = Plugin::new_with(&options).expect("loads");
    assert_eq!(warm.cache_use(), &CacheUse::Hit);

    let stub = stub().await;
    let (handle, mut events) = spawn_on(&warm, config(&stub)).await;
    handshake(&stub, &mut events, 1).await;
    assert!(send(&handle, "c1", "from cached code").await.success);
    handle.shutdown().await.expect("shutdown");

    std::fs::write(root.join("file"), b"in the way").unwrap();
    let refused =
        Plugin::new_with(&PluginOptions::new().cache_dir(root.join("file"))).expect("compiles");
    match refused.cache_use() {
        CacheUse::Refused(why) => assert!(why.contains("cannot create compilation cache"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(Plugin::native().unwrap().cache_use(), &CacheUse::Off);
    let _ = std::fs::remove_dir_all(&root);
}

// -------------------------------------- WIT versions: the released fixtures

/// The relay component as released against the frozen WIT 0.1.0
/// (`tests/fixtures/README.md`).
const FIXTURE_0_1_0: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/relay-adapter-0.1.0.wasm"
);

/// The relay component as released against the frozen WIT 0.2.0.
const FIXTURE_0_2_0: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/relay-adapter-0.2.0.wasm"
);

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn the_fixtures_are_the_recorded_release_builds() {
    for fixture in [FIXTURE_0_1_0, FIXTURE_0_2_0] {
        let bytes = std::fs::read(fixture).expect("the fixture is committed");
        let recorded = std::fs::read_to_string(format!("{fixture}.sha256")).unwrap();
        assert_eq!(
            recorded.split_whitespace().next(),
            Some(sha256_hex(&bytes).as_str()),
            "{fixture}"
        );
    }
}

/// A released WIT folder is never edited again (docs/wit.md#versioning):
/// its bindings, its fixture and every component built against it depend
/// on its text. The digests were taken when each version was frozen.
#[test]
fn released_wit_folders_are_unchanged() {
    const FROZEN: [(&str, &str); 2] = [
        (
            "v0.1/relay.wit",
            "ab46ce6d302c4b0d4934e37e1370d146f213cfd94b591e6f38b9dac931e52fdc",
        ),
        (
            "v0.2/relay.wit",
            "0469d7243a37673b6aef5b0074bf2113692d229b6196956bc82c2b80c6b0e75d",
        ),
    ];
    let wit = concat!(env!("CARGO_MANIFEST_DIR"), "/../wit");
    for (file, digest) in FROZEN {
        let path = format!("{wit}/{file}");
        let bytes = std::fs::read(&path).expect("the folder is committed");
        assert_eq!(
            sha256_hex(&bytes),
            digest,
            "{file} was edited: a released version is frozen; put the change in a new version folder"
        );
        let folder = std::path::Path::new(&path).parent().unwrap();
        let files = std::fs::read_dir(folder).unwrap().count();
        assert_eq!(
            files,
            1,
            "a file was added to the frozen {}",
            folder.display()
        );
    }
}

/// A released component runs on this host through its version's binding:
/// handshake, a buffered message accepted and acked, a send with its route
/// re-attached, queries, and shutdown.
async fn a_released_component_runs(fixture: &str, api: &str) {
    let old = Plugin::from_file(fixture).expect("the released component loads");
    assert_eq!(old.api(), Some(api));
    let stub = stub().await;
    let (handle, mut events) = spawn_on(&old, config(&stub)).await;
    handshake(&stub, &mut events, 1).await;

    stub.send_inbound(
        events::discord_text("from a released plugin"),
        Some("buf-01"),
    )
    .await
    .unwrap();
    let event = message(&mut events).await;
    assert_eq!(event.text, "from a released plugin");
    assert_eq!(event.scope_id.as_deref(), Some("guildA"));
    event.accept();
    stub.wait_for_ack("buf-01", WAIT).await.unwrap();

    let result = send(&handle, "chan1", "answered by a released plugin").await;
    assert!(result.success, "{result:?}");
    let outbound = stub.wait_for_frame_type("outbound", WAIT).await.unwrap();
    let action = &outbound.json.unwrap()["action"];
    assert_eq!(action["content"], "answered by a released plugin");
    assert_eq!(action["metadata"]["scope_id"], "guildA", "{action}");

    assert_eq!(handle.state().await.unwrap(), State::Ready);
    assert!(handle.supports_op(Some("chan1"), "send").await.unwrap());
    let stats = handle.stats().await.unwrap();
    assert_eq!(stats["acks"], 1, "{stats}");
    handle.shutdown().await.expect("shutdown");
}

/// A component built against the frozen 0.1.0 WIT runs on this host through
/// its own binding module.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_0_1_0_component_runs_through_its_own_binding() {
    assert_eq!(plugin().api(), Some("0.2"), "the built-in component");
    a_released_component_runs(FIXTURE_0_1_0, "0.1").await;
}

/// The 0.2.0 release build runs from its file, as it must whatever version
/// the built-in component moves on to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_0_2_0_component_runs_from_its_release_build() {
    a_released_component_runs(FIXTURE_0_2_0, "0.2").await;
}

/// `f`'s result within [`WAIT`].
async fn resolved<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.expect("resolves")
}

/// The stub's Discord descriptor listing every op the lanes use.
fn lane_descriptor() -> StubConfig {
    let mut d = descriptors::discord();
    d["supported_ops"] = json!([
        "send",
        "edit",
        "typing",
        "get_chat_info",
        "react",
        "delete",
        "thread_create",
        "thread_rename"
    ]);
    StubConfig {
        descriptor: relay_stub::HelloReply::Descriptor(d),
        ..StubConfig::default()
    }
}

/// 0.1 has no `lane` export: every lane resolves at once with the
/// definite "not supported" failure (the processing reactions resolve done)
/// and nothing reaches the connector, even though it allows every op.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_0_1_0_component_answers_every_lane_as_not_supported() {
    const UNSUPPORTED: &str = "not supported by this component (api 0.1.0)";
    let old = Plugin::from_file(FIXTURE_0_1_0).expect("the 0.1.0 component loads");
    let stub = stub_with(lane_descriptor()).await;
    let (handle, mut events) = spawn_on(&old, config(&stub)).await;
    handshake(&stub, &mut events, 1).await;
    stub.push_inbound(events::discord_text("turn"))
        .await
        .unwrap();
    let event = message(&mut events).await;
    let event_json = event.json.clone();
    event.accept();

    let results = [
        (
            "delete",
            resolved(handle.delete_message("chan1", "m1", Map::new())).await,
        ),
        (
            "react",
            resolved(handle.react("chan1", "m1", "👀", false, Map::new())).await,
        ),
        (
            "stop_typing",
            resolved(handle.stop_typing("chan1", Map::new())).await,
        ),
        (
            "create_thread",
            resolved(handle.create_thread("chan1", "t", Map::new())).await,
        ),
        (
            "rename_thread",
            resolved(handle.rename_thread("th1", "n", RenameGuard::None, None, Map::new())).await,
        ),
        (
            "auto_thread_info",
            resolved(handle.auto_thread_info("chan1", WAIT)).await,
        ),
        (
            "send_draft",
            resolved(handle.send_draft("chan1", 1, "partial", Map::new())).await,
        ),
        (
            "abandon_open_draft",
            resolved(handle.abandon_open_draft("chan1", "stopped")).await,
        ),
        (
            "prompt",
            resolved(
                handle.prompt(
                    PromptRequest::new("abc123.00000001", "chan1", "ok?")
                        .with_option(PromptOption::new("yes", "Yes")),
                ),
            )
            .await,
        ),
    ];
    for (op, r) in &results {
        assert!(!r.success && !r.ambiguous && !r.declined, "{op}: {r:?}");
        assert_eq!(r.error.as_deref(), Some(UNSUPPORTED), "{op}: {r:?}");
        assert!(r.raw.contains(UNSUPPORTED), "{op}: {r:?}");
    }
    tokio::time::timeout(WAIT, handle.processing_start(event_json.clone()))
        .await
        .expect("processing_start resolves")
        .expect("done");
    tokio::time::timeout(
        WAIT,
        handle.processing_complete(event_json, ProcessingOutcome::Success),
    )
    .await
    .expect("processing_complete resolves")
    .expect("done");

    // No 0.2 queries: minting is an error naming why, the flags are false.
    let minted = tokio::time::timeout(WAIT, handle.mint_prompt("chan1", "approval"))
        .await
        .expect("mint_prompt resolves");
    match minted {
        Err(AdapterError::Unsupported(reason)) => assert_eq!(reason, UNSUPPORTED),
        other => panic!("expected Unsupported, got {other:?}"),
    }
    let error = handle.mint_prompt("chan1", "approval").await.unwrap_err();
    assert_eq!(error.to_string(), UNSUPPORTED);
    assert!(
        !handle
            .supports_draft_streaming("chan1")
            .await
            .expect("query")
    );
    assert!(
        !handle
            .prefers_fresh_final("chan1", "see https://example.com")
            .await
            .expect("query")
    );

    // The instance is fine, and the only frame it wrote is this send's.
    assert!(send(&handle, "chan1", "still here").await.success);
    stub.wait_for_frame_type("outbound", WAIT).await.unwrap();
    let ops: Vec<Option<String>> = stub
        .frames_of_type("outbound")
        .iter()
        .map(|f| f.op().map(str::to_owned))
        .collect();
    assert_eq!(ops, vec![Some("send".to_owned())]);
    handle.shutdown().await.expect("shutdown");
}

/// The native engine feeds the lanes the same machine commands the
/// component's `lane` export builds.
#[tokio::test]
async fn the_native_plugin_serves_the_lanes() {
    let native = Plugin::native().expect("native plugin");
    let stub = stub_with(lane_descriptor()).await;
    let (handle, mut events) = spawn_on(&native, config(&stub)).await;
    handshake(&stub, &mut events, 1).await;
    let created = tokio::time::timeout(WAIT, handle.create_thread("chan1", " Notes ", Map::new()))
        .await
        .expect("create_thread resolves");
    assert_eq!(created.created_thread_id(), Some("th1"), "{created:?}");
    let reacted = tokio::time::timeout(WAIT, handle.react("chan1", "m1", "👀", true, Map::new()))
        .await
        .expect("react resolves");
    assert!(reacted.success, "{reacted:?}");
    let actions: Vec<Value> = stub
        .frames_of_type("outbound")
        .into_iter()
        .map(|f| f.json.unwrap()["action"].clone())
        .collect();
    assert_eq!(actions[0]["op"], "thread_create");
    assert_eq!(actions[0]["thread_name"], "Notes");
    assert_eq!(actions[1]["op"], "react");
    assert_eq!(actions[1]["remove"], true);
    handle.shutdown().await.expect("shutdown");
}

/// The native engine answers the 0.2 queries from its machine: minting
/// (with the configured nonce) and the draft flags.
#[tokio::test]
async fn the_native_plugin_mints_prompts_and_answers_the_draft_queries() {
    let native = Plugin::native().expect("native plugin");
    let mut d = descriptors::discord();
    d["supports_draft_streaming"] = json!(true);
    d["supported_ops"] = json!(["send", "draft", "prompt"]);
    let stub = stub_with(StubConfig::default().with_descriptor("discord", d)).await;
    let mut c = config(&stub);
    c.identities = vec![Identity::new("discord", "B1")];
    c.prompt_nonce = Some("0a1b2c".into());
    let (handle, mut events) = spawn_on(&native, c).await;
    handshake(&stub, &mut events, 1).await;
    let id = handle.mint_prompt("chan1", "approval").await.expect("mint");
    assert!(id.starts_with("0a1b2c."), "{id}");
    assert!(
        handle
            .supports_draft_streaming("chan1")
            .await
            .expect("query")
    );
    assert!(
        !handle
            .prefers_fresh_final("chan1", "https://x.example")
            .await
            .expect("query")
    );
    let sent = tokio::time::timeout(
        WAIT,
        handle.prompt(
            PromptRequest::new(&id, "chan1", "ok?").with_option(PromptOption::new("yes", "Yes")),
        ),
    )
    .await
    .expect("prompt resolves");
    assert!(sent.success, "{sent:?}");
    let f = stub
        .wait_for_frame(|f| f.op() == Some("prompt"), WAIT)
        .await
        .unwrap();
    assert_eq!(f.get("action").unwrap()["prompt_id"], id.as_str());
    handle.shutdown().await.expect("shutdown");
}

/// A prompt nonce that is not 6 lowercase hex digits fails the spawn
/// before anything is dialed.
#[tokio::test]
async fn a_bad_prompt_nonce_is_refused_at_spawn() {
    let stub = stub().await;
    for bad in ["ABC123", "abc12", "abc1234", "xyz123", ""] {
        let mut c = config(&stub);
        c.prompt_nonce = Some(bad.into());
        match Adapter::spawn(plugin(), c).await {
            Err(AdapterError::Config(why)) => {
                assert!(why.contains("prompt_nonce"), "{bad:?}: {why}")
            }
            other => panic!(
                "{bad:?}: expected a config error, got {:?}",
                other.map(|_| ())
            ),
        }
    }
    assert_eq!(stub.connections().len(), 0, "nothing dialed");
}

/// A burst of sends made back to back, on a 0.2 component (gathered into
/// `send-batch` calls), a 0.1 component (one `send` each) and the native
/// engine: every send goes out once, in the order it was made, and
/// resolves once with its own result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_sends_goes_out_in_order_on_both_versions() {
    let old = Plugin::from_file(FIXTURE_0_1_0).expect("the 0.1.0 component loads");
    let native = Plugin::native().expect("native plugin");
    for plugin in [plugin(), &old, &native] {
        let stub = stub().await;
        let (handle, mut events) = spawn_on(plugin, config(&stub)).await;
        handshake(&stub, &mut events, 1).await;
        let texts: Vec<String> = (0..64).map(|i| format!("burst {i}")).collect();
        let sends: Vec<_> = texts
            .iter()
            .map(|text| handle.send("chan1", text, None, Map::new(), None))
            .collect();
        let results = tokio::time::timeout(WAIT, futures_util::future::join_all(sends))
            .await
            .expect("every send resolves");
        for result in &results {
            assert!(result.success, "{result:?}");
        }
        let ids: std::collections::HashSet<_> =
            results.iter().map(|r| r.message_id.clone()).collect();
        assert_eq!(ids.len(), 64, "one result each: {ids:?}");
        let frames = stub
            .wait_for_frames(64, |f| f.frame_type() == Some("outbound"), WAIT)
            .await
            .unwrap();
        let contents: Vec<String> = frames
            .iter()
            .map(|f| {
                f.json.as_ref().unwrap()["action"]["content"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(contents, texts, "api {:?}", plugin.api());
        handle.shutdown().await.expect("shutdown");
    }
}

// ------------------------------------------- test guest: sandbox

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_guest_stdio_is_logged_and_the_adapter_keeps_running() {
    let logs = global_logs();
    let stub = stub().await;
    let (handle, mut events) = spawn_on(test_plugin(), config(&stub)).await;
    handshake(&stub, &mut events, 1).await;

    let text = format!("test guest stdio line {}", stub.addr().port());
    stub.send_frame(&json!({"type": "__test_stdio", "text": text}))
        .await
        .unwrap();
    logs.wait_for(&format!("{text} (stdout)")).await;
    let stderr_lines: Vec<String> = logs
        .lines_with(&text)
        .into_iter()
        .filter(|l| !l.contains("(stdout)"))
        .collect();
    assert_eq!(stderr_lines.len(), 1, "{stderr_lines:?}");
    assert!(
        stderr_lines[0].contains("WARN") && stderr_lines[0].contains("stderr"),
        "{stderr_lines:?}"
    );

    let result = send(&handle, "chan1", "still alive").await;
    assert!(result.success, "{result:?}");
    assert!(
        events
            .try_next()
            .is_none_or(|e| !matches!(e, Event::Fatal { .. }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_guest_panic_fails_pending_requests_emits_fatal_and_restarts() {
    let stub = stub().await;
    stub.set_outbound_reply(None, OutboundReply::NoAnswer);
    let (handle, mut events) = spawn_on(test_plugin(), config(&stub)).await;
    handshake(&stub, &mut events, 1).await;

    let pending = tokio::spawn({
        let handle = handle.clone();
        async move { send(&handle, "chan1", "in flight").await }
    });
    stub.wait_for_pending_request(WAIT).await.unwrap();
    stub.send_frame(&json!({"type": "__test_panic"}))
        .await
        .unwrap();

    let (code, message, retryable) = fatal(&mut events).await;
    assert_eq!(code, "guest_trap");
    assert!(retryable);
    assert!(message.contains("test guest panic requested"), "{message}");
    let lost = pending.await.unwrap();
    assert!(!lost.success);
    assert_eq!(lost.error.as_deref(), Some("relay adapter stopped"));
    assert!(
        lost.ambiguous,
        "the frame was written before the instance died"
    );
    match stub.wait_for_close(0, WAIT).await.unwrap() {
        ConnState::Closed { code, .. } => assert_eq!(code, Some(1011)),
        other => panic!("expected a close, got {other:?}"),
    }

    // A fresh instance dials again and works.
    handshake(&stub, &mut events, 2).await;
    stub.set_outbound_reply(None, OutboundReply::Success);
    let result = send(&handle, "chan1", "after the restart").await;
    assert!(result.success, "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_guest_shutdown_during_a_restart_stops_for_good() {
    let stub = stub().await;
    let mut config = config(&stub);
    // A restart backoff long enough to call shutdown inside it.
    config.limits.restart_initial = Duration::from_millis(500);
    let (handle, mut events) = spawn_on(test_plugin(), config).await;
    handshake(&stub, &mut events, 1).await;
    stub.send_frame(&json!({"type": "__test_panic"}))
        .await
        .unwrap();
    let (code, _, retryable) = fatal(&mut events).await;
    assert_eq!((code.as_str(), retryable), ("guest_trap", true));
    tokio::time::timeout(WAIT, handle.shutdown())
        .await
        .expect("shutdown resolves")
        .expect("shutdown during a restart succeeds");
    wait_until("the adapter ends", || !handle.is_running()).await;
    let redial = stub
        .wait_for_connections(2, Duration::from_millis(800))
        .await;
    assert!(redial.is_err(), "no instance comes back after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_guest_runaway_call_is_interrupted_by_the_cpu_budget() {
    let stub = stub().await;
    let mut config = config(&stub);
    config.limits.call_budget = Duration::from_millis(50);
    let (handle, mut events) = spawn_on(test_plugin(), config).await;
    handshake(&stub, &mut events, 1).await;

    let started = std::time::Instant::now();
    stub.send_frame(&json!({"type": "__test_spin"}))
        .await
        .unwrap();
    let (code, message, _) = fatal(&mut events).await;
    assert_eq!(code, "guest_trap");
    assert!(message.contains("interrupt"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(5));
    handshake(&stub, &mut events, 2).await;
    assert!(send(&handle, "chan1", "after the restart").await.success);
}

#[tokio::test]
async fn test_guest_growing_past_the_memory_cap_traps() {
    let stub = stub().await;
    let mut config = config(&stub);
    config.limits.memory_bytes = 16 << 20;
    let (_handle, mut events) = spawn_on(test_plugin(), config).await;
    handshake(&stub, &mut events, 1).await;

    stub.send_frame(&json!({"type": "__test_grow"}))
        .await
        .unwrap();
    let (code, message, _) = fatal(&mut events).await;
    assert_eq!(code, "guest_trap");
    assert!(message.contains("growing memory"), "{message}");
    handshake(&stub, &mut events, 2).await;
}

#[tokio::test]
async fn test_guest_import_flood_is_contained() {
    let logs = capture_logs();
    let stub = stub().await;
    let mut config = config(&stub);
    // Generous: the floods below must finish within one call.
    config.limits.call_budget = Duration::from_secs(3);
    let (handle, mut events) = spawn_on(test_plugin(), config).await;
    handshake(&stub, &mut events, 1).await;

    // 20 000 `log` calls in one export call: 1 000 reach the logs, the rest
    // are counted and reported once.
    stub.send_frame(&json!({"type": "__test_flood", "import": "log", "count": 20_000}))
        .await
        .unwrap();
    logs.wait_for("19000 lines suppressed").await;
    assert_eq!(logs.lines_with("test guest flood line").len(), 1000);
    assert_eq!(logs.lines_with("lines suppressed").len(), 1);

    // 2 000 `deliver` calls in one export call: all arrive, in order.
    stub.send_frame(&json!({"type": "__test_flood", "import": "deliver", "count": 2_000}))
        .await
        .unwrap();
    for n in 1..=2000 {
        let event = message(&mut events).await;
        assert_eq!(event.text, format!("flood {n}"));
    }

    // The host stayed up and the instance still works.
    let result = send(&handle, "chan1", "after the floods").await;
    assert!(result.success, "{result:?}");
    assert_eq!(stub.connections().len(), 1, "no restart");
    while let Some(event) = events.try_next() {
        assert!(!matches!(event, Event::Fatal { .. }), "{event:?}");
    }
}

#[tokio::test]
async fn test_guest_endless_import_flood_is_cut_by_the_cpu_budget() {
    let logs = capture_logs();
    let stub = stub().await;
    let mut config = config(&stub);
    config.limits.call_budget = Duration::from_millis(50);
    let (_handle, mut events) = spawn_on(test_plugin(), config).await;
    handshake(&stub, &mut events, 1).await;

    stub.send_frame(&json!({"type": "__test_flood", "import": "log"}))
        .await
        .unwrap();
    let (code, message, _) = fatal(&mut events).await;
    assert_eq!(code, "guest_trap");
    assert!(message.contains("interrupt"), "{message}");
    logs.wait_for("lines suppressed").await;
    assert_eq!(logs.lines_with("test guest flood line").len(), 1000);
    handshake(&stub, &mut events, 2).await;
}

#[tokio::test]
async fn test_guest_dial_target_outside_the_connector_is_refused() {
    let logs = capture_logs();
    let stub = stub().await;
    let (_handle, mut events) = spawn_on(test_plugin(), config(&stub)).await;
    handshake(&stub, &mut events, 1).await;
    let port = stub.addr().port();

    // Another port, and the right port over another scheme: refused.
    for url in [
        "ws://127.0.0.1:9/relay".to_string(),
        format!("wss://127.0.0.1:{port}/relay"),
    ] {
        stub.send_frame(&json!({"type": "__test_dial", "url": url}))
            .await
            .unwrap();
    }
    logs.wait_for("test dial 2 failed (0): dial target refused")
        .await;
    logs.wait_for("test dial 3 failed (0): dial target refused")
        .await;
    assert_eq!(
        logs.lines_with("dial target refused: not the configured connector")
            .len(),
        2
    );
    // The connector's own scheme, host and port are allowed.
    stub.send_frame(&json!({"type": "__test_dial", "url": format!("ws://127.0.0.1:{port}/relay")}))
        .await
        .unwrap();
    logs.wait_for("test dial 4 opened").await;
    assert_eq!(stub.connections().len(), 2);
}

// ------------------------------------------- real component: memory

/// The longest line `make(n)` builds within `max` bytes (newline excluded):
/// `make`'s length must grow with `n`.
fn longest_line(max: usize, make: impl Fn(usize) -> String) -> String {
    let (mut lo, mut hi) = (0usize, max);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if make(mid).len() <= max {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let line = make(lo);
    assert!(line.len() <= max && line.len() + 16 > max, "{}", line.len());
    line
}

/// An inbound event in its own chat `n`, with realistic (snowflake-sized) ids.
fn chat_event(n: usize) -> Value {
    let mut event = events::discord_text(&format!("message {n}"));
    let id = format!("{:019}", 1_100_000_000_000_000_000u64 + n as u64);
    event["message_id"] = json!(id);
    let source = &mut event["source"];
    source["chat_id"] = json!(format!("{:019}", 1_200_000_000_000_000_000u64 + n as u64));
    source["scope_id"] = json!(format!("{:019}", 1_300_000_000_000_000_000u64 + n as u64));
    source["user_id"] = json!(format!("{:019}", 1_400_000_000_000_000_000u64 + n as u64));
    source["message_id"] = json!(id);
    event
}

async fn guest_memory(handle: &AdapterHandle) -> usize {
    handle.health().await.expect("health").guest_memory_bytes
}

/// Measures the real component's linear memory at default bounds, the
/// figure [`relay_host::DEFAULT_MEMORY_BYTES`] is sized from: routing cache
/// and seen-set full, then one maximal line (1 MiB) of each expensive shape.
/// Run with `--nocapture` to see the figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_memory_peak_at_default_bounds_fits_the_cap() {
    let stub = stub().await;
    let config = config(&stub);
    let defaults = AdapterConfig::default();
    assert_eq!(config.route_capacity, defaults.route_capacity);
    assert_eq!(config.seen_capacity, defaults.seen_capacity);
    assert_eq!(config.max_line_bytes, 1 << 20);
    assert_eq!(config.limits.memory_bytes, relay_host::DEFAULT_MEMORY_BYTES);
    let (route_capacity, seen_capacity) = (config.route_capacity, config.seen_capacity);
    let max_line = config.max_line_bytes as usize;
    let (handle, mut events) = spawn(config).await;
    handshake(&stub, &mut events, 1).await;
    let started = guest_memory(&handle).await;

    // Fill the routing cache and the seen-set: one accepted message per chat,
    // in batches below `max_undelivered` (256) so the adapter never sheds load.
    let chats = route_capacity as usize + 128;
    for batch in (0..chats).collect::<Vec<_>>().chunks(128) {
        for &n in batch {
            stub.push_inbound(chat_event(n)).await.unwrap();
        }
        for _ in batch {
            message(&mut events).await.accept();
        }
    }
    let stats = stats_until(&handle, "the caches to fill", |s| {
        // The cache holds its capacity plus the routes still held for a
        // reply (nobody replies here): more routes, more memory.
        s["routes"].as_u64() >= Some(u64::from(route_capacity))
            && s["seen"] == seen_capacity
            && s["undelivered"] == 0
    })
    .await;
    assert_eq!(stats["deliveries"], chats, "{stats}");
    let caches_full = guest_memory(&handle).await;

    // Maximal lines (1 MiB), one of each expensive shape found by probing
    // every field the component parses into a JSON tree or a list; a small
    // message after each proves it was handled.
    let mut after = Vec::new();
    for (shape, line) in maximal_lines(max_line) {
        let t0 = std::time::Instant::now();
        stub.send_text(format!("{line}\n")).await.unwrap();
        stub.push_inbound(events::discord_text("sync"))
            .await
            .unwrap();
        next_event(&mut events, "the sync message", |e| match e {
            Event::Message(m) => {
                let sync = m.text == "sync";
                m.accept();
                sync.then_some(())
            }
            Event::Fatal { message, .. } => panic!("{shape}: {message}"),
            _ => None,
        })
        .await;
        let now = guest_memory(&handle).await;
        let calls = handle.health().await.unwrap().guest_call_max_ms;
        println!(
            "guest memory after a maximal line ({shape}): {now} bytes, {:?} max call {calls} ms",
            t0.elapsed()
        );
        after.push((shape, now));
    }
    let health = handle.health().await.unwrap();
    assert_eq!(health.state, Some(State::Ready));
    assert_eq!(health.restarts, 0);
    let peak = health.guest_memory_peak_bytes;
    println!(
        "guest memory: {started} bytes ready, {caches_full} with {route_capacity} routes and \
         {seen_capacity} seen keys, peak {peak} bytes; cap {} bytes",
        health.memory_limit_bytes
    );
    assert!(after.iter().all(|(_, m)| *m <= peak));
    // The default cap keeps at least 2x headroom over the measured peak.
    assert!(
        peak.saturating_mul(2) <= health.memory_limit_bytes,
        "peak {peak} vs cap {}",
        health.memory_limit_bytes
    );
    let stats = handle.stats().await.unwrap();
    assert_eq!(stats["guest_memory_peak_bytes"], peak, "{stats}");
    assert_eq!(stats["restarts"], 0, "{stats}");
}

/// The most expensive 1 MiB lines for the component's memory, by shape:
/// plain text, and lists of tiny JSON values in the fields it parses into
/// trees or lists (measured per shape on fresh adapters: `context` of empty
/// objects is the worst, about 37 MiB for one line).
fn maximal_lines(max: usize) -> Vec<(&'static str, String)> {
    let zeros = |n: usize| format!("[{}0]", "0,".repeat(n));
    let strings = |n: usize| format!("[{}\"x\"]", "\"x\",".repeat(n));
    let objects = |n: usize| format!("[{}{{}}]", "{},".repeat(n));
    let inbound_with = |field: &str, list: &dyn Fn(usize) -> String| {
        longest_line(max, |n| {
            format!(
                r#"{{"type":"inbound","event":{{"text":"t","message_id":"big-{field}","source":{{"platform":"discord","chat_id":"big","chat_type":"group"}},"{field}":{}}}}}"#,
                list(n)
            )
        })
    };
    vec![
        (
            "plain text",
            longest_line(max, |n| {
                inbound_frame(json!({"text": "x".repeat(n), "message_id": "big-text",
                    "source": {"platform": "discord", "chat_id": "big", "chat_type": "group"}}))
                .to_string()
            }),
        ),
        (
            "context of empty objects",
            inbound_with("context", &objects),
        ),
        ("media of empty objects", inbound_with("media", &objects)),
        (
            "media_urls of short strings",
            inbound_with("media_urls", &strings),
        ),
        (
            "passthrough body of zeros",
            longest_line(max, |n| {
                inbound_passthrough(&format!(
                    r#"{{"type":2,"id":"big-pt","channel_id":"big","guild_id":"g1","data":{{"name":"big"}},"member":{{"user":{{"id":"u1","username":"ben"}}}},"pad":{}}}"#,
                    zeros(n)
                ))
            }),
        ),
        (
            "passthrough headers of empty objects",
            longest_line(max, |n| {
                format!(
                    r#"{{"type":"passthrough_forward","forward":{{"platform":"discord","botId":"B1","method":"POST","path":"/x","headers":{},"bodyB64":""}}}}"#,
                    objects(n)
                )
            }),
        ),
        (
            "descriptor ops of zeros",
            longest_line(max, |n| {
                format!(
                    r#"{{"type":"descriptor","descriptor":{{"contract_version":1,"platform":"discord","label":"Big","max_message_length":2000,"supports_draft_streaming":false,"supports_edit":true,"supports_threads":true,"markdown_dialect":"discord","len_unit":"chars","supported_ops":{}}}}}"#,
                    zeros(n)
                )
            }),
        ),
    ]
}

/// A `passthrough_forward` line carrying `body` (standard base64).
fn inbound_passthrough(body: &str) -> String {
    Deliverable::Passthrough(relay_stub::Passthrough::new("discord", "B1").body(body))
        .to_frame(None)
        .to_string()
}

/// Polls the adapter's stats until `cond` holds or [`WAIT`] passes.
async fn stats_until(handle: &AdapterHandle, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stats = handle.stats().await.expect("stats");
        if cond(&stats) {
            return stats;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ------------------------------------------- restarts and isolation

/// Waits until the event stream ends.
async fn stream_ends(events: &mut EventStream) {
    let end = async { while events.next().await.is_some() {} };
    tokio::time::timeout(WAIT, end)
        .await
        .expect("the event stream ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_guest_restart_budget_stops_restarts_and_the_adapter_stays_down() {
    let stub = stub().await;
    let mut config = config(&stub);
    config.limits.restart_budget = 2;
    config.limits.restart_window = Duration::from_secs(60);
    let (handle, mut events) = spawn_on(test_plugin(), config).await;

    // Two traps fit the budget: each one restarts the component.
    for n in 1..=2 {
        handshake(&stub, &mut events, n).await;
        stub.send_frame(&json!({"type": "__test_panic"}))
            .await
            .unwrap();
        let (code, _, retryable) = fatal(&mut events).await;
        assert_eq!((code.as_str(), retryable), ("guest_trap", true));
    }
    handshake(&stub, &mut events, 3).await;
    assert_eq!(handle.health().await.unwrap().restarts, 2);

    // The third does not: one non-retryable Fatal, then the stream ends.
    stub.send_frame(&json!({"type": "__test_panic"}))
        .await
        .unwrap();
    let (code, message, retryable) = fatal(&mut events).await;
    assert_eq!(code, "restart_budget_exhausted");
    assert!(!retryable);
    assert!(message.contains("2 restarts within 60 s"), "{message}");
    assert!(message.contains("test guest panic requested"), "{message}");
    stream_ends(&mut events).await;

    // Every call fails at once with a clear, non-ambiguous error.
    let result = send(&handle, "chan1", "after the budget").await;
    assert!(!result.success && !result.ambiguous, "{result:?}");
    let error = result.error.unwrap();
    assert!(
        error.starts_with("relay adapter down: restart budget exhausted"),
        "{error}"
    );
    match handle.state().await {
        Err(AdapterError::Down(reason)) => {
            assert!(reason.contains("restart budget exhausted"), "{reason}")
        }
        other => panic!("expected Down, got {other:?}"),
    }
    assert!(matches!(
        handle.get_chat_info("chan1").await,
        Err(AdapterError::Down(_))
    ));
    let health = handle.health().await.unwrap();
    assert_eq!(health.state, None);
    assert_eq!(health.restarts, 2);
    assert!(health.down.is_some_and(|d| d.contains("restart budget")));
    assert!(!handle.is_running());
    // Nothing is dialed any more.
    let more = stub
        .wait_for_connections(4, Duration::from_millis(300))
        .await;
    assert!(
        more.is_err(),
        "no dial after the budget: {:?}",
        stub.connections()
    );
    // Shutting a down adapter down resolves and ends its task.
    handle.shutdown().await.unwrap();
    let late = send(&handle, "chan1", "after the shutdown").await;
    assert_eq!(late.error.as_deref(), Some("relay adapter stopped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_guest_a_trapping_adapter_does_not_disturb_another_one() {
    let bad_stub = stub().await;
    let good_stub = stub().await;
    let mut bad_config = config(&bad_stub);
    bad_config.limits.restart_budget = 3;
    bad_config.limits.call_budget = Duration::from_millis(200);
    bad_config.limits.memory_bytes = 16 << 20;
    let (bad, mut bad_events) = spawn_on(test_plugin(), bad_config).await;
    // The healthy adapter runs the real component on the same engine thread
    // pool and in the same process.
    let (good, mut good_events) = spawn(config(&good_stub)).await;
    handshake(&good_stub, &mut good_events, 1).await;

    let faults = ["__test_panic", "__test_spin", "__test_grow", "__test_panic"];
    for (round, fault) in faults.iter().enumerate() {
        handshake(&bad_stub, &mut bad_events, round + 1).await;
        bad_stub.send_frame(&json!({"type": fault})).await.unwrap();
        // While the other one traps (or spins for its whole budget), this
        // one delivers and sends.
        let text = format!("still here {round}");
        good_stub
            .push_inbound(events::discord_text(&text))
            .await
            .unwrap();
        let m = message(&mut good_events).await;
        assert_eq!(m.text, text);
        m.accept();
        let result = send(&good, "chan1", &format!("reply {round}")).await;
        assert!(result.success, "{result:?}");
        let (code, message, _) = fatal(&mut bad_events).await;
        let want = if round < 3 {
            "guest_trap"
        } else {
            "restart_budget_exhausted"
        };
        assert_eq!(code, want, "{fault}: {message}");
    }
    assert!(!bad.is_running());
    let health = good.health().await.unwrap();
    assert_eq!(health.state, Some(State::Ready));
    assert_eq!(health.restarts, 0);
    assert_eq!(good_stub.connections().len(), 1, "never reconnected");
    assert!(send(&good, "chan1", "after it went down").await.success);
}

#[tokio::test]
async fn a_fresh_instance_has_no_routes_until_prime_route_restores_reattachment() {
    // A restarted component starts with an empty routing cache, like this
    // fresh one; `prime_route` is how a gateway restores re-attachment.
    let stub = stub().await;
    let (handle, mut events) = spawn(config(&stub)).await;
    handshake(&stub, &mut events, 1).await;
    assert_eq!(handle.stats().await.unwrap()["routes"], 0);

    assert!(send(&handle, "chan7", "unrouted").await.success);
    let frame = stub
        .wait_for_frame(|f| f.op() == Some("send"), WAIT)
        .await
        .unwrap();
    let metadata = &frame.json.unwrap()["action"]["metadata"];
    assert_eq!(metadata, &json!({}), "nothing to re-attach yet");

    handle
        .prime_route(
            "chan7",
            "discord",
            Some("guild7".into()),
            Some("user7".into()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(handle.stats().await.unwrap()["routes"], 1);
    assert!(send(&handle, "chan7", "primed").await.success);
    let frames = stub
        .wait_for_frames(2, |f| f.op() == Some("send"), WAIT)
        .await
        .unwrap();
    let primed = frames[1].json.as_ref().unwrap();
    assert_eq!(
        primed["action"]["metadata"],
        json!({"scope_id": "guild7", "user_id": "user7"}),
        "{primed}"
    );
    assert_eq!(primed["platform"], "discord", "{primed}");
}

// ------------------------------------------- capabilities: the secret

/// Every `tracing` record at TRACE and above, for one current-thread test.
fn capture_trace_logs() -> relay_test_support::TestLogs {
    relay_test_support::capture_logs_at(tracing::Level::TRACE)
}

#[tokio::test]
async fn the_secret_appears_nowhere_in_a_full_scenario() {
    const SECRET: &str = "Zq8-distinctive-relay-secret-4f1c";
    let logs = capture_trace_logs();
    let stub = stub_with(StubConfig::default().with_secret(SECRET)).await;
    let mut config = config(&stub);
    config.gateway_id = "gw-secret".into();
    config.secret = Some(Secret::new(SECRET));
    // Everything that can be printed, collected here and searched at the end.
    let mut seen: Vec<String> = vec![format!("{config:?}"), format!("{:?}", config.limits)];
    let (handle, mut events) = spawn(config).await;
    seen.push(format!("{handle:?} {events:?} {:?}", plugin()));

    // Every event, as the gateway would Debug-print it.
    let debug_events = |events: &mut EventStream, seen: &mut Vec<String>| {
        while let Some(event) = events.try_next() {
            seen.push(format!("{event:?}"));
        }
    };
    handshake(&stub, &mut events, 1).await;
    debug_events(&mut events, &mut seen);

    // Inbound, accepted, and a reply.
    stub.push_inbound(events::discord_text("hello"))
        .await
        .unwrap();
    let m = message(&mut events).await;
    seen.push(format!("{m:?}"));
    m.accept();
    let sent = send(&handle, "chan1", "reply").await;
    assert!(sent.success, "{sent:?}");
    seen.push(format!("{sent:?}"));
    stub.queue_outbound_reply(Some("send"), OutboundReply::EgressDeclined);
    seen.push(format!("{:?}", send(&handle, "chan1", "declined").await));
    seen.push(format!("{:?}", handle.stats().await));
    seen.push(format!("{:?}", handle.health().await));

    // 4401 after the handshake: one immediate re-dial with a fresh token,
    // which the stub accepts (the secret is still valid).
    stub.close(4401, "unauthorized").await.unwrap();
    handshake(&stub, &mut events, 2).await;
    debug_events(&mut events, &mut seen);
    let conns = stub.connections();
    assert_eq!(conns.len(), 2);
    assert!(
        conns
            .iter()
            .all(|c| c.gateway_id.as_deref() == Some("gw-secret"))
    );

    // Shutdown, then a call on the stopped adapter.
    handle.shutdown().await.unwrap();
    stream_ends(&mut events).await;
    seen.push(format!("{:?}", send(&handle, "chan1", "late").await));
    seen.push(format!("{:?}", handle.state().await));
    seen.push(format!("{:?}", handle.shutdown().await));

    // The wire: every frame the stub recorded, every connection record
    // (headers included: the bearer token is derived from the secret, it is
    // not the secret).
    for frame in stub.frames() {
        seen.push(frame.raw.clone());
    }
    seen.push(format!("{:?}", stub.state()));
    let logs = logs.text();
    // The capture really holds the scenario: debug lines, the fresh-token
    // re-dial, and the bearer headers.
    assert!(logs.contains("DEBUG"), "captured: {logs}");
    assert!(logs.contains("re-dial with a fresh token"), "{logs}");
    assert!(seen.iter().any(|s| s.contains("Bearer ")));
    for (i, text) in seen.iter().chain(std::iter::once(&logs)).enumerate() {
        assert!(
            !text.contains(SECRET),
            "the secret leaked in item {i}: {text}"
        );
    }
}

/// Issue 19: an opened connection reports exactly one close to the
/// component, even when its task is cancelled (or panics) instead of
/// reaching one of its own close reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_connection_task_still_reports_exactly_one_close() {
    let stub = stub().await;
    let reports = relay_host::probe::reports_of_a_cancelled_connection(
        &stub.url(),
        Duration::from_millis(300),
    )
    .await
    .unwrap();
    assert_eq!(reports, ["opened", "closed 1006"]);
}

/// Issue 19: every out-of-range bound is refused at spawn with a message
/// naming it (before, zero caps and inverted ladders were accepted and
/// misbehaved later).
#[tokio::test]
async fn out_of_range_configuration_is_refused_naming_each_value() {
    type Edit = fn(&mut AdapterConfig);
    let cases: &[(&str, Edit)] = &[
        ("max_pending must be at least 1", |c| c.max_pending = 0),
        ("max_undelivered must be at least 1", |c| {
            c.max_undelivered = 0
        }),
        ("seen_capacity must be at least 1", |c| c.seen_capacity = 0),
        ("route_capacity must be at least 1", |c| {
            c.route_capacity = 0
        }),
        ("max_line_bytes must be at least 1024", |c| {
            c.max_line_bytes = 100
        }),
        ("token_ttl_secs must be within", |c| c.token_ttl_secs = 0),
        ("reconnect_jitter must be within", |c| {
            c.reconnect_jitter = Some(f64::NAN)
        }),
        ("handshake_timeout must be longer than 0", |c| {
            c.handshake_timeout = Duration::ZERO
        }),
        ("outbound_timeout must be at most 7 days", |c| {
            c.outbound_timeout = Duration::from_secs(u64::MAX / 4)
        }),
        ("reconnect_initial must not exceed reconnect_max", |c| {
            c.reconnect_initial = Duration::from_secs(60);
            c.reconnect_max = Duration::from_secs(30);
        }),
        (
            "limits.ping_interval must be shorter than limits.ping_timeout",
            |c| {
                c.limits.ping_interval = Duration::from_secs(60);
                c.limits.ping_timeout = Duration::from_secs(60);
            },
        ),
        (
            "limits.restart_initial must not exceed limits.restart_max",
            |c| {
                c.limits.restart_initial = Duration::from_secs(40);
            },
        ),
        ("limits.memory_bytes must be at least 16777216", |c| {
            c.limits.memory_bytes = 1 << 20
        }),
        ("limits.memory_bytes must be at least 67108864", |c| {
            c.max_line_bytes = 8 << 20;
            c.limits.memory_bytes = 32 << 20;
        }),
        ("limits.call_budget must be longer than 0", |c| {
            c.limits.call_budget = Duration::ZERO
        }),
        ("limits.max_instances must be at least 1", |c| {
            c.limits.max_instances = 0
        }),
        ("limits.restart_window must be longer than 0", |c| {
            c.limits.restart_window = Duration::ZERO
        }),
    ];
    for (needle, edit) in cases {
        let mut config = AdapterConfig::new("ws://127.0.0.1:9/relay");
        edit(&mut config);
        match Adapter::spawn(plugin(), config).await {
            Err(AdapterError::Config(text)) => {
                assert!(text.contains(needle), "{needle:?} not in {text:?}")
            }
            Err(other) => panic!("{needle}: {other}"),
            Ok(_) => panic!("{needle}: accepted"),
        }
    }
    // Several at once are all named; the defaults pass.
    let mut config = AdapterConfig::new("ws://127.0.0.1:9/relay");
    config.max_pending = 0;
    config.limits.connect_timeout = Duration::ZERO;
    let text = config.validate().unwrap_err();
    assert!(
        text.contains("max_pending") && text.contains("limits.connect_timeout"),
        "{text}"
    );
    assert_eq!(AdapterConfig::default().validate(), Ok(()));
}

/// A TLS front for `stub` on 127.0.0.1 whose certificate a fresh private
/// CA signed; returns its port and the CA's PEM.
async fn tls_front(stub: &StubConnector) -> (u16, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "relay test private CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let backend = stub
        .url()
        .trim_start_matches("ws://")
        .trim_end_matches("/relay")
        .to_string();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let backend = backend.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(&backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (port, ca.pem())
}

/// Issue 19: a connector behind a private CA is reached over `wss://` with
/// `ca_file`, and refused without it (the certificate is not trusted).
#[tokio::test]
async fn wss_reaches_a_connector_behind_a_private_ca_with_ca_file() {
    let logs = capture_logs();
    let stub = stub().await;
    let (port, ca_pem) = tls_front(&stub).await;
    let dir = std::env::temp_dir().join(format!("relay-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();

    // Without the CA: the dial fails on the certificate, and is retried.
    let untrusted = relay_test_support::fast(format!("https://127.0.0.1:{port}"));
    let (handle, mut events) = spawn(untrusted).await;
    state_detail(&mut events, State::Reconnecting).await;
    logs.wait_for("invalid peer certificate: UnknownIssuer")
        .await;
    assert!(
        stub.connections().is_empty(),
        "nothing reached the connector"
    );
    handle.shutdown().await.unwrap();

    // With it: ready, and traffic flows through the TLS front.
    let mut trusted = relay_test_support::fast(format!("https://127.0.0.1:{port}"));
    trusted.ca_file = Some(ca_file.clone());
    let (handle, mut events) = spawn(trusted).await;
    handshake(&stub, &mut events, 1).await;
    assert!(send(&handle, "chan1", "over tls").await.success);
    handle.shutdown().await.unwrap();

    // A file without a certificate is a configuration error naming it.
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let mut bad = relay_test_support::fast(format!("https://127.0.0.1:{port}"));
    bad.ca_file = Some(empty);
    match Adapter::spawn(plugin(), bad).await {
        Err(AdapterError::Config(text)) => {
            assert!(
                text.contains("empty.pem") && text.contains("no certificate"),
                "{text}"
            )
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("accepted a CA file without a certificate"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
