//! The media plane's pure rules (spec §9.1, §4.3): the connector's media
//! base, re-host detection (who may receive the bearer), redirect targets,
//! content types by file name, and the shapes an upload reply may take.
//! Hand-parsed like [`crate::url`]: no I/O, no name resolution, no panics.
//!
//! Stricter than Python: the bearer goes only to a URL with the connector's
//! own scheme, host and effective port whose path, after percent-encoded
//! dots are decoded and dot segments removed, lies under
//! `{base path}/relay/media/`; a URL with userinfo, an encoded slash or a
//! backslash in its path is never a re-host URL.

/// Per-file cap on both sides (§9.1); the connector answers 413 above it.
pub const MEDIA_MAX_BYTES: u64 = 25 * 1024 * 1024;
/// HTTP timeout of one media request (§9.1).
pub const MEDIA_TIMEOUT_MS: u64 = 30_000;
/// How long a downloaded file is kept after its delivery was accepted.
pub const MEDIA_RETENTION_MS: u64 = 3_600_000;
/// Downloaded files kept at once (in use or within retention).
pub const MEDIA_MAX_FILES: usize = 512;
/// Bytes of downloaded files kept at once.
pub const MEDIA_MAX_TOTAL_BYTES: u64 = 1024 * 1024 * 1024;
/// Longest `X-Media-Filename` sent, in characters (§9.1).
pub const MAX_FILENAME_CHARS: usize = 255;
/// Redirect hops followed for one download.
pub const MAX_REDIRECTS: u8 = 5;
/// Longest upload id accepted from the connector's reply.
const MAX_MEDIA_ID_BYTES: usize = 128;
/// The User-Agent of every media request: Discord's CDN refuses the
/// default ones of HTTP libraries (§9.1).
pub const MEDIA_USER_AGENT: &str = concat!(
    "hermes-relay-adapter/",
    env!("CARGO_PKG_VERSION"),
    " (relay media)"
);
/// The path under the base where the connector takes and serves media.
pub const MEDIA_PATH: &str = "/relay/media";

/// An `http`/`https` URL split into what the media rules compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// Host, lower-cased; an IPv6 literal without brackets.
    pub host: String,
    /// Explicit port, else 80/443.
    pub port: u16,
    /// The path as written (no query or fragment), `/` when empty.
    pub path: String,
    /// Userinfo was present (`user@host`).
    pub userinfo: bool,
}

impl HttpUrl {
    /// Parses an absolute `http(s)://` URL; `None` for anything else.
    pub fn parse(url: &str) -> Option<HttpUrl> {
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return None;
        }
        let (scheme, rest) = url.split_once("://")?;
        let scheme = if scheme.eq_ignore_ascii_case("http") {
            "http"
        } else if scheme.eq_ignore_ascii_case("https") {
            "https"
        } else {
            return None;
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((_, hp)) => (true, hp),
            None => (false, authority),
        };
        let (host, port) = split_host_port(hostport)?;
        let default = if scheme == "https" { 443 } else { 80 };
        let path_end = tail.find(['?', '#']).unwrap_or(tail.len());
        let path = if path_end == 0 {
            "/"
        } else {
            &tail[..path_end]
        };
        Some(HttpUrl {
            scheme,
            host,
            port: port.unwrap_or(default),
            path: path.to_owned(),
            userinfo,
        })
    }

    /// `scheme://host:port` (brackets around an IPv6 host).
    pub fn origin(&self) -> String {
        if self.host.contains(':') {
            format!("{}://[{}]:{}", self.scheme, self.host, self.port)
        } else {
            format!("{}://{}:{}", self.scheme, self.host, self.port)
        }
    }

    fn same_origin(&self, other: &HttpUrl) -> bool {
        self.scheme == other.scheme && self.host == other.host && self.port == other.port
    }
}

fn split_host_port(hostport: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        None | Some("") => None,
        Some(p) => Some(p.parse::<u16>().ok().filter(|&p| p != 0)?),
    };
    Some((host.to_ascii_lowercase(), port))
}

/// The connector's media base for a dial URL (`ws://h:p/x/relay` →
/// `http://h:p/x`): `{base}/relay/media` takes uploads and serves re-hosts.
pub fn media_base(dial_url: &str) -> String {
    let (scheme, rest) = match dial_url.split_once("://") {
        Some(("wss", rest)) => ("https", rest),
        Some((_, rest)) => ("http", rest),
        None => ("http", dial_url),
    };
    let rest = rest.trim_end_matches('/');
    let rest = rest.strip_suffix(crate::url::RELAY_PATH).unwrap_or(rest);
    format!("{scheme}://{rest}")
}

/// Removes `.` and `..` segments (RFC 3986 §5.2.4) after decoding
/// percent-encoded dots; `None` when the path hides a separator (`%2f`,
/// `%5c`, `\`), which a server might decode into one.
fn normalised_path(path: &str) -> Option<String> {
    let lower = path.to_ascii_lowercase();
    if path.contains('\\') || lower.contains("%2f") || lower.contains("%5c") {
        return None;
    }
    let decoded = path.replace("%2e", ".").replace("%2E", ".");
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    Some(format!("/{}", out.join("/")))
}

/// Whether `url` is a connector re-host URL for `base` (see the module
/// docs): the only URLs a download may carry the bearer to.
pub fn is_rehost(url: &str, base: &str) -> bool {
    let (Some(u), Some(b)) = (HttpUrl::parse(url), HttpUrl::parse(base)) else {
        return false;
    };
    if u.userinfo || b.userinfo || !u.same_origin(&b) {
        return false;
    }
    let Some(path) = normalised_path(&u.path) else {
        return false;
    };
    let prefix = format!("{}{MEDIA_PATH}/", b.path.trim_end_matches('/'));
    path.starts_with(&prefix) && path.len() > prefix.len()
}

/// The absolute target of a redirect's `Location` from `from`, when it is
/// an `http(s)` URL; `None` otherwise.
pub fn resolve_location(from: &str, location: &str) -> Option<String> {
    let location = location.trim();
    if location.is_empty() || location.chars().any(char::is_control) {
        return None;
    }
    if location.contains("://") {
        return HttpUrl::parse(location).map(|_| location.to_owned());
    }
    let base = HttpUrl::parse(from)?;
    let target = if let Some(rest) = location.strip_prefix("//") {
        format!("{}://{rest}", base.scheme)
    } else if location.starts_with('/') {
        format!("{}{location}", base.origin())
    } else {
        let dir = base.path.rsplit_once('/').map_or("", |(d, _)| d);
        format!("{}{dir}/{location}", base.origin())
    };
    HttpUrl::parse(&target).map(|_| target)
}

/// The last path segment of a URL (the download's name hint), if any.
pub fn name_hint(url: &str) -> Option<String> {
    let parsed = HttpUrl::parse(url)?;
    let last = parsed.path.rsplit('/').next()?;
    (!last.is_empty()).then(|| last.to_owned())
}

/// The file name part of a local path.
pub fn file_name(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

/// The content type of an upload, from its file name (§9.1); the default
/// is `application/octet-stream`.
pub fn content_type_for(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mov" => "video/quicktime",
        "mp3" => "audio/mpeg",
        "ogg" | "oga" | "opus" => "audio/ogg",
        "wav" => "audio/wav",
        "m4a" => "audio/mp4",
        "pdf" => "application/pdf",
        "txt" | "log" => "text/plain",
        "md" => "text/markdown",
        "csv" => "text/csv",
        "json" => "application/json",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

/// A header value made safe: control characters dropped, anything but
/// printable ASCII replaced by `_` (HTTP clients refuse other bytes in a
/// header; the frame's `filename` keeps the real name), at most
/// `max_chars` characters.
pub fn header_value(s: &str, max_chars: usize) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .map(|c| if c.is_ascii() { c } else { '_' })
        .take(max_chars)
        .collect()
}

/// The id of an upload reply `{"id": ..., "size": ...}` when it is a safe
/// path segment (`[A-Za-z0-9._-]`, not `.` or `..`, at most 128 bytes).
pub fn upload_id(reply: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(reply).ok()?;
    let id = match value.get("id")? {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let safe = !id.is_empty()
        && id.len() <= MAX_MEDIA_ID_BYTES
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    safe.then_some(id)
}

/// The MIME type of a `Content-Type` value, without parameters.
pub fn mime_of(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "http://127.0.0.1:9100";

    #[test]
    fn base_from_the_dial_url() {
        assert_eq!(media_base("ws://127.0.0.1:9100/relay"), BASE);
        assert_eq!(media_base("wss://c.example/x/relay"), "https://c.example/x");
    }

    #[test]
    fn rehost_needs_the_connectors_origin_and_media_path() {
        assert!(is_rehost("http://127.0.0.1:9100/relay/media/ab12", BASE));
        assert!(is_rehost(
            "HTTP://127.0.0.1:9100/relay/media/ab12?x=1",
            BASE
        ));
        // Another port, host or scheme: never the bearer.
        assert!(!is_rehost("http://127.0.0.1:9101/relay/media/ab12", BASE));
        assert!(!is_rehost("http://evil.example/relay/media/ab12", BASE));
        assert!(!is_rehost("https://127.0.0.1:9100/relay/media/ab12", BASE));
        assert!(!is_rehost("ftp://127.0.0.1:9100/relay/media/ab12", BASE));
        // The path must stay under the media path after normalisation.
        assert!(!is_rehost("http://127.0.0.1:9100/relay/media/", BASE));
        assert!(!is_rehost(
            "http://127.0.0.1:9100/relay/media/../policy",
            BASE
        ));
        assert!(!is_rehost(
            "http://127.0.0.1:9100/relay/media/%2e%2e/policy",
            BASE
        ));
        assert!(!is_rehost(
            "http://127.0.0.1:9100/relay/media/a%2f..%2f..",
            BASE
        ));
        assert!(!is_rehost("http://127.0.0.1:9100/x/relay/media/a", BASE));
        assert!(is_rehost("http://127.0.0.1:9100/x/../relay/media/a", BASE));
        assert!(!is_rehost("http://u@127.0.0.1:9100/relay/media/a", BASE));
        // Default ports are effective ports.
        assert!(is_rehost(
            "https://c.example:443/p/relay/media/a",
            "https://c.example/p"
        ));
        assert!(!is_rehost(
            "https://c.example/relay/media/a",
            "https://c.example/p"
        ));
    }

    #[test]
    fn redirect_targets() {
        let from = "http://h.example/a/b.png";
        assert_eq!(
            resolve_location(from, "/c.png").as_deref(),
            Some("http://h.example:80/c.png")
        );
        assert_eq!(
            resolve_location(from, "c.png").as_deref(),
            Some("http://h.example:80/a/c.png")
        );
        assert_eq!(
            resolve_location(from, "//o.example/x").as_deref(),
            Some("http://o.example/x")
        );
        assert_eq!(
            resolve_location(from, "https://o.example/x").as_deref(),
            Some("https://o.example/x")
        );
        assert_eq!(resolve_location(from, "file:///etc/passwd"), None);
        assert_eq!(resolve_location(from, ""), None);
    }

    #[test]
    fn upload_ids_are_safe_segments() {
        assert_eq!(
            upload_id(r#"{"id":"aa11","size":3}"#).as_deref(),
            Some("aa11")
        );
        assert_eq!(upload_id(r#"{"id":7}"#).as_deref(), Some("7"));
        for bad in [
            r#"{"id":"../x"}"#,
            r#"{"id":".."}"#,
            r#"{"id":""}"#,
            "[]",
            "nope",
        ] {
            assert_eq!(upload_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_and_types() {
        assert_eq!(content_type_for("report.PDF"), "application/pdf");
        assert_eq!(content_type_for("noext"), "application/octet-stream");
        assert_eq!(file_name("/tmp/x/report.pdf"), "report.pdf");
        assert_eq!(
            name_hint("https://cdn.example/a/b.png?x=1").as_deref(),
            Some("b.png")
        );
        assert_eq!(name_hint("https://cdn.example/"), None);
        assert_eq!(header_value("a\r\nb", 255), "ab");
        assert_eq!(header_value("报告 v2.pdf", 255), "__ v2.pdf");
        assert_eq!(mime_of("Image/PNG; charset=x"), "image/png");
    }
}
