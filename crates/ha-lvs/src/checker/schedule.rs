//! Probe deadlines: a calendar of 1 ms buckets (an ordered map of small vectors), with lazy
//! cancellation. Time is a plain `Duration` since an arbitrary epoch so it is testable.
//!
//! Why buckets rather than one binary heap: with ten thousand probes a heap pop walks ~14
//! levels of a large array (cache misses on every probe run); here a run costs one push onto
//! a short vector and a lookup in a small map, and due probes leave a whole bucket at a time.

use std::collections::BTreeMap;

use super::idhash::IdMap;
use std::time::Duration;

use super::ProbeId;

/// Width of a bucket.
const BUCKET_NS: u128 = 1_000_000;

/// (due time, generation, probe).
type Entry = (Duration, u64, ProbeId);

/// Deadlines of probes. Each probe has at most one live entry.
#[derive(Debug, Default)]
pub struct Schedule {
    buckets: BTreeMap<u64, Vec<Entry>>,
    live: IdMap<ProbeId, u64>,
    generation: u64,
    /// Emptied bucket vectors, reused to save allocations.
    spare: Vec<Vec<Entry>>,
}

fn bucket(at: Duration) -> u64 {
    (at.as_nanos() / BUCKET_NS) as u64
}

impl Schedule {
    /// Empty schedule.
    pub fn new() -> Self {
        Self::default()
    }

    /// (Re)schedule `id` at `due`, replacing any earlier entry.
    pub fn insert(&mut self, id: ProbeId, due: Duration) {
        self.generation += 1;
        self.live.insert(id, self.generation);
        let spare = &mut self.spare;
        self.buckets
            .entry(bucket(due))
            .or_insert_with(|| spare.pop().unwrap_or_default())
            .push((due, self.generation, id));
    }

    /// Forget `id`.
    pub fn remove(&mut self, id: ProbeId) {
        self.live.remove(&id);
    }

    /// Number of scheduled probes.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// True when nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Earliest due time.
    pub fn next_due(&mut self) -> Option<Duration> {
        loop {
            let mut first = self.buckets.first_entry()?;
            let live = &self.live;
            first.get_mut().retain(|e| live.get(&e.2) == Some(&e.1));
            if let Some(d) = first.get().iter().map(|e| e.0).min() {
                return Some(d);
            }
            self.spare.push(first.remove());
        }
    }

    /// Remove and return every probe due at or before `now` (each leaves the schedule until
    /// re-inserted).
    pub fn pop_due(&mut self, now: Duration) -> Vec<ProbeId> {
        self.pop_due_at(now).into_iter().map(|(id, _)| id).collect()
    }

    /// Like [`Schedule::pop_due`], with the time each probe was due (in due order).
    pub fn pop_due_at(&mut self, now: Duration) -> Vec<(ProbeId, Duration)> {
        let mut due: Vec<Entry> = Vec::new();
        let last = bucket(now);
        while let Some(mut first) = self.buckets.first_entry() {
            if *first.key() > last {
                break;
            }
            if *first.key() < last {
                let mut v = first.remove();
                due.extend_from_slice(&v);
                v.clear();
                self.spare.push(v);
                continue;
            }
            // The bucket of `now`: part of it may be due later.
            let v = first.get_mut();
            due.extend(v.iter().filter(|e| e.0 <= now));
            v.retain(|e| e.0 > now);
            if v.is_empty() {
                self.spare.push(first.remove());
            }
            break;
        }
        let live = &self.live;
        due.retain(|e| live.get(&e.2) == Some(&e.1));
        due.sort_unstable();
        for e in &due {
            self.live.remove(&e.2);
        }
        due.into_iter().map(|(d, _, id)| (id, d)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_order_and_honours_reschedule_and_removal() {
        let mut s = Schedule::new();
        let ms = Duration::from_millis;
        s.insert(ProbeId(1), ms(30));
        s.insert(ProbeId(2), ms(10));
        s.insert(ProbeId(3), ms(20));
        s.insert(ProbeId(1), ms(5)); // moved earlier
        s.remove(ProbeId(3));
        assert_eq!(s.next_due(), Some(ms(5)));
        assert_eq!(s.pop_due(ms(10)), vec![ProbeId(1), ProbeId(2)]);
        assert!(s.pop_due(ms(100)).is_empty());
        assert!(s.is_empty());
    }

    #[test]
    fn matches_a_sorted_reference_across_buckets() {
        use proptest::prelude::*;
        proptest!(|(ops in proptest::collection::vec((0u64..20, 0u64..5_000_000, any::<bool>()), 1..200),
                    steps in proptest::collection::vec(0u64..2_000_000, 1..20))| {
            let mut s = Schedule::new();
            let mut reference: std::collections::BTreeMap<u64, Duration> = Default::default();
            for (id, at, remove) in ops {
                if remove {
                    s.remove(ProbeId(id));
                    reference.remove(&id);
                } else {
                    s.insert(ProbeId(id), Duration::from_nanos(at));
                    reference.insert(id, Duration::from_nanos(at));
                }
            }
            let mut now = Duration::ZERO;
            for step in steps {
                now += Duration::from_nanos(step);
                prop_assert_eq!(s.next_due(), reference.values().min().copied());
                let got = s.pop_due_at(now);
                let mut want: Vec<(ProbeId, Duration)> = reference
                    .iter()
                    .filter(|(_, d)| **d <= now)
                    .map(|(id, d)| (ProbeId(*id), *d))
                    .collect();
                want.sort_by_key(|(id, d)| (*d, id.0));
                let mut got_sorted = got.clone();
                got_sorted.sort_by_key(|(id, d)| (*d, id.0));
                prop_assert_eq!(&got_sorted, &want);
                // Returned in due order.
                prop_assert!(got.windows(2).all(|w| w[0].1 <= w[1].1));
                reference.retain(|_, d| *d > now);
                prop_assert_eq!(s.len(), reference.len());
            }
        });
    }
}
