//! What runs an adapter's relay-core machine: the sandboxed component (the
//! product), or the same machine compiled into the host ([`native`]). The
//! actor drives both through [`Guest::feed`] and [`Guest::query`], and both
//! reach the host only through the `host` imports implemented on
//! [`HostState`], so the native engine measures exactly what the sandbox
//! costs and nothing else.

use tokio_tungstenite::tungstenite::Utf8Bytes;
use wasmtime::Store;

use crate::bindings::{RelayAdapter, guest};
use crate::handle::{Answer, Query, Request};
use crate::store::HostState;

pub(crate) mod native;

/// One input for the machine: one export call for the component.
pub(crate) enum Input {
    Open(u32),
    DialFailed(u32, u16, String),
    Text(u32, Utf8Bytes),
    Binary(u32, Vec<u8>),
    Closed(u32, u16, String),
    Deadline,
    /// Verdicts in the order the gateway gave them.
    Deliveries(Vec<(u64, bool)>),
    Request(u64, Request),
}

/// A live instance's engine.
pub(crate) enum Guest {
    /// The component (its bindings; the instance lives in the store).
    Component(Box<RelayAdapter>),
    /// relay-core in the host process, no sandbox.
    Native(Box<native::NativeAdapter>),
}

impl Guest {
    /// Feeds one input; the component's effects are queued in `store`'s
    /// `HostState` by the imports. An error is a trap (component only).
    pub(crate) async fn feed(
        &mut self,
        store: &mut Store<HostState>,
        input: Input,
    ) -> wasmtime::Result<()> {
        match self {
            Guest::Component(bindings) => {
                feed_component(bindings.hermes_relay_adapter(), store, input).await
            }
            Guest::Native(adapter) => {
                adapter.feed(store.data_mut(), input);
                Ok(())
            }
        }
    }

    /// Answers a query (synchronous export calls for the component).
    pub(crate) async fn query(
        &mut self,
        store: &mut Store<HostState>,
        query: Query,
    ) -> wasmtime::Result<Answer> {
        match self {
            Guest::Component(bindings) => {
                query_component(bindings.hermes_relay_adapter(), store, query).await
            }
            Guest::Native(adapter) => Ok(adapter.query(store.data_mut(), query)),
        }
    }
}

async fn feed_component(
    guest: &guest::Guest,
    s: &mut Store<HostState>,
    input: Input,
) -> wasmtime::Result<()> {
    match input {
        Input::Open(conn) => guest.call_on_open(s, conn).await,
        Input::DialFailed(conn, code, reason) => {
            guest.call_on_dial_failed(s, conn, code, &reason).await
        }
        Input::Text(conn, text) => guest.call_on_text(s, conn, text.as_str()).await,
        Input::Binary(conn, data) => guest.call_on_binary(s, conn, &data).await,
        Input::Closed(conn, code, reason) => guest.call_on_closed(s, conn, code, &reason).await,
        Input::Deadline => guest.call_on_deadline(s).await,
        Input::Deliveries(answers) => match answers.as_slice() {
            [(delivery, true)] => guest.call_accept_delivery(s, *delivery).await,
            [(delivery, false)] => guest.call_reject_delivery(s, *delivery).await,
            _ => guest.call_answer_deliveries(s, &answers).await,
        },
        Input::Request(id, request) => request_component(guest, s, id, request).await,
    }
}

async fn request_component(
    guest: &guest::Guest,
    s: &mut Store<HostState>,
    id: u64,
    request: Request,
) -> wasmtime::Result<()> {
    match request {
        Request::Send {
            chat_id,
            content,
            reply_to,
            metadata,
            platform,
        } => {
            guest
                .call_send(
                    s,
                    id,
                    &chat_id,
                    &content,
                    reply_to.as_deref(),
                    &metadata,
                    platform.as_deref(),
                )
                .await
        }
        Request::Edit {
            chat_id,
            message_id,
            content,
            metadata,
        } => {
            guest
                .call_edit(s, id, &chat_id, &message_id, &content, &metadata)
                .await
        }
        Request::Typing {
            chat_id,
            metadata,
            content,
        } => {
            guest
                .call_typing(s, id, &chat_id, &metadata, content.as_deref())
                .await
        }
        Request::FollowUp {
            session_key,
            kind,
            content,
            metadata,
        } => {
            guest
                .call_follow_up(s, id, &session_key, &kind, &content, &metadata)
                .await
        }
        Request::GetChatInfo { chat_id } => guest.call_get_chat_info(s, id, &chat_id).await,
        Request::RawAction { action, platform } => {
            guest
                .call_raw_action(s, id, &action, platform.as_deref())
                .await
        }
        Request::Interrupt {
            session_key,
            reason,
        } => {
            guest
                .call_interrupt(s, id, &session_key, reason.as_deref())
                .await
        }
        Request::Shutdown => guest.call_shutdown(s, id).await,
        Request::GoDormant => guest.call_go_dormant(s, id).await,
        Request::HoldRedial => guest.call_hold_redial(s, id).await,
        Request::ReleaseRedial => guest.call_release_redial(s, id).await,
    }
}

async fn query_component(
    guest: &guest::Guest,
    s: &mut Store<HostState>,
    query: Query,
) -> wasmtime::Result<Answer> {
    match query {
        Query::State => guest
            .call_current_state(s)
            .await
            .map(|st| Answer::State(st.into())),
        Query::Descriptor(platform) => guest
            .call_descriptor(s, platform.as_deref())
            .await
            .map(Answer::Text),
        Query::MaxMessageLength(chat) => guest
            .call_max_message_length(s, chat.as_deref())
            .await
            .map(Answer::Number),
        Query::MessageLen(chat, text) => guest
            .call_message_len(s, chat.as_deref(), &text)
            .await
            .map(Answer::Number),
        Query::SupportsOp(chat, op) => guest
            .call_supports_op(s, chat.as_deref(), &op)
            .await
            .map(Answer::Flag),
        Query::FrontsPlatform(platform) => guest
            .call_fronts_platform(s, &platform)
            .await
            .map(Answer::Flag),
        Query::Stats => guest.call_stats(s).await.map(|t| Answer::Text(Some(t))),
        Query::Health => {
            let state = guest.call_current_state(&mut *s).await?;
            guest
                .call_stats(s)
                .await
                .map(|t| Answer::Guest(state.into(), t))
        }
        Query::HoldRoute { chat_id, hold } => guest
            .call_hold_route(s, &chat_id, hold)
            .await
            .map(|()| Answer::Unit),
        Query::PrimeRoute {
            chat_id,
            platform,
            scope_id,
            user_id,
            profile,
        } => guest
            .call_prime_route(
                s,
                &chat_id,
                &platform,
                scope_id.as_deref(),
                user_id.as_deref(),
                profile.as_deref(),
            )
            .await
            .map(|()| Answer::Unit),
    }
}
