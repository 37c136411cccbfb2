//! Upgrade-token minting for the gateway's `Authorization: Bearer` header (§5).
//! Time comes in as a parameter; this module never reads a clock, and the
//! secret never appears in any Debug or Display output.

use std::fmt;
use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Default lifetime of an upgrade token, in seconds (§5.2).
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 300; // §5.2

/// The `exp` value of a token that never expires (minted with ttl ≤ 0, §5.2).
pub const NEVER_EXPIRES: u64 = 0; // §5.2

/// Name of the upgrade header carrying the token (§1.3).
pub const AUTHORIZATION_HEADER: &str = "Authorization"; // §1.3, §5.2

/// Scheme prefix of the header value, including the separating space (§5.2).
pub const BEARER_PREFIX: &str = "Bearer "; // §5.2

type HmacSha256 = Hmac<Sha256>;

/// The per-gateway relay secret (§5.1).
///
/// Debug and Display print `Secret(<redacted>)`. The value is only reachable
/// through [`Secret::expose`], which the token signer uses as the HMAC key.
/// Deliberately not `PartialEq`: comparing secrets is the verifier's job and
/// needs a constant-time comparison.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret exactly as given (no trimming).
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Wraps a configured secret the way credential loading does (§5.1):
    /// surrounding whitespace removed.
    pub fn from_config(value: &str) -> Self {
        Self(value.trim().to_owned())
    }

    /// Usable-secret rule (§5.1): at least one non-whitespace character.
    /// Empty and whitespace-only values look like an unset key and are unusable.
    pub fn is_usable(&self) -> bool {
        self.0.chars().any(|c| !c.is_whitespace())
    }

    /// The secret text. Only for keying the HMAC; never log or format it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The `exp` field of a token minted at `now_unix_secs` (§5.2).
///
/// `now_unix_secs` is whole Unix seconds: pass the integer part of the clock
/// (e.g. `Duration::as_secs`), which is Python's `int(time.time())`.
/// `ttl_secs` is signed so that "ttl ≤ 0 means never expires" can be said:
/// then the result is [`NEVER_EXPIRES`] (`0`). Otherwise `now + ttl`,
/// saturating at `u64::MAX`.
pub fn token_expiry(now_unix_secs: u64, ttl_secs: i64) -> u64 {
    match u64::try_from(ttl_secs) {
        Ok(ttl) if ttl > 0 => now_unix_secs.saturating_add(ttl),
        _ => NEVER_EXPIRES,
    }
}

/// Lowercase hex HMAC-SHA256 of `gateway_id ":" exp`, keyed by the secret's
/// UTF-8 bytes as-is (never hex-decoded) — the `sig` part of §5.2 (64 chars).
pub fn token_signature(gateway_id: &str, secret: &Secret, exp: u64) -> String {
    // HMAC accepts keys of any length, so key setup cannot fail. Were it to,
    // the signature would be empty and the connector would reject the token
    // (fail closed) rather than this code panicking.
    let Ok(mut mac) = HmacSha256::new_from_slice(secret.expose().as_bytes()) else {
        return String::new();
    };
    mac.update(gateway_id.as_bytes());
    mac.update(b":");
    mac.update(exp.to_string().as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest {
        // Writing into a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// Mints an upgrade token (§5.2):
/// `base64url_nopad(gateway_id ":" exp ":" sig)`.
///
/// `gateway_id` is used verbatim (it may contain `:`); `exp` comes from
/// [`token_expiry`] (`0` = never expires).
pub fn mint_token(gateway_id: &str, secret: &Secret, exp: u64) -> String {
    let sig = token_signature(gateway_id, secret, exp);
    let raw = format!("{gateway_id}:{exp}:{sig}");
    URL_SAFE_NO_PAD.encode(raw.as_bytes())
}

/// The upgrade header `("Authorization", "Bearer <token>")`, minted fresh
/// for a dial at `now_unix_secs` with `ttl_secs` (§1.3, §5.2).
///
/// `None` (dial unauthenticated) unless the gateway id is non-empty after
/// trimming **and** the secret is usable (§5.1). The trimmed gateway id is
/// the token payload; the secret is used as given (trim it at load time, see
/// [`Secret::from_config`]).
pub fn bearer_header(
    gateway_id: &str,
    secret: &Secret,
    now_unix_secs: u64,
    ttl_secs: i64,
) -> Option<(String, String)> {
    let gateway_id = gateway_id.trim();
    if gateway_id.is_empty() || !secret.is_usable() {
        return None;
    }
    let exp = token_expiry(now_unix_secs, ttl_secs);
    let token = mint_token(gateway_id, secret, exp);
    Some((
        AUTHORIZATION_HEADER.to_owned(),
        format!("{BEARER_PREFIX}{token}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const TTL: i64 = DEFAULT_TOKEN_TTL_SECS as i64;

    /// Test-only decoder following the connector's verification rules (§5.2):
    /// returns the payload when the token is valid at `now`.
    fn verify(token: &str, secrets: &[&str], now: u64) -> Option<String> {
        let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let mut parts: Vec<&str> = raw.split(':').collect();
        if parts.len() < 3 {
            return None;
        }
        let sig = parts.pop()?;
        let exp: u64 = parts.pop()?.parse().ok()?;
        let payload = parts.join(":");
        if exp != 0 && now > exp {
            return None;
        }
        secrets
            .iter()
            .filter(|s| !s.is_empty())
            .any(|s| token_signature(&payload, &Secret::new(*s), exp) == sig)
            .then_some(payload)
    }

    fn decoded(token: &str) -> String {
        String::from_utf8(URL_SAFE_NO_PAD.decode(token).unwrap()).unwrap()
    }

    #[test]
    fn vector_1_matches_byte_for_byte() {
        let secret = Secret::new("s3cret");
        let exp = token_expiry(1_700_000_000, TTL);
        assert_eq!(exp, 1_700_000_300);
        let sig = token_signature("gw-test", &secret, exp);
        assert_eq!(
            sig,
            "fd0b5be3a3103a454aa0092bc76589fff00cfcad7b1b2b8698e5d282e76a8b97"
        );
        let token = mint_token("gw-test", &secret, exp);
        let raw = decoded(&token);
        assert_eq!(
            raw,
            "gw-test:1700000300:fd0b5be3a3103a454aa0092bc76589fff00cfcad7b1b2b8698e5d282e76a8b97"
        );
        assert_eq!(raw.len(), 83);
        assert_eq!(
            token,
            "Z3ctdGVzdDoxNzAwMDAwMzAwOmZkMGI1YmUzYTMxMDNhNDU0YWEwMDkyYmM3NjU4OWZmZjAwY2ZjYWQ3YjFiMmI4Njk4ZTVkMjgyZTc2YThiOTc"
        );
        let (name, value) = bearer_header("gw-test", &secret, 1_700_000_000, TTL).unwrap();
        assert_eq!(
            format!("{name}: {value}"),
            "Authorization: Bearer Z3ctdGVzdDoxNzAwMDAwMzAwOmZkMGI1YmUzYTMxMDNhNDU0YWEwMDkyYmM3NjU4OWZmZjAwY2ZjYWQ3YjFiMmI4Njk4ZTVkMjgyZTc2YThiOTc"
        );
        assert_eq!(
            verify(&token, &["s3cret"], 1_700_000_300).as_deref(),
            Some("gw-test")
        );
        assert_eq!(verify(&token, &["s3cret"], 1_700_000_301), None);
    }

    #[test]
    fn vector_2_uses_hex_looking_secret_as_ascii_bytes() {
        let secret =
            Secret::new("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
        let exp = token_expiry(1_735_689_600, TTL);
        assert_eq!(exp, 1_735_689_900);
        assert_eq!(
            token_signature("gw-hermes-01", &secret, exp),
            "2c757b9f84ec7b6a5910cca1c2c5ab09096240fcf265784b5168ef3f9014de1b"
        );
        let token = mint_token("gw-hermes-01", &secret, exp);
        let raw = decoded(&token);
        assert_eq!(
            raw,
            "gw-hermes-01:1735689900:2c757b9f84ec7b6a5910cca1c2c5ab09096240fcf265784b5168ef3f9014de1b"
        );
        assert_eq!(raw.len(), 88);
        assert_eq!(
            token,
            "Z3ctaGVybWVzLTAxOjE3MzU2ODk5MDA6MmM3NTdiOWY4NGVjN2I2YTU5MTBjY2ExYzJjNWFiMDkwOTYyNDBmY2YyNjU3ODRiNTE2OGVmM2Y5MDE0ZGUxYg"
        );
    }

    #[test]
    fn vector_3_colon_payload_non_ascii_secret_never_expires() {
        let secret = Secret::new("pässwörd🔑");
        assert_eq!(
            secret.expose().as_bytes(),
            [
                0x70, 0xc3, 0xa4, 0x73, 0x73, 0x77, 0xc3, 0xb6, 0x72, 0x64, 0xf0, 0x9f, 0x94, 0x91
            ]
        );
        let exp = token_expiry(1_700_000_000, 0);
        assert_eq!(exp, NEVER_EXPIRES);
        assert_eq!(
            token_signature("tenant:gw:42", &secret, exp),
            "ce2915c4fea6d0ef737ab644a5dd4cb8888934c129e6a37db175920cf7990877"
        );
        let token = mint_token("tenant:gw:42", &secret, exp);
        let raw = decoded(&token);
        assert_eq!(
            raw,
            "tenant:gw:42:0:ce2915c4fea6d0ef737ab644a5dd4cb8888934c129e6a37db175920cf7990877"
        );
        assert_eq!(raw.len(), 79);
        assert_eq!(
            token,
            "dGVuYW50Omd3OjQyOjA6Y2UyOTE1YzRmZWE2ZDBlZjczN2FiNjQ0YTVkZDRjYjg4ODg5MzRjMTI5ZTZhMzdkYjE3NTkyMGNmNzk5MDg3Nw"
        );
        assert_eq!(
            verify(&token, &["wrong", "pässwörd🔑"], u64::MAX).as_deref(),
            Some("tenant:gw:42")
        );
    }

    #[test]
    fn fractional_clock_uses_the_integer_part() {
        let now = Duration::from_millis(1_700_000_000_700).as_secs();
        assert_eq!(token_expiry(now, TTL), 1_700_000_300);
    }

    #[test]
    fn non_positive_ttl_never_expires_and_huge_ttl_saturates() {
        assert_eq!(token_expiry(1_700_000_000, 0), 0);
        assert_eq!(token_expiry(1_700_000_000, -1), 0);
        assert_eq!(token_expiry(1_700_000_000, i64::MIN), 0);
        assert_eq!(token_expiry(u64::MAX - 1, i64::MAX), u64::MAX);
    }

    #[test]
    fn header_only_with_gateway_id_and_usable_secret() {
        let good = Secret::new("s3cret");
        assert!(bearer_header("gw-test", &good, 0, TTL).is_some());
        for unusable in ["", " ", "\t\n  \r"] {
            let secret = Secret::new(unusable);
            assert!(!secret.is_usable(), "{unusable:?}");
            assert_eq!(bearer_header("gw-test", &secret, 0, TTL), None);
        }
        assert_eq!(bearer_header("", &good, 0, TTL), None);
        assert_eq!(bearer_header("   ", &good, 0, TTL), None);
        assert!(Secret::default().expose().is_empty());
        assert!(!Secret::default().is_usable());
    }

    #[test]
    fn header_trims_the_gateway_id() {
        let secret = Secret::new("s3cret");
        assert_eq!(
            bearer_header("  gw-test \n", &secret, 1_700_000_000, TTL),
            bearer_header("gw-test", &secret, 1_700_000_000, TTL)
        );
    }

    #[test]
    fn config_secret_is_trimmed_at_load() {
        assert_eq!(Secret::from_config("  s3cret\n").expose(), "s3cret");
        assert!(!Secret::from_config("  \n").is_usable());
    }

    #[test]
    fn debug_and_display_never_show_the_secret() {
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Credentials {
            gateway_id: String,
            secret: Secret,
        }
        let creds = Credentials {
            gateway_id: "gw-test".to_owned(),
            secret: Secret::from("hunter2-top-secret"),
        };
        for text in [
            format!("{creds:?}"),
            format!("{creds:#?}"),
            format!("{}", creds.secret),
            format!("{:?}", creds.secret),
        ] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("Secret(<redacted>)"), "{text}");
        }
    }
}
