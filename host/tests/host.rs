//! Host integration tests: the built-in component (currently the placeholder
//! guest) against a minimal in-test WebSocket connector on 127.0.0.1.
//!
//! This is the crate's only test binary (each one links wasmtime again).
//! Tests named `placeholder_*` use the placeholder's test hooks (`__placeholder_*`
//! frames, a connector URL containing `stderr-test`); they need those hooks
//! kept, or an equivalent, once the real adapter is wired in.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use relay_host::{
    Adapter, AdapterConfig, AdapterHandle, Event, EventStream, Identity, MessageEvent, Plugin,
    Secret, SendResult, State,
};
use serde_json::{Map, Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- harness

fn plugin() -> &'static Plugin {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    PLUGIN.get_or_init(|| {
        init_logs();
        Plugin::shared().expect("the built-in component loads")
    })
}

/// Everything logged through `tracing`, for assertions on log output.
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| Mutex::new(Vec::new()))
}

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        logs().lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_writer(|| LogWriter)
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .try_init();
}

fn logged(needle: &str) -> bool {
    String::from_utf8_lossy(&logs().lock().unwrap()).contains(needle)
}

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

/// What the in-test connector saw.
#[derive(Debug)]
enum Seen {
    Connected {
        id: usize,
        path: String,
        headers: HashMap<String, String>,
    },
    Frame {
        id: usize,
        frame: Value,
    },
    Closed {
        id: usize,
        code: Option<u16>,
        reason: String,
    },
}

/// What the test tells one connection to do.
enum Do {
    Send(String),
    Close(u16, &'static str),
    /// Drop the TCP connection without a close frame.
    Drop,
    /// Stop reading (so pings go unanswered).
    Stall,
}

#[derive(Clone, Copy)]
struct PeerOptions {
    /// Answer `hello` with a descriptor.
    descriptor: bool,
    /// Answer `outbound` with a success result.
    results: bool,
    /// Refuse upgrades with this HTTP status.
    refuse: Option<u16>,
}

impl Default for PeerOptions {
    fn default() -> Self {
        Self {
            descriptor: true,
            results: true,
            refuse: None,
        }
    }
}

/// A minimal relay connector: records what arrives, answers `hello` and
/// `outbound` when told to, and does what the test asks per connection.
struct Peer {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
    conns: Arc<Mutex<HashMap<usize, mpsc::UnboundedSender<Do>>>>,
    /// Everything seen so far (kept for later assertions).
    log: Vec<Seen>,
}

impl Peer {
    async fn start(options: PeerOptions) -> Peer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let conns: Arc<Mutex<HashMap<usize, mpsc::UnboundedSender<Do>>>> = Arc::default();
        let registry = conns.clone();
        tokio::spawn(async move {
            let mut next_id = 0;
            while let Ok((tcp, _)) = listener.accept().await {
                next_id += 1;
                let (do_tx, do_rx) = mpsc::unbounded_channel();
                registry.lock().unwrap().insert(next_id, do_tx);
                tokio::spawn(serve(next_id, tcp, options, seen_tx.clone(), do_rx));
            }
        });
        Peer {
            addr,
            seen,
            conns,
            log: Vec::new(),
        }
    }

    fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    fn tell(&self, id: usize, what: Do) {
        let conns = self.conns.lock().unwrap();
        conns
            .get(&id)
            .expect("connection exists")
            .send(what)
            .expect("connection alive");
    }

    fn send(&self, id: usize, frame: Value) {
        self.tell(id, Do::Send(format!("{frame}\n")));
    }

    /// Waits for something matching `pick`, keeping everything in `log`.
    async fn expect<T>(&mut self, what: &str, mut pick: impl FnMut(&Seen) -> Option<T>) -> T {
        if let Some(found) = self.log.iter().find_map(&mut pick) {
            return found;
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.seen.recv()).await;
            let seen = match next {
                Ok(Some(seen)) => seen,
                _ => panic!("timed out waiting for {what}; seen: {:#?}", self.log),
            };
            let found = pick(&seen);
            self.log.push(seen);
            if let Some(found) = found {
                return found;
            }
        }
    }

    async fn connection(&mut self, nth: usize) -> (usize, String, HashMap<String, String>) {
        self.expect(&format!("connection {nth}"), |s| match s {
            Seen::Connected { id, path, headers } if *id == nth => {
                Some((*id, path.clone(), headers.clone()))
            }
            _ => None,
        })
        .await
    }

    async fn frame(&mut self, id: usize, frame_type: &str) -> Value {
        self.expect(
            &format!("a {frame_type} frame on connection {id}"),
            |s| match s {
                Seen::Frame { id: i, frame } if *i == id && frame["type"] == frame_type => {
                    Some(frame.clone())
                }
                _ => None,
            },
        )
        .await
    }

    /// Waits until `n` frames of `frame_type` arrived on `id`; returns them in order.
    async fn frames(&mut self, id: usize, frame_type: &str, n: usize) -> Vec<Value> {
        let matching = |log: &[Seen]| -> Vec<Value> {
            log.iter()
                .filter_map(|s| match s {
                    Seen::Frame { id: i, frame } if *i == id && frame["type"] == frame_type => {
                        Some(frame.clone())
                    }
                    _ => None,
                })
                .collect()
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        while matching(&self.log).len() < n {
            match tokio::time::timeout_at(deadline, self.seen.recv()).await {
                Ok(Some(seen)) => self.log.push(seen),
                _ => panic!(
                    "timed out waiting for {n} {frame_type} frames; seen: {:#?}",
                    self.log
                ),
            }
        }
        matching(&self.log)
    }

    async fn closed(&mut self, id: usize) -> (Option<u16>, String) {
        self.expect(&format!("connection {id} to close"), |s| match s {
            Seen::Closed {
                id: i,
                code,
                reason,
            } if *i == id => Some((*code, reason.clone())),
            _ => None,
        })
        .await
    }
}

async fn serve(
    id: usize,
    tcp: TcpStream,
    options: PeerOptions,
    seen: mpsc::UnboundedSender<Seen>,
    mut todo: mpsc::UnboundedReceiver<Do>,
) {
    let mut path = String::new();
    let mut headers = HashMap::new();
    // The signature is tungstenite's callback type.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        path = request.uri().path().to_string();
        for (name, value) in request.headers() {
            headers.insert(
                name.as_str().to_string(),
                value.to_str().unwrap_or("").to_string(),
            );
        }
        match options.refuse {
            Some(status) => {
                let mut refusal = ErrorResponse::new(Some("refused".to_string()));
                *refusal.status_mut() = StatusCode::from_u16(status).unwrap();
                Err(refusal)
            }
            None => Ok(response),
        }
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
        return;
    };
    let _ = seen.send(Seen::Connected { id, path, headers });
    let (mut sink, mut stream) = ws.split();
    let mut buffer = String::new();
    loop {
        tokio::select! {
            todo = todo.recv() => match todo {
                Some(Do::Send(text)) => { let _ = sink.send(Message::text(text)).await; }
                Some(Do::Close(code, reason)) => {
                    let frame = CloseFrame { code: code.into(), reason: reason.into() };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                }
                Some(Do::Drop) | None => return,
                Some(Do::Stall) => {
                    // Keep the socket open but never read again.
                    let _keep = (sink, stream);
                    std::future::pending::<()>().await;
                    return;
                }
            },
            message = stream.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    buffer.push_str(text.as_str());
                    while let Some(end) = buffer.find('\n') {
                        let line: String = buffer.drain(..=end).collect();
                        let Ok(frame) = serde_json::from_str::<Value>(&line) else { continue };
                        if let Some(reply) = auto_reply(&frame, options) {
                            let _ = sink.send(Message::text(format!("{reply}\n"))).await;
                        }
                        let _ = seen.send(Seen::Frame { id, frame });
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame
                        .map(|f| (Some(u16::from(f.code)), f.reason.as_str().to_string()))
                        .unwrap_or((None, String::new()));
                    let _ = seen.send(Seen::Closed { id, code, reason });
                    // Let tungstenite answer the close.
                    while stream.next().await.is_some() {}
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    let _ = seen.send(Seen::Closed { id, code: None, reason: "dropped".into() });
                    return;
                }
            },
        }
    }
}

fn auto_reply(frame: &Value, options: PeerOptions) -> Option<Value> {
    match frame["type"].as_str()? {
        "hello" if options.descriptor => Some(json!({
            "type": "descriptor",
            "descriptor": {"contract_version": 1, "platform": frame["platform"], "max_message_length": 2000},
        })),
        "outbound" if options.results => Some(json!({
            "type": "outbound_result",
            "requestId": frame["requestId"],
            "result": {"success": true, "message_id": format!("m-{}", frame["action"]["content"].as_str().unwrap_or(""))},
        })),
        _ => None,
    }
}

fn config(peer: &Peer) -> AdapterConfig {
    let mut config = AdapterConfig::new(peer.url());
    config.reconnect_initial = Duration::from_millis(20);
    config.limits.restart_initial = Duration::from_millis(20);
    config
}

async fn spawn(config: AdapterConfig) -> (AdapterHandle, EventStream) {
    Adapter::spawn(plugin(), config)
        .await
        .expect("adapter starts")
}

/// The next event matching `pick`, skipping others.
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

fn inbound(chat_id: &str, text: &str, buffer_id: Option<&str>) -> Value {
    let mut frame = json!({
        "type": "inbound",
        "event": {
            "text": text,
            "message_type": "text",
            "source": {"platform": "discord", "chat_id": chat_id, "chat_type": "group", "user_id": "u1", "scope_id": "guildA"},
        },
    });
    if let Some(id) = buffer_id {
        frame["bufferId"] = json!(id);
    }
    frame
}

async fn send(handle: &AdapterHandle, chat_id: &str, content: &str) -> SendResult {
    tokio::time::timeout(WAIT, handle.send(chat_id, content, None, Map::new(), None))
        .await
        .expect("send resolves")
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn hello_is_sent_once_per_identity_on_the_relay_path() {
    let mut peer = Peer::start(PeerOptions::default()).await;
    let mut config = config(&peer);
    config.identities = vec![
        Identity::new("discord", "1234"),
        Identity::new("telegram", ""),
    ];
    let (_handle, _events) = spawn(config).await;

    let (id, path, _) = peer.connection(1).await;
    assert_eq!(path, "/relay");
    let hellos = peer.frames(id, "hello", 2).await;
    assert_eq!(
        hellos,
        vec![
            json!({"type": "hello", "platform": "discord", "botId": "1234"}),
            json!({"type": "hello", "platform": "telegram", "botId": ""}),
        ]
    );
}

#[tokio::test]
async fn inbound_line_becomes_a_message_event_and_accept_acks_its_buffer_id() {
    let mut peer = Peer::start(PeerOptions::default()).await;
    let (_handle, mut events) = spawn(config(&peer)).await;
    let (id, _, _) = peer.connection(1).await;
    peer.frame(id, "hello").await;

    peer.send(id, inbound("chan1", "hello from connector", Some("buf-1")));
    let event = message(&mut events).await;
    assert_eq!(event.chat_id, "chan1");
    assert_eq!(event.text, "hello from connector");
    assert_eq!(event.platform, "discord");
    assert_eq!(event.chat_type, "group");
    assert_eq!(event.user_id.as_deref(), Some("u1"));
    assert_eq!(event.scope_id.as_deref(), Some("guildA"));
    assert_eq!(event.buffer_id.as_deref(), Some("buf-1"));
    assert_eq!(event.json_value().unwrap()["text"], "hello from connector");
    event.accept();

    let ack = peer.frame(id, "inbound_ack").await;
    assert_eq!(ack["bufferId"], "buf-1");
}

#[tokio::test]
async fn several_frames_in_one_message_and_a_split_frame_all_arrive() {
    let mut peer = Peer::start(PeerOptions::default()).await;
    let (_handle, mut events) = spawn(config(&peer)).await;
    let (id, _, _) = peer.connection(1).await;
    peer.frame(id, "hello").await;

    let two = format!(
        "{}\n{}\n",
        inbound("a", "one", None),
        inbound("b", "two", None)
    );
    peer.tell(id, Do::Send(two));
    let split = format!("{}\n", inbound("c", "three", None));
    let (head, tail) = split.split_at(10);
    peer.tell(id, Do::Send(head.to_string()));
    peer.tell(id, Do::Send(tail.to_string()));

    let mut texts = Vec::new();
    for _ in 0..3 {
        let event = message(&mut events).await;
        texts.push(event.text.clone());
        event.reject();
    }
    assert_eq!(texts, ["one", "two", "three"]);
}

#[tokio::test]
async fn send_goes_out_as_an_outbound_frame_and_resolves_with_its_result() {
    let mut peer = Peer::start(PeerOptions::default()).await;
    let (handle, _events) = spawn(config(&peer)).await;
    let (id, _, _) = peer.connection(1).await;
    peer.frame(id, "hello").await;

    let mut metadata = Map::new();
    metadata.insert("scope_id".into(), json!("guildA"));
    let result = tokio::time::timeout(
        WAIT,
        handle.send("chan1", "Hi there", Some("m-1".into()), metadata, None),
    )
    .await
    .expect("send resolves");
    assert!(result.success, "{result:?}");
    assert_eq!(result.message_id.as_deref(), Some("m-Hi there"));

    let outbound = peer.frame(id, "outbound").await;
    assert_eq!(outbound["action"]["op"], "send");
    assert_eq!(outbound["action"]["chat_id"], "chan1");
    assert_eq!(outbound["action"]["content"], "Hi there");
    assert_eq!(outbound["action"]["reply_to"], "m-1");
    assert_eq!(outbound["action"]["metadata"]["scope_id"], "guildA");
    assert!(
        outbound["requestId"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
}

#[tokio::test]
async fn shutdown_resolves_closes_the_socket_and_ends_the_adapter() {
    let mut peer = Peer::start(PeerOptions::default()).await;
    let (handle, mut events) = spawn(config(&peer)).await;
    let (id, _, _) = peer.connection(1).await;
    peer.frame(id, "hello").await;

    tokio::time::timeout(WAIT, handle.shutdown())
        .await
        .expect("shutdown resolves")
        .unwrap();
    let (code, _) = peer.closed(id).await;
    assert_eq!(code, Some(1000));
    // The event stream ends once the adapter stopped ...
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

#[tokio::test]
async fn queries_and_commands_resolve_through_the_component() {
    let mut peer = Peer::start(PeerOptions::default()).await;
    let mut config = config(&peer);
    config.identities = vec![Identity::new("discord", "1")];
    let (handle, mut events) = spawn(config).await;
    let (id, _, _) = peer.connection(1).await;
    peer.frame(id, "hello").await;
    state_detail(&mut events, State::Ready).await;

    assert_eq!(handle.state().await.unwrap(), State::Ready);
    assert!(handle.fronts_platform("discord").await.unwrap());
    assert!(!handle.fronts_platform("slack").await.unwrap());
    assert_eq!(handle.message_len(None, "héllo").await.unwrap(), 5);
    assert!(handle.max_message_length(Some("chan1")).await.unwrap() > 0);
    assert!(handle.supports_op(None, "send").await.is_ok());
    assert!(handle.descriptor(None).await.unwrap().is_some());
    assert!(handle.stats().await.unwrap().is_object());
    handle
        .prime_route("chan1", "discord", None, None, None)
        .await
        .unwrap();
    handle
        .interrupt("agent:main:discord:group:chan1", None)
        .await
        .unwrap();
    handle.hold_redial().await.unwrap();
    handle.release_redial().await.unwrap();
    let info = handle.get_chat_info("chan1").await.unwrap();
    assert!(!info.chat_type.is_empty());
    let _dormant: bool = handle.go_dormant().await;
}

#[tokio::test]
async fn interrupt_inbound_becomes_an_interrupt_event() {
    let mut peer = Peer::start(PeerOptions::default()).await;
    let (_handle, mut events) = spawn(config(&peer)).await;
    let (id, _, _) = peer.connection(1).await;
    peer.frame(id, "hello").await;

    peer.send(
        id,
        json!({"type": "interrupt_inbound", "session_key": "s1", "chat_id": "chan1"}),
    );
    let (key, chat) = next_event(&mut events, "an interrupt", |e| match e {
        Event::Interrupt {
            session_key,
            chat_id,
        } => Some((session_key, chat_id)),
        _ => None,
    })
    .await;
    assert_eq!((key.as_str(), chat.as_str()), ("s1", "chan1"));
}

#[tokio::test]
async fn a_dropped_tcp_connection_reports_1006_and_the_timer_redials() {
    let mut peer = Peer::start(PeerOptions::default()).await;
    let (_handle, mut events) = spawn(config(&peer)).await;
    let (id, _, _) = peer.connection(1).await;
    peer.frame(id, "hello").await;

    peer.tell(id, Do::Drop);
    let detail = state_detail(&mut events, State::Reconnecting).await;
    assert!(detail.contains("1006"), "{detail}");
    // The component armed `set-deadline`; the host fired it and it re-dialed.
    let (second, _, _) = peer.connection(2).await;
    peer.frame(second, "hello").await;
}

#[tokio::test]
async fn a_close_frame_reports_its_code_and_reason() {
    let mut peer = Peer::start(PeerOptions::default()).await;
    let (_handle, mut events) = spawn(config(&peer)).await;
    let (id, _, _) = peer.connection(1).await;
    peer.frame(id, "hello").await;

    peer.tell(id, Do::Close(4401, "unauthorized"));
    let detail = state_detail(&mut events, State::Reconnecting).await;
    assert!(
        detail.contains("4401") && detail.contains("unauthorized"),
        "{detail}"
    );
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009() {
    let mut peer = Peer::start(PeerOptions::default()).await;
    let mut config = config(&peer);
    config.max_line_bytes = 1024;
    let (_handle, mut events) = spawn(config).await;
    let (id, _, _) = peer.connection(1).await;
    peer.frame(id, "hello").await;

    // Exactly the limit plus the newline still fits ...
    let fits = format!("{}\n", "x".repeat(1024));
    peer.tell(id, Do::Send(fits));
    // ... one more byte does not.
    peer.tell(id, Do::Send("y".repeat(1026)));
    let detail = state_detail(&mut events, State::Reconnecting).await;
    assert!(detail.contains("1009"), "{detail}");
    let (code, _) = peer.closed(id).await;
    assert_eq!(code, Some(1009));
}

#[tokio::test]
async fn an_unanswered_ping_closes_the_socket_as_1011_keepalive_timeout() {
    let mut peer = Peer::start(PeerOptions::default()).await;
    let mut config = config(&peer);
    config.limits.ping_interval = Duration::from_millis(50);
    config.limits.ping_timeout = Duration::from_millis(400);
    let (_handle, mut events) = spawn(config).await;
    let (id, _, _) = peer.connection(1).await;
    peer.frame(id, "hello").await;
    state_detail(&mut events, State::Ready).await;

    // While the peer reads, its automatic pongs keep the socket up across
    // several ping intervals (a negative check, so it needs a fixed window).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(events.try_next().map(|e| format!("{e:?}")), None);

    peer.tell(id, Do::Stall);
    let detail = state_detail(&mut events, State::Reconnecting).await;
    assert!(
        detail.contains("1011") && detail.contains("keepalive ping timeout"),
        "{detail}"
    );
}

#[tokio::test]
async fn a_refused_upgrade_reports_the_http_status() {
    let mut peer = Peer::start(PeerOptions {
        refuse: Some(401),
        ..PeerOptions::default()
    })
    .await;
    let mut config = config(&peer);
    config.reconnect = false;
    let (_handle, mut events) = spawn(config).await;

    let detail = state_detail(&mut events, State::Stopped).await;
    assert!(detail.contains("dial failed 401"), "{detail}");
    assert!(
        peer.log.is_empty() && peer.seen.try_recv().is_err(),
        "no upgrade completed"
    );
}

#[tokio::test]
async fn a_dial_target_outside_the_connector_is_refused() {
    let peer = Peer::start(PeerOptions::default()).await;
    let mut config = config(&peer);
    // Spec §1.2 quirk: the scheme rewrite is case-sensitive, so the component
    // dials `HTTPS://…/relay`, which is not a ws/wss URL of the connector.
    config.connector_url = format!("HTTPS://{}", peer.addr);
    config.reconnect = false;
    let (_handle, mut events) = spawn(config).await;

    let detail = state_detail(&mut events, State::Stopped).await;
    assert!(
        detail.contains("dial failed 0: dial target refused"),
        "{detail}"
    );
    assert!(logged("dial target refused"));
}

#[tokio::test]
async fn the_secret_never_reaches_debug_output_or_logs() {
    let mut peer = Peer::start(PeerOptions::default()).await;
    let mut config = config(&peer);
    config.gateway_id = "gw-1".into();
    config.secret = Some(Secret::new("very-secret-value"));
    assert!(!format!("{config:?}").contains("very-secret-value"));
    let (_handle, _events) = spawn(config).await;
    let (id, _, headers) = peer.connection(1).await;
    peer.frame(id, "hello").await;
    assert!(headers.contains_key("sec-websocket-key"));
    assert!(!logged("very-secret-value"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placeholder_guest_stderr_is_logged_and_the_adapter_keeps_running() {
    let mut peer = Peer::start(PeerOptions::default()).await;
    let mut config = config(&peer);
    // The placeholder writes to stdout and stderr in `start` for this URL.
    config.connector_url = format!("{}/stderr-test", peer.url());
    let (handle, _events) = spawn(config).await;

    let (id, path, _) = peer.connection(1).await;
    assert_eq!(path, "/stderr-test/relay");
    peer.frame(id, "hello").await;
    wait_until("guest stderr in the logs", || {
        logged("relay-guest placeholder: stderr test line")
    })
    .await;
    wait_until("guest stdout in the logs", || {
        logged("relay-guest placeholder: stdout test line")
    })
    .await;
    let result = send(&handle, "chan1", "still alive").await;
    assert!(result.success, "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placeholder_trap_fails_pending_requests_emits_fatal_and_restarts() {
    let mut peer = Peer::start(PeerOptions {
        results: false,
        ..PeerOptions::default()
    })
    .await;
    let (handle, mut events) = spawn(config(&peer)).await;
    let (id, _, _) = peer.connection(1).await;
    peer.frame(id, "hello").await;

    let pending = tokio::spawn({
        let handle = handle.clone();
        async move { send(&handle, "chan1", "in flight").await }
    });
    peer.frame(id, "outbound").await;
    peer.send(id, json!({"type": "__placeholder_panic"}));

    let (code, message, retryable) = fatal(&mut events).await;
    assert_eq!(code, "guest_trap");
    assert!(retryable);
    assert!(message.contains("placeholder panic requested"), "{message}");
    let lost = pending.await.unwrap();
    assert!(!lost.success);
    assert_eq!(lost.error.as_deref(), Some("relay adapter stopped"));
    assert!(
        lost.ambiguous,
        "the frame was written before the instance died"
    );

    let (code, _) = peer.closed(id).await;
    assert_eq!(code, Some(1011));
    // A fresh instance dials again and works.
    let (second, _, _) = peer.connection(2).await;
    peer.frame(second, "hello").await;
    assert!(handle.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placeholder_runaway_call_is_interrupted_by_the_cpu_budget() {
    let mut peer = Peer::start(PeerOptions::default()).await;
    let mut config = config(&peer);
    config.limits.call_budget = Duration::from_millis(50);
    let (_handle, mut events) = spawn(config).await;
    let (id, _, _) = peer.connection(1).await;
    peer.frame(id, "hello").await;

    let started = std::time::Instant::now();
    peer.send(id, json!({"type": "__placeholder_spin"}));
    let (code, message, _) = fatal(&mut events).await;
    assert_eq!(code, "guest_trap");
    assert!(message.contains("interrupt"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(5));
    peer.connection(2).await;
}

#[tokio::test]
async fn placeholder_growing_past_the_memory_cap_traps() {
    let mut peer = Peer::start(PeerOptions::default()).await;
    let mut config = config(&peer);
    config.limits.memory_bytes = 16 << 20;
    let (_handle, mut events) = spawn(config).await;
    let (id, _, _) = peer.connection(1).await;
    peer.frame(id, "hello").await;

    peer.send(id, json!({"type": "__placeholder_grow"}));
    let (code, message, _) = fatal(&mut events).await;
    assert_eq!(code, "guest_trap");
    assert!(message.contains("growing memory"), "{message}");
}

#[tokio::test]
async fn a_message_event_dropped_unanswered_is_rejected() {
    let mut peer = Peer::start(PeerOptions::default()).await;
    let (handle, mut events) = spawn(config(&peer)).await;
    let (id, _, _) = peer.connection(1).await;
    peer.frame(id, "hello").await;

    peer.send(id, inbound("chan1", "nobody takes this", Some("buf-9")));
    drop(message(&mut events).await);
    peer.send(id, inbound("chan1", "taken", Some("buf-10")));
    message(&mut events).await.accept();
    let ack = peer.frame(id, "inbound_ack").await;
    assert_eq!(
        ack["bufferId"], "buf-10",
        "only the accepted delivery is acked"
    );
    let stats = handle.stats().await.unwrap();
    assert_eq!(stats["undelivered"], 0, "{stats}");
}

#[tokio::test]
async fn results_still_resolve_while_the_gateway_reads_no_events() {
    let mut peer = Peer::start(PeerOptions::default()).await;
    let (handle, mut events) = spawn(config(&peer)).await;
    let (id, _, _) = peer.connection(1).await;
    peer.frame(id, "hello").await;

    for n in 0..200 {
        peer.send(id, inbound("chan1", &format!("backlog {n}"), None));
    }
    // Nobody reads `events`; the send's result still comes through.
    let result = send(&handle, "chan1", "through the backlog").await;
    assert!(result.success, "{result:?}");
    let first = message(&mut events).await;
    assert_eq!(first.text, "backlog 0");
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
