//! The plain data of the media module: origins, settings, requests and
//! outcomes. No I/O here.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;

/// A URL's origin: scheme, host and effective port. Two URLs share
/// credentials (the bearer) only when their origins are equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `http` or `https`.
    pub scheme: String,
    /// Lower-case; an IPv6 address without brackets.
    pub host: String,
    /// The effective port: the URL's, else the scheme's default.
    pub port: u16,
}

impl Origin {
    /// The origin of an `http` or `https` URL; `None` for any other scheme
    /// or an unparsable URL.
    ///
    /// Parsed with the same URL parser reqwest sends with, so the host
    /// checked here is the host connected to (`http://0x7f.1/` is
    /// `127.0.0.1` for both).
    pub fn of_url(url: &str) -> Option<Origin> {
        let url = Url::parse(url).ok()?;
        match url.scheme() {
            "http" | "https" => origin(&url, url.scheme()),
            _ => None,
        }
    }

    /// The HTTP origin of the connector's WebSocket URL: `ws` becomes
    /// `http`, `wss` becomes `https` (the connector serves its media on the
    /// same host and port as its socket); `http`/`https` are kept.
    pub fn of_connector(connector_url: &str) -> Option<Origin> {
        let url = Url::parse(connector_url).ok()?;
        let scheme = match url.scheme() {
            "ws" | "http" => "http",
            "wss" | "https" => "https",
            _ => return None,
        };
        origin(&url, scheme)
    }
}

/// The origin of a parsed URL under `scheme`. `ws`/`wss` share the default
/// ports of `http`/`https`, so `port_or_known_default` is right for both.
fn origin(url: &Url, scheme: &str) -> Option<Origin> {
    // The parser has already lower-cased domains and normalised IPv4
    // literals; only IPv6 literals keep their brackets in `host_str`.
    let raw = url.host_str()?;
    let host = raw
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(raw)
        .to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    Some(Origin {
        scheme: scheme.to_owned(),
        host,
        port: url.port_or_known_default()?,
    })
}

impl fmt::Display for Origin {
    /// `scheme://host:port`, an IPv6 host in brackets (for logs).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}://[{}]:{}", self.scheme, self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

/// How a [`MediaClient`](super::MediaClient) is set up.
#[derive(Debug, Clone)]
pub struct MediaSettings {
    /// Where downloads are written (created with mode 0700 if missing).
    pub dir: PathBuf,
    /// The connector's origin ([`Origin::of_connector`]): the only origin
    /// that may receive an `Authorization` header or an upload, and the
    /// only one exempt from the private-address check.
    pub connector_origin: Origin,
    /// Lets other origins resolve to loopback, private and reserved
    /// addresses (tests, or a media server on the operator's LAN).
    pub allow_private: bool,
    /// Extra PEM CA certificates trusted beside the bundled roots (the
    /// same file as `AdapterConfig::ca_file`).
    pub ca_file: Option<PathBuf>,
    /// The `User-Agent` sent when the request has none of its own.
    pub user_agent: String,
}

/// One download: `GET url`, the body streamed to a new file in the media
/// directory when the status is 2xx.
#[derive(Clone)]
pub struct FetchRequest {
    /// An `http` or `https` URL.
    pub url: String,
    /// Request headers, sent as given (framing headers such as
    /// `Content-Length` are the host's and are dropped).
    pub headers: Vec<(String, String)>,
    /// The largest body accepted; a larger one is an error and no file.
    pub max_bytes: u64,
    /// For the whole exchange, body included.
    pub timeout: Duration,
    /// Response headers to report (case-insensitive names).
    pub want_headers: Vec<String>,
    /// A file name (or path) whose extension names the file; see
    /// [`extension_for`](super::extension_for).
    pub name_hint: Option<String>,
}

/// One upload: `POST url` with a file's bytes as the raw body, to the
/// connector origin only.
#[derive(Clone)]
pub struct UploadRequest {
    /// An `http` or `https` URL on the connector origin.
    pub url: String,
    /// Request headers, sent as given (framing headers are dropped).
    pub headers: Vec<(String, String)>,
    /// The largest file accepted.
    pub max_bytes: u64,
    /// For the whole exchange.
    pub timeout: Duration,
    /// The file to send.
    pub path: PathBuf,
}

// Debug by hand: the derived one would print header values, and those carry
// the bearer.
impl fmt::Debug for FetchRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FetchRequest")
            .field("url", &redacted_url(&self.url))
            .field("headers", &header_names(&self.headers))
            .field("max_bytes", &self.max_bytes)
            .field("timeout", &self.timeout)
            .field("want_headers", &self.want_headers)
            .field("name_hint", &self.name_hint)
            .finish()
    }
}

impl fmt::Debug for UploadRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UploadRequest")
            .field("url", &redacted_url(&self.url))
            .field("headers", &header_names(&self.headers))
            .field("max_bytes", &self.max_bytes)
            .field("timeout", &self.timeout)
            .field("path", &self.path)
            .finish()
    }
}

fn header_names(headers: &[(String, String)]) -> Vec<&str> {
    headers.iter().map(|(name, _)| name.as_str()).collect()
}

/// Origin and path only: a query string or user info may hold a token.
pub(crate) fn redacted_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(parsed) => match origin(&parsed, parsed.scheme()) {
            Some(origin) => format!("{origin}{}", parsed.path()),
            None => format!("{}:{}", parsed.scheme(), "<opaque>"),
        },
        Err(_) => "<unparsable url>".to_owned(),
    }
}

/// What a fetch or an upload came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaOutcome {
    /// The HTTP status; 0 when no response arrived.
    pub status: u16,
    /// Why the request failed or its result was discarded; never contains
    /// a header value.
    pub error: Option<String>,
    /// The requested response headers that were present, names lower-case,
    /// in the order asked (a repeated header gives one pair per value).
    pub headers: Vec<(String, String)>,
    /// Bytes written (fetch) or sent (upload).
    pub size: u64,
    /// Fetch: the file written, inside the media directory.
    pub path: Option<String>,
    /// Upload: the reply body as text (lossy UTF-8), at most 64 KiB.
    pub body: Option<String>,
}

impl MediaOutcome {
    /// No response: status 0 and the reason.
    pub(crate) fn failed(error: impl Into<String>) -> MediaOutcome {
        MediaOutcome {
            error: Some(error.into()),
            ..MediaOutcome::default()
        }
    }
}
