//! Small bounded collections the machine relies on to keep memory flat.

use std::collections::VecDeque;

use crate::keyed::KeyedSet;

/// An insertion-ordered set that forgets its oldest key past `capacity`.
#[derive(Debug, Clone)]
pub struct BoundedSet {
    keys: KeyedSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl BoundedSet {
    /// An empty set holding at most `capacity` keys (at least one).
    pub fn new(capacity: usize) -> BoundedSet {
        BoundedSet {
            keys: KeyedSet::default(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Whether `key` is remembered.
    pub fn contains(&self, key: &str) -> bool {
        self.keys.contains(key)
    }

    /// Remembers `key`, evicting the oldest when full. Re-inserting a known
    /// key keeps its original position.
    pub fn insert(&mut self, key: String) {
        if self.keys.contains(&key) {
            return;
        }
        if self.keys.len() >= self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.keys.remove(&oldest);
        }
        self.keys.insert(key.clone());
        self.order.push_back(key);
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// SplitMix64: a tiny deterministic generator seeded by the host, so the
/// machine has no entropy of its own and simulations replay from a seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform float in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A fresh 32-lowercase-hex request id (§1.6).
    pub fn request_id(&mut self) -> String {
        // By hand rather than `format!`: one exact allocation per outbound
        // command, no formatting machinery on the send path.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut id = String::with_capacity(32);
        for word in [self.next_u64(), self.next_u64()] {
            for shift in (0..16).rev() {
                id.push(char::from(HEX[((word >> (shift * 4)) & 0xf) as usize]));
            }
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_32_lowercase_hex_of_two_draws() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let id = a.request_id();
        assert_eq!(id, format!("{:016x}{:016x}", b.next_u64(), b.next_u64()));
        assert_eq!(id.len(), 32);
        assert!(
            id.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(id, a.request_id());
    }

    #[test]
    fn bounded_set_evicts_oldest() {
        let mut s = BoundedSet::new(2);
        s.insert("a".into());
        s.insert("b".into());
        s.insert("a".into());
        s.insert("c".into());
        assert!(!s.contains("a") && s.contains("b") && s.contains("c"));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn request_ids_are_32_hex_and_distinct() {
        let mut r = Rng::new(7);
        let a = r.request_id();
        let b = r.request_id();
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
        let f = r.next_f64();
        assert!((0.0..1.0).contains(&f));
    }
}
