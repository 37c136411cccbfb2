//! Upgrade-token minting and verification (spec §5.2), written independently
//! of the adapter so that a shared misreading of the format cannot pass both
//! sides' tests. Verification follows the connector-side rules step by step.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Tokens travel unpadded, but "restore padding" in §5.2 means a padded
/// token must decode too, so padding is optional on decode.
const B64URL_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a bearer token was refused. [`AuthError::close_reason`] gives the
/// reason the stub puts on its 4401 close frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer …` header while secrets are configured.
    #[error("missing bearer token")]
    Missing,
    /// Not base64url, not UTF-8, fewer than three `:` parts, or `exp` not an integer.
    #[error("malformed token")]
    Malformed,
    /// `exp` is non-zero and `now > exp`.
    #[error("token expired")]
    Expired,
    /// The signature matches none of the configured secrets.
    #[error("bad signature")]
    BadSignature,
}

impl AuthError {
    /// The close reason sent with code 4401: `"expired"` for an expired
    /// token (the gateway treats that as "re-dial with a fresh token", never
    /// as a revocation, §5.4), `"unauthorized"` otherwise.
    pub fn close_reason(&self) -> &'static str {
        match self {
            AuthError::Expired => "expired",
            _ => "unauthorized",
        }
    }
}

/// The HMAC signature over `payload:exp`, as lowercase hex.
pub fn sign(secret: &str, payload: &str, exp: i64) -> String {
    mac_over(secret.as_bytes(), payload, exp)
        .map(|mac| to_hex(&mac.finalize().into_bytes()))
        .unwrap_or_default()
}

/// Mints a bearer token the way a gateway does: `exp = now + ttl`, or the
/// literal `0` ("never expires") when `ttl <= 0`.
pub fn mint_token(gateway_id: &str, secret: &str, now: u64, ttl: i64) -> String {
    let exp = if ttl <= 0 {
        0
    } else {
        i64::try_from(now).unwrap_or(i64::MAX).saturating_add(ttl)
    };
    let sig = sign(secret, gateway_id, exp);
    B64URL_LENIENT.encode(format!("{gateway_id}:{exp}:{sig}"))
}

/// Verifies a token against a rotation list (primary first) at `now` (unix
/// seconds) and returns the payload (the gateway id) on success.
///
/// Expiry is checked before the signature, as in §5.2, so an expired token
/// reports [`AuthError::Expired`] whatever its signature.
pub fn verify_token<S: AsRef<str>>(
    token: &str,
    secrets: &[S],
    now: u64,
) -> Result<String, AuthError> {
    let raw = B64URL_LENIENT
        .decode(token.trim())
        .map_err(|_| AuthError::Malformed)?;
    let text = String::from_utf8(raw).map_err(|_| AuthError::Malformed)?;
    let mut parts: Vec<&str> = text.split(':').collect();
    if parts.len() < 3 {
        return Err(AuthError::Malformed);
    }
    let sig = parts.pop().unwrap_or_default();
    let exp_text = parts.pop().unwrap_or_default();
    let exp: i64 = exp_text.parse().map_err(|_| AuthError::Malformed)?;
    let payload = parts.join(":");

    let now = i64::try_from(now).unwrap_or(i64::MAX);
    if exp != 0 && now > exp {
        return Err(AuthError::Expired);
    }
    let Some(sig_bytes) = from_hex(sig) else {
        return Err(AuthError::BadSignature);
    };
    if sig_bytes.is_empty() {
        return Err(AuthError::BadSignature);
    }
    for secret in secrets.iter().map(AsRef::as_ref) {
        if secret.is_empty() {
            continue;
        }
        // verify_slice compares in constant time and rejects a length mismatch.
        let Some(mac) = mac_over(secret.as_bytes(), &payload, exp) else {
            continue;
        };
        if mac.verify_slice(&sig_bytes).is_ok() {
            return Ok(payload);
        }
    }
    Err(AuthError::BadSignature)
}

/// Extracts the token from an `Authorization` header value (`Bearer <t>`,
/// scheme case-insensitive).
pub fn bearer_token(header_value: &str) -> Option<&str> {
    let (scheme, rest) = header_value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    (!token.is_empty()).then_some(token)
}

/// `None` cannot happen for HMAC (any key length is valid), but the API
/// is fallible, and a refusal is the safe reading of an impossible error.
fn mac_over(key: &[u8], payload: &str, exp: i64) -> Option<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(key).ok()?;
    mac.update(payload.as_bytes());
    mac.update(b":");
    mac.update(exp.to_string().as_bytes());
    Some(mac)
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let hi = char::from(pair[0]).to_digit(16)?;
            let lo = char::from(pair[1]).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_TOKEN: &str = "Z3ctdGVzdDoxNzAwMDAwMzAwOmZkMGI1YmUzYTMxMDNhNDU0YWEwMDkyYmM3NjU4OWZmZjAwY2ZjYWQ3YjFiMmI4Njk4ZTVkMjgyZTc2YThiOTc";
    const V2_TOKEN: &str = "Z3ctaGVybWVzLTAxOjE3MzU2ODk5MDA6MmM3NTdiOWY4NGVjN2I2YTU5MTBjY2ExYzJjNWFiMDkwOTYyNDBmY2YyNjU3ODRiNTE2OGVmM2Y5MDE0ZGUxYg";
    const V3_TOKEN: &str = "dGVuYW50Omd3OjQyOjA6Y2UyOTE1YzRmZWE2ZDBlZjczN2FiNjQ0YTVkZDRjYjg4ODg5MzRjMTI5ZTZhMzdkYjE3NTkyMGNmNzk5MDg3Nw";
    const V2_SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn vectors_sign_and_mint_byte_for_byte() {
        assert_eq!(
            sign("s3cret", "gw-test", 1_700_000_300),
            "fd0b5be3a3103a454aa0092bc76589fff00cfcad7b1b2b8698e5d282e76a8b97"
        );
        assert_eq!(
            mint_token("gw-test", "s3cret", 1_700_000_000, 300),
            V1_TOKEN
        );
        assert_eq!(
            mint_token("gw-hermes-01", V2_SECRET, 1_735_689_600, 300),
            V2_TOKEN
        );
        assert_eq!(mint_token("tenant:gw:42", "pässwörd🔑", 5, 0), V3_TOKEN);
    }

    #[test]
    fn vector_one_expires_strictly_after_exp() {
        assert_eq!(
            verify_token(V1_TOKEN, &["s3cret"], 1_700_000_300).as_deref(),
            Ok("gw-test")
        );
        assert_eq!(
            verify_token(V1_TOKEN, &["s3cret"], 1_700_000_301),
            Err(AuthError::Expired)
        );
    }

    #[test]
    fn vector_two_verifies_with_ascii_key_not_hex_decoded() {
        assert_eq!(
            verify_token(V2_TOKEN, &[V2_SECRET], 1_735_689_900).as_deref(),
            Ok("gw-hermes-01")
        );
    }

    #[test]
    fn vector_three_keeps_colons_and_rotates_secrets() {
        assert_eq!(
            verify_token(V3_TOKEN, &["wrong", "pässwörd🔑"], u64::MAX).as_deref(),
            Ok("tenant:gw:42")
        );
        assert_eq!(
            verify_token(V3_TOKEN, &["wrong"], 0),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn padded_token_is_accepted() {
        let padded = format!("{V1_TOKEN}=");
        assert!(verify_token(&padded, &["s3cret"], 1_700_000_000).is_ok());
    }

    #[test]
    fn rejects_malformed_tampered_and_empty_secret_lists() {
        assert_eq!(
            verify_token("!!!", &["s3cret"], 0),
            Err(AuthError::Malformed)
        );
        let two_parts = B64URL_LENIENT.encode("gw:1");
        assert_eq!(
            verify_token(&two_parts, &["s"], 0),
            Err(AuthError::Malformed)
        );
        let bad_exp = B64URL_LENIENT.encode("gw:soon:abcd");
        assert_eq!(verify_token(&bad_exp, &["s"], 0), Err(AuthError::Malformed));
        // Same signature, different payload.
        let sig = sign("s3cret", "gw-test", 0);
        let tampered = B64URL_LENIENT.encode(format!("gw-evil:0:{sig}"));
        assert_eq!(
            verify_token(&tampered, &["s3cret"], 0),
            Err(AuthError::BadSignature)
        );
        let not_hex = B64URL_LENIENT.encode("gw:0:zz");
        assert_eq!(
            verify_token(&not_hex, &["s"], 0),
            Err(AuthError::BadSignature)
        );
        let empty_sig = B64URL_LENIENT.encode("gw:0:");
        assert_eq!(
            verify_token(&empty_sig, &["s"], 0),
            Err(AuthError::BadSignature)
        );
        let good = mint_token("gw", "s", 0, 0);
        assert_eq!(verify_token(&good, &[""], 0), Err(AuthError::BadSignature));
        let short_sig = B64URL_LENIENT.encode(format!("gw:0:{}", &sign("s", "gw", 0)[..10]));
        assert_eq!(
            verify_token(&short_sig, &["s"], 0),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(AuthError::Expired.close_reason(), "expired");
        assert_eq!(AuthError::BadSignature.close_reason(), "unauthorized");
    }
}
