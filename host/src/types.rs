//! Plain public types of the API: connection [`State`], [`SendResult`],
//! [`ChatInfo`], [`Health`], and the interface version. The bottom layer:
//! no wasmtime, no channels.

use serde_json::{Value, json};

/// The newest WIT interface version this host speaks: the one the built-in
/// component is built against (`wit/v0.2`, a draft until released).
pub const HOST_API_VERSION: &str = "0.2.0";

/// Every WIT interface version this host binds, oldest first (one folder
/// under `wit/` each). A component exports one of them, and its
/// `api-version` must report the same major and minor.
pub const SUPPORTED_API_VERSIONS: &[&str] = &["0.1.0", "0.2.0"];

/// A health snapshot of one adapter ([`AdapterHandle::health`](crate::AdapterHandle::health)); answered by
/// the host even while the component is restarting or down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The component's connection state; `None` while no instance is live
    /// (restarting, or down).
    pub state: Option<State>,
    /// Outbound requests awaiting a result (0 without a live instance).
    pub pending: u64,
    /// Deliveries awaiting the gateway's accept/reject (0 without a live
    /// instance).
    pub undelivered: u64,
    /// Linear memory the live instance holds, in bytes (0 without one).
    /// Linear memory never shrinks, so this is also the instance's peak.
    pub guest_memory_bytes: usize,
    /// The highest `guest_memory_bytes` of any instance of this adapter.
    pub guest_memory_peak_bytes: usize,
    /// The cap ([`HostLimits::memory_bytes`](crate::HostLimits::memory_bytes)).
    pub memory_limit_bytes: usize,
    /// The longest export call of any instance of this adapter, in
    /// milliseconds (1 ms epoch ticks, rounded down); compare with
    /// [`HostLimits::call_budget`](crate::HostLimits::call_budget).
    pub guest_call_max_ms: u64,
    /// Re-instantiations since the adapter was spawned.
    pub restarts: u64,
    /// Why the adapter is down for good (restart budget spent); `None` while
    /// it runs.
    pub down: Option<String>,
}

/// Connection state as a gateway sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Dialing the connector.
    Connecting,
    /// Socket open, waiting for the first descriptor.
    Handshaking,
    /// A descriptor is applied; traffic flows.
    Ready,
    /// Waiting out the reconnect ladder.
    Reconnecting,
    /// `going_idle` acknowledged; the connector buffers inbound.
    Idle,
    /// Closed on purpose by `go-dormant`; re-dials on the dormant cadence.
    Dormant,
    /// Credentials revoked (terminal 4401); nothing more is dialed.
    Disabled,
    /// Shut down; nothing more is dialed.
    Stopped,
}

impl State {
    /// The WIT name (`connecting`, `ready`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Handshaking => "handshaking",
            State::Ready => "ready",
            State::Reconnecting => "reconnecting",
            State::Idle => "idle",
            State::Dormant => "dormant",
            State::Disabled => "disabled",
            State::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Outcome of an outbound operation, real or synthesized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendResult {
    /// Whether the connector reported success.
    pub success: bool,
    /// Platform id of the sent message.
    pub message_id: Option<String>,
    /// Error text on failure.
    pub error: Option<String>,
    /// Error code (e.g. `egress_declined`).
    pub code: Option<String>,
    /// The connector may have applied the frame (timeout, lost ack, instance
    /// died after the request reached it).
    pub ambiguous: bool,
    /// A definite egress refusal; never retry or fall back.
    pub declined: bool,
    /// Thread the message went to, if the connector created one.
    pub thread_id: Option<String>,
    /// Name of that auto-created thread.
    pub auto_thread_name: Option<String>,
    /// The result object as JSON.
    pub raw: String,
}

impl SendResult {
    /// A failed result with `error`, synthesized by the host.
    pub fn failed(error: impl Into<String>, ambiguous: bool) -> Self {
        let error = error.into();
        let mut raw = json!({"success": false, "error": error});
        if ambiguous {
            raw["ambiguous"] = Value::Bool(true);
        }
        Self {
            success: false,
            message_id: None,
            error: Some(error),
            code: None,
            ambiguous,
            declined: false,
            thread_id: None,
            auto_thread_name: None,
            raw: raw.to_string(),
        }
    }
}

/// Answer to `get_chat_info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatInfo {
    /// Chat name.
    pub name: String,
    /// Chat type (`dm`, `group`, ...).
    pub chat_type: String,
}
