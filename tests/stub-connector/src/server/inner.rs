//! The shared state's protocol reactions: frames sent, the buffer and its
//! replay, hellos, acks, outbound results, going idle.

use super::*;

impl Inner {
    pub(super) fn current_conn(&self) -> Option<usize> {
        self.state.current_connection().map(|c| c.index)
    }

    /// The connection live deliveries go to: the current one, once
    /// handshaken, while the gateway is not idle.
    pub(super) fn live_conn(&self) -> Option<usize> {
        let conn = self.state.current_connection()?;
        (conn.handshaken && !self.state.idle && self.links.contains_key(&conn.index))
            .then_some(conn.index)
    }

    pub(super) fn send_text(&self, conn: usize, text: String, done: Option<Done>) {
        if let Some(link) = self.links.get(&conn) {
            // A closed receiver means the connection just ended; the caller
            // learns that through the dropped `done`.
            let _ = link.send(Cmd::Send(Message::Text(text.into()), done));
        }
    }

    pub(super) fn send_frame(&self, conn: usize, frame: &Value, done: Option<Done>) {
        self.send_text(conn, line_of(frame), done);
    }

    pub(super) fn add_to_buffer(
        &mut self,
        payload: Deliverable,
        buffer_id: Option<String>,
    ) -> String {
        let buffer_id = buffer_id.unwrap_or_else(|| {
            self.next_buffer += 1;
            format!("buf-{}", self.next_buffer)
        });
        self.state.buffer.push(BufferEntry {
            buffer_id: buffer_id.clone(),
            payload,
            delivered_on: Vec::new(),
        });
        buffer_id
    }

    /// Sends buffered entries not yet sent on `conn`, if it is live.
    pub(super) fn pump(&mut self, conn: usize) {
        if self.live_conn() != Some(conn) {
            return;
        }
        let one_at_a_time = self.config.replay_mode == ReplayMode::OneAtATime;
        if one_at_a_time
            && self
                .state
                .buffer
                .iter()
                .any(|e| e.delivered_on.contains(&conn))
        {
            return;
        }
        let mut frames = Vec::new();
        for entry in &mut self.state.buffer {
            if entry.delivered_on.contains(&conn) {
                continue;
            }
            entry.delivered_on.push(conn);
            frames.push(entry.payload.to_frame(Some(&entry.buffer_id)));
            if one_at_a_time {
                break;
            }
        }
        for frame in &frames {
            self.send_frame(conn, frame, None);
        }
    }

    pub(super) fn on_line(&mut self, conn: usize, line: &[u8]) -> Vec<Deferred> {
        let raw = String::from_utf8_lossy(line).into_owned();
        if raw.trim().is_empty() {
            return Vec::new();
        }
        let json = serde_json::from_str::<Value>(&raw).ok();
        let seq = self.state.frames.len();
        self.state.frames.push(ReceivedFrame {
            seq,
            conn,
            at: SystemTime::now(),
            raw,
            json: json.clone(),
        });
        let Some(frame) = json.filter(Value::is_object) else {
            return Vec::new();
        };
        match frame.get("type").and_then(Value::as_str) {
            Some("hello") => {
                self.on_hello(conn, &frame);
                Vec::new()
            }
            Some("outbound") => self.on_outbound(conn, &frame),
            Some("inbound_ack") => {
                self.on_ack(conn, &frame);
                Vec::new()
            }
            Some("going_idle") => self.on_going_idle(conn),
            _ => Vec::new(),
        }
    }

    pub(super) fn on_hello(&mut self, conn: usize, frame: &Value) {
        let hello = Hello {
            platform: stringify(frame.get("platform")),
            bot_id: stringify(frame.get("botId")),
        };
        let reply = self
            .config
            .descriptors
            .get(&hello.platform)
            .unwrap_or(&self.config.descriptor)
            .clone();
        match reply {
            HelloReply::Descriptor(descriptor) => self.send_frame(
                conn,
                &json!({"type": "descriptor", "descriptor": descriptor}),
                None,
            ),
            HelloReply::RawLine(line) => self.send_text(conn, format!("{line}\n"), None),
            HelloReply::Nothing => {}
        }
        let needed = self.config.replay_after_hellos.max(1);
        let Some(info) = self.state.connections.get_mut(conn) else {
            return;
        };
        info.hellos.push(hello);
        if !info.handshaken && info.hellos.len() >= needed {
            info.handshaken = true;
            // A new handshake ends the idle period: replay, then live again.
            self.state.idle = false;
            self.pump(conn);
            if let (Some((code, reason)), Some(link)) =
                (&self.config.close_after_handshake, self.links.get(&conn))
            {
                let _ = link.send(Cmd::Close(*code, reason.clone(), None));
            }
        }
    }

    pub(super) fn on_ack(&mut self, conn: usize, frame: &Value) {
        let Some(id) = frame.get("bufferId") else {
            return;
        };
        let id = stringify(Some(id));
        self.state.buffer.retain(|e| e.buffer_id != id);
        self.state.acked_buffer_ids.push(id);
        self.pump(conn);
    }

    pub(super) fn on_going_idle(&mut self, conn: usize) -> Vec<Deferred> {
        match self.config.going_idle {
            IdleReply::Ack => {
                self.flip_idle(conn);
                Vec::new()
            }
            IdleReply::Withhold => Vec::new(),
            IdleReply::Delayed(after) => vec![Deferred::IdleAck { conn, after }],
        }
    }

    pub(super) fn flip_idle(&mut self, conn: usize) {
        if self.links.contains_key(&conn) {
            self.state.idle = true;
            self.send_frame(conn, &json!({"type": "going_idle_ack"}), None);
        }
    }

    pub(super) fn take_reply(&mut self, op: &str) -> OutboundReply {
        let queued = self
            .outbound_once
            .iter()
            .position(|(o, _)| o.as_deref().is_none_or(|o| o == op));
        if let Some((_, reply)) = queued.and_then(|pos| self.outbound_once.remove(pos)) {
            return reply;
        }
        self.config
            .outbound_by_op
            .get(op)
            .unwrap_or(&self.config.outbound)
            .clone()
    }

    pub(super) fn on_outbound(&mut self, conn: usize, frame: &Value) -> Vec<Deferred> {
        let Some(request_id) = frame.get("requestId").and_then(Value::as_str) else {
            return Vec::new();
        };
        let op = frame
            .get("action")
            .and_then(|a| a.get("op"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let mut reply = self.take_reply(&op);
        let mut delay = Duration::ZERO;
        // Unwraps nested delays; terminates because the value is finite.
        while let OutboundReply::Delayed(d, inner) = reply {
            delay += d;
            reply = *inner;
        }
        if reply == OutboundReply::NoAnswer {
            self.state.pending_requests.push(PendingRequest {
                conn,
                request_id: request_id.to_owned(),
                frame: frame.clone(),
            });
            return Vec::new();
        }
        let result = self.result_for(conn, frame, &op, reply);
        let line = line_of(&json!({
            "type": "outbound_result", "requestId": request_id, "result": result
        }));
        if delay.is_zero() {
            self.send_text(conn, line, None);
            Vec::new()
        } else {
            vec![Deferred::Line {
                conn,
                after: delay,
                line,
            }]
        }
    }

    pub(super) fn result_for(
        &mut self,
        conn: usize,
        frame: &Value,
        op: &str,
        reply: OutboundReply,
    ) -> Value {
        match reply {
            OutboundReply::Result(value) => value,
            OutboundReply::Fail { error, code } => {
                let mut result = json!({"success": false, "error": error});
                if let (Some(code), Some(obj)) = (code, result.as_object_mut()) {
                    obj.insert("code".into(), Value::String(code));
                }
                result
            }
            OutboundReply::EgressDeclined => {
                let platform = frame
                    .get("platform")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .or_else(|| {
                        self.state
                            .connections
                            .get(conn)
                            .and_then(|c| c.default_platform().map(str::to_owned))
                    })
                    .unwrap_or_else(|| "relay".to_owned());
                json!({
                    "success": false, "code": "egress_declined",
                    "error": format!(
                        "{platform} egress declined: target is not an approved destination for this connection"
                    )
                })
            }
            // Delays and NoAnswer were handled by the caller.
            OutboundReply::Success | OutboundReply::NoAnswer | OutboundReply::Delayed(..) => {
                self.success_result(frame, op)
            }
        }
    }

    pub(super) fn success_result(&mut self, frame: &Value, op: &str) -> Value {
        let action = frame.get("action");
        let field = |key: &str| action.and_then(|a| a.get(key)).and_then(Value::as_str);
        match op {
            "send" | "send_media" | "prompt" | "follow_up" | "draft" => {
                json!({"success": true, "message_id": self.next_message_id()})
            }
            "edit" => {
                let id = field("message_id")
                    .map(str::to_owned)
                    .unwrap_or_else(|| self.next_message_id());
                json!({"success": true, "message_id": id})
            }
            "thread_create" => {
                self.next_thread += 1;
                json!({"success": true, "thread_id": format!("th{}", self.next_thread)})
            }
            "get_chat_info" => {
                let chat_id = field("chat_id").unwrap_or("");
                let (name, chat_type) = self
                    .config
                    .chat_info
                    .get(chat_id)
                    .cloned()
                    .unwrap_or_else(|| (chat_id.to_owned(), "dm".to_owned()));
                json!({"success": true, "chat_info": {"name": name, "type": chat_type}})
            }
            _ => json!({"success": true}),
        }
    }

    pub(super) fn next_message_id(&mut self) -> String {
        self.next_message += 1;
        format!("m{}", self.next_message)
    }
}
