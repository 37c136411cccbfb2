//! Routing cache and outbound metadata re-attachment (spec §6.3, §6.4).
//!
//! Inbound messages teach the adapter, per chat, which platform, scope, user,
//! chat type and profile a reply must carry; outbound metadata gets those
//! re-attached into a copy (never overwriting a truthy caller value). The
//! cache is a bounded LRU so a busy gateway cannot grow it without limit.

use crate::event::MessageEvent;
use crate::lenient::is_truthy;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

use crate::keyed::{KeyedMap, KeyedState};

/// Default number of chats the routing cache remembers.
pub const DEFAULT_ROUTE_CAPACITY: usize = 4096;

/// Gateway-internal metadata keys that never reach the wire (§6.4).
pub const INTERNAL_MARKERS: [&str; 4] = [
    "_relay_logical_platform",
    "_interim_send",
    "_stream_reply_to_message_id",
    "_notice_reply",
];

/// What the adapter learned about one chat from its inbound traffic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Route {
    /// Logical platform (never `relay`).
    pub platform: Option<String>,
    /// Tenant scope (guild, workspace).
    pub scope_id: Option<String>,
    /// Latest author.
    pub user_id: Option<String>,
    /// Chat type.
    pub chat_type: Option<String>,
    /// Multiplex profile.
    pub profile: Option<String>,
    /// Latest inbound message id (Slack status anchor).
    pub last_message_id: Option<String>,
}

/// A bounded least-recently-used map whose keys can be pinned: a pinned key
/// is never evicted. The capacity bounds the unpinned keys, so the map holds
/// at most its capacity plus the pinned keys. Touching a held key, pinning
/// and unpinning allocate nothing; eviction passes over a pinned key by
/// moving it to the back of the order, so each eviction is amortised O(log n).
#[derive(Debug, Clone)]
pub struct LruMap<V> {
    entries: KeyedMap<String, Slot<V>>,
    /// Every held key by recency tick; eviction pops the first unpinned one.
    order: BTreeMap<u64, String>,
    /// Held keys with at least one pin.
    pinned_held: usize,
    /// Pin counts of keys pinned before they were inserted (rare: a request
    /// to a chat the cache has not seen); taken over on insertion.
    early_pins: KeyedMap<String, u32>,
    tick: u64,
    capacity: usize,
}

#[derive(Debug, Clone)]
struct Slot<V> {
    value: V,
    tick: u64,
    pins: u32,
}

impl<V> LruMap<V> {
    /// An empty map holding at most `capacity` unpinned keys (at least one)
    /// besides the pinned ones.
    pub fn new(capacity: usize) -> LruMap<V> {
        LruMap {
            entries: KeyedMap::default(),
            order: BTreeMap::new(),
            pinned_held: 0,
            early_pins: KeyedMap::default(),
            tick: 0,
            capacity: capacity.max(1),
        }
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of distinct pinned keys (held or not).
    pub fn pinned(&self) -> usize {
        self.pinned_held + self.early_pins.len()
    }

    /// The value for `key` without touching its recency.
    pub fn peek(&self, key: &str) -> Option<&V> {
        self.entries.get(key).map(|slot| &slot.value)
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// Evicts the least recent unpinned key, passing pinned ones to the
    /// back; `None` when every held key is pinned.
    fn evict_one(&mut self) -> Option<String> {
        for _ in 0..self.order.len() {
            let (_, key) = self.order.pop_first()?;
            match self.entries.remove_entry(&key) {
                Some((held, mut slot)) if slot.pins > 0 => {
                    // Pinned: to the back of the order (keys moved, not copied).
                    self.tick += 1;
                    slot.tick = self.tick;
                    self.order.insert(self.tick, key);
                    self.entries.insert(held, slot);
                }
                _ => return Some(key),
            }
        }
        None
    }

    fn unpinned_held(&self) -> usize {
        self.entries.len() - self.pinned_held
    }

    /// The value for `key`, inserting `make()` when absent; marks it most
    /// recent and evicts the least recent unpinned key when over capacity.
    /// Returns the value (always `Some`; an `Option` only so that no path
    /// can panic) and the key evicted to make room, if any.
    pub fn entry_or_insert_with(
        &mut self,
        key: &str,
        make: impl FnOnce() -> V,
    ) -> (Option<&mut V>, Option<String>) {
        self.touch(key, make, false)
    }

    /// [`LruMap::entry_or_insert_with`], pinning the key once more when
    /// `pin` is set (one lookup for both).
    pub fn touch(
        &mut self,
        key: &str,
        make: impl FnOnce() -> V,
        pin: bool,
    ) -> (Option<&mut V>, Option<String>) {
        let now = self.next_tick();
        let mut evicted = None;
        match self.entries.get(key).map(|slot| slot.tick) {
            Some(old) => {
                if let Some(held) = self.order.remove(&old) {
                    self.order.insert(now, held);
                }
            }
            None => {
                let pins = if self.early_pins.is_empty() {
                    0
                } else {
                    self.early_pins.remove(key).unwrap_or(0)
                };
                if pins == 0 && self.unpinned_held() >= self.capacity {
                    evicted = self.evict_one();
                }
                if pins > 0 {
                    self.pinned_held += 1;
                }
                self.order.insert(now, key.to_owned());
                self.entries.insert(
                    key.to_owned(),
                    Slot {
                        value: make(),
                        tick: now,
                        pins,
                    },
                );
            }
        }
        let pinned_held = &mut self.pinned_held;
        let value = self.entries.get_mut(key).map(|slot| {
            slot.tick = now;
            if pin {
                slot.pins = slot.pins.saturating_add(1);
                if slot.pins == 1 {
                    *pinned_held += 1;
                }
            }
            &mut slot.value
        });
        (value, evicted)
    }

    /// Pins `key` once more; it is not evicted until every pin is released.
    pub fn pin(&mut self, key: &str) {
        match self.entries.get_mut(key) {
            Some(slot) => {
                slot.pins = slot.pins.saturating_add(1);
                if slot.pins == 1 {
                    self.pinned_held += 1;
                }
            }
            None => {
                let count = self.early_pins.entry(key.to_owned()).or_insert(0);
                *count = count.saturating_add(1);
            }
        }
    }

    /// Releases one pin of `key`. Once it has none, the map trims back to
    /// its capacity (it may have grown past it while the key was pinned);
    /// returns the keys evicted by that trim. The key keeps its place in
    /// the recency order (it was touched when captured).
    pub fn unpin(&mut self, key: &str) -> Vec<String> {
        let Some(slot) = self.entries.get_mut(key) else {
            if let Some(count) = self.early_pins.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    self.early_pins.remove(key);
                }
            }
            return Vec::new();
        };
        if slot.pins == 0 {
            return Vec::new();
        }
        slot.pins -= 1;
        if slot.pins > 0 {
            return Vec::new();
        }
        self.pinned_held -= 1;
        let mut evicted = Vec::new();
        while self.unpinned_held() > self.capacity {
            match self.evict_one() {
                Some(key) => evicted.push(key),
                None => break,
            }
        }
        evicted
    }

    /// Drops every entry; pins stay (their holders still release them).
    pub fn clear(&mut self) {
        for (key, slot) in self.entries.drain() {
            if slot.pins > 0 {
                self.early_pins.insert(key, slot.pins);
            }
        }
        self.order.clear();
        self.pinned_held = 0;
    }
}

/// Chats whose route was evicted, remembered by a 64-bit hash of the chat id
/// (a false match costs only a spurious warning), bounded and oldest-first.
#[derive(Debug, Clone)]
struct Forgotten {
    /// Keyed per cache, so a connector cannot choose colliding chat ids.
    keys: KeyedState,
    /// The hashes are already uniform: a cheap hasher is enough for them.
    hashes: rustc_hash::FxHashSet<u64>,
    order: std::collections::VecDeque<u64>,
    capacity: usize,
}

impl Forgotten {
    fn new(capacity: usize) -> Forgotten {
        Forgotten {
            keys: KeyedState::default(),
            hashes: rustc_hash::FxHashSet::default(),
            order: std::collections::VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    fn hash(&self, chat_id: &str) -> u64 {
        use std::hash::BuildHasher;
        self.keys.hash_one(chat_id)
    }

    fn insert(&mut self, chat_id: &str) {
        let hash = self.hash(chat_id);
        if !self.hashes.insert(hash) {
            return;
        }
        self.order.push_back(hash);
        if self.order.len() > self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.hashes.remove(&oldest);
        }
    }

    fn contains(&self, chat_id: &str) -> bool {
        !self.hashes.is_empty() && self.hashes.contains(&self.hash(chat_id))
    }
}

/// Per-chat routing memory.
#[derive(Debug, Clone)]
pub struct RoutingCache {
    routes: LruMap<Route>,
    /// Chats whose route was evicted (as many as the cache holds): a reply
    /// to one of them is a route miss, reported rather than sent silently
    /// unrouted.
    forgotten: Forgotten,
}

impl Default for RoutingCache {
    fn default() -> Self {
        RoutingCache::new(DEFAULT_ROUTE_CAPACITY)
    }
}

/// Sets a route field to `value`, reusing the held string: a chat's next
/// message mostly repeats what its route holds, and then nothing is
/// allocated.
fn assign(slot: &mut Option<String>, value: &str) {
    match slot {
        Some(held) if held == value => {}
        Some(held) => {
            held.clear();
            held.push_str(value);
        }
        None => *slot = Some(value.to_owned()),
    }
}

/// Longest chat id or routed value the cache keeps; no real platform id
/// comes close, and the bound keeps a hostile connector from filling memory
/// with 4,096 huge entries.
pub const MAX_ROUTE_VALUE_BYTES: usize = 512;

/// A non-empty value short enough to cache.
fn truthy(s: &Option<String>) -> Option<&String> {
    s.as_ref()
        .filter(|s| !s.is_empty() && s.len() <= MAX_ROUTE_VALUE_BYTES)
}

impl RoutingCache {
    /// A cache for at most `capacity` chats.
    pub fn new(capacity: usize) -> RoutingCache {
        RoutingCache {
            routes: LruMap::new(capacity),
            forgotten: Forgotten::new(capacity),
        }
    }

    /// Number of chats remembered.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Pins `chat_id`'s route (a delivery awaits its verdict, a request its
    /// result, or a caller its admission): it is not evicted until every pin
    /// is released. Chats without a route yet are pinned from capture on.
    pub fn pin(&mut self, chat_id: &str) {
        if !chat_id.is_empty() && chat_id.len() <= MAX_ROUTE_VALUE_BYTES {
            self.routes.pin(chat_id);
        }
    }

    /// Releases one pin of `chat_id` (see [`RoutingCache::pin`]).
    pub fn unpin(&mut self, chat_id: &str) {
        if !chat_id.is_empty() && chat_id.len() <= MAX_ROUTE_VALUE_BYTES {
            for chat in self.routes.unpin(chat_id) {
                self.forgotten.insert(&chat);
            }
        }
    }

    /// Chats pinned now (gauge).
    pub fn pinned(&self) -> usize {
        self.routes.pinned()
    }

    /// Whether `chat_id` had a route that was evicted and not relearned:
    /// an outbound action to it would go out without its routing keys.
    pub fn is_forgotten(&self, chat_id: &str) -> bool {
        self.get(chat_id).is_none() && self.forgotten.contains(chat_id)
    }

    /// What is known about `chat_id`.
    pub fn get(&self, chat_id: &str) -> Option<&Route> {
        self.routes.peek(chat_id)
    }

    /// The chat's learned platform.
    pub fn platform(&self, chat_id: &str) -> Option<&str> {
        self.get(chat_id).and_then(|r| r.platform.as_deref())
    }

    /// Learns from an inbound event (§6.3, newest rules). Events without a
    /// chat id teach nothing.
    pub fn capture(&mut self, event: &MessageEvent) {
        self.learn(event, false);
    }

    /// [`RoutingCache::capture`], then [`RoutingCache::pin`] the chat, in
    /// one lookup (a delivery pins its chat until the gateway's verdict).
    pub fn capture_pinned(&mut self, event: &MessageEvent) {
        self.learn(event, true);
    }

    fn learn(&mut self, event: &MessageEvent, pin: bool) {
        let src = &event.source;
        if src.chat_id.is_empty() || src.chat_id.len() > MAX_ROUTE_VALUE_BYTES {
            return;
        }
        let (route, evicted) = self.routes.touch(&src.chat_id, Route::default, pin);
        if let Some(chat) = evicted {
            self.forgotten.insert(&chat);
        }
        let Some(route) = route else {
            return;
        };
        if !src.platform.is_empty()
            && src.platform != crate::event::DEFAULT_PLATFORM
            && src.platform.len() <= MAX_ROUTE_VALUE_BYTES
        {
            assign(&mut route.platform, &src.platform);
        }
        if let Some(u) = truthy(&src.user_id) {
            assign(&mut route.user_id, u);
        }
        if let Some(s) = truthy(&src.scope_id) {
            assign(&mut route.scope_id, s);
        }
        if !src.chat_type.is_empty() && src.chat_type.len() <= MAX_ROUTE_VALUE_BYTES {
            assign(&mut route.chat_type, &src.chat_type);
        }
        if let Some(p) = truthy(&src.profile) {
            assign(&mut route.profile, p);
        }
        if let Some(m) = truthy(&event.message_id).or(truthy(&src.message_id)) {
            assign(&mut route.last_message_id, m);
        }
    }

    /// Seeds a chat's route explicitly (deliveries after a restart, §6.3
    /// step 4). Empty values are ignored; `relay` is not a platform.
    pub fn prime(
        &mut self,
        chat_id: &str,
        platform: &str,
        scope_id: Option<&str>,
        user_id: Option<&str>,
        profile: Option<&str>,
    ) {
        if chat_id.is_empty() {
            return;
        }
        let (route, evicted) = self.routes.entry_or_insert_with(chat_id, Route::default);
        if let Some(chat) = evicted {
            self.forgotten.insert(&chat);
        }
        let Some(route) = route else {
            return;
        };
        if !platform.is_empty() && platform != crate::event::DEFAULT_PLATFORM {
            route.platform = Some(platform.to_owned());
        }
        let set = |slot: &mut Option<String>, v: Option<&str>| {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                *slot = Some(v.to_owned());
            }
        };
        set(&mut route.scope_id, scope_id);
        set(&mut route.user_id, user_id);
        set(&mut route.profile, profile);
    }

    /// The wire metadata for an outbound action on `chat_id`: a copy of the
    /// caller's metadata without internal markers, with `scope_id`, `user_id`
    /// and `profile` filled from the cache where the caller's value is absent
    /// or falsy (§6.4). Never adds `guild_id`.
    pub fn reattach(&self, chat_id: &str, metadata: &Map<String, Value>) -> Map<String, Value> {
        let mut out = metadata.clone();
        strip_internal_markers(&mut out);
        if let Some(route) = self.get(chat_id) {
            for (key, cached) in [
                ("scope_id", &route.scope_id),
                ("user_id", &route.user_id),
                ("profile", &route.profile),
            ] {
                let caller_has = out.get(key).is_some_and(is_truthy);
                if !caller_has && let Some(v) = cached {
                    out.insert(key.to_owned(), Value::String(v.clone()));
                }
            }
        }
        out
    }
}

/// Removes the gateway-internal markers of §6.4 from wire metadata.
pub fn strip_internal_markers(metadata: &mut Map<String, Value>) {
    for k in INTERNAL_MARKERS {
        metadata.remove(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inbound(json: &str) -> MessageEvent {
        let mut e: MessageEvent = serde_json::from_str(json).expect("event");
        e.normalise();
        e
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn guild_reply_carries_scope_and_user() {
        let mut c = RoutingCache::default();
        c.capture(&inbound(
            r#"{"source":{"platform":"discord","chat_id":"chan1","scope_id":"guildA","user_id":"u1","chat_type":"group"}}"#,
        ));
        let m = c.reattach("chan1", &Map::new());
        assert_eq!(
            Value::Object(m),
            json!({"scope_id":"guildA","user_id":"u1"})
        );
        assert_eq!(c.platform("chan1"), Some("discord"));
    }

    #[test]
    fn dm_reply_carries_user_only() {
        let mut c = RoutingCache::default();
        c.capture(&inbound(
            r#"{"source":{"platform":"telegram","chat_id":"d1","user_id":"u9"}}"#,
        ));
        assert_eq!(
            Value::Object(c.reattach("d1", &Map::new())),
            json!({"user_id":"u9"})
        );
    }

    #[test]
    fn truthy_caller_values_win_and_falsy_ones_are_replaced() {
        let mut c = RoutingCache::default();
        c.capture(&inbound(
            r#"{"source":{"chat_id":"c","scope_id":"g","user_id":"u","profile":"p"}}"#,
        ));
        let caller = obj(json!({"scope_id":"mine","user_id":"","profile":null,"thread_id":"t"}));
        let m = c.reattach("c", &caller);
        assert_eq!(
            Value::Object(m),
            json!({"scope_id":"mine","user_id":"u","profile":"p","thread_id":"t"})
        );
        assert_eq!(caller["user_id"], "", "caller's map is not mutated");
    }

    #[test]
    fn markers_are_stripped_and_guild_id_never_added() {
        let mut c = RoutingCache::default();
        c.capture(&inbound(r#"{"source":{"chat_id":"c","guild_id":"g"}}"#));
        let with = obj(
            json!({"_relay_logical_platform":"discord","_interim_send":true,"_stream_reply_to_message_id":"m","_notice_reply":true,"k":1}),
        );
        let without = obj(json!({"k":1}));
        assert_eq!(c.reattach("c", &with), c.reattach("c", &without));
        assert_eq!(
            Value::Object(c.reattach("c", &without)),
            json!({"k":1,"scope_id":"g"})
        );
    }

    #[test]
    fn relay_is_not_a_platform_and_unknown_chats_get_nothing() {
        let mut c = RoutingCache::default();
        c.capture(&inbound(
            r#"{"source":{"platform":"relay","chat_id":"c","user_id":"u"}}"#,
        ));
        assert_eq!(c.platform("c"), None);
        assert!(c.reattach("other", &Map::new()).is_empty());
        c.capture(&inbound(r#"{"source":{"user_id":"u"}}"#));
        assert_eq!(c.len(), 1, "no chat id teaches nothing");
    }

    #[test]
    fn latest_values_win_and_last_message_id_tracks() {
        let mut c = RoutingCache::default();
        c.capture(&inbound(
            r#"{"message_id":"m1","source":{"chat_id":"c","user_id":"u1"}}"#,
        ));
        c.capture(&inbound(
            r#"{"message_id":"m2","source":{"chat_id":"c","user_id":"u2"}}"#,
        ));
        let r = c.get("c").expect("route");
        assert_eq!(r.user_id.as_deref(), Some("u2"));
        assert_eq!(r.last_message_id.as_deref(), Some("m2"));
    }

    #[test]
    fn prime_seeds_a_cold_cache() {
        let mut c = RoutingCache::default();
        c.prime("c", "discord", Some("g"), Some("u"), None);
        assert_eq!(c.platform("c"), Some("discord"));
        assert_eq!(
            Value::Object(c.reattach("c", &Map::new())),
            json!({"scope_id":"g","user_id":"u"})
        );
    }

    #[test]
    fn oversized_ids_are_not_cached() {
        let mut c = RoutingCache::default();
        let huge = "x".repeat(MAX_ROUTE_VALUE_BYTES + 1);
        let e = MessageEvent {
            source: crate::event::SessionSource {
                chat_id: huge.clone(),
                ..Default::default()
            },
            ..Default::default()
        };
        c.capture(&e);
        assert!(c.is_empty());
        let e = MessageEvent {
            source: crate::event::SessionSource {
                chat_id: "c".into(),
                user_id: Some(huge),
                scope_id: Some("g".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        c.capture(&e);
        let r = c.get("c").expect("route");
        assert_eq!(
            (r.user_id.as_deref(), r.scope_id.as_deref()),
            (None, Some("g"))
        );
    }

    #[test]
    fn cache_is_bounded_lru() {
        let mut c = RoutingCache::new(2);
        for chat in ["a", "b"] {
            c.prime(chat, "discord", None, Some("u"), None);
        }
        c.prime("a", "discord", None, None, None); // a is now most recent
        c.prime("c", "discord", None, None, None);
        assert_eq!(c.len(), 2);
        assert!(c.get("a").is_some());
        assert!(c.get("b").is_none(), "least recent evicted");
        assert!(c.get("c").is_some());
    }

    #[test]
    fn pinned_routes_are_never_evicted_and_the_overshoot_trims_on_release() {
        let mut c = RoutingCache::new(2);
        c.pin("a");
        c.prime("a", "discord", Some("g"), Some("u"), None);
        c.pin("b");
        c.prime("b", "discord", None, Some("u"), None);
        for chat in ["c", "d", "e"] {
            c.prime(chat, "discord", None, Some("u"), None);
        }
        assert!(c.get("a").is_some() && c.get("b").is_some(), "pinned kept");
        assert!(c.get("c").is_none(), "least recent unpinned evicted");
        assert!(c.get("d").is_some() && c.get("e").is_some());
        assert_eq!(c.len(), 4, "capacity (unpinned) + pinned routes");
        assert_eq!(c.pinned(), 2);
        c.unpin("a");
        assert_eq!(c.len(), 3, "unpinned trimmed back to capacity");
        assert!(
            c.get("a").is_some(),
            "passed to the back while it was pinned"
        );
        assert!(c.get("d").is_none() && c.get("e").is_some());
        assert!(c.is_forgotten("c") && c.is_forgotten("d"));
        assert!(!c.is_forgotten("zzz"), "never known is no miss");
    }

    #[test]
    fn a_pin_taken_before_capture_holds_from_capture_on_and_pins_count() {
        let mut c = RoutingCache::new(1);
        c.pin("x");
        c.pin("x");
        c.prime("x", "discord", None, Some("u"), None);
        c.prime("y", "discord", None, Some("u"), None);
        c.prime("z", "discord", None, Some("u"), None);
        assert!(c.get("x").is_some());
        c.unpin("x");
        c.prime("w", "discord", None, Some("u"), None);
        assert!(c.get("x").is_some(), "one pin still held");
        c.unpin("x");
        c.unpin("x"); // an extra release is ignored
        assert_eq!(c.pinned(), 0);
        // Released past the capacity: the least recent unpinned goes.
        assert_eq!(c.len(), 1);
        assert!(c.get("x").is_none() && c.is_forgotten("x"));
        c.prime("x", "discord", None, Some("u2"), None);
        assert!(!c.is_forgotten("x"), "relearned");
    }
}
