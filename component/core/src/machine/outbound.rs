//! Commands and the outbound path (spec §1.6, §2.6, §2.7, §6.3-§6.8):
//! gating, routing re-attachment, platform tagging, pending requests with
//! their timeouts, results, and requests held during a drain re-dial.

use super::*;

#[derive(Debug, Clone)]
pub(super) enum PendingKind {
    Sent {
        op: String,
        chat_id: Option<String>,
    },
    ChatInfo {
        chat_id: String,
    },
    /// A best-effort frame no caller waits for (processing reactions, the
    /// typing clear after an interrupt): its result is only logged.
    Background {
        op: String,
        chat_id: Option<String>,
    },
    /// An interim `draft` frame (§6.14).
    Draft {
        chat_id: String,
        key: String,
        draft_id: u64,
    },
    /// A sealing `draft` frame (§6.14).
    Seal(Box<Seal>),
    /// The plain send after a seal that may have landed: its failure is
    /// reported ambiguous.
    FailOpen {
        chat_id: String,
    },
    /// A `prompt` frame (§6.11).
    Prompt {
        chat_id: String,
        prompt_id: String,
    },
}

impl PendingKind {
    /// The chat whose route this request pins while it is pending.
    pub(super) fn chat_id(&self) -> Option<&str> {
        match self {
            PendingKind::Sent { chat_id, .. } | PendingKind::Background { chat_id, .. } => {
                chat_id.as_deref()
            }
            PendingKind::ChatInfo { chat_id }
            | PendingKind::Draft { chat_id, .. }
            | PendingKind::FailOpen { chat_id }
            | PendingKind::Prompt { chat_id, .. } => Some(chat_id),
            PendingKind::Seal(seal) => Some(&seal.chat_id),
        }
    }

    /// The op on the wire, for logs.
    pub(super) fn op(&self) -> &str {
        match self {
            PendingKind::Sent { op, .. } | PendingKind::Background { op, .. } => op,
            PendingKind::ChatInfo { .. } => "get_chat_info",
            PendingKind::Draft { .. } | PendingKind::Seal(_) => "draft",
            PendingKind::FailOpen { .. } => "send",
            PendingKind::Prompt { .. } => "prompt",
        }
    }
}

/// A sealing request in flight.
#[derive(Debug, Clone)]
pub(super) struct Seal {
    pub(super) chat_id: String,
    /// The `draft` action with `final: true` (re-sent as is on a retry).
    pub(super) action: Map<String, Value>,
    /// The plain `send` action the final falls back to.
    pub(super) plain: Map<String, Value>,
    pub(super) tag: Option<String>,
    /// 1 for the first frame, 2 for its retry.
    pub(super) attempt: u8,
}

/// Who a request's outcome goes to.
#[derive(Debug, Clone)]
pub(super) enum Purpose {
    /// The caller, as [`Completion::Sent`].
    Reply,
    /// The caller, as [`Completion::ChatInfo`] for this chat.
    ChatInfo(String),
    /// Nobody: best-effort, logged only.
    Background,
    /// The caller, through the draft rules (§6.14).
    Draft { key: String, draft_id: u64 },
    /// The caller, through the sealing rules (§6.14).
    Seal(Box<Seal>),
    /// The caller; a failure is ambiguous (a seal may have landed).
    FailOpen,
    /// The caller, through the prompt rules (§6.11), for this prompt id.
    Prompt(String),
}

#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub(super) request: u64,
    pub(super) kind: PendingKind,
    pub(super) timeout_key: (u64, u64),
}

/// What the outbound path owns.
#[derive(Debug, Default)]
pub(super) struct Outbound {
    /// Requests awaiting a result, by wire request id.
    pub(super) pending: FxHashMap<String, Pending>,
    /// (deadline, issue order) of each pending request's timeout.
    pub(super) timeouts: BTreeMap<(u64, u64), String>,
    /// Issue counter (orders timeouts and completions).
    pub(super) seq: u64,
    /// Outbound frames (with their request ids) held during a drain
    /// re-dial, written once the new socket opens.
    pub(super) held: Vec<(String, GatewayFrame)>,
    /// Pending entries of background frames: bounded on their own, so they
    /// never take a slot an admitted caller's request needs.
    pub(super) background: usize,
}

impl Machine {
    /// Completes every request whose timeout passed at `t` (ambiguous).
    pub(super) fn expire_requests(&mut self, t: u64) {
        while let Some((&(deadline, seq), _)) = self.outbound.timeouts.first_key_value() {
            if deadline > t {
                break;
            }
            let Some(request_id) = self.outbound.timeouts.remove(&(deadline, seq)) else {
                break;
            };
            if let Some(p) = self.outbound.pending.remove(&request_id) {
                self.release_pending(&p);
                self.stats.timeouts += 1;
                self.finish_pending(p, SendResult::timed_out());
            }
        }
    }

    pub(super) fn on_command(&mut self, now: Now, request: u64, command: Command<'_>) {
        match command {
            Command::Send {
                chat_id,
                content,
                reply_to,
                metadata,
                platform,
            } => {
                let mut caller = self.caller_metadata(metadata);
                // A non-interim send seals the turn's open stream (§6.14).
                if !self.drafts.is_empty()
                    && !drafts::truthy_value(caller.get("_interim_send"))
                    && (platform.is_none_or(|p| self.fronts_platform(p)))
                    && self.try_seal(now, request, chat_id, content, reply_to, &caller, platform)
                {
                    return;
                }
                let tag = match platform {
                    Some(p) if !self.fronts_platform(p) => {
                        self.complete(request, Completion::Sent(SendResult::not_fronted(p)));
                        return;
                    }
                    Some(p) => Some(p.to_owned()),
                    None => self.routes.platform(chat_id).map(str::to_owned),
                };
                self.check_route("send", chat_id, platform.is_none() && tag.is_some());
                let reply_to =
                    self.egress_prep(chat_id, platform, tag.as_deref(), reply_to, &mut caller);
                let metadata = self.routes.reattach(chat_id, &caller);
                let action = Action::Send {
                    chat_id: chat_id.to_owned(),
                    content: content.to_owned(),
                    reply_to,
                    metadata,
                };
                self.outbound(now, request, action, tag, None);
            }
            Command::Edit {
                chat_id,
                message_id,
                content,
                metadata,
            } => {
                let tag = self.routes.platform(chat_id).map(str::to_owned);
                self.check_route("edit", chat_id, tag.is_some());
                let mut caller = self.caller_metadata(metadata);
                self.stamp_format_hints(chat_id, None, &mut caller);
                let metadata = self.routes.reattach(chat_id, &caller);
                let action = Action::Edit {
                    chat_id: chat_id.to_owned(),
                    message_id: message_id.to_owned(),
                    content: content.to_owned(),
                    metadata,
                };
                self.outbound(now, request, action, tag, None);
            }
            Command::Typing {
                chat_id,
                metadata,
                content,
            } => {
                let tag = self.routes.platform(chat_id).map(str::to_owned);
                self.check_route("typing", chat_id, tag.is_some());
                let mut metadata = self.wire_metadata(chat_id, metadata);
                self.slack_status_anchor(chat_id, &mut metadata);
                // `""` is the explicit clear, only ever sent by stop-typing
                // for Slack chats (§2.7): here it means "no phrase".
                let action = Action::Typing {
                    chat_id: chat_id.to_owned(),
                    metadata,
                    content: content.filter(|c| !c.is_empty()).map(str::to_owned),
                };
                self.outbound(now, request, action, tag, None);
            }
            Command::FollowUp {
                session_key,
                kind,
                content,
                metadata,
            } => {
                let prefix = kind.split('.').next().unwrap_or("");
                let tag = self.fronts_platform(prefix).then(|| prefix.to_owned());
                let mut metadata = parse_object(metadata).unwrap_or_default();
                strip_internal_markers(&mut metadata);
                let action = Action::FollowUp {
                    session_key: session_key.to_owned(),
                    kind: kind.to_owned(),
                    content: content.to_owned(),
                    metadata,
                };
                self.outbound(now, request, action, tag, None);
            }
            Command::GetChatInfo { chat_id } => {
                if self.live_conn().is_none()
                    || !self.receive.default_desc.supports_op("get_chat_info")
                {
                    self.complete(request, Completion::ChatInfo(ChatInfo::local(chat_id)));
                    return;
                }
                let action = Action::GetChatInfo {
                    chat_id: chat_id.to_owned(),
                };
                self.outbound(now, request, action, None, Some(chat_id.to_owned()));
            }
            Command::RawAction { action, platform } => {
                self.raw_action(now, request, action, platform)
            }
            Command::Lane(lane) => self.on_lane(now, request, lane),
            Command::Interrupt {
                session_key,
                reason,
            } => {
                match self.live_conn() {
                    Some(conn) => {
                        let frame = GatewayFrame::Interrupt {
                            session_key: session_key.to_owned(),
                            reason: reason.map(str::to_owned),
                        };
                        self.send_frame(conn, &frame, None);
                    }
                    None => self.log(Level::Warn, "relay interrupt not sent: not connected"),
                }
                self.complete(request, Completion::Done);
            }
            Command::Shutdown => self.on_shutdown(now, request),
            Command::GoDormant => self.on_go_dormant(now, request),
            Command::HoldRedial => {
                self.link.hold_until =
                    Some(now.mono_ns.saturating_add(ms(self.cfg.redial_hold_max_ms)));
                self.complete(request, Completion::Done);
            }
            Command::ReleaseRedial => {
                self.link.hold_until = None;
                self.complete(request, Completion::Done);
                if let Phase::Waiting { dial_at } = self.link.phase
                    && now.mono_ns >= dial_at
                {
                    self.dial(now);
                }
            }
        }
    }

    /// Reports a reply to a chat whose route was known but evicted: it goes
    /// out without its routing keys, which a connector may decline, so it
    /// is counted and logged instead of going out silently.
    pub(super) fn check_route(&mut self, op: &str, chat_id: &str, routed: bool) {
        // A chat whose platform came from its route has one: no lookup.
        if !routed && self.routes.is_forgotten(chat_id) {
            self.stats.route_misses += 1;
            self.log(
                Level::Warn,
                format!(
                    "relay {op} to chat {} goes out without its route: the routing cache forgot it (route_capacity {})",
                    truncate(chat_id, 64),
                    self.cfg.route_capacity
                ),
            );
        }
    }

    pub(super) fn wire_metadata(&mut self, chat_id: &str, metadata: &str) -> Map<String, Value> {
        let caller = self.caller_metadata(metadata);
        self.routes.reattach(chat_id, &caller)
    }

    /// The caller's metadata object; anything else is `{}` (with a warning
    /// unless blank).
    pub(super) fn caller_metadata(&mut self, metadata: &str) -> Map<String, Value> {
        match parse_object(metadata) {
            Some(m) => m,
            None => {
                if !metadata.trim().is_empty() {
                    self.log(
                        Level::Warn,
                        "relay metadata is not a JSON object; sending {}",
                    );
                }
                Map::new()
            }
        }
    }

    pub(super) fn raw_action(
        &mut self,
        now: Now,
        request: u64,
        action: &str,
        platform: Option<&str>,
    ) {
        let Some(mut action) = parse_object(action) else {
            let r = SendResult::failure("relay action rejected: not a JSON object");
            self.complete(request, Completion::Sent(r));
            return;
        };
        let op = match action.get("op") {
            Some(Value::String(op)) if !op.is_empty() => op.clone(),
            _ => {
                let r = SendResult::failure("relay action rejected: `op` missing");
                self.complete(request, Completion::Sent(r));
                return;
            }
        };
        let chat_id = action
            .get("chat_id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let Some(p) = platform
            && !self.fronts_platform(p)
        {
            self.complete(request, Completion::Sent(SendResult::not_fronted(p)));
            return;
        }
        let desc = match platform {
            Some(p) => self.descriptor(Some(p)),
            None => self.descriptor_for_chat(chat_id.as_deref()),
        };
        // `delete` and `draft` have no legacy fallback (§3.4).
        let allowed = if op == "delete" || op == "draft" {
            desc.lists_op(&op)
        } else {
            desc.supports_op(&op)
        };
        if !allowed {
            let r = SendResult::failure(&format!("relay op {op} not supported by the connector"));
            self.complete(request, Completion::Sent(r));
            return;
        }
        let mut tag = platform.map(str::to_owned);
        if let Some(chat) = &chat_id {
            self.check_route(&op, chat, false);
            let caller = match action.remove("metadata") {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            };
            action.insert(
                "metadata".to_owned(),
                Value::Object(self.routes.reattach(chat, &caller)),
            );
            if tag.is_none() {
                tag = self.routes.platform(chat).map(str::to_owned);
            }
        } else if let Some(Value::Object(m)) = action.get_mut("metadata") {
            strip_internal_markers(m);
        }
        self.outbound(now, request, Action::Raw(action), tag, None);
    }

    pub(super) fn outbound(
        &mut self,
        now: Now,
        request: u64,
        action: Action,
        platform: Option<String>,
        chat_info: Option<String>,
    ) {
        let purpose = match chat_info {
            Some(chat) => Purpose::ChatInfo(chat),
            None => Purpose::Reply,
        };
        self.issue(now, request, action, platform, purpose);
    }

    /// Writes (or holds) one outbound request and records it as pending;
    /// a request that cannot go out completes at once (or, in the
    /// background, is logged).
    pub(super) fn issue(
        &mut self,
        now: Now,
        request: u64,
        action: Action,
        platform: Option<String>,
        purpose: Purpose,
    ) {
        let chat_of = |a: &Action| a.chat_id().unwrap_or("").to_owned();
        let background = matches!(purpose, Purpose::Background);
        let kind = match purpose {
            Purpose::ChatInfo(chat_id) => PendingKind::ChatInfo { chat_id },
            Purpose::Reply => PendingKind::Sent {
                op: action.op().to_owned(),
                chat_id: action.chat_id().map(str::to_owned),
            },
            Purpose::Background => PendingKind::Background {
                op: action.op().to_owned(),
                chat_id: action.chat_id().map(str::to_owned),
            },
            Purpose::Draft { key, draft_id } => PendingKind::Draft {
                chat_id: chat_of(&action),
                key,
                draft_id,
            },
            Purpose::Seal(seal) => PendingKind::Seal(seal),
            Purpose::FailOpen => PendingKind::FailOpen {
                chat_id: chat_of(&action),
            },
            Purpose::Prompt(prompt_id) => PendingKind::Prompt {
                chat_id: chat_of(&action),
                prompt_id,
            },
        };
        let fail = |m: &mut Machine, kind: PendingKind, result: SendResult| {
            m.finish_kind(request, kind, result)
        };
        let closing = self.is_terminal()
            || self
                .idle
                .shutdown
                .as_ref()
                .is_some_and(|s| s.drain_deadline.is_some());
        if closing {
            return fail(self, kind, SendResult::transport_closed());
        }
        let conn = self.live_conn();
        let hold = conn.is_none() && self.idle.drain_redial;
        if conn.is_none() && !hold {
            return fail(self, kind, SendResult::not_connected());
        }
        let in_class = if background {
            self.outbound.background
        } else {
            self.outbound.pending.len() - self.outbound.background
        };
        if in_class >= self.cfg.max_pending {
            let r = SendResult::failure(&format!(
                "relay pending limit reached ({} requests awaiting results)",
                self.cfg.max_pending
            ));
            return fail(self, kind, r);
        }
        let request_id = self.rng.request_id();
        let bot_id = platform.as_ref().and_then(|p| {
            self.identities
                .iter()
                .find(|i| &i.platform == p && !i.bot_id.is_empty())
                .map(|i| i.bot_id.clone())
        });
        if background {
            self.outbound.background += 1;
        }
        let frame = GatewayFrame::Outbound {
            request_id: request_id.clone(),
            action,
            platform,
            bot_id,
        };
        self.outbound.seq += 1;
        let timeout_key = (
            now.mono_ns.saturating_add(ms(self.cfg.outbound_timeout_ms)),
            self.outbound.seq,
        );
        self.outbound
            .timeouts
            .insert(timeout_key, request_id.clone());
        if let Some(chat) = kind.chat_id() {
            self.routes.pin(chat);
            // The reply's own pin takes over from the accept's hold.
            let chat = chat.to_owned();
            self.release_reply_hold(&chat);
        }
        self.outbound.pending.insert(
            request_id.clone(),
            Pending {
                request,
                kind,
                timeout_key,
            },
        );
        match conn {
            Some(conn) => self.send_frame(conn, &frame, Some(request_id)),
            None => self.outbound.held.push((request_id, frame)),
        }
    }

    /// The drain re-dial failed: held requests were never written.
    pub(super) fn fail_held(&mut self) {
        self.idle.drain_redial = false;
        for (request_id, _) in std::mem::take(&mut self.outbound.held) {
            if let Some(p) = self.take_pending(&request_id) {
                self.finish_pending(p, SendResult::not_connected());
            }
        }
    }

    pub(super) fn take_pending(&mut self, request_id: &str) -> Option<Pending> {
        let p = self.outbound.pending.remove(request_id)?;
        self.outbound.timeouts.remove(&p.timeout_key);
        self.release_pending(&p);
        Some(p)
    }

    /// A pending entry left the table: its route pin and its class count go.
    pub(super) fn release_pending(&mut self, p: &Pending) {
        if let Some(chat) = p.kind.chat_id() {
            self.routes.unpin(chat);
        }
        if matches!(p.kind, PendingKind::Background { .. }) {
            self.outbound.background = self.outbound.background.saturating_sub(1);
        }
    }

    /// Completes a pending request with a synthesized `result` (a chat-info
    /// request with its local answer); a background one is only logged.
    pub(super) fn finish_pending(&mut self, p: Pending, result: SendResult) {
        self.finish_kind(p.request, p.kind, result);
    }

    /// Hands `result` to whoever `kind` says waits for it.
    pub(super) fn finish_kind(&mut self, request: u64, kind: PendingKind, result: SendResult) {
        match kind {
            PendingKind::ChatInfo { chat_id } => {
                self.complete(request, Completion::ChatInfo(ChatInfo::local(&chat_id)))
            }
            PendingKind::Sent { op, chat_id } => {
                self.finish_sent(request, &op, chat_id.as_deref(), result)
            }
            PendingKind::Background { op, chat_id } => {
                if !result.success && !result.declined {
                    self.log(
                        Level::Debug,
                        format!(
                            "relay {op} for {} failed: {}",
                            chat_id.as_deref().unwrap_or("-"),
                            result.error.as_deref().unwrap_or("")
                        ),
                    );
                }
            }
            PendingKind::Draft { key, draft_id, .. } => {
                self.draft_outcome(request, &key, draft_id, result)
            }
            PendingKind::Seal(seal) => self.seal_outcome(request, seal, result),
            PendingKind::Prompt { prompt_id, .. } => {
                self.prompt_outcome(request, &prompt_id, result)
            }
            PendingKind::FailOpen { chat_id } => {
                let result = if result.success || result.declined || result.ambiguous {
                    result
                } else {
                    SendResult::ambiguous_failure(
                        result
                            .error
                            .as_deref()
                            .unwrap_or("relay draft seal unconfirmed and the plain send failed"),
                    )
                };
                self.finish_sent(request, "send", Some(&chat_id), result)
            }
        }
    }

    /// Completes a caller's request; a `send` also feeds the chat's
    /// auto-thread feedback and wakes its waiters (§6.6.1 step 8).
    pub(super) fn finish_sent(
        &mut self,
        request: u64,
        op: &str,
        chat_id: Option<&str>,
        result: SendResult,
    ) {
        if op == "send"
            && let Some(chat) = chat_id
        {
            self.after_send(chat, &result);
        }
        self.complete(request, Completion::Sent(result));
    }

    pub(super) fn fail_all_pending(&mut self, result: SendResult) {
        self.fail_held();
        let mut all: Vec<Pending> = self.outbound.pending.drain().map(|(_, p)| p).collect();
        self.outbound.timeouts.clear();
        for p in &all {
            self.release_pending(p);
        }
        // Complete in issue order so callers see a stable sequence.
        all.sort_by_key(|p| p.timeout_key.1);
        for p in all {
            self.finish_pending(p, result.clone());
        }
    }
}
