//! The `host` interface the component imports. Every method only records,
//! queues or forwards (unbounded channels, task spawns); none blocks and none
//! calls back into the component. Also the bindgen -> public type conversions.
//!
//! One text for every WIT version while their `host` interfaces have the
//! same shape (`host_imports!` is expanded once per version module); a
//! version that changes a record gets its own impl and leaves the older
//! ones on the macro.

use tokio::sync::mpsc;

use crate::events::{DeliveryAck, Event, MessageEvent, PromptAnswer};
use crate::messages::Completion;
use crate::socket::{self, Conn, Outgoing};
use crate::store::{Action, HostState};
use crate::types::{ChatInfo, SendResult, State};

/// Runs one media job on its own task (imports never block); its outcome
/// comes back to the actor as a [`MediaReport`](crate::store::MediaReport).
/// Without a media client the job fails at once, after the current call.
fn media_job<F, Fut>(host: &mut HostState, job: u64, run: F)
where
    F: FnOnce(crate::media::MediaClient) -> Fut,
    Fut: std::future::Future<Output = crate::media::MediaOutcome> + Send + 'static,
{
    let Some(client) = host.media.client.clone() else {
        host.actions.push(Action::MediaDone {
            job,
            outcome: crate::media::MediaOutcome {
                error: Some("no media client".into()),
                ..Default::default()
            },
        });
        return;
    };
    let reports = host.media.reports.clone();
    let instance = host.instance;
    let work = run(client);
    tokio::spawn(async move {
        let outcome = work.await;
        // The actor may be gone; its files are then the directory's.
        let _ = reports.send(crate::store::MediaReport {
            instance,
            job,
            outcome,
        });
    });
}

/// The `host` imports and the conversions to public types, for the version
/// module `$v` of `crate::bindings`.
macro_rules! host_imports {
    ($v:ident $({ $($extra:tt)* })?) => {
        mod $v {
            use super::*;
            use crate::bindings::$v::hermes::relay::host::Host;
            use crate::bindings::$v::wit;

            impl wit::Host for HostState {}

            /// Hands one inbound message to the gateway.
            fn deliver_one(host: &mut HostState, event: wit::MessageEvent) {
                let ack = DeliveryAck::new(host.verdicts.clone(), host.instance, event.delivery);
                // If the gateway dropped the stream, the event (and its ack) drops: a reject.
                let _ = host.events.send(Event::Message(MessageEvent {
                    delivery: event.delivery,
                    buffer_id: event.buffer_id,
                    platform: event.platform,
                    chat_id: event.chat_id,
                    chat_type: event.chat_type,
                    user_id: event.user_id,
                    scope_id: event.scope_id,
                    thread_id: event.thread_id,
                    message_type: event.message_type,
                    text: event.text,
                    json: event.json,
                    ack,
                }));
            }

            impl Host for HostState {
                fn dial(&mut self, conn: u32, url: String, headers: Vec<(String, String)>) {
                    if !self.dial_policy.allows(&url) {
                        // Log without the query: only scheme, host and path matter here.
                        let shown = url.split('?').next().unwrap_or_default();
                        tracing::warn!(adapter = %self.label, conn, url = shown, "dial target refused: not the configured connector");
                        self.actions.push(Action::DialFailed {
                            conn,
                            reason: "dial target refused".to_string(),
                        });
                        return;
                    }
                    if self.conns.contains_key(&conn) {
                        tracing::warn!(adapter = %self.label, conn, "dial refused: conn id still in use");
                        self.actions.push(Action::DialFailed {
                            conn,
                            reason: "conn id in use".to_string(),
                        });
                        return;
                    }
                    tracing::debug!(adapter = %self.label, conn, "dialing");
                    let token = socket::next_token();
                    let (out_tx, out_rx) = mpsc::unbounded_channel();
                    let task = socket::spawn_connection(
                        conn,
                        token,
                        url,
                        headers,
                        self.sockets.clone(),
                        self.io.clone(),
                        out_rx,
                    );
                    self.conns.insert(
                        conn,
                        Conn {
                            token,
                            out: out_tx,
                            task,
                            open: false,
                        },
                    );
                }

                fn send_text(&mut self, conn: u32, text: String) -> Result<(), String> {
                    match self.conns.get(&conn) {
                        Some(c) => c
                            .out
                            .send(Outgoing::Text(text))
                            .map_err(|_| "connection closed".to_string()),
                        None => Err("no such connection".to_string()),
                    }
                }

                fn close(&mut self, conn: u32, code: u16, reason: String) {
                    if let Some(c) = self.conns.remove(&conn) {
                        if c.open {
                            // The task sends the close frame, lingers briefly, then ends.
                            let _ = c.out.send(Outgoing::Close(code, reason));
                        } else {
                            c.task.abort();
                        }
                    }
                }

                fn set_deadline(&mut self, at: Option<wit::Instant>) {
                    self.deadline = Some(at);
                }


                fn interrupt(&mut self, session_key: String, chat_id: String) {
                    let _ = self.events.send(Event::Interrupt {
                        session_key,
                        chat_id,
                    });
                }

                fn complete(&mut self, request: u64, completion: wit::Completion) {
                    match self.pending.remove(&request) {
                        Some(pending) => {
                            if pending.is_shutdown {
                                self.stop = true;
                            }
                            if let wit::Completion::Sent(result) = &completion {
                                tracing::debug!(
                                    adapter = %self.label,
                                    request,
                                    success = result.success,
                                    ambiguous = result.ambiguous,
                                    declined = result.declined,
                                    "relay request completed"
                                );
                            } else {
                                tracing::debug!(adapter = %self.label, request, "relay request completed");
                            }
                            // The caller may have given up waiting; that is fine.
                            let _ = pending.reply.send(Ok(completion.into()));
                        }
                        None => {
                            tracing::warn!(adapter = %self.label, request, "component completed an unknown request");
                        }
                    }
                }

                fn state_changed(&mut self, state: wit::State, detail: String) {
                    let state = State::from(state);
                    tracing::info!(adapter = %self.label, %state, detail, "relay state changed");
                    let _ = self.events.send(Event::State { state, detail });
                }

                fn fatal(&mut self, error: wit::FatalError) {
                    tracing::error!(adapter = %self.label, code = error.code, retryable = error.retryable, "relay adapter fatal: {}", error.message);
                    if !error.retryable {
                        self.terminal = true;
                    }
                    let _ = self.events.send(Event::Fatal {
                        code: error.code,
                        message: error.message,
                        retryable: error.retryable,
                    });
                }

                $($($extra)*)?

                fn log(&mut self, level: wit::LogLevel, message: String) {
                    if !self.log_budget.take() {
                        return;
                    }
                    let adapter = &*self.label;
                    match level {
                        wit::LogLevel::Trace => tracing::trace!(target: "relay_guest", adapter, "{message}"),
                        wit::LogLevel::Debug => tracing::debug!(target: "relay_guest", adapter, "{message}"),
                        wit::LogLevel::Info => tracing::info!(target: "relay_guest", adapter, "{message}"),
                        wit::LogLevel::Warn => tracing::warn!(target: "relay_guest", adapter, "{message}"),
                        wit::LogLevel::Error => tracing::error!(target: "relay_guest", adapter, "{message}"),
                    }
                }
            }

            impl From<wit::State> for State {
                fn from(state: wit::State) -> Self {
                    match state {
                        wit::State::Connecting => State::Connecting,
                        wit::State::Handshaking => State::Handshaking,
                        wit::State::Ready => State::Ready,
                        wit::State::Reconnecting => State::Reconnecting,
                        wit::State::Idle => State::Idle,
                        wit::State::Dormant => State::Dormant,
                        wit::State::Disabled => State::Disabled,
                        wit::State::Stopped => State::Stopped,
                    }
                }
            }

            impl From<wit::SendResult> for SendResult {
                fn from(r: wit::SendResult) -> Self {
                    Self {
                        success: r.success,
                        message_id: r.message_id,
                        error: r.error,
                        code: r.code,
                        ambiguous: r.ambiguous,
                        declined: r.declined,
                        thread_id: r.thread_id,
                        auto_thread_name: r.auto_thread_name,
                        raw: r.raw,
                    }
                }
            }

            impl From<wit::Completion> for Completion {
                fn from(c: wit::Completion) -> Self {
                    match c {
                        wit::Completion::Sent(r) => Completion::Sent(r.into()),
                        wit::Completion::ChatInfo(info) => Completion::ChatInfo(ChatInfo {
                            name: info.name,
                            chat_type: info.chat_type,
                        }),
                        wit::Completion::Flag(flag) => Completion::Flag(flag),
                        wit::Completion::Done => Completion::Done,
                    }
                }
            }
        }
    };
}

host_imports!(v0_1 {
    fn deliver(&mut self, event: wit::MessageEvent) {
        deliver_one(self, event);
    }
});
// 0.2 added `prompt-answered`, the media imports and the label record, and
// `deliver` takes the messages of one export call together.
host_imports!(v0_2 {
    fn deliver(&mut self, events: Vec<wit::MessageEvent>) {
        for event in events {
            deliver_one(self, event);
        }
    }

    fn labels_observed(&mut self, l: wit::ChatLabels) {
        let _ = self.events.send(Event::Labels(crate::types::ChatLabels {
            scope_id: l.scope_id,
            chat_id: l.chat_id,
            chat_name: l.chat_name,
            chat_topic: l.chat_topic,
            parent_chat_id: l.parent_chat_id,
            user_id: l.user_id,
            user_name: l.user_name,
        }));
    }

    fn fetch_media(&mut self, job: u64, r: wit::MediaRequest) {
        let request = crate::media::FetchRequest {
            url: r.url,
            headers: r.headers,
            max_bytes: r.max_bytes,
            timeout: std::time::Duration::from_millis(r.timeout_ms.max(1)),
            want_headers: r.want_headers,
            name_hint: r.name_hint,
        };
        media_job(self, job, |client| async move { client.fetch(request).await });
    }

    fn upload_media(&mut self, job: u64, r: wit::MediaRequest, path: String) {
        let request = crate::media::UploadRequest {
            url: r.url,
            headers: r.headers,
            max_bytes: r.max_bytes,
            timeout: std::time::Duration::from_millis(r.timeout_ms.max(1)),
            path: path.into(),
        };
        media_job(self, job, |client| async move { client.upload(request).await });
    }

    fn delete_media(&mut self, paths: Vec<String>) {
        for path in &paths {
            self.media_written.remove(path);
        }
        if let Some(client) = &self.media.client {
            let removed = client.delete(&paths);
            tracing::debug!(adapter = %self.label, asked = paths.len(), removed, "media files deleted");
        }
    }

    fn prompt_answered(&mut self, a: wit::PromptAnswer) {
        tracing::debug!(adapter = %self.label, prompt = a.prompt_id, option = a.option_id, "prompt answered");
        let _ = self.events.send(Event::PromptAnswer(PromptAnswer {
            prompt_id: a.prompt_id,
            kind: a.kind,
            option_id: a.option_id,
            chat_id: a.chat_id,
            user_id: a.user_id,
            prompt_message_id: a.prompt_message_id,
            choice: a.choice,
            text_capture: a.text_capture,
            event_json: a.event,
        }));
    }
});
