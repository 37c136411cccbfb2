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

use relay_core::auth::Secret;
use relay_core::machine::{
    Command, Completion, Config, Identity, Input as CoreInput, Level, Machine, Now, Output, State,
};

use super::Input;
use crate::bindings::hermes::relay::host::Host;
use crate::bindings::wit;
use crate::handle::{Answer, Query, Request};
use crate::store::HostState;

/// One adapter's machine.
pub(crate) struct NativeAdapter {
    machine: Machine,
}

impl NativeAdapter {
    /// Builds the machine from the same config record the component gets
    /// and starts it (its first dial goes through `host`).
    pub(crate) fn start(config: &wit::Config, host: &mut HostState) -> Result<Self, String> {
        let machine = Machine::new(config_from_wit(config), seed()).map_err(|e| e.to_string())?;
        let mut adapter = Self { machine };
        adapter.handle(host, CoreInput::Start);
        Ok(adapter)
    }

    /// The counterpart of one export call.
    pub(crate) fn feed(&mut self, host: &mut HostState, input: Input) {
        match input {
            Input::Open(conn) => self.handle(host, CoreInput::SocketOpened { conn }),
            Input::DialFailed(conn, code, reason) => self.handle(
                host,
                CoreInput::DialFailed {
                    conn,
                    code,
                    reason: &reason,
                },
            ),
            Input::Text(conn, text) => self.handle(
                host,
                CoreInput::SocketText {
                    conn,
                    text: text.as_str(),
                },
            ),
            Input::Binary(conn, data) => {
                self.handle(host, CoreInput::SocketBinary { conn, data: &data })
            }
            Input::Closed(conn, code, reason) => self.handle(
                host,
                CoreInput::SocketClosed {
                    conn,
                    code,
                    reason: &reason,
                },
            ),
            Input::Deadline => self.handle(host, CoreInput::Deadline),
            Input::Deliveries(answers) => {
                for (delivery, accept) in answers {
                    let input = if accept {
                        CoreInput::AcceptDelivery(delivery)
                    } else {
                        CoreInput::RejectDelivery(delivery)
                    };
                    self.handle(host, input);
                }
            }
            Input::Request(request, command) => self.command(host, request, command),
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
        }
    }

    fn command(&mut self, host: &mut HostState, request: u64, command: Request) {
        let command = match &command {
            Request::Send {
                chat_id,
                content,
                reply_to,
                metadata,
                platform,
            } => Command::Send {
                chat_id,
                content,
                reply_to: reply_to.as_deref(),
                metadata,
                platform: platform.as_deref(),
            },
            Request::Edit {
                chat_id,
                message_id,
                content,
                metadata,
            } => Command::Edit {
                chat_id,
                message_id,
                content,
                metadata,
            },
            Request::Typing {
                chat_id,
                metadata,
                content,
            } => Command::Typing {
                chat_id,
                metadata,
                content: content.as_deref(),
            },
            Request::FollowUp {
                session_key,
                kind,
                content,
                metadata,
            } => Command::FollowUp {
                session_key,
                kind,
                content,
                metadata,
            },
            Request::GetChatInfo { chat_id } => Command::GetChatInfo { chat_id },
            Request::RawAction { action, platform } => Command::RawAction {
                action,
                platform: platform.as_deref(),
            },
            Request::Interrupt {
                session_key,
                reason,
            } => Command::Interrupt {
                session_key,
                reason: reason.as_deref(),
            },
            Request::Shutdown => Command::Shutdown,
            Request::GoDormant => Command::GoDormant,
            Request::HoldRedial => Command::HoldRedial,
            Request::ReleaseRedial => Command::ReleaseRedial,
        };
        self.handle(host, CoreInput::Command { request, command });
    }

    fn handle(&mut self, host: &mut HostState, input: CoreInput<'_>) {
        self.machine.handle(now(host), input);
        self.drain(host);
    }

    /// Performs every pending output, as the guest glue does; a failed
    /// write is fed back before later outputs.
    fn drain(&mut self, host: &mut HostState) {
        while let Some(out) = self.machine.poll_output() {
            match out {
                Output::Dial { conn, url, headers } => host.dial(conn, url, headers.0),
                Output::SendText { conn, text } => {
                    if let Err(error) = host.send_text(conn, text) {
                        self.machine.handle(
                            now(host),
                            CoreInput::WriteFailed {
                                conn,
                                error: &error,
                            },
                        );
                    }
                }
                Output::Close { conn, code, reason } => host.close(conn, code, reason),
                Output::SetDeadline(at) => host.set_deadline(at),
                Output::Deliver(d) => {
                    let e = *d.event;
                    let message_type = e.message_type.as_str().to_owned();
                    let source = e.source;
                    host.deliver(wit::MessageEvent {
                        delivery: d.delivery,
                        buffer_id: d.buffer_id,
                        platform: source.platform,
                        chat_id: source.chat_id,
                        chat_type: source.chat_type,
                        user_id: source.user_id,
                        scope_id: source.scope_id,
                        thread_id: source.thread_id,
                        message_type,
                        text: e.text,
                        json: d.json,
                    });
                }
                Output::Interrupt {
                    session_key,
                    chat_id,
                } => host.interrupt(session_key, chat_id),
                Output::Complete {
                    request,
                    completion,
                } => host.complete(request, completion_to_wit(completion)),
                Output::State { state, detail } => host.state_changed(state_to_wit(state), detail),
                Output::Fatal {
                    code,
                    message,
                    retryable,
                } => host.fatal(wit::FatalError {
                    code,
                    message,
                    retryable,
                }),
                Output::Log { level, message } => host.log(level_to_wit(level), message),
            }
        }
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

fn to_usize(v: u32) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

fn config_from_wit(c: &wit::Config) -> Config {
    let mut cfg = Config::new(c.connector_url.clone());
    cfg.identities = c
        .identities
        .iter()
        .map(|i| Identity::new(i.platform.clone(), i.bot_id.clone()))
        .collect();
    cfg.gateway_id = c.gateway_id.clone();
    cfg.secret = c.secret.clone().map(Secret::new).unwrap_or_default();
    cfg.token_ttl_secs = c.token_ttl_secs;
    cfg.handshake_timeout_ms = c.handshake_timeout_ms;
    cfg.outbound_timeout_ms = c.outbound_timeout_ms;
    cfg.reconnect = c.reconnect;
    cfg.reconnect_initial_ms = c.reconnect_initial_ms;
    cfg.reconnect_max_ms = c.reconnect_max_ms;
    cfg.reconnect_jitter = c.reconnect_jitter;
    cfg.stable_connection_ms = c.stable_connection_ms;
    cfg.dormant_redial_ms = c.dormant_redial_ms;
    cfg.redial_hold_max_ms = c.redial_hold_max_ms;
    cfg.going_idle_timeout_ms = c.going_idle_timeout_ms;
    cfg.drain_grace_ms = c.drain_grace_ms;
    cfg.max_pending = to_usize(c.max_pending);
    cfg.max_undelivered = to_usize(c.max_undelivered);
    cfg.seen_capacity = to_usize(c.seen_capacity);
    cfg.route_capacity = to_usize(c.route_capacity);
    cfg.max_line_bytes = to_usize(c.max_line_bytes);
    cfg.authorization_is_upstream = c.authorization_is_upstream;
    cfg
}

fn state_to_wit(s: State) -> wit::State {
    match s {
        State::Connecting => wit::State::Connecting,
        State::Handshaking => wit::State::Handshaking,
        State::Ready => wit::State::Ready,
        State::Reconnecting => wit::State::Reconnecting,
        State::Idle => wit::State::Idle,
        State::Dormant => wit::State::Dormant,
        State::Disabled => wit::State::Disabled,
        State::Stopped => wit::State::Stopped,
    }
}

fn completion_to_wit(c: Completion) -> wit::Completion {
    match c {
        Completion::Sent(r) => wit::Completion::Sent(wit::SendResult {
            success: r.success,
            message_id: r.message_id,
            error: r.error,
            code: r.code,
            ambiguous: r.ambiguous,
            declined: r.declined,
            thread_id: r.thread_id,
            auto_thread_name: r.auto_thread_name,
            raw: r.raw,
        }),
        Completion::ChatInfo(i) => wit::Completion::ChatInfo(wit::ChatInfo {
            name: i.name,
            chat_type: i.chat_type,
        }),
        Completion::Flag(b) => wit::Completion::Flag(b),
        Completion::Done => wit::Completion::Done,
    }
}

fn level_to_wit(l: Level) -> wit::LogLevel {
    match l {
        Level::Trace => wit::LogLevel::Trace,
        Level::Debug => wit::LogLevel::Debug,
        Level::Info => wit::LogLevel::Info,
        Level::Warn => wit::LogLevel::Warn,
        Level::Error => wit::LogLevel::Error,
    }
}
