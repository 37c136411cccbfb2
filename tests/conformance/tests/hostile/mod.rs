//! Hostile connector catalogue: one case per class of bad connector
//! behaviour, each repeated [`REPS`] times on a fresh adapter, each
//! repetition followed by a valid frame that must be delivered.
//!
//! After the repetitions every case checks that:
//! - the host is up: the handle answers `state()` (and it is `ready`), the
//!   component never trapped (no restart, no `Fatal`);
//! - the guest's linear memory is within the cap ([`relay_host::Health`]);
//! - the process RSS (`VmRSS` of /proc/self/status) grew by less than
//!   [`RSS_GROWTH_MAX_KIB`] over the case. Other tests of this binary run
//!   concurrently, so the bound is generous; the figures are printed
//!   (`cargo test -p relay-conformance hostile -- --nocapture`);
//! - the connection survived ([`Policy::Survives`]: still the first one) or
//!   was replaced per policy ([`Policy::Recovers`]: a new one, ready again).
//!
//! Timers are at millisecond scale (re-dial ladder 1-5 ms) and the line
//! limit is 64 KiB, so the whole catalogue takes seconds; the 1 MiB default
//! lines are measured in `host/tests/host.rs`.

use super::*;
use relay_stub::{HelloReply, WireMessage};

/// Repetitions of every case.
const REPS: usize = 100;
/// Line limit of the catalogue's adapters.
const LINE: u32 = 64 * 1024;
/// Allowed growth of the process RSS over one case.
const RSS_GROWTH_MAX_KIB: u64 = 64 * 1024;

/// What a case does to the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    /// The connection stays up: the input is skipped or ignored.
    Survives,
    /// The connection ends (closed, dropped or refused by the adapter) and
    /// the adapter re-dials and is ready again.
    Recovers,
    /// 4401 at the upgrade before any handshake: retried until accepted;
    /// the valid frames wait in the connector's buffer until then.
    RetriedBeforeHandshake,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    InvalidJson,
    NonObjectJson,
    WrongTypedFrame,
    WrongTypedEvent,
    WrongTypedSource,
    WrongTypedForward,
    UnknownAndEchoedTypes,
    HugeIntegersAndDeepNesting,
    InvalidUtf8Binary,
    SplitMultiByteBinary,
    OverLongLine,
    EndlessLine,
    OversizedMessage,
    InvalidBase64,
    OversizedBase64,
    LaterDescriptorGarbage,
    FirstDescriptorGarbage,
    DuplicateResult,
    LateResult,
    UnknownResult,
    InboundFlood,
    Close(u16, &'static str),
    UnauthorizedAfterHandshake,
    UnauthorizedBeforeHandshake,
    ResetMidFrame,
}

struct Case {
    name: &'static str,
    kind: Kind,
    policy: Policy,
}

const fn case(name: &'static str, kind: Kind, policy: Policy) -> Case {
    Case { name, kind, policy }
}

const CASES: &[Case] = &[
    case("invalid JSON", Kind::InvalidJson, Policy::Survives),
    case("non-object JSON", Kind::NonObjectJson, Policy::Survives),
    case(
        "wrong-typed frame fields",
        Kind::WrongTypedFrame,
        Policy::Survives,
    ),
    case(
        "wrong-typed event fields",
        Kind::WrongTypedEvent,
        Policy::Survives,
    ),
    case(
        "wrong-typed source fields",
        Kind::WrongTypedSource,
        Policy::Survives,
    ),
    case(
        "wrong-typed forward fields",
        Kind::WrongTypedForward,
        Policy::Survives,
    ),
    case(
        "unknown and echoed types",
        Kind::UnknownAndEchoedTypes,
        Policy::Survives,
    ),
    case(
        "huge integers and deep nesting",
        Kind::HugeIntegersAndDeepNesting,
        Policy::Survives,
    ),
    case(
        "invalid UTF-8 in binary messages",
        Kind::InvalidUtf8Binary,
        Policy::Survives,
    ),
    case(
        "multi-byte characters split across binary messages",
        Kind::SplitMultiByteBinary,
        Policy::Survives,
    ),
    case(
        "over-long line in small messages",
        Kind::OverLongLine,
        Policy::Survives,
    ),
    case(
        "line that never ends, then a newline and a valid frame",
        Kind::EndlessLine,
        Policy::Survives,
    ),
    case(
        "one message over the size limit (1009)",
        Kind::OversizedMessage,
        Policy::Recovers,
    ),
    case("invalid bodyB64", Kind::InvalidBase64, Policy::Survives),
    case("oversized bodyB64", Kind::OversizedBase64, Policy::Survives),
    case(
        "later descriptor garbage and missing keys",
        Kind::LaterDescriptorGarbage,
        Policy::Survives,
    ),
    case(
        "first descriptor garbage and missing keys",
        Kind::FirstDescriptorGarbage,
        Policy::Recovers,
    ),
    case(
        "duplicate outbound_result",
        Kind::DuplicateResult,
        Policy::Survives,
    ),
    case("late outbound_result", Kind::LateResult, Policy::Survives),
    case(
        "unknown-id outbound_result",
        Kind::UnknownResult,
        Policy::Survives,
    ),
    case("inbound flood", Kind::InboundFlood, Policy::Survives),
    case("close 1000", Kind::Close(1000, "normal"), Policy::Recovers),
    case(
        "close 1001",
        Kind::Close(1001, "going away"),
        Policy::Recovers,
    ),
    case(
        "close 1006 (no close frame)",
        Kind::Close(1006, ""),
        Policy::Recovers,
    ),
    case(
        "close 1011",
        Kind::Close(1011, "overloaded"),
        Policy::Recovers,
    ),
    case(
        "close 4401 expired",
        Kind::Close(4401, "expired"),
        Policy::Recovers,
    ),
    case(
        "close 4429",
        Kind::Close(4429, "too many connections"),
        Policy::Recovers,
    ),
    case(
        "close 4999",
        Kind::Close(4999, "private use"),
        Policy::Recovers,
    ),
    case(
        "4401 after the handshake: fresh-token retry, then a normal close",
        Kind::UnauthorizedAfterHandshake,
        Policy::Recovers,
    ),
    case(
        "4401 before any handshake",
        Kind::UnauthorizedBeforeHandshake,
        Policy::RetriedBeforeHandshake,
    ),
    case("TCP reset mid-frame", Kind::ResetMidFrame, Policy::Recovers),
];

/// Resident set size of this process in KiB.
fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// An inbound frame for `text` in chat `chat`, with a fresh message id.
fn inbound(chat: &str, text: &str) -> Value {
    let mut event = events::discord_text(text);
    event["source"]["chat_id"] = json!(chat);
    json!({"type": "inbound", "event": event})
}

fn line(v: &Value) -> String {
    format!("{v}\n")
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A passthrough frame whose `bodyB64` is given raw.
fn forward_b64(body_b64: &str) -> Value {
    json!({"type": "passthrough_forward", "forward": {"platform": "discord", "botId": "B1",
        "method": "POST", "path": "/interactions", "headers": [["content-type", "application/json"]],
        "bodyB64": body_b64}})
}

/// A Discord slash-command interaction body for command `name`.
fn slash(name: &str, pad: usize) -> String {
    json!({"type": 2, "id": format!("i-{name}"), "channel_id": "c1", "guild_id": "g1",
        "data": {"name": name}, "member": {"user": {"id": "u1", "username": "ben"}},
        "pad": "p".repeat(pad)})
    .to_string()
}

/// Connections the stub has seen so far.
fn conns(w: &World) -> usize {
    w.stub.connections().len()
}

/// Waits until the adapter re-dialed past connection `before` and is ready.
async fn recovered(w: &World, before: usize) {
    let stub = &w.stub;
    stub.wait_until(
        |s| {
            s.connections.len() > before
                && s.current_connection()
                    .is_some_and(|c| c.index >= before && c.handshaken)
        },
        WAIT,
    )
    .await
    .unwrap_or_else(|e| {
        let tail: Vec<_> = stub
            .connections()
            .into_iter()
            .rev()
            .take(4)
            .map(|c| (c.index, c.handshaken, c.state))
            .collect();
        panic!("a new handshaken connection: {e:?}; last connections: {tail:?}")
    });
    let deadline = tokio::time::Instant::now() + WAIT;
    while w.handle.state().await.expect("state") != State::Ready {
        assert!(tokio::time::Instant::now() < deadline, "ready again");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Accepts every message until the one with text `sync`; returns the texts.
async fn drain_until(w: &mut World, sync: &str) -> Vec<String> {
    let mut texts = Vec::new();
    loop {
        let m = w.message().await;
        let text = m.text.clone();
        m.accept();
        let done = text == sync;
        texts.push(text);
        if done {
            return texts;
        }
    }
}

/// One repetition of `kind`; returns texts that must be delivered before
/// the sync frame that follows.
async fn inject(w: &mut World, kind: Kind, rep: usize) -> Vec<String> {
    let stub = w.stub.clone();
    let mut expect = Vec::new();
    match kind {
        Kind::InvalidJson => {
            for bad in [
                "{not json",
                "{\"type\":\"inbound\",",
                "nul",
                "{\"type\":\"inbound\"}}",
                "\u{0}\u{1}",
            ] {
                stub.send_line(bad).await.expect("send");
            }
        }
        Kind::NonObjectJson => {
            for bad in [
                "[1,2]",
                "42",
                "\"inbound\"",
                "null",
                "true",
                "[{\"type\":\"inbound\"}]",
            ] {
                stub.send_line(bad).await.expect("send");
            }
        }
        Kind::WrongTypedFrame => {
            let ok = events::discord_text("typed");
            for bad in [
                json!({"type": 7}),
                json!({"type": null, "event": ok.clone()}),
                json!({"type": ["inbound"]}),
                json!({"type": "inbound", "event": []}),
                json!({"type": "inbound", "event": "text"}),
                json!({"type": "inbound", "event": ok.clone(), "bufferId": {"id": 1}}),
                json!({"type": "passthrough_forward", "forward": 7}),
                json!({"type": "outbound_result", "requestId": {}, "result": 5}),
                json!({"type": "outbound_result", "requestId": ["x"], "result": []}),
                json!({"type": "interrupt_inbound", "session_key": 5, "chat_id": []}),
                json!({"type": "going_idle_ack", "extra": {"deep": [1, 2, 3]}}),
            ] {
                stub.send_frame(&bad).await.expect("send");
            }
        }
        Kind::WrongTypedEvent => {
            let bad = json!({"type": "inbound", "event": {
                "text": {"a": 1}, "message_type": 5, "message_id": [1], "reply_to_message_id": {},
                "reply_to": 3, "media_urls": "x", "media": 7, "context": "y", "prompt_response": [],
                "source": {"platform": "discord", "chat_id": "typed-event", "chat_type": "group"}}});
            stub.send_frame(&bad).await.expect("send");
            let bad = json!({"type": "inbound", "event": {"text": true, "media_urls": [1, null, {}],
                "media": [1, "x", {"url": 5}], "context": [null, {"author": []}],
                "source": {"platform": "discord", "chat_id": "typed-event", "chat_type": "dm"}}});
            stub.send_frame(&bad).await.expect("send");
        }
        Kind::WrongTypedSource => {
            for source in [
                json!(7),
                json!([]),
                json!("discord"),
                json!({"platform": 5, "chat_id": {}, "chat_type": [], "user_id": true,
                    "scope_id": 1.5, "thread_id": {}, "user_name": [1], "chat_name": {"x": 1}}),
                json!({"platform": null, "chat_id": null}),
            ] {
                let bad = json!({"type": "inbound", "event": {"text": "src", "source": source}});
                stub.send_frame(&bad).await.expect("send");
            }
        }
        Kind::WrongTypedForward => {
            for forward in [
                json!({"platform": 5, "botId": [], "method": {}, "path": 1, "headers": "h",
                    "body": 5, "bodyB64": []}),
                json!({"platform": "discord", "headers": [["a"], [1, 2], "x", {"k": "v"}],
                    "bodyB64": b64(slash("typed", 0).as_bytes())}),
                json!({"platform": "discord", "profile": {}, "bodyB64": null, "body": {"type": 2}}),
                json!({"platform": ["discord"], "bodyB64": b64(b"{}")}),
            ] {
                stub.send_frame(&json!({"type": "passthrough_forward", "forward": forward}))
                    .await
                    .expect("send");
            }
        }
        Kind::UnknownAndEchoedTypes => {
            for frame in [
                json!({"type": "mystery", "payload": {"x": 1}}),
                json!({"type": ""}),
                json!({"type": "INBOUND", "event": events::discord_text("case")}),
                json!({"type": "hello", "platform": "discord", "botId": "B1"}),
                json!({"type": "outbound", "requestId": "r1", "action": {"op": "send", "chat_id": "c"}}),
                json!({"type": "going_idle"}),
                json!({"type": "inbound_ack", "bufferId": "buf-1"}),
                json!({"type": "interrupt", "session_key": "k", "reason": null}),
                json!({"type": "__test_panic"}),
            ] {
                stub.send_frame(&frame).await.expect("send");
            }
        }
        Kind::HugeIntegersAndDeepNesting => {
            let huge = r#"{"type":"inbound","event":{"text":"huge","message_id":123456789012345678901234567890,"source":{"platform":"discord","chat_id":99999999999999999999999,"chat_type":"group","user_id":-99999999999999999999,"scope_id":1e308}}}"#;
            stub.send_line(huge).await.expect("send");
            stub.send_line(r#"{"type":"inbound","event":{"text":"inf","message_id":1e400}}"#)
                .await
                .expect("send");
            let deep = format!(
                r#"{{"type":"inbound","event":{{"text":"deep","x":{}{}}}}}"#,
                "[".repeat(20_000),
                "]".repeat(20_000)
            );
            stub.send_line(&deep).await.expect("send");
            let deep_obj = format!(
                r#"{{"type":"inbound","event":{{"text":"deep","source":{}1{}}}}}"#,
                r#"{"a":"#.repeat(5_000),
                "}".repeat(5_000)
            );
            stub.send_line(&deep_obj).await.expect("send");
            let body = format!(
                r#"{{"type":2,"data":{}1{}}}"#,
                "[".repeat(10_000),
                "]".repeat(10_000)
            );
            stub.send_frame(&forward_b64(&b64(body.as_bytes())))
                .await
                .expect("send");
            // A huge max_message_length in a later descriptor is clamped or ignored.
            stub.send_line(r#"{"type":"descriptor","descriptor":{"contract_version":1e300,"platform":"discord","label":"x","max_message_length":1e30,"supports_draft_streaming":false,"supports_edit":true,"supports_threads":true,"markdown_dialect":"discord","len_unit":"chars"}}"#)
                .await
                .expect("send");
        }
        Kind::InvalidUtf8Binary => {
            stub.send_binary(b"\xff\xfe\xfd\n".to_vec())
                .await
                .expect("send");
            let mut bad = br#"{"type":"inbound","event":{"text":"bad "#.to_vec();
            bad.extend_from_slice(b"\xc3\x28 \xe2\x82 \xf0\x9f");
            bad.extend_from_slice(
                br#"","source":{"platform":"discord","chat_id":"utf","chat_type":"dm"}}}"#,
            );
            bad.push(b'\n');
            stub.send_binary(bad).await.expect("send");
            // A lone surrogate escape is valid JSON text but not a string.
            stub.send_line(r#"{"type":"inbound","event":{"text":"\ud800","source":{"platform":"discord","chat_id":"utf","chat_type":"dm"}}}"#)
                .await
                .expect("send");
        }
        Kind::SplitMultiByteBinary => {
            let text = format!("split é☃😀 {rep}");
            let bytes = line(&inbound("split", &text)).into_bytes();
            // Cut inside each multi-byte character.
            let start = bytes.windows(2).position(|w| w == [0xc3, 0xa9]).expect("é");
            stub.send_split_binary(&bytes, &[start + 1, start + 4, start + 8, start + 10])
                .await
                .expect("send");
            expect.push(text);
        }
        Kind::OverLongLine => {
            // Twice the limit in 4 KiB messages, then the newline.
            let chunk = "x".repeat(4096);
            for _ in 0..(2 * LINE as usize / 4096) {
                stub.send_text(chunk.clone()).await.expect("send");
            }
            stub.send_text("\n".to_owned()).await.expect("send");
        }
        Kind::EndlessLine => {
            // Sixteen times the limit, then the end of it and a valid frame
            // in the same message.
            let chunk = "{".repeat(16 * 1024);
            let messages = (0..(16 * LINE as usize / chunk.len()))
                .map(|_| WireMessage::Text(chunk.clone()))
                .collect();
            stub.send_to(None, messages).await.expect("send");
            let text = format!("after the endless line {rep}");
            stub.send_text(format!("\n{}", line(&inbound("endless", &text))))
                .await
                .expect("send");
            expect.push(text);
        }
        Kind::OversizedMessage => {
            let before = conns(w);
            stub.send_text("y".repeat(LINE as usize + 2))
                .await
                .expect("send");
            recovered(w, before).await;
        }
        Kind::InvalidBase64 => {
            for raw in [
                "!!!not base64***",
                "abc",
                "YWJj=",
                "====",
                "\u{e9}\u{e9}\u{e9}\u{e9}",
                "eyJ0eXBlIjoy",
            ] {
                stub.send_frame(&forward_b64(raw)).await.expect("send");
            }
            // Valid base64 of invalid JSON / invalid UTF-8.
            stub.send_frame(&forward_b64(&b64(b"\xff\xfe{")))
                .await
                .expect("send");
        }
        Kind::OversizedBase64 => {
            // Just inside the line limit: decoded and delivered.
            let name = format!("big{rep}");
            let fits = forward_b64(&b64(slash(&name, LINE as usize * 3 / 4 - 1024).as_bytes()));
            assert!(line(&fits).len() <= LINE as usize);
            stub.send_frame(&fits).await.expect("send");
            expect.push(format!("/{name}"));
            // Past it, in small messages: skipped as an over-long line.
            let over = line(&forward_b64(&b64(slash("over", LINE as usize).as_bytes())));
            let cuts: Vec<usize> = (1..over.len() / 8192).map(|i| i * 8192).collect();
            stub.send_split(&over, &cuts).await.expect("send");
        }
        Kind::LaterDescriptorGarbage => {
            for frame in [
                r#"{"type":"descriptor","descriptor":{"platform":"discord"}}"#,
                r#"{"type":"descriptor","descriptor":"garbage"}"#,
                r#"{"type":"descriptor"}"#,
                r#"{"type":"descriptor","descriptor":null}"#,
                r#"{"type":"descriptor","descriptor":{"contract_version":"x","platform":7,"label":[],"max_message_length":"lots","supports_draft_streaming":"no","supports_edit":1,"supports_threads":{},"markdown_dialect":5,"len_unit":"bytes","supported_ops":"send"}}"#,
                "descriptor garbage",
            ] {
                stub.send_line(frame).await.expect("send");
            }
        }
        Kind::FirstDescriptorGarbage => {
            let before = conns(w);
            // The missing-keys variant fails at once (close 1002); the
            // skipped-line variant waits out the handshake timeout, so it
            // runs on one repetition in ten.
            let garbage = if !rep.is_multiple_of(10) {
                HelloReply::RawLine(
                    "{\"type\":\"descriptor\",\"descriptor\":{\"platform\":\"discord\"}}".into(),
                )
            } else {
                HelloReply::RawLine("not a descriptor at all".into())
            };
            stub.set_descriptor(None, garbage);
            stub.close(1011, "reconfigure").await.expect("close");
            // At least one connection got the garbage and was closed by the
            // adapter: 1002 for an invalid descriptor, 1000 "handshake timed
            // out" after a line that is not one (skipped) ...
            stub.wait_until(
                |s| {
                    s.connections.iter().skip(before).any(|c| {
                        matches!(
                            &c.state,
                            relay_stub::ConnState::Closed {
                                by: relay_stub::Closer::Gateway,
                                ..
                            }
                        )
                    })
                },
                WAIT,
            )
            .await
            .unwrap_or_else(|e| {
                let states: Vec<_> = stub.connections().into_iter().map(|c| c.state).collect();
                panic!("a garbage handshake refused: {e:?}; {states:?}")
            });
            // ... and a valid descriptor makes it ready again, on any
            // connection after the last one it refused (the adapter may
            // already be re-dialing when the descriptor is switched).
            stub.set_descriptor(None, HelloReply::Descriptor(descriptors::discord()));
            let refused = stub
                .connections()
                .iter()
                .filter(|c| {
                    matches!(
                        &c.state,
                        relay_stub::ConnState::Closed {
                            by: relay_stub::Closer::Gateway,
                            ..
                        }
                    )
                })
                .map(|c| c.index)
                .max()
                .unwrap_or(0);
            recovered(w, refused + 1).await;
        }
        Kind::DuplicateResult => {
            assert!(
                w.send("chan1", &format!("dup {rep}"), json!({}))
                    .await
                    .success
            );
            let id = stub
                .frames_of_type("outbound")
                .last()
                .and_then(|f| f.request_id().map(str::to_owned))
                .expect("request id");
            let again = json!({"type": "outbound_result", "requestId": id,
                "result": {"success": false, "error": "again"}});
            stub.send_frames_batched(&[again.clone(), again])
                .await
                .expect("send");
        }
        Kind::LateResult => {
            let r = w.send("chan1", &format!("late {rep}"), json!({})).await;
            assert!(!r.success && r.ambiguous, "{r:?}");
            let id = stub
                .frames_of_type("outbound")
                .last()
                .and_then(|f| f.request_id().map(str::to_owned))
                .expect("request id");
            stub.send_frame(&json!({"type": "outbound_result", "requestId": id,
                "result": {"success": true, "message_id": "too late"}}))
                .await
                .expect("send");
        }
        Kind::UnknownResult => {
            for id in [
                json!("nope"),
                json!(""),
                json!("0123456789abcdef0123456789abcdef"),
                json!("r".repeat(8192)),
            ] {
                stub.send_frame(&json!({"type": "outbound_result", "requestId": id,
                    "result": {"success": true, "message_id": "m"}}))
                    .await
                    .expect("send");
            }
        }
        Kind::InboundFlood => {
            // 50 frames in one message: well under the 64 KiB message limit
            // even as message ids grow (a larger batch closes with 1009).
            let frames: Vec<Value> = (0..50)
                .map(|i| {
                    let text = format!("flood {rep}.{i}");
                    expect.push(text.clone());
                    inbound(&format!("flood-{i}"), &text)
                })
                .collect();
            stub.send_frames_batched(&frames).await.expect("send");
        }
        Kind::Close(code, reason) => {
            let before = conns(w);
            if code == 1006 {
                // 1006 is never sent in a close frame: it means "no close frame".
                stub.drop_connection().await.expect("drop");
            } else {
                stub.close(code, reason).await.expect("close");
            }
            recovered(w, before).await;
        }
        Kind::UnauthorizedAfterHandshake => {
            let before = conns(w);
            stub.close(4401, "unauthorized").await.expect("close");
            recovered(w, before).await;
            // A normal close ends the fresh-token retry generation, so the
            // next 4401 is provisional again.
            let before = conns(w);
            stub.close(1011, "overloaded").await.expect("close");
            recovered(w, before).await;
        }
        Kind::UnauthorizedBeforeHandshake => {
            // Every dial is refused with 4401 until the secret matches.
            stub.wait_for_connections(rep + 1, WAIT)
                .await
                .expect("another refused dial");
        }
        Kind::ResetMidFrame => {
            let before = conns(w);
            let frame = line(&inbound("reset", "never whole"));
            let half = frame[..frame.len() / 2].to_owned();
            stub.send_to(None, vec![WireMessage::Text(half), WireMessage::Drop])
                .await
                .expect("send");
            recovered(w, before).await;
        }
    }
    expect
}

/// The world for `kind`: tiny timers, a 64 KiB line limit, and whatever
/// the case needs from the stub.
async fn hostile_world(kind: Kind) -> World {
    let mut stub = StubConfig::default();
    let mut authed = false;
    match kind {
        Kind::LateResult => stub = stub.with_outbound_reply("send", OutboundReply::NoAnswer),
        Kind::UnauthorizedBeforeHandshake => {
            stub = stub.with_secret("another-secret");
            authed = true;
        }
        _ => {}
    }
    world_with(stub, |c| {
        c.max_line_bytes = LINE;
        c.reconnect_initial = Duration::from_millis(1);
        c.reconnect_max = Duration::from_millis(5);
        // Every connection counts as stable: the ladder restarts at 1 ms.
        c.stable_connection = Duration::from_millis(1);
        match kind {
            Kind::LateResult => c.outbound_timeout = Duration::from_millis(10),
            // Long enough for a valid handshake on a loaded 2-core CI box;
            // only the "not a descriptor" variant waits it out.
            Kind::FirstDescriptorGarbage => c.handshake_timeout = Duration::from_millis(250),
            _ => {}
        }
        if authed {
            c.gateway_id = "gw-hostile".into();
            c.secret = Some(Secret::new(SECRET));
        }
    })
    .await
}

async fn run_case(case: &Case) -> String {
    let rss_before = vm_rss_kib();
    let started = std::time::Instant::now();
    let mut w = hostile_world(case.kind).await;
    if case.policy != Policy::RetriedBeforeHandshake {
        w.state(State::Ready).await;
    }
    let sync_text = |rep: usize| format!("valid after {} #{rep}", case.name);
    for rep in 0..REPS {
        let expect = inject(&mut w, case.kind, rep).await;
        let sync = sync_text(rep);
        w.stub
            .push_inbound(events::discord_text(&sync))
            .await
            .expect("push");
        if case.policy == Policy::RetriedBeforeHandshake {
            continue; // buffered by the connector until the handshake
        }
        let texts = drain_until(&mut w, &sync).await;
        for text in expect {
            assert!(
                texts.contains(&text),
                "{}: {text:?} not delivered: {texts:?}",
                case.name
            );
        }
    }
    if case.policy == Policy::RetriedBeforeHandshake {
        assert_ne!(w.handle.state().await.expect("state"), State::Ready);
        w.stub.set_secrets(vec![SECRET.into()]);
        w.state(State::Ready).await;
        for rep in 0..REPS {
            let m = w.message().await;
            assert_eq!(m.text, sync_text(rep), "{}: replayed in order", case.name);
            m.accept();
        }
    }

    // The host is up, the component never trapped, memory within the cap.
    let health = w.handle.health().await.expect("health");
    assert_eq!(
        health.state,
        Some(State::Ready),
        "{}: {health:?}",
        case.name
    );
    assert_eq!(w.handle.state().await.expect("state"), State::Ready);
    assert_eq!(health.restarts, 0, "{}: the component trapped", case.name);
    assert!(
        health.guest_memory_peak_bytes <= health.memory_limit_bytes,
        "{}: {health:?}",
        case.name
    );
    while let Some(event) = w.events.try_next() {
        if let Event::Fatal { code, .. } = &event {
            panic!("{}: fatal {code}: {event:?}", case.name);
        }
    }
    assert!(w.fatals.is_empty(), "{}: {:?}", case.name, w.fatals);
    // The connection survived or was replaced, per policy.
    let connections = conns(&w);
    match case.policy {
        Policy::Survives => assert_eq!(connections, 1, "{}: the connection survived", case.name),
        Policy::Recovers => assert!(
            connections > REPS,
            "{}: {connections} connections",
            case.name
        ),
        Policy::RetriedBeforeHandshake => {
            assert!(connections > REPS, "{}: refused until accepted", case.name)
        }
    }
    let rss_after = vm_rss_kib();
    let growth = rss_after.saturating_sub(rss_before);
    assert!(
        growth < RSS_GROWTH_MAX_KIB,
        "{}: RSS grew {growth} KiB ({rss_before} -> {rss_after})",
        case.name
    );
    w.handle.shutdown().await.expect("shutdown");
    format!(
        "{:<62} {:>4} conns, guest memory {:>5} KiB, RSS {:>6} -> {:>6} KiB (+{growth}), {:?}",
        case.name,
        connections,
        health.guest_memory_peak_bytes / 1024,
        rss_before,
        rss_after,
        started.elapsed()
    )
}

/// The catalogue: every case in turn (one test, so RSS figures are not
/// mixed up between cases of this test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_connector_catalogue() {
    let _heavy = heavy().await;
    // Compile the component first: its code is not part of any case's growth.
    plugin();
    let started = std::time::Instant::now();
    let rss_start = vm_rss_kib();
    for case in CASES {
        let report = run_case(case).await;
        println!("hostile: {report}");
    }
    println!(
        "hostile: {} cases x {REPS} in {:?}, RSS {rss_start} -> {} KiB",
        CASES.len(),
        started.elapsed(),
        vm_rss_kib()
    );
}
