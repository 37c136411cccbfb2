//! The public face of one adapter: [`Adapter::spawn`], the cloneable
//! [`AdapterHandle`] (commands and capability queries, each resolving exactly
//! once) and the [`EventStream`] of messages, interrupts, state changes and
//! fatal errors. Plain Rust types; the bindgen types stay inside the crate.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::admission::{Admission, Refusal, Slot};
use crate::config::AdapterConfig;
use crate::plugin::{Plugin, PluginError};

/// Errors of the adapter API (commands that do not return a [`SendResult`]).
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// The adapter stopped (shut down, all handles dropped, or start refused).
    #[error("relay adapter stopped")]
    Stopped,
    /// The component trapped and is being re-instantiated; try again later.
    #[error("relay adapter restarting")]
    Restarting,
    /// Loading or instantiating the component failed.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The component refused the configuration (`start` returned an error).
    #[error("relay adapter refused its configuration: {0}")]
    Start(String),
    /// The component trapped during the call.
    #[error("relay component trapped: {0}")]
    Trap(String),
    /// The component answered with something unexpected.
    #[error("relay component misbehaved: {0}")]
    Guest(String),
    /// Every request slot (`max_pending`) stayed busy for the caller's
    /// whole admission timeout
    /// ([`AdapterConfig::admission_timeout`](crate::AdapterConfig::admission_timeout),
    /// or [`AdapterHandle::with_admission_timeout`]). Definite: nothing was
    /// sent.
    #[error("relay admission timed out: all {slots} request slots stayed busy for {waited:?}")]
    AdmissionTimedOut {
        /// The number of slots (`max_pending`).
        slots: u32,
        /// How long the caller waited.
        waited: Duration,
    },
    /// The adapter is shutting down or stopped: a request still waiting
    /// for admission, or made after `shutdown`, is not sent.
    #[error("{}", relay_core::outcome::TRANSPORT_CLOSED)]
    Closed,
    /// The adapter is down for good: its restart budget
    /// ([`HostLimits::restart_budget`](crate::HostLimits::restart_budget))
    /// is spent. The text says why (the last trap included).
    #[error("relay adapter down: {0}")]
    Down(String),
}

/// A health snapshot of one adapter ([`AdapterHandle::health`]); answered by
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

/// Something the adapter reports to the gateway.
// Most events are messages, so boxing the large variant would save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Event {
    /// An inbound message; answer it with [`MessageEvent::accept`] or
    /// [`MessageEvent::reject`] (dropping it rejects).
    Message(MessageEvent),
    /// The connector asked to interrupt a session's running turn.
    Interrupt {
        /// The session to interrupt.
        session_key: String,
        /// Its chat.
        chat_id: String,
    },
    /// The connection state changed.
    State {
        /// The new state.
        state: State,
        /// Why, when known (close reason, ...).
        detail: String,
    },
    /// A fatal condition: from the component (e.g. `relay_disabled`) or from
    /// the host: `guest_trap` and `restart_failed` (retryable: a new instance
    /// follows), `start_failed` and `restart_budget_exhausted` (not
    /// retryable: the adapter stays down and the event stream ends).
    Fatal {
        /// Stable code.
        code: String,
        /// Human-readable detail.
        message: String,
        /// Whether the adapter keeps trying.
        retryable: bool,
    },
}

/// An inbound message for the gateway with its key fields typed.
#[derive(Debug)]
pub struct MessageEvent {
    /// The component's delivery id (unique per instance).
    pub delivery: u64,
    /// Set when the connector replayed this from its durable buffer.
    pub buffer_id: Option<String>,
    /// Logical platform (`discord`, ...).
    pub platform: String,
    /// Chat id.
    pub chat_id: String,
    /// Chat type (`dm`, `group`, ...).
    pub chat_type: String,
    /// Author id.
    pub user_id: Option<String>,
    /// Tenant scope (guild, workspace).
    pub scope_id: Option<String>,
    /// Thread id.
    pub thread_id: Option<String>,
    /// Message type (`text`, `command`, ...).
    pub message_type: String,
    /// Message text.
    pub text: String,
    /// The whole normalised event as JSON with wire names.
    pub json: String,
    /// The answer handle; destructure to keep it apart from the fields.
    pub ack: DeliveryAck,
}

impl MessageEvent {
    /// The gateway took the message (it will not be replayed to it).
    pub fn accept(self) {
        self.ack.accept();
    }

    /// The gateway refused the message (the connector may replay it).
    pub fn reject(self) {
        self.ack.reject();
    }

    /// The event JSON parsed.
    pub fn json_value(&self) -> serde_json::Result<Value> {
        serde_json::from_str(&self.json)
    }
}

/// Answers one delivery exactly once; dropping it unanswered rejects.
#[derive(Debug)]
pub struct DeliveryAck {
    acks: mpsc::UnboundedSender<AckMsg>,
    instance: u64,
    delivery: u64,
    answered: bool,
}

/// A delivery answer on its way to the actor.
#[derive(Debug)]
pub(crate) struct AckMsg {
    pub instance: u64,
    pub delivery: u64,
    pub accept: bool,
}

impl DeliveryAck {
    pub(crate) fn new(acks: mpsc::UnboundedSender<AckMsg>, instance: u64, delivery: u64) -> Self {
        Self {
            acks,
            instance,
            delivery,
            answered: false,
        }
    }

    /// Accept the delivery.
    pub fn accept(mut self) {
        self.answer(true);
    }

    /// Reject the delivery.
    pub fn reject(mut self) {
        self.answer(false);
    }

    fn answer(&mut self, accept: bool) {
        if std::mem::replace(&mut self.answered, true) {
            return;
        }
        // A stopped adapter has nothing left to answer.
        let _ = self.acks.send(AckMsg {
            instance: self.instance,
            delivery: self.delivery,
            accept,
        });
    }
}

impl Drop for DeliveryAck {
    fn drop(&mut self) {
        self.answer(false);
    }
}

/// Events of one adapter, in order. Ends when the adapter stops.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::UnboundedReceiver<Event>,
}

impl EventStream {
    pub(crate) fn new(rx: mpsc::UnboundedReceiver<Event>) -> Self {
        Self { rx }
    }

    /// The next event, or `None` once the adapter stopped.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event if one is ready.
    pub fn try_next(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }
}

impl futures_util::Stream for EventStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}

/// How a command completed (host form of the WIT `completion`).
#[derive(Debug)]
pub(crate) enum Outcome {
    Sent(SendResult),
    ChatInfo(ChatInfo),
    Flag(bool),
    Done,
}

/// A command for the component; it completes through `complete`.
#[derive(Debug)]
pub(crate) enum Request {
    Send {
        chat_id: String,
        content: String,
        reply_to: Option<String>,
        metadata: String,
        platform: Option<String>,
    },
    Edit {
        chat_id: String,
        message_id: String,
        content: String,
        metadata: String,
    },
    Typing {
        chat_id: String,
        metadata: String,
        content: Option<String>,
    },
    FollowUp {
        session_key: String,
        kind: String,
        content: String,
        metadata: String,
    },
    GetChatInfo {
        chat_id: String,
    },
    RawAction {
        action: String,
        platform: Option<String>,
    },
    Interrupt {
        session_key: String,
        reason: Option<String>,
    },
    Shutdown,
    GoDormant,
    HoldRedial,
    ReleaseRedial,
}

impl Request {
    /// Whether the command can create a pending entry in the component, so
    /// it needs an admission slot first. Interrupts, shutdown, dormancy and
    /// redial holds never wait.
    fn needs_slot(&self) -> bool {
        matches!(
            self,
            Request::Send { .. }
                | Request::Edit { .. }
                | Request::Typing { .. }
                | Request::FollowUp { .. }
                | Request::GetChatInfo { .. }
                | Request::RawAction { .. }
        )
    }

    /// The chat whose route the request needs (held while it waits).
    fn route_chat(&self) -> Option<String> {
        match self {
            Request::Send { chat_id, .. }
            | Request::Edit { chat_id, .. }
            | Request::Typing { chat_id, .. }
            | Request::GetChatInfo { chat_id } => Some(chat_id.clone()),
            Request::RawAction { action, .. } => serde_json::from_str::<Value>(action)
                .ok()?
                .get("chat_id")?
                .as_str()
                .map(str::to_owned),
            _ => None,
        }
    }

    /// The command's name, for logs and metrics.
    pub(crate) fn op(&self) -> &'static str {
        match self {
            Request::Send { .. } => "send",
            Request::Edit { .. } => "edit",
            Request::Typing { .. } => "typing",
            Request::FollowUp { .. } => "follow_up",
            Request::GetChatInfo { .. } => "get_chat_info",
            Request::RawAction { .. } => "raw_action",
            Request::Interrupt { .. } => "interrupt",
            Request::Shutdown => "shutdown",
            Request::GoDormant => "go_dormant",
            Request::HoldRedial => "hold_redial",
            Request::ReleaseRedial => "release_redial",
        }
    }
}

/// A synchronous export call.
#[derive(Debug)]
pub(crate) enum Query {
    State,
    Descriptor(Option<String>),
    MaxMessageLength(Option<String>),
    MessageLen(Option<String>, String),
    SupportsOp(Option<String>, String),
    FrontsPlatform(String),
    Stats,
    Health,
    /// Hold (or release) one pin of a chat's route.
    HoldRoute {
        chat_id: String,
        hold: bool,
    },
    PrimeRoute {
        chat_id: String,
        platform: String,
        scope_id: Option<String>,
        user_id: Option<String>,
        profile: Option<String>,
    },
}

/// Answer to a [`Query`].
#[derive(Debug)]
pub(crate) enum Answer {
    State(State),
    Text(Option<String>),
    Number(u32),
    Flag(bool),
    Unit,
    Health(Health),
    /// The component's half of a health answer (state, stats JSON); the
    /// actor completes it into [`Answer::Health`].
    Guest(State, String),
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, AdapterError>>;

/// What handles send to the actor.
#[derive(Debug)]
pub(crate) enum Command {
    /// A request with its admission slot (held until it completes).
    Request(Request, Reply<Outcome>, Option<Slot>),
    Query(Query, Reply<Answer>),
}

/// Spawns adapters.
#[derive(Debug)]
pub struct Adapter;

impl Adapter {
    /// Instantiates the component, checks its `api-version`, calls `start`
    /// with `config`, and runs the adapter on its own tokio task. Must be
    /// called inside a tokio runtime. The adapter stops after a completed
    /// `shutdown`, or when every [`AdapterHandle`] is dropped.
    pub async fn spawn(
        plugin: &Plugin,
        config: AdapterConfig,
    ) -> Result<(AdapterHandle, EventStream), AdapterError> {
        crate::actor::spawn(plugin, config).await
    }
}

/// Commands and queries for one adapter; cheap to clone. Every call resolves
/// exactly once, also when the adapter stops meanwhile.
#[derive(Debug, Clone)]
pub struct AdapterHandle {
    commands: mpsc::UnboundedSender<Command>,
    /// Set by the adapter when its restart budget is spent.
    down: Arc<OnceLock<String>>,
    /// The adapter id (tracing span, metrics label).
    label: Arc<str>,
    /// Request slots shared by every handle of the adapter.
    admission: Arc<Admission>,
    /// How long this handle's calls wait for a slot.
    admission_timeout: Duration,
}

/// What a request turned into, before mapping to the public result type.
type RequestResult = Result<Outcome, RequestFailure>;

enum RequestFailure {
    /// Never reached a live instance: definitely not performed.
    Refused(AdapterError),
    /// The instance died with the request pending: outcome unknown.
    Lost,
}

impl RequestFailure {
    fn send_result(self) -> SendResult {
        match self {
            RequestFailure::Refused(AdapterError::Closed) => {
                SendResult::failed(relay_core::outcome::TRANSPORT_CLOSED, false)
            }
            RequestFailure::Refused(e) => SendResult::failed(e.to_string(), false),
            RequestFailure::Lost => SendResult::failed(AdapterError::Stopped.to_string(), true),
        }
    }

    fn error(self) -> AdapterError {
        match self {
            RequestFailure::Refused(e) => e,
            RequestFailure::Lost => AdapterError::Stopped,
        }
    }
}

fn metadata_json(metadata: Map<String, Value>) -> String {
    Value::Object(metadata).to_string()
}

impl AdapterHandle {
    pub(crate) fn new(
        commands: mpsc::UnboundedSender<Command>,
        down: Arc<OnceLock<String>>,
        label: Arc<str>,
        admission: Arc<Admission>,
        admission_timeout: Duration,
    ) -> Self {
        Self {
            commands,
            down,
            label,
            admission,
            admission_timeout,
        }
    }

    /// A handle to the same adapter whose calls wait at most `timeout` for
    /// a request slot (instead of
    /// [`AdapterConfig::admission_timeout`](crate::AdapterConfig::admission_timeout)).
    /// Cheap: use it per call, e.g.
    /// `handle.with_admission_timeout(Duration::from_secs(2)).send(...)`.
    #[must_use]
    pub fn with_admission_timeout(&self, timeout: Duration) -> AdapterHandle {
        AdapterHandle {
            admission_timeout: timeout,
            ..self.clone()
        }
    }

    /// Callers of this adapter waiting for a request slot now (every slot
    /// busy: `max_pending` requests await their results).
    pub fn admission_waiting(&self) -> usize {
        self.admission.waiting()
    }

    /// Whether the adapter is still running: not stopped, and not down for
    /// good after spending its restart budget.
    pub fn is_running(&self) -> bool {
        !self.commands.is_closed() && self.down.get().is_none()
    }

    async fn request(&self, request: Request) -> RequestResult {
        let (slot, hold) = if request.needs_slot() {
            let (slot, hold) = self.admit(&request).await?;
            (Some(slot), hold)
        } else {
            (None, None)
        };
        let (tx, rx) = oneshot::channel();
        let sent = self.commands.send(Command::Request(request, tx, slot));
        // Released after the request is queued: the actor handles it first,
        // and the request's own pending entry pins the route from then on.
        drop(hold);
        if sent.is_err() {
            return Err(RequestFailure::Refused(AdapterError::Stopped));
        }
        match rx.await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(e)) => Err(RequestFailure::Refused(e)),
            Err(_) => Err(RequestFailure::Lost),
        }
    }

    /// A request slot for `request`: at once when one is free, else in FIFO
    /// order within the admission timeout. While it waits, the route of the
    /// request's chat is held so the reply still finds it (the caller
    /// typically accepted that chat's message before replying, which
    /// released the delivery's own pin). Dropping the wait sends nothing.
    async fn admit(&self, request: &Request) -> Result<(Slot, Option<RouteHold>), RequestFailure> {
        let refused = |refusal| {
            RequestFailure::Refused(match refusal {
                // An adapter that already ended says so, as before admission.
                Refusal::Closed if self.commands.is_closed() => AdapterError::Stopped,
                Refusal::Closed => AdapterError::Closed,
                Refusal::TimedOut => AdapterError::AdmissionTimedOut {
                    slots: self.admission.capacity(),
                    waited: self.admission_timeout,
                },
            })
        };
        if let Some(slot) = self.admission.try_admit().map_err(refused)? {
            return Ok((slot, None));
        }
        let hold = request
            .route_chat()
            .map(|chat_id| RouteHold::new(&self.commands, chat_id));
        let slot = self
            .admission
            .admit(self.admission_timeout)
            .await
            .map_err(refused)?;
        Ok((slot, hold))
    }

    /// `request` timed into the outbound latency histogram under `op`.
    async fn timed(&self, request: Request) -> RequestResult {
        let op = request.op();
        let started = std::time::Instant::now();
        let result = self.request(request).await;
        crate::metrics::record_latency(&self.label, op, started.elapsed());
        result
    }

    async fn sent(&self, request: Request) -> SendResult {
        match self.timed(request).await {
            Ok(Outcome::Sent(result)) => result,
            Ok(other) => SendResult::failed(
                format!("relay component answered {other:?} to an outbound op"),
                true,
            ),
            Err(failure) => failure.send_result(),
        }
    }

    async fn done(&self, request: Request) -> Result<(), AdapterError> {
        match self.request(request).await {
            Ok(Outcome::Done) => Ok(()),
            Ok(other) => Err(AdapterError::Guest(format!("expected done, got {other:?}"))),
            Err(failure) => Err(failure.error()),
        }
    }

    async fn query(&self, query: Query) -> Result<Answer, AdapterError> {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Query(query, tx)).is_err() {
            return Err(AdapterError::Stopped);
        }
        rx.await.unwrap_or(Err(AdapterError::Stopped))
    }

    /// Send a message. `metadata` is the JSON metadata object; `platform`
    /// forces the egress platform (fails closed when not fronted).
    pub async fn send(
        &self,
        chat_id: impl Into<String>,
        content: impl Into<String>,
        reply_to: Option<String>,
        metadata: Map<String, Value>,
        platform: Option<String>,
    ) -> SendResult {
        self.sent(Request::Send {
            chat_id: chat_id.into(),
            content: content.into(),
            reply_to,
            metadata: metadata_json(metadata),
            platform,
        })
        .await
    }

    /// Edit a message.
    pub async fn edit(
        &self,
        chat_id: impl Into<String>,
        message_id: impl Into<String>,
        content: impl Into<String>,
        metadata: Map<String, Value>,
    ) -> SendResult {
        self.sent(Request::Edit {
            chat_id: chat_id.into(),
            message_id: message_id.into(),
            content: content.into(),
            metadata: metadata_json(metadata),
        })
        .await
    }

    /// Show the typing indicator; `content` is a status phrase.
    pub async fn typing(
        &self,
        chat_id: impl Into<String>,
        metadata: Map<String, Value>,
        content: Option<String>,
    ) -> SendResult {
        self.sent(Request::Typing {
            chat_id: chat_id.into(),
            metadata: metadata_json(metadata),
            content,
        })
        .await
    }

    /// Token-less follow-up through a capability the connector vaulted.
    pub async fn follow_up(
        &self,
        session_key: impl Into<String>,
        kind: impl Into<String>,
        content: impl Into<String>,
        metadata: Map<String, Value>,
    ) -> SendResult {
        self.sent(Request::FollowUp {
            session_key: session_key.into(),
            kind: kind.into(),
            content: content.into(),
            metadata: metadata_json(metadata),
        })
        .await
    }

    /// Ask for a chat's name and type.
    pub async fn get_chat_info(
        &self,
        chat_id: impl Into<String>,
    ) -> Result<ChatInfo, AdapterError> {
        match self
            .timed(Request::GetChatInfo {
                chat_id: chat_id.into(),
            })
            .await
        {
            Ok(Outcome::ChatInfo(info)) => Ok(info),
            Ok(other) => Err(AdapterError::Guest(format!(
                "expected chat info, got {other:?}"
            ))),
            Err(failure) => Err(failure.error()),
        }
    }

    /// Any other op as a JSON action object (`{"op": ..., ...}`).
    pub async fn raw_action(&self, action: Value, platform: Option<String>) -> SendResult {
        self.sent(Request::RawAction {
            action: action.to_string(),
            platform,
        })
        .await
    }

    /// Ask the connector to interrupt a session's running turn.
    pub async fn interrupt(
        &self,
        session_key: impl Into<String>,
        reason: Option<String>,
    ) -> Result<(), AdapterError> {
        self.done(Request::Interrupt {
            session_key: session_key.into(),
            reason,
        })
        .await
    }

    /// Go idle, drain and close; the adapter stops for good. Resolves once the
    /// component finished (immediately if it already stopped, or is down
    /// after spending its restart budget: then the adapter task just ends).
    /// Callers still waiting for a request slot fail with "relay transport
    /// closed", and so do later requests that would have to wait; admitted
    /// requests may still finish within the drain grace.
    pub async fn shutdown(&self) -> Result<(), AdapterError> {
        self.admission.close_waiters();
        match self.done(Request::Shutdown).await {
            Err(AdapterError::Stopped) => Ok(()),
            other => other,
        }
    }

    /// Go idle and close without stopping (scale to zero). True when the
    /// connector acknowledged going idle; false otherwise (also on errors).
    pub async fn go_dormant(&self) -> bool {
        match self.request(Request::GoDormant).await {
            Ok(Outcome::Flag(flag)) => flag,
            _ => false,
        }
    }

    /// Park re-dialing (bounded by the configured `redial_hold_max`).
    pub async fn hold_redial(&self) -> Result<(), AdapterError> {
        self.done(Request::HoldRedial).await
    }

    /// Resume re-dialing.
    pub async fn release_redial(&self) -> Result<(), AdapterError> {
        self.done(Request::ReleaseRedial).await
    }

    /// Seed the routing cache for a chat (after a restart).
    pub async fn prime_route(
        &self,
        chat_id: impl Into<String>,
        platform: impl Into<String>,
        scope_id: Option<String>,
        user_id: Option<String>,
        profile: Option<String>,
    ) -> Result<(), AdapterError> {
        self.query(Query::PrimeRoute {
            chat_id: chat_id.into(),
            platform: platform.into(),
            scope_id,
            user_id,
            profile,
        })
        .await
        .map(|_| ())
    }

    /// Current connection state.
    pub async fn state(&self) -> Result<State, AdapterError> {
        match self.query(Query::State).await? {
            Answer::State(state) => Ok(state),
            other => Err(unexpected(other)),
        }
    }

    /// The descriptor for `platform` (or the default one) as JSON.
    pub async fn descriptor(&self, platform: Option<&str>) -> Result<Option<String>, AdapterError> {
        match self
            .query(Query::Descriptor(platform.map(str::to_string)))
            .await?
        {
            Answer::Text(text) => Ok(text),
            other => Err(unexpected(other)),
        }
    }

    /// Maximum message length for a chat (its platform's descriptor).
    pub async fn max_message_length(&self, chat_id: Option<&str>) -> Result<u32, AdapterError> {
        self.number(Query::MaxMessageLength(chat_id.map(str::to_string)))
            .await
    }

    /// Length of `text` in the chat's unit (chars or UTF-16 units).
    pub async fn message_len(
        &self,
        chat_id: Option<&str>,
        text: &str,
    ) -> Result<u32, AdapterError> {
        self.number(Query::MessageLen(
            chat_id.map(str::to_string),
            text.to_string(),
        ))
        .await
    }

    /// Whether the chat's descriptor supports `op`.
    pub async fn supports_op(&self, chat_id: Option<&str>, op: &str) -> Result<bool, AdapterError> {
        self.flag(Query::SupportsOp(
            chat_id.map(str::to_string),
            op.to_string(),
        ))
        .await
    }

    /// Whether this gateway fronts `platform` (from the configured identities).
    pub async fn fronts_platform(&self, platform: &str) -> Result<bool, AdapterError> {
        self.flag(Query::FrontsPlatform(platform.to_string())).await
    }

    /// Health snapshot: state, backlog, guest memory, restarts, and whether
    /// the adapter is down for good. Answered by the host, so it also works
    /// while the component is restarting or down.
    pub async fn health(&self) -> Result<Health, AdapterError> {
        match self.query(Query::Health).await? {
            Answer::Health(health) => Ok(health),
            other => Err(unexpected(other)),
        }
    }

    /// Counters and gauges as a JSON object (for health and metrics): the
    /// component's own (`pending`, `undelivered`, `routes`, `seen`, frame
    /// counters, ...) plus the host's `guest_memory_bytes`,
    /// `guest_memory_peak_bytes`, `memory_limit_bytes`, `guest_call_max_ms`
    /// and `restarts` (see [`Health`]).
    pub async fn stats(&self) -> Result<Value, AdapterError> {
        match self.query(Query::Stats).await? {
            Answer::Text(Some(text)) => serde_json::from_str(&text)
                .map_err(|e| AdapterError::Guest(format!("stats is not JSON: {e}"))),
            other => Err(unexpected(other)),
        }
    }

    async fn number(&self, query: Query) -> Result<u32, AdapterError> {
        match self.query(query).await? {
            Answer::Number(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    async fn flag(&self, query: Query) -> Result<bool, AdapterError> {
        match self.query(query).await? {
            Answer::Flag(flag) => Ok(flag),
            other => Err(unexpected(other)),
        }
    }
}

/// Holds one pin of a chat's route in the component while a caller waits
/// for admission; dropping it releases the pin. Fire and forget: neither
/// message waits for an answer, and a stopped adapter needs neither.
struct RouteHold {
    commands: mpsc::UnboundedSender<Command>,
    chat_id: String,
}

impl RouteHold {
    fn new(commands: &mpsc::UnboundedSender<Command>, chat_id: String) -> RouteHold {
        let hold = RouteHold {
            commands: commands.clone(),
            chat_id,
        };
        hold.send(true);
        hold
    }

    fn send(&self, hold: bool) {
        let (tx, _rx) = oneshot::channel();
        let query = Query::HoldRoute {
            chat_id: self.chat_id.clone(),
            hold,
        };
        let _ = self.commands.send(Command::Query(query, tx));
    }
}

impl Drop for RouteHold {
    fn drop(&mut self) {
        self.send(false);
    }
}

fn unexpected(answer: Answer) -> AdapterError {
    AdapterError::Guest(format!("unexpected answer {answer:?}"))
}
