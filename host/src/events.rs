//! What the adapter reports to the gateway: the [`EventStream`] of
//! [`Event`]s, and the [`MessageEvent`] whose [`DeliveryAck`] carries the
//! gateway's verdict back to the actor as a [`Verdict`].

use std::pin::Pin;
use std::task::{Context, Poll};

use serde_json::Value;
use tokio::sync::mpsc;

use crate::types::State;

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
    /// The answer to a prompt this adapter minted
    /// ([`AdapterHandle::mint_prompt`](crate::AdapterHandle::mint_prompt)); the answering
    /// event is consumed by the component, never delivered as a message.
    PromptAnswer(PromptAnswer),
    /// The Discord text lane observed new chat labels (0.2, spec §7.7):
    /// store them, off the hot path (the latest per chat and author wins),
    /// and give them back with
    /// [`AdapterHandle::prime_labels`](crate::AdapterHandle::prime_labels)
    /// after a restart. Unchanged labels are not reported.
    Labels(crate::types::ChatLabels),
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
    verdicts: mpsc::UnboundedSender<Verdict>,
    instance: u64,
    delivery: u64,
    answered: bool,
}

/// The gateway's verdict on one delivery, on its way to the actor.
#[derive(Debug)]
pub(crate) struct Verdict {
    pub instance: u64,
    pub delivery: u64,
    pub accept: bool,
}

impl DeliveryAck {
    pub(crate) fn new(
        verdicts: mpsc::UnboundedSender<Verdict>,
        instance: u64,
        delivery: u64,
    ) -> Self {
        Self {
            verdicts,
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
        let _ = self.verdicts.send(Verdict {
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

/// The answer to a prompt this adapter minted (WIT `prompt-answer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptAnswer {
    /// The prompt answered.
    pub prompt_id: String,
    /// The kind given when it was minted.
    pub kind: String,
    /// The option pressed.
    pub option_id: String,
    /// The chat the prompt went to.
    pub chat_id: String,
    /// Who pressed it.
    pub user_id: Option<String>,
    /// The message holding the prompt.
    pub prompt_message_id: Option<String>,
    /// Clarify: the choice text of a `c<i>` option.
    pub choice: Option<String>,
    /// Clarify: take a typed answer instead (`other`, or no such choice).
    pub text_capture: bool,
    /// The answering event as JSON (wire names).
    pub event_json: String,
}
