//! The security rules the host enforces on the component's media requests,
//! because only the host sees real addresses: which URLs may be asked for,
//! where credentials may go, and which addresses a foreign origin may reach
//! (no SSRF into loopback, the LAN or the cloud metadata service).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::types::Origin;

/// Whether a foreign origin may not connect to `ip`: loopback, private,
/// link-local, shared (CGNAT), unspecified, broadcast, multicast,
/// documentation, benchmark and reserved IPv4 ranges, and the IPv6
/// equivalents, including every form that embeds an IPv4 address
/// (IPv4-mapped, IPv4-compatible, NAT64), since those reach IPv4 hosts the
/// IPv4 check would have refused.
pub fn refused_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn refused_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0 // "this network", 0.0.0.0/8
        || a == 10 // private
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT), 100.64/10
        || a == 127 // loopback
        || (a == 169 && b == 254) // link-local, cloud metadata services
        || (a == 172 && (16..32).contains(&b)) // private
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments, 192.0.0/24
        || (a == 192 && b == 0 && c == 2) // TEST-NET-1
        || (a == 192 && b == 168) // private
        || (a == 198 && (b == 18 || b == 19)) // benchmarking, 198.18/15
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || a >= 224 // multicast 224/4, reserved 240/4, broadcast
}

fn refused_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    ip.is_unspecified()
        || ip.is_loopback()
        || (s[0] & 0xfe00) == 0xfc00 // unique local, fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local, fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // deprecated site-local, fec0::/10
        || (s[0] & 0xff00) == 0xff00 // multicast
        || (s[..5] == [0; 5] && (s[5] == 0 || s[5] == 0xffff)) // IPv4-compatible ::/96, IPv4-mapped ::ffff:0:0/96
        || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] // NAT64, 64:ff9b::/96
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation, 2001:db8::/32
}

/// The URL as sent: parsed with reqwest's parser, `http`/`https` only, and
/// without user info (reqwest would turn `user:pass@` into a Basic
/// `Authorization` header, a credential this module did not vet).
pub(crate) fn parse_url(url: &str) -> Result<(Url, Origin), String> {
    let parsed = Url::parse(url).map_err(|e| format!("invalid url: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "refused: scheme {:?} (only http and https)",
            parsed.scheme()
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("refused: credentials in the url".to_owned());
    }
    let origin = Origin::of_url(url).ok_or_else(|| "invalid url: no host".to_owned())?;
    Ok((parsed, origin))
}

/// Header names that carry credentials: they go to the connector origin
/// only.
pub(crate) fn is_credential(name: &str) -> bool {
    name.eq_ignore_ascii_case("authorization") || name.eq_ignore_ascii_case("proxy-authorization")
}

/// Refuses credentials for any origin but the connector's. The message
/// names the header, never its value.
pub(crate) fn check_credentials(
    headers: &[(String, String)],
    origin: &Origin,
    connector: &Origin,
) -> Result<(), String> {
    if origin == connector {
        return Ok(());
    }
    match headers.iter().find(|(name, _)| is_credential(name)) {
        Some((name, _)) => Err(format!(
            "refused: {} header for {origin}, which is not the connector origin",
            name.to_ascii_lowercase()
        )),
        None => Ok(()),
    }
}

/// An IP-literal host never reaches the resolver (the connector parses it
/// and dials it directly), so it is checked here before sending.
pub(crate) fn check_literal(url: &Url) -> Result<(), String> {
    let Some(raw) = url.host_str() else {
        return Ok(());
    };
    let bare = raw
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(raw);
    match bare.parse::<IpAddr>() {
        Ok(ip) if refused_ip(ip) => Err(format!(
            "refused: {ip} is a loopback, private or reserved address"
        )),
        _ => Ok(()),
    }
}

/// The resolver of the client for foreign origins: the system resolver
/// (through tokio), minus every refused address. The connection is made to
/// the addresses returned here, so a name cannot pass the check with one
/// answer and connect to another (DNS rebinding).
#[derive(Debug, Default)]
pub(crate) struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| format!("cannot resolve {host}: {e}"))?;
            let allowed: Vec<SocketAddr> = found.filter(|addr| !refused_ip(addr.ip())).collect();
            if allowed.is_empty() {
                return Err(format!(
                    "refused: {host} resolves to no public address (loopback, private or reserved only)"
                )
                .into());
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}
