//! The native engine: relay-core's machine compiled into the host, fed the
//! same inputs the component's exports get and draining its outputs into the
//! same `host` import implementations. It mirrors `component/guest`'s glue
//! with host-side types; no protocol logic lives here either.
//!
//! It exists to isolate the sandbox's cost (benchmarks compare it with the
//! component under the same host loop) and for embedders that trust the
//! adapter code and want the last microseconds. It has no memory cap, no CPU
//! budget and no trap recovery: a bug is a host bug.

use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

use relay_core::driver::{self, Effects, EventRecord};
use relay_core::machine::{
    ChatLabels, Completion, Delivery, Input as CoreInput, Level, Machine, MediaRequest, Now,
    PromptAnswer, State,
};

use super::Feed;
use crate::bindings::hermes::relay::host::Host;
use crate::bindings::wit;
use crate::messages::{Answer, Query, Request};
use crate::store::HostState;

/// One adapter's machine.
pub(crate) struct NativeAdapter {
    machine: Machine,
}

impl NativeAdapter {
    /// Builds the machine from the same config record the component gets
    /// and starts it (its first dial goes through `host`).
    pub(crate) fn start(config: &wit::Config, host: &mut HostState) -> Result<Self, String> {
        let machine = Machine::new(relay_core::config_from_record!(config), seed())
            .map_err(|e| e.to_string())?;
        let mut adapter = Self { machine };
        adapter.handle(host, CoreInput::Start);
        Ok(adapter)
    }

    /// The counterpart of one export call.
    pub(crate) fn feed(&mut self, host: &mut HostState, input: Feed) {
        match input {
            Feed::Open(conn) => self.handle(host, CoreInput::SocketOpened { conn }),
            Feed::DialFailed(conn, code, reason) => self.handle(
                host,
                CoreInput::DialFailed {
                    conn,
                    code,
                    reason: &reason,
                },
            ),
            Feed::Text(conn, text) => self.handle(
                host,
                CoreInput::SocketText {
                    conn,
                    text: text.as_str(),
                },
            ),
            Feed::Binary(conn, data) => {
                self.handle(host, CoreInput::SocketBinary { conn, data: &data })
            }
            Feed::Closed(conn, code, reason) => self.handle(
                host,
                CoreInput::SocketClosed {
                    conn,
                    code,
                    reason: &reason,
                },
            ),
            Feed::Deadline => self.handle(host, CoreInput::Deadline),
            Feed::Deliveries(answers) => {
                // One clock read and one drain for the batch, as the guest.
                let now = now(host);
                for (delivery, accept) in answers {
                    let input = if accept {
                        CoreInput::AcceptDelivery(delivery)
                    } else {
                        CoreInput::RejectDelivery(delivery)
                    };
                    self.machine.handle(now, input);
                }
                driver::drain(&mut self.machine, &mut HostEffects(host));
            }
            Feed::Request(request, command) => self.command(host, request, command),
            Feed::Sends(sends) => {
                // One clock read and one drain for the batch, as the guest.
                let now = now(host);
                for (request, command) in &sends {
                    let command = command.as_command();
                    self.machine.handle(
                        now,
                        CoreInput::Command {
                            request: *request,
                            command,
                        },
                    );
                }
                driver::drain(&mut self.machine, &mut HostEffects(host));
            }
            Feed::MediaDone(job, o) => {
                let outcome = relay_core::machine::MediaOutcome {
                    status: o.status,
                    error: o.error,
                    headers: o.headers,
                    size: o.size,
                    path: o.path,
                    body: o.body,
                };
                self.handle(host, CoreInput::MediaDone { job, outcome })
            }
        }
    }

    /// The counterpart of the query exports.
    pub(crate) fn query(&mut self, host: &mut HostState, query: Query) -> Answer {
        let m = &self.machine;
        match query {
            Query::State => Answer::State(state_to_wit(m.state()).into()),
            Query::Descriptor(platform) => {
                Answer::Text(Some(m.descriptor(platform.as_deref()).to_json()))
            }
            Query::MaxMessageLength(chat) => Answer::Number(m.max_message_length(chat.as_deref())),
            Query::MessageLen(chat, text) => Answer::Number(
                u32::try_from(m.message_len(chat.as_deref(), &text)).unwrap_or(u32::MAX),
            ),
            Query::SupportsOp(chat, op) => Answer::Flag(m.supports_op(chat.as_deref(), &op)),
            Query::FrontsPlatform(platform) => Answer::Flag(m.fronts_platform(&platform)),
            Query::MintPrompt { chat_id, kind } => {
                // A state change with no outputs (as the guest's glue).
                let now = now(host);
                Answer::Text(Some(self.machine.mint_prompt(now, &chat_id, &kind)))
            }
            Query::SupportsDraftStreaming(chat) => Answer::Flag(m.supports_draft_streaming(&chat)),
            Query::PrefersFreshFinal(chat, text) => {
                Answer::Flag(m.prefers_fresh_final(&chat, &text))
            }
            Query::Stats => Answer::Text(Some(stats_json(m))),
            Query::Health => Answer::Guest(state_to_wit(m.state()).into(), stats_json(m)),
            Query::HoldRoute { chat_id, hold } => {
                self.handle(
                    host,
                    CoreInput::HoldRoute {
                        chat_id: &chat_id,
                        hold,
                    },
                );
                Answer::Unit
            }
            Query::PrimeRoute {
                chat_id,
                platform,
                scope_id,
                user_id,
                profile,
            } => {
                self.handle(
                    host,
                    CoreInput::PrimeRoute {
                        chat_id: &chat_id,
                        platform: &platform,
                        scope_id: scope_id.as_deref(),
                        user_id: user_id.as_deref(),
                        profile: profile.as_deref(),
                    },
                );
                Answer::Unit
            }
            Query::PrimeLabels(l) => {
                let labels = ChatLabels {
                    scope_id: l.scope_id,
                    chat_id: l.chat_id,
                    chat_name: l.chat_name,
                    chat_topic: l.chat_topic,
                    parent_chat_id: l.parent_chat_id,
                    user_id: l.user_id,
                    user_name: l.user_name,
                };
                self.handle(host, CoreInput::PrimeLabels(&labels));
                Answer::Unit
            }
        }
    }

    fn command(&mut self, host: &mut HostState, request: u64, command: Request) {
        let command = command.as_command();
        self.handle(host, CoreInput::Command { request, command });
    }

    fn handle(&mut self, host: &mut HostState, input: CoreInput<'_>) {
        driver::step(&mut self.machine, &mut HostEffects(host), input);
    }
}

/// The host's `host` import implementations, called directly (the same
/// code the component's import calls reach).
struct HostEffects<'a>(&'a mut HostState);

impl Effects for HostEffects<'_> {
    fn now(&mut self) -> Now {
        now(self.0)
    }

    fn dial(&mut self, conn: u32, url: String, headers: Vec<(String, String)>) {
        self.0.dial(conn, url, headers);
    }

    fn send_text(&mut self, conn: u32, text: String) -> Result<(), String> {
        self.0.send_text(conn, text)
    }

    fn close(&mut self, conn: u32, code: u16, reason: String) {
        self.0.close(conn, code, reason);
    }

    fn set_deadline(&mut self, at: Option<u64>) {
        self.0.set_deadline(at);
    }

    fn deliver(&mut self, delivery: Delivery) {
        let event =
            relay_core::to_record!(crate::bindings::wit, event, EventRecord::from(delivery));
        self.0.deliver(vec![event]);
    }

    fn interrupt(&mut self, session_key: String, chat_id: String) {
        self.0.interrupt(session_key, chat_id);
    }

    fn prompt_answered(&mut self, answer: PromptAnswer) {
        let answer = relay_core::to_record!(crate::bindings::wit, prompt_answer, answer);
        self.0.prompt_answered(answer);
    }

    fn fetch_media(&mut self, job: u64, request: MediaRequest) {
        let request = relay_core::to_record!(crate::bindings::wit, media_request, request);
        self.0.fetch_media(job, request);
    }

    fn upload_media(&mut self, job: u64, request: MediaRequest, path: String) {
        let request = relay_core::to_record!(crate::bindings::wit, media_request, request);
        self.0.upload_media(job, request, path);
    }

    fn delete_media(&mut self, paths: Vec<String>) {
        self.0.delete_media(paths);
    }

    fn labels_observed(&mut self, labels: ChatLabels) {
        let labels = relay_core::to_record!(crate::bindings::wit, chat_labels, labels);
        self.0.labels_observed(labels);
    }

    fn complete(&mut self, request: u64, completion: Completion) {
        let completion = relay_core::to_record!(crate::bindings::wit, completion, completion);
        self.0.complete(request, completion);
    }

    fn state_changed(&mut self, state: State, detail: String) {
        self.0.state_changed(state_to_wit(state), detail);
    }

    fn fatal(&mut self, code: String, message: String, retryable: bool) {
        self.0.fatal(wit::FatalError {
            code,
            message,
            retryable,
        });
    }

    fn log(&mut self, level: Level, message: String) {
        self.0.log(
            relay_core::to_record!(crate::bindings::wit, level, level),
            message,
        );
    }
}

/// The machine's clocks, on the same origin the component's WASI
/// monotonic clock uses, so deadlines convert the same way.
fn now(host: &HostState) -> Now {
    Now {
        mono_ns: u64::try_from(host.clock_origin.elapsed().as_nanos()).unwrap_or(u64::MAX),
        wall_secs: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

/// Jitter seed from the standard library's per-process random keys (the
/// component gets `wasi:random` instead).
fn seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x5eed);
    hasher.finish()
}

fn stats_json(m: &Machine) -> String {
    serde_json::to_string(&m.stats()).unwrap_or_else(|_| "{}".to_owned())
}

fn state_to_wit(state: State) -> wit::State {
    relay_core::to_record!(crate::bindings::wit, state, state)
}
