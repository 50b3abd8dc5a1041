//! Deadlines by slot: a calendar of 1 ms buckets (an ordered map of small vectors). Entries
//! name a slot of the caller's dense probe table and carry a tag (a generation or a sequence
//! number); cancelling is the caller's business: it compares the tag with the slot's current
//! one when the entry comes due and skips stale entries. Time is a plain `Duration` since an
//! arbitrary epoch so it is testable.
//!
//! Why buckets rather than a binary heap, and why no map of live entries: with ten thousand
//! probes a run costs one push onto a short vector and a lookup in a small map, due probes
//! leave a whole bucket at a time, and nothing per probe is hashed (every hash lookup into a
//! table of ten thousand entries is a likely cache miss).

use std::collections::BTreeMap;
use std::time::Duration;

/// Width of a bucket.
const BUCKET_NS: u128 = 1_000_000;

/// An entry of the calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Due {
    /// When it is due.
    pub at: Duration,
    /// Slot in the caller's table.
    pub slot: u32,
    /// The caller's tag, to tell a current entry from a stale one.
    pub tag: u32,
}

/// Deadlines of slots. A slot may have several entries; the caller tells stale ones by tag.
#[derive(Debug, Default)]
pub struct Schedule {
    buckets: BTreeMap<u64, Vec<Due>>,
    /// Emptied bucket vectors, reused to save allocations.
    spare: Vec<Vec<Due>>,
    len: usize,
}

fn bucket(at: Duration) -> u64 {
    (at.as_nanos() / BUCKET_NS) as u64
}

impl Schedule {
    /// Empty schedule.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add an entry for `slot` with `tag`, due at `at`.
    pub fn insert(&mut self, slot: u32, tag: u32, at: Duration) {
        let spare = &mut self.spare;
        self.buckets
            .entry(bucket(at))
            .or_insert_with(|| spare.pop().unwrap_or_default())
            .push(Due { at, slot, tag });
        self.len += 1;
    }

    /// Number of entries, stale ones included.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there is no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Earliest due time of any entry (a stale entry costs at most one early wake-up).
    pub fn next_due(&self) -> Option<Duration> {
        let (_, v) = self.buckets.first_key_value()?;
        v.iter().map(|e| e.at).min()
    }

    /// Move every entry due at or before `now` to `out` (appended in due order).
    pub fn pop_due(&mut self, now: Duration, out: &mut Vec<Due>) {
        let start = out.len();
        let last = bucket(now);
        while let Some(mut first) = self.buckets.first_entry() {
            if *first.key() > last {
                break;
            }
            if *first.key() < last {
                let mut v = first.remove();
                out.extend_from_slice(&v);
                v.clear();
                self.spare.push(v);
                continue;
            }
            // The bucket of `now`: part of it may be due later.
            let v = first.get_mut();
            out.extend(v.iter().filter(|e| e.at <= now));
            v.retain(|e| e.at > now);
            if v.is_empty() {
                self.spare.push(first.remove());
            }
            break;
        }
        self.len -= out.len() - start;
        out[start..].sort_unstable();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_order_and_leaves_later_entries() {
        let mut s = Schedule::new();
        let ms = Duration::from_millis;
        s.insert(1, 0, ms(30));
        s.insert(2, 0, ms(10));
        s.insert(3, 7, Duration::from_micros(10_500));
        s.insert(1, 1, ms(5));
        assert_eq!(s.next_due(), Some(ms(5)));
        let mut out = Vec::new();
        s.pop_due(ms(10), &mut out);
        let got: Vec<(u32, u32)> = out.iter().map(|d| (d.slot, d.tag)).collect();
        assert_eq!(got, vec![(1, 1), (2, 0)]);
        assert_eq!(s.len(), 2);
        assert_eq!(s.next_due(), Some(Duration::from_micros(10_500)));
        out.clear();
        s.pop_due(ms(100), &mut out);
        assert_eq!(out.len(), 2);
        assert!(s.is_empty());
        assert_eq!(s.next_due(), None);
    }

    #[test]
    fn matches_a_sorted_reference_across_buckets() {
        use proptest::prelude::*;
        proptest!(|(ops in proptest::collection::vec((0u32..20, 0u64..5_000_000), 1..200),
                    steps in proptest::collection::vec(0u64..2_000_000, 1..20))| {
            let mut s = Schedule::new();
            let mut reference: Vec<Due> = Vec::new();
            for (i, (slot, at)) in ops.into_iter().enumerate() {
                let d = Due { at: Duration::from_nanos(at), slot, tag: i as u32 };
                s.insert(d.slot, d.tag, d.at);
                reference.push(d);
            }
            let mut now = Duration::ZERO;
            for step in steps {
                now += Duration::from_nanos(step);
                prop_assert_eq!(s.next_due(), reference.iter().map(|d| d.at).min());
                let mut got = Vec::new();
                s.pop_due(now, &mut got);
                let mut want: Vec<Due> = reference.iter().filter(|d| d.at <= now).copied().collect();
                want.sort_unstable();
                prop_assert_eq!(&got, &want);
                reference.retain(|d| d.at > now);
                prop_assert_eq!(s.len(), reference.len());
            }
        });
    }
}
