//! Test actions of the stub's handle: behaviour settings, deliveries like a
//! connector (live or buffered), and raw wire messages.

use super::*;

impl StubConnector {
    /// Sets the hello reply for `platform`, or the default when `None`.
    pub fn set_descriptor(&self, platform: Option<&str>, reply: HelloReply) {
        self.shared.update(|inner| match platform {
            Some(p) => {
                inner.config.descriptors.insert(p.to_owned(), reply);
            }
            None => inner.config.descriptor = reply,
        });
    }

    /// Sets the standing reply for outbound `op`, or the default when `None`.
    pub fn set_outbound_reply(&self, op: Option<&str>, reply: OutboundReply) {
        self.shared.update(|inner| match op {
            Some(op) => {
                inner.config.outbound_by_op.insert(op.to_owned(), reply);
            }
            None => inner.config.outbound = reply,
        });
    }

    /// Queues a one-shot reply used by the next outbound of `op` (any op
    /// when `None`) before the standing policy applies again.
    pub fn queue_outbound_reply(&self, op: Option<&str>, reply: OutboundReply) {
        self.shared.update(|inner| {
            inner
                .outbound_once
                .push_back((op.map(str::to_owned), reply));
        });
    }

    /// Adds or replaces a `get_chat_info` fixture entry.
    pub fn set_chat_info(&self, chat_id: &str, name: &str, chat_type: &str) {
        self.shared.update(|inner| {
            inner
                .config
                .chat_info
                .insert(chat_id.to_owned(), (name.to_owned(), chat_type.to_owned()));
        });
    }

    /// Sets the `going_idle` reply.
    pub fn set_going_idle_reply(&self, reply: IdleReply) {
        self.shared.update(|inner| inner.config.going_idle = reply);
    }

    /// Sets the clock used for token expiry.
    pub fn set_clock(&self, clock: Clock) {
        self.shared.update(|inner| inner.config.clock = clock);
    }

    /// Replaces the verify list (empty = verification off).
    pub fn set_secrets(&self, secrets: Vec<String>) {
        self.shared.update(|inner| inner.config.secrets = secrets);
    }

    /// Sets the replay style for later replays.
    pub fn set_replay_mode(&self, mode: ReplayMode) {
        self.shared.update(|inner| inner.config.replay_mode = mode);
    }

    /// Sets how many hellos complete a handshake on later connections.
    pub fn set_replay_after_hellos(&self, n: usize) {
        self.shared
            .update(|inner| inner.config.replay_after_hellos = n.max(1));
    }

    /// Closes every later connection with `code`/`reason` right after its
    /// handshake (`None` turns that off).
    pub fn set_close_after_handshake(&self, close: Option<(u16, &str)>) {
        self.shared.update(|inner| {
            inner.config.close_after_handshake = close.map(|(code, r)| (code, r.to_owned()));
        });
    }

    /// Applies `fate` to each of the next `n` upgrade attempts (after any
    /// fates already queued). A `Delay` fate is followed by normal handling.
    pub fn refuse_next_upgrades(&self, n: usize, fate: UpgradeFate) -> Result<(), StubError> {
        if let UpgradeFate::Http { status, .. } = &fate
            && !(300..=599).contains(status)
        {
            return Err(StubError::Invalid(format!(
                "refusal status {status} must be 300..=599"
            )));
        }
        self.shared.update(|inner| {
            inner.fates.extend(std::iter::repeat_n(fate, n));
        });
        Ok(())
    }

    /// Holds the next upgrade for `delay` before handling it.
    pub fn delay_next_upgrade(&self, delay: Duration) {
        self.shared
            .update(|inner| inner.fates.push_back(UpgradeFate::Delay(delay)));
    }

    /// Forgets queued upgrade fates.
    pub fn clear_upgrade_fates(&self) {
        self.shared.update(|inner| inner.fates.clear());
    }

    // ----- deliveries ------------------------------------------------------

    /// Delivers like a connector: live (no `bufferId`) when a handshaken,
    /// non-idle connection exists; otherwise into the buffer under a
    /// generated id (`buf-1`, …) for replay after the next handshake.
    pub async fn push(&self, payload: impl Into<Deliverable>) -> Result<Delivery, StubError> {
        let payload = payload.into();
        let (delivery, wait) = self.shared.update(|inner| match inner.live_conn() {
            Some(conn) => {
                let (tx, rx) = oneshot::channel();
                inner.send_frame(conn, &payload.to_frame(None), Some(tx));
                (Delivery::Live { conn }, Some((conn, rx)))
            }
            None => {
                let buffer_id = inner.add_to_buffer(payload, None);
                (Delivery::Buffered { buffer_id }, None)
            }
        });
        if let Some((conn, rx)) = wait {
            wait_written(conn, rx).await?;
        }
        Ok(delivery)
    }

    /// Delivers `events` as a connector drains a backlog: in text messages
    /// of up to `per_message` `inbound` frames each, live while a
    /// handshaken, non-idle connection exists, else into the buffer (for
    /// replay after the next handshake). Decided message by message, so a
    /// `going_idle` acknowledged mid-burst sends the rest to the buffer, as
    /// a real connector does. Returns (frames sent live, frames buffered).
    pub async fn push_burst(
        &self,
        events: &[Value],
        per_message: usize,
    ) -> Result<(usize, usize), StubError> {
        let (mut live, mut buffered) = (0, 0);
        for chunk in events.chunks(per_message.max(1)) {
            let wait = self.shared.update(|inner| match inner.live_conn() {
                Some(conn) => {
                    let text: String = chunk
                        .iter()
                        .map(|e| line_of(&Deliverable::Inbound(e.clone()).to_frame(None)))
                        .collect();
                    let (tx, rx) = oneshot::channel();
                    inner.send_text(conn, text, Some(tx));
                    Some((conn, rx))
                }
                None => {
                    for event in chunk {
                        inner.add_to_buffer(Deliverable::Inbound(event.clone()), None);
                    }
                    None
                }
            });
            match wait {
                Some((conn, rx)) => {
                    wait_written(conn, rx).await?;
                    live += chunk.len();
                }
                None => buffered += chunk.len(),
            }
        }
        Ok((live, buffered))
    }

    /// [`StubConnector::push`] of an `inbound` event.
    pub async fn push_inbound(&self, event: Value) -> Result<Delivery, StubError> {
        self.push(Deliverable::Inbound(event)).await
    }

    /// [`StubConnector::push`] of a `passthrough_forward`.
    pub async fn push_passthrough(&self, forward: Passthrough) -> Result<Delivery, StubError> {
        self.push(Deliverable::Passthrough(forward)).await
    }

    /// Stores `payload` in the buffer under `buffer_id` (generated when
    /// `None`) and returns the id. If a handshaken, non-idle connection
    /// exists it is sent there at once with its `bufferId`; either way it
    /// stays pending, and is replayed on later connections, until acked.
    pub async fn push_buffered(
        &self,
        payload: impl Into<Deliverable>,
        buffer_id: Option<&str>,
    ) -> String {
        let payload = payload.into();
        self.shared.update(|inner| {
            let id = inner.add_to_buffer(payload, buffer_id.map(str::to_owned));
            if let Some(conn) = inner.live_conn() {
                inner.pump(conn);
            }
            id
        })
    }

    /// Sends an `inbound` frame on the current connection as given (with
    /// `bufferId` when `Some`), bypassing the buffer bookkeeping.
    pub async fn send_inbound(
        &self,
        event: Value,
        buffer_id: Option<&str>,
    ) -> Result<(), StubError> {
        self.send_frame(&Deliverable::Inbound(event).to_frame(buffer_id))
            .await
    }

    /// Sends a `passthrough_forward` frame on the current connection as
    /// given, bypassing the buffer bookkeeping.
    pub async fn send_passthrough(
        &self,
        forward: &Passthrough,
        buffer_id: Option<&str>,
    ) -> Result<(), StubError> {
        self.send_frame(&Deliverable::Passthrough(forward.clone()).to_frame(buffer_id))
            .await
    }

    /// Sends `interrupt_inbound` on the current connection.
    pub async fn interrupt_inbound(
        &self,
        session_key: &str,
        chat_id: &str,
    ) -> Result<(), StubError> {
        self.send_frame(&json!({
            "type": "interrupt_inbound", "session_key": session_key, "chat_id": chat_id
        }))
        .await
    }

    /// Sends `outbound_result` for `request_id` with this `result` object,
    /// on the connection the request came from if it is pending, else on
    /// the current connection (so unknown ids can be tested too).
    pub async fn answer(&self, request_id: &str, result: Value) -> Result<(), StubError> {
        let target = self.shared.update(|inner| {
            let pending = &mut inner.state.pending_requests;
            pending
                .iter()
                .position(|p| p.request_id == request_id)
                .map(|pos| pending.remove(pos).conn)
        });
        let line = line_of(&json!({
            "type": "outbound_result", "requestId": request_id, "result": result
        }));
        self.dispatch(target, vec![WireMessage::Text(line)]).await
    }

    // ----- raw wire --------------------------------------------------------

    /// Sends one frame as one text message (JSON + `\n`).
    pub async fn send_frame(&self, frame: &Value) -> Result<(), StubError> {
        self.send_text(line_of(frame)).await
    }

    /// Sends `line` + `\n` as one text message (e.g. malformed JSON).
    pub async fn send_line(&self, line: &str) -> Result<(), StubError> {
        self.send_text(format!("{line}\n")).await
    }

    /// Sends one text message verbatim.
    pub async fn send_text(&self, text: impl Into<String>) -> Result<(), StubError> {
        self.dispatch(None, vec![WireMessage::Text(text.into())])
            .await
    }

    /// Sends several frames as ONE text message (one line each).
    pub async fn send_frames_batched(&self, frames: &[Value]) -> Result<(), StubError> {
        let text: String = frames.iter().map(line_of).collect();
        self.send_text(text).await
    }

    /// Sends `text` as consecutive text messages cut at the byte offsets
    /// `at` (strictly increasing, inside the text, on char boundaries).
    pub async fn send_split(&self, text: &str, at: &[usize]) -> Result<(), StubError> {
        let parts = split_at_offsets(text.as_bytes(), at)?;
        let mut messages = Vec::with_capacity(parts.len());
        for part in parts {
            let part = std::str::from_utf8(part).map_err(|_| {
                StubError::Invalid("text split offsets must fall on char boundaries".into())
            })?;
            messages.push(WireMessage::Text(part.to_owned()));
        }
        self.dispatch(None, messages).await
    }

    /// Sends `bytes` as consecutive binary messages cut at the byte offsets
    /// `at`; offsets may split a multi-byte UTF-8 character.
    pub async fn send_split_binary(&self, bytes: &[u8], at: &[usize]) -> Result<(), StubError> {
        let messages = split_at_offsets(bytes, at)?
            .into_iter()
            .map(|p| WireMessage::Binary(p.to_vec()))
            .collect();
        self.dispatch(None, messages).await
    }

    /// Sends one frame (JSON + `\n`) split into `parts` text messages of
    /// roughly equal size.
    pub async fn send_split_frame(&self, frame: &Value, parts: usize) -> Result<(), StubError> {
        let line = line_of(frame);
        self.send_split(&line, &even_cuts(&line, parts)).await
    }

    /// Sends one binary message.
    pub async fn send_binary(&self, bytes: impl Into<Vec<u8>>) -> Result<(), StubError> {
        self.dispatch(None, vec![WireMessage::Binary(bytes.into())])
            .await
    }

    /// Sends `frame` padded (with an extra top-level `"_pad"` string, which
    /// the gateway ignores as an unknown key) so that the text message,
    /// newline included, is exactly `size` bytes.
    pub async fn send_sized_frame(&self, frame: Value, size: usize) -> Result<(), StubError> {
        let text = sized_line(frame, size)?;
        self.send_text(text).await
    }

    /// Closes the current connection with a close frame.
    pub async fn close(&self, code: u16, reason: &str) -> Result<(), StubError> {
        self.dispatch(
            None,
            vec![WireMessage::Close {
                code,
                reason: reason.to_owned(),
            }],
        )
        .await
    }

    /// Drops the current connection's TCP stream without a close frame.
    pub async fn drop_connection(&self) -> Result<(), StubError> {
        self.dispatch(None, vec![WireMessage::Drop]).await
    }

    /// Sends messages on connection `conn` (or the current one when
    /// `None`), back to back with nothing interleaved, and waits until they
    /// are written.
    pub async fn send_to(
        &self,
        conn: Option<usize>,
        messages: Vec<WireMessage>,
    ) -> Result<(), StubError> {
        self.dispatch(conn, messages).await
    }

    async fn dispatch(
        &self,
        target: Option<usize>,
        messages: Vec<WireMessage>,
    ) -> Result<(), StubError> {
        let (conn, waits) = {
            let inner = self.shared.lock();
            let conn = match target {
                Some(conn) => conn,
                None => inner.current_conn().ok_or(StubError::NotConnected)?,
            };
            let link = inner
                .links
                .get(&conn)
                .ok_or(StubError::ConnectionClosed(conn))?;
            let mut waits = Vec::with_capacity(messages.len());
            // Queued under one lock so nothing interleaves with a split frame.
            for message in messages {
                let (tx, rx) = oneshot::channel();
                link.send(message.into_cmd(Some(tx)))
                    .map_err(|_| StubError::ConnectionClosed(conn))?;
                waits.push(rx);
            }
            (conn, waits)
        };
        for rx in waits {
            wait_written(conn, rx).await?;
        }
        Ok(())
    }
}

pub(super) async fn wait_written(
    conn: usize,
    rx: oneshot::Receiver<Result<(), String>>,
) -> Result<(), StubError> {
    match tokio::time::timeout(WRITE_TIMEOUT, rx).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(error))) => Err(StubError::Write { conn, error }),
        Ok(Err(_)) => Err(StubError::ConnectionClosed(conn)),
        Err(_) => Err(StubError::Timeout {
            what: format!("a write on connection {conn}"),
            waited: WRITE_TIMEOUT,
            summary: "the gateway is not reading".into(),
        }),
    }
}

/// Byte offsets cutting `text` into `parts` near-equal pieces on char
/// boundaries (fewer pieces when the text is too short).
pub(crate) fn even_cuts(text: &str, parts: usize) -> Vec<usize> {
    let parts = parts.clamp(1, text.len().max(1));
    let step = text.len() / parts;
    let mut cuts = Vec::with_capacity(parts);
    let mut last = 0;
    for i in 1..parts {
        let mut cut = (i * step).max(last + 1);
        // Bounded: UTF-8 char boundaries are at most 4 bytes apart.
        while cut < text.len() && !text.is_char_boundary(cut) {
            cut += 1;
        }
        if cut < text.len() && cut > last {
            cuts.push(cut);
            last = cut;
        }
    }
    cuts
}

pub(crate) fn line_of(frame: &Value) -> String {
    format!("{frame}\n")
}

pub(super) fn sized_line(frame: Value, size: usize) -> Result<String, StubError> {
    let Value::Object(mut obj) = frame else {
        return Err(StubError::Invalid(
            "sized frames must be JSON objects".into(),
        ));
    };
    obj.insert("_pad".into(), Value::String(String::new()));
    let base = line_of(&Value::Object(obj.clone())).len();
    let Some(pad) = size.checked_sub(base) else {
        return Err(StubError::Invalid(format!(
            "frame needs at least {base} bytes, asked for {size}"
        )));
    };
    obj.insert("_pad".into(), Value::String("x".repeat(pad)));
    Ok(line_of(&Value::Object(obj)))
}

pub(super) fn split_at_offsets<'a>(
    bytes: &'a [u8],
    at: &[usize],
) -> Result<Vec<&'a [u8]>, StubError> {
    let mut parts = Vec::with_capacity(at.len() + 1);
    let mut start = 0;
    for &cut in at {
        if cut <= start || cut >= bytes.len() {
            return Err(StubError::Invalid(format!(
                "split offsets must be strictly increasing and inside 1..{}: {at:?}",
                bytes.len()
            )));
        }
        parts.push(&bytes[start..cut]);
        start = cut;
    }
    parts.push(&bytes[start..]);
    Ok(parts)
}

pub(super) fn stringify(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}
