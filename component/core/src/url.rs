//! Dial-URL normalisation (§1.2) and the `(scheme, host, port)` it targets.
//! Stricter than Python: inputs Python turns into odd targets are rejected
//! (§10.12). Hand-parsed; never does I/O or name resolution, never panics.

use std::fmt;

/// The only path the connector accepts an upgrade on (§1.2).
pub const RELAY_PATH: &str = "/relay"; // §1.2

/// Default TCP port of a `ws://` target.
pub const WS_DEFAULT_PORT: u16 = 80; // RFC 6455 §3

/// Default TCP port of a `wss://` target.
pub const WSS_DEFAULT_PORT: u16 = 443; // RFC 6455 §3

/// Why a configured relay URL cannot be dialed.
///
/// Display never echoes the whole URL (it could carry credentials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// Nothing but whitespace was configured.
    Empty,
    /// No `scheme://` prefix (e.g. `c.example`).
    MissingScheme,
    /// A scheme other than `http`, `https`, `ws`, `wss` (lower-cased scheme).
    UnsupportedScheme(String),
    /// A `?` query or `#` fragment is present.
    QueryOrFragment,
    /// No host after the scheme (e.g. `https://` or `https://:9100`).
    MissingHost,
    /// `user@` or `user:password@` before the host; credentials go in the
    /// bearer header (§5), never in the URL.
    UserInfo,
    /// Whitespace or a control character inside the URL.
    InvalidCharacter,
    /// A host that is not a name or a bracketed IPv6 literal (e.g. `[::1`).
    InvalidHost,
    /// A port that is empty, not decimal, zero or above 65535 (the text given).
    InvalidPort(String),
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("relay url rejected: ")?;
        match self {
            Self::Empty => f.write_str("empty"),
            Self::MissingScheme => {
                f.write_str("no scheme (expected ws://, wss://, http:// or https://)")
            }
            Self::UnsupportedScheme(scheme) => write!(
                f,
                "unsupported scheme {scheme:?} (expected ws, wss, http or https)"
            ),
            Self::QueryOrFragment => f.write_str("query strings and fragments are not allowed"),
            Self::MissingHost => f.write_str("no host"),
            Self::UserInfo => f.write_str("credentials in the url are not allowed"),
            Self::InvalidCharacter => f.write_str("contains whitespace or a control character"),
            Self::InvalidHost => f.write_str("malformed host"),
            Self::InvalidPort(port) => write!(f, "invalid port {port:?}"),
        }
    }
}

impl std::error::Error for UrlError {}

/// WebSocket scheme of a dial target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain `ws://`.
    Ws,
    /// TLS `wss://`.
    Wss,
}

impl Scheme {
    /// `"ws"` or `"wss"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ws => "ws",
            Self::Wss => "wss",
        }
    }

    /// 80 for `ws`, 443 for `wss`.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Ws => WS_DEFAULT_PORT,
            Self::Wss => WSS_DEFAULT_PORT,
        }
    }
}

/// Where a dial URL connects: what the host compares before dialing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialTarget {
    /// `ws` or `wss`.
    pub scheme: Scheme,
    /// Host name lower-cased (ASCII), or an IPv6 literal without brackets.
    pub host: String,
    /// Explicit port, else the scheme's default (80/443).
    pub port: u16,
}

/// Normalises a configured connector URL into the WebSocket URL to dial (§1.2).
///
/// Steps: trim; scheme matched case-insensitively, `https` → `wss`,
/// `http` → `ws`, `ws`/`wss` kept (output scheme always lower-case); remove
/// every trailing `/`; append `/relay` unless the URL already ends with it.
/// Host, port and path are otherwise kept as written. Rejects (see
/// [`UrlError`]) empty input, a missing or unsupported scheme, a query or
/// fragment, a missing host, userinfo, inner whitespace/control characters and
/// a malformed host or port. Idempotent on its own output.
pub fn dial_url(configured: &str) -> Result<String, UrlError> {
    let parsed = parse(configured)?;
    let rest = parsed.rest.trim_end_matches('/');
    let mut out = String::with_capacity(rest.len() + RELAY_PATH.len() + 6);
    out.push_str(parsed.scheme.as_str());
    out.push_str("://");
    out.push_str(rest);
    // Matched on the part after `scheme://`, so a host named `relay`
    // (`wss://relay`) still gets the path appended.
    if !rest.ends_with(RELAY_PATH) {
        out.push_str(RELAY_PATH);
    }
    Ok(out)
}

/// The `(scheme, host, port)` a URL dials, after the same validation as
/// [`dial_url`] (so `https://c.example` targets `wss`, `c.example`, 443).
/// `None` when [`dial_url`] would reject the URL.
pub fn dial_target(url: &str) -> Option<DialTarget> {
    let parsed = parse(url).ok()?;
    Some(DialTarget {
        scheme: parsed.scheme,
        host: parsed.host,
        port: parsed.port.unwrap_or(parsed.scheme.default_port()),
    })
}

/// A validated URL split into the parts the two public functions need.
struct Parsed<'a> {
    scheme: Scheme,
    /// Everything after `scheme://`, as written.
    rest: &'a str,
    host: String,
    port: Option<u16>,
}

fn parse(input: &str) -> Result<Parsed<'_>, UrlError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(UrlError::Empty);
    }
    if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(UrlError::InvalidCharacter);
    }
    let (scheme_text, rest) = trimmed.split_once("://").ok_or(UrlError::MissingScheme)?;
    if scheme_text.is_empty() {
        return Err(UrlError::MissingScheme);
    }
    let scheme = match scheme_text.to_ascii_lowercase().as_str() {
        "https" | "wss" => Scheme::Wss,
        "http" | "ws" => Scheme::Ws,
        other => return Err(UrlError::UnsupportedScheme(other.to_owned())),
    };
    if rest.contains(['?', '#']) {
        return Err(UrlError::QueryOrFragment);
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err(UrlError::UserInfo);
    }
    let (host, port) = split_authority(authority)?;
    Ok(Parsed {
        scheme,
        rest,
        host,
        port,
    })
}

/// Splits `host[:port]` or `[v6]` / `[v6]:port` into a lower-cased host and
/// an optional port.
fn split_authority(authority: &str) -> Result<(String, Option<u16>), UrlError> {
    let (host, port_text) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or(UrlError::InvalidHost)?;
        if host.is_empty() {
            return Err(UrlError::MissingHost);
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err(UrlError::InvalidHost);
        }
        let port_text = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(UrlError::InvalidHost)?),
        };
        (host, port_text)
    } else {
        let (host, port_text) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if host.is_empty() {
            return Err(UrlError::MissingHost);
        }
        if host.contains(['[', ']']) {
            return Err(UrlError::InvalidHost);
        }
        (host, port_text)
    };
    let port = port_text.map(parse_port).transpose()?;
    Ok((host.to_ascii_lowercase(), port))
}

fn parse_port(text: &str) -> Result<u16, UrlError> {
    let invalid = || UrlError::InvalidPort(text.to_owned());
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    match text.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn section_1_2_table_rows() {
        let rows = [
            ("https://connector.example", "wss://connector.example/relay"),
            (
                "https://connector.example/",
                "wss://connector.example/relay",
            ),
            ("http://127.0.0.1:9100", "ws://127.0.0.1:9100/relay"),
            (
                "wss://connector.example/relay",
                "wss://connector.example/relay",
            ),
            (
                "wss://connector.example/relay///",
                "wss://connector.example/relay",
            ),
            ("https://c.example/base", "wss://c.example/base/relay"),
            ("  https://c.example  ", "wss://c.example/relay"),
            // Python quirk fixed: the scheme match is case-insensitive here.
            ("HTTPS://c.example", "wss://c.example/relay"),
        ];
        for (configured, expected) in rows {
            assert_eq!(
                dial_url(configured).as_deref(),
                Ok(expected),
                "{configured:?}"
            );
        }
    }

    #[test]
    fn section_1_2_quirk_rows_are_errors() {
        assert_eq!(dial_url("c.example"), Err(UrlError::MissingScheme));
        assert_eq!(
            dial_url("https://c.example/?x=1"),
            Err(UrlError::QueryOrFragment)
        );
        assert_eq!(dial_url(""), Err(UrlError::Empty));
        assert_eq!(dial_url("   \t"), Err(UrlError::Empty));
    }

    #[test]
    fn any_case_scheme_is_rewritten_and_lowered() {
        assert_eq!(dial_url("Http://h").as_deref(), Ok("ws://h/relay"));
        assert_eq!(dial_url("WSS://h/relay").as_deref(), Ok("wss://h/relay"));
        assert_eq!(dial_url("wS://h:8080").as_deref(), Ok("ws://h:8080/relay"));
        assert_eq!(dial_url("ws://h").as_deref(), Ok("ws://h/relay"));
    }

    #[test]
    fn rejects_with_clear_errors() {
        assert_eq!(
            dial_url("ftp://c.example"),
            Err(UrlError::UnsupportedScheme("ftp".to_owned()))
        );
        assert_eq!(dial_url("://c.example"), Err(UrlError::MissingScheme));
        assert_eq!(dial_url("https://"), Err(UrlError::MissingHost));
        assert_eq!(dial_url("https:///relay"), Err(UrlError::MissingHost));
        assert_eq!(dial_url("https://:9100"), Err(UrlError::MissingHost));
        assert_eq!(
            dial_url("https://c.example#top"),
            Err(UrlError::QueryOrFragment)
        );
        assert_eq!(
            dial_url("https://c.example?"),
            Err(UrlError::QueryOrFragment)
        );
        assert_eq!(dial_url("https://u:p@c.example"), Err(UrlError::UserInfo));
        assert_eq!(
            dial_url("https://c example"),
            Err(UrlError::InvalidCharacter)
        );
        assert_eq!(
            dial_url("https://c.example:abc"),
            Err(UrlError::InvalidPort("abc".to_owned()))
        );
        assert_eq!(
            dial_url("https://c.example:"),
            Err(UrlError::InvalidPort(String::new()))
        );
        assert_eq!(
            dial_url("https://c.example:0"),
            Err(UrlError::InvalidPort("0".to_owned()))
        );
        assert_eq!(
            dial_url("https://c.example:65536"),
            Err(UrlError::InvalidPort("65536".to_owned()))
        );
        assert_eq!(dial_url("https://[::1"), Err(UrlError::InvalidHost));
        assert_eq!(dial_url("https://[::1]x"), Err(UrlError::InvalidHost));
        assert_eq!(dial_url("https://[zz]"), Err(UrlError::InvalidHost));
    }

    #[test]
    fn error_text_names_the_reason_without_echoing_credentials() {
        assert_eq!(
            UrlError::MissingHost.to_string(),
            "relay url rejected: no host"
        );
        assert_eq!(
            dial_url("ftp://x").unwrap_err().to_string(),
            "relay url rejected: unsupported scheme \"ftp\" (expected ws, wss, http or https)"
        );
        let err = dial_url("https://user:hunter2@c.example").unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn relay_suffix_is_matched_on_the_whole_segment_only() {
        assert_eq!(dial_url("wss://relay").as_deref(), Ok("wss://relay/relay"));
        assert_eq!(
            dial_url("wss://c.example/myrelay").as_deref(),
            Ok("wss://c.example/myrelay/relay")
        );
        assert_eq!(
            dial_url("wss://c.example/relay/relay").as_deref(),
            Ok("wss://c.example/relay/relay")
        );
    }

    #[test]
    fn dial_target_defaults_ports_and_lowercases_host() {
        assert_eq!(
            dial_target("https://Connector.Example"),
            Some(DialTarget {
                scheme: Scheme::Wss,
                host: "connector.example".to_owned(),
                port: 443
            })
        );
        assert_eq!(
            dial_target("ws://127.0.0.1:9100/relay"),
            Some(DialTarget {
                scheme: Scheme::Ws,
                host: "127.0.0.1".to_owned(),
                port: 9100
            })
        );
        assert_eq!(
            dial_target("http://c.example/base"),
            Some(DialTarget {
                scheme: Scheme::Ws,
                host: "c.example".to_owned(),
                port: 80
            })
        );
        assert_eq!(
            dial_target("wss://[::1]:8443/relay"),
            Some(DialTarget {
                scheme: Scheme::Wss,
                host: "::1".to_owned(),
                port: 8443
            })
        );
        assert_eq!(dial_target("wss://[::1]").map(|t| t.port), Some(443));
        assert_eq!(dial_target("c.example"), None);
        assert_eq!(dial_target("ftp://c.example"), None);
        assert_eq!(Scheme::Wss.as_str(), "wss");
        assert_eq!(Scheme::Ws.as_str(), "ws");
    }

    #[test]
    fn dial_target_agrees_before_and_after_normalisation() {
        for configured in ["https://c.example:8443/base/", "HTTP://[::1]", "ws://h"] {
            let normalised = dial_url(configured).unwrap();
            assert_eq!(dial_target(configured), dial_target(&normalised));
        }
    }

    proptest! {
        #[test]
        fn normalisation_is_idempotent(
            scheme in prop_oneof![
                Just("http"), Just("https"), Just("ws"), Just("wss"),
                Just("HTTPS"), Just("Ws"), Just("ftp"), Just("")
            ],
            host in "[a-zA-Z0-9.-]{0,12}",
            port in proptest::option::of(0u32..70000),
            path in "(/[a-z]{0,5}){0,4}/{0,3}",
            pad in " {0,2}",
        ) {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let configured = format!("{pad}{scheme}://{host}{port}{path}{pad}");
            if let Ok(once) = dial_url(&configured) {
                prop_assert_eq!(dial_url(&once), Ok(once.clone()));
                prop_assert!(once.ends_with(RELAY_PATH));
                prop_assert!(once.starts_with("ws://") || once.starts_with("wss://"));
                prop_assert_eq!(dial_target(&configured), dial_target(&once));
            }
        }

        #[test]
        fn arbitrary_input_never_panics_and_output_is_fixed_point(raw in ".*") {
            if let Ok(once) = dial_url(&raw) {
                prop_assert_eq!(dial_url(&once), Ok(once.clone()));
                prop_assert!(dial_target(&once).is_some());
            }
        }
    }
}
