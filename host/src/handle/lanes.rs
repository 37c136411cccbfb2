//! The typed lanes of WIT 0.2 on [`AdapterHandle`]: deletes, reactions,
//! threads, drafts, task cards and prompts, and the 0.2 queries. Each only
//! sends mail to the actor, like the rest of the handle; the rules are the
//! component's (docs/wit.md#lanes-02).

use std::time::Duration;

use serde_json::{Map, Value};

use relay_core::machine::Lane;

use super::{AdapterHandle, metadata_json, send_result, unexpected};
use crate::config::millis;
use crate::error::AdapterError;
use crate::messages::{Answer, Query, Request};
use crate::types::{MediaSendRequest, ProcessingOutcome, PromptRequest, RenameGuard, SendResult};

impl AdapterHandle {
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

    /// Send a file or a public URL as media (spec §9.1). Op-gated: when the
    /// chat's descriptor lacks `send_media` the result is the failure
    /// `relay send_media op unavailable` (nothing sent; fall back to a text
    /// message with the URL). A local file is uploaded to the connector
    /// first (`POST {base}/relay/media` with the bearer; refused locally
    /// when missing, empty or over the cap) and sent by reference; without
    /// [`AdapterConfig::media`](crate::AdapterConfig::media) that fails with
    /// `relay media unavailable: ...`. A public `http(s)` URL goes out as
    /// is. A decline (`declined`) must not be followed by a text send.
    pub async fn send_media(&self, request: MediaSendRequest) -> SendResult {
        self.sent(Request::Lane(Lane::SendMedia(request.into())))
            .await
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
}
