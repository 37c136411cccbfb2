//! A backlog burst across many distinct chats, and the audit of the replies
//! that came back: each chat answered exactly once, with its own routing.
//!
//! This is the connector's view, written from the spec (§6.3, §6.4): a reply
//! to a guild chat must carry that guild's `scope_id` and the author's
//! `user_id`, a DM reply the `user_id` alone, and every reply the frame's
//! `platform` tag; a real connector declines a reply without them ("target
//! not routed to an onboarded tenant").

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::StubState;

/// The platform of every burst event.
pub const BURST_PLATFORM: &str = "discord";

/// Chat id of burst event `i`: even ones are guild channels, odd ones DMs.
pub fn burst_chat(i: usize) -> String {
    if i.is_multiple_of(2) {
        format!("g{i}")
    } else {
        format!("d{i}")
    }
}

/// `n` inbound events, one per distinct chat (half guild, half DM), each
/// with its own scope and author.
pub fn burst_events(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let mut source = json!({
                "platform": BURST_PLATFORM,
                "chat_id": burst_chat(i),
                "user_id": format!("u{i}"),
            });
            if i.is_multiple_of(2) {
                source["chat_type"] = json!("group");
                source["scope_id"] = json!(format!("guild{i}"));
            } else {
                source["chat_type"] = json!("dm");
            }
            json!({"text": format!("burst {i}"), "message_id": format!("m{i}"), "source": source})
        })
        .collect()
}

/// The wire metadata a reply to burst chat `i` must carry.
pub fn burst_reply_metadata(i: usize) -> Value {
    if i.is_multiple_of(2) {
        json!({"scope_id": format!("guild{i}"), "user_id": format!("u{i}")})
    } else {
        json!({"user_id": format!("u{i}")})
    }
}

/// What came back for a burst of `n` chats.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReplyAudit {
    /// `send` frames received for burst chats.
    pub replies: usize,
    /// Chats never answered.
    pub missing: Vec<String>,
    /// Chats answered more than once, with the count.
    pub duplicated: Vec<(String, usize)>,
    /// Replies without the chat's own routing: (chat, metadata, platform).
    pub misrouted: Vec<(String, Value, Value)>,
}

impl ReplyAudit {
    /// Every chat answered exactly once, each with its own routing.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.duplicated.is_empty() && self.misrouted.is_empty()
    }

    /// A short description for an assertion message.
    pub fn summary(&self) -> String {
        let head = |v: &[String]| v.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        format!(
            "{} replies; {} missing [{}]; {} duplicated {:?}; {} misrouted {:?}",
            self.replies,
            self.missing.len(),
            head(&self.missing),
            self.duplicated.len(),
            self.duplicated.iter().take(5).collect::<Vec<_>>(),
            self.misrouted.len(),
            self.misrouted.iter().take(3).collect::<Vec<_>>(),
        )
    }
}

/// Audits the `send` frames in `state` against a burst of `n` chats.
pub fn audit_replies(state: &StubState, n: usize) -> ReplyAudit {
    let index: BTreeMap<String, usize> = (0..n).map(|i| (burst_chat(i), i)).collect();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut audit = ReplyAudit::default();
    for frame in state.frames_of_type("outbound") {
        if frame.op() != Some("send") {
            continue;
        }
        let Some(action) = frame.get("action") else {
            continue;
        };
        let Some((chat, &i)) = action
            .get("chat_id")
            .and_then(Value::as_str)
            .and_then(|c| index.get_key_value(c))
        else {
            continue;
        };
        audit.replies += 1;
        *seen.entry(chat.as_str()).or_default() += 1;
        let metadata = action.get("metadata").cloned().unwrap_or(Value::Null);
        let platform = frame.get("platform").cloned().unwrap_or(Value::Null);
        if metadata != burst_reply_metadata(i) || platform != json!(BURST_PLATFORM) {
            audit.misrouted.push((chat.clone(), metadata, platform));
        }
    }
    for chat in index.keys() {
        match seen.get(chat.as_str()) {
            None => audit.missing.push(chat.clone()),
            Some(&count) if count > 1 => audit.duplicated.push((chat.clone(), count)),
            Some(_) => {}
        }
    }
    audit
}
