//! [`AdapterHandle`]: the cloneable face of one adapter for commands and
//! capability queries, each resolving exactly once. It only sends mail to
//! the adapter's actor (which created it) and waits for the answers.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use relay_core::machine::Lane;

use crate::admission::{Admission, Refusal, Slot};
use crate::config::millis;
use crate::error::AdapterError;
use crate::messages::{Answer, Completion, Mail, Query, Request};
use crate::types::{
    ChatInfo, Health, ProcessingOutcome, PromptRequest, RenameGuard, SendResult, State,
};

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

    /// Delete a message. Only when the chat's descriptor lists `delete` in
    /// its `supported_ops` (there is no legacy fallback); otherwise a
    /// definite failure (`relay op delete not supported by the connector`)
    /// and nothing is sent.
    pub async fn delete_message(
        &self,
        chat_id: impl Into<String>,
        message_id: impl Into<String>,
        metadata: Map<String, Value>,
    ) -> SendResult {
        self.sent(Request::Lane(Lane::Delete {
            chat_id: chat_id.into(),
            message_id: message_id.into(),
            metadata: metadata_json(metadata),
        }))
        .await
    }

    /// Clear a Slack chat's typing status (a `typing` frame with
    /// `content: ""`). Other platforms have no status to clear: for a chat
    /// not known to be on Slack this is a definite failure and nothing is
    /// sent.
    pub async fn stop_typing(
        &self,
        chat_id: impl Into<String>,
        metadata: Map<String, Value>,
    ) -> SendResult {
        self.sent(Request::Lane(Lane::StopTyping {
            chat_id: chat_id.into(),
            metadata: metadata_json(metadata),
        }))
        .await
    }

    /// Add (or, with `remove`, remove) one reaction on a message. Needs the
    /// chat's descriptor to allow `react`, and a non-empty chat id, message
    /// id and emoji; otherwise a definite failure and nothing is sent.
    pub async fn react(
        &self,
        chat_id: impl Into<String>,
        message_id: impl Into<String>,
        emoji: impl Into<String>,
        remove: bool,
        metadata: Map<String, Value>,
    ) -> SendResult {
        self.sent(Request::Lane(Lane::React {
            chat_id: chat_id.into(),
            message_id: message_id.into(),
            emoji: emoji.into(),
            remove,
            metadata: metadata_json(metadata),
        }))
        .await
    }

    /// Show "in progress" (👀) on the message a turn answers. `event_json`
    /// is the event as delivered ([`MessageEvent::json`](crate::MessageEvent::json)):
    /// the reaction goes on its `source.chat_id` / `source.message_id`.
    /// Best-effort: resolves once the frame is queued, without waiting for
    /// the connector; nothing is sent when the event has no message id or
    /// the chat's descriptor does not allow `react`. Never waits for a
    /// request slot.
    pub async fn processing_start(
        &self,
        event_json: impl Into<String>,
    ) -> Result<(), AdapterError> {
        self.done(Request::Lane(Lane::ProcessingStart {
            event: event_json.into(),
        }))
        .await
    }

    /// Replace "in progress" with the turn's outcome: removes 👀 and adds
    /// the outcome's emoji (none for [`ProcessingOutcome::Cancelled`]).
    /// Best-effort like [`processing_start`](Self::processing_start).
    pub async fn processing_complete(
        &self,
        event_json: impl Into<String>,
        outcome: ProcessingOutcome,
    ) -> Result<(), AdapterError> {
        self.done(Request::Lane(Lane::ProcessingComplete {
            event: event_json.into(),
            outcome: outcome.into(),
        }))
        .await
    }

    /// Create a thread under `parent_chat_id`. `name` is trimmed, cut to 100
    /// characters, and `handoff` when empty. Needs the parent chat's
    /// descriptor to allow `thread_create`. On success the result's
    /// `thread_id` (or, from some connectors, `message_id`) names the new
    /// thread: [`SendResult::created_thread_id`] reads either.
    pub async fn create_thread(
        &self,
        parent_chat_id: impl Into<String>,
        name: impl Into<String>,
        metadata: Map<String, Value>,
    ) -> SendResult {
        self.sent(Request::Lane(Lane::ThreadCreate {
            parent_chat_id: parent_chat_id.into(),
            name: name.into(),
            metadata: metadata_json(metadata),
        }))
        .await
    }

    /// Rename a thread. `name` has its whitespace runs collapsed, is
    /// trimmed and cut to 100 characters; an empty name is a definite
    /// failure and nothing is sent. `guard` says when the rename may apply
    /// (prefer [`RenameGuard::ConnectorCreated`] for automatic names, so a
    /// human's rename wins). The frame addresses `parent_chat_id` when
    /// given, else the thread itself; that chat's descriptor must allow
    /// `thread_rename`.
    pub async fn rename_thread(
        &self,
        thread_id: impl Into<String>,
        name: impl Into<String>,
        guard: RenameGuard,
        parent_chat_id: Option<String>,
        metadata: Map<String, Value>,
    ) -> SendResult {
        self.sent(Request::Lane(Lane::ThreadRename {
            thread_id: thread_id.into(),
            name: name.into(),
            guard: guard.into(),
            parent_chat_id,
            metadata: metadata_json(metadata),
        }))
        .await
    }

    /// The thread the connector auto-created for replies in `chat_id`:
    /// success with `thread_id` and `auto_thread_name` at once when a send
    /// into the chat already reported one, else from the next send into the
    /// chat that completes within `timeout`. A failure when that send was
    /// not auto-threaded, when none completes in time, or when the adapter
    /// stops. Sends nothing itself, so it never waits for a request slot.
    pub async fn auto_thread_info(
        &self,
        chat_id: impl Into<String>,
        timeout: Duration,
    ) -> SendResult {
        send_result(
            self.request(Request::Lane(Lane::AutoThreadInfo {
                chat_id: chat_id.into(),
                timeout_ms: millis(timeout),
            }))
            .await,
        )
    }

    /// Stream one partial reply natively (a `draft` frame with
    /// `final: false`; spec §6.14). Only when
    /// [`supports_draft_streaming`](Self::supports_draft_streaming) is true
    /// for the chat; otherwise a definite failure (`relay draft streaming
    /// not implemented for this chat`) and nothing is sent: stream by
    /// `edit` instead. `draft_id` names the stream; keep it for the turn.
    /// The turn is keyed by `metadata`'s `message_id` (or
    /// `reply_to_message_id`), else the chat's thread. Where the stream is
    /// the message (Slack), the turn's final [`send`](Self::send) with the
    /// same `message_id` seals it: the send goes out as the `draft` frame
    /// with `final: true` and the same `draft_id`. A draft sent after the
    /// seal succeeds and sends nothing. Mark sends that must not seal
    /// (acknowledgements, notices) with `"_interim_send": true`.
    ///
    /// ```no_run
    /// # async fn demo(handle: relay_host::AdapterHandle) {
    /// use serde_json::{Map, json};
    /// let turn: Map<_, _> = json!({"message_id": "1700.0002"}).as_object().cloned().unwrap();
    /// if handle.supports_draft_streaming("C1").await.unwrap_or(false) {
    ///     handle.send_draft("C1", 7, "Looking it up…", turn.clone()).await;
    ///     handle.send_draft("C1", 7, "Looking it up… found 3 results", turn.clone()).await;
    /// }
    /// // Seals draft 7 in place (or is an ordinary send without a stream).
    /// handle.send("C1", "Found 3 results: …", None, turn, None).await;
    /// # }
    /// ```
    pub async fn send_draft(
        &self,
        chat_id: impl Into<String>,
        draft_id: u64,
        content: impl Into<String>,
        metadata: Map<String, Value>,
    ) -> SendResult {
        self.sent(Request::Lane(Lane::SendDraft {
            chat_id: chat_id.into(),
            draft_id,
            content: content.into(),
            metadata: metadata_json(metadata),
        }))
        .await
    }

    /// Show or update the turn's plan-mode task card (a `task_card` frame;
    /// spec §2.7, §9.10): `chunks` are the card's steps as the connector
    /// renders them (objects such as `{"text": "step one"}`). The card is
    /// keyed `turn:<anchor>` from `reply_to`, else `metadata`'s
    /// `message_id`, `reply_to_message_id`, `thread_ts` or `thread_id`, else
    /// `root`; a Slack card threads on `metadata.thread_ts`, the reply-to id
    /// by default. Only when the chat's descriptor lists `task_card`; else a
    /// definite failure and nothing is sent. A declined card is a failure
    /// with `declined` set: do not fall back to text.
    ///
    /// ```no_run
    /// # async fn demo(handle: relay_host::AdapterHandle) {
    /// use serde_json::{Map, json};
    /// let steps = vec![json!({"text": "read the logs"}), json!({"text": "fix the test"})];
    /// handle.task_card("C1", Some("1700.0001".into()), steps, Map::new()).await;
    /// // ... the turn ends:
    /// handle.task_card_stop("C1", Some("1700.0001".into()), Map::new()).await;
    /// # }
    /// ```
    pub async fn task_card(
        &self,
        chat_id: impl Into<String>,
        reply_to: Option<String>,
        chunks: Vec<Value>,
        metadata: Map<String, Value>,
    ) -> SendResult {
        self.sent(Request::Lane(Lane::TaskCard {
            chat_id: chat_id.into(),
            reply_to,
            chunks: Value::Array(chunks).to_string(),
            metadata: metadata_json(metadata),
        }))
        .await
    }

    /// Stop the turn's task card (a `task_card_stop` frame): the same chat,
    /// `reply_to` and turn keys as the card's. Only when the chat's
    /// descriptor lists `task_card_stop`. Cosmetic: a decline is logged
    /// once and reported, never retried.
    pub async fn task_card_stop(
        &self,
        chat_id: impl Into<String>,
        reply_to: Option<String>,
        metadata: Map<String, Value>,
    ) -> SendResult {
        self.sent(Request::Lane(Lane::TaskCardStop {
            chat_id: chat_id.into(),
            reply_to,
            metadata: metadata_json(metadata),
        }))
        .await
    }

    /// Seal the chat's open draft stream in place with `content` (on
    /// `/stop` or `/new`, when the turn will not send its final): a `draft`
    /// frame with `final: true`, by the same rules as a sealing send. A
    /// definite failure when the chat has no open stream.
    ///
    /// ```no_run
    /// # async fn demo(handle: relay_host::AdapterHandle) {
    /// handle.abandon_open_draft("C1", "⏹ Stopped.").await;
    /// # }
    /// ```
    pub async fn abandon_open_draft(
        &self,
        chat_id: impl Into<String>,
        content: impl Into<String>,
    ) -> SendResult {
        self.sent(Request::Lane(Lane::AbandonOpenDraft {
            chat_id: chat_id.into(),
            content: content.into(),
        }))
        .await
    }

    /// Send a prompt with buttons (a `prompt` frame; spec §6.11). Its
    /// `prompt_id` comes from [`mint_prompt`](Self::mint_prompt) for the
    /// same chat. The answer arrives as [`Event::PromptAnswer`](crate::Event::PromptAnswer)
    /// (the press is never a message). Refused without a frame, and the id
    /// forgotten, when the id is unknown, expired or another chat's, when
    /// an option id is invalid, or when the chat's descriptor does not list
    /// `prompt` (the error `relay prompt op unavailable`: ask in text
    /// instead). A decline forgets the id too; never fall back after one.
    ///
    /// ```no_run
    /// # async fn demo(handle: relay_host::AdapterHandle) -> Result<(), relay_host::AdapterError> {
    /// use relay_host::{PromptOption, PromptRequest};
    /// let id = handle.mint_prompt("chan1", "approval").await?;
    /// let sent = handle
    ///     .prompt(
    ///         PromptRequest::new(id, "chan1", "Run `rm -rf build/`?")
    ///             .with_kind("approval")
    ///             .with_option(PromptOption::new("once", "Approve once").with_style("success"))
    ///             .with_option(PromptOption::new("deny", "Deny").with_style("danger")),
    ///     )
    ///     .await;
    /// if sent.error.as_deref() == Some("relay prompt op unavailable") {
    ///     handle.send("chan1", "Reply `approve` or `deny`.", None, Default::default(), None).await;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn prompt(&self, request: PromptRequest) -> SendResult {
        self.sent(Request::Lane(Lane::Prompt(request.into()))).await
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

    /// Register a prompt for `chat_id` and return its id,
    /// `<nonce>.<8 hex>` (the nonce is
    /// [`AdapterConfig::prompt_nonce`](crate::AdapterConfig::prompt_nonce)).
    /// `kind` is the gateway's own name for it (`approval`, `clarify`, ...),
    /// returned in the answer; for `clarify`, option `c<i>` answers with
    /// the request's `choices[i]`. The prompt waits one hour; send it with
    /// [`prompt`](Self::prompt). A 0.1 component cannot mint:
    /// [`AdapterError::Unsupported`] (`not supported by this component (api
    /// 0.1.0)`).
    ///
    /// ```no_run
    /// # async fn demo(handle: relay_host::AdapterHandle) -> Result<(), relay_host::AdapterError> {
    /// let id = handle.mint_prompt("chan1", "clarify").await?;
    /// assert!(id.contains('.'));
    /// # Ok(()) }
    /// ```
    pub async fn mint_prompt(
        &self,
        chat_id: impl Into<String>,
        kind: impl Into<String>,
    ) -> Result<String, AdapterError> {
        match self
            .query(Query::MintPrompt {
                chat_id: chat_id.into(),
                kind: kind.into(),
            })
            .await?
        {
            Answer::Text(id) => Ok(id.unwrap_or_default()),
            other => Err(unexpected(other)),
        }
    }

    /// Whether [`send_draft`](Self::send_draft) is usable for the chat: its
    /// descriptor sets `supports_draft_streaming` and lists `draft`, and no
    /// unfurl knob is set for its platform in
    /// [`AdapterConfig::platform_extra`](crate::AdapterConfig::platform_extra).
    /// False on a 0.1 component.
    ///
    /// ```no_run
    /// # async fn demo(handle: relay_host::AdapterHandle) -> Result<(), relay_host::AdapterError> {
    /// let native = handle.supports_draft_streaming("C1").await?;
    /// # Ok(()) }
    /// ```
    pub async fn supports_draft_streaming(
        &self,
        chat_id: impl Into<String>,
    ) -> Result<bool, AdapterError> {
        self.flag(Query::SupportsDraftStreaming(chat_id.into()))
            .await
    }

    /// Whether a streamed reply whose final text is `text` should end with
    /// a fresh [`send`](Self::send) rather than a final `edit` of the
    /// streamed message: a Slack chat, an unfurl knob set to true, and a
    /// link in the text (an edit would not unfurl it). False on a 0.1
    /// component.
    ///
    /// ```no_run
    /// # async fn demo(handle: relay_host::AdapterHandle) -> Result<(), relay_host::AdapterError> {
    /// let text = "Docs: https://example.com/deploy";
    /// if handle.prefers_fresh_final("C1", text).await? {
    ///     // send `text` as a new message (and delete or keep the stream)
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn prefers_fresh_final(
        &self,
        chat_id: impl Into<String>,
        text: impl Into<String>,
    ) -> Result<bool, AdapterError> {
        self.flag(Query::PrefersFreshFinal(chat_id.into(), text.into()))
            .await
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
