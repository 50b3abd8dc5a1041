//! Probe deadlines: a min-heap of (due time, probe), O(log n) per probe run, with lazy
//! cancellation. Time is a plain `Duration` since an arbitrary epoch so it is testable.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::idhash::IdMap;
use std::time::Duration;

use super::ProbeId;

/// Deadlines of probes. Each probe has at most one live entry.
#[derive(Debug, Default)]
pub struct Schedule {
    heap: BinaryHeap<Reverse<(Duration, u64, ProbeId)>>,
    live: IdMap<ProbeId, u64>,
    generation: u64,
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
        self.heap.push(Reverse((due, self.generation, id)));
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

    fn drop_stale(&mut self) {
        while let Some(Reverse((_, g, id))) = self.heap.peek() {
            if self.live.get(id) == Some(g) {
                break;
            }
            self.heap.pop();
        }
    }

    /// Earliest due time.
    pub fn next_due(&mut self) -> Option<Duration> {
        self.drop_stale();
        self.heap.peek().map(|Reverse((d, _, _))| *d)
    }

    /// Remove and return every probe due at or before `now` (each leaves the schedule until
    /// re-inserted).
    pub fn pop_due(&mut self, now: Duration) -> Vec<ProbeId> {
        self.pop_due_at(now).into_iter().map(|(id, _)| id).collect()
    }

    /// Like [`Schedule::pop_due`], with the time each probe was due.
    pub fn pop_due_at(&mut self, now: Duration) -> Vec<(ProbeId, Duration)> {
        let mut out = Vec::new();
        loop {
            self.drop_stale();
            match self.heap.peek() {
                Some(Reverse((d, _, _))) if *d <= now => {
                    if let Some(Reverse((due, _, id))) = self.heap.pop() {
                        self.live.remove(&id);
                        out.push((id, due));
                    }
                }
                _ => break,
            }
        }
        out
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
}
