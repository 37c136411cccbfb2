//! The typed lanes new in WIT 0.2 (spec §6.6.2, §6.6.4, §6.12, §6.13, §9.5):
//! deletes, reactions and the processing reactions, thread create and
//! rename, the Slack typing clear and status anchor, and the per-chat
//! auto-thread feedback with its waiters.

use super::outbound::Purpose;
use super::*;

/// Auto-thread feedback remembered per chat (§6.6.1 step 8).
pub(super) const AUTO_THREAD_CAPACITY: usize = 256;
/// Longest thread name sent (§2.7), in characters.
pub(super) const THREAD_NAME_MAX_CHARS: usize = 100;
/// Name of a thread created with an empty name (§2.7).
pub(super) const DEFAULT_THREAD_NAME: &str = "handoff";

/// The processing reaction emoji of a platform (§6.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReactionSet {
    /// Shown while the turn runs.
    pub in_progress: &'static str,
    /// Replaces it when the turn succeeded.
    pub success: &'static str,
    /// Replaces it when the turn failed.
    pub failure: &'static str,
}

/// The emoji set for `platform`: Telegram accepts only a curated list.
pub fn reaction_set(platform: &str) -> ReactionSet {
    match platform {
        "telegram" => ReactionSet {
            in_progress: "👀",
            success: "👍",
            failure: "👎",
        },
        _ => ReactionSet {
            in_progress: "👀",
            success: "✅",
            failure: "❌",
        },
    }
}

/// `thread_create`'s name rule: trimmed, `handoff` when empty, at most 100
/// characters.
pub fn thread_create_name(name: &str) -> String {
    let name = name.trim();
    let name = if name.is_empty() {
        DEFAULT_THREAD_NAME
    } else {
        name
    };
    name.chars().take(THREAD_NAME_MAX_CHARS).collect()
}

/// `thread_rename`'s name rule: whitespace runs collapsed to one space,
/// trimmed, at most 100 characters (possibly empty: then nothing is sent).
pub fn thread_rename_name(name: &str) -> String {
    let collapsed = name.split_whitespace().collect::<Vec<_>>().join(" ");
    collapsed.chars().take(THREAD_NAME_MAX_CHARS).collect()
}

/// What a send into a chat told about the connector's auto-thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AutoThread {
    thread_id: String,
    name: String,
}

/// What the lanes own: the auto-thread feedback and who waits for it.
#[derive(Debug, Default)]
pub(super) struct Lanes {
    /// Chat → its latest auto-thread, oldest first, at most
    /// [`AUTO_THREAD_CAPACITY`].
    auto_threads: VecDeque<(String, AutoThread)>,
    /// Callers waiting for a chat's next send: (deadline, order) →
    /// (request, chat).
    waiters: BTreeMap<(u64, u64), (u64, String)>,
    seq: u64,
}

impl Lanes {
    /// When the earliest auto-thread wait runs out.
    pub(super) fn next_wait_deadline(&self) -> Option<u64> {
        self.waiters.first_key_value().map(|(&(at, _), _)| at)
    }

    fn known(&self, chat_id: &str) -> Option<&AutoThread> {
        self.auto_threads
            .iter()
            .find(|(chat, _)| chat == chat_id)
            .map(|(_, info)| info)
    }

    fn remember(&mut self, chat_id: &str, info: AutoThread) {
        self.auto_threads.retain(|(chat, _)| chat != chat_id);
        if self.auto_threads.len() >= AUTO_THREAD_CAPACITY {
            self.auto_threads.pop_front();
        }
        self.auto_threads.push_back((chat_id.to_owned(), info));
    }
}

fn auto_thread_result(info: &AutoThread) -> SendResult {
    let raw = serde_json::json!({
        "success": true,
        "thread_id": info.thread_id,
        "auto_thread_name": info.name,
    });
    SendResult::from_result_json(&raw.to_string())
}

/// The reply anchor and chat of a delivered event (§6.12): `source.chat_id`
/// and `source.message_id` as delivered (absent for Discord slash commands,
/// so they get no reactions), and the event's platform.
struct Anchor {
    chat_id: String,
    message_id: String,
    platform: String,
}

fn anchor_of(event_json: &str) -> Option<Anchor> {
    let Value::Object(event) = serde_json::from_str::<Value>(event_json).ok()? else {
        return None;
    };
    let source = event.get("source")?.as_object()?;
    let text = |key: &str| {
        source
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    Some(Anchor {
        chat_id: text("chat_id")?,
        message_id: text("message_id")?,
        platform: text("platform").unwrap_or_default(),
    })
}

/// A task card's id (§9.10): `turn:<anchor>`, the anchor being the reply-to
/// id, else metadata `message_id`, `reply_to_message_id`, `thread_ts`,
/// `thread_id`, else `root`.
pub fn task_card_id(reply_to: Option<&str>, metadata: &Map<String, Value>) -> String {
    let from_meta = |key: &str| match metadata.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let anchor = reply_to
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .or_else(|| from_meta("message_id"))
        .or_else(|| from_meta("reply_to_message_id"))
        .or_else(|| from_meta("thread_ts"))
        .or_else(|| from_meta("thread_id"))
        .unwrap_or_else(|| "root".to_owned());
    format!("turn:{anchor}")
}

fn is_placeholder(platform: &str) -> bool {
    platform.is_empty() || platform == crate::event::DEFAULT_PLATFORM
}

impl Machine {
    pub(super) fn on_lane(&mut self, now: Now, request: u64, lane: &Lane) {
        match lane {
            Lane::Delete {
                chat_id,
                message_id,
                metadata,
            } => {
                // No legacy fallback: the chat's descriptor must list it.
                if !self.descriptor_for_chat(Some(chat_id)).lists_op("delete") {
                    return self.refuse(request, "relay op delete not supported by the connector");
                }
                let mut action = self.lane_action("delete", chat_id, metadata);
                action.insert("message_id".into(), Value::from(message_id.as_str()));
                self.lane_send(now, request, chat_id, action);
            }
            Lane::StopTyping { chat_id, metadata } => {
                if !self.is_slack_chat(chat_id) {
                    return self.refuse(
                        request,
                        "relay stop-typing not sent: only Slack chats have a typing status to clear",
                    );
                }
                let mut action = self.lane_action("typing", chat_id, metadata);
                action.insert("content".into(), Value::from(""));
                self.lane_send(now, request, chat_id, action);
            }
            Lane::React {
                chat_id,
                message_id,
                emoji,
                remove,
                metadata,
            } => {
                if chat_id.is_empty() || message_id.is_empty() || emoji.is_empty() {
                    return self.refuse(
                        request,
                        "relay react not sent: a chat id, a message id and an emoji are required",
                    );
                }
                if !self.supports_op(Some(chat_id), "react") {
                    return self.refuse(request, "relay op react not supported by the connector");
                }
                let action = self.react_action(chat_id, message_id, emoji, *remove, metadata);
                self.lane_send(now, request, chat_id, action);
            }
            Lane::ProcessingStart { event } => {
                self.processing_reactions(now, event, None);
                self.complete(request, Completion::Done);
            }
            Lane::ProcessingComplete { event, outcome } => {
                self.processing_reactions(now, event, Some(*outcome));
                self.complete(request, Completion::Done);
            }
            Lane::ThreadCreate {
                parent_chat_id,
                name,
                metadata,
            } => {
                if parent_chat_id.is_empty() {
                    return self.refuse(request, "relay thread_create not sent: no parent chat");
                }
                if !self.supports_op(Some(parent_chat_id), "thread_create") {
                    return self.refuse(
                        request,
                        "relay op thread_create not supported by the connector",
                    );
                }
                let mut action = self.lane_action("thread_create", parent_chat_id, metadata);
                action.insert("thread_name".into(), Value::from(thread_create_name(name)));
                self.lane_send(now, request, parent_chat_id, action);
            }
            Lane::ThreadRename {
                thread_id,
                name,
                guard,
                parent_chat_id,
                metadata,
            } => {
                let name = thread_rename_name(name);
                if thread_id.is_empty() || name.is_empty() {
                    return self.refuse(
                        request,
                        "relay thread_rename not sent: the thread id and the name must not be empty",
                    );
                }
                let chat_id = parent_chat_id
                    .as_deref()
                    .filter(|p| !p.is_empty())
                    .unwrap_or(thread_id);
                if !self.supports_op(Some(chat_id), "thread_rename") {
                    return self.refuse(
                        request,
                        "relay op thread_rename not supported by the connector",
                    );
                }
                let mut action = self.lane_action("thread_rename", chat_id, metadata);
                action.insert("message_id".into(), Value::from(thread_id.as_str()));
                action.insert("thread_name".into(), Value::from(name));
                match guard {
                    RenameGuard::None => {}
                    RenameGuard::ConnectorCreated => {
                        action.insert("only_if_connector_created".into(), Value::Bool(true));
                    }
                    RenameGuard::CurrentName(current) => {
                        action.insert("only_if_current_name".into(), Value::from(current.as_str()));
                    }
                }
                let chat_id = chat_id.to_owned();
                self.lane_send(now, request, &chat_id, action);
            }
            Lane::SendDraft {
                chat_id,
                draft_id,
                content,
                metadata,
            } => self.send_draft(now, request, chat_id, *draft_id, content, metadata),
            Lane::Prompt(prompt) => self.send_prompt(now, request, prompt),
            Lane::SendMedia(send) => self.send_media(now, request, send),
            Lane::TaskCard {
                chat_id,
                reply_to,
                chunks,
                metadata,
            } => self.task_card(
                now,
                request,
                chat_id,
                reply_to.as_deref(),
                Some(chunks),
                metadata,
            ),
            Lane::TaskCardStop {
                chat_id,
                reply_to,
                metadata,
            } => self.task_card(now, request, chat_id, reply_to.as_deref(), None, metadata),
            Lane::AbandonOpenDraft { chat_id, content } => {
                self.abandon_open_draft(now, request, chat_id, content)
            }
            Lane::AutoThreadInfo {
                chat_id,
                timeout_ms,
            } => {
                if let Some(info) = self.lanes.known(chat_id) {
                    let result = auto_thread_result(info);
                    return self.complete(request, Completion::Sent(result));
                }
                if self.is_terminal() {
                    return self
                        .complete(request, Completion::Sent(SendResult::transport_closed()));
                }
                // Waiters hold no request slot: bound them on their own.
                if self.lanes.waiters.len() >= self.cfg.max_pending {
                    let why = format!(
                        "relay auto-thread wait refused: {} callers are already waiting",
                        self.cfg.max_pending
                    );
                    return self.refuse(request, &why);
                }
                self.lanes.seq += 1;
                let deadline = now.mono_ns.saturating_add(ms(*timeout_ms));
                self.lanes
                    .waiters
                    .insert((deadline, self.lanes.seq), (request, chat_id.clone()));
            }
        }
    }

    /// `task_card` / `task_card_stop` (§2.7, §9.10): op-gated on a literal
    /// `supported_ops` entry; the card keyed by its turn; a Slack card
    /// threads on `metadata.thread_ts`, defaulting to the reply-to id.
    fn task_card(
        &mut self,
        now: Now,
        request: u64,
        chat_id: &str,
        reply_to: Option<&str>,
        chunks: Option<&str>,
        metadata: &str,
    ) {
        let op = if chunks.is_some() {
            "task_card"
        } else {
            "task_card_stop"
        };
        if chat_id.is_empty() {
            return self.refuse(request, &format!("relay {op} not sent: no chat"));
        }
        if !self.descriptor_for_chat(Some(chat_id)).lists_op(op) {
            return self.refuse(
                request,
                &format!("relay op {op} not supported by the connector"),
            );
        }
        let chunks = match chunks.map(serde_json::from_str::<Value>) {
            None => None,
            Some(Ok(Value::Array(list))) if list.iter().all(Value::is_object) => {
                Some(Value::Array(list))
            }
            Some(_) => {
                return self.refuse(
                    request,
                    "relay task_card not sent: chunks must be a JSON array of objects",
                );
            }
        };
        let mut caller = self.caller_metadata(metadata);
        let card_id = task_card_id(reply_to, &caller);
        if self.is_slack_chat(chat_id)
            && !caller.contains_key("thread_ts")
            && let Some(anchor) = reply_to.filter(|r| !r.is_empty())
        {
            caller.insert("thread_ts".into(), Value::from(anchor));
        }
        let mut action = Map::new();
        action.insert("op".into(), Value::from(op));
        action.insert("chat_id".into(), Value::from(chat_id));
        action.insert("card_id".into(), Value::from(card_id));
        if let Some(chunks) = chunks {
            action.insert("chunks".into(), chunks);
        }
        action.insert(
            "metadata".into(),
            Value::Object(self.routes.reattach(chat_id, &caller)),
        );
        self.lane_send(now, request, chat_id, action);
    }

    fn refuse(&mut self, request: u64, why: &str) {
        self.complete(request, Completion::Sent(SendResult::failure(why)));
    }

    /// An action object for `op` on `chat_id` with the caller's metadata
    /// re-attached (§6.4).
    fn lane_action(&mut self, op: &str, chat_id: &str, metadata: &str) -> Map<String, Value> {
        let mut action = Map::new();
        action.insert("op".into(), Value::from(op));
        action.insert("chat_id".into(), Value::from(chat_id));
        let metadata = self.wire_metadata(chat_id, metadata);
        action.insert("metadata".into(), Value::Object(metadata));
        action
    }

    fn react_action(
        &mut self,
        chat_id: &str,
        message_id: &str,
        emoji: &str,
        remove: bool,
        metadata: &str,
    ) -> Map<String, Value> {
        let mut action = self.lane_action("react", chat_id, metadata);
        action.insert("message_id".into(), Value::from(message_id));
        action.insert("emoji".into(), Value::from(emoji));
        // `remove` is always sent (§2.7).
        action.insert("remove".into(), Value::Bool(remove));
        action
    }

    /// Sends a lane's action for a caller, tagged with the chat's platform.
    fn lane_send(&mut self, now: Now, request: u64, chat_id: &str, mut action: Map<String, Value>) {
        let tag = self.routes.platform(chat_id).map(str::to_owned);
        let op = action
            .get("op")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        self.check_route(&op, chat_id, tag.is_some());
        self.slack_status_anchor_on(chat_id, &op, &mut action);
        self.issue(now, request, Action::Raw(action), tag, Purpose::Reply);
    }

    /// Whether the chat's cached platform is Slack.
    pub(super) fn is_slack_chat(&self, chat_id: &str) -> bool {
        self.routes.platform(chat_id) == Some("slack")
    }

    /// The Slack status anchor (§6.6.4): a typing frame to a Slack DM
    /// without `thread_id`/`thread_ts` gets `thread_id` = the chat's last
    /// inbound message id.
    pub(super) fn slack_status_anchor(&self, chat_id: &str, metadata: &mut Map<String, Value>) {
        if metadata.contains_key("thread_id") || metadata.contains_key("thread_ts") {
            return;
        }
        let Some(route) = self.routes.get(chat_id) else {
            return;
        };
        if route.platform.as_deref() != Some("slack") || route.chat_type.as_deref() != Some("dm") {
            return;
        }
        if let Some(ts) = &route.last_message_id {
            metadata.insert("thread_id".into(), Value::from(ts.as_str()));
        }
    }

    fn slack_status_anchor_on(&self, chat_id: &str, op: &str, action: &mut Map<String, Value>) {
        if op != "typing" {
            return;
        }
        if let Some(Value::Object(metadata)) = action.get_mut("metadata") {
            self.slack_status_anchor(chat_id, metadata);
        }
    }

    /// The typing clear after an interrupt (§6.9): Slack chats only, in
    /// the background, so nothing waits for its result.
    pub(super) fn clear_typing_in_background(&mut self, now: Now, chat_id: &str) {
        if chat_id.is_empty() || !self.is_slack_chat(chat_id) || self.live_conn().is_none() {
            return;
        }
        let mut action = self.lane_action("typing", chat_id, "{}");
        action.insert("content".into(), Value::from(""));
        self.slack_status_anchor_on(chat_id, "typing", &mut action);
        let tag = self.routes.platform(chat_id).map(str::to_owned);
        self.issue(now, 0, Action::Raw(action), tag, Purpose::Background);
    }

    /// The processing reactions of §6.12: best-effort `react` frames on the
    /// event's reply anchor; `outcome` none starts, some completes.
    fn processing_reactions(&mut self, now: Now, event: &str, outcome: Option<ProcessingOutcome>) {
        let Some(anchor) = anchor_of(event) else {
            self.log(
                Level::Debug,
                "relay processing reaction skipped: the event has no chat or reply anchor",
            );
            return;
        };
        if !self.supports_op(Some(&anchor.chat_id), "react") {
            return;
        }
        let platform = self.reaction_platform(&anchor);
        let set = reaction_set(&platform);
        let mut frames: Vec<(&str, bool)> = Vec::with_capacity(2);
        match outcome {
            None => frames.push((set.in_progress, false)),
            Some(outcome) => {
                frames.push((set.in_progress, true));
                match outcome {
                    ProcessingOutcome::Success => frames.push((set.success, false)),
                    ProcessingOutcome::Failure => frames.push((set.failure, false)),
                    ProcessingOutcome::Cancelled => {}
                }
            }
        }
        let tag = self.routes.platform(&anchor.chat_id).map(str::to_owned);
        for (emoji, remove) in frames {
            let action =
                self.react_action(&anchor.chat_id, &anchor.message_id, emoji, remove, "{}");
            self.issue(
                now,
                0,
                Action::Raw(action),
                tag.clone(),
                Purpose::Background,
            );
        }
    }

    /// §6.12's platform resolution: the event's, the chat's cached one,
    /// the descriptor's, skipping the `""` and `relay` placeholders.
    fn reaction_platform(&self, anchor: &Anchor) -> String {
        let cached = self.routes.platform(&anchor.chat_id).unwrap_or("");
        let described = self.descriptor_for_chat(Some(&anchor.chat_id)).platform();
        [anchor.platform.as_str(), cached, described]
            .into_iter()
            .find(|p| !is_placeholder(p))
            .unwrap_or("")
            .to_owned()
    }

    /// A send into `chat_id` finished (§6.6.1 step 8): remember its
    /// auto-thread, then answer everyone waiting for that chat.
    pub(super) fn after_send(&mut self, chat_id: &str, result: &SendResult) {
        let info = match (&result.thread_id, &result.auto_thread_name) {
            (Some(thread_id), Some(name)) if result.success => Some(AutoThread {
                thread_id: thread_id.clone(),
                name: name.clone(),
            }),
            _ => None,
        };
        if let Some(info) = &info {
            self.lanes.remember(chat_id, info.clone());
        }
        if self.lanes.waiters.is_empty() {
            return;
        }
        let woken: Vec<(u64, u64)> = self
            .lanes
            .waiters
            .iter()
            .filter(|(_, (_, chat))| chat == chat_id)
            .map(|(key, _)| *key)
            .collect();
        for key in woken {
            if let Some((request, _)) = self.lanes.waiters.remove(&key) {
                let result = match &info {
                    Some(info) => auto_thread_result(info),
                    None => SendResult::failure(
                        "no auto-thread info: the send into the chat was not auto-threaded",
                    ),
                };
                self.complete(request, Completion::Sent(result));
            }
        }
    }

    /// Answers the auto-thread waits that ran out at `t`.
    pub(super) fn expire_auto_thread_waits(&mut self, t: u64) {
        while let Some((&(deadline, seq), _)) = self.lanes.waiters.first_key_value() {
            if deadline > t {
                break;
            }
            if let Some((request, _)) = self.lanes.waiters.remove(&(deadline, seq)) {
                let r = SendResult::failure("no auto-thread info: no send into the chat in time");
                self.complete(request, Completion::Sent(r));
            }
        }
    }

    /// The adapter stopped: nobody will send into any chat any more.
    pub(super) fn end_auto_thread_waits(&mut self) {
        for (_, (request, _)) in std::mem::take(&mut self.lanes.waiters) {
            self.complete(request, Completion::Sent(SendResult::transport_closed()));
        }
    }
}
