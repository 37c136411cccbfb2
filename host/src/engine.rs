//! What runs an adapter's relay-core machine: the sandboxed component (the
//! product), or the same machine compiled into the host ([`native`]). The
//! actor drives both through [`Runner::feed`] and [`Runner::query`], and both
//! reach the host only through the `host` imports implemented on
//! [`HostState`], so the native engine measures exactly what the sandbox
//! costs and nothing else.

use relay_core::machine::{Completion, Lane, ProcessingOutcome, RenameGuard};
use relay_core::outcome::SendResult;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use wasmtime::Store;

use crate::bindings::{self, Bindings};
use crate::config::AdapterConfig;
use crate::error::PluginError;
use crate::messages::{Answer, Query, Request};
use crate::plugin::Plugin;
use crate::store;
use crate::store::HostState;

pub(crate) mod native;

/// One input for the machine: one export call for the component. (Not the
/// core's `Input`: this is what the actor feeds an engine.)
pub(crate) enum Feed {
    Open(u32),
    DialFailed(u32, u16, String),
    Text(u32, Utf8Bytes),
    Binary(u32, Vec<u8>),
    Closed(u32, u16, String),
    Deadline,
    /// Verdicts in the order the gateway gave them.
    Deliveries(Vec<(u64, bool)>),
    Request(u64, Request),
    /// Several `send` requests (only [`Request::Send`]) gathered from the
    /// mailbox: one export call (`send-batch`, 0.2) for all.
    Sends(Vec<(u64, Request)>),
    /// A media job's outcome (`on-media-done`, 0.2).
    MediaDone(u64, crate::media::MediaOutcome),
}

/// How [`start`] went.
pub(crate) enum Started {
    /// `start` accepted the configuration.
    Running(Runner),
    /// `start` refused the configuration (the reason).
    Refused(String),
    /// The component trapped in `start`; its store still holds the guest's
    /// last stderr lines for the report.
    Trapped(Runner, wasmtime::Error),
}

/// Creates the engine for a fresh `store` and calls `start` with `config`:
/// the native machine, or the component instantiated (with its
/// `api-version` check) and started. Shared by the actor and the bench
/// harness, so both start an adapter the same way.
pub(crate) async fn start(
    plugin: &Plugin,
    store: &mut Store<HostState>,
    config: &AdapterConfig,
) -> Result<Started, PluginError> {
    if plugin.is_native() {
        return Ok(
            match native::NativeAdapter::start(&bindings::wit_config(config), store.data_mut()) {
                Ok(adapter) => Started::Running(Runner::Native(Box::new(adapter))),
                Err(reason) => Started::Refused(reason),
            },
        );
    }
    let bindings = plugin.instantiate(store).await?;
    store::reset_budget(store);
    // Each version gets the config record of its own WIT.
    let started = match &bindings {
        Bindings::V0_1(b) => {
            let config = bindings::v0_1::wit_config(config);
            b.hermes_relay_adapter()
                .call_start(&mut *store, &config)
                .await
        }
        Bindings::V0_2(b) => {
            let config = bindings::v0_2::wit_config(config);
            b.hermes_relay_adapter()
                .call_start(&mut *store, &config)
                .await
        }
    };
    store::report_log_flood(store.data_mut());
    let runner = Runner::Component(Box::new(bindings));
    Ok(match started {
        Ok(Ok(())) => Started::Running(runner),
        Ok(Err(reason)) => Started::Refused(reason),
        Err(trap) => Started::Trapped(runner, trap),
    })
}

/// A live instance's engine.
pub(crate) enum Runner {
    /// The component (its bindings, of the WIT version it was linked as;
    /// the instance lives in the store).
    Component(Box<Bindings>),
    /// relay-core in the host process, no sandbox.
    Native(Box<native::NativeAdapter>),
}

impl Runner {
    /// Feeds one input; the component's effects are queued in `store`'s
    /// `HostState` by the imports. An error is a trap (component only).
    pub(crate) async fn feed(
        &mut self,
        store: &mut Store<HostState>,
        input: Feed,
    ) -> wasmtime::Result<()> {
        match self {
            Runner::Component(bindings) => match &**bindings {
                Bindings::V0_1(b) => v0_1::feed(b.hermes_relay_adapter(), store, input).await,
                Bindings::V0_2(b) => v0_2::feed(b.hermes_relay_adapter(), store, input).await,
            },
            Runner::Native(adapter) => {
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
            Runner::Component(bindings) => match &**bindings {
                Bindings::V0_1(b) => v0_1::query(b.hermes_relay_adapter(), store, query).await,
                Bindings::V0_2(b) => v0_2::query(b.hermes_relay_adapter(), store, query).await,
            },
            Runner::Native(adapter) => Ok(adapter.query(store.data_mut(), query)),
        }
    }
}

/// The export calls for the version module `$v` of `crate::bindings`: one
/// text for every WIT version while their `adapter` interfaces have the same
/// shape; a version that changes an export gets its own functions and leaves
/// the older ones on the macro. `$own` are the version's own items, placed in
/// the same module: each defines `lane` (the `lane` export is new in 0.2)
/// and the query exports new in 0.2 (`mint_prompt`,
/// `supports_draft_streaming`, `prefers_fresh_final`).
macro_rules! component_calls {
    ($v:ident { $($own:item)* }) => {
        mod $v {
            use super::*;
            use crate::bindings::$v::guest::Guest;

            $($own)*

            pub(super) async fn feed(
                guest: &Guest,
                s: &mut Store<HostState>,
                input: Feed,
            ) -> wasmtime::Result<()> {
                match input {
                    Feed::Open(conn) => guest.call_on_open(s, conn).await,
                    Feed::DialFailed(conn, code, reason) => {
                        guest.call_on_dial_failed(s, conn, code, &reason).await
                    }
                    Feed::Text(conn, text) => guest.call_on_text(s, conn, text.as_str()).await,
                    Feed::Binary(conn, data) => guest.call_on_binary(s, conn, &data).await,
                    Feed::Closed(conn, code, reason) => {
                        guest.call_on_closed(s, conn, code, &reason).await
                    }
                    Feed::Deadline => guest.call_on_deadline(s).await,
                    Feed::Deliveries(answers) => match answers.as_slice() {
                        [(delivery, true)] => guest.call_accept_delivery(s, *delivery).await,
                        [(delivery, false)] => guest.call_reject_delivery(s, *delivery).await,
                        _ => guest.call_answer_deliveries(s, &answers).await,
                    },
                    Feed::Request(id, request) => send_request(guest, s, id, request).await,
                    Feed::Sends(sends) => send_batch(guest, s, sends).await,
                    Feed::MediaDone(job, outcome) => media_done(guest, s, job, outcome).await,
                }
            }

            async fn send_request(
                guest: &Guest,
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
                    Request::GetChatInfo { chat_id } => {
                        guest.call_get_chat_info(s, id, &chat_id).await
                    }
                    Request::RawAction { action, platform } => {
                        guest
                            .call_raw_action(s, id, &action, platform.as_deref())
                            .await
                    }
                    Request::Lane(command) => lane(guest, s, id, command).await,
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

            pub(super) async fn query(
                guest: &Guest,
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
                    Query::MintPrompt { chat_id, kind } => {
                        mint_prompt(guest, s, &chat_id, &kind).await
                    }
                    Query::SupportsDraftStreaming(chat_id) => {
                        supports_draft_streaming(guest, s, &chat_id).await
                    }
                    Query::PrefersFreshFinal(chat_id, text) => {
                        prefers_fresh_final(guest, s, &chat_id, &text).await
                    }
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
                    Query::PrimeLabels(labels) => prime_labels(guest, s, labels).await,
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
        }
    };
}

/// What a 0.1 component answers for a lane or query it does not have.
const UNSUPPORTED_0_1: &str = "not supported by this component (api 0.1.0)";

component_calls!(v0_1 {
    /// 0.1 has no `send-batch`: one `send` call each.
    async fn send_batch(
        guest: &Guest,
        s: &mut Store<HostState>,
        sends: Vec<(u64, Request)>,
    ) -> wasmtime::Result<()> {
        for (id, request) in sends {
            send_request(guest, &mut *s, id, request).await?;
        }
        Ok(())
    }

    /// 0.1 keeps no label record.
    async fn prime_labels(
        _guest: &Guest,
        _s: &mut Store<HostState>,
        _labels: crate::types::ChatLabels,
    ) -> wasmtime::Result<Answer> {
        Ok(Answer::Unsupported(UNSUPPORTED_0_1))
    }

    /// 0.1 asks for no media jobs: a report cannot be for it.
    async fn media_done(
        _guest: &Guest,
        s: &mut Store<HostState>,
        job: u64,
        _outcome: crate::media::MediaOutcome,
    ) -> wasmtime::Result<()> {
        tracing::debug!(adapter = %s.data().label, job, "media report for a 0.1 component dropped");
        Ok(())
    }

    /// 0.1 has no `mint-prompt`: the handle reports it as an error.
    async fn mint_prompt(
        _guest: &Guest,
        _s: &mut Store<HostState>,
        _chat_id: &str,
        _kind: &str,
    ) -> wasmtime::Result<Answer> {
        Ok(Answer::Unsupported(UNSUPPORTED_0_1))
    }

    /// 0.1 has no native drafts: false, as a 0.2 component before `start`.
    async fn supports_draft_streaming(
        _guest: &Guest,
        _s: &mut Store<HostState>,
        _chat_id: &str,
    ) -> wasmtime::Result<Answer> {
        Ok(Answer::Flag(false))
    }

    /// 0.1 has no fresh-final preference: false.
    async fn prefers_fresh_final(
        _guest: &Guest,
        _s: &mut Store<HostState>,
        _chat_id: &str,
        _text: &str,
    ) -> wasmtime::Result<Answer> {
        Ok(Answer::Flag(false))
    }

    /// 0.1 has no `lane` export: the request completes here, through the
    /// same `complete` import the component would call, so the actor
    /// delivers it like any other completion. The processing reactions are
    /// best-effort and complete `done` (no reaction is shown); every other
    /// lane gets a definite failure.
    async fn lane(
        _guest: &Guest,
        s: &mut Store<HostState>,
        id: u64,
        command: Lane,
    ) -> wasmtime::Result<()> {
        use crate::bindings::v0_1::hermes::relay::host::Host as _;
        let completion = match command {
            Lane::ProcessingStart { .. } | Lane::ProcessingComplete { .. } => {
                tracing::debug!(
                    adapter = %s.data().label,
                    request = id,
                    "processing reaction skipped: {UNSUPPORTED_0_1}"
                );
                Completion::Done
            }
            _ => Completion::Sent(SendResult::failure(UNSUPPORTED_0_1)),
        };
        let completion = relay_core::to_record!(crate::bindings::v0_1::wit, completion, completion);
        s.data_mut().complete(id, completion);
        Ok(())
    }
});

component_calls!(v0_2 {
    async fn send_batch(
        guest: &Guest,
        s: &mut Store<HostState>,
        sends: Vec<(u64, Request)>,
    ) -> wasmtime::Result<()> {
        use crate::bindings::v0_2::wit::SendRequest;
        let batch: Vec<SendRequest> = sends
            .into_iter()
            .filter_map(|(request, r)| match r {
                Request::Send {
                    chat_id,
                    content,
                    reply_to,
                    metadata,
                    platform,
                } => Some(SendRequest {
                    request,
                    chat_id,
                    content,
                    reply_to,
                    metadata,
                    platform,
                }),
                // The actor gathers sends only.
                _ => None,
            })
            .collect();
        guest.call_send_batch(s, &batch).await
    }

    async fn prime_labels(
        guest: &Guest,
        s: &mut Store<HostState>,
        l: crate::types::ChatLabels,
    ) -> wasmtime::Result<Answer> {
        let labels = crate::bindings::v0_2::wit::ChatLabels {
            scope_id: l.scope_id,
            chat_id: l.chat_id,
            chat_name: l.chat_name,
            chat_topic: l.chat_topic,
            parent_chat_id: l.parent_chat_id,
            user_id: l.user_id,
            user_name: l.user_name,
        };
        guest
            .call_prime_labels(s, &labels)
            .await
            .map(|()| Answer::Unit)
    }

    async fn media_done(
        guest: &Guest,
        s: &mut Store<HostState>,
        job: u64,
        o: crate::media::MediaOutcome,
    ) -> wasmtime::Result<()> {
        let outcome = crate::bindings::v0_2::wit::MediaOutcome {
            status: o.status,
            error: o.error,
            headers: o.headers,
            size: o.size,
            path: o.path,
            body: o.body,
        };
        guest.call_on_media_done(s, job, &outcome).await
    }

    async fn mint_prompt(
        guest: &Guest,
        s: &mut Store<HostState>,
        chat_id: &str,
        kind: &str,
    ) -> wasmtime::Result<Answer> {
        guest
            .call_mint_prompt(s, chat_id, kind)
            .await
            .map(|id| Answer::Text(Some(id)))
    }

    async fn supports_draft_streaming(
        guest: &Guest,
        s: &mut Store<HostState>,
        chat_id: &str,
    ) -> wasmtime::Result<Answer> {
        guest
            .call_supports_draft_streaming(s, chat_id)
            .await
            .map(Answer::Flag)
    }

    async fn prefers_fresh_final(
        guest: &Guest,
        s: &mut Store<HostState>,
        chat_id: &str,
        text: &str,
    ) -> wasmtime::Result<Answer> {
        guest
            .call_prefers_fresh_final(s, chat_id, text)
            .await
            .map(Answer::Flag)
    }

    /// The `lane` export, with the machine's lane as the WIT variant.
    async fn lane(
        guest: &Guest,
        s: &mut Store<HostState>,
        id: u64,
        command: Lane,
    ) -> wasmtime::Result<()> {
        guest.call_lane(s, id, &lane_command(command)).await
    }

    /// The WIT `lane-command` of the machine's [`Lane`] (moves the strings).
    fn lane_command(lane: Lane) -> crate::bindings::v0_2::wit::LaneCommand {
        use crate::bindings::v0_2::wit;
        match lane {
            Lane::Delete {
                chat_id,
                message_id,
                metadata,
            } => wit::LaneCommand::Delete(wit::DeleteMessage {
                chat_id,
                message_id,
                metadata,
            }),
            Lane::StopTyping { chat_id, metadata } => {
                wit::LaneCommand::StopTyping(wit::StopTyping { chat_id, metadata })
            }
            Lane::React {
                chat_id,
                message_id,
                emoji,
                remove,
                metadata,
            } => wit::LaneCommand::React(wit::Reaction {
                chat_id,
                message_id,
                emoji,
                remove,
                metadata,
            }),
            Lane::ProcessingStart { event } => wit::LaneCommand::ProcessingStart(event),
            Lane::ProcessingComplete { event, outcome } => {
                wit::LaneCommand::ProcessingComplete(wit::ProcessingDone {
                    event,
                    outcome: match outcome {
                        ProcessingOutcome::Success => wit::ProcessingOutcome::Success,
                        ProcessingOutcome::Failure => wit::ProcessingOutcome::Failure,
                        ProcessingOutcome::Cancelled => wit::ProcessingOutcome::Cancelled,
                    },
                })
            }
            Lane::ThreadCreate {
                parent_chat_id,
                name,
                metadata,
            } => wit::LaneCommand::ThreadCreate(wit::ThreadCreate {
                parent_chat_id,
                name,
                metadata,
            }),
            Lane::ThreadRename {
                thread_id,
                name,
                guard,
                parent_chat_id,
                metadata,
            } => wit::LaneCommand::ThreadRename(wit::ThreadRename {
                thread_id,
                name,
                guard: match guard {
                    RenameGuard::None => wit::RenameGuard::None,
                    RenameGuard::ConnectorCreated => wit::RenameGuard::ConnectorCreated,
                    RenameGuard::CurrentName(name) => wit::RenameGuard::CurrentName(name),
                },
                parent_chat_id,
                metadata,
            }),
            Lane::SendDraft {
                chat_id,
                draft_id,
                content,
                metadata,
            } => wit::LaneCommand::SendDraft(wit::Draft {
                chat_id,
                draft_id,
                content,
                metadata,
            }),
            Lane::AbandonOpenDraft { chat_id, content } => {
                wit::LaneCommand::AbandonOpenDraft(wit::AbandonDraft { chat_id, content })
            }
            Lane::Prompt(p) => wit::LaneCommand::Prompt(wit::Prompt {
                prompt_id: p.prompt_id,
                chat_id: p.chat_id,
                question: p.question,
                prompt_kind: p.prompt_kind,
                options: p
                    .options
                    .into_iter()
                    .map(|o| wit::PromptOption {
                        id: o.id,
                        label: o.label,
                        style: o.style,
                    })
                    .collect(),
                choices: p.choices,
                reply_to: p.reply_to,
                metadata: p.metadata,
                timeout_s: p.timeout_s,
            }),
            Lane::TaskCard {
                chat_id,
                reply_to,
                chunks,
                metadata,
            } => wit::LaneCommand::TaskCard(wit::TaskCard {
                chat_id,
                reply_to,
                chunks,
                metadata,
            }),
            Lane::TaskCardStop {
                chat_id,
                reply_to,
                metadata,
            } => wit::LaneCommand::TaskCardStop(wit::TaskCardStop {
                chat_id,
                reply_to,
                metadata,
            }),
            Lane::AutoThreadInfo {
                chat_id,
                timeout_ms,
            } => wit::LaneCommand::AutoThreadInfo(wit::AutoThreadWait {
                chat_id,
                timeout_ms,
            }),
            Lane::SendMedia(m) => wit::LaneCommand::SendMedia(wit::MediaSend {
                chat_id: m.chat_id,
                kind: m.kind,
                source: m.source,
                caption: m.caption,
                reply_to: m.reply_to,
                filename: m.filename,
                metadata: m.metadata,
            }),
        }
    }
});
