//! Host-side configuration of one adapter: the WIT `config` record with
//! documented defaults, plus the sandbox and socket limits the host enforces.
//! Secrets are wrapped in [`Secret`] so no `Debug` output ever shows them.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A secret string (the per-gateway HMAC key). `Debug` prints `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value; only for handing it to the component.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_string())
    }
}

/// One (platform, bot id) identity the gateway fronts; one `hello` each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Platform name sent in `hello` (`discord`, `telegram`, `relay`, ...).
    pub platform: String,
    /// Bot or app id for that platform; may be empty.
    pub bot_id: String,
}

impl Identity {
    /// An identity for `platform` with bot id `bot_id`.
    pub fn new(platform: impl Into<String>, bot_id: impl Into<String>) -> Self {
        Self {
            platform: platform.into(),
            bot_id: bot_id.into(),
        }
    }
}

/// Everything one adapter needs: the component's configuration (mirrors the
/// WIT `config` record, with durations as [`Duration`]) and the host limits.
#[derive(Debug, Clone)]
pub struct AdapterConfig {
    /// Identities in order; the first is the session default. Empty means one
    /// identity `relay` / "".
    pub identities: Vec<Identity>,
    /// The connector's base URL as configured (the component normalises it,
    /// spec §1.2). The host only dials this URL's scheme, host and port.
    pub connector_url: String,
    /// Gateway id for the upgrade bearer; empty for unauthenticated dials.
    pub gateway_id: String,
    /// Per-gateway secret (HMAC key). Never logged.
    pub secret: Option<Secret>,
    /// Upgrade token lifetime in seconds (spec §1.3: tokens expire after 300 s).
    pub token_ttl_secs: i64,
    /// Wait for the first descriptor after the socket opens (spec §1.4: 30 s).
    pub handshake_timeout: Duration,
    /// Wait for an `outbound_result` before "timed out" (spec §1.6: 30 s).
    pub outbound_timeout: Duration,
    /// Re-dial after an unexpected close (spec §6.19: on in production).
    pub reconnect: bool,
    /// First rung of the reconnect ladder (spec §6.19: 1 s).
    pub reconnect_initial: Duration,
    /// Cap of the reconnect ladder (spec §6.19: 30 s).
    pub reconnect_max: Duration,
    /// `None` draws uniformly in [rung/2, rung]; `Some(f)` pins the wait to `f * rung`.
    pub reconnect_jitter: Option<f64>,
    /// A connection that dropped sooner counts as a failed attempt (default 10 s).
    pub stable_connection: Duration,
    /// Re-dial cadence after `go-dormant` (spec §6.18: 1 s).
    pub dormant_redial: Duration,
    /// `hold-redial` expires after this long (spec §6.18: 60 s).
    pub redial_hold_max: Duration,
    /// Wait for `going_idle_ack` on shutdown and `go-dormant` (spec §6.17: 2 s).
    pub going_idle_timeout: Duration,
    /// On shutdown, how long pending requests may still finish (spec §6.17: 1.5 s).
    pub drain_grace: Duration,
    /// Outbound requests awaiting a result (default 1024). A request made
    /// while this many await theirs waits for a free slot, in FIFO order
    /// (see [`admission_timeout`](Self::admission_timeout)); it is never
    /// refused for being one too many.
    pub max_pending: u32,
    /// How long a request (`send`, `edit`, `typing`, `follow_up`,
    /// `get_chat_info`, `raw_action`) waits for a slot when `max_pending`
    /// requests already await their results (default 60 s). Past it the
    /// request fails definitely (nothing sent) with
    /// [`AdapterError::AdmissionTimedOut`](crate::AdapterError::AdmissionTimedOut)
    /// (as a `SendResult`, `ambiguous: false`). Per call:
    /// [`AdapterHandle::with_admission_timeout`](crate::AdapterHandle::with_admission_timeout).
    pub admission_timeout: Duration,
    /// Deliveries awaiting the gateway's accept/reject (default 256). At the
    /// limit the adapter sends `going_idle` so the connector buffers; live
    /// messages still arrive, buffered replays past the limit stay unacked
    /// (the connector keeps them), and once the backlog is at half the limit
    /// with no request pending the adapter re-dials to drain the replay.
    /// Requests made during that re-dial are held and written once it opens.
    pub max_undelivered: u32,
    /// Replay dedupe memory in keys (default 512, spec §6.2); the oldest key
    /// is forgotten first.
    pub seen_capacity: u32,
    /// Routing cache size in chats (default 4096); the least recently used
    /// chat is forgotten first. Empty after a restart: see
    /// [`AdapterHandle::prime_route`](crate::AdapterHandle::prime_route).
    pub route_capacity: u32,
    /// Longest accepted line in bytes (spec §1.3: 1 MiB). A longer line
    /// inside smaller messages is skipped (counted as `line_too_long`); the
    /// host also caps one WebSocket message and frame at this plus one byte
    /// and closes a bigger one with code 1009 (the adapter then re-dials).
    pub max_line_bytes: u32,
    /// Stamp events as authorized upstream (true for a real connector).
    pub authorization_is_upstream: bool,
    /// The operator's per-platform egress knobs, as the gateway's
    /// `platforms.relay.extra`: under a platform name (`"slack": {...}`),
    /// or flat (legacy), `rich_blocks`, `markdown_blocks` (format hints for
    /// descriptors with `supports_block_formatting`), and for Slack
    /// `reply_in_thread`, `dm_top_level_threads_as_sessions`,
    /// `channel_reply_modes`, `unfurl_links`, `unfurl_media`. Booleans or
    /// the strings `1`/`true`/`yes`/`on` (anything else is false). Empty by
    /// default: no hints, Slack defaults. Needs a 0.2 component; a 0.1
    /// component ignores it. See docs/wit.md#lanes-02.
    pub platform_extra: serde_json::Map<String, serde_json::Value>,
    /// The nonce of this adapter's prompt ids: 6 lowercase hex digits
    /// (spec §6.11). `None` (the default): [`Adapter::spawn`](crate::Adapter::spawn)
    /// draws one and keeps it for every instance of the adapter, so a
    /// button minted before a restart is still recognised. Set it to keep
    /// it across processes too.
    pub prompt_nonce: Option<String>,
    /// The gateway's Discord slash commands (spec §9.6): a JSON array of
    /// `{name, description, options?}` with Discord option objects, sent on
    /// the Discord `hello` as `command_manifest`. Empty (the default): no
    /// manifest. The component validates it (names `[a-z0-9_-]{1,32}`,
    /// descriptions cut to 100 UTF-16 units) and skips bad entries with a
    /// warning; it never fails the handshake. Needs a 0.2 component.
    pub command_manifest: Vec<serde_json::Value>,
    /// PEM file of extra CA certificates trusted for `wss://` (a connector
    /// behind a private CA), on top of the bundled Mozilla roots; every TLS
    /// client of the host uses them. Read at spawn: a file that cannot be
    /// read or holds no certificate fails it with
    /// [`AdapterError::Config`](crate::AdapterError::Config).
    pub ca_file: Option<PathBuf>,
    /// The media client (spec §9.1): downloads of inbound attachments and
    /// uploads for [`AdapterHandle::send_media`](crate::AdapterHandle::send_media).
    /// `None` (the default): no client, so inbound connector re-hosts are
    /// dropped (public URLs kept) and local files cannot be sent. Needs a
    /// 0.2 component.
    pub media: Option<MediaOptions>,
    /// Limits the host enforces on the component and its sockets.
    pub limits: HostLimits,
}

/// The host's media client (spec §9.1). Downloads go to new files in
/// [`dir`](Self::dir) (mode 0600, the directory 0700), named by the host;
/// the component deletes them when the gateway rejects the delivery, or
/// [`retention`](Self::retention) after it accepts it. The host sends no
/// `Authorization` header and no upload to any origin but the connector's,
/// follows no redirect itself, uses no proxy, and refuses loopback,
/// private, link-local, CGNAT and other special addresses for any origin
/// but the connector's unless [`allow_private_addresses`](Self::allow_private_addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaOptions {
    /// Where downloaded files are written; only the operator should be
    /// able to write it.
    pub dir: PathBuf,
    /// Let origins other than the connector's resolve to private and
    /// loopback addresses (a media server on the operator's own network;
    /// tests). Off by default.
    pub allow_private_addresses: bool,
    /// Per-file cap, both directions (spec: 25 MiB).
    pub max_bytes: u64,
    /// Timeout of one media request (spec: 30 s).
    pub timeout: Duration,
    /// How long a downloaded file is kept after its delivery was accepted
    /// (default 1 h).
    pub retention: Duration,
    /// Downloaded files kept at once; past it new downloads are refused
    /// (files in use are never deleted to make room). Default 512.
    pub max_files: u32,
    /// Bytes of downloaded files kept at once; past it new downloads are
    /// refused. Default 1 GiB.
    pub max_total_bytes: u64,
}

impl MediaOptions {
    /// The spec's defaults, writing to `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let core = relay_core::machine::MediaConfig::default();
        Self {
            dir: dir.into(),
            allow_private_addresses: false,
            max_bytes: core.max_bytes,
            timeout: Duration::from_millis(core.timeout_ms),
            retention: Duration::from_millis(core.retention_ms),
            max_files: u32::try_from(core.max_files).unwrap_or(u32::MAX),
            max_total_bytes: core.max_total_bytes,
        }
    }
}

impl AdapterConfig {
    /// A fresh prompt nonce: 6 hex digits from the process's random
    /// hasher keys (not a secret: it only tells this adapter's prompt ids
    /// from other gateways').
    pub(crate) fn draw_prompt_nonce() -> String {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(0x0070_726f_6d70);
        format!("{:06x}", hasher.finish() & 0x00ff_ffff)
    }

    /// `command_manifest` as the WIT `command-manifest` text ("" when empty).
    pub(crate) fn command_manifest_json(&self) -> String {
        if self.command_manifest.is_empty() {
            String::new()
        } else {
            serde_json::Value::Array(self.command_manifest.clone()).to_string()
        }
    }

    /// `platform_extra` as the WIT `platform-extra` text ("" when empty).
    pub(crate) fn platform_extra_json(&self) -> String {
        if self.platform_extra.is_empty() {
            String::new()
        } else {
            serde_json::Value::Object(self.platform_extra.clone()).to_string()
        }
    }

    /// A configuration with every default, dialing `connector_url`.
    pub fn new(connector_url: impl Into<String>) -> Self {
        Self {
            connector_url: connector_url.into(),
            ..Self::default()
        }
    }

    /// Checks every bound and limit (not the connector URL, which the
    /// component validates in `start`), naming each value that is out of
    /// range and why: zero caps, a ladder whose first rung exceeds its cap,
    /// a keepalive that could never see its pong, a memory cap below what
    /// the component needs, durations too long for a timer, a `ca_file`
    /// that cannot be read or holds no certificate, a `prompt_nonce` that is
    /// not 6 lowercase hex digits. `Adapter::spawn`
    /// refuses an invalid configuration with
    /// [`AdapterError::Config`](crate::AdapterError::Config).
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, problem: String| {
            if !ok {
                problems.push(problem);
            }
        };
        for (name, value) in [
            ("max_pending", self.max_pending),
            ("max_undelivered", self.max_undelivered),
            ("seen_capacity", self.seen_capacity),
            ("route_capacity", self.route_capacity),
        ] {
            check(value >= 1, format!("{name} must be at least 1"));
        }
        check(
            self.max_line_bytes >= MIN_LINE_BYTES,
            format!(
                "max_line_bytes must be at least {MIN_LINE_BYTES} (a hello and a descriptor must fit)"
            ),
        );
        check(
            (1..=MAX_TOKEN_TTL_SECS).contains(&self.token_ttl_secs),
            format!("token_ttl_secs must be within 1..={MAX_TOKEN_TTL_SECS}"),
        );
        check(
            self.reconnect_jitter
                .is_none_or(|j| j.is_finite() && (0.0..=1.0).contains(&j)),
            "reconnect_jitter must be within 0.0..=1.0".into(),
        );
        let l = &self.limits;
        // Timers: none may be zero (a zero wait would spin or expire at
        // once), none so long that deadline arithmetic could overflow.
        for (name, value, zero_ok) in [
            ("handshake_timeout", self.handshake_timeout, false),
            ("outbound_timeout", self.outbound_timeout, false),
            ("reconnect_initial", self.reconnect_initial, false),
            ("reconnect_max", self.reconnect_max, false),
            ("stable_connection", self.stable_connection, true),
            ("dormant_redial", self.dormant_redial, false),
            ("redial_hold_max", self.redial_hold_max, false),
            ("going_idle_timeout", self.going_idle_timeout, false),
            ("drain_grace", self.drain_grace, true),
            ("admission_timeout", self.admission_timeout, true),
            ("limits.call_budget", l.call_budget, false),
            ("limits.connect_timeout", l.connect_timeout, false),
            ("limits.ping_interval", l.ping_interval, false),
            ("limits.ping_timeout", l.ping_timeout, false),
            ("limits.restart_initial", l.restart_initial, false),
            ("limits.restart_max", l.restart_max, false),
            ("limits.restart_reset_after", l.restart_reset_after, false),
            ("limits.restart_window", l.restart_window, false),
        ] {
            if !zero_ok && value.is_zero() {
                check(false, format!("{name} must be longer than 0"));
            }
            check(
                value <= MAX_DURATION,
                format!(
                    "{name} must be at most {} days",
                    MAX_DURATION.as_secs() / 86_400
                ),
            );
        }
        check(
            self.reconnect_initial <= self.reconnect_max,
            "reconnect_initial must not exceed reconnect_max".into(),
        );
        if let Some(m) = &self.media {
            check(
                m.max_bytes >= 1,
                "media.max_bytes must be at least 1".into(),
            );
            check(
                m.max_files >= 1,
                "media.max_files must be at least 1".into(),
            );
            check(
                m.max_total_bytes >= m.max_bytes,
                "media.max_total_bytes must be at least media.max_bytes".into(),
            );
            for (name, value) in [
                ("media.timeout", m.timeout),
                ("media.retention", m.retention),
            ] {
                check(
                    !value.is_zero() && value <= MAX_DURATION,
                    format!(
                        "{name} must be longer than 0 and at most {} days",
                        MAX_DURATION.as_secs() / 86_400
                    ),
                );
            }
        }
        check(
            l.restart_initial <= l.restart_max,
            "limits.restart_initial must not exceed limits.restart_max".into(),
        );
        check(
            l.ping_interval < l.ping_timeout,
            "limits.ping_interval must be shorter than limits.ping_timeout (a pong could never arrive in time)"
                .into(),
        );
        let line = usize::try_from(self.max_line_bytes).unwrap_or(usize::MAX);
        let memory_floor = MIN_MEMORY_BYTES.max(line.saturating_mul(8));
        check(
            l.memory_bytes >= memory_floor,
            format!(
                "limits.memory_bytes must be at least {memory_floor} ({} MiB: what the component needs for a maximal line)",
                memory_floor >> 20
            ),
        );
        for (name, value) in [
            ("limits.max_memories", l.max_memories),
            ("limits.max_tables", l.max_tables),
            ("limits.max_table_elements", l.max_table_elements),
            ("limits.max_instances", l.max_instances),
        ] {
            check(value >= 1, format!("{name} must be at least 1"));
        }
        check(
            self.prompt_nonce
                .as_deref()
                .is_none_or(relay_core::machine::valid_nonce),
            "prompt_nonce must be 6 lowercase hex digits".into(),
        );
        if self.ca_file.is_some()
            && let Err(problem) = crate::tls::client_config(self.ca_file.as_deref())
        {
            problems.push(problem);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// Smallest `max_line_bytes` [`AdapterConfig::validate`] accepts.
pub const MIN_LINE_BYTES: u32 = 1024;
/// Longest upgrade token lifetime accepted (one day).
const MAX_TOKEN_TTL_SECS: i64 = 86_400;
/// Longest timer accepted (a week).
const MAX_DURATION: Duration = Duration::from_secs(7 * 86_400);
/// Smallest `memory_bytes` accepted: a maximal plain-text line at the
/// default bounds takes the instance to 8.1 MiB (see
/// [`DEFAULT_MEMORY_BYTES`]); twice that. A larger `max_line_bytes` raises
/// the floor to 8 bytes per line byte.
pub const MIN_MEMORY_BYTES: usize = 16 << 20;

impl Default for AdapterConfig {
    fn default() -> Self {
        // Every protocol default is the core's, so the two cannot drift.
        let core = relay_core::machine::Config::new(String::new());
        let ms = Duration::from_millis;
        let bound = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        Self {
            identities: Vec::new(),
            connector_url: String::new(),
            gateway_id: String::new(),
            secret: None,
            token_ttl_secs: core.token_ttl_secs,
            handshake_timeout: ms(core.handshake_timeout_ms),
            outbound_timeout: ms(core.outbound_timeout_ms),
            reconnect: core.reconnect,
            reconnect_initial: ms(core.reconnect_initial_ms),
            reconnect_max: ms(core.reconnect_max_ms),
            reconnect_jitter: core.reconnect_jitter,
            stable_connection: ms(core.stable_connection_ms),
            dormant_redial: ms(core.dormant_redial_ms),
            redial_hold_max: ms(core.redial_hold_max_ms),
            going_idle_timeout: ms(core.going_idle_timeout_ms),
            drain_grace: ms(core.drain_grace_ms),
            max_pending: bound(core.max_pending),
            admission_timeout: Duration::from_secs(60),
            max_undelivered: bound(core.max_undelivered),
            seen_capacity: bound(core.seen_capacity),
            route_capacity: bound(core.route_capacity),
            max_line_bytes: bound(core.max_line_bytes),
            authorization_is_upstream: core.authorization_is_upstream,
            platform_extra: serde_json::Map::new(),
            prompt_nonce: None,
            command_manifest: Vec::new(),
            ca_file: None,
            media: None,
            limits: HostLimits::default(),
        }
    }
}

/// Limits the host enforces: sandbox (memory, CPU per call, instance
/// shape, restarts) and sockets (connect timeout, keepalive). Every limit is
/// per adapter (one component instance at a time).
#[derive(Debug, Clone)]
pub struct HostLimits {
    /// Linear memory cap of one instance, in bytes (default
    /// [`DEFAULT_MEMORY_BYTES`], 128 MiB). Growing past it traps (the
    /// allocation is not allowed to fail quietly), which restarts the
    /// instance. Sized from a measurement: see [`DEFAULT_MEMORY_BYTES`].
    /// Current and peak use: `guest_memory_bytes` / `guest_memory_peak_bytes`
    /// in [`AdapterHandle::stats`](crate::AdapterHandle::stats) and
    /// [`AdapterHandle::health`](crate::AdapterHandle::health).
    pub memory_bytes: usize,
    /// Linear memories one instance may create (default 2; the relay
    /// component has 1). More fails the instantiation.
    pub max_memories: usize,
    /// Tables one instance may create, over all its core instances (default
    /// 8; the relay component has 2). More fails the instantiation.
    pub max_tables: usize,
    /// Elements one table may hold (default 4096; the relay component's
    /// largest table has 108 and never grows). Creating or growing a table
    /// past it fails.
    pub max_table_elements: usize,
    /// Core wasm instances one component instance may create (default 16;
    /// the relay component creates 3: its module and the component glue).
    /// More fails the instantiation.
    pub max_instances: usize,
    /// Wall-clock budget of one export call (default 1 s), measured in 1 ms
    /// epoch ticks. Past it the call traps and the instance is restarted.
    /// Sized from the same measurement as [`DEFAULT_MEMORY_BYTES`]: an
    /// ordinary line takes under 10 ms, the most expensive maximal line (1 MiB
    /// of one-character `media_urls`) 106-172 ms on a loaded 2-core VM, so
    /// 100 ms would restart the component on hostile-but-valid input. The
    /// longest call so far: `guest_call_max_ms` in
    /// [`AdapterHandle::health`](crate::AdapterHandle::health).
    pub call_budget: Duration,
    /// Opening handshake timeout of one dial (spec §1.3: 10 s).
    pub connect_timeout: Duration,
    /// WebSocket ping cadence (spec §1.3: 30 s).
    pub ping_interval: Duration,
    /// A ping unanswered this long closes the socket as lost, reported as
    /// close code 1011 "keepalive ping timeout" (spec §1.3: 60 s).
    pub ping_timeout: Duration,
    /// First wait before re-instantiating a trapped component (default 100 ms).
    pub restart_initial: Duration,
    /// Cap of the restart backoff, doubled per consecutive trap (default 30 s).
    pub restart_max: Duration,
    /// An instance that ran this long without trapping resets the backoff (default 60 s).
    pub restart_reset_after: Duration,
    /// Restarts allowed within [`restart_window`](Self::restart_window)
    /// (default 5), counting every re-instantiation after a trap or a failed
    /// restart. The trap that would need one more stops the adapter for
    /// good: a non-retryable [`Event::Fatal`](crate::Event::Fatal) with code
    /// `restart_budget_exhausted`, the event stream ends, and every later
    /// call fails with [`AdapterError::Down`](crate::AdapterError::Down).
    /// 0 means the first trap is final.
    pub restart_budget: u32,
    /// The sliding window of [`restart_budget`](Self::restart_budget)
    /// (default 60 s).
    pub restart_window: Duration,
}

/// Default [`HostLimits::memory_bytes`]: 128 MiB.
///
/// Sized from a measurement of the real component at default bounds
/// (`guest_memory_peak_at_default_bounds_fits_the_cap` in
/// `host/tests/host.rs`, run it with `--nocapture` for the figures):
///
/// | step | linear memory |
/// | --- | --- |
/// | ready after the handshake | 1.1 MiB |
/// | routing cache full (4 096 chats) and seen-set full (512 keys) | 3.1 MiB |
/// | then a maximal line (1 MiB) of plain text | 8.1 MiB |
/// | then maximal lines of the most expensive shapes (lists of tiny JSON values in `context`, `media`, `media_urls`, a passthrough body, passthrough headers, descriptor ops) | **37.9 MiB** peak (`context` of 350 k empty objects alone: +37 MiB) |
///
/// 128 MiB is 3.4x that adversarial peak and 15x the plain-text one. Linear
/// memory never shrinks: after one such line the instance keeps it (only
/// touched pages count towards the process RSS).
pub const DEFAULT_MEMORY_BYTES: usize = 128 << 20;

impl Default for HostLimits {
    fn default() -> Self {
        Self {
            memory_bytes: DEFAULT_MEMORY_BYTES,
            max_memories: 2,
            max_tables: 8,
            max_table_elements: 4096,
            max_instances: 16,
            call_budget: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(60),
            restart_initial: Duration::from_millis(100),
            restart_max: Duration::from_secs(30),
            restart_reset_after: Duration::from_secs(60),
            restart_budget: 5,
            restart_window: Duration::from_secs(60),
        }
    }
}

/// Milliseconds of `d`, saturating (the WIT config carries `u64` milliseconds).
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
