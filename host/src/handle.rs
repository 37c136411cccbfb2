//! [`AdapterHandle`]: the cloneable face of one adapter for commands and
//! capability queries, each resolving exactly once. It only sends mail to
//! the adapter's actor (which created it) and waits for the answers.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use crate::admission::{Admission, Refusal, Slot};
use crate::error::AdapterError;
use crate::messages::{Answer, Completion, Mail, Query, Request};
use crate::types::{ChatInfo, Health, SendResult, State};

mod lanes;

/// Commands and queries for one adapter; cheap to clone. Every call resolves
/// exactly once, also when the adapter stops meanwhile.
#[derive(Debug, Clone)]
pub struct AdapterHandle {
    commands: mpsc::UnboundedSender<Mail>,
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
type RequestResult = Result<Completion, RequestFailure>;

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

/// The `SendResult` of a send-like request, whatever became of it.
fn send_result(result: RequestResult) -> SendResult {
    match result {
        Ok(Completion::Sent(result)) => result,
        Ok(other) => SendResult::failed(
            format!("relay component answered {other:?} to an outbound op"),
            true,
        ),
        Err(failure) => failure.send_result(),
    }
}

impl AdapterHandle {
    pub(crate) fn new(
        commands: mpsc::UnboundedSender<Mail>,
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
        let sent = self.commands.send(Mail::Request(request, tx, slot));
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
        send_result(self.timed(request).await)
    }

    async fn done(&self, request: Request) -> Result<(), AdapterError> {
        match self.request(request).await {
            Ok(Completion::Done) => Ok(()),
            Ok(other) => Err(AdapterError::Guest(format!("expected done, got {other:?}"))),
            Err(failure) => Err(failure.error()),
        }
    }

    async fn query(&self, query: Query) -> Result<Answer, AdapterError> {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Mail::Query(query, tx)).is_err() {
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
            Ok(Completion::ChatInfo(info)) => Ok(info),
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
            Ok(Completion::Flag(flag)) => flag,
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

    /// Restore a chat-label record stored from [`Event::Labels`](crate::Event::Labels)
    /// (spec §7.7), typically for each stored record after a restart. It
    /// never overrides what the adapter observed itself since it started.
    /// A 0.1 component keeps no record: [`AdapterError::Unsupported`].
    pub async fn prime_labels(&self, labels: crate::types::ChatLabels) -> Result<(), AdapterError> {
        match self.query(Query::PrimeLabels(labels)).await? {
            Answer::Unit => Ok(()),
            other => Err(unexpected(other)),
        }
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
    commands: mpsc::UnboundedSender<Mail>,
    chat_id: String,
}

impl RouteHold {
    fn new(commands: &mpsc::UnboundedSender<Mail>, chat_id: String) -> RouteHold {
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
        let _ = self.commands.send(Mail::Query(query, tx));
    }
}

impl Drop for RouteHold {
    fn drop(&mut self) {
        self.send(false);
    }
}

fn unexpected(answer: Answer) -> AdapterError {
    match answer {
        Answer::Unsupported(reason) => AdapterError::Unsupported(reason.to_owned()),
        other => AdapterError::Guest(format!("unexpected answer {other:?}")),
    }
}
