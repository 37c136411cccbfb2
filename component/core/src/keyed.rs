//! Hash maps keyed by strings the connector chooses (chat ids, dedupe keys,
//! platform names, label keys).
//!
//! Such keys need a keyed hash, or a connector could pick ids that collide
//! and turn every lookup into a scan. std's SipHash is keyed but slow on the
//! short strings these maps hold: it was about a tenth of the guest's time
//! per message (docs/benchmarks.md, round four). foldhash's quality variant,
//! seeded from the same random source std's maps use, keeps the keying at a
//! fraction of the cost. Maps keyed by ids the machine generates itself use
//! `rustc_hash` (no key needed).

use std::collections::hash_map::RandomState as StdRandomState;
use std::hash::BuildHasher;
use std::sync::OnceLock;

use foldhash::SharedSeed;
use foldhash::quality::SeedableRandomState;

/// A `HashMap` keyed by strings from the wire.
pub type KeyedMap<K, V> = std::collections::HashMap<K, V, KeyedState>;

/// A `HashSet` of strings from the wire.
pub type KeyedSet<K> = std::collections::HashSet<K, KeyedState>;

/// The hasher builder of [`KeyedMap`] and [`KeyedSet`]: a random seed per
/// map over a random seed per process, both drawn from std's own source
/// (the operating system's, or WASI's `random` in the guest). Drawn when a
/// map is made, never per message.
#[derive(Clone, Debug)]
pub struct KeyedState(SeedableRandomState);

impl Default for KeyedState {
    fn default() -> Self {
        static SHARED: OnceLock<SharedSeed> = OnceLock::new();
        let shared = SHARED.get_or_init(|| SharedSeed::from_u64(random_u64()));
        KeyedState(SeedableRandomState::with_seed(random_u64(), shared))
    }
}

impl BuildHasher for KeyedState {
    type Hasher = <SeedableRandomState as BuildHasher>::Hasher;

    #[inline]
    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

/// 64 random bits: std's `RandomState` is keyed from the system's random
/// source once per thread and steps its key on every `new`, so hashing a
/// constant under a fresh one gives an unpredictable, non-repeating value.
fn random_u64() -> u64 {
    StdRandomState::new().hash_one(0x5eed_u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_are_seeded_apart() {
        let a = KeyedState::default();
        let b = KeyedState::default();
        assert_ne!(a.hash_one("chat-1"), b.hash_one("chat-1"));
        assert_eq!(a.hash_one("chat-1"), a.hash_one("chat-1"));
    }

    #[test]
    fn a_keyed_map_behaves_as_a_map() {
        let mut map: KeyedMap<String, u32> = KeyedMap::default();
        for i in 0..1000 {
            map.insert(format!("chat-{i}"), i);
        }
        assert_eq!(map.len(), 1000);
        assert_eq!(map.get("chat-417"), Some(&417));
        assert_eq!(map.remove("chat-3"), Some(3));
        assert!(!map.contains_key("chat-3"));
    }
}
