//! The receive path (spec §1.3, §2): bytes to lines to frames, the
//! descriptors of the handshake, `going_idle_ack`, and outbound results.

use super::*;

/// What the receive path owns: the line decoder and the descriptors.
#[derive(Debug)]
pub(super) struct Receive {
    pub(super) decoder: LineDecoder,
    /// Reused between calls: the lines of one input.
    pub(super) scratch: Vec<LineItem>,
    /// The first descriptor of a handshake (or a placeholder before one).
    pub(super) default_desc: CapabilityDescriptor,
    /// Later descriptors, by platform.
    pub(super) platform_desc: KeyedMap<String, CapabilityDescriptor>,
}

impl Receive {
    pub(super) fn new(max_line_bytes: usize, primary: &str) -> Receive {
        Receive {
            decoder: LineDecoder::new(max_line_bytes),
            scratch: Vec::new(),
            default_desc: CapabilityDescriptor::placeholder(primary),
            platform_desc: KeyedMap::default(),
        }
    }
}

impl Machine {
    pub(super) fn on_bytes(&mut self, now: Now, conn: u32, data: &[u8]) {
        if self.live_conn() != Some(conn) {
            return;
        }
        let mut items = std::mem::take(&mut self.receive.scratch);
        self.receive.decoder.push(data, &mut items);
        for item in items.drain(..) {
            // A frame may end the connection (an invalid descriptor); the
            // rest of that message belongs to a dead socket.
            if self.live_conn() != Some(conn) {
                break;
            }
            match item {
                LineItem::Skip(reason) => {
                    self.skipped.bump(reason.label());
                    self.log(Level::Warn, format!("relay {reason}"));
                }
                LineItem::Frame(frame) => {
                    self.frames_in.bump(frame_label(&frame));
                    self.on_frame(now, conn, frame);
                }
            }
        }
        self.receive.scratch = items;
    }

    pub(super) fn on_frame(&mut self, now: Now, conn: u32, frame: ConnectorFrame) {
        let t = now.mono_ns;
        match frame {
            ConnectorFrame::Descriptor { raw } => self.on_descriptor(now, conn, &raw),
            ConnectorFrame::Inbound { event, buffer_id } => {
                self.observe_labels(&event);
                let key = dedupe_key(&event);
                self.admit(now, conn, *event, buffer_id, key);
            }
            ConnectorFrame::PassthroughForward { forward, buffer_id } => {
                match forward_to_event(&forward) {
                    Ok(mut event) => {
                        self.apply_labels(&mut event);
                        let key = buffer_id
                            .as_ref()
                            .map(|b| format!("passthrough_buffer:{b}"));
                        self.admit(now, conn, event, buffer_id, key);
                    }
                    Err(why) => {
                        self.log(
                            Level::Info,
                            format!(
                                "{why} method={:?} path={:?}",
                                truncate(&forward.method, 16),
                                truncate(&forward.path, 128)
                            ),
                        );
                        if let Some(b) = buffer_id {
                            self.ack(conn, b);
                        }
                    }
                }
            }
            ConnectorFrame::GoingIdleAck => self.on_going_idle_ack(t, conn),
            ConnectorFrame::OutboundResult { request_id, result } => {
                self.on_result(&request_id, &result)
            }
            ConnectorFrame::InterruptInbound {
                session_key,
                chat_id,
            } => {
                // The gateway's signal first; the Slack typing clear goes
                // out in the background, never waited on (§6.9).
                let clear = chat_id.clone();
                self.outputs.push_back(Output::Interrupt {
                    session_key,
                    chat_id,
                });
                self.clear_typing_in_background(now, &clear);
            }
        }
    }

    pub(super) fn on_descriptor(&mut self, now: Now, conn: u32, raw: &str) {
        let t = now.mono_ns;
        let parsed = CapabilityDescriptor::from_json(raw);
        match (self.link.phase, parsed) {
            (Phase::Handshaking { .. }, Ok(d)) => {
                if !d.is_known_contract_version() {
                    self.log(
                        Level::Warn,
                        format!(
                            "relay descriptor contract_version {} (expected 1)",
                            d.contract_version()
                        ),
                    );
                }
                self.receive.platform_desc.clear();
                self.receive.default_desc = d;
                self.link.phase = Phase::Ready { conn, ready_at: t };
                self.link.handshake_ever = true;
                self.link.dormant = false;
                let detail = format!(
                    "platform={} max_message_length={}",
                    self.receive.default_desc.platform(),
                    self.receive.default_desc.max_message_length()
                );
                self.report(State::Ready, detail);
            }
            (Phase::Handshaking { .. }, Err(e)) => {
                self.log(Level::Warn, format!("relay handshake failed: {e}"));
                self.close(conn, CLOSE_PROTOCOL_ERROR, "invalid descriptor");
                self.socket_lost(now, conn, CLOSE_PROTOCOL_ERROR, "invalid descriptor", true);
            }
            // Only identities we announced get a descriptor: a connector cannot
            // grow this map with descriptors for platforms we never fronted.
            (Phase::Ready { .. }, Ok(d))
                if d.platform() != self.receive.default_desc.platform()
                    && self.fronts_platform(d.platform()) =>
            {
                self.receive
                    .platform_desc
                    .insert(d.platform().to_owned(), d);
            }
            (_, Err(e)) => self.log(Level::Warn, format!("relay ignored descriptor: {e}")),
            _ => {}
        }
    }

    pub(super) fn on_going_idle_ack(&mut self, t: u64, conn: u32) {
        let Some(wait) = self.idle.wait.take() else {
            // A late ack (its wait timed out): the connector now buffers
            // anyway, so drain its replay through a re-dial like an overload.
            if matches!(self.link.phase, Phase::Ready { .. })
                && self.idle.shutdown.is_none()
                && self.idle.timed_out_on == Some(conn)
            {
                self.log(
                    Level::Info,
                    "relay late going_idle_ack: the connector buffers; will re-dial to drain",
                );
                self.idle.overload = true;
                self.report(State::Idle, "connector buffers inbound");
            }
            return;
        };
        match wait.purpose {
            IdlePurpose::Shutdown => {
                self.report(State::Idle, "connector buffers inbound");
                self.begin_drain(t);
            }
            IdlePurpose::Dormant { request } => {
                self.close(conn, CLOSE_NORMAL, "going dormant");
                self.link.phase = Phase::Waiting {
                    dial_at: t.saturating_add(ms(self.cfg.dormant_redial_ms)),
                };
                self.receive.decoder.reset();
                self.idle.overload = false;
                self.fail_all_pending(SendResult::connection_lost());
                self.link.attempts = 0;
                self.link.dormant = true;
                self.report(State::Dormant, "connector buffers inbound");
                self.complete(request, Completion::Flag(true));
            }
            IdlePurpose::Overload => {
                self.idle.overload = true;
                self.report(State::Idle, "overloaded: connector buffers inbound");
            }
        }
    }

    pub(super) fn on_result(&mut self, request_id: &str, raw: &str) {
        let Some(p) = self.take_pending(request_id) else {
            self.log(
                Level::Debug,
                format!(
                    "relay outbound_result for unknown request {}",
                    truncate(request_id, 40)
                ),
            );
            return;
        };
        match p.kind {
            PendingKind::ChatInfo { chat_id } => {
                let info = ChatInfo::from_result_json(raw, &chat_id);
                self.complete(p.request, Completion::ChatInfo(info));
            }
            kind => {
                let result = SendResult::from_result_json(raw);
                if result.declined {
                    self.log(
                        Level::Warn,
                        format!(
                            "relay {} DECLINED for {}: {}",
                            kind.op(),
                            kind.chat_id().unwrap_or("-"),
                            crate::outcome::decline_error(&result)
                        ),
                    );
                }
                self.finish_kind(p.request, kind, result);
            }
        }
        if let Some(sd) = &self.idle.shutdown
            && sd.drain_deadline.is_some()
            && self.outbound.pending.is_empty()
        {
            self.finish_shutdown();
        }
    }
}
