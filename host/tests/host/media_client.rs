//! The host's media I/O (`relay_host::media`) on its own, against a tiny
//! HTTP/1.1 server on 127.0.0.1 that records what reached it: the address
//! classification, the credential and SSRF rules, redirects, the size caps,
//! uploads and deletes.
//!
//! "No connection" is checked without sleeping: after the refused call a
//! probe connects to the same server and waits for its answer; the server
//! accepts in order, so a connection the refused call had made would have
//! been counted before the probe's.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use relay_host::media::{
    FetchRequest, MediaClient, MediaOutcome, MediaSettings, Origin, UploadRequest, extension_for,
    refused_ip,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TOKEN: &str = "Bearer media-s3cret-7d1e";
const PROBE: &str = "/__probe";

// ---------------------------------------------------------------- server

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    /// Names lower-case.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Vec<&str> {
        let named = self.headers.iter().filter(|(n, _)| n == name);
        named.map(|(_, v)| v.as_str()).collect()
    }
}

/// The raw response to a request; an empty one: never answer (the
/// timeout test).
type Responder = Arc<dyn Fn(&Seen) -> Vec<u8> + Send + Sync>;

struct Server {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start(respond: impl Fn(&Seen) -> Vec<u8> + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let respond: Responder = Arc::new(respond);
        let task = tokio::spawn({
            let (connections, seen) = (connections.clone(), seen.clone());
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    connections.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(serve(stream, seen.clone(), respond.clone()));
                }
            }
        });
        Server {
            addr,
            connections,
            seen,
            task,
        }
    }

    /// Answers every request with `reply`.
    async fn answering(reply: Vec<u8>) -> Server {
        Server::start(move |_| reply.clone()).await
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn origin(&self) -> Origin {
        Origin::of_url(&self.url("/")).expect("origin")
    }

    /// Connections before the probe's, and the requests recorded.
    async fn settle(&self) -> (usize, Vec<Seen>) {
        let mut probe = TcpStream::connect(self.addr).await.expect("probe connects");
        let head = format!("GET {PROBE} HTTP/1.1\r\nHost: probe\r\nContent-Length: 0\r\n\r\n");
        probe
            .write_all(head.as_bytes())
            .await
            .expect("probe writes");
        let mut answer = Vec::new();
        probe.read_to_end(&mut answer).await.expect("probe reads");
        assert!(answer.starts_with(b"HTTP/1.1 204"), "probe answered");
        let before = self.connections.load(Ordering::SeqCst) - 1;
        (before, self.seen.lock().expect("lock").clone())
    }

    async fn assert_untouched(&self) {
        let (connections, seen) = self.settle().await;
        assert_eq!(connections, 0, "no connection expected, saw {seen:?}");
        assert!(seen.is_empty());
    }
}

async fn serve(mut stream: TcpStream, seen: Arc<Mutex<Vec<Seen>>>, respond: Responder) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_owned();
    let path = first.next().unwrap_or("").to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let request = Seen {
        method,
        path,
        headers,
        body,
    };
    let reply = if request.path == PROBE {
        b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".to_vec()
    } else {
        seen.lock().expect("lock").push(request.clone());
        respond(&request)
    };
    if reply.is_empty() {
        std::future::pending::<()>().await;
    }
    let _ = stream.write_all(&reply).await;
    let _ = stream.shutdown().await;
}

/// A response with `Content-Length` and `Connection: close`.
fn http(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

// ---------------------------------------------------------------- client

/// A fresh directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("relay-media-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }

    /// The media directory inside (created by the client).
    pub(crate) fn media(&self) -> PathBuf {
        self.0.join("media")
    }

    fn files(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.media()) {
            Ok(entries) => entries.map(|e| e.expect("entry").path()).collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn connector_elsewhere() -> Origin {
    Origin::of_connector("wss://connector.invalid/relay").expect("origin")
}

fn media_client(dir: &TempDir, connector: Origin, allow_private: bool) -> MediaClient {
    MediaClient::new(MediaSettings {
        dir: dir.media(),
        connector_origin: connector,
        allow_private,
        ca_file: None,
        user_agent: "relay-host-test/1".into(),
    })
    .expect("client")
}

fn get(url: &str) -> FetchRequest {
    FetchRequest {
        url: url.to_owned(),
        headers: Vec::new(),
        max_bytes: 1 << 20,
        timeout: Duration::from_secs(10),
        want_headers: Vec::new(),
        name_hint: None,
    }
}

fn post(url: &str, path: &Path) -> UploadRequest {
    UploadRequest {
        url: url.to_owned(),
        headers: Vec::new(),
        max_bytes: 1 << 20,
        timeout: Duration::from_secs(10),
        path: path.to_owned(),
    }
}

fn refused(outcome: &MediaOutcome, what: &str) {
    assert_eq!(outcome.status, 0, "{outcome:?}");
    let error = outcome.error.as_deref().unwrap_or_default();
    assert!(error.contains(what), "expected {what:?} in {outcome:?}");
    assert!(!error.contains("s3cret"), "the bearer leaked: {error}");
    assert_eq!(outcome.path, None);
}

// ---------------------------------------------------------------- pure functions

#[test]
fn refused_ip_classifies_the_table() {
    // Loopback, private, link-local (metadata), CGNAT, 0/8, broadcast,
    // multicast, documentation, benchmark; IPv6 unspecified, loopback, ULA,
    // link-local, multicast, IPv4-mapped (all), IPv4-compatible, NAT64,
    // documentation.
    let refused = "127.0.0.1 127.255.0.9 10.1.2.3 172.16.0.1 172.31.255.255 192.168.1.1 \
        169.254.169.254 100.64.0.1 100.127.255.255 0.0.0.0 0.1.2.3 255.255.255.255 \
        224.0.0.1 239.255.255.250 192.0.2.1 198.51.100.7 203.0.113.9 198.18.0.1 \
        198.19.255.255 :: ::1 fc00::1 fd12:3456::1 fe80::1 febf::1 ff02::1 \
        ::ffff:127.0.0.1 ::ffff:8.8.8.8 ::7f00:1 ::8.8.8.8 64:ff9b::808:808 \
        64:ff9b::7f00:1 2001:db8::1";
    // Public neighbours of those ranges.
    let allowed = "8.8.8.8 1.1.1.1 93.184.216.34 172.15.255.255 172.32.0.1 100.63.255.255 \
        100.128.0.1 169.253.1.1 192.169.0.1 198.17.255.255 198.20.0.1 \
        2606:4700:4700::1111 2001:4860:4860::8888 2001:db9::1 fe00::1 64:ff9c::1";
    for (list, want) in [(refused, true), (allowed, false)] {
        for ip in list.split_whitespace() {
            let parsed: IpAddr = ip.parse().expect(ip);
            assert_eq!(refused_ip(parsed), want, "{ip}");
        }
    }
}

#[test]
fn origins_of_urls_and_connectors() {
    let origin = |scheme: &str, host: &str, port| {
        Some(Origin {
            scheme: scheme.into(),
            host: host.into(),
            port,
        })
    };
    let url = Origin::of_url;
    assert_eq!(
        url("https://Media.Example.COM/a?b"),
        origin("https", "media.example.com", 443)
    );
    assert_eq!(url("http://[::1]:8080/x"), origin("http", "::1", 8080));
    // The parser that sends: odd IPv4 spellings normalise the same way.
    assert_eq!(url("http://0x7f.1/"), origin("http", "127.0.0.1", 80));
    for other in ["ftp://example.com/", "ws://example.com/", "not a url"] {
        assert_eq!(url(other), None, "{other}");
    }
    let connector = Origin::of_connector;
    assert_eq!(
        connector("ws://127.0.0.1:9100/relay"),
        origin("http", "127.0.0.1", 9100)
    );
    assert_eq!(
        connector("wss://connector.example/relay"),
        origin("https", "connector.example", 443)
    );
    assert_eq!(
        connector("https://connector.example:8443"),
        origin("https", "connector.example", 8443)
    );
    assert_eq!(connector("ftp://connector.example"), None);
}

#[test]
fn extension_for_picks_hint_then_disposition_then_mime() {
    // (hint, Content-Disposition, Content-Type, extension); "" is absent.
    let cases = [
        ("photo.JPG", "", "image/png", "jpg"),
        ("dir/sub/clip.final.mp4", "", "", "mp4"),
        ("https://x/y/voice.oga?sig=1", "", "", "oga"),
        ("no-extension", "", "image/webp", "webp"),
        (".profile", "", "", "bin"),
        ("evil.p/ng", "", "", "bin"),
        ("x.toolongextension", "", "text/plain", "txt"),
        ("x.j$g", "attachment; filename=\"a.pdf\"", "", "pdf"),
        ("", "attachment; filename=report.PDF", "", "pdf"),
        ("", "inline; filename=\"a;b.zip\"", "", "zip"),
        (
            "",
            "attachment; filename=\"a.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9.docx",
            "",
            "docx",
        ),
        ("", "attachment; filename=\"../../etc/passwd\"", "", "bin"),
        ("", "attachment", "audio/mpeg", "mp3"),
        ("", "", "IMAGE/JPEG; charset=binary", "jpg"),
        ("", "", "video/quicktime", "mov"),
        ("", "", "audio/ogg", "ogg"),
        ("", "", "application/json", "json"),
        ("", "", "application/x-unknown", "bin"),
        ("", "", "", "bin"),
    ];
    let given = |s: &'static str| Some(s).filter(|s| !s.is_empty());
    for (hint, disposition, mime, want) in cases {
        let got = extension_for(given(hint), given(disposition), given(mime));
        assert_eq!(got, want, "{hint:?} {disposition:?} {mime:?}");
    }
}

// ---------------------------------------------------------------- fetch

#[tokio::test]
async fn foreign_loopback_is_refused_without_a_connection() {
    let server = Server::answering(http(200, &[], b"hi")).await;
    let dir = TempDir::new("ssrf");
    let client = media_client(&dir, connector_elsewhere(), false);
    // An IP literal: checked before sending.
    refused(&client.fetch(get(&server.url("/a"))).await, "refused");
    // A name: the guarded resolver drops its loopback addresses.
    let by_name = format!("http://localhost:{}/b", server.addr.port());
    refused(&client.fetch(get(&by_name)).await, "no public address");
    // Bracketed IPv6 literals, mapped IPv4 included.
    let port = server.addr.port();
    for url in [
        format!("http://[::1]:{port}/c"),
        format!("http://[::ffff:127.0.0.1]:{port}/d"),
        format!("http://0x7f.0.0.1:{port}/e"),
    ] {
        refused(&client.fetch(get(&url)).await, "refused");
    }
    server.assert_untouched().await;
    assert!(dir.files().is_empty());
}

#[tokio::test]
async fn foreign_loopback_is_allowed_with_allow_private() {
    let server = Server::answering(http(200, &[("Content-Type", "text/plain")], b"hi")).await;
    let dir = TempDir::new("private");
    let client = media_client(&dir, connector_elsewhere(), true);
    let outcome = client.fetch(get(&server.url("/a.txt"))).await;
    assert_eq!(
        (outcome.status, outcome.error, outcome.size),
        (200, None, 2)
    );
    let (connections, seen) = server.settle().await;
    assert_eq!(connections, 1);
    assert_eq!(seen[0].path, "/a.txt");
}

#[tokio::test]
async fn connector_fetch_with_bearer_writes_the_file() {
    let png = b"\x89PNG\r\n\x1a\nnot really a png".to_vec();
    let server = Server::answering(http(
        200,
        &[("Content-Type", "image/png"), ("ETag", "\"v1\"")],
        &png,
    ))
    .await;
    let dir = TempDir::new("bearer");
    let client = media_client(&dir, server.origin(), false);
    let mut req = get(&server.url("/media/1?sig=abc"));
    req.headers = vec![("Authorization".into(), TOKEN.into())];
    req.want_headers = vec!["ETag".into(), "content-type".into(), "x-absent".into()];
    let outcome = client.fetch(req).await;
    assert_eq!(
        (outcome.status, &outcome.error),
        (200, &None),
        "{outcome:?}"
    );
    assert_eq!(outcome.size, png.len() as u64);
    assert_eq!(
        outcome.headers,
        vec![
            ("etag".to_owned(), "\"v1\"".to_owned()),
            ("content-type".to_owned(), "image/png".to_owned()),
        ]
    );
    let path = PathBuf::from(outcome.path.expect("a file"));
    assert_eq!(path.parent(), Some(client.dir()));
    let name = path.file_name().and_then(|n| n.to_str()).expect("name");
    let (stem, ext) = name.split_once('.').expect("an extension");
    assert_eq!(ext, "png");
    let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    assert!(stem.len() == 24 && stem.bytes().all(hex), "{name}");
    assert_eq!(std::fs::read(&path).expect("read"), png);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(client.dir()), 0o700);
    }
    let (_, seen) = server.settle().await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path, "/media/1?sig=abc");
    assert_eq!(seen[0].header("authorization"), vec![TOKEN]);
    assert_eq!(seen[0].header("user-agent"), vec!["relay-host-test/1"]);
    // No automatic decompression: nothing asks for an encoding.
    assert!(seen[0].header("accept-encoding").is_empty());
}

#[tokio::test]
async fn the_requests_user_agent_wins() {
    let server = Server::answering(http(200, &[], b"x")).await;
    let dir = TempDir::new("ua");
    let client = media_client(&dir, server.origin(), false);
    let mut req = get(&server.url("/x"));
    req.headers = vec![("User-Agent".into(), "component/2".into())];
    assert_eq!(client.fetch(req).await.status, 200);
    let (_, seen) = server.settle().await;
    assert_eq!(seen[0].header("user-agent"), vec!["component/2"]);
}

#[tokio::test]
async fn a_bearer_to_a_foreign_origin_is_refused_without_a_connection() {
    let server = Server::answering(http(200, &[], b"hi")).await;
    let dir = TempDir::new("foreign-bearer");
    // allow_private: only the credential rule stands in the way.
    let client = media_client(&dir, connector_elsewhere(), true);
    let mut req = get(&server.url("/a"));
    req.headers = vec![("aUtHoRiZaTiOn".into(), TOKEN.into())];
    refused(&client.fetch(req).await, "authorization");
    // Credentials in the URL would become a Basic header: refused too.
    let port = server.addr.port();
    let with_userinfo = format!("http://user:s3cret@127.0.0.1:{port}/b");
    refused(&client.fetch(get(&with_userinfo)).await, "credentials");
    server.assert_untouched().await;
}

#[tokio::test]
async fn a_redirect_is_reported_and_not_followed() {
    let target = Server::answering(http(200, &[], b"followed")).await;
    let location = target.url("/elsewhere");
    let server = Server::answering(http(302, &[("Location", &location)], b"")).await;
    let dir = TempDir::new("redirect");
    let client = media_client(&dir, server.origin(), true);
    let mut req = get(&server.url("/r"));
    req.headers = vec![("Authorization".into(), TOKEN.into())];
    req.want_headers = vec!["Location".into()];
    let outcome = client.fetch(req).await;
    assert_eq!(outcome.status, 302, "{outcome:?}");
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.headers, vec![("location".to_owned(), location)]);
    assert_eq!(outcome.path, None);
    assert!(dir.files().is_empty());
    let (connections, _) = server.settle().await;
    assert_eq!(connections, 1);
    target.assert_untouched().await;
}

#[tokio::test]
async fn a_non_2xx_status_writes_no_file() {
    let server = Server::answering(http(404, &[("Content-Type", "text/plain")], b"nope")).await;
    let dir = TempDir::new("404");
    let client = media_client(&dir, server.origin(), false);
    let mut req = get(&server.url("/missing"));
    req.want_headers = vec!["content-type".into()];
    let outcome = client.fetch(req).await;
    assert_eq!(outcome.status, 404);
    assert_eq!(outcome.path, None);
    assert_eq!(outcome.headers.len(), 1);
    assert!(dir.files().is_empty());
}

#[tokio::test]
async fn the_size_cap_holds_declared_and_streamed() {
    let body = vec![b'x'; 100];
    let declared = Server::answering(http(200, &[], &body)).await;
    let mut chunked =
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..10 {
        chunked.extend_from_slice(b"a\r\n0123456789\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let streamed = Server::answering(chunked).await;
    let mut unframed = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
    unframed.extend_from_slice(&body);
    let until_close = Server::answering(unframed).await;

    let dir = TempDir::new("cap");
    let client = media_client(&dir, connector_elsewhere(), true);
    for server in [&declared, &streamed, &until_close] {
        let mut req = get(&server.url("/big"));
        req.max_bytes = 50;
        let outcome = client.fetch(req).await;
        assert_eq!(outcome.status, 200, "{outcome:?}");
        let want = Some("too large: over 50 bytes");
        assert_eq!(outcome.error.as_deref(), want, "{outcome:?}");
        assert_eq!(outcome.path, None);
        assert!(dir.files().is_empty(), "a partial file was left");
    }
    // Exactly at the cap is fine.
    let mut req = get(&streamed.url("/exact"));
    req.max_bytes = 100;
    let outcome = client.fetch(req).await;
    assert_eq!((outcome.size, outcome.error), (100, None));
    assert_eq!(dir.files().len(), 1);
}

#[tokio::test]
async fn non_http_schemes_are_refused() {
    let server = Server::answering(http(200, &[], b"hi")).await;
    let dir = TempDir::new("scheme");
    let client = media_client(&dir, server.origin(), true);
    let port = server.addr.port();
    for url in [
        format!("ftp://127.0.0.1:{port}/x"),
        format!("ws://127.0.0.1:{port}/x"),
        "file:///etc/passwd".to_owned(),
        "data:text/plain,hello".to_owned(),
        "no scheme at all".to_owned(),
    ] {
        let outcome = client.fetch(get(&url)).await;
        assert_eq!(outcome.status, 0, "{url}: {outcome:?}");
        assert!(outcome.error.is_some(), "{url}");
    }
    server.assert_untouched().await;
}

#[tokio::test]
async fn a_timeout_is_an_error_without_a_file() {
    let server = Server::start(|_| Vec::new()).await;
    let dir = TempDir::new("timeout");
    let client = media_client(&dir, server.origin(), false);
    let mut req = get(&server.url("/slow"));
    req.timeout = Duration::from_millis(200);
    refused(&client.fetch(req).await, "timed out");
    assert!(dir.files().is_empty());
}

// ---------------------------------------------------------------- upload

#[tokio::test]
async fn uploads_are_refused_before_any_connection() {
    let server = Server::answering(http(200, &[], b"ok")).await;
    let foreign = Server::answering(http(200, &[], b"ok")).await;
    let dir = TempDir::new("upload-refused");
    let client = media_client(&dir, server.origin(), true);
    let empty = client.dir().join("empty.bin");
    std::fs::write(&empty, b"").expect("write");
    let big = client.dir().join("big.bin");
    std::fs::write(&big, vec![0u8; 2048]).expect("write");
    let url = server.url("/upload");

    let expect = async |req: UploadRequest, what: &str| refused(&client.upload(req).await, what);
    expect(post(&url, &client.dir().join("missing")), "file not found").await;
    expect(post(&url, &empty), "empty file").await;
    let mut too_big = post(&url, &big);
    too_big.max_bytes = 1024;
    let cap = "file too large: 2048 bytes over the 1024 byte cap";
    expect(too_big, cap).await;
    expect(post(&url, client.dir()), "not a regular file").await;
    // Uploads go to the connector origin only, bearer or not.
    expect(post(&foreign.url("/upload"), &big), "connector origin").await;
    server.assert_untouched().await;
    foreign.assert_untouched().await;
}

#[tokio::test]
async fn an_upload_posts_the_bytes_and_headers_and_returns_the_reply() {
    let server = Server::answering(http(
        201,
        &[("Content-Type", "application/json")],
        br#"{"media_id":"m-1"}"#,
    ))
    .await;
    let dir = TempDir::new("upload");
    let client = media_client(&dir, server.origin(), false);
    let file = client.dir().join("voice.ogg");
    let bytes: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    std::fs::write(&file, &bytes).expect("write");
    let mut req = post(&server.url("/media/upload?chat=7"), &file);
    req.headers = vec![
        ("Authorization".into(), TOKEN.into()),
        ("Content-Type".into(), "audio/ogg".into()),
        ("X-Filename".into(), "voice.ogg".into()),
        // Framing is the host's: a wrong length would desynchronise.
        ("Content-Length".into(), "1".into()),
    ];
    let outcome = client.upload(req).await;
    assert_eq!(
        (outcome.status, &outcome.error),
        (201, &None),
        "{outcome:?}"
    );
    assert_eq!(outcome.size, 3000);
    assert_eq!(outcome.body.as_deref(), Some(r#"{"media_id":"m-1"}"#));
    let (_, seen) = server.settle().await;
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/media/upload?chat=7");
    assert_eq!(request.body, bytes);
    assert_eq!(request.header("authorization"), vec![TOKEN]);
    assert_eq!(request.header("content-type"), vec!["audio/ogg"]);
    assert_eq!(request.header("x-filename"), vec!["voice.ogg"]);
    assert_eq!(request.header("content-length"), vec!["3000"]);
}

#[tokio::test]
async fn an_upload_reply_is_cut_at_64_kib() {
    let server = Server::answering(http(500, &[], &vec![b'e'; 100 * 1024])).await;
    let dir = TempDir::new("upload-reply");
    let client = media_client(&dir, server.origin(), false);
    let file = client.dir().join("a.txt");
    std::fs::write(&file, b"hello").expect("write");
    let outcome = client.upload(post(&server.url("/u"), &file)).await;
    assert_eq!(outcome.status, 500);
    assert_eq!(outcome.body.map(|b| b.len()), Some(64 * 1024));
}

// ---------------------------------------------------------------- delete

#[tokio::test]
async fn delete_removes_only_our_files() {
    let server = Server::answering(http(200, &[("Content-Type", "image/gif")], b"GIF89a")).await;
    let dir = TempDir::new("delete");
    let client = media_client(&dir, server.origin(), false);
    let fetched = client.fetch(get(&server.url("/g"))).await;
    let ours = fetched.path.expect("a file");
    // Not ours by name, though in the directory.
    let foreign_name = client.dir().join("notes.txt");
    std::fs::write(&foreign_name, b"keep").expect("write");
    // Our pattern, but outside the directory.
    let outside = dir.0.join("0123456789abcdef01234567.gif");
    std::fs::write(&outside, b"keep").expect("write");
    // Our pattern, reached through `..`.
    let dotdot = client.dir().join("..").join("0123456789abcdef01234567.gif");
    let paths = vec![
        ours.clone(),
        foreign_name.display().to_string(),
        outside.display().to_string(),
        dotdot.display().to_string(),
        "/etc/passwd".to_owned(),
        String::new(),
        client.dir().display().to_string(),
    ];
    assert_eq!(client.delete(&paths), 1);
    assert!(!Path::new(&ours).exists());
    assert!(foreign_name.exists());
    assert!(outside.exists());
    // A second time: nothing left to remove.
    assert_eq!(client.delete(&[ours]), 0);
}
