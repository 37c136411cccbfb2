//! Per-frame cost through the sandbox: the same work as relay-core's
//! `inbound/decode_route_event` and `outbound/send_with_result` benches,
//! fed through [`relay_host::bench::Harness`] (the host's engine layer and
//! `host` imports, no actor, socket or gateway channel in the timed path).
//!
//! Benchmark ids (cited in docs/benchmarks.md; keep them stable), each with
//! the engines `native` (relay-core in the host), `component` (the shipped
//! component, epoch interruption on) and `component_no_epoch`:
//! - `engine_call/*`: one `current-state` query, an export call with almost
//!   no work: the fixed cost of a call.
//! - `engine_inbound/*`: one `inbound` frame (`on-text`) and its accept
//!   (`accept-delivery`): two export calls.
//! - `engine_inbound_known_chats/*`: the same, the messages from 64 chats
//!   in turn (known routes and labels, as in a gateway's traffic).
//! - `engine_outbound/*`: one `send` and its `outbound_result` (`on-text`):
//!   two export calls.
//!
//! Run with `cargo bench -p relay-host --bench component`.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use relay_host::Plugin;
use relay_host::bench::Harness;
use tokio::runtime::Runtime;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// The benchmark rig's descriptor (its loadgen's answer to every hello).
const DESCRIPTOR_LINE: &str = concat!(
    r#"{"type":"descriptor","descriptor":{"contract_version":1,"platform":"discord","#,
    r#""label":"Bench","max_message_length":2000,"supports_draft_streaming":false,"#,
    r#""supports_edit":true,"supports_threads":false,"markdown_dialect":"plain","#,
    r#""len_unit":"chars"}}"#,
    "\n"
);

/// Distinct inbound lines: more than the routing cache (4096), so every
/// capture evicts in steady state, as in a rig run.
const INBOUND_LINES: usize = 8192;
/// Chats routed before the outbound benchmark; sends cycle through them.
const ROUTED_CHATS: usize = 1024;

/// The rig loadgen's inbound frame for `seq`, with its `\n`: every
/// message from a chat of its own.
fn inbound_line(seq: usize) -> Utf8Bytes {
    inbound_line_in(seq, seq)
}

/// Chats the `engine_inbound_known_chats` messages come from, in turn.
const KNOWN_CHATS: usize = 64;

/// The inbound frame for message `seq` in chat `chat` (its author and
/// guild numbered alike), with its `\n`.
fn inbound_line_in(seq: usize, chat: usize) -> Utf8Bytes {
    Utf8Bytes::from(format!(
        concat!(
            r#"{{"type":"inbound","event":{{"text":"bench {seq}","message_type":"text","#,
            r#""source":{{"platform":"discord","chat_id":"c{chat}","chat_type":"channel","#,
            r#""user_id":"u{chat}","scope_id":"g{chat}","guild_id":"g{chat}"}},"#,
            r#""message_id":"i{seq}"}}}}"#,
            "\n"
        ),
        seq = seq,
        chat = chat
    ))
}

/// The rig's `outbound_result` for the `outbound` frame `frame`.
fn result_line(frame: &str) -> Utf8Bytes {
    const KEY: &str = r#""requestId":""#;
    let start = frame.find(KEY).expect("outbound frame has a requestId") + KEY.len();
    let len = frame[start..].find('"').expect("requestId is a string");
    let id = &frame[start..start + len];
    Utf8Bytes::from(format!(
        "{{\"type\":\"outbound_result\",\"requestId\":\"{id}\",\"result\":{{\"success\":true,\"message_id\":\"m123\"}}}}\n"
    ))
}

fn engines() -> Vec<(&'static str, Plugin)> {
    vec![
        ("native", Plugin::native().expect("native plugin")),
        ("component", Plugin::new().expect("component compiles")),
        (
            "component_no_epoch",
            Plugin::without_epoch_interruption().expect("component compiles"),
        ),
    ]
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// One `current-state` query per iteration: the fixed cost of one export
/// call (for the native engine, of one call into the core).
fn engine_call(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("engine_call");
    for (name, plugin) in engines() {
        let mut harness = rt
            .block_on(Harness::new(&plugin, DESCRIPTOR_LINE))
            .expect("harness ready");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let state = harness.state().await.expect("state");
                        assert_eq!(state, relay_host::State::Ready);
                    }
                    start.elapsed()
                })
            });
        });
    }
    group.finish();
}

fn engine_inbound(c: &mut Criterion) {
    inbound_group(
        c,
        "engine_inbound",
        (0..INBOUND_LINES).map(inbound_line).collect(),
    );
}

/// As `engine_inbound`, but the messages come from 64 chats in turn, as a
/// gateway's traffic mostly does: the chat's route and labels are known and
/// mostly unchanged.
fn engine_inbound_known_chats(c: &mut Criterion) {
    let lines = (0..INBOUND_LINES)
        .map(|seq| inbound_line_in(seq, seq % KNOWN_CHATS))
        .collect();
    inbound_group(c, "engine_inbound_known_chats", lines);
}

/// One inbound message and its accept per iteration, cycling through
/// `lines` (a message id comes back after 8,192 others, when the seen-set
/// no longer holds it), for every engine.
fn inbound_group(c: &mut Criterion, group_name: &str, lines: Vec<Utf8Bytes>) {
    let rt = runtime();
    let mut group = c.benchmark_group(group_name);
    for (name, plugin) in engines() {
        let mut harness = rt
            .block_on(Harness::new(&plugin, DESCRIPTOR_LINE))
            .expect("harness ready");
        let mut next = 0usize;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let line = lines[next % lines.len()].clone();
                        next += 1;
                        let delivered = harness.inbound(line).await.expect("inbound");
                        assert_eq!(delivered, 1, "one message per line");
                    }
                    start.elapsed()
                })
            });
        });
    }
    group.finish();
}

fn engine_outbound(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("engine_outbound");
    for (name, plugin) in engines() {
        let mut harness = rt
            .block_on(async {
                let mut h = Harness::new(&plugin, DESCRIPTOR_LINE).await?;
                for seq in 0..ROUTED_CHATS {
                    h.inbound(inbound_line(seq)).await?;
                }
                Ok::<_, String>(h)
            })
            .expect("harness ready");
        let chats: Vec<String> = (0..ROUTED_CHATS).map(|seq| format!("c{seq}")).collect();
        let mut next = 0usize;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let chat = &chats[next % ROUTED_CHATS];
                        next += 1;
                        let frames = harness.send(chat, "bench 123").await.expect("send");
                        let frame = frames.last().expect("the send is written");
                        harness.inbound(result_line(frame)).await.expect("result");
                    }
                    start.elapsed()
                })
            });
        });
    }
    group.finish();
}

/// Messages in one burst of the `_burst` benchmarks.
const BURST: usize = 64;

/// A burst of inbound frames in one socket message (the actor merges a
/// burst so) and their accepts in one call; the time is per message. The
/// component hands the burst's events to the host in one `deliver` call.
fn engine_inbound_burst(c: &mut Criterion) {
    let rt = runtime();
    let bursts: Vec<Utf8Bytes> = (0..INBOUND_LINES / BURST)
        .map(|b| {
            let text: String = (b * BURST..(b + 1) * BURST)
                .map(|seq| inbound_line(seq).to_string())
                .collect();
            Utf8Bytes::from(text)
        })
        .collect();
    let mut group = c.benchmark_group("engine_inbound_burst");
    for (name, plugin) in engines() {
        let mut harness = rt
            .block_on(Harness::new(&plugin, DESCRIPTOR_LINE))
            .expect("harness ready");
        let mut next = 0usize;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let rounds = iters.div_ceil(BURST as u64).max(1);
                    let start = Instant::now();
                    for _ in 0..rounds {
                        let text = bursts[next % bursts.len()].clone();
                        next += 1;
                        let delivered = harness.inbound(text).await.expect("inbound");
                        assert_eq!(delivered, BURST, "one message per line");
                    }
                    start
                        .elapsed()
                        .mul_f64(iters as f64 / (rounds * BURST as u64) as f64)
                })
            });
        });
    }
    group.finish();
}

/// A burst of sends and their results (the results in one socket message,
/// as the actor merges them), with the sends in one `send-batch` call or
/// one `send` call each; the time is per message.
fn engine_outbound_burst(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("engine_outbound_burst");
    for (name, plugin) in engines() {
        let mut harness = rt
            .block_on(async {
                let mut h = Harness::new(&plugin, DESCRIPTOR_LINE).await?;
                for seq in 0..ROUTED_CHATS {
                    h.inbound(inbound_line(seq)).await?;
                }
                Ok::<_, String>(h)
            })
            .expect("harness ready");
        let chats: Vec<String> = (0..ROUTED_CHATS).map(|seq| format!("c{seq}")).collect();
        for batched in [true, false] {
            let label = format!(
                "{name}/{}",
                if batched { "batched" } else { "one_call_each" }
            );
            let mut next = 0usize;
            group.bench_function(label, |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let bursts = iters.div_ceil(BURST as u64).max(1);
                        let start = Instant::now();
                        for _ in 0..bursts {
                            let at = (next * BURST) % ROUTED_CHATS;
                            next += 1;
                            let frames = harness
                                .send_burst(&chats[at..at + BURST], "bench 123", batched)
                                .await
                                .expect("sends");
                            let results: String =
                                frames.iter().map(|f| result_line(f).to_string()).collect();
                            harness
                                .inbound(Utf8Bytes::from(results))
                                .await
                                .expect("results");
                        }
                        // Per message: the bursts ran `bursts * BURST` of them.
                        start
                            .elapsed()
                            .mul_f64(iters as f64 / (bursts * BURST as u64) as f64)
                    })
                });
            });
        }
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = engine_call, engine_inbound, engine_inbound_known_chats, engine_inbound_burst, engine_outbound,
        engine_outbound_burst
}
criterion_main!(benches);
