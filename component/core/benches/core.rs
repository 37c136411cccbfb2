//! Micro benchmarks of relay-core's hot paths.
//!
//! Benchmark ids (cited in docs; keep them stable):
//! - `inbound/decode_route_event`: one `inbound` frame through a Ready
//!   machine, up to the accepted delivery.
//! - `outbound/send_encode`: one `Command::Send` to its `SendText` frame.
//! - `outbound/send_with_result`: the same plus its `outbound_result`.
//! - `frame/decode_inbound`: decoding the inbound line alone.
//! - `interaction/map`: a Discord slash-command forward to an event.
//! - `auth/mint_token`: the upgrade bearer header with a 32-byte secret.
//!
//! Run with `cargo bench -p relay-core --bench core`.

use criterion::{Criterion, criterion_group, criterion_main};
use relay_core::auth::{DEFAULT_TOKEN_TTL_SECS, Secret, bearer_header};
use relay_core::frame::{Forward, decode_connector_frame};
use relay_core::interaction::forward_to_event;
use relay_core::machine::{Command, Config, Identity, Input, Machine, Now, Output, State};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Fixed wall clock (Unix seconds); only token expiry reads it.
const WALL_SECS: u64 = 1_700_000_000;
/// The monotonic clock advances this much per iteration.
const TICK_NS: u64 = 1_000;

/// The descriptor the benchmark rig's loadgen answers every hello with
/// (/work/shared/bench/README.md, step 2).
const DESCRIPTOR_LINE: &str = concat!(
    r#"{"type":"descriptor","descriptor":{"contract_version":1,"platform":"discord","#,
    r#""label":"Bench","max_message_length":2000,"supports_draft_streaming":false,"#,
    r#""supports_edit":true,"supports_threads":false,"markdown_dialect":"plain","#,
    r#""len_unit":"chars"}}"#,
    "\n"
);

/// Distinct inbound lines cycled through by `inbound/decode_route_event`.
/// More than the routing cache holds (4096), so in steady state every
/// capture evicts, as in a loadgen run of 20 000 distinct chats; far more
/// than the replay set holds (512), so no line is ever dropped as a replay.
const INBOUND_LINES: usize = 8192;
/// Chats routed before `outbound/*` starts; sends cycle through them.
const ROUTED_CHATS: usize = 1024;
/// Sends in flight per timed batch in `outbound/send_encode` (the loadgen's
/// W=256 window); below `MAX_PENDING` (1024).
const SEND_BATCH: u64 = 256;

/// The loadgen's inbound frame for sequence number `seq`, with its `\n`
/// (/work/shared/bench/README.md, step 3).
fn inbound_line(seq: usize) -> String {
    format!(
        concat!(
            r#"{{"type":"inbound","event":{{"text":"bench {seq}","message_type":"text","#,
            r#""source":{{"platform":"discord","chat_id":"c{seq}","chat_type":"channel","#,
            r#""user_id":"u{seq}","scope_id":"g{seq}","guild_id":"g{seq}"}},"#,
            r#""message_id":"i{seq}"}}}}"#,
            "\n"
        ),
        seq = seq
    )
}

/// A monotonic clock that moves one tick per call.
struct Clock(u64);

impl Clock {
    fn tick(&mut self) -> Now {
        self.0 += TICK_NS;
        Now {
            mono_ns: self.0,
            wall_secs: WALL_SECS,
        }
    }
}

/// A machine fronting discord / B1, dialled, opened and handed the
/// descriptor: Ready, with no outputs left to drain.
fn ready_machine(clock: &mut Clock) -> (Machine, u32) {
    let mut cfg = Config::new("ws://127.0.0.1:9100");
    cfg.identities = vec![Identity::new("discord", "B1")];
    let mut m = Machine::new(cfg, 42).expect("valid bench config");

    m.handle(clock.tick(), Input::Start);
    let mut conn = None;
    while let Some(o) = m.poll_output() {
        if let Output::Dial { conn: c, .. } = o {
            conn = Some(c);
        }
    }
    let conn = conn.expect("Start dials");

    m.handle(clock.tick(), Input::SocketOpened { conn });
    let mut hellos = 0;
    while let Some(o) = m.poll_output() {
        if let Output::SendText { text, .. } = o
            && text.contains(r#""type":"hello""#)
        {
            hellos += 1;
        }
    }
    assert_eq!(hellos, 1, "one hello for one identity");

    m.handle(
        clock.tick(),
        Input::SocketText {
            conn,
            text: DESCRIPTOR_LINE,
        },
    );
    while m.poll_output().is_some() {}
    assert_eq!(
        m.state(),
        State::Ready,
        "descriptor makes the machine Ready"
    );
    (m, conn)
}

/// Feeds one inbound line, drains, accepts every delivery, drains again.
/// Returns the number of deliveries.
fn inbound_round(m: &mut Machine, clock: &mut Clock, conn: u32, text: &str) -> usize {
    m.handle(clock.tick(), Input::SocketText { conn, text });
    // One line carries one frame, so at most one delivery.
    let mut delivery = None;
    while let Some(o) = m.poll_output() {
        if let Output::Deliver(d) = o {
            debug_assert!(delivery.is_none(), "one delivery per line");
            delivery = Some(d.delivery);
            black_box(d);
        }
    }
    let Some(d) = delivery else {
        return 0;
    };
    m.handle(clock.tick(), Input::AcceptDelivery(d));
    while let Some(o) = m.poll_output() {
        black_box(o);
    }
    1
}

/// The `requestId` of an encoded `outbound` frame.
fn request_id(frame: &str) -> &str {
    const KEY: &str = r#""requestId":""#;
    let start = frame.find(KEY).expect("outbound frame has a requestId") + KEY.len();
    let len = frame[start..]
        .find('"')
        .expect("requestId is a JSON string");
    &frame[start..start + len]
}

/// The rig's `outbound_result` for `request_id`, with its `\n`.
fn result_line(request_id: &str) -> String {
    let mut line = format!(
        r#"{{"type":"outbound_result","requestId":"{request_id}","result":{{"success":true,"message_id":"m123"}}}}"#
    );
    line.push('\n');
    line
}

/// Issues one send to `chat_id` and returns its `SendText` frame.
fn send(m: &mut Machine, clock: &mut Clock, request: u64, chat_id: &str) -> String {
    m.handle(
        clock.tick(),
        Input::Command {
            request,
            command: Command::Send {
                chat_id,
                content: "bench 123",
                reply_to: None,
                metadata: "{}",
                platform: None,
            },
        },
    );
    let mut frame = None;
    while let Some(o) = m.poll_output() {
        match o {
            Output::SendText { text, .. } => frame = Some(text),
            Output::Complete { completion, .. } => {
                panic!("send completed without a frame: {completion:?}")
            }
            other => {
                black_box(other);
            }
        }
    }
    frame.expect("a Ready machine writes the send")
}

/// Feeds the `outbound_result` for `frame` and drains its completion.
fn settle(m: &mut Machine, clock: &mut Clock, conn: u32, frame: &str) {
    let line = result_line(request_id(frame));
    m.handle(clock.tick(), Input::SocketText { conn, text: &line });
    let mut completed = false;
    while let Some(o) = m.poll_output() {
        completed |= matches!(o, Output::Complete { .. });
        black_box(o);
    }
    assert!(completed, "the result completes the send");
}

/// A Ready machine that has routed `ROUTED_CHATS` chats (`c0`, `c1`, ...),
/// so sends to them re-attach the scope (`metadata.scope_id`).
fn routed_machine(clock: &mut Clock) -> (Machine, u32, Vec<String>) {
    let (mut m, conn) = ready_machine(clock);
    for seq in 0..ROUTED_CHATS {
        let delivered = inbound_round(&mut m, clock, conn, &inbound_line(seq));
        assert_eq!(delivered, 1, "priming inbound {seq} is delivered");
    }
    let chats: Vec<String> = (0..ROUTED_CHATS).map(|seq| format!("c{seq}")).collect();
    // Check the wire shape once: scope re-attached, platform tagged.
    let frame = send(&mut m, clock, 0, &chats[0]);
    assert!(
        frame.contains(r#""scope_id":"g0""#),
        "scope re-attached: {frame}"
    );
    assert!(frame.contains(r#""platform":"discord""#), "tagged: {frame}");
    settle(&mut m, clock, conn, &frame);
    (m, conn, chats)
}

fn inbound(c: &mut Criterion) {
    let mut clock = Clock(0);
    let (mut m, conn) = ready_machine(&mut clock);
    let lines: Vec<String> = (0..INBOUND_LINES).map(inbound_line).collect();
    let mut next = 0usize;

    let mut group = c.benchmark_group("inbound");
    // One iteration is what a gateway does per inbound frame: the frame
    // text in (line split, decode, dedupe check, route capture, gateway
    // JSON), the Deliver output out, then the gateway's AcceptDelivery
    // (which records the replay key). Accepting is measured inside the
    // iteration; without it undelivered would reach its cap (256) and the
    // machine would go idle.
    group.bench_function("decode_route_event", |b| {
        b.iter(|| {
            let text = &lines[next % INBOUND_LINES];
            next = next.wrapping_add(1);
            let delivered = inbound_round(&mut m, &mut clock, conn, text);
            debug_assert_eq!(delivered, 1);
            delivered
        })
    });
    group.finish();

    let stats = m.stats();
    assert_eq!(stats.undelivered, 0, "every delivery was accepted");
    assert_eq!(stats.dedupe_hits, 0, "no line was dropped as a replay");
    assert_eq!(m.state(), State::Ready, "still Ready: {stats:?}");
}

fn outbound(c: &mut Criterion) {
    let mut group = c.benchmark_group("outbound");

    // Command::Send (metadata parse, scope re-attachment, request id,
    // pending + timeout bookkeeping, frame encode) to its SendText output.
    // The outbound_result leg is settled untimed after each batch of
    // SEND_BATCH sends, so pending stays below its cap.
    let mut clock = Clock(0);
    let (mut m, conn, chats) = routed_machine(&mut clock);
    let mut request = 1u64;
    let mut frames: Vec<String> = Vec::with_capacity(SEND_BATCH as usize);
    group.bench_function("send_encode", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let batch = left.min(SEND_BATCH);
                left -= batch;
                let start = Instant::now();
                for _ in 0..batch {
                    let chat = &chats[request as usize % ROUTED_CHATS];
                    frames.push(send(&mut m, &mut clock, request, chat));
                    request += 1;
                }
                elapsed += start.elapsed();
                for frame in frames.drain(..) {
                    settle(&mut m, &mut clock, conn, &frame);
                }
            }
            elapsed
        })
    });
    assert_eq!(m.stats().pending, 0, "every send was settled");

    // The whole outbound round trip as the gateway sees it: the send, then
    // the connector's outbound_result for it (decode, pending lookup,
    // SendResult, Complete output).
    let mut clock = Clock(0);
    let (mut m, conn, chats) = routed_machine(&mut clock);
    let mut request = 1u64;
    group.bench_function("send_with_result", |b| {
        b.iter(|| {
            let chat = &chats[request as usize % ROUTED_CHATS];
            let frame = send(&mut m, &mut clock, request, chat);
            request += 1;
            settle(&mut m, &mut clock, conn, &frame);
        })
    });
    assert_eq!(m.stats().pending, 0, "every send was settled");
    group.finish();
}

fn frame(c: &mut Criterion) {
    let line = inbound_line(123);
    let line = line.trim_end_matches('\n');
    assert!(
        decode_connector_frame(line).is_ok(),
        "the rig's frame decodes"
    );

    let mut group = c.benchmark_group("frame");
    group.bench_function("decode_inbound", |b| {
        b.iter(|| decode_connector_frame(black_box(line)))
    });
    group.finish();
}

/// A guild slash command (`/model name:gpt-x`) as Discord posts it to an
/// interactions endpoint, forwarded by the connector.
const SLASH_COMMAND: &str = r#"{"app_permissions":"2248473465835073","application_id":"1100000000000000001","authorizing_integration_owners":{"0":"1200000000000000002"},"channel":{"flags":0,"guild_id":"1200000000000000002","id":"1300000000000000003","last_message_id":"1300000000000000099","name":"general","nsfw":false,"parent_id":"1300000000000000001","permissions":"2248473465835073","position":0,"rate_limit_per_user":0,"topic":null,"type":0},"channel_id":"1300000000000000003","context":0,"data":{"id":"1400000000000000004","name":"model","options":[{"name":"name","type":3,"value":"gpt-x"}],"type":1},"entitlement_sku_ids":[],"entitlements":[],"guild":{"features":[],"id":"1200000000000000002","locale":"en-US"},"guild_id":"1200000000000000002","guild_locale":"en-US","id":"1500000000000000005","locale":"en-GB","member":{"avatar":null,"banner":null,"communication_disabled_until":null,"deaf":false,"flags":0,"joined_at":"2024-01-01T00:00:00.000000+00:00","mute":false,"nick":"Benny","pending":false,"permissions":"2248473465835073","premium_since":null,"roles":["1600000000000000006"],"unusual_dm_activity_until":null,"user":{"avatar":"0123456789abcdef0123456789abcdef","avatar_decoration_data":null,"clan":null,"discriminator":"0","global_name":"Ben D","id":"1700000000000000007","primary_guild":null,"public_flags":0,"username":"ben"}},"token":"aW50ZXJhY3Rpb246MTUwMDAwMDAwMDAwMDAwMDAwNTpGYWtlVG9rZW5Gb3JCZW5jaG1hcmtzT25seS4uLi4uLi4uLi4uLi4uLi4uLi4uLi4uLi4uLi4uLi4uLi4uLi4uLi4uLi4uLi4uLi4uLi4uLi4u","type":2,"version":1}"#;

fn interaction(c: &mut Criterion) {
    let forward = Forward {
        platform: "discord".to_owned(),
        bot_id: "B1".to_owned(),
        method: "POST".to_owned(),
        path: "/interactions".to_owned(),
        headers: vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("x-signature-ed25519".to_owned(), "ab".repeat(64)),
            ("x-signature-timestamp".to_owned(), "1700000000".to_owned()),
        ],
        body: SLASH_COMMAND.as_bytes().to_vec(),
        profile: None,
    };
    let event = forward_to_event(&forward).expect("the slash command maps to an event");
    assert_eq!(event.text, "/model gpt-x");
    assert_eq!(
        event.source.scope_id.as_deref(),
        Some("1200000000000000002")
    );

    let mut group = c.benchmark_group("interaction");
    // Body JSON parse plus the mapping, as the machine does for a
    // passthrough_forward.
    group.bench_function("map", |b| b.iter(|| forward_to_event(black_box(&forward))));
    group.finish();
}

fn auth(c: &mut Criterion) {
    // 32 bytes, the size of a generated per-gateway secret.
    let secret = Secret::new("k9Qe2VtX7bLm4RzP0sWc8YhN3uJd6AfG");
    assert_eq!(secret.expose().len(), 32);
    let ttl = DEFAULT_TOKEN_TTL_SECS as i64;
    assert!(bearer_header("gw-bench", &secret, WALL_SECS, ttl).is_some());

    let mut group = c.benchmark_group("auth");
    // What every dial does: expiry, HMAC-SHA256 signature, base64url token,
    // "Bearer " header (bearer_header wraps mint_token).
    group.bench_function("mint_token", |b| {
        b.iter(|| {
            bearer_header(
                black_box("gw-bench"),
                black_box(&secret),
                black_box(WALL_SECS),
                ttl,
            )
        })
    });
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
    targets = inbound, outbound, frame, interaction, auth
}
criterion_main!(benches);
