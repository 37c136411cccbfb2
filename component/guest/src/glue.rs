//! Glue between the WIT exports and the `relay-core` state machine.
//!
//! Each export reads the WASI clocks, feeds exactly one input to the machine
//! and drains every output into a host import. Imports never call back into
//! the component, so the machine's `RefCell` is never borrowed twice. No
//! protocol logic lives here: only type conversion.

use crate::hermes::relay::host;
use crate::hermes::relay::types::{
    ChatInfo as WitChatInfo, Completion as WitCompletion, Config as WitConfig,
    FatalError as WitFatal, LogLevel, MessageEvent as WitEvent, SendResult as WitSendResult,
    State as WitState,
};
use relay_core::auth::Secret;
use relay_core::machine::{
    Command, Completion, Config, Identity, Input, Level, Machine, Now, Output, State,
};
use relay_core::outcome::SendResult;
use std::cell::{Cell, RefCell};

thread_local! {
    static MACHINE: RefCell<Option<Machine>> = const { RefCell::new(None) };
    /// (monotonic ns, wall ns) of the last wall-clock read.
    static WALL_SYNC: Cell<Option<(u64, u64)>> = const { Cell::new(None) };
}

/// The wall clock is read at most once per second of monotonic time and
/// advanced by the monotonic clock in between (so a wall-clock step shows
/// within a second): only token expiry reads it, and it saves one import
/// call per export call.
const WALL_RESYNC_NS: u64 = 1_000_000_000;

fn now() -> Now {
    let mono_ns = wasip2::clocks::monotonic_clock::now();
    let wall_ns = WALL_SYNC.with(|sync| match sync.get() {
        Some((at, wall_ns)) if mono_ns.saturating_sub(at) < WALL_RESYNC_NS => {
            wall_ns.saturating_add(mono_ns.saturating_sub(at))
        }
        _ => {
            let wall = wasip2::clocks::wall_clock::now();
            let wall_ns = wall
                .seconds
                .saturating_mul(1_000_000_000)
                .saturating_add(u64::from(wall.nanoseconds));
            sync.set(Some((mono_ns, wall_ns)));
            wall_ns
        }
    });
    Now {
        mono_ns,
        wall_secs: wall_ns / 1_000_000_000,
    }
}

fn to_usize(v: u32) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

fn config_from_wit(c: WitConfig) -> Config {
    let mut cfg = Config::new(c.connector_url);
    cfg.identities = c
        .identities
        .into_iter()
        .map(|i| Identity::new(i.platform, i.bot_id))
        .collect();
    cfg.gateway_id = c.gateway_id;
    cfg.secret = c.secret.map(Secret::new).unwrap_or_default();
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

fn state_to_wit(s: State) -> WitState {
    match s {
        State::Connecting => WitState::Connecting,
        State::Handshaking => WitState::Handshaking,
        State::Ready => WitState::Ready,
        State::Reconnecting => WitState::Reconnecting,
        State::Idle => WitState::Idle,
        State::Dormant => WitState::Dormant,
        State::Disabled => WitState::Disabled,
        State::Stopped => WitState::Stopped,
    }
}

fn result_to_wit(r: SendResult) -> WitSendResult {
    WitSendResult {
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

fn completion_to_wit(c: Completion) -> WitCompletion {
    match c {
        Completion::Sent(r) => WitCompletion::Sent(result_to_wit(r)),
        Completion::ChatInfo(i) => WitCompletion::ChatInfo(WitChatInfo {
            name: i.name,
            chat_type: i.chat_type,
        }),
        Completion::Flag(b) => WitCompletion::Flag(b),
        Completion::Done => WitCompletion::Done,
    }
}

fn level_to_wit(l: Level) -> LogLevel {
    match l {
        Level::Trace => LogLevel::Trace,
        Level::Debug => LogLevel::Debug,
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
    }
}

/// Performs every pending output. A failed write is fed back at once, before
/// later outputs, so the machine can attribute it to the frame just polled.
fn drain(machine: &mut Machine) {
    while let Some(out) = machine.poll_output() {
        match out {
            Output::Dial { conn, url, headers } => host::dial(conn, &url, &headers.0),
            Output::SendText { conn, text } => {
                if let Err(error) = host::send_text(conn, &text) {
                    machine.handle(
                        now(),
                        Input::WriteFailed {
                            conn,
                            error: &error,
                        },
                    );
                }
            }
            Output::Close { conn, code, reason } => host::close(conn, code, &reason),
            Output::SetDeadline(at) => host::set_deadline(at),
            Output::Deliver(d) => {
                // Moved, not cloned: the event is dropped right after.
                let e = *d.event;
                let message_type = e.message_type.as_str().to_owned();
                let source = e.source;
                host::deliver(&WitEvent {
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
            } => host::interrupt(&session_key, &chat_id),
            Output::Complete {
                request,
                completion,
            } => host::complete(request, &completion_to_wit(completion)),
            Output::State { state, detail } => host::state_changed(state_to_wit(state), &detail),
            Output::Fatal {
                code,
                message,
                retryable,
            } => host::fatal(&WitFatal {
                code,
                message,
                retryable,
            }),
            Output::Log { level, message } => host::log(level_to_wit(level), &message),
        }
    }
}

fn feed(input: Input<'_>) {
    MACHINE.with(|cell| {
        let mut slot = cell.borrow_mut();
        match slot.as_mut() {
            Some(machine) => {
                machine.handle(now(), input);
                drain(machine);
            }
            None => host::log(LogLevel::Warn, "relay adapter: input before start ignored"),
        }
    });
}

/// Feeds a command; before `start` it still completes, with a failure.
fn command(request: u64, command: Command<'_>) {
    let started = MACHINE.with(|cell| cell.borrow().is_some());
    if started {
        feed(Input::Command { request, command });
        return;
    }
    let completion = match command {
        Command::GetChatInfo { chat_id } => {
            Completion::ChatInfo(relay_core::outcome::ChatInfo::local(chat_id))
        }
        Command::GoDormant => Completion::Flag(false),
        Command::Send { .. }
        | Command::Edit { .. }
        | Command::Typing { .. }
        | Command::FollowUp { .. }
        | Command::RawAction { .. } => {
            Completion::Sent(SendResult::failure("relay adapter not started"))
        }
        _ => Completion::Done,
    };
    host::complete(request, &completion_to_wit(completion));
}

fn query<T>(default: T, f: impl FnOnce(&Machine) -> T) -> T {
    MACHINE.with(|cell| cell.borrow().as_ref().map(f).unwrap_or(default))
}

pub fn start(config: WitConfig) -> Result<(), String> {
    let already = MACHINE.with(|cell| cell.borrow().is_some());
    if already {
        return Err("relay adapter already started".to_owned());
    }
    let seed = wasip2::random::random::get_random_u64();
    let machine = Machine::new(config_from_wit(config), seed).map_err(|e| e.to_string())?;
    MACHINE.with(|cell| *cell.borrow_mut() = Some(machine));
    feed(Input::Start);
    Ok(())
}

pub fn on_open(conn: u32) {
    feed(Input::SocketOpened { conn });
}

pub fn on_dial_failed(conn: u32, code: u16, reason: String) {
    feed(Input::DialFailed {
        conn,
        code,
        reason: &reason,
    });
}

pub fn on_text(conn: u32, text: String) {
    feed(Input::SocketText { conn, text: &text });
}

pub fn on_binary(conn: u32, data: Vec<u8>) {
    feed(Input::SocketBinary { conn, data: &data });
}

pub fn on_closed(conn: u32, code: u16, reason: String) {
    feed(Input::SocketClosed {
        conn,
        code,
        reason: &reason,
    });
}

pub fn on_deadline() {
    feed(Input::Deadline);
}

pub fn accept_delivery(delivery: u64) {
    feed(Input::AcceptDelivery(delivery));
}

pub fn reject_delivery(delivery: u64) {
    feed(Input::RejectDelivery(delivery));
}

/// One clock read and one drain for the whole batch; the outputs queue in
/// verdict order either way.
pub fn answer_deliveries(answers: Vec<(u64, bool)>) {
    MACHINE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let Some(machine) = slot.as_mut() else {
            host::log(LogLevel::Warn, "relay adapter: input before start ignored");
            return;
        };
        let now = now();
        for (delivery, accept) in answers {
            let input = if accept {
                Input::AcceptDelivery(delivery)
            } else {
                Input::RejectDelivery(delivery)
            };
            machine.handle(now, input);
        }
        drain(machine);
    });
}

pub fn send(
    request: u64,
    chat_id: String,
    content: String,
    reply_to: Option<String>,
    metadata: String,
    platform: Option<String>,
) {
    command(
        request,
        Command::Send {
            chat_id: &chat_id,
            content: &content,
            reply_to: reply_to.as_deref(),
            metadata: &metadata,
            platform: platform.as_deref(),
        },
    );
}

pub fn edit(request: u64, chat_id: String, message_id: String, content: String, metadata: String) {
    command(
        request,
        Command::Edit {
            chat_id: &chat_id,
            message_id: &message_id,
            content: &content,
            metadata: &metadata,
        },
    );
}

pub fn typing(request: u64, chat_id: String, metadata: String, content: Option<String>) {
    command(
        request,
        Command::Typing {
            chat_id: &chat_id,
            metadata: &metadata,
            content: content.as_deref(),
        },
    );
}

pub fn follow_up(
    request: u64,
    session_key: String,
    kind: String,
    content: String,
    metadata: String,
) {
    command(
        request,
        Command::FollowUp {
            session_key: &session_key,
            kind: &kind,
            content: &content,
            metadata: &metadata,
        },
    );
}

pub fn get_chat_info(request: u64, chat_id: String) {
    command(request, Command::GetChatInfo { chat_id: &chat_id });
}

pub fn raw_action(request: u64, action: String, platform: Option<String>) {
    command(
        request,
        Command::RawAction {
            action: &action,
            platform: platform.as_deref(),
        },
    );
}

pub fn interrupt(request: u64, session_key: String, reason: Option<String>) {
    command(
        request,
        Command::Interrupt {
            session_key: &session_key,
            reason: reason.as_deref(),
        },
    );
}

pub fn shutdown(request: u64) {
    command(request, Command::Shutdown);
}

pub fn go_dormant(request: u64) {
    command(request, Command::GoDormant);
}

pub fn hold_redial(request: u64) {
    command(request, Command::HoldRedial);
}

pub fn release_redial(request: u64) {
    command(request, Command::ReleaseRedial);
}

pub fn hold_route(chat_id: String, hold: bool) {
    feed(Input::HoldRoute {
        chat_id: &chat_id,
        hold,
    });
}

pub fn prime_route(
    chat_id: String,
    platform: String,
    scope_id: Option<String>,
    user_id: Option<String>,
    profile: Option<String>,
) {
    feed(Input::PrimeRoute {
        chat_id: &chat_id,
        platform: &platform,
        scope_id: scope_id.as_deref(),
        user_id: user_id.as_deref(),
        profile: profile.as_deref(),
    });
}

pub fn current_state() -> WitState {
    query(WitState::Connecting, |m| state_to_wit(m.state()))
}

pub fn descriptor(platform: Option<String>) -> Option<String> {
    query(None, |m| Some(m.descriptor(platform.as_deref()).to_json()))
}

pub fn max_message_length(chat_id: Option<String>) -> u32 {
    query(relay_core::descriptor::DEFAULT_MAX_MESSAGE_LENGTH, |m| {
        m.max_message_length(chat_id.as_deref())
    })
}

pub fn message_len(chat_id: Option<String>, text: String) -> u32 {
    let n = query(text.chars().count(), |m| {
        m.message_len(chat_id.as_deref(), &text)
    });
    u32::try_from(n).unwrap_or(u32::MAX)
}

pub fn supports_op(chat_id: Option<String>, op: String) -> bool {
    query(false, |m| m.supports_op(chat_id.as_deref(), &op))
}

pub fn fronts_platform(platform: String) -> bool {
    query(false, |m| m.fronts_platform(&platform))
}

pub fn stats() -> String {
    query("{}".to_owned(), |m| {
        serde_json::to_string(&m.stats()).unwrap_or_else(|_| "{}".to_owned())
    })
}
