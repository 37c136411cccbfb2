//! JSON-lines scripts for the stub: one action (`"do"`) or expectation
//! (`"expect"`) per line, run in order against a [`StubConnector`]. The
//! binary, the demo and Rust tests share this runner.

use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use crate::model::{
    Closer, ConnState, Deliverable, HelloReply, IdleReply, OutboundReply, Passthrough,
    ReceivedFrame, ReplayMode, UpgradeFate,
};
use crate::server::{StubConnector, StubError, even_cuts, line_of};

mod grammar;

pub use grammar::json_contains;
use grammar::*;

/// Timeout of waits and expectations that do not give `timeout_ms`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The script format, as printed by `stub-connector --help`.
pub const SCRIPT_HELP: &str = r##"SCRIPT FORMAT
  One JSON object per line, run in order. Blank lines and lines starting with
  '#' or '//' are skipped. A line is an action {"do": ...} or an expectation
  {"expect": ...}. The first failing line stops the script (exit status 1).
  Actions target the newest open connection. Waits and expectations take
  "timeout_ms" (default 5000). Unknown fields are errors.

ACTIONS
  {"do":"push_inbound","event":{...}}            live if handshaken and not idle, else buffered
  {"do":"push_inbound","event":{...},"bufferId":"b1"}
                                                  into the buffer as b1 (sent now if live),
                                                  replayed on each handshake until acked
  {"do":"send_inbound","event":{...},"bufferId":"b1"?}
                                                  raw inbound frame, no buffer bookkeeping
  {"do":"passthrough_forward","platform":"discord","botId":"1","method":"POST",
   "path":"/interactions/discord/1","headers":[["content-type","application/json"]],
   "body":"<utf-8 text>" | "bodyB64":"<sent verbatim>","profile":"p"?,"bufferId":"b2"?}
                                                  routed like push_inbound
  {"do":"interrupt_inbound","session_key":"agent:main:...","chat_id":"c1"}
  {"do":"send_frame","frame":{...}}              one frame, one text message
  {"do":"send_line","line":"not json"}           text + "\n" (malformed lines)
  {"do":"send_raw","text":"..."}                 one text message, verbatim
  {"do":"send_batch","frames":[{...},{...}]}     several frames in ONE message
  {"do":"send_split","frame":{...}|"text":"...","parts":3|"at":[5,9],"binary":false}
                                                  one frame/text cut across messages
  {"do":"send_binary","frame":{...}|"text":"..."|"b64":"..."}
  {"do":"send_sized","size":65536,"frame":{...}?}
                                                  a message of exactly `size` bytes
  {"do":"close","code":1011,"reason":"overloaded"}
  {"do":"drop"}                                   TCP drop, no close frame
  {"do":"refuse_next","status":503,"count":1}    HTTP status instead of 101
  {"do":"refuse_next","close_code":4401,"reason":"unauthorized","count":1}
                                                  accept, then close at once
  {"do":"delay_next","ms":500}                   hold the next upgrade
  {"do":"close_after_handshake","code":1011,"reason":"overloaded"} | {...,"off":true}
                                                  close every later connection right
                                                  after its handshake (reconnect ladders)
  {"do":"set_descriptor","platform":"slack"?,"descriptor":{...}|"raw":"garbage"|"none":true}
  {"do":"set_outbound","op":"send"?,"reply":"success"|"fail"|"egress_declined"|"no_answer"|"result",
   "error":"..."?,"code":"..."?,"result":{...}?,"delay_ms":0?,"once":false?}
  {"do":"set_chat_info","chat_id":"c1","name":"#ops","type":"group"}
  {"do":"set_going_idle","reply":"ack"|"withhold","delay_ms":0?}
  {"do":"set_replay_mode","mode":"all"|"one_at_a_time"}
  {"do":"answer","requestId":"..."?,"result":{...}}
                                                  without requestId: the oldest unanswered
                                                  outbound (waits for one)
  {"do":"wait_connections","n":2}                n upgrade attempts decided
  {"do":"wait_handshakes","n":1}                 n connections past their hellos
  {"do":"sleep_ms","ms":100}                     explicit scripted pause
  {"do":"print","message":"..."}                 echo into the report

EXPECTATIONS
  {"expect":"frame","type":"outbound"?,"op":"send"?,"match":{...}?,"conn":0?}
      the next received frame (after the previous matched one) of that type /
      action op / containing `match` as a JSON subset
  {"expect":"no_frame","type":...,"op":...,"match":...,"within_ms":500}
      no such frame arrives within the window
  {"expect":"acked","bufferId":"b1","count":1?}   acked (exactly `count` times)
  {"expect":"connections","n":2}                 as wait_connections
  {"expect":"handshakes","n":2}                  as wait_handshakes
  {"expect":"closed","conn":0?,"code":1000?,"by":"gateway"|"stub"|"dropped"?}
      the connection (default: newest) ended
  {"expect":"header","name":"authorization","value":"Bearer ..."?,"conn":0?}
  {"expect":"idle"}                               gateway flipped to buffered-only
  {"expect":"buffered","n":0}                     exactly n unacked buffer entries
"##;

/// What a finished script did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Lines executed (comments and blanks excluded).
    pub steps: usize,
    /// Actions run.
    pub actions: usize,
    /// Expectations met.
    pub expectations: usize,
    /// `seq` of every frame matched by an `expect: frame`, in order.
    pub matched_frames: Vec<usize>,
    /// Messages from `print` actions.
    pub printed: Vec<String>,
}

/// A script line that could not be parsed, run or satisfied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("script line {line}: {message}")]
pub struct ScriptError {
    /// 1-based line number.
    pub line: usize,
    /// What went wrong.
    pub message: String,
}

/// Runs a script line by line, keeping the frame cursor between
/// `expect: frame` lines. Use it directly to feed lines as they arrive
/// (e.g. from stdin); [`run_script`] wraps it for a complete script.
#[derive(Debug)]
pub struct ScriptRunner {
    stub: StubConnector,
    cursor: usize,
    line: usize,
    report: Report,
}

/// Runs every line of a script against `stub`, stopping at the first
/// failing line.
pub async fn run_script<I, S>(stub: &StubConnector, lines: I) -> Result<Report, ScriptError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut runner = ScriptRunner::new(stub);
    for line in lines {
        runner.run_line(line.as_ref()).await?;
    }
    Ok(runner.finish())
}

impl ScriptRunner {
    /// A runner whose frame cursor starts at the first frame ever received.
    pub fn new(stub: &StubConnector) -> ScriptRunner {
        ScriptRunner {
            stub: stub.clone(),
            cursor: 0,
            line: 0,
            report: Report::default(),
        }
    }

    /// The report so far.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Ends the run and returns the report.
    pub fn finish(self) -> Report {
        self.report
    }

    /// Runs the next line (counted for error messages even when skipped).
    pub async fn run_line(&mut self, text: &str) -> Result<(), ScriptError> {
        self.line += 1;
        let trimmed = text.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("//") {
            return Ok(());
        }
        let value: Value = serde_json::from_str(trimmed).map_err(|e| self.fail(e))?;
        let outcome = if value.get("do").is_some() {
            let action: Action = serde_json::from_value(value).map_err(|e| self.fail(e))?;
            self.report.actions += 1;
            self.act(action).await
        } else if value.get("expect").is_some() {
            let expect: Expect = serde_json::from_value(value).map_err(|e| self.fail(e))?;
            let met = self.check(expect).await;
            if met.is_ok() {
                self.report.expectations += 1;
            }
            met
        } else {
            Err("a line needs \"do\" or \"expect\"".to_owned())
        };
        self.report.steps += 1;
        outcome.map_err(|message| self.fail(message))
    }

    fn fail(&self, message: impl ToString) -> ScriptError {
        ScriptError {
            line: self.line,
            message: message.to_string(),
        }
    }

    async fn act(&mut self, action: Action) -> Result<(), String> {
        let stub = &self.stub;
        match action {
            Action::PushInbound { event, buffer_id } => {
                deliver(stub, Deliverable::Inbound(event), buffer_id).await
            }
            Action::SendInbound { event, buffer_id } => {
                Ok(stub.send_inbound(event, buffer_id.as_deref()).await?)
            }
            Action::PassthroughForward {
                platform,
                bot_id,
                method,
                path,
                headers,
                body,
                body_b64,
                profile,
                buffer_id,
            } => {
                let mut forward = Passthrough::new(
                    platform.unwrap_or_else(|| "discord".to_owned()),
                    bot_id.unwrap_or_default(),
                );
                if let Some(method) = method {
                    forward = forward.method(method);
                }
                if let Some(path) = path {
                    forward = forward.path(path);
                }
                if let Some(headers) = headers {
                    forward = forward.headers(headers);
                }
                forward = match (body, body_b64) {
                    (Some(_), Some(_)) => return Err("give body or bodyB64, not both".into()),
                    (Some(body), None) => forward.body(body),
                    (None, Some(raw)) => forward.body_b64(raw),
                    (None, None) => forward,
                };
                if let Some(profile) = profile {
                    forward = forward.profile(profile);
                }
                deliver(stub, Deliverable::Passthrough(forward), buffer_id).await
            }
            Action::InterruptInbound {
                session_key,
                chat_id,
            } => Ok(stub.interrupt_inbound(&session_key, &chat_id).await?),
            Action::SendFrame { frame } => Ok(stub.send_frame(&frame).await?),
            Action::SendLine { line } => Ok(stub.send_line(&line).await?),
            Action::SendRaw { text } => Ok(stub.send_text(text).await?),
            Action::SendBatch { frames } => Ok(stub.send_frames_batched(&frames).await?),
            Action::SendSplit {
                frame,
                text,
                parts,
                at,
                binary,
            } => {
                let text = frame_or_text(frame, text)?;
                let cuts = match (parts, at) {
                    (Some(_), Some(_)) => return Err("give parts or at, not both".into()),
                    (Some(parts), None) => even_cuts(&text, parts),
                    (None, Some(at)) => at,
                    (None, None) => even_cuts(&text, 2),
                };
                if binary {
                    Ok(stub.send_split_binary(text.as_bytes(), &cuts).await?)
                } else {
                    Ok(stub.send_split(&text, &cuts).await?)
                }
            }
            Action::SendBinary { frame, text, b64 } => {
                let bytes = match (frame, text, b64) {
                    (frame @ Some(_), None, None) | (frame @ None, None, None) => {
                        frame_or_text(frame, None)?.into_bytes()
                    }
                    (None, Some(text), None) => text.into_bytes(),
                    (None, None, Some(b64)) => base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .map_err(|e| format!("b64: {e}"))?,
                    _ => return Err("give one of frame, text, b64".into()),
                };
                Ok(stub.send_binary(bytes).await?)
            }
            Action::SendSized { size, frame } => {
                let frame = frame.unwrap_or_else(|| serde_json::json!({"type": "stub_padding"}));
                Ok(stub.send_sized_frame(frame, size).await?)
            }
            Action::Close { code, reason } => Ok(stub.close(code, &reason).await?),
            Action::Drop {} => Ok(stub.drop_connection().await?),
            Action::RefuseNext {
                status,
                body,
                close_code,
                reason,
                count,
            } => {
                let fate = match (status, close_code) {
                    (Some(status), None) => UpgradeFate::Http {
                        status,
                        body: body.unwrap_or_default(),
                    },
                    (None, Some(code)) => UpgradeFate::CloseAfterAccept {
                        code,
                        reason: reason.unwrap_or_default(),
                    },
                    _ => return Err("give status or close_code".into()),
                };
                Ok(stub.refuse_next_upgrades(count.unwrap_or(1), fate)?)
            }
            Action::DelayNext { ms } => {
                stub.delay_next_upgrade(Duration::from_millis(ms));
                Ok(())
            }
            Action::CloseAfterHandshake { code, reason, off } => {
                match (code, off) {
                    (Some(code), false) => stub.set_close_after_handshake(Some((code, &reason))),
                    (None, true) => stub.set_close_after_handshake(None),
                    _ => return Err("give code (and reason) or off:true".into()),
                }
                Ok(())
            }
            Action::SetDescriptor {
                platform,
                descriptor,
                raw,
                none,
            } => {
                let reply = match (descriptor, raw, none) {
                    (Some(d), None, false) => HelloReply::Descriptor(d),
                    (None, Some(raw), false) => HelloReply::RawLine(raw),
                    (None, None, true) => HelloReply::Nothing,
                    _ => return Err("give one of descriptor, raw, none".into()),
                };
                stub.set_descriptor(platform.as_deref(), reply);
                Ok(())
            }
            Action::SetOutbound {
                op,
                reply,
                error,
                code,
                result,
                delay_ms,
                once,
            } => {
                let mut reply = match reply.as_str() {
                    "success" => OutboundReply::Success,
                    "fail" => OutboundReply::Fail {
                        error: error.unwrap_or_else(|| "stub failure".to_owned()),
                        code,
                    },
                    "egress_declined" => OutboundReply::EgressDeclined,
                    "no_answer" => OutboundReply::NoAnswer,
                    "result" => OutboundReply::Result(
                        result.ok_or("reply \"result\" needs a result object")?,
                    ),
                    other => return Err(format!("unknown outbound reply {other:?}")),
                };
                if let Some(ms) = delay_ms.filter(|ms| *ms > 0) {
                    reply = OutboundReply::delayed(Duration::from_millis(ms), reply);
                }
                if once {
                    stub.queue_outbound_reply(op.as_deref(), reply);
                } else {
                    stub.set_outbound_reply(op.as_deref(), reply);
                }
                Ok(())
            }
            Action::SetChatInfo {
                chat_id,
                name,
                chat_type,
            } => {
                stub.set_chat_info(&chat_id, &name, &chat_type);
                Ok(())
            }
            Action::SetGoingIdle { reply, delay_ms } => {
                let reply = match (reply.as_str(), delay_ms.filter(|ms| *ms > 0)) {
                    ("ack", None) => IdleReply::Ack,
                    ("ack", Some(ms)) => IdleReply::Delayed(Duration::from_millis(ms)),
                    ("withhold", _) => IdleReply::Withhold,
                    (other, _) => return Err(format!("unknown going_idle reply {other:?}")),
                };
                stub.set_going_idle_reply(reply);
                Ok(())
            }
            Action::SetReplayMode { mode } => {
                let mode = match mode.as_str() {
                    "all" => ReplayMode::AllAtOnce,
                    "one_at_a_time" => ReplayMode::OneAtATime,
                    other => return Err(format!("unknown replay mode {other:?}")),
                };
                stub.set_replay_mode(mode);
                Ok(())
            }
            Action::Answer {
                request_id,
                result,
                timeout_ms,
            } => {
                let request_id = match request_id {
                    Some(id) => id,
                    None => {
                        stub.wait_for_pending_request(timeout_of(timeout_ms))
                            .await?
                            .request_id
                    }
                };
                Ok(stub.answer(&request_id, result).await?)
            }
            Action::WaitConnections { n, timeout_ms } => {
                stub.wait_for_connections(n, timeout_of(timeout_ms)).await?;
                Ok(())
            }
            Action::WaitHandshakes { n, timeout_ms } => {
                stub.wait_for_handshakes(n, timeout_of(timeout_ms)).await?;
                Ok(())
            }
            Action::SleepMs { ms } => {
                // An explicit pause the script author asked for.
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(())
            }
            Action::Print { message } => {
                self.report.printed.push(message);
                Ok(())
            }
        }
    }

    async fn check(&mut self, expect: Expect) -> Result<(), String> {
        let stub = &self.stub;
        match expect {
            Expect::Frame {
                frame_type,
                op,
                pattern,
                conn,
                timeout_ms,
            } => {
                let filter = FrameFilter {
                    frame_type,
                    op,
                    pattern,
                    conn,
                };
                let frame = stub
                    .wait_for_frame_after(
                        self.cursor,
                        |f| filter.matches(f),
                        timeout_of(timeout_ms),
                    )
                    .await?;
                self.cursor = frame.seq + 1;
                self.report.matched_frames.push(frame.seq);
                Ok(())
            }
            Expect::NoFrame {
                frame_type,
                op,
                pattern,
                conn,
                within_ms,
            } => {
                let filter = FrameFilter {
                    frame_type,
                    op,
                    pattern,
                    conn,
                };
                let window = Duration::from_millis(within_ms);
                match stub
                    .wait_for_frame_after(self.cursor, |f| filter.matches(f), window)
                    .await
                {
                    Ok(frame) => Err(format!("unexpected frame: {}", frame.raw)),
                    Err(StubError::Timeout { .. }) => Ok(()),
                    Err(other) => Err(other.to_string()),
                }
            }
            Expect::Acked {
                buffer_id,
                count,
                timeout_ms,
            } => {
                stub.wait_for_ack(&buffer_id, timeout_of(timeout_ms))
                    .await?;
                match count {
                    Some(n) => {
                        let seen = stub.with_state(|s| s.ack_count(&buffer_id));
                        if seen == n {
                            Ok(())
                        } else {
                            Err(format!("{buffer_id:?} acked {seen} times, expected {n}"))
                        }
                    }
                    None => Ok(()),
                }
            }
            Expect::Connections { n, timeout_ms } => {
                stub.wait_for_connections(n, timeout_of(timeout_ms)).await?;
                Ok(())
            }
            Expect::Handshakes { n, timeout_ms } => {
                stub.wait_for_handshakes(n, timeout_of(timeout_ms)).await?;
                Ok(())
            }
            Expect::Closed {
                conn,
                code,
                by,
                timeout_ms,
            } => {
                let conn = match conn {
                    Some(conn) => conn,
                    None => stub
                        .with_state(|s| s.connections.len().checked_sub(1))
                        .ok_or("no connection yet")?,
                };
                let state = stub.wait_for_close(conn, timeout_of(timeout_ms)).await?;
                check_closed(&state, code, by.as_deref())
            }
            Expect::Header { name, value, conn } => {
                let info = stub.with_state(|s| match conn {
                    Some(conn) => s.connections.get(conn).cloned(),
                    None => s.connections.last().cloned(),
                });
                let info = info.ok_or("no such connection")?;
                match (info.header(&name), value) {
                    (None, _) => Err(format!("header {name:?} absent")),
                    (Some(got), Some(want)) if got != want => {
                        Err(format!("header {name:?} is {got:?}, expected {want:?}"))
                    }
                    _ => Ok(()),
                }
            }
            Expect::Idle { timeout_ms } => {
                stub.wait_until(|s| s.idle, timeout_of(timeout_ms)).await?;
                Ok(())
            }
            Expect::Buffered { n, timeout_ms } => {
                stub.wait_until(|s| s.buffer.len() == n, timeout_of(timeout_ms))
                    .await?;
                Ok(())
            }
        }
    }
}

async fn deliver(
    stub: &StubConnector,
    payload: Deliverable,
    buffer_id: Option<String>,
) -> Result<(), String> {
    match buffer_id {
        Some(id) => {
            stub.push_buffered(payload, Some(&id)).await;
            Ok(())
        }
        None => stub
            .push(payload)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    }
}

fn frame_or_text(frame: Option<Value>, text: Option<String>) -> Result<String, String> {
    match (frame, text) {
        (Some(frame), None) => Ok(line_of(&frame)),
        (None, Some(text)) => Ok(text),
        _ => Err("give frame or text".into()),
    }
}

fn check_closed(state: &ConnState, code: Option<u16>, by: Option<&str>) -> Result<(), String> {
    let (closer, got_code) = match state {
        ConnState::Closed { by, code, .. } => (Some(*by), *code),
        ConnState::Rejected { code, .. } => (Some(Closer::Stub), Some(*code)),
        _ => (None, None),
    };
    if let Some(want) = code
        && got_code != Some(want)
    {
        return Err(format!("closed with {state:?}, expected code {want}"));
    }
    if let Some(want) = by {
        let want = match want {
            "gateway" => Closer::Gateway,
            "stub" => Closer::Stub,
            "dropped" => Closer::Dropped,
            other => return Err(format!("unknown closer {other:?}")),
        };
        if closer != Some(want) {
            return Err(format!("closed with {state:?}, expected by {want:?}"));
        }
    }
    Ok(())
}

impl From<StubError> for String {
    fn from(error: StubError) -> String {
        error.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_matching() {
        let v = json!({"type": "outbound", "action": {"op": "send", "chat_id": "c"}, "n": [1, 2]});
        assert!(json_contains(&v, &json!({"action": {"op": "send"}})));
        assert!(json_contains(&v, &json!({"n": [1, 2]})));
        assert!(!json_contains(&v, &json!({"n": [1]})));
        assert!(!json_contains(&v, &json!({"action": {"op": "edit"}})));
        assert!(!json_contains(&v, &json!({"missing": null})));
    }

    #[test]
    fn actions_and_expectations_parse_strictly() {
        let a: Action =
            serde_json::from_str(r#"{"do":"push_inbound","event":{"text":"x"},"bufferId":"b1"}"#)
                .unwrap();
        assert!(matches!(a, Action::PushInbound { buffer_id: Some(ref id), .. } if id == "b1"));
        let e: Expect = serde_json::from_str(
            r#"{"expect":"frame","type":"outbound","op":"send","timeout_ms":2000}"#,
        )
        .unwrap();
        assert!(matches!(
            e,
            Expect::Frame {
                timeout_ms: Some(2000),
                ..
            }
        ));
        assert!(serde_json::from_str::<Action>(r#"{"do":"close","code":1,"oops":1}"#).is_err());
        assert!(serde_json::from_str::<Action>(r#"{"do":"explode"}"#).is_err());
        assert!(serde_json::from_str::<Expect>(r#"{"expect":"frame","tpye":"x"}"#).is_err());
        let d: Action = serde_json::from_str(r#"{"do":"drop"}"#).unwrap();
        assert!(matches!(d, Action::Drop {}));
    }

    #[test]
    fn closed_checks_code_and_closer() {
        let state = ConnState::Closed {
            by: Closer::Stub,
            code: Some(1011),
            reason: "overloaded".into(),
        };
        assert!(check_closed(&state, Some(1011), Some("stub")).is_ok());
        assert!(check_closed(&state, Some(1000), None).is_err());
        assert!(check_closed(&state, None, Some("gateway")).is_err());
    }
}
