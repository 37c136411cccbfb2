//! The stub's media endpoints (§9.1) over real sockets, driven by a
//! hand-written HTTP/1.1 client so every assertion is about the bytes the
//! stub put on the wire.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use relay_stub::{Clock, ConnState, StubConfig, StubConnector, auth};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

const T: Duration = Duration::from_secs(5);
const NOW: u64 = 1_700_000_000;
const SECRET: &str = "s3cret";
const UA: &str = "relay-gateway/0.1 (media test)";

/// A parsed HTTP response.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// Sends `head` (and `body`) on a fresh connection and reads the answer to
/// EOF: the stub answers with `Connection: close` and closes.
async fn exchange(stub: &StubConnector, head: &str, body: &[u8]) -> Reply {
    let mut tcp = TcpStream::connect(stub.addr()).await.expect("connect");
    tcp.write_all(head.as_bytes()).await.expect("write head");
    tcp.write_all(body).await.expect("write body");
    read_reply(&mut tcp).await
}

async fn read_reply(tcp: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    tokio::time::timeout(T, tcp.read_to_end(&mut raw))
        .await
        .expect("the stub answers and closes")
        .expect("read");
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8(raw[..end].to_vec()).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"));
    let status = parts.next().and_then(|s| s.parse().ok()).expect("status");
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').expect("header line");
            (n.to_owned(), v.trim().to_owned())
        })
        .collect();
    let body = raw[end + 4..].to_vec();
    let reply = Reply {
        status,
        headers,
        body,
    };
    assert_eq!(reply.header("connection"), Some("close"));
    let length: usize = reply
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .expect("Content-Length");
    assert_eq!(length, reply.body.len(), "body matches Content-Length");
    reply
}

/// `METHOD path` with these headers (`Host` added) and, when `body` is
/// given, its `Content-Length`.
async fn request(
    stub: &StubConnector,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Reply {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", stub.addr());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    exchange(stub, &head, body.unwrap_or_default()).await
}

fn bearer() -> String {
    format!("Bearer {}", auth::mint_token("gw-media", SECRET, NOW, 300))
}

async fn secured_stub() -> StubConnector {
    let config = StubConfig::default()
        .with_secret(SECRET)
        .with_clock(Clock::Fixed(NOW));
    StubConnector::start(config).await.unwrap()
}

async fn upload(stub: &StubConnector, auth: Option<&str>, body: &[u8]) -> Reply {
    let mut headers = vec![
        ("Content-Type", "image/png"),
        ("X-Media-Filename", "cat.png"),
        ("User-Agent", UA),
    ];
    if let Some(auth) = auth {
        headers.push(("Authorization", auth));
    }
    request(stub, "POST", "/relay/media", &headers, Some(body)).await
}

fn path_of(url: &str, stub: &StubConnector) -> String {
    url.strip_prefix(&stub.base_url())
        .expect("URL on the stub's base")
        .to_owned()
}

// ----- uploads ---------------------------------------------------------------

#[tokio::test]
async fn upload_with_a_valid_bearer_is_stored_and_answered_with_id_and_size() {
    let stub = secured_stub().await;
    let reply = upload(&stub, Some(&bearer()), b"\x89PNG bytes").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let json = reply.json();
    let id = json["id"].as_str().expect("id").to_owned();
    assert_eq!(id.len(), 16);
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert_eq!(json["size"], 10);

    let stored = stub.stored_media();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].id, id);
    assert_eq!(stored[0].bytes, b"\x89PNG bytes");
    assert_eq!(stored[0].content_type.as_deref(), Some("image/png"));
    assert_eq!(stored[0].filename.as_deref(), Some("cat.png"));
    assert_eq!(stored[0].user_agent.as_deref(), Some(UA));
    assert!(stored[0].uploaded);
    assert_eq!(stub.media(&id), Some(stored[0].clone()));

    let record = stub
        .wait_for_media_request(|r| r.is_upload(), T)
        .await
        .unwrap();
    assert_eq!(record.method, "POST");
    assert_eq!(record.path, "/relay/media");
    assert!(record.authorization);
    assert_eq!(record.verified, Some(true));
    assert_eq!(record.gateway_id.as_deref(), Some("gw-media"));
    assert_eq!(record.user_agent.as_deref(), Some(UA));
    assert_eq!(record.content_type.as_deref(), Some("image/png"));
    assert_eq!(record.filename.as_deref(), Some("cat.png"));
    assert_eq!(record.content_length, Some(10));
    assert_eq!(record.body_size, 10);
    assert_eq!(record.status, 200);
    assert_eq!(record.media_id.as_deref(), Some(id.as_str()));
    assert!(
        stub.connections().is_empty(),
        "a media request is no connection attempt"
    );

    // The reference the gateway builds from the id downloads the bytes.
    let reply = request(
        &stub,
        "GET",
        &path_of(&stub.media_url(&id), &stub),
        &[("Authorization", &bearer())],
        None,
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, b"\x89PNG bytes");
}

#[tokio::test]
async fn upload_without_or_with_a_bad_bearer_is_401_when_secrets_are_set() {
    let stub = secured_stub().await;
    let wrong = format!("Bearer {}", auth::mint_token("gw-media", "other", NOW, 300));
    let expired = format!(
        "Bearer {}",
        auth::mint_token("gw-media", SECRET, NOW - 600, 300)
    );
    for auth in [
        None,
        Some(wrong.as_str()),
        Some(expired.as_str()),
        Some("Basic x"),
    ] {
        let reply = upload(&stub, auth, b"bytes").await;
        assert_eq!(reply.status, 401, "{auth:?}");
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    }
    assert!(stub.stored_media().is_empty());
    let records = stub.media_requests();
    assert_eq!(records.len(), 4);
    assert!(!records[0].authorization);
    assert!(records[1..].iter().all(|r| r.authorization));
    assert!(records.iter().all(|r| r.verified == Some(false)
        && r.gateway_id.is_none()
        && r.status == 401
        && r.body_size == 0));
}

#[tokio::test]
async fn without_secrets_uploads_are_accepted_like_the_upgrade() {
    let stub = StubConnector::start_default().await.unwrap();
    let reply = upload(&stub, None, b"abc").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["size"], 3);
    let record = &stub.media_requests()[0];
    assert!(!record.authorization);
    assert_eq!(record.verified, None);
}

#[tokio::test]
async fn over_the_cap_is_413_without_reading_the_body() {
    let stub = secured_stub().await;
    // Declares ~1 TB and sends nothing: a stub that read the body first
    // would never answer.
    let head = format!(
        "POST /relay/media HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\
         Content-Type: video/mp4\r\nContent-Length: 1000000000000\r\n\r\n",
        bearer()
    );
    let reply = exchange(&stub, &head, b"").await;
    assert_eq!(reply.status, 413);
    let record = &stub.media_requests()[0];
    assert_eq!(record.content_length, Some(1_000_000_000_000));
    assert_eq!(record.body_size, 0);
    assert_eq!(record.status, 413);

    // The default cap is 25 MiB; the cap itself is accepted.
    let over = format!(
        "POST /relay/media HTTP/1.1\r\nAuthorization: {}\r\nContent-Length: {}\r\n\r\n",
        bearer(),
        25 * 1024 * 1024 + 1
    );
    assert_eq!(exchange(&stub, &over, b"").await.status, 413);
    stub.set_max_media_size(4);
    assert_eq!(upload(&stub, Some(&bearer()), b"12345").await.status, 413);
    assert_eq!(upload(&stub, Some(&bearer()), b"1234").await.status, 200);
    assert_eq!(stub.stored_media().len(), 1);

    let small = StubConnector::start(StubConfig::default().with_max_media_size(2))
        .await
        .unwrap();
    assert_eq!(upload(&small, None, b"123").await.status, 413);
    // A client that sends its whole oversized body anyway still reads the
    // 413: the stub drains after answering instead of resetting.
    let big = vec![7u8; 4 * 1024 * 1024];
    let reply = upload(&small, None, &big).await;
    assert_eq!(reply.status, 413);
    assert_eq!(small.media_requests()[1].body_size, 0);
}

#[tokio::test]
async fn empty_lengthless_chunked_and_long_filename_uploads_are_refused() {
    let stub = secured_stub().await;
    let auth = bearer();
    assert_eq!(upload(&stub, Some(&auth), b"").await.status, 400);
    let no_length = format!("POST /relay/media HTTP/1.1\r\nAuthorization: {auth}\r\n\r\n");
    assert_eq!(exchange(&stub, &no_length, b"").await.status, 411);
    let chunked = format!(
        "POST /relay/media HTTP/1.1\r\nAuthorization: {auth}\r\n\
         Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    );
    assert_eq!(exchange(&stub, &chunked, b"").await.status, 411);
    let bad_length =
        format!("POST /relay/media HTTP/1.1\r\nAuthorization: {auth}\r\nContent-Length: x\r\n\r\n");
    assert_eq!(exchange(&stub, &bad_length, b"").await.status, 400);

    let name = |n: usize| format!("{}.png", "é".repeat(n - 4));
    let long = name(256);
    let headers = [
        ("Authorization", auth.as_str()),
        ("X-Media-Filename", &long),
    ];
    let reply = request(&stub, "POST", "/relay/media", &headers, Some(b"x")).await;
    assert_eq!(reply.status, 400, "256 characters");
    let longest = name(255);
    let headers = [
        ("Authorization", auth.as_str()),
        ("X-Media-Filename", &longest),
    ];
    let reply = request(&stub, "POST", "/relay/media", &headers, Some(b"x")).await;
    assert_eq!(reply.status, 200, "255 characters (more bytes) pass");
    let stored = stub.stored_media();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].filename.as_deref(), Some(longest.as_str()));
    assert_eq!(stored[0].content_type, None);

    let statuses: Vec<u16> = stub.media_requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![400, 411, 411, 400, 400, 200]);
}

#[tokio::test]
async fn a_body_arriving_in_pieces_with_the_head_is_read_whole() {
    let stub = secured_stub().await;
    let mut tcp = TcpStream::connect(stub.addr()).await.unwrap();
    // The request line itself is split, so routing has to wait for it.
    tcp.write_all(b"POST /relay/").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let head = format!(
        "media HTTP/1.1\r\nAuthorization: {}\r\nContent-Length: 6\r\n\r\nabc",
        bearer()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    tcp.write_all(b"def").await.unwrap();
    let reply = read_reply(&mut tcp).await;
    assert_eq!(reply.status, 200);
    assert_eq!(stub.stored_media()[0].bytes, b"abcdef");
    assert!(stub.connections().is_empty());
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let stub = secured_stub().await;
    let mut tcp = TcpStream::connect(stub.addr()).await.unwrap();
    let head = format!(
        "POST /relay/media HTTP/1.1\r\nAuthorization: {}\r\nExpect: 100-continue\r\n\
         Content-Length: 2\r\n\r\n",
        bearer()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
    let mut got = vec![0u8; interim.len()];
    tokio::time::timeout(T, tcp.read_exact(&mut got))
        .await
        .expect("100 Continue before any body byte")
        .unwrap();
    assert_eq!(got, interim);
    tcp.write_all(b"ok").await.unwrap();
    assert_eq!(read_reply(&mut tcp).await.status, 200);
    assert_eq!(stub.stored_media()[0].bytes, b"ok");
}

#[tokio::test]
async fn scripted_upload_failures_answer_without_storing() {
    let stub = secured_stub().await;
    assert!(stub.fail_next_uploads(1, 200).is_err());
    stub.fail_next_uploads(1, 500).unwrap();
    assert_eq!(upload(&stub, Some(&bearer()), b"a").await.status, 500);
    assert_eq!(upload(&stub, Some(&bearer()), b"a").await.status, 200);
    assert_eq!(stub.stored_media().len(), 1);
}

// ----- downloads -------------------------------------------------------------

#[tokio::test]
async fn rehost_downloads_need_the_bearer_and_carry_type_and_filename() {
    let stub = secured_stub().await;
    let url = stub.put_media(b"GIF89a".to_vec(), "image/gif", Some("say \"hi\".gif"));
    assert!(url.starts_with(&format!("{}/relay/media/", stub.base_url())));
    let path = path_of(&url, &stub);
    let id = path.trim_start_matches("/relay/media/").to_owned();

    let auth = bearer();
    let reply = request(
        &stub,
        "GET",
        &path,
        &[("Authorization", &auth), ("User-Agent", UA)],
        None,
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, b"GIF89a");
    assert_eq!(reply.header("content-type"), Some("image/gif"));
    assert_eq!(
        reply.header("content-disposition"),
        Some("attachment; filename=\"say \\\"hi\\\".gif\"")
    );

    assert_eq!(request(&stub, "GET", &path, &[], None).await.status, 401);
    let bad = format!("Bearer {}", auth::mint_token("gw-media", "nope", NOW, 300));
    let reply = request(&stub, "GET", &path, &[("Authorization", &bad)], None).await;
    assert_eq!(reply.status, 401);
    let reply = request(
        &stub,
        "GET",
        "/relay/media/0000000000000000",
        &[("Authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(reply.status, 404);

    // Without a filename: no Content-Disposition.
    let plain = path_of(&stub.put_media(vec![1, 2], "application/pdf", None), &stub);
    let reply = request(&stub, "GET", &plain, &[("Authorization", &auth)], None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-disposition"), None);

    let records = stub.media_requests();
    assert_eq!(records.len(), 5);
    assert!(records.iter().all(|r| r.is_rehost_download()));
    assert_eq!(records[0].media_id.as_deref(), Some(id.as_str()));
    assert_eq!(records[0].user_agent.as_deref(), Some(UA));
    assert_eq!(records[0].verified, Some(true));
    assert_eq!(
        (records[1].authorization, records[1].verified),
        (false, Some(false))
    );
    assert_eq!(
        (records[2].authorization, records[2].verified),
        (true, Some(false))
    );
    let statuses: Vec<u16> = records.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![200, 401, 401, 404, 200]);
    let stored = stub.stored_media();
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|m| !m.uploaded && m.user_agent.is_none()));
}

#[tokio::test]
async fn public_files_and_redirects_need_no_auth() {
    let stub = secured_stub().await;
    let url = stub.put_public("cdn/a.png", b"png".to_vec(), "image/png");
    assert_eq!(url, format!("{}/public/cdn/a.png", stub.base_url()));
    let reply = request(
        &stub,
        "GET",
        "/public/cdn/a.png?ex=1",
        &[("User-Agent", UA)],
        None,
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, b"png");
    assert_eq!(reply.header("content-type"), Some("image/png"));

    let moved = stub.put_redirect("old.png", 302, &url);
    assert_eq!(moved, format!("{}/public/old.png", stub.base_url()));
    let reply = request(&stub, "GET", "/public/old.png", &[], None).await;
    assert_eq!(reply.status, 302);
    assert_eq!(reply.header("location"), Some(url.as_str()));
    assert!(reply.body.is_empty());

    assert_eq!(
        request(&stub, "GET", "/public/missing", &[], None)
            .await
            .status,
        404
    );

    let records = stub.media_requests();
    assert_eq!(records.len(), 3);
    assert!(
        records
            .iter()
            .all(|r| r.is_public_download() && !r.authorization)
    );
    assert_eq!(records[0].path, "/public/cdn/a.png?ex=1");
    assert_eq!(records[0].user_agent.as_deref(), Some(UA));
    // Checked even where not needed, so a test can see a stray bearer.
    assert_eq!(records[0].verified, Some(false));
}

#[tokio::test]
async fn fail_next_media_fails_that_many_downloads_of_either_kind() {
    let stub = secured_stub().await;
    let rehost = path_of(&stub.put_media(b"x".to_vec(), "text/plain", None), &stub);
    let public = path_of(
        &stub.put_public("p.txt", b"y".to_vec(), "text/plain"),
        &stub,
    );
    assert!(stub.fail_next_media(1, 302).is_err());
    stub.fail_next_media(2, 503).unwrap();
    let auth = bearer();
    let with_auth = [("Authorization", auth.as_str())];
    // An unauthorized download is refused before the script applies.
    assert_eq!(request(&stub, "GET", &rehost, &[], None).await.status, 401);
    assert_eq!(
        request(&stub, "GET", &rehost, &with_auth, None)
            .await
            .status,
        503
    );
    assert_eq!(request(&stub, "GET", &public, &[], None).await.status, 503);
    assert_eq!(
        request(&stub, "GET", &rehost, &with_auth, None)
            .await
            .status,
        200
    );
    assert_eq!(request(&stub, "GET", &public, &[], None).await.status, 200);
}

// ----- coexistence with the WebSocket path -----------------------------------

#[tokio::test]
async fn websocket_dials_still_work_alongside_media_requests() {
    let stub = secured_stub().await;
    assert_eq!(upload(&stub, Some(&bearer()), b"before").await.status, 200);

    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(stub.url())
            .unwrap();
    request
        .headers_mut()
        .insert("authorization", bearer().parse().unwrap());
    let (mut ws, _) = connect_async(request).await.expect("upgrade");
    ws.send(Message::Text(
        format!(
            "{}\n",
            json!({"type": "hello", "platform": "discord", "botId": "1"})
        )
        .into(),
    ))
    .await
    .unwrap();
    let reply = tokio::time::timeout(T, ws.next())
        .await
        .expect("descriptor in time")
        .expect("a message")
        .expect("no error");
    let frame: Value = serde_json::from_str(reply.to_text().unwrap().trim_end()).unwrap();
    assert_eq!(frame["type"], "descriptor");

    // A media request while the socket is open, then more frames.
    let path = path_of(
        &stub.put_media(b"during".to_vec(), "text/plain", None),
        &stub,
    );
    let reply = request_on(&stub, &path).await;
    assert_eq!(reply.body, b"during");
    ws.send(Message::Text(
        format!("{}\n", json!({"type": "ping_test"})).into(),
    ))
    .await
    .unwrap();
    stub.wait_for_frame_type("ping_test", T).await.unwrap();

    let conns = stub.connections();
    assert_eq!(conns.len(), 1, "only the upgrade is a connection attempt");
    assert_eq!(conns[0].path, "/relay");
    assert_eq!(conns[0].gateway_id.as_deref(), Some("gw-media"));
    assert!(conns[0].is_open());
    assert_eq!(stub.media_requests().len(), 2);
}

async fn request_on(stub: &StubConnector, path: &str) -> Reply {
    request(stub, "GET", path, &[("Authorization", &bearer())], None).await
}

#[tokio::test]
async fn non_media_paths_still_reach_the_upgrade_path() {
    let stub = StubConnector::start_default().await.unwrap();
    // `GET /relay/media` (no id) is no media route: a WebSocket dial there
    // is an upgrade attempt, refused 400 as before.
    let url = format!("ws://{}/relay/media", stub.addr());
    match connect_async(url.as_str()).await {
        Err(WsError::Http(response)) => assert_eq!(response.status().as_u16(), 400),
        other => panic!("expected HTTP 400, got {other:?}"),
    }
    // Neither is a PUT: the upgrade path fails it without an answer.
    let mut tcp = TcpStream::connect(stub.addr()).await.unwrap();
    tcp.write_all(b"PUT /relay/media HTTP/1.1\r\nContent-Length: 1\r\n\r\nx")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(T, tcp.read_to_end(&mut raw)).await;
    let conns = stub.wait_for_connections(2, T).await.unwrap();
    assert_eq!(conns[0].path, "/relay/media");
    assert_eq!(conns[0].state, ConnState::Refused { status: 400 });
    assert!(matches!(conns[1].state, ConnState::Failed { .. }));
    assert!(stub.media_requests().is_empty());
}

#[tokio::test]
async fn an_oversized_media_head_is_431() {
    let stub = StubConnector::start_default().await.unwrap();
    let padding = "a".repeat(17 * 1024);
    let head = format!("GET /public/x HTTP/1.1\r\nX-Pad: {padding}\r\n\r\n");
    let reply = exchange(&stub, &head, b"").await;
    assert_eq!(reply.status, 431);
    assert_eq!(stub.media_requests()[0].status, 431);
    assert_eq!(stub.media_requests()[0].path, "/public/x");
}
