//! A cheap hasher for integer keys the checker assigns itself (probe ids, SYN sequence
//! numbers, destination addresses from the configuration): one multiply per word instead of
//! SipHash, which at 10,000 probes per second is a measurable share of the checker's CPU.
//! Not for keys a remote party chooses.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Multiplier of the Fx hash (rustc's), an odd constant with well-mixed high bits.
const K: u64 = 0x517c_c1b7_2722_0a95;

/// Fx-style hasher.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.add(u64::from(*b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
}

/// A HashMap keyed by our own integers.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_spread_over_buckets() {
        use std::hash::BuildHasher;
        let b = BuildHasherDefault::<IdHasher>::default();
        // Low bits (bucket index) and top 7 bits (hashbrown's tag) both vary.
        let low: std::collections::HashSet<u64> =
            (0..1024u64).map(|i| b.hash_one(i) & 1023).collect();
        let top: std::collections::HashSet<u64> =
            (0..1024u64).map(|i| b.hash_one(i) >> 57).collect();
        assert_eq!(low.len(), 1024);
        assert!(top.len() > 100, "{}", top.len());
        let mut m: IdMap<u32, u32> = IdMap::default();
        m.insert(7, 1);
        assert_eq!(m.get(&7), Some(&1));
    }
}
