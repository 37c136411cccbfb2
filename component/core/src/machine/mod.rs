//! The connection state machine (spec §1.4-§1.6, §2, §5.4, §6.2-§6.19).
//!
//! One deterministic, sans-IO object: inputs (socket events, timers, gateway
//! commands, delivery verdicts) arrive with `now`; outputs (dials, frames,
//! closes, the one deadline, deliveries, completions, state, fatal, logs)
//! are drained with [`Machine::poll_output`]. Every command completes exactly
//! once; inputs for a connection that is no longer current are ignored.

#[cfg(test)]
mod card_tests;
mod config;
mod deliveries;
#[cfg(test)]
mod draft_tests;
mod drafts;
mod egress;
mod idle;
mod io;
mod labels;
#[cfg(test)]
mod lane_tests;
mod lanes;
mod link;
mod media;
#[cfg(test)]
mod media_tests;
mod outbound;
#[cfg(test)]
mod prompt_tests;
mod prompts;
mod receive;
#[cfg(test)]
mod sim;
mod stats;
#[cfg(test)]
mod tests;
mod timers;

pub use crate::bounded::{BoundedSet, Rng};
pub use config::*;
pub use io::*;
pub use stats::Stats;

use deliveries::Deliveries;
use drafts::Drafts;
use egress::Knobs;
pub use egress::has_link;
use idle::{Idle, IdlePurpose, IdleWait};
use labels::Labels;
pub use labels::{ChatLabels, LABEL_CAPACITY};
use lanes::Lanes;
pub use lanes::{ReactionSet, reaction_set, task_card_id, thread_create_name, thread_rename_name};
use link::{Link, Phase};
use media::Media;
pub use media::{
    MEDIA_KINDS, MEDIA_OP_UNAVAILABLE, MEDIA_UNAVAILABLE, MediaConfig, MediaOutcome, MediaRequest,
    MediaSend,
};
use outbound::{Outbound, PendingKind};
use prompts::Prompts;
pub use prompts::{
    NO_LONGER_WAITING, PROMPT_TTL_MS, PromptAnswer, PromptOption, PromptSend, valid_nonce,
    valid_prompt_part,
};
use receive::Receive;
use stats::LabelCounts;

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
use std::collections::{BTreeMap, VecDeque};

// Maps keyed by values this machine generates (random request ids, delivery
// counters) use a fast unkeyed hash: a connector cannot choose those keys,
// so there are no collisions to force. Maps keyed by connector-sent values
// (routes, dedupe keys) use a keyed hash (`crate::keyed`).
use crate::keyed::KeyedMap;
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
    /// `platform_extra` is not a JSON object.
    PlatformExtra,
    /// `prompt_nonce` is not 6 lowercase hex digits.
    PromptNonce,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Url(e) => write!(f, "configuration rejected: {e}"),
            ConfigError::PromptNonce => write!(
                f,
                "configuration rejected: prompt-nonce must be 6 lowercase hex digits"
            ),
            ConfigError::PlatformExtra => write!(
                f,
                "configuration rejected: platform-extra is not a JSON object"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The relay adapter's protocol state machine: the sub-states below own
/// their data; this struct composes them with the configuration, the
/// output queue, the routing cache and the statistics.
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

    /// Connection lifecycle: phase, dials, 4401 retry, ladder, redial hold.
    link: Link,
    /// Bytes to frames, descriptors.
    receive: Receive,
    /// Deliveries awaiting verdicts, their owners, the seen-set.
    deliveries: Deliveries,
    /// Requests awaiting results, their timeouts, held frames.
    outbound: Outbound,
    /// Going idle: shutdown, dormancy, overload.
    idle: Idle,
    /// The 0.2 lanes: auto-thread feedback and its waiters.
    lanes: Lanes,
    /// The operator's egress knobs (format hints, Slack rules).
    knobs: Knobs,
    /// Native draft streams: armed streams and seal tombstones.
    drafts: Drafts,
    /// Minted prompts awaiting an answer, resolved ids.
    prompts: Prompts,
    /// Media downloads and uploads in progress, downloaded files.
    media: Media,
    /// The chat-label record of the Discord text lane (§7.7).
    labels: Labels,
    /// The validated command manifest for the Discord `hello` (§9.6).
    manifest: Option<Value>,
    /// Why manifest entries were skipped, logged at start.
    manifest_warnings: Vec<String>,
    /// The clocks of the input being handled (a seal retry issued from a
    /// completion needs them).
    now: Now,
    routes: RoutingCache,

    last_deadline: Option<u64>,
    reported: Option<(State, String)>,
    stats: Stats,
    /// `stats.frames_in`, `frames_out` and `skipped`, counted cheaply.
    frames_in: LabelCounts,
    frames_out: LabelCounts,
    skipped: LabelCounts,
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
        let knobs = Knobs::parse(&cfg.platform_extra).map_err(|_| ConfigError::PlatformExtra)?;
        let manifest = crate::manifest::parse(&cfg.command_manifest);
        let mut rng = Rng::new(seed);
        let nonce = if cfg.prompt_nonce.is_empty() {
            format!("{:06x}", rng.next_u64() & 0x00ff_ffff)
        } else if valid_nonce(&cfg.prompt_nonce) {
            cfg.prompt_nonce.clone()
        } else {
            return Err(ConfigError::PromptNonce);
        };
        let identities = cfg.effective_identities();
        let primary = identities
            .first()
            .map(|i| i.platform.clone())
            .unwrap_or_default();
        Ok(Machine {
            identities,
            url,
            rng,
            outputs: VecDeque::new(),
            write_tags: VecDeque::new(),
            last_polled_send: None,
            link: Link::new(),
            receive: Receive::new(cfg.max_line_bytes, &primary),
            deliveries: Deliveries::new(cfg.seen_capacity),
            outbound: Outbound::default(),
            idle: Idle::default(),
            lanes: Lanes::default(),
            knobs,
            drafts: Drafts::default(),
            prompts: Prompts::new(nonce),
            media: Media::default(),
            labels: Labels::default(),
            manifest: (!manifest.commands.is_empty()).then_some(Value::Array(manifest.commands)),
            manifest_warnings: manifest.warnings,
            now: Now::default(),
            routes: RoutingCache::new(cfg.route_capacity),
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
        self.now = now;
        let t = now.mono_ns;
        let mut force_deadline = false;
        match input {
            Input::Start => {
                for warning in std::mem::take(&mut self.manifest_warnings) {
                    self.log(Level::Warn, warning);
                }
                if self.link.phase == Phase::NotStarted {
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
            Input::AcceptDelivery(d) => self.on_verdict(now, d, true),
            Input::RejectDelivery(d) => self.on_verdict(now, d, false),
            Input::Command { request, command } => self.on_command(now, request, command),
            Input::MediaDone { job, outcome } => self.on_media_done(now, job, outcome),
            Input::PrimeLabels(labels) => self.prime_labels(labels),
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
        match self.link.phase {
            Phase::NotStarted | Phase::Connecting { .. } => State::Connecting,
            Phase::Handshaking { .. } => State::Handshaking,
            Phase::Ready { .. } if self.idle.overload => State::Idle,
            Phase::Ready { .. } => State::Ready,
            Phase::Waiting { .. } if self.link.dormant => State::Dormant,
            Phase::Waiting { .. } => State::Reconnecting,
            Phase::Disabled => State::Disabled,
            Phase::Stopped => State::Stopped,
        }
    }

    /// The descriptor for `platform`, or the default one.
    pub fn descriptor(&self, platform: Option<&str>) -> &CapabilityDescriptor {
        platform
            .and_then(|p| self.receive.platform_desc.get(p))
            .unwrap_or(&self.receive.default_desc)
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
        s.pending = self.outbound.pending.len() - self.outbound.background;
        s.pending_background = self.outbound.background;
        s.undelivered = self.deliveries.in_flight.len();
        s.routes = self.routes.len();
        s.route_pins = self.routes.pinned();
        s.reply_holds = self.reply_holds();
        s.seen = self.deliveries.seen.len();
        (s.media_files, s.media_bytes) = self.media.files();
        s
    }

    /// The routing cache (read-only).
    pub fn routes(&self) -> &RoutingCache {
        &self.routes
    }

    // ----- output helpers --------------------------------------------------
    pub(super) fn log(&mut self, level: Level, message: impl Into<String>) {
        self.outputs.push_back(Output::Log {
            level,
            message: message.into(),
        });
    }

    pub(super) fn report(&mut self, state: State, detail: impl Into<String>) {
        let detail = detail.into();
        if self.reported.as_ref() == Some(&(state, detail.clone())) {
            return;
        }
        self.reported = Some((state, detail.clone()));
        self.outputs.push_back(Output::State { state, detail });
        if matches!(state, State::Stopped | State::Disabled) {
            self.end_auto_thread_waits();
        }
    }

    pub(super) fn complete(&mut self, request: u64, completion: Completion) {
        self.outputs.push_back(Output::Complete {
            request,
            completion,
        });
    }

    pub(super) fn send_frame(&mut self, conn: u32, frame: &GatewayFrame, tag: Option<String>) {
        self.frames_out.bump(gateway_label(frame));
        self.outputs.push_back(Output::SendText {
            conn,
            text: frame.encode(),
        });
        self.write_tags.push_back(tag);
    }

    pub(super) fn close(&mut self, conn: u32, code: u16, reason: &str) {
        self.outputs.push_back(Output::Close {
            conn,
            code,
            reason: reason.to_owned(),
        });
    }

    /// The connection frames can be written to.
    pub(super) fn live_conn(&self) -> Option<u32> {
        match self.link.phase {
            Phase::Handshaking { conn, .. } | Phase::Ready { conn, .. } => Some(conn),
            _ => None,
        }
    }

    pub(super) fn is_terminal(&self) -> bool {
        matches!(self.link.phase, Phase::Disabled | Phase::Stopped)
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
