//! Native draft streaming and sealing (spec §6.14, §6.15): interim `draft`
//! frames keyed per turn, post-seal stragglers, streams armed before their
//! first frame where the stream is the message (Slack), the turn-final
//! `send` turned into the sealing frame, its one retry, and the fail-open
//! plain send.

use super::outbound::{Purpose, Seal};
use super::*;

/// Armed streams and seal tombstones remembered (§10, bound 16).
pub(super) const DRAFT_STATE_CAPACITY: usize = 512;

/// A stream armed for sealing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OpenStream {
    key: String,
    chat_id: String,
    draft_id: u64,
}

/// What the draft lane owns.
#[derive(Debug, Default)]
pub(super) struct Drafts {
    /// Armed streams, oldest first.
    open: VecDeque<OpenStream>,
    /// Sealed (turn key, draft id) tombstones, oldest first.
    sealed: VecDeque<(String, u64)>,
    /// Turn keys whose first swallowed straggler was logged.
    swallow_logged: VecDeque<String>,
}

fn push_bounded<T>(queue: &mut VecDeque<T>, item: T) {
    if queue.len() >= DRAFT_STATE_CAPACITY {
        queue.pop_front();
    }
    queue.push_back(item);
}

impl Drafts {
    /// No stream is armed (the common case: nothing to intercept).
    pub(super) fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    fn arm(&mut self, stream: OpenStream) {
        self.open.retain(|s| s.key != stream.key);
        push_bounded(&mut self.open, stream);
    }

    fn disarm(&mut self, key: &str, draft_id: u64) {
        self.open
            .retain(|s| !(s.key == key && s.draft_id == draft_id));
    }

    fn is_sealed(&self, key: &str, draft_id: u64) -> bool {
        self.sealed.iter().any(|(k, d)| k == key && *d == draft_id)
    }

    /// The stream a turn-final send into `chat_id` seals (§6.14): the
    /// exact turn key first; a send carrying a per-turn id never falls
    /// back; an identity-less send takes the chat's stream only when it is
    /// the one open there.
    fn take_match(&mut self, chat_id: &str, metadata: &Map<String, Value>) -> Option<OpenStream> {
        let (key, identity) = turn_key(chat_id, metadata);
        let at = match self.open.iter().position(|s| s.key == key) {
            Some(at) => Some(at),
            None if identity => None,
            None => {
                let mut in_chat = self
                    .open
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.chat_id == chat_id);
                match (in_chat.next(), in_chat.next()) {
                    (Some((at, _)), None) => Some(at),
                    _ => None,
                }
            }
        };
        at.and_then(|at| self.open.remove(at))
    }

    /// The chat's most recently armed stream.
    fn take_latest(&mut self, chat_id: &str) -> Option<OpenStream> {
        let at = self.open.iter().rposition(|s| s.chat_id == chat_id)?;
        self.open.remove(at)
    }
}

/// A metadata value as an id: a non-empty string, or a number.
fn id_value(metadata: &Map<String, Value>, key: &str) -> Option<String> {
    match metadata.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// The turn key (§6.14): `<chat>:turn:<id>` from `message_id` or
/// `reply_to_message_id`, else `<chat>:<thread_ts or thread_id or ''>`;
/// and whether the metadata carried a per-turn id.
pub(super) fn turn_key(chat_id: &str, metadata: &Map<String, Value>) -> (String, bool) {
    if let Some(id) =
        id_value(metadata, "message_id").or_else(|| id_value(metadata, "reply_to_message_id"))
    {
        return (format!("{chat_id}:turn:{id}"), true);
    }
    let thread = id_value(metadata, "thread_ts")
        .or_else(|| id_value(metadata, "thread_id"))
        .unwrap_or_default();
    (format!("{chat_id}:{thread}"), false)
}

/// Whether a metadata value is JSON-truthy.
pub(super) fn truthy_value(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

fn draft_action(
    chat_id: &str,
    draft_id: u64,
    content: &str,
    final_: bool,
    metadata: Map<String, Value>,
) -> Map<String, Value> {
    let mut action = Map::new();
    action.insert("op".into(), Value::from("draft"));
    action.insert("chat_id".into(), Value::from(chat_id));
    action.insert("draft_id".into(), Value::from(draft_id));
    action.insert("content".into(), Value::from(content));
    action.insert("final".into(), Value::Bool(final_));
    action.insert("metadata".into(), Value::Object(metadata));
    action
}

impl Machine {
    /// `send-draft` (§6.14).
    pub(super) fn send_draft(
        &mut self,
        now: Now,
        request: u64,
        chat_id: &str,
        draft_id: u64,
        content: &str,
        metadata: &str,
    ) {
        if !self.supports_draft_streaming(chat_id) {
            let r = SendResult::failure("relay draft streaming not implemented for this chat");
            return self.complete(request, Completion::Sent(r));
        }
        let mut caller = self.caller_metadata(metadata);
        let (key, _) = turn_key(chat_id, &caller);
        if self.drafts.is_sealed(&key, draft_id) {
            if !self.drafts.swallow_logged.contains(&key) {
                push_bounded(&mut self.drafts.swallow_logged, key.clone());
                self.log(
                    Level::Info,
                    format!(
                        "relay draft {draft_id} for {} arrived after its seal; swallowed",
                        truncate(&key, 96)
                    ),
                );
            }
            let ok = SendResult::from_result_json(r#"{"success":true}"#);
            return self.complete(request, Completion::Sent(ok));
        }
        if self.stream_is_message(chat_id) {
            // Armed before the frame goes out, so a final racing its ack
            // still seals (§6.14).
            self.drafts.arm(OpenStream {
                key: key.clone(),
                chat_id: chat_id.to_owned(),
                draft_id,
            });
        }
        let tag = self.routes.platform(chat_id).map(str::to_owned);
        self.check_route("draft", chat_id, tag.is_some());
        self.stamp_format_hints(chat_id, None, &mut caller);
        let metadata = self.routes.reattach(chat_id, &caller);
        let action = draft_action(chat_id, draft_id, content, false, metadata);
        let purpose = Purpose::Draft { key, draft_id };
        self.issue(now, request, Action::Raw(action), tag, purpose);
    }

    /// An interim draft frame's outcome: a lost ack keeps the stream armed;
    /// a definite rejection (a decline included) disarms it.
    pub(super) fn draft_outcome(
        &mut self,
        request: u64,
        key: &str,
        draft_id: u64,
        result: SendResult,
    ) {
        if !result.success && !result.ambiguous {
            self.drafts.disarm(key, draft_id);
        }
        self.complete(request, Completion::Sent(result));
    }

    /// The turn-final interception (§6.14): a non-interim `send` into a
    /// chat with an armed stream becomes its sealing frame. Returns false
    /// when no stream matches (the send goes out as itself).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn try_seal(
        &mut self,
        now: Now,
        request: u64,
        chat_id: &str,
        content: &str,
        reply_to: Option<&str>,
        caller: &Map<String, Value>,
        platform: Option<&str>,
    ) -> bool {
        let Some(stream) = self.drafts.take_match(chat_id, caller) else {
            return false;
        };
        self.seal(
            now,
            request,
            stream,
            content,
            reply_to,
            caller.clone(),
            platform,
        );
        true
    }

    /// `abandon-open-draft`: seals the chat's open stream in place.
    pub(super) fn abandon_open_draft(
        &mut self,
        now: Now,
        request: u64,
        chat_id: &str,
        content: &str,
    ) {
        match self.drafts.take_latest(chat_id) {
            Some(stream) => self.seal(now, request, stream, content, None, Map::new(), None),
            None => {
                let r = SendResult::failure("relay draft: no open stream in this chat");
                self.complete(request, Completion::Sent(r));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn seal(
        &mut self,
        now: Now,
        request: u64,
        stream: OpenStream,
        content: &str,
        reply_to: Option<&str>,
        mut caller: Map<String, Value>,
        platform: Option<&str>,
    ) {
        // Tombstone first: a straggler racing the seal is swallowed.
        push_bounded(
            &mut self.drafts.sealed,
            (stream.key.clone(), stream.draft_id),
        );
        let chat_id = stream.chat_id.as_str();
        let tag = match platform {
            Some(p) => Some(p.to_owned()),
            None => self.routes.platform(chat_id).map(str::to_owned),
        };
        self.check_route("draft", chat_id, tag.is_some());
        // The fallback is the send as it would have gone out.
        let mut plain_meta = caller.clone();
        let reply_to = self.slack_reply_anchor(chat_id, platform, reply_to, &mut plain_meta);
        self.stamp_unfurl(chat_id, platform, &mut plain_meta);
        self.stamp_format_hints(chat_id, platform, &mut plain_meta);
        let mut plain = Map::new();
        plain.insert("op".into(), Value::from("send"));
        plain.insert("chat_id".into(), Value::from(chat_id));
        plain.insert("content".into(), Value::from(content));
        plain.insert("reply_to".into(), reply_to.map_or(Value::Null, Value::from));
        plain.insert(
            "metadata".into(),
            Value::Object(self.routes.reattach(chat_id, &plain_meta)),
        );
        self.stamp_format_hints(chat_id, platform, &mut caller);
        let metadata = self.routes.reattach(chat_id, &caller);
        let action = draft_action(chat_id, stream.draft_id, content, true, metadata);
        let seal = Seal {
            chat_id: stream.chat_id.clone(),
            action: action.clone(),
            plain,
            tag: tag.clone(),
            attempt: 1,
        };
        let purpose = Purpose::Seal(Box::new(seal));
        self.issue(now, request, Action::Raw(action), tag, purpose);
    }

    /// A sealing frame's outcome (§6.14, §6.15): success answers with the
    /// stream's message id; a lost ack re-sends the same frame once, and a
    /// second lost ack falls open to a plain send (a possible duplicate
    /// beats a silent loss); an ordinary failure sends plainly; a decline
    /// never does.
    pub(super) fn seal_outcome(&mut self, request: u64, mut seal: Box<Seal>, result: SendResult) {
        let now = self.now;
        if result.success {
            let chat = seal.chat_id.clone();
            return self.finish_sent(request, "send", Some(&chat), result);
        }
        if result.declined {
            return self.complete(request, Completion::Sent(result));
        }
        if result.ambiguous && seal.attempt == 1 {
            self.log(
                Level::Info,
                format!(
                    "relay draft seal for {} unconfirmed; sending the same frame once more",
                    truncate(&seal.chat_id, 64)
                ),
            );
            seal.attempt = 2;
            let action = Action::Raw(seal.action.clone());
            let tag = seal.tag.clone();
            return self.issue(now, request, action, tag, Purpose::Seal(seal));
        }
        self.log(
            Level::Warn,
            format!(
                "relay draft seal for {} failed ({}); sending the final as a plain send",
                truncate(&seal.chat_id, 64),
                result.error.as_deref().unwrap_or("unconfirmed twice")
            ),
        );
        let maybe_applied = result.ambiguous || seal.attempt == 2;
        let purpose = if maybe_applied {
            Purpose::FailOpen
        } else {
            Purpose::Reply
        };
        self.issue(now, request, Action::Raw(seal.plain), seal.tag, purpose);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn turn_keys() {
        assert_eq!(
            turn_key("C1", &obj(json!({"message_id":"m.1","thread_ts":"1.2"}))),
            ("C1:turn:m.1".to_owned(), true)
        );
        assert_eq!(
            turn_key("C1", &obj(json!({"reply_to_message_id":7}))),
            ("C1:turn:7".to_owned(), true)
        );
        assert_eq!(
            turn_key("C1", &obj(json!({"thread_id":"t","message_id":""}))),
            ("C1:t".to_owned(), false)
        );
        assert_eq!(turn_key("C1", &Map::new()), ("C1:".to_owned(), false));
    }

    #[test]
    fn state_is_bounded() {
        let mut d = Drafts::default();
        for i in 0..(DRAFT_STATE_CAPACITY as u64 + 10) {
            d.arm(OpenStream {
                key: format!("c:{i}"),
                chat_id: "c".into(),
                draft_id: i,
            });
        }
        assert_eq!(d.open.len(), DRAFT_STATE_CAPACITY);
        assert_eq!(d.open.front().map(|s| s.draft_id), Some(10));
    }
}
