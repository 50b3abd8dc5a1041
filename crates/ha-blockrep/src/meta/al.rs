//! Activity log: the set of "hot" 4 MiB extents that may have writes in flight.
//!
//! Before a Primary writes into an extent, the extent must be recorded in the on-disk activity
//! log. After a Primary crash, only the extents in the log can differ from the peer, so only
//! they are resynced (instead of the whole device). Evicting an extent requires its bitmap
//! bits to be on disk first, so nothing dirty is ever forgotten.
//!
//! This module is sans-IO: [`ActivityLog`] decides, [`AlSnapshot`] encodes a log slot.

use std::collections::HashMap;

/// Bytes covered by one activity log extent.
pub const AL_EXTENT_SIZE: u64 = 4 << 20;
/// DRBD's default number of extents.
pub const DEFAULT_AL_EXTENTS: u32 = 1237;
const AL_MAGIC: u32 = 0x414c_3031; // "AL01"

/// The extents touched by the byte range `offset..offset+len`.
pub fn extents_for(offset: u64, len: u64) -> std::ops::Range<u32> {
    if len == 0 {
        return 0..0;
    }
    let s = offset / AL_EXTENT_SIZE;
    let e = offset.saturating_add(len).div_ceil(AL_EXTENT_SIZE);
    s as u32..e as u32
}

/// Bytes needed for one on-disk log slot with `capacity` extents (4 KiB multiple).
pub fn slot_size(capacity: u32) -> u64 {
    (16 + 4 * u64::from(capacity) + 4).div_ceil(4096) * 4096
}

/// What the caller must do before the writes may proceed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlPlan {
    /// Extents that become active (a log transaction is needed if non-empty).
    pub added: Vec<u32>,
    /// Extents evicted to make room: write their bitmap pages out before committing.
    pub evicted: Vec<u32>,
}

impl AlPlan {
    /// Whether an on-disk transaction is required.
    pub fn needs_commit(&self) -> bool {
        !self.added.is_empty() || !self.evicted.is_empty()
    }
}

/// The in-memory activity log (LRU with in-flight reference counts).
#[derive(Clone, Debug)]
pub struct ActivityLog {
    capacity: usize,
    /// extent -> (last use tick, in-flight count)
    active: HashMap<u32, (u64, u32)>,
    tick: u64,
}

impl ActivityLog {
    /// An empty log holding up to `capacity` extents.
    pub fn new(capacity: u32) -> Self {
        ActivityLog {
            capacity: capacity.max(1) as usize,
            active: HashMap::new(),
            tick: 0,
        }
    }

    /// A log pre-filled with `extents` (from disk).
    pub fn with_extents(capacity: u32, extents: &[u32]) -> Self {
        let mut al = Self::new(capacity);
        for &e in extents {
            al.tick += 1;
            al.active.insert(e, (al.tick, 0));
        }
        al
    }

    /// Active extents, sorted.
    pub fn extents(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.active.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Whether `e` is active.
    pub fn contains(&self, e: u32) -> bool {
        self.active.contains_key(&e)
    }

    /// Plan activating `extents` for a write. `None` if the log is too small to hold them now
    /// (every other extent has writes in flight): retry after some complete.
    pub fn plan(&self, extents: std::ops::Range<u32>) -> Option<AlPlan> {
        let added: Vec<u32> = extents.clone().filter(|e| !self.contains(*e)).collect();
        let overflow = (self.active.len() + added.len()).saturating_sub(self.capacity);
        let mut idle: Vec<(u64, u32)> = self
            .active
            .iter()
            .filter(|(e, (_, refs))| *refs == 0 && !extents.contains(e))
            .map(|(e, (t, _))| (*t, *e))
            .collect();
        if idle.len() < overflow {
            return None;
        }
        idle.sort_unstable();
        let evicted = idle.into_iter().take(overflow).map(|(_, e)| e).collect();
        Some(AlPlan { added, evicted })
    }

    /// Apply a plan (after its transaction is durable) and take a reference on the extents.
    pub fn apply_and_ref(&mut self, plan: &AlPlan, extents: std::ops::Range<u32>) {
        for e in &plan.evicted {
            self.active.remove(e);
        }
        for e in extents {
            self.tick += 1;
            let t = self.tick;
            let ent = self.active.entry(e).or_insert((t, 0));
            ent.0 = t;
            ent.1 += 1;
        }
    }

    /// The extents after `plan` would be applied (what the transaction must record).
    pub fn extents_after(&self, plan: &AlPlan) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .active
            .keys()
            .filter(|e| !plan.evicted.contains(e))
            .copied()
            .chain(plan.added.iter().copied())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Drop the in-flight reference taken by [`ActivityLog::apply_and_ref`].
    pub fn unref(&mut self, extents: std::ops::Range<u32>) {
        for e in extents {
            if let Some(ent) = self.active.get_mut(&e) {
                ent.1 = ent.1.saturating_sub(1);
            }
        }
    }

    /// Whether any write is in flight.
    pub fn busy(&self) -> bool {
        self.active.values().any(|(_, r)| *r > 0)
    }

    /// Forget every idle extent (after a full bitmap write-out, e.g. clean demote).
    pub fn clear_idle(&mut self) {
        self.active.retain(|_, (_, r)| *r > 0);
    }
}

/// One on-disk activity log slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlSnapshot {
    /// Transaction sequence (the newer valid slot wins).
    pub seq: u64,
    /// Active extents.
    pub extents: Vec<u32>,
}

impl AlSnapshot {
    /// Encode into a slot of `slot_size(capacity)` bytes; `None` if there are too many extents.
    pub fn encode(&self, capacity: u32) -> Option<Vec<u8>> {
        if self.extents.len() > capacity as usize {
            return None;
        }
        let size = slot_size(capacity) as usize;
        let mut b = vec![0u8; size];
        b[0..4].copy_from_slice(&AL_MAGIC.to_le_bytes());
        b[4..12].copy_from_slice(&self.seq.to_le_bytes());
        b[12..16].copy_from_slice(&(self.extents.len() as u32).to_le_bytes());
        for (i, e) in self.extents.iter().enumerate() {
            b[16 + 4 * i..20 + 4 * i].copy_from_slice(&e.to_le_bytes());
        }
        let crc = crc32c::crc32c(&b[..size - 4]);
        b[size - 4..].copy_from_slice(&crc.to_le_bytes());
        Some(b)
    }

    /// Decode a slot; `None` if empty, torn or corrupt.
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < 24 || !b.len().is_multiple_of(4) {
            return None;
        }
        let n = b.len();
        let word = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        if word(0) != AL_MAGIC || crc32c::crc32c(&b[..n - 4]) != word(n - 4) {
            return None;
        }
        let mut s = [0u8; 8];
        s.copy_from_slice(&b[4..12]);
        let count = word(12) as usize;
        if 16 + 4 * count > n - 4 {
            return None;
        }
        Some(AlSnapshot {
            seq: u64::from_le_bytes(s),
            extents: (0..count).map(|i| word(16 + 4 * i)).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn snapshot_roundtrip(seq: u64, extents in proptest::collection::vec(any::<u32>(), 0..64)) {
            let s = AlSnapshot { seq, extents };
            let b = s.encode(64).unwrap();
            prop_assert_eq!(b.len() as u64, slot_size(64));
            prop_assert_eq!(AlSnapshot::decode(&b), Some(s));
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..9000)) {
            let _ = AlSnapshot::decode(&data);
        }

        #[test]
        fn lru_never_exceeds_capacity(cap in 1u32..8, writes in proptest::collection::vec(0u32..20, 1..100)) {
            let mut al = ActivityLog::new(cap);
            for e in writes {
                let plan = al.plan(e..e + 1).unwrap();
                let after = al.extents_after(&plan);
                al.apply_and_ref(&plan, e..e + 1);
                al.unref(e..e + 1);
                prop_assert_eq!(al.extents(), after);
                prop_assert!(al.extents().len() <= cap as usize);
                prop_assert!(al.contains(e));
            }
        }
    }

    #[test]
    fn busy_extents_are_not_evicted() {
        let mut al = ActivityLog::new(2);
        let p = al.plan(0..2).unwrap();
        al.apply_and_ref(&p, 0..2);
        assert!(al.plan(5..6).is_none());
        al.unref(0..1);
        assert_eq!(al.plan(5..6).unwrap().evicted, vec![0]);
        assert_eq!(extents_for(AL_EXTENT_SIZE - 1, 2), 0..2);
    }
}
