//! End-to-end tests of the stub connector over real sockets: a plain
//! tokio-tungstenite client plays the gateway, so every assertion is about
//! bytes the stub put on (or took off) the wire.

use std::collections::VecDeque;
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use relay_stub::{
    Clock, Closer, ConnState, Deliverable, Delivery, HelloReply, IdleReply, OutboundReply,
    Passthrough, ReplayMode, StubConfig, StubConnector, StubError, UpgradeFate, descriptors,
    events, run_script,
};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

const T: Duration = Duration::from_secs(5);
const V1_TOKEN: &str = "Z3ctdGVzdDoxNzAwMDAwMzAwOmZkMGI1YmUzYTMxMDNhNDU0YWEwMDkyYmM3NjU4OWZmZjAwY2ZjYWQ3YjFiMmI4Njk4ZTVkMjgyZTc2YThiOTc";
const V3_TOKEN: &str = "dGVuYW50Omd3OjQyOjA6Y2UyOTE1YzRmZWE2ZDBlZjczN2FiNjQ0YTVkZDRjYjg4ODg5MzRjMTI5ZTZhMzdkYjE3NTkyMGNmNzk5MDg3Nw";

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A minimal gateway: sends frames, reads lines across messages.
struct Client {
    ws: Ws,
    partial: String,
    lines: VecDeque<String>,
}

async fn dial(url: &str, headers: &[(&str, &str)]) -> Result<Ws, WsError> {
    let mut request = url.into_client_request()?;
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(http_name(name), value.parse().expect("header value"));
    }
    connect_async(request).await.map(|(ws, _)| ws)
}

fn http_name(name: &str) -> tokio_tungstenite::tungstenite::http::HeaderName {
    name.parse().expect("header name")
}

impl Client {
    async fn connect(url: &str) -> Client {
        Client::connect_with(url, &[]).await
    }

    async fn connect_with(url: &str, headers: &[(&str, &str)]) -> Client {
        Client {
            ws: dial(url, headers).await.expect("upgrade"),
            partial: String::new(),
            lines: VecDeque::new(),
        }
    }

    async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::Text(format!("{frame}\n").into()))
            .await
            .expect("send");
    }

    async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.expect("send");
    }

    /// Sends hello and returns the next frame (normally the descriptor).
    async fn hello(&mut self, platform: &str, bot_id: &str) -> Value {
        self.send(json!({"type": "hello", "platform": platform, "botId": bot_id}))
            .await;
        self.frame().await
    }

    /// The next WebSocket data or close message (pings skipped).
    async fn message(&mut self) -> Option<Result<Message, WsError>> {
        // Bounded: only ping/pong messages are skipped, each with the deadline.
        loop {
            let next = tokio::time::timeout(T, self.ws.next())
                .await
                .expect("timed out waiting for a message");
            match next {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => return other,
            }
        }
    }

    async fn text_message(&mut self) -> String {
        match self.message().await {
            Some(Ok(Message::Text(t))) => t.as_str().to_owned(),
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// The next complete line, parsed.
    async fn frame(&mut self) -> Value {
        let line = self.line().await;
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"))
    }

    async fn line(&mut self) -> String {
        // Bounded by `message`'s deadline on every pass.
        loop {
            if let Some(line) = self.lines.pop_front() {
                return line;
            }
            let chunk = match self.message().await {
                Some(Ok(Message::Text(t))) => t.as_str().to_owned(),
                Some(Ok(Message::Binary(b))) => String::from_utf8(b.to_vec()).expect("utf8"),
                other => panic!("expected data, got {other:?}"),
            };
            self.partial.push_str(&chunk);
            while let Some(pos) = self.partial.find('\n') {
                let line: String = self.partial.drain(..=pos).collect();
                self.lines.push_back(line.trim_end_matches('\n').to_owned());
            }
        }
    }

    /// Reads the close frame and returns it, then keeps reading so the
    /// library sends its close reply, as a real gateway's reader would.
    async fn closed(&mut self) -> Option<CloseFrame> {
        let frame = match self.message().await {
            Some(Ok(Message::Close(frame))) => frame,
            other => panic!("expected a close frame, got {other:?}"),
        };
        while let Ok(Some(Ok(_))) = tokio::time::timeout(T, self.ws.next()).await {}
        frame
    }

    async fn close(mut self) {
        self.ws.close(None).await.expect("close");
        // Drain until the server's close reply ends the stream.
        while let Ok(Some(Ok(_))) = tokio::time::timeout(T, self.ws.next()).await {}
    }
}

async fn stub() -> StubConnector {
    StubConnector::start(StubConfig::default()).await.unwrap()
}

async fn stub_with(config: StubConfig) -> StubConnector {
    StubConnector::start(config).await.unwrap()
}

fn close_of(frame: Option<CloseFrame>) -> (u16, String) {
    let frame = frame.expect("close frame with a code");
    (u16::from(frame.code), frame.reason.as_str().to_owned())
}

// ----- transport and upgrade ----------------------------------------------

#[tokio::test]
async fn binds_loopback_and_answers_hello_with_the_discord_descriptor() {
    let stub = stub().await;
    assert!(stub.addr().ip().is_loopback());
    assert_eq!(stub.url(), format!("ws://{}/relay", stub.addr()));
    let mut gw = Client::connect_with(&stub.url(), &[("x-test", "yes")]).await;
    let descriptor = gw.hello("discord", "123").await;
    assert_eq!(descriptor["type"], "descriptor");
    assert_eq!(descriptor["descriptor"]["platform"], "discord");
    assert_eq!(descriptor["descriptor"]["max_message_length"], 2000);

    let conn = stub.wait_for_handshakes(1, T).await.unwrap();
    assert_eq!(conn.index, 0);
    assert_eq!(conn.path, "/relay");
    assert_eq!(conn.header("X-Test"), Some("yes"));
    assert_eq!(conn.hellos[0].platform, "discord");
    assert_eq!(conn.hellos[0].bot_id, "123");
    assert!(conn.is_open());
    assert_eq!(stub.current_connection(), Some(0));
}

#[tokio::test]
async fn other_paths_get_http_400() {
    let stub = stub().await;
    let url = format!("ws://{}/other", stub.addr());
    match dial(&url, &[]).await {
        Err(WsError::Http(response)) => assert_eq!(response.status().as_u16(), 400),
        other => panic!("expected HTTP 400, got {other:?}"),
    }
    let conns = stub.wait_for_connections(1, T).await.unwrap();
    assert_eq!(conns[0].path, "/other");
    assert_eq!(conns[0].state, ConnState::Refused { status: 400 });
    // /relay still works afterwards.
    let mut gw = Client::connect(&stub.url()).await;
    assert_eq!(gw.hello("discord", "1").await["type"], "descriptor");
}

#[tokio::test]
async fn queued_upgrade_fates_refuse_close_and_delay() {
    let stub = stub().await;
    stub.refuse_next_upgrades(
        1,
        UpgradeFate::Http {
            status: 503,
            body: "busy".into(),
        },
    )
    .unwrap();
    stub.refuse_next_upgrades(
        1,
        UpgradeFate::CloseAfterAccept {
            code: 4401,
            reason: "not provisioned".into(),
        },
    )
    .unwrap();
    stub.delay_next_upgrade(Duration::from_millis(300));
    assert!(matches!(
        stub.refuse_next_upgrades(
            1,
            UpgradeFate::Http {
                status: 200,
                body: String::new()
            }
        ),
        Err(StubError::Invalid(_))
    ));

    match dial(&stub.url(), &[]).await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503);
            assert_eq!(response.body().as_deref(), Some(&b"busy"[..]));
        }
        other => panic!("expected HTTP 503, got {other:?}"),
    }

    let mut rejected = Client::connect(&stub.url()).await;
    assert_eq!(
        close_of(rejected.closed().await),
        (4401, "not provisioned".into())
    );

    let started = tokio::time::Instant::now();
    let mut delayed = Client::connect(&stub.url()).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(delayed.hello("discord", "1").await["type"], "descriptor");

    let conns = stub.wait_for_connections(3, T).await.unwrap();
    assert_eq!(conns[0].state, ConnState::Refused { status: 503 });
    assert_eq!(
        conns[1].state,
        ConnState::Rejected {
            code: 4401,
            reason: "not provisioned".into()
        }
    );
    assert_eq!(conns[2].state, ConnState::Open);
}

// ----- authentication ------------------------------------------------------

#[tokio::test]
async fn vector_one_is_valid_at_exp_and_expired_one_second_later() {
    let stub = stub_with(
        StubConfig::default()
            .with_secret("s3cret")
            .with_clock(Clock::Fixed(1_700_000_300)),
    )
    .await;
    let bearer = format!("Bearer {V1_TOKEN}");
    let mut ok = Client::connect_with(&stub.url(), &[("authorization", &bearer)]).await;
    assert_eq!(ok.hello("discord", "1").await["type"], "descriptor");
    let conn = stub.wait_for_handshakes(1, T).await.unwrap();
    assert_eq!(conn.gateway_id.as_deref(), Some("gw-test"));

    stub.set_clock(Clock::Fixed(1_700_000_301));
    let mut late = Client::connect_with(&stub.url(), &[("authorization", &bearer)]).await;
    assert_eq!(close_of(late.closed().await), (4401, "expired".into()));
    assert_eq!(
        stub.wait_for_close(1, T).await.unwrap(),
        ConnState::Rejected {
            code: 4401,
            reason: "expired".into()
        }
    );
}

#[tokio::test]
async fn vector_three_verifies_against_a_rotation_list() {
    let stub = stub_with(StubConfig {
        secrets: vec!["wrong".into(), "pässwörd🔑".into()],
        ..StubConfig::default()
    })
    .await;
    let bearer = format!("Bearer {V3_TOKEN}");
    let mut gw = Client::connect_with(&stub.url(), &[("authorization", &bearer)]).await;
    assert_eq!(gw.hello("discord", "1").await["type"], "descriptor");
    let conn = stub.wait_for_handshakes(1, T).await.unwrap();
    assert_eq!(conn.gateway_id.as_deref(), Some("tenant:gw:42"));
}

#[tokio::test]
async fn tampered_unknown_secret_and_missing_tokens_close_4401() {
    let stub = stub_with(
        StubConfig::default()
            .with_secret("s3cret")
            .with_clock(Clock::Fixed(1_700_000_000)),
    )
    .await;
    // Flip one character of the signature part.
    let mut tampered = V1_TOKEN.to_owned();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'c' { 'd' } else { 'c' });
    let unknown = relay_stub::auth::mint_token("gw-test", "other-secret", 1_700_000_000, 300);
    let cases = [
        Some(format!("Bearer {tampered}")),
        Some(format!("Bearer {unknown}")),
        Some("Bearer not-base64!".to_owned()),
        Some(format!("Basic {V1_TOKEN}")),
        None,
    ];
    for (i, header) in cases.iter().enumerate() {
        let headers: Vec<(&str, &str)> = header
            .iter()
            .map(|h| ("authorization", h.as_str()))
            .collect();
        let mut gw = Client::connect_with(&stub.url(), &headers).await;
        assert_eq!(
            close_of(gw.closed().await),
            (4401, "unauthorized".into()),
            "case {i}"
        );
    }
    let conns = stub.wait_for_connections(cases.len(), T).await.unwrap();
    assert!(
        conns
            .iter()
            .all(|c| matches!(c.state, ConnState::Rejected { code: 4401, .. }))
    );
    assert!(stub.frames().is_empty(), "no frame is read before auth");
}

// ----- descriptors and outbound results -------------------------------------

#[tokio::test]
async fn hello_replies_follow_per_platform_policy() {
    let stub =
        stub_with(StubConfig::default().with_descriptor("telegram", descriptors::telegram())).await;
    stub.set_descriptor(Some("slack"), HelloReply::Nothing);
    stub.set_descriptor(Some("garbage"), HelloReply::RawLine("{not json".into()));
    let mut gw = Client::connect(&stub.url()).await;
    assert_eq!(
        gw.hello("telegram", "t").await["descriptor"]["len_unit"],
        "utf16"
    );
    // Slack gets nothing: the next line is the answer to the following hello.
    gw.send(json!({"type": "hello", "platform": "slack", "botId": "s"}))
        .await;
    gw.send(json!({"type": "hello", "platform": "garbage", "botId": "g"}))
        .await;
    assert_eq!(gw.line().await, "{not json");
    // Unlisted platforms get the default (Discord) descriptor.
    assert_eq!(
        gw.hello("matrix", "m").await["descriptor"]["platform"],
        "discord"
    );
    let conn = stub.wait_for_handshakes(1, T).await.unwrap();
    assert!(
        stub.wait_until(|s| s.connections[0].hellos.len() == 4, T)
            .await
            .is_ok()
    );
    assert_eq!(conn.index, 0);
}

fn outbound(request_id: &str, action: Value) -> Value {
    json!({"type": "outbound", "requestId": request_id, "action": action})
}

#[tokio::test]
async fn outbound_results_follow_the_reply_policy() {
    let stub =
        stub_with(StubConfig::default().with_chat_info("chan1", "Hermes / #ops", "group")).await;
    let mut gw = Client::connect(&stub.url()).await;
    gw.hello("discord", "1").await;

    let send =
        json!({"op": "send", "chat_id": "c", "content": "hi", "reply_to": null, "metadata": {}});
    gw.send(outbound("r1", send.clone())).await;
    assert_eq!(
        gw.frame().await,
        json!({"type": "outbound_result", "requestId": "r1", "result": {"success": true, "message_id": "m1"}})
    );
    gw.send(outbound("r2", send.clone())).await;
    assert_eq!(gw.frame().await["result"]["message_id"], "m2");
    gw.send(outbound("r3", json!({"op": "edit", "chat_id": "c", "message_id": "srv-9", "content": "x", "metadata": {}})))
        .await;
    assert_eq!(gw.frame().await["result"]["message_id"], "srv-9");
    gw.send(outbound(
        "r4",
        json!({"op": "get_chat_info", "chat_id": "chan1"}),
    ))
    .await;
    assert_eq!(
        gw.frame().await["result"],
        json!({"success": true, "chat_info": {"name": "Hermes / #ops", "type": "group"}})
    );
    gw.send(outbound(
        "r5",
        json!({"op": "get_chat_info", "chat_id": "dm-7"}),
    ))
    .await;
    assert_eq!(
        gw.frame().await["result"]["chat_info"],
        json!({"name": "dm-7", "type": "dm"})
    );

    // Egress decline names the frame's platform (else the first hello's).
    stub.set_outbound_reply(Some("send"), OutboundReply::EgressDeclined);
    let mut tagged = outbound("r6", send.clone());
    tagged["platform"] = json!("slack");
    gw.send(tagged).await;
    assert_eq!(
        gw.frame().await["result"],
        json!({"success": false, "code": "egress_declined",
               "error": "slack egress declined: target is not an approved destination for this connection"})
    );
    gw.send(outbound("r7", send.clone())).await;
    assert_eq!(
        gw.frame().await["result"]["error"],
        "discord egress declined: target is not an approved destination for this connection"
    );

    // A one-shot reply wins once, then the standing policy is back.
    stub.queue_outbound_reply(
        Some("send"),
        OutboundReply::Fail {
            error: "boom".into(),
            code: Some("x".into()),
        },
    );
    gw.send(outbound("r8", send.clone())).await;
    assert_eq!(
        gw.frame().await["result"],
        json!({"success": false, "error": "boom", "code": "x"})
    );
    gw.send(outbound("r9", send.clone())).await;
    assert_eq!(gw.frame().await["result"]["code"], "egress_declined");

    // A delayed send is overtaken by an immediate typing result.
    stub.set_outbound_reply(
        Some("send"),
        OutboundReply::delayed(Duration::from_millis(500), OutboundReply::Success),
    );
    gw.send(outbound("slow", send.clone())).await;
    gw.send(outbound(
        "fast",
        json!({"op": "typing", "chat_id": "c", "metadata": {}}),
    ))
    .await;
    let first = gw.frame().await;
    assert_eq!(first["requestId"], "fast");
    assert_eq!(first["result"], json!({"success": true}));
    let second = gw.frame().await;
    assert_eq!(second["requestId"], "slow");
    assert_eq!(second["result"]["message_id"], "m3");
}

#[tokio::test]
async fn unanswered_outbound_is_answered_by_hand() {
    let stub =
        stub_with(StubConfig::default().with_outbound_reply("send", OutboundReply::NoAnswer)).await;
    let mut gw = Client::connect(&stub.url()).await;
    gw.hello("discord", "1").await;
    gw.send(outbound(
        "held",
        json!({"op": "send", "chat_id": "c", "content": "x"}),
    ))
    .await;
    gw.send(outbound("t", json!({"op": "typing", "chat_id": "c"})))
        .await;
    // The typing answer arrives first: the send is being held.
    assert_eq!(gw.frame().await["requestId"], "t");
    let pending = stub.wait_for_pending_request(T).await.unwrap();
    assert_eq!(pending.request_id, "held");
    assert_eq!(pending.frame["action"]["content"], "x");
    stub.answer("held", json!({"success": true, "message_id": "srv-send"}))
        .await
        .unwrap();
    assert_eq!(
        gw.frame().await,
        json!({"type": "outbound_result", "requestId": "held", "result": {"success": true, "message_id": "srv-send"}})
    );
    assert!(stub.pending_requests().is_empty());
    // Unknown ids go to the current connection, for "ignored result" tests.
    stub.answer("nobody", json!({})).await.unwrap();
    assert_eq!(gw.frame().await["requestId"], "nobody");
}

// ----- going idle and buffering ---------------------------------------------

#[tokio::test]
async fn going_idle_buffers_and_replays_until_each_entry_is_acked() {
    let stub = stub().await;
    let mut gw0 = Client::connect(&stub.url()).await;
    gw0.hello("discord", "1").await;
    stub.wait_for_handshakes(1, T).await.unwrap();

    assert_eq!(
        stub.push_inbound(events::discord_text("live"))
            .await
            .unwrap(),
        Delivery::Live { conn: 0 }
    );
    let live = gw0.frame().await;
    assert_eq!(live["event"]["text"], "live");
    assert!(live.get("bufferId").is_none());

    gw0.send(json!({"type": "going_idle"})).await;
    assert_eq!(gw0.frame().await, json!({"type": "going_idle_ack"}));
    assert!(stub.is_idle());

    let body = br#"{"type":2,"id":"i1"}"#;
    let forward = Passthrough::new("discord", "1234567890").body(body);
    assert_eq!(
        stub.push_inbound(events::discord_text("while idle"))
            .await
            .unwrap(),
        Delivery::Buffered {
            buffer_id: "buf-1".into()
        }
    );
    assert_eq!(
        stub.push_passthrough(forward.clone()).await.unwrap(),
        Delivery::Buffered {
            buffer_id: "buf-2".into()
        }
    );
    // Nothing reached the idle connection: its next message is the close reply.
    gw0.send_raw(Message::Close(None)).await;
    assert!(matches!(gw0.message().await, Some(Ok(Message::Close(_)))));
    stub.wait_for_close(0, T).await.unwrap();

    // Connection 1: replay after the hello; not acked.
    let mut gw1 = Client::connect(&stub.url()).await;
    assert_eq!(gw1.hello("discord", "1").await["type"], "descriptor");
    let first = gw1.frame().await;
    assert_eq!(first["type"], "inbound");
    assert_eq!(first["bufferId"], "buf-1");
    assert_eq!(first["event"]["text"], "while idle");
    let second = gw1.frame().await;
    assert_eq!(second["type"], "passthrough_forward");
    assert_eq!(second["bufferId"], "buf-2");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(second["forward"]["bodyB64"].as_str().unwrap())
        .unwrap();
    assert_eq!(decoded, body);
    assert_eq!(second["forward"]["botId"], "1234567890");
    assert_eq!(
        second["forward"]["headers"],
        json!([["content-type", "application/json"]])
    );
    assert!(!stub.is_idle());
    gw1.close().await;
    stub.wait_for_close(1, T).await.unwrap();

    // Connection 2: both again; ack only buf-1.
    let mut gw2 = Client::connect(&stub.url()).await;
    gw2.hello("discord", "1").await;
    assert_eq!(gw2.frame().await["bufferId"], "buf-1");
    assert_eq!(gw2.frame().await["bufferId"], "buf-2");
    gw2.send(json!({"type": "inbound_ack", "bufferId": "buf-1"}))
        .await;
    stub.wait_for_ack("buf-1", T).await.unwrap();
    gw2.close().await;
    stub.wait_for_close(2, T).await.unwrap();

    // Connection 3: only buf-2; after its ack, a live push comes next.
    let mut gw3 = Client::connect(&stub.url()).await;
    gw3.hello("discord", "1").await;
    assert_eq!(gw3.frame().await["bufferId"], "buf-2");
    gw3.send(json!({"type": "inbound_ack", "bufferId": "buf-2"}))
        .await;
    stub.wait_for_ack("buf-2", T).await.unwrap();
    assert!(matches!(
        stub.push_inbound(events::discord_text("marker"))
            .await
            .unwrap(),
        Delivery::Live { conn: 3 }
    ));
    let next = gw3.frame().await;
    assert_eq!(next["event"]["text"], "marker");
    assert!(next.get("bufferId").is_none());

    let state = stub.state();
    assert_eq!(state.acked_buffer_ids, vec!["buf-1", "buf-2"]);
    assert_eq!(state.ack_count("buf-1"), 1);
    assert!(state.buffer.is_empty());
    // Connection 4 gets no replay: its first frame after the descriptor is live.
    gw3.close().await;
    let mut gw4 = Client::connect(&stub.url()).await;
    gw4.hello("discord", "1").await;
    stub.wait_for_handshakes(5, T).await.unwrap();
    stub.push_inbound(events::discord_text("after"))
        .await
        .unwrap();
    assert_eq!(gw4.frame().await["event"]["text"], "after");
}

#[tokio::test]
async fn pushes_while_disconnected_are_buffered_and_sent_live_with_buffer_id_when_connected() {
    let stub = stub().await;
    // No connection at all: buffered, generated id.
    let delivery = stub
        .push_inbound(events::discord_text("early"))
        .await
        .unwrap();
    assert_eq!(
        delivery,
        Delivery::Buffered {
            buffer_id: "buf-1".into()
        }
    );
    let mut gw = Client::connect(&stub.url()).await;
    gw.hello("discord", "1").await;
    assert_eq!(gw.frame().await["bufferId"], "buf-1");
    // An explicit buffered push while live goes out at once with its id.
    let id = stub
        .push_buffered(
            Deliverable::Inbound(events::discord_text("b")),
            Some("buf-42"),
        )
        .await;
    assert_eq!(id, "buf-42");
    let frame = gw.frame().await;
    assert_eq!(frame["bufferId"], "buf-42");
    gw.send(json!({"type": "inbound_ack", "bufferId": "buf-42"}))
        .await;
    gw.send(json!({"type": "inbound_ack", "bufferId": "buf-42"}))
        .await;
    stub.wait_until(|s| s.ack_count("buf-42") == 2, T)
        .await
        .unwrap();
    let pending: Vec<String> = stub
        .pending_buffer()
        .into_iter()
        .map(|e| e.buffer_id)
        .collect();
    assert_eq!(pending, vec!["buf-1"]);
    assert_eq!(stub.pending_buffer()[0].delivered_on, vec![0]);
}

#[tokio::test]
async fn withheld_going_idle_keeps_delivery_live() {
    let stub = stub_with(StubConfig::default().with_going_idle(IdleReply::Withhold)).await;
    let mut gw = Client::connect(&stub.url()).await;
    gw.hello("discord", "1").await;
    gw.send(json!({"type": "going_idle"})).await;
    stub.wait_for_frame_type("going_idle", T).await.unwrap();
    assert!(matches!(
        stub.push_inbound(events::discord_text("still live"))
            .await
            .unwrap(),
        Delivery::Live { .. }
    ));
    // No ack came before the live inbound.
    let next = gw.frame().await;
    assert_eq!(next["type"], "inbound");
    assert!(!stub.is_idle());
}

#[tokio::test]
async fn delayed_going_idle_ack_flips_only_when_acked() {
    let stub = stub_with(
        // Wide enough that the push below always lands inside the window.
        StubConfig::default().with_going_idle(IdleReply::Delayed(Duration::from_millis(1000))),
    )
    .await;
    let mut gw = Client::connect(&stub.url()).await;
    gw.hello("discord", "1").await;
    gw.send(json!({"type": "going_idle"})).await;
    stub.wait_for_frame_type("going_idle", T).await.unwrap();
    // In the flip window delivery is still live.
    assert!(matches!(
        stub.push_inbound(events::discord_text("in window"))
            .await
            .unwrap(),
        Delivery::Live { .. }
    ));
    assert_eq!(gw.frame().await["event"]["text"], "in window");
    assert_eq!(gw.frame().await["type"], "going_idle_ack");
    stub.wait_until(|s| s.idle, T).await.unwrap();
    assert!(matches!(
        stub.push_inbound(events::discord_text("after"))
            .await
            .unwrap(),
        Delivery::Buffered { .. }
    ));
}

#[tokio::test]
async fn one_at_a_time_replay_waits_for_each_ack() {
    let stub = stub_with(StubConfig::default().with_replay_mode(ReplayMode::OneAtATime)).await;
    stub.push_inbound(events::discord_text("one"))
        .await
        .unwrap();
    stub.push_inbound(events::discord_text("two"))
        .await
        .unwrap();
    let mut gw = Client::connect(&stub.url()).await;
    gw.hello("discord", "1").await;
    assert_eq!(gw.frame().await["bufferId"], "buf-1");
    // A round trip as a barrier: buf-2 must not precede the result.
    gw.send(outbound("barrier", json!({"op": "typing", "chat_id": "c"})))
        .await;
    assert_eq!(gw.frame().await["requestId"], "barrier");
    gw.send(json!({"type": "inbound_ack", "bufferId": "buf-1"}))
        .await;
    let next = gw.frame().await;
    assert_eq!(next["bufferId"], "buf-2");
    assert_eq!(next["event"]["text"], "two");
}

#[tokio::test]
async fn multi_hello_gateways_get_their_replay_after_the_last_hello() {
    let stub = stub_with(
        StubConfig::default()
            .with_replay_after_hellos(2)
            .with_descriptor("slack", descriptors::slack()),
    )
    .await;
    stub.push_inbound(events::discord_text("queued"))
        .await
        .unwrap();
    let mut gw = Client::connect(&stub.url()).await;
    assert_eq!(
        gw.hello("discord", "1").await["descriptor"]["platform"],
        "discord"
    );
    assert_eq!(
        gw.hello("slack", "S1").await["descriptor"]["platform"],
        "slack"
    );
    assert_eq!(gw.frame().await["bufferId"], "buf-1");
}

// ----- raw wire shapes -------------------------------------------------------

#[tokio::test]
async fn batched_split_binary_and_sized_messages_are_shaped_as_asked() {
    let stub = stub().await;
    let mut gw = Client::connect(&stub.url()).await;
    gw.hello("discord", "1").await;

    let a = json!({"type": "interrupt_inbound", "session_key": "k", "chat_id": "c"});
    let b = json!({"type": "inbound", "event": {"text": "b"}});
    stub.send_frames_batched(&[a.clone(), b.clone()])
        .await
        .unwrap();
    assert_eq!(gw.text_message().await, format!("{a}\n{b}\n"));

    stub.send_split_frame(&b, 3).await.unwrap();
    let parts = [
        gw.text_message().await,
        gw.text_message().await,
        gw.text_message().await,
    ];
    assert!(parts.iter().all(|p| !p.is_empty()));
    assert!(!parts[0].contains('\n') && !parts[1].contains('\n'));
    assert_eq!(parts.concat(), format!("{b}\n"));

    // A multi-byte character cut across two binary messages.
    let line = "{\"type\":\"inbound\",\"event\":{\"text\":\"☃\"}}\n";
    let cut = line.find('☃').unwrap() + 1;
    stub.send_split_binary(line.as_bytes(), &[cut])
        .await
        .unwrap();
    let mut joined = Vec::new();
    for _ in 0..2 {
        match gw.message().await {
            Some(Ok(Message::Binary(bytes))) => joined.extend_from_slice(&bytes),
            other => panic!("expected binary, got {other:?}"),
        }
    }
    assert_eq!(joined, line.as_bytes());
    assert!(matches!(
        stub.send_split("a☃b", &[2]).await,
        Err(StubError::Invalid(_))
    ));

    stub.send_binary(format!("{a}\n").into_bytes())
        .await
        .unwrap();
    assert!(
        matches!(gw.message().await, Some(Ok(Message::Binary(b))) if b.as_ref() == format!("{a}\n").as_bytes())
    );

    stub.send_sized_frame(b.clone(), 4096).await.unwrap();
    let sized = gw.text_message().await;
    assert_eq!(sized.len(), 4096);
    let parsed: Value = serde_json::from_str(sized.trim_end()).unwrap();
    assert_eq!(parsed["event"], b["event"]);

    stub.send_line("not json").await.unwrap();
    assert_eq!(gw.text_message().await, "not json\n");
    stub.interrupt_inbound("agent:main:discord:group:c:u", "c")
        .await
        .unwrap();
    assert_eq!(
        gw.frame().await,
        json!({"type": "interrupt_inbound", "session_key": "agent:main:discord:group:c:u", "chat_id": "c"})
    );
    let forward = Passthrough::new("twilio", "AC1")
        .body_b64("%%%")
        .profile("p1");
    stub.send_passthrough(&forward, Some("pbuf-7"))
        .await
        .unwrap();
    let pt = gw.frame().await;
    assert_eq!(pt["bufferId"], "pbuf-7");
    assert_eq!(pt["forward"]["bodyB64"], "%%%");
    assert_eq!(pt["forward"]["profile"], "p1");
    assert_eq!(pt["forward"]["path"], "/interactions/twilio/AC1");
}

#[tokio::test]
async fn received_lines_are_recorded_in_order_across_message_shapes() {
    let stub = stub().await;
    let mut gw = Client::connect(&stub.url()).await;
    gw.hello("discord", "1").await;
    gw.send_raw(Message::Text(
        "{\"type\":\"interrupt\",\"session_key\":\"k\",\"reason\":null}\n{\"type\":\"x\"}\n".into(),
    ))
    .await;
    gw.send_raw(Message::Text("{\"type\":\"going".into())).await;
    gw.send_raw(Message::Binary(b"_idle\"}\n".to_vec().into()))
        .await;
    gw.send_raw(Message::Text("not json\n\n   \n[1,2]\n".into()))
        .await;
    gw.send_raw(Message::Text("{\"type\":\"tail-without-newline\"}".into()))
        .await;

    let frames = stub.wait_for_frames(6, |_| true, T).await.unwrap();
    let raws: Vec<&str> = frames.iter().map(|f| f.raw.as_str()).collect();
    assert_eq!(
        raws,
        vec![
            frames[0].raw.as_str(),
            "{\"type\":\"interrupt\",\"session_key\":\"k\",\"reason\":null}",
            "{\"type\":\"x\"}",
            "{\"type\":\"going_idle\"}",
            "not json",
            "[1,2]",
        ]
    );
    assert_eq!(frames[0].frame_type(), Some("hello"));
    assert!(frames.iter().all(|f| f.conn == 0));
    assert_eq!(
        frames.iter().map(|f| f.seq).collect::<Vec<_>>(),
        (0..6).collect::<Vec<_>>()
    );
    assert_eq!(frames[3].frame_type(), Some("going_idle"));
    assert!(frames[4].json.is_none());
    assert_eq!(frames[5].json, Some(json!([1, 2])));
    // The going_idle assembled from text + binary parts was acted on.
    assert_eq!(gw.frame().await["type"], "going_idle_ack");
    // The unterminated tail is never recorded.
    assert_eq!(stub.frame_count(), 6);
}

// ----- closing ----------------------------------------------------------------

#[tokio::test]
async fn stub_close_gateway_close_and_tcp_drop_are_told_apart() {
    let stub = stub().await;
    let mut gw = Client::connect(&stub.url()).await;
    gw.hello("discord", "1").await;
    stub.close(1011, "overloaded").await.unwrap();
    assert_eq!(close_of(gw.closed().await), (1011, "overloaded".into()));
    assert_eq!(
        stub.wait_for_close(0, T).await.unwrap(),
        ConnState::Closed {
            by: Closer::Stub,
            code: Some(1011),
            reason: "overloaded".into()
        }
    );

    let mut gw = Client::connect(&stub.url()).await;
    gw.hello("discord", "1").await;
    stub.wait_for_handshakes(2, T).await.unwrap();
    stub.drop_connection().await.unwrap();
    match gw.message().await {
        Some(Ok(Message::Close(_))) => panic!("a dropped connection must not send a close frame"),
        None | Some(Err(_)) => {}
        Some(Ok(other)) => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        stub.wait_for_close(1, T).await.unwrap(),
        ConnState::Closed {
            by: Closer::Dropped,
            ..
        }
    ));

    let mut gw = Client::connect(&stub.url()).await;
    gw.hello("discord", "1").await;
    gw.ws
        .close(Some(CloseFrame {
            code: 4000.into(),
            reason: "bye".into(),
        }))
        .await
        .unwrap();
    assert_eq!(
        stub.wait_for_close(2, T).await.unwrap(),
        ConnState::Closed {
            by: Closer::Gateway,
            code: Some(4000),
            reason: "bye".into()
        }
    );
    assert!(matches!(
        stub.close(1000, "").await,
        Err(StubError::NotConnected)
    ));
}

#[tokio::test]
async fn waiters_return_errors_instead_of_hanging() {
    let stub = stub().await;
    let short = Duration::from_millis(50);
    assert!(matches!(
        stub.wait_for_frame_type("hello", short).await,
        Err(StubError::Timeout { .. })
    ));
    assert!(stub.wait_for_connections(1, short).await.is_err());
    assert!(stub.wait_until(|s| s.idle, short).await.is_err());
    assert!(matches!(
        stub.send_frame(&json!({"type": "x"})).await,
        Err(StubError::NotConnected)
    ));
    let error = stub.wait_for_ack("nope", short).await.unwrap_err();
    assert!(
        error.to_string().contains("inbound_ack \"nope\""),
        "{error}"
    );
}

#[tokio::test]
async fn shutdown_closes_connections_with_1001() {
    let stub = stub().await;
    let mut gw = Client::connect(&stub.url()).await;
    gw.hello("discord", "1").await;
    stub.shutdown();
    assert_eq!(close_of(gw.closed().await).0, 1001);
}

// ----- scripts -------------------------------------------------------------

#[tokio::test]
async fn run_script_drives_the_stub_and_reports_the_failing_line() {
    let stub = stub().await;
    let url = stub.url();
    let gateway = tokio::spawn(async move {
        let mut gw = Client::connect(&url).await;
        gw.hello("discord", "1").await;
        let inbound = gw.frame().await;
        gw.send(outbound(
            "r1",
            json!({"op": "send", "chat_id": "c1", "content": "pong"}),
        ))
        .await;
        let result = gw.frame().await;
        (inbound, result)
    });
    let script = r#"
        # a comment
        {"do":"wait_handshakes","n":1}
        {"expect":"frame","type":"hello","match":{"botId":"1"}}
        {"do":"push_inbound","event":{"text":"ping"}}
        {"expect":"frame","type":"outbound","op":"send","match":{"action":{"content":"pong"}}}
        {"do":"print","message":"done"}
    "#;
    let report = run_script(&stub, script.lines()).await.unwrap();
    assert_eq!(report.actions, 3);
    assert_eq!(report.expectations, 2);
    assert_eq!(report.matched_frames, vec![0, 1]);
    assert_eq!(report.printed, vec!["done"]);
    let (inbound, result) = gateway.await.unwrap();
    assert_eq!(inbound["event"]["text"], "ping");
    assert_eq!(result["result"]["message_id"], "m1");

    let failing = [
        "",
        r#"{"expect":"frame","type":"hello"}"#,
        r#"{"expect":"frame","type":"hello","timeout_ms":50}"#,
    ];
    let error = run_script(&stub, failing).await.unwrap_err();
    assert_eq!(error.line, 3);
    assert!(error.message.contains("timed out"), "{}", error.message);
    let error = run_script(&stub, [r#"{"do":"explode"}"#])
        .await
        .unwrap_err();
    assert_eq!(error.line, 1);
}

async fn spawn_binary(args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_stub-connector"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn stub-connector")
}

#[tokio::test]
async fn binary_runs_a_script_against_a_plain_websocket_client() {
    let mut child = spawn_binary(&["--script", "-", "--print-frames"]).await;
    let script = r#"{"do":"wait_handshakes","n":1}
{"expect":"header","name":"x-demo","value":"yes"}
{"do":"set_outbound","op":"send","reply":"egress_declined","once":true}
{"do":"push_inbound","event":{"text":"hi","source":{"platform":"discord","chat_id":"c1"}}}
{"expect":"frame","type":"outbound","op":"send","match":{"action":{"chat_id":"c1"}}}
{"do":"send_batch","frames":[{"type":"interrupt_inbound","session_key":"k","chat_id":"c1"},{"type":"inbound","event":{"text":"two"}}]}
{"expect":"frame","type":"outbound","op":"send"}
{"do":"close","code":1011,"reason":"overloaded"}
{"expect":"closed","code":1011,"by":"stub"}
"#;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(script.as_bytes()).await.unwrap();
    drop(stdin);
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(T, stdout.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        url.starts_with("ws://127.0.0.1:") && url.ends_with("/relay"),
        "{url}"
    );

    let mut gw = Client::connect_with(&url, &[("x-demo", "yes")]).await;
    assert_eq!(gw.hello("discord", "1").await["type"], "descriptor");
    assert_eq!(gw.frame().await["event"]["text"], "hi");
    gw.send(outbound(
        "a",
        json!({"op": "send", "chat_id": "c1", "content": "x"}),
    ))
    .await;
    assert_eq!(gw.frame().await["result"]["code"], "egress_declined");
    assert_eq!(gw.text_message().await.lines().count(), 2);
    gw.send(outbound(
        "b",
        json!({"op": "send", "chat_id": "c1", "content": "y"}),
    ))
    .await;
    assert_eq!(gw.frame().await["result"]["message_id"], "m1");
    assert_eq!(close_of(gw.closed().await), (1011, "overloaded".into()));

    let status = tokio::time::timeout(T, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let mut rest = Vec::new();
    while let Some(line) = stdout.next_line().await.unwrap() {
        rest.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    let frames = rest.iter().filter(|l| l["event"] == "frame").count();
    assert_eq!(frames, 3, "hello + two outbounds printed: {rest:?}");
    let last = rest.last().unwrap();
    assert_eq!(last["event"], "script_done");
    assert_eq!(last["expectations"], 4);
}

#[tokio::test]
async fn binary_exits_1_on_a_failing_script_and_documents_the_format() {
    let mut child = spawn_binary(&["--script", "-"]).await;
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"{\"expect\":\"connections\",\"n\":1,\"timeout_ms\":50}\n")
        .await
        .unwrap();
    drop(stdin);
    let output = tokio::time::timeout(T, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let last: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "script_failed");
    assert_eq!(last["line"], 1);

    let help = tokio::process::Command::new(env!("CARGO_BIN_EXE_stub-connector"))
        .arg("--help")
        .output()
        .await
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for word in [
        "push_inbound",
        "passthrough_forward",
        "send_split",
        "refuse_next",
        "set_outbound",
        "wait_connections",
        "sleep_ms",
        "\"expect\":\"frame\"",
        "\"expect\":\"acked\"",
    ] {
        assert!(help.contains(word), "--help lacks {word}");
    }
}

#[tokio::test]
async fn close_after_handshake_closes_every_connection_after_its_descriptor() {
    let stub =
        stub_with(StubConfig::default().with_close_after_handshake(1011, "overloaded")).await;
    stub.push_inbound(events::discord_text("queued"))
        .await
        .unwrap();
    for round in 0..2 {
        let mut gw = Client::connect(&stub.url()).await;
        assert_eq!(gw.hello("discord", "1").await["type"], "descriptor");
        // The replay still goes out before the close.
        assert_eq!(gw.frame().await["bufferId"], "buf-1", "round {round}");
        assert_eq!(close_of(gw.closed().await), (1011, "overloaded".into()));
    }
    stub.set_close_after_handshake(None);
    let mut gw = Client::connect(&stub.url()).await;
    gw.hello("discord", "1").await;
    assert_eq!(gw.frame().await["bufferId"], "buf-1");
    stub.wait_for_handshakes(3, T).await.unwrap();
    assert_eq!(stub.current_connection(), Some(2));
}
