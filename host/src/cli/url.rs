//! Early validation of the connector URL with the component's rules
//! (`relay-core` `url::dial_url`, spec §1.2 made strict): trim; scheme
//! `http`/`https`/`ws`/`wss` in any case (`http`→`ws`, `https`→`wss`); no
//! query or fragment; no userinfo; a host (name or bracketed IPv6) and an
//! optional port 1..=65535; trailing `/` removed and `/relay` appended.
//!
//! The component validates again in `start` (a refusal there is also exit
//! 2); this copy only lets the CLI fail before compiling the component, with
//! a message naming the flag. Messages never echo the URL.

/// The WebSocket URL the adapter dials for `configured`, or why not.
pub fn dial_url(configured: &str) -> Result<String, String> {
    let trimmed = configured.trim();
    if trimmed.is_empty() {
        return Err("empty".into());
    }
    if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace or a control character".into());
    }
    let Some((scheme_text, rest)) = trimmed.split_once("://") else {
        return Err("no scheme (expected ws://, wss://, http:// or https://)".into());
    };
    let scheme = match scheme_text.to_ascii_lowercase().as_str() {
        "" => return Err("no scheme (expected ws://, wss://, http:// or https://)".into()),
        "https" | "wss" => "wss",
        "http" | "ws" => "ws",
        other => {
            return Err(format!(
                "unsupported scheme {other:?} (expected ws, wss, http or https)"
            ));
        }
    };
    if rest.contains(['?', '#']) {
        return Err("query strings and fragments are not allowed".into());
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err("credentials in the url are not allowed".into());
    }
    check_authority(authority)?;
    let rest = rest.trim_end_matches('/');
    let mut out = format!("{scheme}://{rest}");
    if !rest.ends_with("/relay") {
        out.push_str("/relay");
    }
    Ok(out)
}

fn check_authority(authority: &str) -> Result<(), String> {
    let port = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| "malformed host".to_string())?;
        if host.is_empty() {
            return Err("no host".into());
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err("malformed host".into());
        }
        match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| "malformed host".to_string())?,
            ),
        }
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if host.is_empty() {
            return Err("no host".into());
        }
        if host.contains(['[', ']']) {
            return Err("malformed host".into());
        }
        port
    };
    if let Some(text) = port {
        let valid = !text.is_empty()
            && text.bytes().all(|b| b.is_ascii_digit())
            && matches!(text.parse::<u16>(), Ok(p) if p != 0);
        if !valid {
            return Err(format!("invalid port {text:?}"));
        }
    }
    Ok(())
}
