//! The relay adapter as a `wasm32-wasip2` component: wit-bindgen bindings for
//! `wit/v0.2/relay.wit` and the `adapter` export impl. Each export turns its
//! arguments into one machine input (or a query) and hands it to [`glue`],
//! which feeds the `relay-core` machine and drains its outputs into the
//! imports through the shared driver.

wit_bindgen::generate!({ world: "hermes:relay/relay-adapter@0.2.0", path: "../../wit/v0.2" });

mod glue;

use exports::hermes::relay::adapter::Guest;
use glue::{command, feed, query};
use hermes::relay::types::{Config, State};
use relay_core::machine::{Command, Input};

/// The interface version this component implements (`api-version`).
const API_VERSION: &str = "0.2.0";

struct Component;

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

    fn stats() -> String {
        query("{}".to_owned(), |m| {
            serde_json::to_string(&m.stats()).unwrap_or_else(|_| "{}".to_owned())
        })
    }
}

export!(Component);
