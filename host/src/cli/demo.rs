//! `relay-host demo`: the real component against the embedded stub connector
//! (`relay-stub`), walked through the protocol step by step. Every wait has a
//! deadline (stub waiters, event timeouts); the first failed check ends the
//! walk with exit 1.

use std::time::Duration;

use relay_host::{
    Adapter, AdapterConfig, AdapterHandle, Event, EventStream, Identity, Plugin, Secret, State,
};
use relay_stub::{
    ConnState, Deliverable, Delivery, Passthrough, ReceivedFrame, StubConfig, StubConnector, events,
};
use serde_json::{Map, Value, json};
use tokio::time::{Instant, timeout, timeout_at};

use super::exit::Exit;

mod media;
mod prompt;
use media::Scratch;
use prompt::demo_descriptor;

/// Deadline of one wait inside a step.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of the whole walk.
const DEMO_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest frame shown on one line.
const SHOW_MAX_CHARS: usize = 300;

const GATEWAY_ID: &str = "demo-gateway";
const SECRET: &str = "demo-secret-do-not-use";
const BOT_ID: &str = "1234567890";
const SESSION_KEY: &str = "agent:main:discord:group:chan1:u1";

/// Runs the demo; returns the exit code.
pub async fn demo() -> Exit {
    let started = std::time::Instant::now();
    println!("relay-host demo: the relay component against a stub connector on 127.0.0.1");
    let outcome = match timeout(DEMO_TIMEOUT, walk()).await {
        Ok(outcome) => outcome,
        Err(_) => Err(Failure::new(
            "demo",
            format!("did not finish within {DEMO_TIMEOUT:?}"),
        )),
    };
    match outcome {
        Ok(()) => {
            println!();
            println!(
                "demo: all steps passed in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            Exit::Ok
        }
        Err(failure) => {
            println!();
            println!("demo FAILED at {}: {}", failure.step, failure.what);
            Exit::Fatal
        }
    }
}

/// Which step failed and how.
struct Failure {
    step: String,
    what: String,
}

impl Failure {
    fn new(step: impl Into<String>, what: impl Into<String>) -> Self {
        Self {
            step: step.into(),
            what: what.into(),
        }
    }
}

type Step<T> = Result<T, Failure>;

/// The walk's state: the stub, the adapter, and the step being run.
struct Walk {
    stub: StubConnector,
    handle: AdapterHandle,
    events: EventStream,
    step: &'static str,
    number: u32,
}

async fn walk() -> Step<()> {
    let stub = StubConnector::start(
        StubConfig::default()
            .with_secret(SECRET)
            .with_descriptor("discord", demo_descriptor()),
    )
    .await
    .map_err(|e| Failure::new("setup", format!("cannot start the stub connector: {e}")))?;
    let plugin = Plugin::shared()
        .map_err(|e| Failure::new("setup", format!("cannot load the component: {e}")))?;
    let mut config = AdapterConfig::new(stub.base_url());
    config.identities = vec![Identity::new("discord", BOT_ID)];
    config.gateway_id = GATEWAY_ID.to_string();
    config.secret = Some(Secret::new(SECRET));
    config.handshake_timeout = Duration::from_secs(3);
    config.reconnect_initial = Duration::from_millis(100);
    config.dormant_redial = Duration::from_millis(100);
    config.going_idle_timeout = Duration::from_secs(1);
    config.drain_grace = Duration::from_millis(300);
    let scratch = Scratch::new();
    config.media = Some(relay_host::MediaOptions::new(scratch.media()));
    println!(
        "stub connector: {} (verifies bearer tokens for gateway {GATEWAY_ID})",
        stub.url()
    );
    let (handle, events) = Adapter::spawn(&plugin, config)
        .await
        .map_err(|e| Failure::new("setup", format!("cannot start the adapter: {e}")))?;
    let mut walk = Walk {
        stub,
        handle,
        events,
        step: "setup",
        number: 0,
    };
    walk.handshake().await?;
    walk.guild_message().await?;
    walk.direct_message().await?;
    walk.slash_command().await?;
    walk.prompt_button().await?;
    walk.media(&scratch.0).await?;
    walk.interrupts().await?;
    walk.buffered_replay().await?;
    walk.shutdown().await?;
    Ok(())
}

impl Walk {
    fn begin(&mut self, step: &'static str, title: &str) {
        self.step = step;
        self.number += 1;
        println!();
        println!("[{}] {title}", self.number);
    }

    fn fail(&self, what: impl Into<String>) -> Failure {
        Failure::new(format!("step {} ({})", self.number, self.step), what)
    }

    fn check(&self, ok: bool, what: impl Into<String>) -> Step<()> {
        if ok { Ok(()) } else { Err(self.fail(what)) }
    }

    /// Waits for the event `pick` takes; narrates the others.
    async fn expect<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(Event) -> Result<T, Box<Event>>,
    ) -> Step<T> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            match timeout_at(deadline, self.events.next()).await {
                Err(_) => {
                    return Err(self.fail(format!(
                        "timed out after {STEP_TIMEOUT:?} waiting for {what}"
                    )));
                }
                Ok(None) => {
                    return Err(self.fail(format!("the adapter stopped while waiting for {what}")));
                }
                Ok(Some(event)) => match pick(event) {
                    Ok(found) => return Ok(found),
                    Err(other) => narrate(*other),
                },
            }
        }
    }

    async fn expect_state(&mut self, wanted: State) -> Step<()> {
        self.expect(&format!("state {wanted}"), |event| match event {
            Event::State { state, detail } if state == wanted => {
                note(&format!("state → {state}{}", detail_suffix(&detail)));
                Ok(())
            }
            other => Err(Box::new(other)),
        })
        .await
    }

    async fn expect_message(&mut self, what: &str) -> Step<relay_host::MessageEvent> {
        self.expect(what, |event| match event {
            Event::Message(message) => Ok(message),
            other => Err(Box::new(other)),
        })
        .await
    }

    /// The first frame at or after `mark` that `pred` matches.
    async fn frame_after(
        &self,
        mark: usize,
        what: &str,
        pred: impl FnMut(&ReceivedFrame) -> bool,
    ) -> Step<ReceivedFrame> {
        self.stub
            .wait_for_frame_after(mark, pred, STEP_TIMEOUT)
            .await
            .map_err(|e| self.fail(format!("the connector never received {what}: {e}")))
    }

    async fn handshake(&mut self) -> Step<()> {
        self.begin(
            "handshake",
            "Handshake: dial with a bearer token, hello, descriptor",
        );
        self.expect_state(State::Ready).await?;
        let conn = self
            .stub
            .wait_for_handshakes(1, STEP_TIMEOUT)
            .await
            .map_err(|e| self.fail(e.to_string()))?;
        self.check(
            conn.gateway_id.as_deref() == Some(GATEWAY_ID),
            format!("bearer not verified (gateway id {:?})", conn.gateway_id),
        )?;
        note(&format!(
            "upgrade GET {} with Authorization: Bearer <token>, verified for gateway id {GATEWAY_ID}",
            conn.path
        ));
        for hello in self.stub.frames_of_type("hello") {
            gateway_sent(&hello.raw);
        }
        connector_sent(&json!({"type": "descriptor", "descriptor": demo_descriptor()}));
        let supports_edit = self
            .handle
            .supports_op(None, "edit")
            .await
            .map_err(|e| self.fail(e.to_string()))?;
        let max = self
            .handle
            .max_message_length(None)
            .await
            .map_err(|e| self.fail(e.to_string()))?;
        note(&format!(
            "descriptor applied: max_message_length {max}, supports edit: {supports_edit}"
        ));
        self.check(
            max == 2000,
            format!("max_message_length {max}, expected 2000"),
        )
    }

    /// Pushes `event` live and returns the delivered message, accepted.
    async fn deliver_live(&mut self, event: Value, what: &str) -> Step<relay_host::MessageEvent> {
        connector_sent(&Deliverable::Inbound(event.clone()).to_frame(None));
        match self.stub.push_inbound(event).await {
            Ok(Delivery::Live { .. }) => {}
            Ok(other) => return Err(self.fail(format!("expected a live delivery, got {other:?}"))),
            Err(e) => return Err(self.fail(format!("push failed: {e}"))),
        }
        self.expect_message(what).await
    }

    /// `send(chat_id, text)` and the outbound frame the connector got.
    async fn reply(&mut self, chat_id: &str, text: &str) -> Step<ReceivedFrame> {
        let mark = self.stub.frame_count();
        note(&format!(
            "gateway: send({chat_id:?}, {text:?}, reply_to=None, metadata={{}})"
        ));
        let result = timeout(
            STEP_TIMEOUT,
            self.handle.send(chat_id, text, None, Map::new(), None),
        )
        .await
        .map_err(|_| self.fail("send did not resolve"))?;
        let frame = self
            .frame_after(mark, "the outbound send", |f| f.op() == Some("send"))
            .await?;
        gateway_sent(&frame.raw);
        let result_json: Value =
            serde_json::from_str(&result.raw).unwrap_or(Value::String(result.raw.clone()));
        connector_sent(&json!({
            "type": "outbound_result",
            "requestId": frame.request_id(),
            "result": result_json,
        }));
        self.check(result.success, format!("send failed: {:?}", result.error))?;
        note(&format!(
            "send resolved: success, message_id {}",
            result.message_id.as_deref().unwrap_or("-")
        ));
        Ok(frame)
    }

    async fn guild_message(&mut self) -> Step<()> {
        self.begin(
            "guild_message",
            "A guild message and the reply (scope re-attached)",
        );
        let message = self
            .deliver_live(
                events::discord_text("what's the deploy status?"),
                "the guild message",
            )
            .await?;
        note(&format!(
            "adapter delivered: chat {} ({}), scope_id {}, user_id {}, text {:?}",
            message.chat_id,
            message.chat_type,
            message.scope_id.as_deref().unwrap_or("-"),
            message.user_id.as_deref().unwrap_or("-"),
            message.text
        ));
        let chat_id = message.chat_id.clone();
        message.accept();
        note("gateway: accept");
        let frame = self.reply(&chat_id, "deploy is green").await?;
        let metadata = frame
            .get("action")
            .and_then(|a| a.get("metadata"))
            .cloned()
            .unwrap_or(Value::Null);
        self.check(
            metadata.get("scope_id") == Some(&json!("guildA"))
                && metadata.get("user_id") == Some(&json!("u1")),
            format!("outbound metadata {metadata} lacks scope_id guildA and user_id u1"),
        )?;
        note(&format!(
            "the adapter re-attached {metadata} from the inbound's source: the connector can route \
             the reply to guild guildA"
        ));
        Ok(())
    }

    async fn direct_message(&mut self) -> Step<()> {
        self.begin("direct_message", "A DM and the reply (user_id only)");
        let message = self
            .deliver_live(
                events::dm("discord", "dm-ben", "u7", "hi in private"),
                "the DM",
            )
            .await?;
        note(&format!(
            "adapter delivered: chat {} ({}), user_id {}, text {:?}",
            message.chat_id,
            message.chat_type,
            message.user_id.as_deref().unwrap_or("-"),
            message.text
        ));
        let chat_id = message.chat_id.clone();
        message.accept();
        note("gateway: accept");
        let frame = self.reply(&chat_id, "hello in private").await?;
        let metadata = frame
            .get("action")
            .and_then(|a| a.get("metadata"))
            .cloned()
            .unwrap_or(Value::Null);
        self.check(
            metadata.get("user_id") == Some(&json!("u7")) && metadata.get("scope_id").is_none(),
            format!("DM metadata {metadata} should carry user_id u7 and no scope_id"),
        )?;
        note(&format!("DM reply metadata {metadata}: user_id only"));
        Ok(())
    }

    async fn slash_command(&mut self) -> Step<()> {
        self.begin(
            "slash_command",
            "A Discord slash command forwarded raw (passthrough_forward)",
        );
        let interaction = json!({
            "type": 2, "id": "i1", "channel_id": "c1", "guild_id": "g1",
            "data": {"name": "model", "options": [{"name": "name", "type": 3, "value": "gpt-x"}]},
            "member": {"user": {"id": "u1", "username": "ben"}}
        });
        note(&format!(
            "interaction body (base64 in bodyB64): {interaction}"
        ));
        let forward = Passthrough::new("discord", BOT_ID).body(interaction.to_string());
        connector_sent(&Deliverable::Passthrough(forward.clone()).to_frame(None));
        match self.stub.push_passthrough(forward).await {
            Ok(Delivery::Live { .. }) => {}
            Ok(other) => return Err(self.fail(format!("expected a live delivery, got {other:?}"))),
            Err(e) => return Err(self.fail(format!("push failed: {e}"))),
        }
        let message = self.expect_message("the mapped slash command").await?;
        note(&format!(
            "adapter delivered: chat {}, scope_id {}, type {}, text {:?}",
            message.chat_id,
            message.scope_id.as_deref().unwrap_or("-"),
            message.message_type,
            message.text
        ));
        let text = message.text.clone();
        message.accept();
        note("gateway: accept");
        self.check(
            text == "/model gpt-x",
            format!("mapped text {text:?}, expected \"/model gpt-x\""),
        )
    }

    async fn interrupts(&mut self) -> Step<()> {
        self.begin(
            "interrupt",
            "Interrupts: connector → gateway, then gateway → connector",
        );
        connector_sent(
            &json!({"type": "interrupt_inbound", "session_key": SESSION_KEY, "chat_id": "chan1"}),
        );
        self.stub
            .interrupt_inbound(SESSION_KEY, "chan1")
            .await
            .map_err(|e| self.fail(format!("interrupt_inbound failed: {e}")))?;
        let (session_key, chat_id) = self
            .expect("the interrupt event", |event| match event {
                Event::Interrupt {
                    session_key,
                    chat_id,
                } => Ok((session_key, chat_id)),
                other => Err(Box::new(other)),
            })
            .await?;
        note(&format!(
            "adapter reported: interrupt session {session_key} in chat {chat_id}"
        ));
        self.check(
            session_key == SESSION_KEY && chat_id == "chan1",
            "interrupt event fields differ from the frame",
        )?;
        let mark = self.stub.frame_count();
        note("gateway: interrupt(session_key, reason=\"stopped by the demo\")");
        timeout(
            STEP_TIMEOUT,
            self.handle
                .interrupt(SESSION_KEY, Some("stopped by the demo".to_string())),
        )
        .await
        .map_err(|_| self.fail("interrupt did not resolve"))?
        .map_err(|e| self.fail(format!("interrupt failed: {e}")))?;
        let frame = self
            .frame_after(mark, "the interrupt frame", |f| f.is("interrupt"))
            .await?;
        gateway_sent(&frame.raw);
        self.check(
            frame.get("session_key") == Some(&json!(SESSION_KEY)),
            "interrupt frame carries another session_key",
        )
    }

    async fn buffered_replay(&mut self) -> Step<()> {
        self.begin(
            "buffered_replay",
            "Scale to zero: go dormant, the connector buffers, replay with inbound_ack",
        );
        let handle = self.handle.clone();
        // Parked so the buffered push below cannot race the re-dial.
        timeout(STEP_TIMEOUT, handle.hold_redial())
            .await
            .map_err(|_| self.fail("hold_redial did not resolve"))?
            .map_err(|e| self.fail(format!("hold_redial failed: {e}")))?;
        note("gateway: hold_redial, then go_dormant");
        let mark = self.stub.frame_count();
        let acked = timeout(STEP_TIMEOUT, handle.go_dormant())
            .await
            .map_err(|_| self.fail("go_dormant did not resolve"))?;
        self.check(acked, "go_dormant was not acknowledged")?;
        let frame = self
            .frame_after(mark, "going_idle", |f| f.is("going_idle"))
            .await?;
        gateway_sent(&frame.raw);
        connector_sent(&json!({"type": "going_idle_ack"}));
        self.expect_state(State::Dormant).await?;

        let event = events::dm("discord", "dm-ben", "u7", "sent while the gateway slept");
        let buffer_id = match self.stub.push_inbound(event.clone()).await {
            Ok(Delivery::Buffered { buffer_id }) => buffer_id,
            Ok(other) => {
                return Err(self.fail(format!("expected a buffered delivery, got {other:?}")));
            }
            Err(e) => return Err(self.fail(format!("push failed: {e}"))),
        };
        note(&format!(
            "a user writes meanwhile: the connector buffers it as {buffer_id}"
        ));

        note("gateway: release_redial");
        timeout(STEP_TIMEOUT, handle.release_redial())
            .await
            .map_err(|_| self.fail("release_redial did not resolve"))?
            .map_err(|e| self.fail(format!("release_redial failed: {e}")))?;
        self.expect_state(State::Ready).await?;
        self.stub
            .wait_for_handshakes(2, STEP_TIMEOUT)
            .await
            .map_err(|e| self.fail(e.to_string()))?;
        note("re-dialed with a fresh token; hello and descriptor again");
        connector_sent(&Deliverable::Inbound(event).to_frame(Some(&buffer_id)));
        let message = self.expect_message("the replayed message").await?;
        note(&format!(
            "adapter delivered: buffer_id {}, text {:?}",
            message.buffer_id.as_deref().unwrap_or("-"),
            message.text
        ));
        self.check(
            message.buffer_id.as_deref() == Some(buffer_id.as_str()),
            format!("replayed message has buffer_id {:?}", message.buffer_id),
        )?;
        let mark = self.stub.frame_count();
        message.accept();
        note("gateway: accept");
        self.stub
            .wait_for_ack(&buffer_id, STEP_TIMEOUT)
            .await
            .map_err(|e| self.fail(e.to_string()))?;
        let ack = self
            .frame_after(mark, "inbound_ack", |f| f.is("inbound_ack"))
            .await?;
        gateway_sent(&ack.raw);
        note("the connector drops the entry from its buffer");
        self.check(
            self.stub.pending_buffer().is_empty(),
            "the connector still holds buffered entries",
        )
    }

    async fn shutdown(&mut self) -> Step<()> {
        self.begin("shutdown", "Graceful shutdown: going_idle, drain, close");
        let conn = self
            .stub
            .current_connection()
            .ok_or_else(|| self.fail("no open connection before shutdown"))?;
        let mark = self.stub.frame_count();
        note("gateway: shutdown");
        timeout(STEP_TIMEOUT, self.handle.shutdown())
            .await
            .map_err(|_| self.fail("shutdown did not resolve"))?
            .map_err(|e| self.fail(format!("shutdown failed: {e}")))?;
        let frame = self
            .frame_after(mark, "going_idle", |f| f.is("going_idle"))
            .await?;
        gateway_sent(&frame.raw);
        connector_sent(&json!({"type": "going_idle_ack"}));
        self.expect_state(State::Stopped).await?;
        let closed = self
            .stub
            .wait_for_close(conn, STEP_TIMEOUT)
            .await
            .map_err(|e| self.fail(e.to_string()))?;
        match &closed {
            ConnState::Closed { by, code, reason } => note(&format!(
                "socket closed by {by:?} with code {} {reason:?}; the connector buffers from now on",
                code.map_or("-".to_string(), |c| c.to_string())
            )),
            other => note(&format!("socket ended: {other:?}")),
        }
        self.check(
            self.stub.is_idle(),
            "the connector is not idle after shutdown",
        )?;
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            match timeout_at(deadline, self.events.next()).await {
                Ok(Some(event)) => narrate(event),
                Ok(None) => break,
                Err(_) => return Err(self.fail("the event stream did not end after shutdown")),
            }
        }
        note("event stream ended: the adapter stopped");
        Ok(())
    }
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

/// Events the walk did not wait for.
fn narrate(event: Event) {
    match event {
        Event::State { state, detail } => {
            note(&format!("state → {state}{}", detail_suffix(&detail)))
        }
        Event::Fatal {
            code,
            message,
            retryable,
        } => note(&format!("fatal {code} (retryable {retryable}): {message}")),
        Event::Interrupt {
            session_key,
            chat_id,
        } => note(&format!("unexpected interrupt {session_key} in {chat_id}")),
        // The demo keeps no label store.
        Event::Labels(_) => {}
        Event::PromptAnswer(answer) => note(&format!(
            "unexpected answer {} to prompt {}",
            answer.option_id, answer.prompt_id
        )),
        Event::Message(message) => {
            note(&format!(
                "unexpected message {:?}; rejecting it",
                message.text
            ));
            message.reject();
        }
    }
}

fn note(text: &str) {
    println!("    {text}");
}

fn gateway_sent(raw: &str) {
    println!("    gateway → connector  {}", shorten(raw));
}

fn connector_sent(frame: &Value) {
    println!("    connector → gateway  {}", shorten(&type_first(frame)));
}

/// Compact JSON with `type` as the first key, as frames are usually written
/// (serde_json sorts the keys of a `Value`).
fn type_first(frame: &Value) -> String {
    let Some(object) = frame.as_object() else {
        return frame.to_string();
    };
    let Some(kind) = object.get("type") else {
        return frame.to_string();
    };
    let mut rest = object.clone();
    rest.remove("type");
    let rest = Value::Object(rest).to_string();
    match rest.strip_prefix('{') {
        Some("}") | None => format!("{{\"type\":{kind}}}"),
        Some(fields) => format!("{{\"type\":{kind},{fields}"),
    }
}

/// One line at most [`SHOW_MAX_CHARS`] long.
fn shorten(text: &str) -> String {
    let text = text.trim_end();
    if text.chars().count() <= SHOW_MAX_CHARS {
        return text.to_string();
    }
    let mut out: String = text.chars().take(SHOW_MAX_CHARS).collect();
    out.push_str(" …");
    out
}
