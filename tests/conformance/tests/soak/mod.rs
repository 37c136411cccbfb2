//! The chaos soak with a ledger (issue 19): the real component in the real
//! host, through the fault proxy, against the stub connector, for a fixed
//! number of messages both ways, while a seeded schedule injects network
//! faults, 4401 expiries (fresh-token retry), connector restarts that replay
//! their buffer, a slow gateway (overload: `going_idle`), slow results and,
//! on some seeds, guest traps. At the end the ledger proves what was
//! promised (docs/operations.md, "What you can rely on"):
//!
//! - every buffered inbound was delivered and accepted, once per component
//!   instance (a restart loses the dedupe memory; re-deliveries after one
//!   are counted apart), and acked at least once (the stub's buffer is empty);
//! - no live inbound was delivered twice;
//! - every send resolved exactly once: success only if the connector got the
//!   frame, a definite failure only if it never did, ambiguous otherwise;
//!   and the connector saw each frame at most once;
//! - the adapter is `ready` at the end, with nothing pending or undelivered,
//!   and guest memory stayed under its cap.
//!
//! Short runs are part of `cargo test` (`soak_short`: a few seeds, seconds
//! each). The long run is a documented command (docs/testing.md):
//! `RELAY_SOAK_SEEDS=1-50 RELAY_SOAK_MESSAGES=20000 cargo test --release -p
//! relay-conformance --test suite soak_long -- --ignored --nocapture`.
//! A failing run prints its seed; `RELAY_SOAK_SEEDS=N` replays it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use relay_test_support::proxy::{FaultPlan, FaultProxy};

use super::*;

const SECRET: &str = "soak-s3cret";
const GATEWAY_ID: &str = "gw-soak";
/// Sends in flight at once.
const SEND_WINDOW: usize = 32;

/// What one seed does.
#[derive(Debug, Clone, Copy)]
struct Run {
    seed: u64,
    /// Inbound messages pushed, and sends made.
    messages: usize,
    /// Whether this seed also makes the component trap mid-stream.
    traps: bool,
    /// Messages per second each way (paced, so faults land mid-stream).
    rate: u64,
}

/// What happened, for the checks and the report.
#[derive(Debug, Default)]
struct Ledger {
    /// Buffered inbound pushed: message text -> buffer id.
    buffered: HashMap<String, String>,
    /// Live inbound the stub accepted for sending.
    live: usize,
    /// Live inbound the stub could not send (no connection): lost, allowed.
    live_unsent: usize,
    /// Deliveries by message text: the instance generation of each.
    deliveries: HashMap<String, Vec<u64>>,
    /// Send results by content.
    sends: HashMap<String, SendResult>,
    /// Faults injected, by kind.
    faults: BTreeMap<&'static str, usize>,
    /// Guest traps seen (each restarts the component).
    traps: u64,
    /// Highest guest memory seen.
    max_guest_memory: usize,
}

/// Parses `RELAY_SOAK_SEEDS` (`7`, `1-50`, `3,9,12`); `default` otherwise.
fn seeds(default: &[u64]) -> Vec<u64> {
    let Ok(spec) = std::env::var("RELAY_SOAK_SEEDS") else {
        return default.to_vec();
    };
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u64, u64) = (a.parse().expect("seed"), b.parse().expect("seed"));
                out.extend(a..=b);
            }
            None => out.push(part.parse().expect("seed")),
        }
    }
    out
}

fn messages(default: usize) -> usize {
    std::env::var("RELAY_SOAK_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Every third seed makes the component trap.
fn run_of(seed: u64, messages: usize, rate: u64) -> Run {
    Run {
        seed,
        messages,
        traps: seed.is_multiple_of(3),
        rate: std::env::var("RELAY_SOAK_RATE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(rate)
            .max(1),
    }
}

/// Sleeps until message `i` is due at `run.rate` per second.
async fn pace(run: Run, started: tokio::time::Instant, i: usize) {
    if i.is_multiple_of(8) {
        let due = started + Duration::from_micros(i as u64 * 1_000_000 / run.rate);
        tokio::time::sleep_until(due).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_short() {
    let _heavy = heavy().await;
    for seed in seeds(&[1, 2, 3]) {
        let ledger = soak(run_of(seed, messages(300), 120)).await;
        report(seed, &ledger);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes: the long soak (docs/testing.md)"]
async fn soak_long() {
    let _heavy = heavy().await;
    let started = std::time::Instant::now();
    let seeds = seeds(&(1..=50).collect::<Vec<_>>());
    let mut total = Ledger::default();
    for seed in &seeds {
        let ledger = soak(run_of(*seed, messages(20_000), 600)).await;
        report(*seed, &ledger);
        total.live += ledger.live;
        total.live_unsent += ledger.live_unsent;
        total.traps += ledger.traps;
        total.max_guest_memory = total.max_guest_memory.max(ledger.max_guest_memory);
        for (kind, n) in ledger.faults {
            *total.faults.entry(kind).or_default() += n;
        }
        total.sends.extend(ledger.sends);
        total.buffered.extend(ledger.buffered);
    }
    eprintln!(
        "soak total: {} seeds in {:.1} min; {} buffered + {} live inbound ({} unsent), {} sends; \
         {} traps; faults {:?}; max guest memory {} MiB; 0 ledger violations",
        seeds.len(),
        started.elapsed().as_secs_f64() / 60.0,
        total.buffered.len(),
        total.live,
        total.live_unsent,
        total.sends.len(),
        total.traps,
        total.faults,
        total.max_guest_memory >> 20,
    );
}

fn report(seed: u64, l: &Ledger) {
    let ambiguous = l.sends.values().filter(|r| r.ambiguous).count();
    let ok = l.sends.values().filter(|r| r.success).count();
    eprintln!(
        "soak seed {seed}: {} buffered + {} live inbound ({} unsent), {} sends ({ok} ok, \
         {ambiguous} ambiguous), {} traps, faults {:?}, max guest memory {} KiB",
        l.buffered.len(),
        l.live,
        l.live_unsent,
        l.sends.len(),
        l.traps,
        l.faults,
        l.max_guest_memory >> 10,
    );
}

/// One seed: drive traffic and faults, then check the ledger (panics with
/// the seed on a violation).
async fn soak(run: Run) -> Ledger {
    let stub = StubConnector::start(StubConfig::default().with_secret(SECRET))
        .await
        .expect("stub starts");
    let upstream = stub.addr();
    let proxy = Arc::new(FaultProxy::start(upstream).await.expect("proxy starts"));
    let mut config = fast(proxy.url());
    config.gateway_id = GATEWAY_ID.into();
    config.secret = Some(Secret::new(SECRET));
    config.limits.ping_interval = Duration::from_millis(200);
    config.limits.ping_timeout = Duration::from_millis(600);
    // Every buffered key fits the dedupe memory: replays within one
    // instance are never delivered twice (the rule the ledger checks).
    config.seen_capacity = u32::try_from(run.messages * 2 + 64).unwrap_or(u32::MAX);
    config.max_undelivered = 64;
    config.limits.restart_budget = 1_000;
    if run.traps {
        // A maximal hostile line (1 MiB of empty objects in `context`)
        // needs ~38 MiB: it traps an instance capped at 24 MiB.
        config.limits.memory_bytes = 24 << 20;
    }
    let (handle, events) = Adapter::spawn(plugin(), config)
        .await
        .unwrap_or_else(|e| panic!("seed {}: spawn: {e}", run.seed));

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let done = Arc::new(AtomicBool::new(false));
    let slow_until = Arc::new(AtomicU64::new(0));
    let epoch = tokio::time::Instant::now();

    let gateway = tokio::spawn(gateway(
        events,
        Arc::clone(&ledger),
        Arc::clone(&slow_until),
        epoch,
    ));
    stub.wait_for_handshakes(1, WAIT)
        .await
        .unwrap_or_else(|e| panic!("seed {}: first handshake: {e}", run.seed));

    let faults = tokio::spawn(faults(
        run,
        stub.clone(),
        Arc::clone(&proxy),
        Arc::clone(&ledger),
        Arc::clone(&done),
        Arc::clone(&slow_until),
        epoch,
    ));
    let pusher = tokio::spawn(push_inbound(run, stub.clone(), Arc::clone(&ledger)));
    let sender = tokio::spawn(send_all(run, handle.clone(), Arc::clone(&ledger)));
    let sampler = tokio::spawn(sample_memory(
        handle.clone(),
        Arc::clone(&ledger),
        Arc::clone(&done),
    ));
    pusher.await.expect("pusher");
    sender.await.expect("sender");
    done.store(true, Ordering::SeqCst);
    faults.await.expect("faults");
    proxy.heal();
    slow_until.store(0, Ordering::SeqCst);

    // Settle: every buffered entry acked, the adapter ready and idle.
    let seed = run.seed;
    stub.wait_until(|s| s.buffer.is_empty(), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "seed {seed}: buffered inbound never acked: {e}; pending {:?}",
                stub.pending_buffer()
                    .iter()
                    .map(|b| b.buffer_id.clone())
                    .collect::<Vec<_>>()
            )
        });
    let health = settle(&handle, seed).await;
    sampler.await.expect("sampler");
    handle.shutdown().await.expect("shutdown");
    gateway.await.expect("gateway");

    let ledger = Arc::try_unwrap(ledger)
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .unwrap_or_else(|_| panic!("seed {seed}: ledger still shared"));
    check(seed, &ledger, &stub, &health);
    ledger
}

/// Waits until the adapter is ready with nothing pending or undelivered.
async fn settle(handle: &AdapterHandle, seed: u64) -> relay_host::Health {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(h) = handle.health().await
            && h.state == Some(State::Ready)
            && h.pending == 0
            && h.undelivered == 0
        {
            return h;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "seed {seed}: not ready and idle at the end: {:?}",
            handle.health().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The gateway: records each delivery with the instance generation, and
/// accepts it (at once, or after a slow spell).
async fn gateway(
    mut events: EventStream,
    ledger: Arc<Mutex<Ledger>>,
    slow_until: Arc<AtomicU64>,
    epoch: tokio::time::Instant,
) {
    let mut generation = 0u64;
    let mut parked: Vec<MessageEvent> = Vec::new();
    loop {
        let slow = epoch.elapsed().as_millis() as u64 <= slow_until.load(Ordering::SeqCst);
        if !slow {
            for m in parked.drain(..) {
                m.accept();
            }
        }
        let event = tokio::select! {
            event = events.next() => event,
            () = tokio::time::sleep(Duration::from_millis(10)), if slow || !parked.is_empty() => continue,
        };
        let Some(event) = event else {
            for m in parked.drain(..) {
                m.accept();
            }
            return;
        };
        match event {
            Event::Message(m) => {
                ledger
                    .lock()
                    .unwrap()
                    .deliveries
                    .entry(m.text.clone())
                    .or_default()
                    .push(generation);
                if slow {
                    parked.push(m);
                } else {
                    m.accept();
                }
            }
            Event::Fatal { code, .. } if code == "guest_trap" => {
                generation += 1;
                ledger.lock().unwrap().traps += 1;
                // The lost instance's deliveries cannot be answered.
                parked.clear();
            }
            Event::State {
                state: State::Disabled,
                ..
            } => {
                panic!("the adapter was disabled during the soak");
            }
            _ => {}
        }
    }
}

/// Pushes `messages` inbound, about a third buffered.
async fn push_inbound(run: Run, stub: StubConnector, ledger: Arc<Mutex<Ledger>>) {
    let mut plan = FaultPlan::new(run.seed ^ 0x5EED_0001);
    let started = tokio::time::Instant::now();
    for i in 0..run.messages {
        pace(run, started, i).await;
        let text = format!("in-{}-{i}", run.seed);
        let event = events::dm("discord", &format!("dm-{}", i % 97), "u1", &text);
        if plan.chance(35) {
            let buffer_id = format!("b-{}-{i}", run.seed);
            stub.push_buffered(event, Some(&buffer_id)).await;
            ledger.lock().unwrap().buffered.insert(text, buffer_id);
        } else {
            // Like a connector, the stub buffers what finds no live
            // connection: that one is a buffered message from then on.
            match stub.push_inbound(event).await {
                Ok(relay_stub::Delivery::Live { .. }) => ledger.lock().unwrap().live += 1,
                Ok(relay_stub::Delivery::Buffered { buffer_id }) => {
                    ledger.lock().unwrap().buffered.insert(text, buffer_id);
                }
                Err(_) => ledger.lock().unwrap().live_unsent += 1,
            }
        }
    }
}

/// Makes `messages` sends, `SEND_WINDOW` at a time.
async fn send_all(run: Run, handle: AdapterHandle, ledger: Arc<Mutex<Ledger>>) {
    let mut plan = FaultPlan::new(run.seed ^ 0x5EED_0002);
    let mut in_flight = FuturesUnordered::new();
    let started = tokio::time::Instant::now();
    for i in 0..run.messages {
        pace(run, started, i).await;
        if in_flight.len() >= SEND_WINDOW
            && let Some((content, result)) = in_flight.next().await
        {
            record_send(&ledger, content, result, run.seed);
        }
        let content = format!("out-{}-{i}", run.seed);
        let chat = format!("dm-{}", plan.below(97));
        let handle = handle.clone();
        in_flight.push(async move {
            let result = handle
                .send(chat, content.clone(), None, Map::new(), None)
                .await;
            (content, result)
        });
    }
    while let Some((content, result)) = in_flight.next().await {
        record_send(&ledger, content, result, run.seed);
    }
}

fn record_send(ledger: &Mutex<Ledger>, content: String, result: SendResult, seed: u64) {
    let previous = ledger.lock().unwrap().sends.insert(content.clone(), result);
    assert!(previous.is_none(), "seed {seed}: {content} resolved twice");
}

/// Samples guest memory while traffic runs.
async fn sample_memory(handle: AdapterHandle, ledger: Arc<Mutex<Ledger>>, done: Arc<AtomicBool>) {
    while !done.load(Ordering::SeqCst) {
        if let Ok(h) = handle.health().await {
            let mut l = ledger.lock().unwrap();
            l.max_guest_memory = l.max_guest_memory.max(h.guest_memory_peak_bytes);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The fault schedule: until traffic is done, every 30-150 ms one fault,
/// held 20-1000 ms, then healed.
async fn faults(
    run: Run,
    stub: StubConnector,
    proxy: Arc<FaultProxy>,
    ledger: Arc<Mutex<Ledger>>,
    done: Arc<AtomicBool>,
    slow_until: Arc<AtomicU64>,
    epoch: tokio::time::Instant,
) {
    let mut plan = FaultPlan::new(run.seed);
    // A 4401 "unauthorized" after a handshake is provisional: the adapter
    // re-dials once with a fresh token, and a 4401 on that retry connection
    // disables it for good (spec §5.4, by design). So another one only
    // once a connection after the retry connection has handshaken. A 4401
    // "expired" is never a revocation and may come at any time.
    let mut last_unauthorized: Option<usize> = None;
    let mut trap_first = run.traps;
    let handshakes = |stub: &StubConnector| stub.with_state(|s| s.handshaken().count());
    while !done.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(30 + plan.below(120))).await;
        let hold = Duration::from_millis(20 + plan.below(980));
        let mut pick = plan.below(11);
        // A trap seed's first fault is a trap, so every such run has one.
        if std::mem::take(&mut trap_first) {
            pick = 4;
        }
        if pick == 10 && last_unauthorized.is_some_and(|seen| handshakes(&stub) < seen + 2) {
            pick = 9;
        }
        let kind: &'static str = match pick {
            0 => {
                // The token aged past its TTL: reconnect with a fresh one.
                let _ = stub.close(4401, "expired").await;
                "expiry_4401"
            }
            10 => {
                // Provisional: one immediate re-dial with a fresh token.
                last_unauthorized = Some(handshakes(&stub));
                let _ = stub.close(4401, "unauthorized").await;
                "unauthorized_4401"
            }
            1 => {
                // A connector restart: the socket drops, the buffer replays.
                let _ = stub.drop_connection().await;
                "connector_restart"
            }
            2 => {
                // A slow gateway: deliveries wait, the adapter goes idle.
                let until = epoch.elapsed() + hold;
                slow_until.store(until.as_millis() as u64, Ordering::SeqCst);
                "slow_gateway"
            }
            3 => {
                stub.queue_outbound_reply(
                    Some("send"),
                    OutboundReply::delayed(
                        Duration::from_millis(100 + plan.below(2500)),
                        OutboundReply::Success,
                    ),
                );
                "slow_result"
            }
            4 | 5 if run.traps => {
                let _ = stub.send_text(hostile_line()).await;
                "guest_trap"
            }
            _ => {
                let fault = plan.fault();
                proxy.apply(&fault);
                tokio::time::sleep(hold).await;
                proxy.heal();
                fault.kind()
            }
        };
        *ledger.lock().unwrap().faults.entry(kind).or_default() += 1;
    }
}

/// An inbound line of 1 MiB of empty objects in `context`: valid, and the
/// most memory-hungry shape the component parses (~38 MiB).
fn hostile_line() -> String {
    let head = r#"{"type":"inbound","event":{"text":"hostile","message_type":"text","message_id":"hostile","source":{"platform":"discord","chat_id":"dm-h","chat_type":"dm","user_id":"u9"},"context":["#;
    let tail = "{}]}}\n";
    let body_len = (1 << 20) - head.len() - tail.len() - 16;
    let mut line = String::with_capacity(1 << 20);
    line.push_str(head);
    while line.len() + 3 < head.len() + body_len {
        line.push_str("{},");
    }
    line.push_str(tail);
    line
}

/// The ledger's rules (see the module docs); panics naming the seed.
fn check(seed: u64, ledger: &Ledger, stub: &StubConnector, health: &relay_host::Health) {
    // Buffered: delivered; once per instance generation.
    for (text, buffer_id) in &ledger.buffered {
        let generations = ledger.deliveries.get(text).cloned().unwrap_or_default();
        assert!(
            !generations.is_empty(),
            "seed {seed}: buffered {buffer_id} ({text}) never delivered"
        );
        let mut per_generation: BTreeMap<u64, usize> = BTreeMap::new();
        for g in &generations {
            *per_generation.entry(*g).or_default() += 1;
        }
        assert!(
            per_generation.values().all(|&n| n == 1),
            "seed {seed}: buffered {buffer_id} ({text}) delivered twice by one instance: {generations:?}"
        );
        if ledger.traps == 0 {
            assert_eq!(
                generations.len(),
                1,
                "seed {seed}: buffered {buffer_id} delivered {} times",
                generations.len()
            );
        }
    }
    // Live: never twice.
    for (text, generations) in &ledger.deliveries {
        if !ledger.buffered.contains_key(text) && text != "hostile" {
            assert_eq!(
                generations.len(),
                1,
                "seed {seed}: live {text} delivered {} times (instances {generations:?})",
                generations.len()
            );
        }
    }
    // Sends: each outcome matches what the connector saw.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for frame in stub.frames() {
        if frame.op() == Some("send")
            && let Some(content) = frame
                .get("action")
                .and_then(|a| a.get("content"))
                .and_then(Value::as_str)
        {
            *seen.entry(content.to_string()).or_default() += 1;
        }
    }
    for (content, times) in &seen {
        assert_eq!(
            *times, 1,
            "seed {seed}: the connector got {content} {times} times"
        );
    }
    for (content, result) in &ledger.sends {
        let received = seen.contains_key(content);
        if result.success {
            assert!(
                received,
                "seed {seed}: {content} succeeded but never reached the connector"
            );
        } else if !result.ambiguous {
            assert!(
                !received,
                "seed {seed}: {content} failed definitely ({:?}) but the connector got it",
                result.error
            );
        }
    }
    // Traps only where the schedule made them; each one restarted the
    // component.
    let injected = ledger.faults.get("guest_trap").copied().unwrap_or(0) as u64;
    assert!(
        ledger.traps <= injected,
        "seed {seed}: {} traps, {injected} injected",
        ledger.traps
    );
    assert_eq!(health.restarts, ledger.traps, "seed {seed}: restarts");
    // Bounded: without hostile lines the instance stays small (about
    // 1.2 MiB; a leak would grow it with the traffic).
    if injected == 0 {
        assert!(
            ledger.max_guest_memory <= 16 << 20,
            "seed {seed}: guest memory grew to {} bytes",
            ledger.max_guest_memory
        );
    }
    assert_eq!(health.state, Some(State::Ready), "seed {seed}");
}
