//! Host integration tests: the real relay component (`component/guest`, the
//! `relay-core` machine) on the real host, against the independent stub
//! connector (`relay-stub`) over real WebSockets on 127.0.0.1.
//!
//! Tests named `test_guest_*` load the TEST ONLY misbehaving component
//! (`component/test-guest`, built by `build.rs` as `RELAY_TEST_GUEST_WASM`):
//! connector frames `__test_panic|spin|grow|flood|stdio|dial` make it trap,
//! spin, grow, flood imports, write to stdio or dial elsewhere.
//!
//! This is the crate's only test binary (each one links wasmtime again).
//! Every wait has a deadline: the stub's waiters, [`next_event`] and
//! [`wait_until`]; timers in [`config`] are milliseconds so tests stay fast.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use relay_host::{
    Adapter, AdapterConfig, AdapterError, AdapterHandle, Event, EventStream, Identity,
    MessageEvent, Plugin, Secret, SendResult, State,
};
use relay_stub::{
    Closer, ConnState, Deliverable, Delivery, Hello, OutboundReply, StubConfig, StubConnector,
    UpgradeFate, descriptors, events,
};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Deadline of every wait.
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- plugins

/// The real relay component, compiled once per process.
fn plugin() -> &'static Plugin {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    PLUGIN.get_or_init(|| Plugin::shared().expect("the built-in component loads"))
}

/// The TEST ONLY misbehaving component, compiled once per process.
fn test_plugin() -> &'static Plugin {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    PLUGIN.get_or_init(|| {
        Plugin::from_bytes(include_bytes!(env!("RELAY_TEST_GUEST_WASM")))
            .expect("the test guest loads")
    })
}

// ---------------------------------------------------------------- logs

/// Formatted `tracing` output, for assertions on what the host logged.
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl LogBuf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    fn contains(&self, needle: &str) -> bool {
        self.text().contains(needle)
    }

    /// Lines containing `needle`.
    fn lines_with(&self, needle: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }

    /// Waits until the logs contain `needle`; on timeout, shows the logs.
    async fn wait_for(&self, needle: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.contains(needle) {
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "timed out waiting for {needle:?} in the logs; logs:\n{}",
                    self.text()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn subscriber(buf: LogBuf) -> impl tracing::Subscriber + Send + Sync {
    tracing_subscriber::fmt()
        .with_writer(move || buf.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish()
}

/// This test's logs only. A thread-local default subscriber, so only for
/// current-thread tests: there the host, the stub and the guest (on a fiber
/// of the same thread) all log on the test's thread.
struct TestLogs {
    buf: LogBuf,
    _guard: tracing::subscriber::DefaultGuard,
}

impl std::ops::Deref for TestLogs {
    type Target = LogBuf;

    fn deref(&self) -> &LogBuf {
        &self.buf
    }
}

fn capture_logs() -> TestLogs {
    global_logs();
    let buf = LogBuf::default();
    let guard = tracing::subscriber::set_default(subscriber(buf.clone()));
    TestLogs { buf, _guard: guard }
}

/// Process-wide logs (worker threads of multi-thread tests log here); shared
/// by all tests, so look for needles unique to the test.
///
/// Every test installs it before anything logs ([`stub_with`], [`spawn_on`],
/// [`capture_logs`]): `tracing` caches each callsite's interest when the
/// callsite is first hit, combined over the dispatchers alive at that moment.
/// With none alive it caches "never", and a test's scoped subscriber
/// registered concurrently can miss the rebuild, silently losing that
/// callsite's events. The global subscriber keeps one alive at all times.
fn global_logs() -> &'static LogBuf {
    static LOGS: OnceLock<LogBuf> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = LogBuf::default();
        tracing::subscriber::set_global_default(subscriber(buf.clone()))
            .expect("no other global subscriber");
        buf
    })
}

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

/// Fast timers for tests; reconnects are immediate-ish and deterministic.
fn config(stub: &StubConnector) -> AdapterConfig {
    let mut config = AdapterConfig::new(stub.url());
    config.handshake_timeout = Duration::from_secs(2);
    config.outbound_timeout = Duration::from_secs(5);
    config.reconnect_initial = Duration::from_millis(20);
    config.reconnect_max = Duration::from_millis(200);
    config.reconnect_jitter = Some(1.0);
    config.stable_connection = Duration::from_millis(50);
    config.dormant_redial = Duration::from_millis(50);
    config.going_idle_timeout = Duration::from_millis(500);
    config.drain_grace = Duration::from_millis(200);
    config.limits.connect_timeout = Duration::from_secs(2);
    config.limits.restart_initial = Duration::from_millis(20);
    config
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

/// The next event matching `pick`, skipping (and dropping) others.
async fn next_event<T>(
    events: &mut EventStream,
    what: &str,
    mut pick: impl FnMut(Event) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(event)) => {
                if let Some(found) = pick(event) {
                    return found;
                }
            }
            Ok(None) => panic!("event stream ended while waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

async fn state_detail(events: &mut EventStream, state: State) -> String {
    next_event(events, &format!("state {state}"), |e| match e {
        Event::State { state: s, detail } if s == state => Some(detail),
        _ => None,
    })
    .await
}

async fn fatal(events: &mut EventStream) -> (String, String, bool) {
    next_event(events, "a fatal event", |e| match e {
        Event::Fatal {
            code,
            message,
            retryable,
        } => Some((code, message, retryable)),
        _ => None,
    })
    .await
}

async fn message(events: &mut EventStream) -> MessageEvent {
    next_event(events, "a message event", |e| match e {
        Event::Message(m) => Some(m),
        _ => None,
    })
    .await
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
async fn an_unanswered_send_times_out_as_ambiguous() {
    let stub = stub().await;
    stub.set_outbound_reply(Some("send"), OutboundReply::NoAnswer);
    let mut config = config(&stub);
    config.outbound_timeout = Duration::from_millis(200);
    let (handle, mut events) = spawn(config).await;
    handshake(&stub, &mut events, 1).await;

    let result = send(&handle, "chan1", "into the void").await;
    assert!(!result.success);
    assert!(result.ambiguous, "{result:?}");
    assert_eq!(stub.pending_requests().len(), 1);
    let stats = handle.stats().await.unwrap();
    assert_eq!(stats["timeouts"], 1, "{stats}");
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
    let stats = handle.stats().await.unwrap();
    assert_eq!(stats["dials"], 1, "{stats}");

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
async fn interrupts_go_both_ways() {
    let stub = stub().await;
    let (handle, mut events) = spawn(config(&stub)).await;
    handshake(&stub, &mut events, 1).await;

    // connector -> gateway
    stub.interrupt_inbound("s1", "chan1").await.unwrap();
    let (key, chat) = next_event(&mut events, "an interrupt", |e| match e {
        Event::Interrupt {
            session_key,
            chat_id,
        } => Some((session_key, chat_id)),
        _ => None,
    })
    .await;
    assert_eq!((key.as_str(), chat.as_str()), ("s1", "chan1"));

    // gateway -> connector, without and with a reason
    handle
        .interrupt("agent:main:discord:group:chan1", None)
        .await
        .unwrap();
    let frame = stub.wait_for_frame_type("interrupt", WAIT).await.unwrap();
    let frame = frame.json.unwrap();
    assert_eq!(frame["session_key"], "agent:main:discord:group:chan1");
    assert_eq!(
        frame.get("reason"),
        Some(&Value::Null),
        "reason is null: {frame}"
    );
    handle
        .interrupt("s2", Some("user pressed stop".into()))
        .await
        .unwrap();
    let frames = stub
        .wait_for_frames(2, |f| f.is("interrupt"), WAIT)
        .await
        .unwrap();
    assert_eq!(frames[1].get("reason"), Some(&json!("user pressed stop")));
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

// ------------------------------------------- real component: auth

#[tokio::test]
async fn a_4401_after_the_handshake_redials_once_with_a_fresh_token_then_disables() {
    let stub = stub_with(StubConfig::default().with_secret("s3cret")).await;
    let mut config = config(&stub);
    config.gateway_id = "gw-1".into();
    config.secret = Some(Secret::new("s3cret"));
    // Only the immediate fresh-token re-dial can beat this ladder.
    config.reconnect_initial = Duration::from_secs(60);
    config.reconnect_max = Duration::from_secs(60);
    let (handle, mut events) = spawn(config).await;
    handshake(&stub, &mut events, 1).await;
    let first = stub.connections().remove(0);
    assert_eq!(first.gateway_id.as_deref(), Some("gw-1"), "token verified");

    // Tokens carry whole seconds: let the wall clock pass the first dial's
    // second so the re-dial's token is visibly fresh (a clock condition,
    // bounded, not a synchronisation).
    let second = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    wait_until("the next wall-clock second", || {
        second(SystemTime::now()) > second(first.accepted_at)
    })
    .await;
    // The secret is revoked: the re-dial's token no longer verifies.
    stub.set_secrets(vec!["rotated".into()]);
    stub.close(4401, "unauthorized").await.unwrap();

    let detail = state_detail(&mut events, State::Disabled).await;
    assert!(detail.contains("Relay disabled"), "{detail}");
    let (code, _, retryable) = fatal(&mut events).await;
    assert_eq!(code, "relay_disabled");
    assert!(!retryable);

    let conns = stub.wait_for_connections(2, WAIT).await.unwrap();
    assert_eq!(
        conns[1].state,
        ConnState::Rejected {
            code: 4401,
            reason: "unauthorized".into()
        }
    );
    let bearer = |i: usize| conns[i].header("authorization").unwrap().to_string();
    assert!(bearer(0).starts_with("Bearer ") && bearer(1).starts_with("Bearer "));
    assert_ne!(bearer(0), bearer(1), "the re-dial mints a fresh token");
    let token = relay_stub::auth::bearer_token(&bearer(1))
        .unwrap()
        .to_string();
    assert_eq!(
        relay_stub::auth::verify_token(&token, &["s3cret"], second(SystemTime::now())),
        Ok("gw-1".to_string()),
        "the fresh token is valid for the old secret"
    );

    // Terminal: nothing more is dialed.
    assert_eq!(handle.state().await.unwrap(), State::Disabled);
    handle.release_redial().await.unwrap();
    let more = stub
        .wait_for_connections(3, Duration::from_millis(300))
        .await;
    assert!(more.is_err(), "no third dial: {:?}", stub.connections());
    let stats = handle.stats().await.unwrap();
    assert_eq!(stats["dials"], 2, "{stats}");
    assert_eq!(stats["unauthorized"], 2, "{stats}");
}

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
