//! The boundary driver, written once: feed one input to the [`Machine`],
//! then drain every output into [`Effects`], feeding a failed write back at
//! once (before later outputs, so the machine attributes it to the frame
//! just polled). The component's guest glue and the host's native engine
//! both drive the machine through [`step`]; they differ only in how an
//! effect reaches the host (a WIT import call, or a direct call).
//!
//! The record conversions both sides need (the configuration in, states,
//! completions, log levels and events out) are macros here, because each
//! side has its own generated types of the same shape: wit-bindgen's in the
//! guest, wasmtime's in the host.

use crate::machine::{
    ChatLabels, Command, Completion, Delivery, Input, Lane, Level, Machine, MediaRequest, Now,
    Output, PromptAnswer, State,
};
use crate::outcome::{ChatInfo, SendResult};

/// Where the machine's outputs go: the host side of the boundary.
pub trait Effects {
    /// The time for the next input (read once per input).
    fn now(&mut self) -> Now;
    /// Open connection `conn` to `url` with these upgrade headers.
    fn dial(&mut self, conn: u32, url: String, headers: Vec<(String, String)>);
    /// Queue `text` on `conn`; an error is fed back as a write failure.
    fn send_text(&mut self, conn: u32, text: String) -> Result<(), String>;
    /// Close `conn`.
    fn close(&mut self, conn: u32, code: u16, reason: String);
    /// The one deadline (monotonic ns), or none.
    fn set_deadline(&mut self, at: Option<u64>);
    /// Hand a message to the gateway.
    fn deliver(&mut self, delivery: Delivery);
    /// The connector asked to interrupt a session.
    fn interrupt(&mut self, session_key: String, chat_id: String);
    /// A command completed.
    fn complete(&mut self, request: u64, completion: Completion);
    /// The state changed.
    fn state_changed(&mut self, state: State, detail: String);
    /// A fatal condition.
    fn fatal(&mut self, code: String, message: String, retryable: bool);
    /// A log line.
    fn log(&mut self, level: Level, message: String);
    /// The answer to a prompt this instance minted.
    fn prompt_answered(&mut self, answer: PromptAnswer);
    /// Download a media URL; report through [`Input::MediaDone`].
    fn fetch_media(&mut self, job: u64, request: MediaRequest);
    /// Upload a local file; report through [`Input::MediaDone`].
    fn upload_media(&mut self, job: u64, request: MediaRequest, path: String);
    /// Delete downloaded files.
    fn delete_media(&mut self, paths: Vec<String>);
    /// New chat labels to store (§7.7).
    fn labels_observed(&mut self, labels: ChatLabels);
}

/// Feeds `input` at `fx.now()` and drains every output into `fx`.
pub fn step(machine: &mut Machine, fx: &mut impl Effects, input: Input<'_>) {
    machine.handle(fx.now(), input);
    drain(machine, fx);
}

/// Performs every pending output. A failed write is fed back at once.
pub fn drain(machine: &mut Machine, fx: &mut impl Effects) {
    while let Some(out) = machine.poll_output() {
        match out {
            Output::Dial { conn, url, headers } => fx.dial(conn, url, headers.0),
            Output::SendText { conn, text } => {
                if let Err(error) = fx.send_text(conn, text) {
                    let now = fx.now();
                    machine.handle(
                        now,
                        Input::WriteFailed {
                            conn,
                            error: &error,
                        },
                    );
                }
            }
            Output::Close { conn, code, reason } => fx.close(conn, code, reason),
            Output::SetDeadline(at) => fx.set_deadline(at),
            Output::Deliver(delivery) => fx.deliver(delivery),
            Output::Interrupt {
                session_key,
                chat_id,
            } => fx.interrupt(session_key, chat_id),
            Output::Complete {
                request,
                completion,
            } => fx.complete(request, completion),
            Output::State { state, detail } => fx.state_changed(state, detail),
            Output::Fatal {
                code,
                message,
                retryable,
            } => fx.fatal(code, message, retryable),
            Output::Log { level, message } => fx.log(level, message),
            Output::PromptAnswer(answer) => fx.prompt_answered(*answer),
            Output::FetchMedia { job, request } => fx.fetch_media(job, request),
            Output::UploadMedia { job, request, path } => fx.upload_media(job, request, path),
            Output::DeleteMedia(paths) => fx.delete_media(paths),
            Output::LabelsObserved(labels) => fx.labels_observed(*labels),
        }
    }
}

/// How a command given before the machine exists (before `start`, or after
/// `start` refused its configuration) completes: every command completes
/// exactly once, with a definite failure where it has a result.
pub fn unstarted(command: &Command<'_>) -> Completion {
    match command {
        Command::GetChatInfo { chat_id } => Completion::ChatInfo(ChatInfo::local(chat_id)),
        Command::GoDormant => Completion::Flag(false),
        Command::Lane(Lane::ProcessingStart { .. } | Lane::ProcessingComplete { .. }) => {
            Completion::Done
        }
        Command::Lane(_) => Completion::Sent(SendResult::failure("relay adapter not started")),
        Command::Send { .. }
        | Command::Edit { .. }
        | Command::Typing { .. }
        | Command::FollowUp { .. }
        | Command::RawAction { .. } => {
            Completion::Sent(SendResult::failure("relay adapter not started"))
        }
        Command::Interrupt { .. }
        | Command::Shutdown
        | Command::HoldRedial
        | Command::ReleaseRedial => Completion::Done,
    }
}

/// The fields of the WIT `message-event` record, taken from a delivery
/// (moved, not cloned: the event is dropped right after).
#[derive(Debug)]
pub struct EventRecord {
    /// Delivery id.
    pub delivery: u64,
    /// Buffer id of a replay.
    pub buffer_id: Option<String>,
    /// Logical platform.
    pub platform: String,
    /// Chat id.
    pub chat_id: String,
    /// Chat type.
    pub chat_type: String,
    /// Author.
    pub user_id: Option<String>,
    /// Tenant scope.
    pub scope_id: Option<String>,
    /// Thread.
    pub thread_id: Option<String>,
    /// Message type.
    pub message_type: String,
    /// Text.
    pub text: String,
    /// The whole event as gateway JSON.
    pub json: String,
}

impl From<Delivery> for EventRecord {
    fn from(d: Delivery) -> Self {
        let event = *d.event;
        let message_type = event.message_type.as_str().to_owned();
        let source = event.source;
        EventRecord {
            delivery: d.delivery,
            buffer_id: d.buffer_id,
            platform: source.platform,
            chat_id: source.chat_id,
            chat_type: source.chat_type,
            user_id: source.user_id,
            scope_id: source.scope_id,
            thread_id: source.thread_id,
            message_type,
            text: event.text,
            json: d.json,
        }
    }
}

/// The machine [`Config`](crate::machine::Config) from a WIT `config`
/// record of either side's bindings (taken by reference).
#[macro_export]
macro_rules! config_from_record {
    ($c:expr) => {{
        let c = $c;
        let size = |v: u32| usize::try_from(v).unwrap_or(usize::MAX);
        let mut cfg = $crate::machine::Config::new(c.connector_url.clone());
        cfg.identities = c
            .identities
            .iter()
            .map(|i| $crate::machine::Identity::new(i.platform.clone(), i.bot_id.clone()))
            .collect();
        cfg.gateway_id = c.gateway_id.clone();
        cfg.secret = c
            .secret
            .clone()
            .map($crate::auth::Secret::new)
            .unwrap_or_default();
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
        cfg.max_pending = size(c.max_pending);
        cfg.max_undelivered = size(c.max_undelivered);
        cfg.seen_capacity = size(c.seen_capacity);
        cfg.route_capacity = size(c.route_capacity);
        cfg.max_line_bytes = size(c.max_line_bytes);
        cfg.authorization_is_upstream = c.authorization_is_upstream;
        cfg.platform_extra = c.platform_extra.clone();
        cfg.prompt_nonce = c.prompt_nonce.clone();
        cfg.command_manifest = c.command_manifest.clone();
        cfg.media = $crate::machine::MediaConfig {
            client: c.media.enabled,
            max_bytes: c.media.max_bytes,
            timeout_ms: c.media.timeout_ms,
            retention_ms: c.media.retention_ms,
            max_files: size(c.media.max_files),
            max_total_bytes: c.media.max_total_bytes,
        };
        cfg
    }};
}

/// A WIT value of module `$wit` (the side's `hermes:relay/types`, as a
/// path such as `crate::bindings::wit`) for a
/// machine value: `state`, `completion`, `level`, `event` (an
/// [`EventRecord`]), `prompt_answer`, `media_request` or `chat_labels`.
#[macro_export]
macro_rules! to_record {
    ($($wit:ident)::+, state, $s:expr) => {{
        use $crate::machine::State as S;
        match $s {
            S::Connecting => $($wit)::+::State::Connecting,
            S::Handshaking => $($wit)::+::State::Handshaking,
            S::Ready => $($wit)::+::State::Ready,
            S::Reconnecting => $($wit)::+::State::Reconnecting,
            S::Idle => $($wit)::+::State::Idle,
            S::Dormant => $($wit)::+::State::Dormant,
            S::Disabled => $($wit)::+::State::Disabled,
            S::Stopped => $($wit)::+::State::Stopped,
        }
    }};
    ($($wit:ident)::+, level, $l:expr) => {{
        use $crate::machine::Level as L;
        match $l {
            L::Trace => $($wit)::+::LogLevel::Trace,
            L::Debug => $($wit)::+::LogLevel::Debug,
            L::Info => $($wit)::+::LogLevel::Info,
            L::Warn => $($wit)::+::LogLevel::Warn,
            L::Error => $($wit)::+::LogLevel::Error,
        }
    }};
    ($($wit:ident)::+, completion, $c:expr) => {{
        use $crate::machine::Completion as C;
        match $c {
            C::Sent(r) => $($wit)::+::Completion::Sent($($wit)::+::SendResult {
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
            C::ChatInfo(i) => $($wit)::+::Completion::ChatInfo($($wit)::+::ChatInfo {
                name: i.name,
                chat_type: i.chat_type,
            }),
            C::Flag(b) => $($wit)::+::Completion::Flag(b),
            C::Done => $($wit)::+::Completion::Done,
        }
    }};
    ($($wit:ident)::+, prompt_answer, $a:expr) => {{
        let a: $crate::machine::PromptAnswer = $a;
        $($wit)::+::PromptAnswer {
            prompt_id: a.prompt_id,
            kind: a.kind,
            option_id: a.option_id,
            chat_id: a.chat_id,
            user_id: a.user_id,
            prompt_message_id: a.prompt_message_id,
            choice: a.choice,
            text_capture: a.text_capture,
            event: a.event_json,
        }
    }};
    ($($wit:ident)::+, chat_labels, $l:expr) => {{
        let l: $crate::machine::ChatLabels = $l;
        $($wit)::+::ChatLabels {
            scope_id: l.scope_id,
            chat_id: l.chat_id,
            chat_name: l.chat_name,
            chat_topic: l.chat_topic,
            parent_chat_id: l.parent_chat_id,
            user_id: l.user_id,
            user_name: l.user_name,
        }
    }};
    ($($wit:ident)::+, media_request, $r:expr) => {{
        let r: $crate::machine::MediaRequest = $r;
        $($wit)::+::MediaRequest {
            url: r.url,
            headers: r.headers.0,
            max_bytes: r.max_bytes,
            timeout_ms: r.timeout_ms,
            want_headers: r.want_headers,
            name_hint: r.name_hint,
        }
    }};
    ($($wit:ident)::+, event, $e:expr) => {{
        let e: $crate::driver::EventRecord = $e;
        $($wit)::+::MessageEvent {
            delivery: e.delivery,
            buffer_id: e.buffer_id,
            platform: e.platform,
            chat_id: e.chat_id,
            chat_type: e.chat_type,
            user_id: e.user_id,
            scope_id: e.scope_id,
            thread_id: e.thread_id,
            message_type: e.message_type,
            text: e.text,
            json: e.json,
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::ProcessingOutcome;

    #[test]
    fn lanes_before_start_complete_at_once() {
        let lane = Lane::Delete {
            chat_id: "c".into(),
            message_id: "m".into(),
            metadata: "{}".into(),
        };
        assert!(matches!(
            unstarted(&Command::Lane(&lane)),
            Completion::Sent(r) if !r.success
        ));
        for lane in [
            Lane::ProcessingStart { event: "{}".into() },
            Lane::ProcessingComplete {
                event: "{}".into(),
                outcome: ProcessingOutcome::Success,
            },
        ] {
            assert_eq!(unstarted(&Command::Lane(&lane)), Completion::Done);
        }
    }
}
