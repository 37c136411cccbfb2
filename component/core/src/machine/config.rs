//! The adapter's configuration: identities, connector, credentials, and
//! every timer and bound with the spec's default (§10.15, §10.16).
//!
//! Durations are milliseconds so tests can run the whole protocol at
//! millisecond scale. The secret never appears in `Debug` output.

use crate::auth::Secret;

/// One (platform, bot id) pair the gateway fronts; one `hello` each (§2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Platform name (`discord`, `telegram`, ...).
    pub platform: String,
    /// Bot or app id; may be empty.
    pub bot_id: String,
}

impl Identity {
    /// An identity.
    pub fn new(platform: impl Into<String>, bot_id: impl Into<String>) -> Identity {
        Identity {
            platform: platform.into(),
            bot_id: bot_id.into(),
        }
    }
}

/// Platform of the single identity used when none is configured (§2.2).
pub const DEFAULT_IDENTITY_PLATFORM: &str = "relay";
/// Wait for the first descriptor of a dial (§1.4).
pub const HANDSHAKE_TIMEOUT_MS: u64 = 30_000;
/// Wait for an `outbound_result` (§1.6).
pub const OUTBOUND_TIMEOUT_MS: u64 = 30_000;
/// First rung of the reconnect ladder (§6.19).
pub const RECONNECT_INITIAL_MS: u64 = 1_000;
/// Cap of the reconnect ladder (§6.19).
pub const RECONNECT_MAX_MS: u64 = 30_000;
/// A connection shorter than this counts as a failed attempt (§6.19).
pub const STABLE_CONNECTION_MS: u64 = 10_000;
/// Re-dial cadence after going dormant (§6.18).
pub const DORMANT_REDIAL_MS: u64 = 1_000;
/// A redial hold expires after this (§6.18, `REDIAL_HOLD_MAX_S`).
pub const REDIAL_HOLD_MAX_MS: u64 = 60_000;
/// Wait for `going_idle_ack` on the drain path (§6.17).
pub const GOING_IDLE_TIMEOUT_MS: u64 = 2_000;
/// Grace for in-flight requests on shutdown: `min(5, 5 - 3.5)` s (§6.17).
pub const DRAIN_GRACE_MS: u64 = 1_500;
/// Outbound requests awaiting a result before new ones fail fast.
pub const MAX_PENDING: usize = 1_024;
/// Deliveries awaiting the gateway's verdict before the adapter sheds load.
pub const MAX_UNDELIVERED: usize = 256;
/// Replay dedupe memory (§6.2).
pub const SEEN_CAPACITY: usize = 512;

/// Everything the machine needs. `Config::new` gives the spec defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// Identities in order; empty means one `relay` / "" identity.
    pub identities: Vec<Identity>,
    /// The connector base URL as configured (normalised per §1.2).
    pub connector_url: String,
    /// Gateway id for the upgrade bearer.
    pub gateway_id: String,
    /// Per-gateway secret; redacted in `Debug`.
    pub secret: Secret,
    /// Token lifetime in seconds; 0 or less mints non-expiring tokens.
    pub token_ttl_secs: i64,
    /// See [`HANDSHAKE_TIMEOUT_MS`].
    pub handshake_timeout_ms: u64,
    /// See [`OUTBOUND_TIMEOUT_MS`].
    pub outbound_timeout_ms: u64,
    /// Re-dial after an unexpected close.
    pub reconnect: bool,
    /// See [`RECONNECT_INITIAL_MS`].
    pub reconnect_initial_ms: u64,
    /// See [`RECONNECT_MAX_MS`].
    pub reconnect_max_ms: u64,
    /// `None`: each wait is uniform in [rung/2, rung]; `Some(f)`: exactly
    /// `f * rung` (f clamped to [0, 1]), for tests.
    pub reconnect_jitter: Option<f64>,
    /// See [`STABLE_CONNECTION_MS`].
    pub stable_connection_ms: u64,
    /// See [`DORMANT_REDIAL_MS`].
    pub dormant_redial_ms: u64,
    /// See [`REDIAL_HOLD_MAX_MS`].
    pub redial_hold_max_ms: u64,
    /// See [`GOING_IDLE_TIMEOUT_MS`].
    pub going_idle_timeout_ms: u64,
    /// See [`DRAIN_GRACE_MS`].
    pub drain_grace_ms: u64,
    /// See [`MAX_PENDING`].
    pub max_pending: usize,
    /// See [`MAX_UNDELIVERED`].
    pub max_undelivered: usize,
    /// See [`SEEN_CAPACITY`].
    pub seen_capacity: usize,
    /// Routing cache size, see [`crate::routing::DEFAULT_ROUTE_CAPACITY`].
    pub route_capacity: usize,
    /// Longest line in bytes, see [`crate::line::DEFAULT_MAX_LINE_BYTES`].
    pub max_line_bytes: usize,
    /// Stamp events `delivered_via_upstream_relay` (true) or
    /// `delivered_via_relay` (false, a local non-authorizing connector).
    pub authorization_is_upstream: bool,
    /// The operator's per-platform egress knobs as a JSON object (the
    /// gateway's `platforms.relay.extra`), `""` for none (§6.6.3, §6.6.4).
    pub platform_extra: String,
    /// This adapter's prompt-id nonce: 6 lowercase hex digits the host
    /// chooses once per spawned adapter, so ids survive guest restarts
    /// (§6.11); `""` draws one at start.
    pub prompt_nonce: String,
    /// The gateway's Discord slash commands as a JSON array (§9.6), sent on
    /// the Discord `hello` after validation ([`crate::manifest::parse`]);
    /// `""` for none.
    pub command_manifest: String,
    /// The host's media client and the media plane's bounds (§9.1).
    pub media: super::MediaConfig,
}

impl Config {
    /// A configuration for `connector_url` with every default.
    pub fn new(connector_url: impl Into<String>) -> Config {
        Config {
            identities: Vec::new(),
            connector_url: connector_url.into(),
            gateway_id: String::new(),
            secret: Secret::default(),
            token_ttl_secs: crate::auth::DEFAULT_TOKEN_TTL_SECS as i64,
            handshake_timeout_ms: HANDSHAKE_TIMEOUT_MS,
            outbound_timeout_ms: OUTBOUND_TIMEOUT_MS,
            reconnect: true,
            reconnect_initial_ms: RECONNECT_INITIAL_MS,
            reconnect_max_ms: RECONNECT_MAX_MS,
            reconnect_jitter: None,
            stable_connection_ms: STABLE_CONNECTION_MS,
            dormant_redial_ms: DORMANT_REDIAL_MS,
            redial_hold_max_ms: REDIAL_HOLD_MAX_MS,
            going_idle_timeout_ms: GOING_IDLE_TIMEOUT_MS,
            drain_grace_ms: DRAIN_GRACE_MS,
            max_pending: MAX_PENDING,
            max_undelivered: MAX_UNDELIVERED,
            seen_capacity: SEEN_CAPACITY,
            route_capacity: crate::routing::DEFAULT_ROUTE_CAPACITY,
            max_line_bytes: crate::line::DEFAULT_MAX_LINE_BYTES,
            authorization_is_upstream: true,
            platform_extra: String::new(),
            prompt_nonce: String::new(),
            command_manifest: String::new(),
            media: super::MediaConfig::default(),
        }
    }

    /// The identities to announce: the configured ones, or `relay` / "".
    pub fn effective_identities(&self) -> Vec<Identity> {
        if self.identities.is_empty() {
            vec![Identity::new(DEFAULT_IDENTITY_PLATFORM, "")]
        } else {
            self.identities.clone()
        }
    }
}
