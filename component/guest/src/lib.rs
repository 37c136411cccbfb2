//! The relay adapter as a `wasm32-wasip2` component: wit-bindgen bindings for
//! `wit/v0.2/relay.wit` and the `adapter` export impl. Each export turns its
//! arguments into one machine input (or a query) and hands it to [`glue`],
//! which feeds the `relay-core` machine and drains its outputs into the
//! imports through the shared driver.

wit_bindgen::generate!({ world: "hermes:relay/relay-adapter@0.2.0", path: "../../wit/v0.2" });

mod glue;

use exports::hermes::relay::adapter::Guest;
use glue::{command, feed, query};
use hermes::relay::types::{
    Config, LaneCommand, ProcessingOutcome as WitOutcome, RenameGuard as WitGuard, State,
};
use relay_core::machine::{
    ChatLabels, Command, Input, Lane, MediaOutcome, MediaSend, ProcessingOutcome, PromptOption, PromptSend,
    RenameGuard,
};

/// The interface version this component implements (`api-version`).
const API_VERSION: &str = "0.2.0";

struct Component;

/// The machine's form of a `lane-command` (moves the strings).
fn lane_of(command: LaneCommand) -> Lane {
    match command {
        LaneCommand::Delete(d) => Lane::Delete {
            chat_id: d.chat_id,
            message_id: d.message_id,
            metadata: d.metadata,
        },
        LaneCommand::StopTyping(t) => Lane::StopTyping {
            chat_id: t.chat_id,
            metadata: t.metadata,
        },
        LaneCommand::React(r) => Lane::React {
            chat_id: r.chat_id,
            message_id: r.message_id,
            emoji: r.emoji,
            remove: r.remove,
            metadata: r.metadata,
        },
        LaneCommand::ProcessingStart(event) => Lane::ProcessingStart { event },
        LaneCommand::ProcessingComplete(p) => Lane::ProcessingComplete {
            event: p.event,
            outcome: match p.outcome {
                WitOutcome::Success => ProcessingOutcome::Success,
                WitOutcome::Failure => ProcessingOutcome::Failure,
                WitOutcome::Cancelled => ProcessingOutcome::Cancelled,
            },
        },
        LaneCommand::ThreadCreate(t) => Lane::ThreadCreate {
            parent_chat_id: t.parent_chat_id,
            name: t.name,
            metadata: t.metadata,
        },
        LaneCommand::ThreadRename(t) => Lane::ThreadRename {
            thread_id: t.thread_id,
            name: t.name,
            guard: match t.guard {
                WitGuard::None => RenameGuard::None,
                WitGuard::ConnectorCreated => RenameGuard::ConnectorCreated,
                WitGuard::CurrentName(name) => RenameGuard::CurrentName(name),
            },
            parent_chat_id: t.parent_chat_id,
            metadata: t.metadata,
        },
        LaneCommand::SendDraft(d) => Lane::SendDraft {
            chat_id: d.chat_id,
            draft_id: d.draft_id,
            content: d.content,
            metadata: d.metadata,
        },
        LaneCommand::AbandonOpenDraft(a) => Lane::AbandonOpenDraft {
            chat_id: a.chat_id,
            content: a.content,
        },
        LaneCommand::Prompt(p) => Lane::Prompt(PromptSend {
            prompt_id: p.prompt_id,
            chat_id: p.chat_id,
            question: p.question,
            options: p
                .options
                .into_iter()
                .map(|o| PromptOption {
                    id: o.id,
                    label: o.label,
                    style: o.style,
                })
                .collect(),
            choices: p.choices,
            reply_to: p.reply_to,
            metadata: p.metadata,
            timeout_s: p.timeout_s,
            prompt_kind: p.prompt_kind,
        }),
        LaneCommand::TaskCard(c) => Lane::TaskCard {
            chat_id: c.chat_id,
            reply_to: c.reply_to,
            chunks: c.chunks,
            metadata: c.metadata,
        },
        LaneCommand::TaskCardStop(c) => Lane::TaskCardStop {
            chat_id: c.chat_id,
            reply_to: c.reply_to,
            metadata: c.metadata,
        },
        LaneCommand::AutoThreadInfo(w) => Lane::AutoThreadInfo {
            chat_id: w.chat_id,
            timeout_ms: w.timeout_ms,
        },
        LaneCommand::SendMedia(m) => Lane::SendMedia(MediaSend {
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

impl Guest for Component {
    fn api_version() -> String {
        API_VERSION.to_string()
    }

    fn start(config: Config) -> Result<(), String> {
        glue::start(config)
    }

    fn on_open(conn: u32) {
        feed(Input::SocketOpened { conn });
    }

    fn on_dial_failed(conn: u32, code: u16, reason: String) {
        feed(Input::DialFailed {
            conn,
            code,
            reason: &reason,
        });
    }

    fn on_text(conn: u32, text: String) {
        feed(Input::SocketText { conn, text: &text });
    }

    fn on_binary(conn: u32, data: Vec<u8>) {
        feed(Input::SocketBinary { conn, data: &data });
    }

    fn on_closed(conn: u32, code: u16, reason: String) {
        feed(Input::SocketClosed {
            conn,
            code,
            reason: &reason,
        });
    }

    fn on_deadline() {
        feed(Input::Deadline);
    }

    fn prime_labels(labels: hermes::relay::types::ChatLabels) {
        let labels = ChatLabels {
            scope_id: labels.scope_id,
            chat_id: labels.chat_id,
            chat_name: labels.chat_name,
            chat_topic: labels.chat_topic,
            parent_chat_id: labels.parent_chat_id,
            user_id: labels.user_id,
            user_name: labels.user_name,
        };
        feed(Input::PrimeLabels(&labels));
    }

    fn on_media_done(job: u64, outcome: hermes::relay::types::MediaOutcome) {
        let outcome = MediaOutcome {
            status: outcome.status,
            error: outcome.error,
            headers: outcome.headers,
            size: outcome.size,
            path: outcome.path,
            body: outcome.body,
        };
        feed(Input::MediaDone { job, outcome });
    }

    fn accept_delivery(delivery: u64) {
        feed(Input::AcceptDelivery(delivery));
    }

    fn reject_delivery(delivery: u64) {
        feed(Input::RejectDelivery(delivery));
    }

    /// One clock read and one drain for the whole batch; the outputs queue
    /// in verdict order either way.
    fn answer_deliveries(answers: Vec<(u64, bool)>) {
        glue::feed_all(answers.into_iter().map(|(delivery, accept)| {
            if accept {
                Input::AcceptDelivery(delivery)
            } else {
                Input::RejectDelivery(delivery)
            }
        }));
    }

    fn send(
        request: u64,
        chat_id: String,
        content: String,
        reply_to: Option<String>,
        metadata: String,
        platform: Option<String>,
    ) {
        let cmd = Command::Send {
            chat_id: &chat_id,
            content: &content,
            reply_to: reply_to.as_deref(),
            metadata: &metadata,
            platform: platform.as_deref(),
        };
        command(request, cmd);
    }

    /// One clock read and one drain for the whole burst, each send as
    /// `send` would apply it.
    fn send_batch(sends: Vec<hermes::relay::types::SendRequest>) {
        let commands = sends.iter().map(|s| {
            (
                s.request,
                Command::Send {
                    chat_id: &s.chat_id,
                    content: &s.content,
                    reply_to: s.reply_to.as_deref(),
                    metadata: &s.metadata,
                    platform: s.platform.as_deref(),
                },
            )
        });
        glue::commands(commands);
    }

    fn edit(request: u64, chat_id: String, message_id: String, content: String, metadata: String) {
        let cmd = Command::Edit {
            chat_id: &chat_id,
            message_id: &message_id,
            content: &content,
            metadata: &metadata,
        };
        command(request, cmd);
    }

    fn typing(request: u64, chat_id: String, metadata: String, content: Option<String>) {
        let cmd = Command::Typing {
            chat_id: &chat_id,
            metadata: &metadata,
            content: content.as_deref(),
        };
        command(request, cmd);
    }

    fn follow_up(
        request: u64,
        session_key: String,
        kind: String,
        content: String,
        metadata: String,
    ) {
        let cmd = Command::FollowUp {
            session_key: &session_key,
            kind: &kind,
            content: &content,
            metadata: &metadata,
        };
        command(request, cmd);
    }

    fn get_chat_info(request: u64, chat_id: String) {
        command(request, Command::GetChatInfo { chat_id: &chat_id });
    }

    fn raw_action(request: u64, action: String, platform: Option<String>) {
        let cmd = Command::RawAction {
            action: &action,
            platform: platform.as_deref(),
        };
        command(request, cmd);
    }

    fn lane(request: u64, command: LaneCommand) {
        let lane = lane_of(command);
        glue::command(request, Command::Lane(&lane));
    }

    fn interrupt(request: u64, session_key: String, reason: Option<String>) {
        let cmd = Command::Interrupt {
            session_key: &session_key,
            reason: reason.as_deref(),
        };
        command(request, cmd);
    }

    fn shutdown(request: u64) {
        command(request, Command::Shutdown);
    }

    fn go_dormant(request: u64) {
        command(request, Command::GoDormant);
    }

    fn hold_redial(request: u64) {
        command(request, Command::HoldRedial);
    }

    fn release_redial(request: u64) {
        command(request, Command::ReleaseRedial);
    }

    fn hold_route(chat_id: String, hold: bool) {
        feed(Input::HoldRoute {
            chat_id: &chat_id,
            hold,
        });
    }

    fn prime_route(
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

    fn current_state() -> State {
        query(State::Connecting, |m| glue::state_to_wit(m.state()))
    }

    fn descriptor(platform: Option<String>) -> Option<String> {
        query(None, |m| Some(m.descriptor(platform.as_deref()).to_json()))
    }

    fn max_message_length(chat_id: Option<String>) -> u32 {
        query(relay_core::descriptor::DEFAULT_MAX_MESSAGE_LENGTH, |m| {
            m.max_message_length(chat_id.as_deref())
        })
    }

    fn message_len(chat_id: Option<String>, text: String) -> u32 {
        let n = query(text.chars().count(), |m| {
            m.message_len(chat_id.as_deref(), &text)
        });
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn supports_op(chat_id: Option<String>, op: String) -> bool {
        query(false, |m| m.supports_op(chat_id.as_deref(), &op))
    }

    fn fronts_platform(platform: String) -> bool {
        query(false, |m| m.fronts_platform(&platform))
    }

    fn mint_prompt(chat_id: String, kind: String) -> String {
        glue::mint_prompt(&chat_id, &kind)
    }

    fn supports_draft_streaming(chat_id: String) -> bool {
        query(false, |m| m.supports_draft_streaming(&chat_id))
    }

    fn prefers_fresh_final(chat_id: String, text: String) -> bool {
        query(false, |m| m.prefers_fresh_final(&chat_id, &text))
    }

    fn stats() -> String {
        query("{}".to_owned(), |m| {
            serde_json::to_string(&m.stats()).unwrap_or_else(|_| "{}".to_owned())
        })
    }
}

export!(Component);
