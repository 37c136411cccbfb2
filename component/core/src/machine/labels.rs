//! The chat-label record (spec §7.7, §9.17): what the Discord text lane
//! observed about each chat (name, topic, parent) and each author's display
//! name in it, so that interactions (slash commands, buttons, modals, whose
//! payloads carry other names or none) present the same labels as text
//! messages: a mismatch would invalidate the gateway's per-session prompt.
//!
//! Semantics are the adapter's; persistence is the host's. Every change is
//! reported ([`Output::LabelsObserved`]) for the host to store, and a host
//! restores its store after a restart with [`Input::PrimeLabels`], which
//! never overrides a fresher observation. Unchanged labels report nothing.

use super::*;

/// Chats (and, separately, authors per chat) remembered; the oldest key is
/// forgotten first.
pub const LABEL_CAPACITY: usize = 2048;

/// One observation of the text lane, or one restored record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChatLabels {
    /// The tenant scope (guild), `""` for none.
    pub scope_id: String,
    /// The chat.
    pub chat_id: String,
    /// The chat's name; `None` is an observation too (a removed name is
    /// not revived).
    pub chat_name: Option<String>,
    /// The chat's topic; `None` likewise.
    pub chat_topic: Option<String>,
    /// The parent channel when the chat is a thread.
    pub parent_chat_id: Option<String>,
    /// The author the display name belongs to.
    pub user_id: Option<String>,
    /// The author's display name in this chat.
    pub user_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ChatEntry {
    name: Option<String>,
    topic: Option<String>,
    parent: Option<String>,
}

/// A map that forgets its oldest key past its capacity.
#[derive(Debug)]
struct Bounded<V> {
    map: KeyedMap<String, V>,
    order: VecDeque<String>,
}

impl<V: PartialEq> Bounded<V> {
    fn new() -> Self {
        Bounded {
            map: KeyedMap::default(),
            order: VecDeque::new(),
        }
    }

    /// Stores what `make` builds unless `same` says the held value already
    /// is it; whether anything changed. Builds (allocates) only on a change:
    /// most messages repeat what their chat's last one carried.
    fn put_if_changed(
        &mut self,
        key: &str,
        same: impl FnOnce(&V) -> bool,
        make: impl FnOnce() -> V,
    ) -> bool {
        match self.map.get_mut(key) {
            Some(old) if same(old) => false,
            Some(old) => {
                *old = make();
                true
            }
            None => {
                self.insert_new(key.to_owned(), make());
                true
            }
        }
    }

    /// Stores `value` under a key not held yet, forgetting the oldest key
    /// when full.
    fn insert_new(&mut self, key: String, value: V) {
        if self.map.len() >= LABEL_CAPACITY
            && let Some(oldest) = self.order.pop_front()
        {
            self.map.remove(&oldest);
        }
        self.order.push_back(key.clone());
        self.map.insert(key, value);
    }
}

/// What the record owns.
#[derive(Debug)]
pub(super) struct Labels {
    chats: Bounded<ChatEntry>,
    users: Bounded<Option<String>>,
    /// The key being looked up, reused so an unchanged observation
    /// allocates nothing.
    key: String,
}

impl Default for Labels {
    fn default() -> Self {
        Labels {
            chats: Bounded::new(),
            users: Bounded::new(),
            key: String::new(),
        }
    }
}

fn chat_key(scope: &str, chat: &str) -> String {
    let mut key = String::new();
    write_chat_key(&mut key, scope, chat);
    key
}

fn user_key(scope: &str, chat: &str, user: &str) -> String {
    let mut key = String::new();
    write_user_key(&mut key, scope, chat, user);
    key
}

fn write_chat_key(key: &mut String, scope: &str, chat: &str) {
    key.clear();
    key.push_str(scope);
    key.push('\u{1f}');
    key.push_str(chat);
}

fn write_user_key(key: &mut String, scope: &str, chat: &str, user: &str) {
    write_chat_key(key, scope, chat);
    key.push('\u{1f}');
    key.push_str(user);
}

impl Machine {
    /// Records what a Discord text-lane message carried (§7.7): the most
    /// recent observation wins, nulls included.
    pub(super) fn observe_labels(&mut self, event: &MessageEvent) {
        let s = &event.source;
        if s.platform != "discord" || s.chat_id.is_empty() {
            return;
        }
        let scope = s.scope_id.as_deref().unwrap_or("");
        let labels = &mut self.labels;
        write_chat_key(&mut labels.key, scope, &s.chat_id);
        let mut changed = labels.chats.put_if_changed(
            &labels.key,
            |old| {
                old.name == s.chat_name
                    && old.topic == s.chat_topic
                    && old.parent == s.parent_chat_id
            },
            || ChatEntry {
                name: s.chat_name.clone(),
                topic: s.chat_topic.clone(),
                parent: s.parent_chat_id.clone(),
            },
        );
        if let Some(user) = s.user_id.as_deref().filter(|u| !u.is_empty()) {
            write_user_key(&mut labels.key, scope, &s.chat_id, user);
            changed |= labels.users.put_if_changed(
                &labels.key,
                |old| *old == s.user_name,
                || s.user_name.clone(),
            );
        }
        if changed {
            self.outputs
                .push_back(Output::LabelsObserved(Box::new(ChatLabels {
                    scope_id: scope.to_owned(),
                    chat_id: s.chat_id.clone(),
                    chat_name: s.chat_name.clone(),
                    chat_topic: s.chat_topic.clone(),
                    parent_chat_id: s.parent_chat_id.clone(),
                    user_id: s.user_id.clone(),
                    user_name: s.user_name.clone(),
                })));
        }
    }

    /// Gives an interaction's event the labels the text lane recorded for
    /// its chat (and its author there), when there are any.
    pub(super) fn apply_labels(&self, event: &mut MessageEvent) {
        let s = &mut event.source;
        let scope = s.scope_id.as_deref().unwrap_or("");
        if let Some(entry) = self.labels.chats.map.get(&chat_key(scope, &s.chat_id)) {
            s.chat_name = entry.name.clone();
            s.chat_topic = entry.topic.clone();
            if s.parent_chat_id.is_none() {
                s.parent_chat_id = entry.parent.clone();
            }
        }
        if let Some(user) = s.user_id.as_deref()
            && let Some(Some(name)) = self
                .labels
                .users
                .map
                .get(&user_key(scope, &s.chat_id, user))
        {
            s.user_name = Some(name.clone());
        }
    }

    /// Restores a stored record (after a restart); never overrides what
    /// this adapter observed itself.
    pub(super) fn prime_labels(&mut self, labels: &ChatLabels) {
        if labels.chat_id.is_empty() {
            return;
        }
        let key = chat_key(&labels.scope_id, &labels.chat_id);
        if !self.labels.chats.map.contains_key(&key) {
            self.labels.chats.insert_new(
                key,
                ChatEntry {
                    name: labels.chat_name.clone(),
                    topic: labels.chat_topic.clone(),
                    parent: labels.parent_chat_id.clone(),
                },
            );
        }
        if let Some(user) = labels.user_id.as_deref().filter(|u| !u.is_empty()) {
            let key = user_key(&labels.scope_id, &labels.chat_id, user);
            if !self.labels.users.map.contains_key(&key) {
                self.labels.users.insert_new(key, labels.user_name.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{Harness, deliveries, forward_line, test_config};
    use super::*;
    use serde_json::json;

    fn observed(out: &[Output]) -> Vec<ChatLabels> {
        out.iter()
            .filter_map(|o| match o {
                Output::LabelsObserved(l) => Some((**l).clone()),
                _ => None,
            })
            .collect()
    }

    fn text_line(id: &str, name: Option<&str>, topic: Option<&str>, user_name: &str) -> String {
        json!({"type":"inbound","event":{"text":"hi","message_id":id,
            "source":{"platform":"discord","chat_id":"c1","chat_type":"group","scope_id":"g1",
            "chat_name":name,"chat_topic":topic,"user_id":"u1","user_name":user_name}}})
        .to_string()
    }

    fn slash_line() -> String {
        let body = json!({"type":2,"id":"i1","channel_id":"c1","guild_id":"g1",
            "channel":{"id":"c1","name":"payload-name"},
            "member":{"user":{"id":"u1","username":"ben"}},"data":{"name":"status"}});
        forward_line("discord", body.to_string().as_bytes(), None)
    }

    #[test]
    fn interactions_carry_the_labels_the_text_lane_observed_last() {
        let mut h = Harness::new(test_config());
        let conn = h.connect();
        let out = h.recv(
            conn,
            &text_line("m1", Some("general"), Some("old"), "Benny"),
        );
        assert_eq!(
            observed(&out),
            vec![ChatLabels {
                scope_id: "g1".into(),
                chat_id: "c1".into(),
                chat_name: Some("general".into()),
                chat_topic: Some("old".into()),
                parent_chat_id: None,
                user_id: Some("u1".into()),
                user_name: Some("Benny".into()),
            }]
        );
        // The same labels again: nothing to store.
        let out = h.recv(
            conn,
            &text_line("m2", Some("general"), Some("old"), "Benny"),
        );
        assert!(observed(&out).is_empty());
        // A removed topic is an observation: it is not revived.
        let out = h.recv(conn, &text_line("m3", Some("general"), None, "Benny"));
        assert_eq!(observed(&out)[0].chat_topic, None);
        let out = h.recv(conn, &slash_line());
        let d = deliveries(&out);
        let e: Value = serde_json::from_str(&d[0].json).expect("json");
        assert_eq!(e["text"], "/status");
        assert_eq!(
            e["source"]["chat_name"], "general",
            "not the payload's name"
        );
        assert_eq!(e["source"]["chat_topic"], Value::Null);
        assert_eq!(e["source"]["user_name"], "Benny");
    }

    #[test]
    fn a_primed_record_serves_until_the_text_lane_observes_anew() {
        let mut h = Harness::new(test_config());
        let stored = ChatLabels {
            scope_id: "g1".into(),
            chat_id: "c1".into(),
            chat_name: Some("stored".into()),
            chat_topic: Some("t".into()),
            parent_chat_id: None,
            user_id: Some("u1".into()),
            user_name: Some("Stored Ben".into()),
        };
        let out = h.input(Input::PrimeLabels(&stored));
        assert!(observed(&out).is_empty(), "restoring is not an observation");
        let conn = h.connect();
        let out = h.recv(conn, &slash_line());
        let e: Value = serde_json::from_str(&deliveries(&out)[0].json).expect("json");
        assert_eq!(e["source"]["chat_name"], "stored");
        assert_eq!(e["source"]["user_name"], "Stored Ben");
        h.recv(conn, &text_line("m1", Some("fresh"), None, "Ben"));
        // An older stored record never overrides a fresh observation.
        h.input(Input::PrimeLabels(&stored));
        let out = h.recv(conn, &slash_line().replace("\"i1\"", "\"i2\""));
        let e: Value = serde_json::from_str(&deliveries(&out)[0].json).expect("json");
        assert_eq!(e["source"]["chat_name"], "fresh");
    }

    #[test]
    fn the_record_is_bounded() {
        let mut h = Harness::new(test_config());
        let conn = h.connect();
        for i in 0..LABEL_CAPACITY + 10 {
            let line = json!({"type":"inbound","event":{"text":"x","message_id":format!("m{i}"),
                "source":{"platform":"discord","chat_id":format!("c{i}"),"chat_name":"n"}}});
            h.recv(conn, &line.to_string());
        }
        assert_eq!(h.m.labels.chats.map.len(), LABEL_CAPACITY);
        assert!(!h.m.labels.chats.map.contains_key(&chat_key("", "c0")));
    }
}
