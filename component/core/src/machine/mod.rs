//! The connection state machine (spec §1.4-§1.6, §2, §5.4, §6.2-§6.19).
//!
//! One deterministic, sans-IO object: inputs (socket events, timers, gateway
//! commands, delivery verdicts) arrive with `now`; outputs (dials, frames,
//! closes, the one deadline, deliveries, completions, state, fatal, logs)
//! are drained with [`Machine::poll_output`]. Every command completes exactly
//! once; inputs for a connection that is no longer current are ignored.

mod config;
mod io;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

pub use crate::bounded::{BoundedSet, Rng};
pub use config::*;
pub use io::*;

use crate::auth::bearer_header;
use crate::descriptor::CapabilityDescriptor;
use crate::event::MessageEvent;
use crate::frame::{Action, ConnectorFrame, GatewayFrame};
use crate::interaction::forward_to_event;
use crate::line::{LineDecoder, LineItem};
use crate::outcome::{ChatInfo, SendResult};
use crate::routing::{RoutingCache, strip_internal_markers};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};

// Maps keyed by values this machine generates (random request ids, delivery
// counters) use a fast unkeyed hash: a connector cannot choose those keys,
// so there are no collisions to force. Maps keyed by connector-sent values
// (routes, dedupe keys) keep std's keyed SipHash.
use rustc_hash::FxHashMap;

/// Message of the terminal revocation fatal (§6.16).
pub const RELAY_DISABLED_MESSAGE: &str =
    "Relay disabled (opted out \u{2014} recreate the instance to re-enable)";
/// Code of the terminal revocation fatal (§6.16).
pub const RELAY_DISABLED_CODE: &str = "relay_disabled";
/// Close code a connector uses for a refused bearer (§5.4).
pub const CLOSE_UNAUTHORIZED: u16 = 4401;
/// Close reason that marks an expired (not revoked) token (§5.4).
pub const REASON_EXPIRED: &str = "expired";
/// Normal closure.
const CLOSE_NORMAL: u16 = 1000;
/// "Try again later": the gateway is too far behind to take more live inbound.
const CLOSE_TRY_AGAIN_LATER: u16 = 1013;
/// Buffered duplicates remembered per delivery awaiting its verdict.
const MAX_DUPLICATES_PER_KEY: usize = 8;
/// Protocol error (we close a connection that broke the contract).
const CLOSE_PROTOCOL_ERROR: u16 = 1002;

const NS_PER_MS: u64 = 1_000_000;

/// Why the machine could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The connector URL is unusable.
    Url(crate::url::UrlError),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Url(e) => write!(f, "configuration rejected: {e}"),
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    NotStarted,
    Connecting {
        conn: u32,
    },
    Handshaking {
        conn: u32,
        deadline: u64,
    },
    Ready {
        conn: u32,
        ready_at: u64,
    },
    /// Waiting to dial (reconnect ladder or dormant cadence).
    Waiting {
        dial_at: u64,
    },
    Disabled,
    Stopped,
}

/// The post-handshake 4401 bookkeeping of §5.4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FreshRetry {
    None,
    /// The next dial whose upgrade is accepted becomes the retry.
    Pending,
    /// This connection is the fresh-token retry: a 4401 on it is terminal.
    Conn(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdlePurpose {
    Shutdown,
    Dormant { request: u64 },
    Overload,
}

#[derive(Debug, Clone, Copy)]
struct IdleWait {
    purpose: IdlePurpose,
    deadline: u64,
}

#[derive(Debug, Clone)]
enum PendingKind {
    Sent { op: String, chat_id: Option<String> },
    ChatInfo { chat_id: String },
}

impl PendingKind {
    /// The chat whose route this request pins while it is pending.
    fn chat_id(&self) -> Option<&str> {
        match self {
            PendingKind::Sent { chat_id, .. } => chat_id.as_deref(),
            PendingKind::ChatInfo { chat_id } => Some(chat_id),
        }
    }
}

#[derive(Debug, Clone)]
struct Pending {
    request: u64,
    kind: PendingKind,
    timeout_key: (u64, u64),
}

#[derive(Debug, Clone)]
struct InFlight {
    key: Option<String>,
    /// The chat whose route this delivery pins until its verdict.
    chat_id: String,
    buffer_id: Option<String>,
    conn: u32,
    /// Duplicates that arrived while this delivery awaited its verdict.
    duplicates: Vec<(u32, Option<String>)>,
}

#[derive(Debug, Clone, Default)]
struct ShutdownState {
    requests: Vec<u64>,
    /// Set once `going_idle` is settled: new sends fail, pending may finish.
    drain_deadline: Option<u64>,
}

/// Counters and gauges, for health and metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Frames received, by type.
    pub frames_in: BTreeMap<&'static str, u64>,
    /// Frames sent, by type.
    pub frames_out: BTreeMap<&'static str, u64>,
    /// Lines skipped, by reason.
    pub skipped: BTreeMap<&'static str, u64>,
    /// Dials made.
    pub dials: u64,
    /// Dials after the first.
    pub reconnects: u64,
    /// 4401 closes and upgrade refusals seen.
    pub unauthorized: u64,
    /// `inbound_ack` frames sent.
    pub acks: u64,
    /// Replays dropped by dedupe.
    pub dedupe_hits: u64,
    /// Deliveries handed to the gateway.
    pub deliveries: u64,
    /// Outbound requests awaiting a result (gauge).
    pub pending: usize,
    /// Deliveries awaiting a verdict (gauge).
    pub undelivered: usize,
    /// Chats in the routing cache (gauge).
    pub routes: usize,
    /// Keys in the replay dedupe set (gauge).
    pub seen: usize,
    /// Outbound requests that timed out.
    pub timeouts: u64,
    /// Outbound actions to a chat whose route was evicted (sent without
    /// routing keys, with a warning).
    pub route_misses: u64,
    /// Chats whose route is pinned by a delivery, a pending request or a
    /// caller awaiting admission (gauge).
    pub route_pins: usize,
}

/// The relay adapter's protocol state machine.
#[derive(Debug)]
pub struct Machine {
    cfg: Config,
    identities: Vec<Identity>,
    url: String,
    rng: Rng,
    outputs: VecDeque<Output>,
    /// Request id of each queued `SendText`, in output order.
    write_tags: VecDeque<Option<String>>,
    last_polled_send: Option<(u32, Option<String>)>,

    phase: Phase,
    next_conn: u32,
    decoder: LineDecoder,
    scratch: Vec<LineItem>,
    handshake_ever: bool,
    attempts: u32,
    fresh_retry: FreshRetry,
    hold_until: Option<u64>,
    dormant: bool,
    idle_wait: Option<IdleWait>,
    overload_idle: bool,
    /// Set while the re-dial that drains an overload replay is connecting:
    /// outbound requests made meanwhile are held (see `held`), not failed.
    drain_redial: bool,
    /// The connection whose `going_idle` wait timed out: a late ack on it
    /// still means the connector flipped to buffering.
    idle_timed_out_on: Option<u32>,
    /// Outbound frames (with their request ids) held during `drain_redial`,
    /// written once the new socket opens.
    held: Vec<(String, GatewayFrame)>,
    shutdown: Option<ShutdownState>,

    default_desc: CapabilityDescriptor,
    platform_desc: HashMap<String, CapabilityDescriptor>,

    pending: FxHashMap<String, Pending>,
    timeouts: BTreeMap<(u64, u64), String>,
    seq: u64,

    routes: RoutingCache,
    seen: BoundedSet,
    in_flight: FxHashMap<u64, InFlight>,
    key_owner: HashMap<String, u64>,
    next_delivery: u64,

    last_deadline: Option<u64>,
    reported: Option<(State, String)>,
    stats: Stats,
    /// `stats.frames_in`, `frames_out` and `skipped`, counted cheaply.
    frames_in: LabelCounts,
    frames_out: LabelCounts,
    skipped: LabelCounts,
}

/// Counters by constant label, for the per-frame statistics: a short list
/// searched by address first (labels are `'static` constants), so counting
/// a frame compares no strings; by text only if the address is new.
#[derive(Debug, Clone, Default)]
struct LabelCounts(Vec<(&'static str, u64)>);

impl LabelCounts {
    fn bump(&mut self, label: &'static str) {
        let at = self
            .0
            .iter()
            .position(|(l, _)| std::ptr::eq(*l, label))
            .or_else(|| self.0.iter().position(|(l, _)| *l == label));
        match at {
            Some(i) => self.0[i].1 += 1,
            None => self.0.push((label, 1)),
        }
    }

    fn to_map(&self) -> BTreeMap<&'static str, u64> {
        let mut map = BTreeMap::new();
        for (label, n) in &self.0 {
            *map.entry(*label).or_default() += n;
        }
        map
    }
}

fn ms(v: u64) -> u64 {
    v.saturating_mul(NS_PER_MS)
}

fn parse_object(json: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

fn frame_label(f: &ConnectorFrame) -> &'static str {
    match f {
        ConnectorFrame::Descriptor { .. } => "descriptor",
        ConnectorFrame::Inbound { .. } => "inbound",
        ConnectorFrame::GoingIdleAck => "going_idle_ack",
        ConnectorFrame::OutboundResult { .. } => "outbound_result",
        ConnectorFrame::InterruptInbound { .. } => "interrupt_inbound",
        ConnectorFrame::PassthroughForward { .. } => "passthrough_forward",
    }
}

fn gateway_label(f: &GatewayFrame) -> &'static str {
    match f {
        GatewayFrame::Hello { .. } => "hello",
        GatewayFrame::InboundAck { .. } => "inbound_ack",
        GatewayFrame::Outbound { .. } => "outbound",
        GatewayFrame::Interrupt { .. } => "interrupt",
        GatewayFrame::GoingIdle => "going_idle",
    }
}

impl Machine {
    /// A machine for `cfg`, with `seed` for request ids and jitter.
    pub fn new(cfg: Config, seed: u64) -> Result<Machine, ConfigError> {
        let url = crate::url::dial_url(&cfg.connector_url).map_err(ConfigError::Url)?;
        let identities = cfg.effective_identities();
        let primary = identities
            .first()
            .map(|i| i.platform.clone())
            .unwrap_or_default();
        Ok(Machine {
            identities,
            url,
            rng: Rng::new(seed),
            outputs: VecDeque::new(),
            write_tags: VecDeque::new(),
            last_polled_send: None,
            phase: Phase::NotStarted,
            next_conn: 1,
            decoder: LineDecoder::new(cfg.max_line_bytes),
            scratch: Vec::new(),
            handshake_ever: false,
            attempts: 0,
            fresh_retry: FreshRetry::None,
            hold_until: None,
            dormant: false,
            idle_wait: None,
            overload_idle: false,
            drain_redial: false,
            idle_timed_out_on: None,
            held: Vec::new(),
            shutdown: None,
            default_desc: CapabilityDescriptor::placeholder(&primary),
            platform_desc: HashMap::new(),
            pending: FxHashMap::default(),
            timeouts: BTreeMap::new(),
            seq: 0,
            routes: RoutingCache::new(cfg.route_capacity),
            seen: BoundedSet::new(cfg.seen_capacity),
            in_flight: FxHashMap::default(),
            key_owner: HashMap::new(),
            next_delivery: 1,
            last_deadline: None,
            reported: None,
            stats: Stats::default(),
            frames_in: LabelCounts::default(),
            frames_out: LabelCounts::default(),
            skipped: LabelCounts::default(),
            cfg,
        })
    }

    /// The next output, if any. Drain after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        let out = self.outputs.pop_front()?;
        if let Output::SendText { conn, .. } = &out {
            self.last_polled_send = Some((*conn, self.write_tags.pop_front().flatten()));
        }
        Some(out)
    }

    /// Feeds one input.
    pub fn handle(&mut self, now: Now, input: Input<'_>) {
        let t = now.mono_ns;
        let mut force_deadline = false;
        match input {
            Input::Start => {
                if self.phase == Phase::NotStarted {
                    self.dial(now);
                }
            }
            Input::SocketOpened { conn } => self.on_open(t, conn),
            Input::DialFailed { conn, code, reason } => {
                self.on_dial_failed(now, conn, code, reason)
            }
            Input::SocketText { conn, text } => self.on_bytes(now, conn, text.as_bytes()),
            Input::SocketBinary { conn, data } => self.on_bytes(now, conn, data),
            Input::WriteFailed { conn, error } => self.on_write_failed(conn, error),
            Input::SocketClosed { conn, code, reason } => {
                if self.live_conn() == Some(conn) {
                    self.socket_lost(now, conn, code, reason, false);
                }
            }
            Input::Deadline => {
                force_deadline = true;
                self.on_timers(now);
            }
            Input::AcceptDelivery(d) => self.on_verdict(d, true),
            Input::RejectDelivery(d) => self.on_verdict(d, false),
            Input::Command { request, command } => self.on_command(now, request, command),
            Input::PrimeRoute {
                chat_id,
                platform,
                scope_id,
                user_id,
                profile,
            } => self
                .routes
                .prime(chat_id, platform, scope_id, user_id, profile),
            Input::HoldRoute { chat_id, hold } => {
                if hold {
                    self.routes.pin(chat_id);
                } else {
                    self.routes.unpin(chat_id);
                }
            }
        }
        self.maybe_leave_overload(now);
        self.update_deadline(force_deadline);
    }

    // ----- queries ---------------------------------------------------------

    /// The state last reported.
    pub fn state(&self) -> State {
        match self.phase {
            Phase::NotStarted | Phase::Connecting { .. } => State::Connecting,
            Phase::Handshaking { .. } => State::Handshaking,
            Phase::Ready { .. } if self.overload_idle => State::Idle,
            Phase::Ready { .. } => State::Ready,
            Phase::Waiting { .. } if self.dormant => State::Dormant,
            Phase::Waiting { .. } => State::Reconnecting,
            Phase::Disabled => State::Disabled,
            Phase::Stopped => State::Stopped,
        }
    }

    /// The descriptor for `platform`, or the default one.
    pub fn descriptor(&self, platform: Option<&str>) -> &CapabilityDescriptor {
        platform
            .and_then(|p| self.platform_desc.get(p))
            .unwrap_or(&self.default_desc)
    }

    /// The descriptor governing a chat: its learned platform's, else the
    /// default (§6.1).
    pub fn descriptor_for_chat(&self, chat_id: Option<&str>) -> &CapabilityDescriptor {
        self.descriptor(chat_id.and_then(|c| self.routes.platform(c)))
    }

    /// Maximum message length for a chat.
    pub fn max_message_length(&self, chat_id: Option<&str>) -> u32 {
        self.descriptor_for_chat(chat_id).max_message_length()
    }

    /// Length of `text` in the chat's unit.
    pub fn message_len(&self, chat_id: Option<&str>, text: &str) -> usize {
        self.descriptor_for_chat(chat_id).message_len(text)
    }

    /// Whether the chat's descriptor supports `op` (§3.4).
    pub fn supports_op(&self, chat_id: Option<&str>, op: &str) -> bool {
        self.descriptor_for_chat(chat_id).supports_op(op)
    }

    /// Whether this gateway fronts `platform` (configured identities).
    pub fn fronts_platform(&self, platform: &str) -> bool {
        self.identities.iter().any(|i| i.platform == platform)
    }

    /// Counters and gauges.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.frames_in = self.frames_in.to_map();
        s.frames_out = self.frames_out.to_map();
        s.skipped = self.skipped.to_map();
        s.pending = self.pending.len();
        s.undelivered = self.in_flight.len();
        s.routes = self.routes.len();
        s.route_pins = self.routes.pinned();
        s.seen = self.seen.len();
        s
    }

    /// The routing cache (read-only).
    pub fn routes(&self) -> &RoutingCache {
        &self.routes
    }

    // ----- output helpers --------------------------------------------------

    fn log(&mut self, level: Level, message: impl Into<String>) {
        self.outputs.push_back(Output::Log {
            level,
            message: message.into(),
        });
    }

    fn report(&mut self, state: State, detail: impl Into<String>) {
        let detail = detail.into();
        if self.reported.as_ref() == Some(&(state, detail.clone())) {
            return;
        }
        self.reported = Some((state, detail.clone()));
        self.outputs.push_back(Output::State { state, detail });
    }

    fn complete(&mut self, request: u64, completion: Completion) {
        self.outputs.push_back(Output::Complete {
            request,
            completion,
        });
    }

    fn send_frame(&mut self, conn: u32, frame: &GatewayFrame, tag: Option<String>) {
        self.frames_out.bump(gateway_label(frame));
        self.outputs.push_back(Output::SendText {
            conn,
            text: frame.encode(),
        });
        self.write_tags.push_back(tag);
    }

    fn close(&mut self, conn: u32, code: u16, reason: &str) {
        self.outputs.push_back(Output::Close {
            conn,
            code,
            reason: reason.to_owned(),
        });
    }

    /// The connection frames can be written to.
    fn live_conn(&self) -> Option<u32> {
        match self.phase {
            Phase::Handshaking { conn, .. } | Phase::Ready { conn, .. } => Some(conn),
            _ => None,
        }
    }

    fn is_terminal(&self) -> bool {
        matches!(self.phase, Phase::Disabled | Phase::Stopped)
    }

    // ----- connection lifecycle -------------------------------------------

    fn dial(&mut self, now: Now) {
        if self.is_terminal() {
            return;
        }
        let conn = self.next_conn;
        self.next_conn = self.next_conn.wrapping_add(1).max(1);
        self.decoder.reset();
        let headers = bearer_header(
            &self.cfg.gateway_id,
            &self.cfg.secret,
            now.wall_secs,
            self.cfg.token_ttl_secs,
        )
        .into_iter()
        .collect::<Vec<_>>();
        if self.stats.dials > 0 {
            self.stats.reconnects += 1;
        }
        self.stats.dials += 1;
        self.phase = Phase::Connecting { conn };
        self.outputs.push_back(Output::Dial {
            conn,
            url: self.url.clone(),
            headers: Headers(headers),
        });
        let url = self.url.clone();
        self.report(State::Connecting, url);
    }

    fn on_open(&mut self, t: u64, conn: u32) {
        if self.phase != (Phase::Connecting { conn }) {
            self.close(conn, CLOSE_NORMAL, "stale connection");
            return;
        }
        if self.fresh_retry == FreshRetry::Pending {
            self.fresh_retry = FreshRetry::Conn(conn);
        }
        self.phase = Phase::Handshaking {
            conn,
            deadline: t.saturating_add(ms(self.cfg.handshake_timeout_ms)),
        };
        for identity in self.identities.clone() {
            let hello = GatewayFrame::Hello {
                platform: identity.platform,
                bot_id: identity.bot_id,
                command_manifest: None,
            };
            self.send_frame(conn, &hello, None);
        }
        self.drain_redial = false;
        for (request_id, frame) in std::mem::take(&mut self.held) {
            // A held request that timed out meanwhile is already answered.
            if self.pending.contains_key(&request_id) {
                self.send_frame(conn, &frame, Some(request_id));
            }
        }
        self.report(State::Handshaking, "");
    }

    fn on_dial_failed(&mut self, now: Now, conn: u32, code: u16, reason: &str) {
        if self.phase != (Phase::Connecting { conn }) {
            return;
        }
        self.fail_held();
        if code == CLOSE_UNAUTHORIZED || code == 401 {
            self.stats.unauthorized += 1;
            self.on_unauthorized(now, conn, reason, true);
        } else {
            self.log(
                Level::Warn,
                format!("relay dial failed (code {code}): {reason}"),
            );
            self.attempt_failed(now, "dial failed");
        }
    }

    /// A failed write fails the request it carried. The socket is gone, but
    /// its close report (which the host always sends) carries the code that
    /// decides what happens next (a 4401 is not a network error), so the
    /// connection is torn down there, not here.
    fn on_write_failed(&mut self, conn: u32, error: &str) {
        if self.live_conn() != Some(conn) {
            return;
        }
        if let Some((c, Some(request_id))) = self.last_polled_send.take()
            && c == conn
            && let Some(p) = self.take_pending(&request_id)
        {
            let completion = match p.kind {
                PendingKind::ChatInfo { chat_id } => {
                    Completion::ChatInfo(ChatInfo::local(&chat_id))
                }
                PendingKind::Sent { .. } => Completion::Sent(SendResult::send_failed(error, false)),
            };
            self.complete(p.request, completion);
        }
        self.log(
            Level::Debug,
            format!("relay write failed: {}", truncate(error, 128)),
        );
    }

    /// Everything that follows the loss of the live connection.
    fn socket_lost(&mut self, now: Now, conn: u32, code: u16, reason: &str, by_us: bool) {
        let t = now.mono_ns;
        let stable = match self.phase {
            Phase::Ready { ready_at, .. } => {
                t.saturating_sub(ready_at) >= ms(self.cfg.stable_connection_ms)
            }
            _ => false,
        };
        self.phase = Phase::Waiting { dial_at: t };
        self.decoder.reset();
        self.overload_idle = false;
        self.fail_all_pending(SendResult::connection_lost());
        if !by_us {
            self.log(
                Level::Info,
                format!(
                    "relay connection closed (code {code}): {}",
                    truncate(reason, 128)
                ),
            );
        }
        if let Some(wait) = self.idle_wait.take()
            && let IdlePurpose::Dormant { request } = wait.purpose
        {
            self.complete(request, Completion::Flag(false));
        }
        if self.shutdown.is_some() {
            self.finish_shutdown();
            return;
        }
        if stable {
            self.attempts = 0;
        }
        if code == CLOSE_UNAUTHORIZED {
            self.stats.unauthorized += 1;
            self.on_unauthorized(now, conn, reason, false);
            return;
        }
        if self.fresh_retry == FreshRetry::Conn(conn) {
            self.fresh_retry = FreshRetry::None;
        }
        self.attempt_failed(now, "connection lost");
    }

    /// §5.4: decide between retry, fresh-token retry and revocation.
    fn on_unauthorized(&mut self, now: Now, conn: u32, reason: &str, at_upgrade: bool) {
        let is_retry = self.fresh_retry == FreshRetry::Conn(conn)
            || (at_upgrade && self.fresh_retry == FreshRetry::Pending);
        if reason == REASON_EXPIRED {
            if is_retry {
                self.fresh_retry = FreshRetry::None;
            }
            self.log(
                Level::Info,
                "relay token expired (4401 expired); re-dialing with a fresh token",
            );
            self.attempt_failed(now, "token expired");
        } else if is_retry {
            self.revoke();
        } else if self.handshake_ever {
            self.log(
                Level::Warn,
                "relay 4401 after a successful handshake; one immediate re-dial with a fresh token",
            );
            self.fresh_retry = FreshRetry::Pending;
            self.dial(now);
        } else {
            self.log(Level::Warn, "relay 4401 before any handshake; retrying");
            self.attempt_failed(now, "unauthorized before handshake");
        }
    }

    fn revoke(&mut self) {
        self.phase = Phase::Disabled;
        self.fresh_retry = FreshRetry::None;
        self.fail_all_pending(SendResult::connection_lost());
        self.release_waiters();
        self.report(State::Disabled, RELAY_DISABLED_MESSAGE);
        self.outputs.push_back(Output::Fatal {
            code: RELAY_DISABLED_CODE.to_owned(),
            message: RELAY_DISABLED_MESSAGE.to_owned(),
            retryable: false,
        });
    }

    /// Completes the go-dormant and shutdown requests still waiting.
    fn release_waiters(&mut self) {
        if let Some(wait) = self.idle_wait.take()
            && let IdlePurpose::Dormant { request } = wait.purpose
        {
            self.complete(request, Completion::Flag(false));
        }
        if let Some(sd) = self.shutdown.take() {
            for r in sd.requests {
                self.complete(r, Completion::Done);
            }
        }
    }

    /// A failed attempt climbs the ladder (§6.19).
    fn attempt_failed(&mut self, now: Now, why: &str) {
        if self.is_terminal() {
            return;
        }
        if !self.cfg.reconnect {
            self.phase = Phase::Stopped;
            self.release_waiters();
            self.report(State::Stopped, format!("{why}; reconnect disabled"));
            return;
        }
        let exp = self.attempts.min(32);
        let rung = self
            .cfg
            .reconnect_initial_ms
            .saturating_mul(1u64 << exp)
            .min(self.cfg.reconnect_max_ms);
        self.attempts = self.attempts.saturating_add(1);
        let wait_ms = match self.cfg.reconnect_jitter {
            Some(f) => (rung as f64 * f.clamp(0.0, 1.0)) as u64,
            None => {
                let half = rung / 2;
                half + (self.rng.next_f64() * (rung - half) as f64) as u64
            }
        };
        self.phase = Phase::Waiting {
            dial_at: now.mono_ns.saturating_add(ms(wait_ms)),
        };
        self.dormant = false;
        self.report(
            State::Reconnecting,
            format!("{why}; retry in {wait_ms} ms (attempt {})", self.attempts),
        );
    }

    fn on_timers(&mut self, now: Now) {
        let t = now.mono_ns;
        if let Some(h) = self.hold_until
            && t >= h
        {
            self.hold_until = None;
            self.log(Level::Info, "relay redial hold expired");
        }
        match self.phase {
            Phase::Handshaking { conn, deadline } if t >= deadline => {
                self.log(Level::Warn, "relay handshake timed out");
                self.close(conn, CLOSE_NORMAL, "handshake timed out");
                self.socket_lost(now, conn, CLOSE_NORMAL, "handshake timed out", true);
            }
            Phase::Waiting { dial_at } if t >= dial_at && self.hold_until.is_none() => {
                self.dial(now);
            }
            _ => {}
        }
        while let Some((&(deadline, seq), _)) = self.timeouts.first_key_value() {
            if deadline > t {
                break;
            }
            let Some(request_id) = self.timeouts.remove(&(deadline, seq)) else {
                break;
            };
            if let Some(p) = self.pending.remove(&request_id) {
                self.unpin_pending(&p);
                self.stats.timeouts += 1;
                let completion = match p.kind {
                    PendingKind::ChatInfo { chat_id } => {
                        Completion::ChatInfo(ChatInfo::local(&chat_id))
                    }
                    PendingKind::Sent { .. } => Completion::Sent(SendResult::timed_out()),
                };
                self.complete(p.request, completion);
            }
        }
        if let Some(wait) = self.idle_wait
            && t >= wait.deadline
        {
            self.idle_wait = None;
            match wait.purpose {
                IdlePurpose::Shutdown => {
                    self.log(
                        Level::Info,
                        "relay going_idle not acknowledged in time; draining",
                    );
                    self.begin_drain(t);
                }
                IdlePurpose::Dormant { request } => {
                    self.log(
                        Level::Info,
                        "relay going_idle not acknowledged; staying connected",
                    );
                    self.complete(request, Completion::Flag(false));
                    self.idle_timed_out_on = self.live_conn();
                }
                IdlePurpose::Overload => {
                    self.log(Level::Warn, "relay going_idle (overload) not acknowledged");
                    self.idle_timed_out_on = self.live_conn();
                }
            }
        }
        if let Some(sd) = &self.shutdown
            && sd.drain_deadline.is_some_and(|d| t >= d)
        {
            self.finish_shutdown();
        }
    }

    fn next_deadline(&self) -> Option<u64> {
        let mut next: Option<u64> = None;
        let mut consider = |d: u64| next = Some(next.map_or(d, |n| n.min(d)));
        match self.phase {
            Phase::Handshaking { deadline, .. } => consider(deadline),
            Phase::Waiting { dial_at } => {
                consider(self.hold_until.map_or(dial_at, |h| h.max(dial_at)))
            }
            _ => {}
        }
        if let Some(h) = self.hold_until {
            consider(h);
        }
        if let Some((&(d, _), _)) = self.timeouts.first_key_value() {
            consider(d);
        }
        if let Some(w) = self.idle_wait {
            consider(w.deadline);
        }
        if let Some(d) = self.shutdown.as_ref().and_then(|s| s.drain_deadline) {
            consider(d);
        }
        next
    }

    fn update_deadline(&mut self, force: bool) {
        let next = self.next_deadline();
        if force || next != self.last_deadline {
            self.last_deadline = next;
            self.outputs.push_back(Output::SetDeadline(next));
        }
    }

    // ----- receive path ----------------------------------------------------

    fn on_bytes(&mut self, now: Now, conn: u32, data: &[u8]) {
        if self.live_conn() != Some(conn) {
            return;
        }
        let mut items = std::mem::take(&mut self.scratch);
        self.decoder.push(data, &mut items);
        for item in items.drain(..) {
            // A frame may end the connection (an invalid descriptor); the
            // rest of that message belongs to a dead socket.
            if self.live_conn() != Some(conn) {
                break;
            }
            match item {
                LineItem::Skip(reason) => {
                    self.skipped.bump(reason.label());
                    self.log(Level::Warn, format!("relay {reason}"));
                }
                LineItem::Frame(frame) => {
                    self.frames_in.bump(frame_label(&frame));
                    self.on_frame(now, conn, frame);
                }
            }
        }
        self.scratch = items;
    }

    fn on_frame(&mut self, now: Now, conn: u32, frame: ConnectorFrame) {
        let t = now.mono_ns;
        match frame {
            ConnectorFrame::Descriptor { raw } => self.on_descriptor(now, conn, &raw),
            ConnectorFrame::Inbound { event, buffer_id } => {
                let key = dedupe_key(&event);
                self.admit(now, conn, *event, buffer_id, key);
            }
            ConnectorFrame::PassthroughForward { forward, buffer_id } => {
                match forward_to_event(&forward) {
                    Ok(event) => {
                        let key = buffer_id
                            .as_ref()
                            .map(|b| format!("passthrough_buffer:{b}"));
                        self.admit(now, conn, event, buffer_id, key);
                    }
                    Err(why) => {
                        self.log(
                            Level::Info,
                            format!(
                                "{why} method={:?} path={:?}",
                                truncate(&forward.method, 16),
                                truncate(&forward.path, 128)
                            ),
                        );
                        if let Some(b) = buffer_id {
                            self.ack(conn, b);
                        }
                    }
                }
            }
            ConnectorFrame::GoingIdleAck => self.on_going_idle_ack(t, conn),
            ConnectorFrame::OutboundResult { request_id, result } => {
                self.on_result(&request_id, &result)
            }
            ConnectorFrame::InterruptInbound {
                session_key,
                chat_id,
            } => self.outputs.push_back(Output::Interrupt {
                session_key,
                chat_id,
            }),
        }
    }

    fn on_descriptor(&mut self, now: Now, conn: u32, raw: &str) {
        let t = now.mono_ns;
        let parsed = CapabilityDescriptor::from_json(raw);
        match (self.phase, parsed) {
            (Phase::Handshaking { .. }, Ok(d)) => {
                if !d.is_known_contract_version() {
                    self.log(
                        Level::Warn,
                        format!(
                            "relay descriptor contract_version {} (expected 1)",
                            d.contract_version()
                        ),
                    );
                }
                self.platform_desc.clear();
                self.default_desc = d;
                self.phase = Phase::Ready { conn, ready_at: t };
                self.handshake_ever = true;
                self.dormant = false;
                let detail = format!(
                    "platform={} max_message_length={}",
                    self.default_desc.platform(),
                    self.default_desc.max_message_length()
                );
                self.report(State::Ready, detail);
            }
            (Phase::Handshaking { .. }, Err(e)) => {
                self.log(Level::Warn, format!("relay handshake failed: {e}"));
                self.close(conn, CLOSE_PROTOCOL_ERROR, "invalid descriptor");
                self.socket_lost(now, conn, CLOSE_PROTOCOL_ERROR, "invalid descriptor", true);
            }
            // Only identities we announced get a descriptor: a connector cannot
            // grow this map with descriptors for platforms we never fronted.
            (Phase::Ready { .. }, Ok(d))
                if d.platform() != self.default_desc.platform()
                    && self.fronts_platform(d.platform()) =>
            {
                self.platform_desc.insert(d.platform().to_owned(), d);
            }
            (_, Err(e)) => self.log(Level::Warn, format!("relay ignored descriptor: {e}")),
            _ => {}
        }
    }

    fn on_going_idle_ack(&mut self, t: u64, conn: u32) {
        let Some(wait) = self.idle_wait.take() else {
            // A late ack (its wait timed out): the connector now buffers
            // anyway, so drain its replay through a re-dial like an overload.
            if matches!(self.phase, Phase::Ready { .. })
                && self.shutdown.is_none()
                && self.idle_timed_out_on == Some(conn)
            {
                self.log(
                    Level::Info,
                    "relay late going_idle_ack: the connector buffers; will re-dial to drain",
                );
                self.overload_idle = true;
                self.report(State::Idle, "connector buffers inbound");
            }
            return;
        };
        match wait.purpose {
            IdlePurpose::Shutdown => {
                self.report(State::Idle, "connector buffers inbound");
                self.begin_drain(t);
            }
            IdlePurpose::Dormant { request } => {
                self.close(conn, CLOSE_NORMAL, "going dormant");
                self.phase = Phase::Waiting {
                    dial_at: t.saturating_add(ms(self.cfg.dormant_redial_ms)),
                };
                self.decoder.reset();
                self.overload_idle = false;
                self.fail_all_pending(SendResult::connection_lost());
                self.attempts = 0;
                self.dormant = true;
                self.report(State::Dormant, "connector buffers inbound");
                self.complete(request, Completion::Flag(true));
            }
            IdlePurpose::Overload => {
                self.overload_idle = true;
                self.report(State::Idle, "overloaded: connector buffers inbound");
            }
        }
    }

    fn on_result(&mut self, request_id: &str, raw: &str) {
        let Some(p) = self.take_pending(request_id) else {
            self.log(
                Level::Debug,
                format!(
                    "relay outbound_result for unknown request {}",
                    truncate(request_id, 40)
                ),
            );
            return;
        };
        let completion = match p.kind {
            PendingKind::ChatInfo { chat_id } => {
                Completion::ChatInfo(ChatInfo::from_result_json(raw, &chat_id))
            }
            PendingKind::Sent { op, chat_id } => {
                let result = SendResult::from_result_json(raw);
                if result.declined {
                    self.log(
                        Level::Warn,
                        format!(
                            "relay {op} DECLINED for {}: {}",
                            chat_id.as_deref().unwrap_or("-"),
                            crate::outcome::decline_error(&result)
                        ),
                    );
                }
                Completion::Sent(result)
            }
        };
        self.complete(p.request, completion);
        if let Some(sd) = &self.shutdown
            && sd.drain_deadline.is_some()
            && self.pending.is_empty()
        {
            self.finish_shutdown();
        }
    }

    // ----- deliveries ------------------------------------------------------

    /// Acks a buffered delivery that arrived on `conn`. A `bufferId` names
    /// an entry of the connector's per-instance buffer, not of one
    /// connection (§2.5: acks are idempotent connector-side), so a verdict
    /// given after a re-dial is acked on the current connection once it is
    /// ready: otherwise every delivery accepted across a re-dial (the
    /// overload drain re-dials on purpose) comes back as a replay, and past
    /// `seen_capacity` as a duplicate.
    fn ack(&mut self, conn: u32, buffer_id: String) {
        let target = match self.phase {
            Phase::Ready { conn: live, .. } => Some(live),
            Phase::Handshaking { conn: live, .. } if live == conn => Some(live),
            _ => None,
        };
        if let Some(live) = target {
            self.stats.acks += 1;
            self.send_frame(live, &GatewayFrame::InboundAck { buffer_id }, None);
        }
    }

    fn admit(
        &mut self,
        now: Now,
        conn: u32,
        event: MessageEvent,
        buffer_id: Option<String>,
        key: Option<String>,
    ) {
        let t = now.mono_ns;
        if let Some(k) = &key {
            if self.seen.contains(k) {
                self.stats.dedupe_hits += 1;
                self.log(
                    Level::Info,
                    format!("relay inbound dropped as replay: {}", truncate(k, 128)),
                );
                if let Some(b) = buffer_id {
                    self.ack(conn, b);
                }
                return;
            }
            if let Some(owner) = self.key_owner.get(k).copied()
                && let Some(f) = self.in_flight.get_mut(&owner)
            {
                self.stats.dedupe_hits += 1;
                // Only buffered copies need an answer (an ack once the owner
                // is accepted); a few per key is plenty, the rest are replayed.
                if let Some(b) = buffer_id
                    && f.duplicates.len() < MAX_DUPLICATES_PER_KEY
                    && !f
                        .duplicates
                        .iter()
                        .any(|(c, d)| *c == conn && d.as_deref() == Some(&b))
                {
                    f.duplicates.push((conn, Some(b)));
                }
                return;
            }
        }
        // Live frames before the connector's answer to `going_idle` are the
        // flip window; after an ack, or once it went unanswered, they mean
        // the connector ignores it.
        let connector_ignores_idle = self.overload_idle || self.idle_timed_out_on == Some(conn);
        if connector_ignores_idle
            && self.in_flight.len() >= self.cfg.max_undelivered.saturating_mul(2).max(2)
        {
            // The connector ignores `going_idle` and the gateway is far
            // behind: close so the connector buffers, rather than grow.
            self.log(
                Level::Warn,
                "relay gateway far behind and the connector keeps sending; closing to shed load",
            );
            self.close(conn, CLOSE_TRY_AGAIN_LATER, "gateway overloaded");
            self.socket_lost(now, conn, CLOSE_TRY_AGAIN_LATER, "gateway overloaded", true);
            return;
        }
        if self.in_flight.len() >= self.cfg.max_undelivered {
            self.request_overload_idle(t, conn);
            if buffer_id.is_some() {
                // The connector keeps it and replays it once we have caught up.
                self.log(
                    Level::Warn,
                    "relay buffered inbound left unacked: gateway overloaded",
                );
                return;
            }
        }
        self.routes.capture(&event);
        // The reply to this message needs the route: keep it until the
        // gateway's verdict (a reply made before then is pending and pins
        // it on its own).
        self.routes.pin(&event.source.chat_id);
        let delivery = self.next_delivery;
        self.next_delivery += 1;
        if let Some(k) = &key {
            self.key_owner.insert(k.clone(), delivery);
        }
        self.in_flight.insert(
            delivery,
            InFlight {
                key,
                chat_id: event.source.chat_id.clone(),
                buffer_id: buffer_id.clone(),
                conn,
                duplicates: Vec::new(),
            },
        );
        self.stats.deliveries += 1;
        let json = event.to_gateway_json(self.cfg.authorization_is_upstream);
        self.outputs.push_back(Output::Deliver(Delivery {
            delivery,
            buffer_id,
            event: Box::new(event),
            json,
        }));
    }

    fn on_verdict(&mut self, delivery: u64, accepted: bool) {
        let Some(f) = self.in_flight.remove(&delivery) else {
            self.log(
                Level::Debug,
                format!("relay verdict for unknown delivery {delivery}"),
            );
            return;
        };
        if let Some(k) = &f.key {
            self.key_owner.remove(k);
        }
        self.routes.unpin(&f.chat_id);
        if !accepted {
            return;
        }
        if let Some(b) = f.buffer_id {
            self.ack(f.conn, b);
        }
        for (conn, b) in f.duplicates {
            if let Some(b) = b {
                self.ack(conn, b);
            }
        }
        if let Some(k) = f.key {
            self.seen.insert(k);
        }
    }

    fn request_overload_idle(&mut self, t: u64, conn: u32) {
        if self.overload_idle || self.idle_wait.is_some() || self.shutdown.is_some() {
            return;
        }
        if let Phase::Ready { .. } = self.phase {
            self.log(
                Level::Warn,
                format!(
                    "relay gateway has {} undelivered messages; asking the connector to buffer",
                    self.in_flight.len()
                ),
            );
            self.send_frame(conn, &GatewayFrame::GoingIdle, None);
            self.idle_wait = Some(IdleWait {
                purpose: IdlePurpose::Overload,
                deadline: t.saturating_add(ms(self.cfg.going_idle_timeout_ms)),
            });
        }
    }

    /// Once overloaded-and-idle and caught up, re-dial to drain the replay.
    fn maybe_leave_overload(&mut self, now: Now) {
        if !self.overload_idle
            || self.in_flight.len() > self.cfg.max_undelivered / 2
            || !self.pending.is_empty()
            || self.shutdown.is_some()
            || self.idle_wait.is_some()
            || self.hold_until.is_some()
        {
            return;
        }
        if let Phase::Ready { conn, .. } = self.phase {
            self.log(
                Level::Info,
                "relay caught up; re-dialing to drain the connector's buffer",
            );
            self.close(conn, CLOSE_NORMAL, "draining replay");
            self.overload_idle = false;
            self.decoder.reset();
            self.dial(now);
            // A re-dial of our own making is no outage: requests made before
            // it opens wait for it (bounded by their timeout) instead of
            // failing as "not connected".
            self.drain_redial = true;
        }
    }

    // ----- commands --------------------------------------------------------

    fn on_command(&mut self, now: Now, request: u64, command: Command<'_>) {
        match command {
            Command::Send {
                chat_id,
                content,
                reply_to,
                metadata,
                platform,
            } => {
                let tag = match platform {
                    Some(p) if !self.fronts_platform(p) => {
                        self.complete(request, Completion::Sent(SendResult::not_fronted(p)));
                        return;
                    }
                    Some(p) => Some(p.to_owned()),
                    None => self.routes.platform(chat_id).map(str::to_owned),
                };
                self.check_route("send", chat_id);
                let metadata = self.wire_metadata(chat_id, metadata);
                let action = Action::Send {
                    chat_id: chat_id.to_owned(),
                    content: content.to_owned(),
                    reply_to: reply_to.map(str::to_owned),
                    metadata,
                };
                self.outbound(now, request, action, tag, None);
            }
            Command::Edit {
                chat_id,
                message_id,
                content,
                metadata,
            } => {
                let tag = self.routes.platform(chat_id).map(str::to_owned);
                self.check_route("edit", chat_id);
                let metadata = self.wire_metadata(chat_id, metadata);
                let action = Action::Edit {
                    chat_id: chat_id.to_owned(),
                    message_id: message_id.to_owned(),
                    content: content.to_owned(),
                    metadata,
                };
                self.outbound(now, request, action, tag, None);
            }
            Command::Typing {
                chat_id,
                metadata,
                content,
            } => {
                let tag = self.routes.platform(chat_id).map(str::to_owned);
                self.check_route("typing", chat_id);
                let metadata = self.wire_metadata(chat_id, metadata);
                let action = Action::Typing {
                    chat_id: chat_id.to_owned(),
                    metadata,
                    content: content.map(str::to_owned),
                };
                self.outbound(now, request, action, tag, None);
            }
            Command::FollowUp {
                session_key,
                kind,
                content,
                metadata,
            } => {
                let prefix = kind.split('.').next().unwrap_or("");
                let tag = self.fronts_platform(prefix).then(|| prefix.to_owned());
                let mut metadata = parse_object(metadata).unwrap_or_default();
                strip_internal_markers(&mut metadata);
                let action = Action::FollowUp {
                    session_key: session_key.to_owned(),
                    kind: kind.to_owned(),
                    content: content.to_owned(),
                    metadata,
                };
                self.outbound(now, request, action, tag, None);
            }
            Command::GetChatInfo { chat_id } => {
                if self.live_conn().is_none() || !self.default_desc.supports_op("get_chat_info") {
                    self.complete(request, Completion::ChatInfo(ChatInfo::local(chat_id)));
                    return;
                }
                let action = Action::GetChatInfo {
                    chat_id: chat_id.to_owned(),
                };
                self.outbound(now, request, action, None, Some(chat_id.to_owned()));
            }
            Command::RawAction { action, platform } => {
                self.raw_action(now, request, action, platform)
            }
            Command::Interrupt {
                session_key,
                reason,
            } => {
                match self.live_conn() {
                    Some(conn) => {
                        let frame = GatewayFrame::Interrupt {
                            session_key: session_key.to_owned(),
                            reason: reason.map(str::to_owned),
                        };
                        self.send_frame(conn, &frame, None);
                    }
                    None => self.log(Level::Warn, "relay interrupt not sent: not connected"),
                }
                self.complete(request, Completion::Done);
            }
            Command::Shutdown => self.on_shutdown(now, request),
            Command::GoDormant => self.on_go_dormant(now, request),
            Command::HoldRedial => {
                self.hold_until = Some(now.mono_ns.saturating_add(ms(self.cfg.redial_hold_max_ms)));
                self.complete(request, Completion::Done);
            }
            Command::ReleaseRedial => {
                self.hold_until = None;
                self.complete(request, Completion::Done);
                if let Phase::Waiting { dial_at } = self.phase
                    && now.mono_ns >= dial_at
                {
                    self.dial(now);
                }
            }
        }
    }

    /// Reports a reply to a chat whose route was known but evicted: it goes
    /// out without its routing keys, which a connector may decline, so it
    /// is counted and logged instead of going out silently.
    fn check_route(&mut self, op: &str, chat_id: &str) {
        if self.routes.is_forgotten(chat_id) {
            self.stats.route_misses += 1;
            self.log(
                Level::Warn,
                format!(
                    "relay {op} to chat {} goes out without its route: the routing cache forgot it (route_capacity {})",
                    truncate(chat_id, 64),
                    self.cfg.route_capacity
                ),
            );
        }
    }

    fn wire_metadata(&mut self, chat_id: &str, metadata: &str) -> Map<String, Value> {
        let caller = match parse_object(metadata) {
            Some(m) => m,
            None => {
                if !metadata.trim().is_empty() {
                    self.log(
                        Level::Warn,
                        "relay metadata is not a JSON object; sending {}",
                    );
                }
                Map::new()
            }
        };
        self.routes.reattach(chat_id, &caller)
    }

    fn raw_action(&mut self, now: Now, request: u64, action: &str, platform: Option<&str>) {
        let Some(mut action) = parse_object(action) else {
            let r = SendResult::failure("relay action rejected: not a JSON object");
            self.complete(request, Completion::Sent(r));
            return;
        };
        let op = match action.get("op") {
            Some(Value::String(op)) if !op.is_empty() => op.clone(),
            _ => {
                let r = SendResult::failure("relay action rejected: `op` missing");
                self.complete(request, Completion::Sent(r));
                return;
            }
        };
        let chat_id = action
            .get("chat_id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let Some(p) = platform
            && !self.fronts_platform(p)
        {
            self.complete(request, Completion::Sent(SendResult::not_fronted(p)));
            return;
        }
        let desc = match platform {
            Some(p) => self.descriptor(Some(p)),
            None => self.descriptor_for_chat(chat_id.as_deref()),
        };
        // `delete` and `draft` have no legacy fallback (§3.4).
        let allowed = if op == "delete" || op == "draft" {
            desc.lists_op(&op)
        } else {
            desc.supports_op(&op)
        };
        if !allowed {
            let r = SendResult::failure(&format!("relay op {op} not supported by the connector"));
            self.complete(request, Completion::Sent(r));
            return;
        }
        let mut tag = platform.map(str::to_owned);
        if let Some(chat) = &chat_id {
            self.check_route(&op, chat);
            let caller = match action.remove("metadata") {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            };
            action.insert(
                "metadata".to_owned(),
                Value::Object(self.routes.reattach(chat, &caller)),
            );
            if tag.is_none() {
                tag = self.routes.platform(chat).map(str::to_owned);
            }
        } else if let Some(Value::Object(m)) = action.get_mut("metadata") {
            strip_internal_markers(m);
        }
        self.outbound(now, request, Action::Raw(action), tag, None);
    }

    fn outbound(
        &mut self,
        now: Now,
        request: u64,
        action: Action,
        platform: Option<String>,
        chat_info: Option<String>,
    ) {
        let fail = |m: &mut Machine, result: SendResult| {
            let completion = match &chat_info {
                Some(chat) => Completion::ChatInfo(ChatInfo::local(chat)),
                None => Completion::Sent(result),
            };
            m.complete(request, completion);
        };
        let closing = self.is_terminal()
            || self
                .shutdown
                .as_ref()
                .is_some_and(|s| s.drain_deadline.is_some());
        if closing {
            return fail(self, SendResult::transport_closed());
        }
        let conn = self.live_conn();
        let hold = conn.is_none() && self.drain_redial;
        if conn.is_none() && !hold {
            return fail(self, SendResult::not_connected());
        }
        if self.pending.len() >= self.cfg.max_pending {
            let r = SendResult::failure(&format!(
                "relay pending limit reached ({} requests awaiting results)",
                self.cfg.max_pending
            ));
            return fail(self, r);
        }
        let request_id = self.rng.request_id();
        let bot_id = platform.as_ref().and_then(|p| {
            self.identities
                .iter()
                .find(|i| &i.platform == p && !i.bot_id.is_empty())
                .map(|i| i.bot_id.clone())
        });
        let kind = match chat_info {
            Some(chat_id) => PendingKind::ChatInfo { chat_id },
            None => PendingKind::Sent {
                op: action.op().to_owned(),
                chat_id: action.chat_id().map(str::to_owned),
            },
        };
        let frame = GatewayFrame::Outbound {
            request_id: request_id.clone(),
            action,
            platform,
            bot_id,
        };
        self.seq += 1;
        let timeout_key = (
            now.mono_ns.saturating_add(ms(self.cfg.outbound_timeout_ms)),
            self.seq,
        );
        self.timeouts.insert(timeout_key, request_id.clone());
        if let Some(chat) = kind.chat_id() {
            self.routes.pin(chat);
        }
        self.pending.insert(
            request_id.clone(),
            Pending {
                request,
                kind,
                timeout_key,
            },
        );
        match conn {
            Some(conn) => self.send_frame(conn, &frame, Some(request_id)),
            None => self.held.push((request_id, frame)),
        }
    }

    /// The drain re-dial failed: held requests were never written.
    fn fail_held(&mut self) {
        self.drain_redial = false;
        for (request_id, _) in std::mem::take(&mut self.held) {
            if let Some(p) = self.take_pending(&request_id) {
                let completion = match p.kind {
                    PendingKind::ChatInfo { chat_id } => {
                        Completion::ChatInfo(ChatInfo::local(&chat_id))
                    }
                    PendingKind::Sent { .. } => Completion::Sent(SendResult::not_connected()),
                };
                self.complete(p.request, completion);
            }
        }
    }

    fn take_pending(&mut self, request_id: &str) -> Option<Pending> {
        let p = self.pending.remove(request_id)?;
        self.timeouts.remove(&p.timeout_key);
        self.unpin_pending(&p);
        Some(p)
    }

    fn unpin_pending(&mut self, p: &Pending) {
        if let Some(chat) = p.kind.chat_id() {
            self.routes.unpin(chat);
        }
    }

    fn fail_all_pending(&mut self, result: SendResult) {
        self.fail_held();
        let mut all: Vec<Pending> = self.pending.drain().map(|(_, p)| p).collect();
        self.timeouts.clear();
        for p in &all {
            self.unpin_pending(p);
        }
        // Complete in issue order so callers see a stable sequence.
        all.sort_by_key(|p| p.timeout_key.1);
        for p in all {
            let completion = match p.kind {
                PendingKind::ChatInfo { chat_id } => {
                    Completion::ChatInfo(ChatInfo::local(&chat_id))
                }
                PendingKind::Sent { .. } => Completion::Sent(result.clone()),
            };
            self.complete(p.request, completion);
        }
    }

    // ----- shutdown and dormancy -------------------------------------------

    fn on_shutdown(&mut self, now: Now, request: u64) {
        if self.is_terminal() {
            self.complete(request, Completion::Done);
            return;
        }
        if let Some(sd) = &mut self.shutdown {
            sd.requests.push(request);
            return;
        }
        self.shutdown = Some(ShutdownState {
            requests: vec![request],
            drain_deadline: None,
        });
        match self.phase {
            Phase::Ready { conn, .. } => {
                if let Some(wait) = self.idle_wait.take()
                    && let IdlePurpose::Dormant { request } = wait.purpose
                {
                    self.complete(request, Completion::Flag(false));
                }
                if self.overload_idle {
                    // The connector already buffers; go straight to the drain.
                    self.begin_drain(now.mono_ns);
                } else {
                    self.send_frame(conn, &GatewayFrame::GoingIdle, None);
                    self.idle_wait = Some(IdleWait {
                        purpose: IdlePurpose::Shutdown,
                        deadline: now
                            .mono_ns
                            .saturating_add(ms(self.cfg.going_idle_timeout_ms)),
                    });
                }
            }
            Phase::Handshaking { conn, .. } => {
                self.close(conn, CLOSE_NORMAL, "shutdown");
                self.finish_shutdown();
            }
            Phase::Connecting { conn } => {
                self.close(conn, CLOSE_NORMAL, "shutdown");
                self.finish_shutdown();
            }
            _ => self.finish_shutdown(),
        }
    }

    fn begin_drain(&mut self, t: u64) {
        let Some(sd) = &mut self.shutdown else {
            return;
        };
        sd.drain_deadline = Some(t.saturating_add(ms(self.cfg.drain_grace_ms)));
        if self.pending.is_empty() {
            self.finish_shutdown();
        }
    }

    fn finish_shutdown(&mut self) {
        match self.phase {
            Phase::Connecting { conn }
            | Phase::Handshaking { conn, .. }
            | Phase::Ready { conn, .. } => self.close(conn, CLOSE_NORMAL, "shutdown"),
            _ => {}
        }
        self.phase = Phase::Stopped;
        self.decoder.reset();
        self.hold_until = None;
        // Whatever is still pending was written: the connector may have
        // applied it (§1.6, "waiter failed by teardown").
        self.fail_all_pending(SendResult::send_failed(
            crate::outcome::TRANSPORT_CLOSED,
            true,
        ));
        self.release_waiters();
        self.report(State::Stopped, "shutdown");
    }

    fn on_go_dormant(&mut self, now: Now, request: u64) {
        let conn = match self.phase {
            Phase::Ready { conn, .. } if self.idle_wait.is_none() && self.shutdown.is_none() => {
                conn
            }
            _ => {
                self.complete(request, Completion::Flag(false));
                return;
            }
        };
        self.send_frame(conn, &GatewayFrame::GoingIdle, None);
        self.idle_wait = Some(IdleWait {
            purpose: IdlePurpose::Dormant { request },
            deadline: now
                .mono_ns
                .saturating_add(ms(self.cfg.going_idle_timeout_ms)),
        });
    }
}

/// The replay dedupe key of an inbound event (§6.2): platform, chat and
/// message id; `None` (no dedupe) without a chat or message id.
pub fn dedupe_key(event: &MessageEvent) -> Option<String> {
    let message_id = event.message_id.as_deref().filter(|m| !m.is_empty())?;
    if event.source.chat_id.is_empty() {
        return None;
    }
    Some(bounded_key(format!(
        "{}:{}:{}",
        event.source.platform, event.source.chat_id, message_id
    )))
}

/// Longest dedupe key kept verbatim; longer ones are replaced by a digest so
/// the 512-key seen-set stays small whatever ids a connector sends.
pub const MAX_KEY_BYTES: usize = 256;

/// `key` itself, or `sha256:<hex>` of it when it is longer than
/// [`MAX_KEY_BYTES`].
pub fn bounded_key(key: String) -> String {
    use sha2::Digest;
    if key.len() <= MAX_KEY_BYTES {
        return key;
    }
    let digest = sha2::Sha256::digest(key.as_bytes());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max_chars).collect();
        t.push('\u{2026}');
        t
    }
}
