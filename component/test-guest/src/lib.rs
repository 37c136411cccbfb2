//! TEST ONLY: a deliberately misbehaving relay-adapter component for the
//! host's sandbox tests (`host/tests/host.rs`). Same WIT world as the real
//! adapter (`wit/v0.2/relay.wit`, `relay-adapter`), so the host loads it like the
//! real one (`Plugin::from_bytes(include_bytes!(env!("RELAY_TEST_GUEST_WASM")))`).
//! Never shipped: nothing outside the host's tests embeds it.
//!
//! Every export forwards to [`misbehave`]: a minimal adapter (enough protocol
//! to handshake with the stub connector, deliver, send and shut down) plus
//! test hooks driven by connector frames whose `type` starts with `__test_`.

wit_bindgen::generate!({ world: "hermes:relay/relay-adapter@0.2.0", path: "../../wit/v0.2" });

mod misbehave;

use exports::hermes::relay::adapter::Guest;
use hermes::relay::types::{Config, State};
use misbehave as machine;
/// The interface version this component implements (`api-version`).
const API_VERSION: &str = "0.2.0";

struct Component;

impl Guest for Component {
    fn api_version() -> String {
        API_VERSION.to_string()
    }

    fn start(config: Config) -> Result<(), String> {
        machine::start(config)
    }

    fn on_open(conn: u32) {
        machine::on_open(conn);
    }

    fn on_dial_failed(conn: u32, code: u16, reason: String) {
        machine::on_dial_failed(conn, code, reason);
    }

    fn on_text(conn: u32, text: String) {
        machine::on_text(conn, text);
    }

    fn on_binary(conn: u32, data: Vec<u8>) {
        machine::on_binary(conn, data);
    }

    fn on_closed(conn: u32, code: u16, reason: String) {
        machine::on_closed(conn, code, reason);
    }

    fn on_deadline() {
        machine::on_deadline();
    }

    /// The misbehaving guest keeps no label record.
    fn prime_labels(_labels: hermes::relay::types::ChatLabels) {}

    /// The misbehaving guest asks for no media jobs.
    fn on_media_done(_job: u64, _outcome: hermes::relay::types::MediaOutcome) {}

    fn accept_delivery(delivery: u64) {
        machine::accept_delivery(delivery);
    }

    fn reject_delivery(delivery: u64) {
        machine::reject_delivery(delivery);
    }

    fn answer_deliveries(answers: Vec<(u64, bool)>) {
        for (delivery, accept) in answers {
            if accept {
                machine::accept_delivery(delivery);
            } else {
                machine::reject_delivery(delivery);
            }
        }
    }

    fn send(
        request: u64,
        chat_id: String,
        content: String,
        reply_to: Option<String>,
        metadata: String,
        platform: Option<String>,
    ) {
        machine::send(request, chat_id, content, reply_to, metadata, platform);
    }

    fn send_batch(sends: Vec<hermes::relay::types::SendRequest>) {
        for s in sends {
            machine::send(s.request, s.chat_id, s.content, s.reply_to, s.metadata, s.platform);
        }
    }

    fn edit(request: u64, chat_id: String, message_id: String, content: String, metadata: String) {
        machine::edit(request, chat_id, message_id, content, metadata);
    }

    fn typing(request: u64, chat_id: String, metadata: String, content: Option<String>) {
        machine::typing(request, chat_id, metadata, content);
    }

    fn follow_up(
        request: u64,
        session_key: String,
        kind: String,
        content: String,
        metadata: String,
    ) {
        machine::follow_up(request, session_key, kind, content, metadata);
    }

    fn get_chat_info(request: u64, chat_id: String) {
        machine::get_chat_info(request, chat_id);
    }

    fn raw_action(request: u64, action: String, platform: Option<String>) {
        machine::raw_action(request, action, platform);
    }

    fn lane(request: u64, command: hermes::relay::types::LaneCommand) {
        machine::lane(request, command);
    }

    fn interrupt(request: u64, session_key: String, reason: Option<String>) {
        machine::interrupt(request, session_key, reason);
    }

    fn shutdown(request: u64) {
        machine::shutdown(request);
    }

    fn go_dormant(request: u64) {
        machine::go_dormant(request);
    }

    fn hold_redial(request: u64) {
        machine::hold_redial(request);
    }

    fn release_redial(request: u64) {
        machine::release_redial(request);
    }

    fn hold_route(chat_id: String, hold: bool) {
        machine::hold_route(chat_id, hold);
    }

    fn prime_route(
        chat_id: String,
        platform: String,
        scope_id: Option<String>,
        user_id: Option<String>,
        profile: Option<String>,
    ) {
        machine::prime_route(chat_id, platform, scope_id, user_id, profile);
    }

    fn current_state() -> State {
        machine::current_state()
    }

    fn descriptor(platform: Option<String>) -> Option<String> {
        machine::descriptor(platform)
    }

    fn max_message_length(chat_id: Option<String>) -> u32 {
        machine::max_message_length(chat_id)
    }

    fn message_len(chat_id: Option<String>, text: String) -> u32 {
        machine::message_len(chat_id, text)
    }

    fn supports_op(chat_id: Option<String>, op: String) -> bool {
        machine::supports_op(chat_id, op)
    }

    fn fronts_platform(platform: String) -> bool {
        machine::fronts_platform(platform)
    }

    fn mint_prompt(_chat_id: String, _kind: String) -> String {
        String::new()
    }

    fn supports_draft_streaming(_chat_id: String) -> bool {
        false
    }

    fn prefers_fresh_final(_chat_id: String, _text: String) -> bool {
        false
    }

    fn stats() -> String {
        machine::stats()
    }
}

export!(Component);
