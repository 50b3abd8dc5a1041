//! Ordering of overlapping requests.
//!
//! Requests register their byte range in arrival order and wait for every earlier request
//! whose range overlaps. Both nodes register replicated writes in the same (wire) order, so
//! overlapping writes land in the same order on both disks. A flush registers the whole
//! device and therefore acts as a barrier.

use std::sync::{Arc, Mutex};
use tokio::sync::watch;

#[derive(Default)]
struct Inner {
    next: u64,
    active: Vec<(u64, u64, u64, watch::Receiver<()>)>,
}

/// Tracks in-flight ranges.
#[derive(Clone, Default)]
pub struct Conflicts {
    inner: Arc<Mutex<Inner>>,
}

/// Held while a request is in flight; dropping it releases later overlapping requests.
pub struct ConflictGuard {
    owner: Conflicts,
    id: u64,
    _tx: watch::Sender<()>,
}

/// Earlier overlapping requests to wait for.
pub struct Waits(Vec<watch::Receiver<()>>);

impl Waits {
    /// Wait until all of them completed.
    pub async fn wait(self) {
        for mut rx in self.0 {
            // Err means the sender (guard) is gone: that request finished.
            while rx.changed().await.is_ok() {}
        }
    }
}

impl Conflicts {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register `start..end`; returns the guard and what to wait for. Registration order is
    /// the order the caller holds; call it under whatever lock fixes the wire order.
    pub fn register(&self, start: u64, end: u64) -> (ConflictGuard, Waits) {
        let (tx, rx) = watch::channel(());
        let mut g = self.lock();
        let waits = g
            .active
            .iter()
            .filter(|(_, s, e, _)| *s < end && start < *e)
            .map(|(_, _, _, r)| r.clone())
            .collect();
        let id = g.next;
        g.next += 1;
        g.active.push((id, start, end, rx));
        (
            ConflictGuard {
                owner: self.clone(),
                id,
                _tx: tx,
            },
            Waits(waits),
        )
    }

    /// Number of registered requests.
    pub fn len(&self) -> usize {
        self.lock().active.len()
    }

    /// Whether nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for ConflictGuard {
    fn drop(&mut self) {
        let id = self.id;
        self.owner.lock().active.retain(|(i, ..)| *i != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn overlapping_waits_disjoint_does_not() {
        let c = Conflicts::default();
        let (g1, w1) = c.register(0, 4096);
        w1.wait().await;
        let (_g2, w2) = c.register(8192, 9000);
        tokio::time::timeout(Duration::from_millis(100), w2.wait())
            .await
            .unwrap();
        let (_g3, w3) = c.register(4000, 5000);
        let t = tokio::spawn(w3.wait());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!t.is_finished());
        drop(g1);
        tokio::time::timeout(Duration::from_millis(500), t)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c.len(), 2);
    }
}
