//! Just enough HTTP/1.1 for the media endpoints, written by hand so the
//! stub stays dependency-free: routing by the peeked request line, one
//! request head per connection, `Content-Length` bodies only, and every
//! answer sent with `Connection: close`.

use std::io;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{CLOSE_GRACE, WRITE_TIMEOUT};

/// The request line must show up within this many bytes to be routed to
/// the media endpoints; anything longer goes to the upgrade path.
pub(super) const MAX_REQUEST_LINE: usize = 8 * 1024;
/// Cap on a media request's head (request line plus headers).
pub(super) const MAX_HEAD: usize = 16 * 1024;
/// A request line arriving in pieces is re-peeked at this pace: `peek`
/// returns at once while unread bytes wait, so without a pause the loop
/// would spin until the rest arrives.
const PEEK_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// Where an accepted connection goes, decided from its request line.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Route {
    /// A media endpoint: method and request target of the line.
    Media {
        /// Request method.
        method: String,
        /// Request target (query included).
        target: String,
    },
    /// Everything else, including lines that never completed.
    Upgrade,
}

/// Peeks (without consuming) until the first CRLF, bounded by
/// [`MAX_REQUEST_LINE`] and `deadline`. EOF, errors, an over-long line
/// and the deadline all route to the upgrade path, which then fails the
/// attempt exactly as it did before media routing existed.
pub(super) async fn classify(tcp: &TcpStream, deadline: Instant) -> Route {
    let mut buf = vec![0u8; MAX_REQUEST_LINE];
    // Bounded by the deadline: every pass either returns or sleeps.
    loop {
        let n = match tokio::time::timeout_at(deadline, tcp.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return Route::Upgrade,
        };
        if let Some(end) = find(&buf[..n], b"\r\n") {
            return route_of(&buf[..end]);
        }
        if n >= MAX_REQUEST_LINE || Instant::now() >= deadline {
            return Route::Upgrade;
        }
        tokio::time::sleep_until(deadline.min(Instant::now() + PEEK_POLL)).await;
    }
}

/// The route of one request line (without its CRLF).
pub(super) fn route_of(line: &[u8]) -> Route {
    let Ok(line) = std::str::from_utf8(line) else {
        return Route::Upgrade;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Route::Upgrade;
    };
    let path = path_of(target);
    let media = match method {
        "POST" => path == "/relay/media",
        "GET" => path.starts_with("/relay/media/") || path.starts_with("/public/"),
        _ => false,
    };
    if media {
        Route::Media {
            method: method.to_owned(),
            target: target.to_owned(),
        }
    } else {
        Route::Upgrade
    }
}

/// A request target without its query string.
pub(super) fn path_of(target: &str) -> &str {
    target.split_once('?').map_or(target, |(path, _)| path)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Head {
    pub method: String,
    pub target: String,
    /// Header pairs in arrival order, names lowercased.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of a header (name lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The declared body length: `Ok(None)` without a `Content-Length`,
    /// an error for a non-numeric value or disagreeing duplicates.
    pub fn content_length(&self) -> Result<Option<u64>, &'static str> {
        let mut declared = None;
        for (_, value) in self.headers.iter().filter(|(n, _)| n == "content-length") {
            let value = value.trim();
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err("Content-Length is not a number");
            }
            let n: u64 = value.parse().map_err(|_| "Content-Length is too large")?;
            if declared.is_some_and(|d| d != n) {
                return Err("conflicting Content-Length headers");
            }
            declared = Some(n);
        }
        Ok(declared)
    }
}

/// Why a request head could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum HeadError {
    /// Over [`MAX_HEAD`] bytes without the blank line.
    TooLarge,
    /// Not HTTP/1.x as this parser reads it.
    Malformed(&'static str),
    /// The peer closed (or the socket failed) mid-head.
    Closed,
    /// The deadline passed mid-head.
    TimedOut,
}

/// Reads the head up to the blank line; returns it with any body bytes
/// that arrived in the same reads.
pub(super) async fn read_head(
    tcp: &mut TcpStream,
    deadline: Instant,
) -> Result<(Head, Vec<u8>), HeadError> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    // Bounded: each pass grows `buf` or ends; `buf` is capped at MAX_HEAD.
    loop {
        let n = match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => return Err(HeadError::Closed),
            Ok(Ok(n)) => n,
            Err(_) => return Err(HeadError::TimedOut),
        };
        // Re-scan the last 3 old bytes too: the terminator may straddle reads.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf[from..], b"\r\n\r\n").map(|i| from + i) {
            if end + 4 > MAX_HEAD {
                return Err(HeadError::TooLarge);
            }
            let rest = buf.split_off(end + 4);
            return parse_head(&buf[..end]).map(|head| (head, rest));
        }
        if buf.len() >= MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
    }
}

/// Parses a head without its final blank line.
pub(super) fn parse_head(bytes: &[u8]) -> Result<Head, HeadError> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, target, version] = parts.as_slice() else {
        return Err(HeadError::Malformed("bad request line"));
    };
    if method.is_empty() || target.is_empty() || !version.starts_with("HTTP/1.") {
        return Err(HeadError::Malformed("bad request line"));
    }
    let mut headers = Vec::new();
    for line in lines {
        // Folded continuation lines are obsolete (RFC 9112 §5.2); refusing
        // them keeps header values single-line.
        if line.starts_with([' ', '\t']) {
            return Err(HeadError::Malformed("folded header line"));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(HeadError::Malformed("header line without a colon"));
        };
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(HeadError::Malformed("bad header name"));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    Ok(Head {
        method: (*method).to_owned(),
        target: (*target).to_owned(),
        headers,
    })
}

/// Reads exactly `len` body bytes, starting with `early` (bytes that came
/// with the head). On failure returns how many bytes did arrive.
pub(super) async fn read_body(
    tcp: &mut TcpStream,
    early: Vec<u8>,
    len: usize,
    deadline: Instant,
) -> Result<Vec<u8>, (usize, HeadError)> {
    let mut body = early;
    // Bytes past the declared length belong to no request: the connection
    // closes after this one.
    body.truncate(len);
    body.reserve_exact(len - body.len());
    let mut chunk = vec![0u8; 64 * 1024];
    // Bounded: each pass grows `body` towards `len` or ends.
    while body.len() < len {
        let want = (len - body.len()).min(chunk.len());
        match tokio::time::timeout_at(deadline, tcp.read(&mut chunk[..want])).await {
            Ok(Ok(0) | Err(_)) => return Err((body.len(), HeadError::Closed)),
            Ok(Ok(n)) => body.extend_from_slice(&chunk[..n]),
            Err(_) => return Err((body.len(), HeadError::TimedOut)),
        }
    }
    Ok(body)
}

/// An answer to a media request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A response with this body and `Content-Type`.
    pub fn with_body(status: u16, content_type: &str, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_owned())],
            body,
        }
    }

    /// A JSON `{"error": message}` answer.
    pub fn error(status: u16, message: &str) -> Response {
        let body = serde_json::json!({ "error": message }).to_string();
        Response::with_body(status, "application/json", body.into_bytes())
    }

    /// Adds a header; CR and LF are dropped from the value so test-given
    /// strings cannot split the head.
    pub fn header(mut self, name: &'static str, value: &str) -> Response {
        let value: String = value
            .chars()
            .filter(|c| !matches!(c, '\r' | '\n'))
            .collect();
        self.headers.push((name, value));
        self
    }

    /// The bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.body.len()
        ));
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// Writes the answer and closes gracefully: after our FIN, whatever the
/// client still sends (e.g. the body of a request refused with 413) is
/// read and dropped for a short while, because closing a socket with
/// unread bytes makes the kernel send a reset that can destroy the answer
/// before the client reads it.
pub(super) async fn respond(tcp: &mut TcpStream, response: &Response) -> io::Result<()> {
    let bytes = response.to_bytes();
    tokio::time::timeout(WRITE_TIMEOUT, async {
        tcp.write_all(&bytes).await?;
        tcp.flush().await?;
        tcp.shutdown().await
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "response write timed out"))??;
    let mut sink = vec![0u8; 64 * 1024];
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Ok(n) = tcp.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    Ok(())
}

/// Reason phrases for the statuses the stub sends (any other status gets a
/// generic phrase; clients read the code, not the text).
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// `Content-Disposition` for a download: `filename="…"` with quotes and
/// backslashes escaped, plus an RFC 8187 `filename*` when the name is not
/// plain ASCII (the quoted form then carries `_` for those characters).
pub(super) fn content_disposition(filename: &str) -> String {
    let quoted: String = filename
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| if c.is_ascii() { c } else { '_' })
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            _ => vec![c],
        })
        .collect();
    if filename.is_ascii() {
        return format!("attachment; filename=\"{quoted}\"");
    }
    let mut encoded = String::new();
    for b in filename.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{quoted}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(method: &str, target: &str) -> Route {
        Route::Media {
            method: method.into(),
            target: target.into(),
        }
    }

    #[test]
    fn request_lines_route_only_the_media_endpoints() {
        assert_eq!(
            route_of(b"POST /relay/media HTTP/1.1"),
            media("POST", "/relay/media")
        );
        assert_eq!(
            route_of(b"POST /relay/media?x=1 HTTP/1.1"),
            media("POST", "/relay/media?x=1")
        );
        assert_eq!(
            route_of(b"GET /relay/media/abc HTTP/1.1"),
            media("GET", "/relay/media/abc")
        );
        assert_eq!(
            route_of(b"GET /public/a.png HTTP/1.1"),
            media("GET", "/public/a.png")
        );
        for line in [
            &b"GET /relay HTTP/1.1"[..],
            b"GET /relay/media HTTP/1.1",
            b"POST /relay/media/abc HTTP/1.1",
            b"PUT /relay/media HTTP/1.1",
            b"GET /other HTTP/1.1",
            b"GET",
            b"\xff\xfe",
        ] {
            assert_eq!(route_of(line), Route::Upgrade, "{line:?}");
        }
    }

    #[test]
    fn heads_parse_strictly() {
        let head =
            parse_head(b"POST /relay/media HTTP/1.1\r\nContent-Length: 3\r\nX-A:  b \r\nx-a: c")
                .unwrap();
        assert_eq!(head.method, "POST");
        assert_eq!(head.target, "/relay/media");
        assert_eq!(head.header("x-a"), Some("b"));
        assert_eq!(head.content_length(), Ok(Some(3)));
        for bad in [
            &b"POST /relay/media\r\n"[..],
            b"POST /x HTTP/2\r\n",
            b"GET /x HTTP/1.1\r\nno colon",
            b"GET /x HTTP/1.1\r\nA: b\r\n  folded",
            b"GET /x HTTP/1.1\r\nbad name: v",
        ] {
            assert!(parse_head(bad).is_err(), "{bad:?}");
        }
        let dup = parse_head(b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2").unwrap();
        assert!(dup.content_length().is_err());
        let same =
            parse_head(b"GET /x HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2").unwrap();
        assert_eq!(same.content_length(), Ok(Some(2)));
        let signed = parse_head(b"GET /x HTTP/1.1\r\nContent-Length: +2").unwrap();
        assert!(signed.content_length().is_err());
        let none = parse_head(b"GET /x HTTP/1.1").unwrap();
        assert_eq!(none.content_length(), Ok(None));
    }

    #[test]
    fn responses_close_and_strip_line_breaks() {
        let r = Response::with_body(200, "text/plain", b"hi".to_vec()).header("Location", "a\r\nb");
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nLocation: ab\r\n\
             Content-Length: 2\r\nConnection: close\r\n\r\nhi"
        );
    }

    #[test]
    fn content_disposition_quotes_and_encodes() {
        assert_eq!(
            content_disposition("a.png"),
            "attachment; filename=\"a.png\""
        );
        assert_eq!(
            content_disposition("say \"hi\".txt"),
            "attachment; filename=\"say \\\"hi\\\".txt\""
        );
        assert_eq!(
            content_disposition("é.png"),
            "attachment; filename=\"_.png\"; filename*=UTF-8''%C3%A9.png"
        );
    }
}
