//! RAM-backed device with crash simulation.
//!
//! Two images are kept: `current` (what reads see) and `durable` (what survives a power cut).
//! `flush` copies the 4 KiB blocks written since the last flush from one to the other.
//! [`MemDevice::crash_after`] arms a budget of mutating operations (writes and flushes); when it
//! runs out the device cuts power (drops unflushed writes) and fails every call with
//! [`Error::PowerCut`] until [`MemDevice::revive`]. Crash tests step the budget through 0, 1,
//! 2, ... to cut power at every point of an update sequence.

use super::{BlockDevice, check_range};
use crate::error::{Error, Result};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const BLOCK: u64 = 4096;

struct Inner {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// 4 KiB blocks written since the last flush.
    dirty: BTreeSet<u64>,
    /// Remaining mutating operations before a power cut, if armed.
    budget: Option<usize>,
    dead: bool,
    write_delay: Duration,
}

/// A RAM-backed [`BlockDevice`] for tests.
pub struct MemDevice {
    inner: Mutex<Inner>,
    size: u64,
    writes: AtomicU64,
    flushes: AtomicU64,
}

impl MemDevice {
    /// A zero-filled device of `size` bytes.
    pub fn new(size: u64) -> Self {
        MemDevice {
            inner: Mutex::new(Inner {
                current: vec![0; size as usize],
                durable: vec![0; size as usize],
                dirty: BTreeSet::new(),
                budget: None,
                dead: false,
                write_delay: Duration::ZERO,
            }),
            size,
            writes: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means a test panicked elsewhere; the data is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drop every write not yet flushed, as a power failure would.
    pub fn power_cut(&self) {
        let mut g = self.lock();
        power_cut_locked(&mut g);
    }

    /// Cut power after `ops` more writes/flushes (0 = at the next one).
    pub fn crash_after(&self, ops: usize) {
        self.lock().budget = Some(ops);
    }

    /// Power back on after a cut: the device serves requests again (with durable contents).
    pub fn revive(&self) {
        let mut g = self.lock();
        g.dead = false;
        g.budget = None;
    }

    /// Whether a power cut armed by [`MemDevice::crash_after`] has happened.
    pub fn is_dead(&self) -> bool {
        self.lock().dead
    }

    /// Delay every write by `d` (simulates a slow disk).
    pub fn set_write_delay(&self, d: Duration) {
        self.lock().write_delay = d;
    }

    /// Number of writes served so far.
    pub fn write_count(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Number of flushes served so far.
    pub fn flush_count(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// Copy of the whole current contents.
    pub fn snapshot(&self) -> Vec<u8> {
        self.lock().current.clone()
    }

    /// Account one mutating operation; `Err` if power is (now) gone.
    fn spend(g: &mut Inner) -> Result<()> {
        if g.dead {
            return Err(Error::PowerCut);
        }
        if let Some(b) = g.budget {
            if b == 0 {
                power_cut_locked(g);
                g.dead = true;
                return Err(Error::PowerCut);
            }
            g.budget = Some(b - 1);
        }
        Ok(())
    }
}

fn power_cut_locked(g: &mut Inner) {
    let dirty = std::mem::take(&mut g.dirty);
    for b in dirty {
        let s = (b * BLOCK) as usize;
        let e = (s + BLOCK as usize).min(g.current.len());
        let (cur, dur) = (&mut g.current, &g.durable);
        cur[s..e].copy_from_slice(&dur[s..e]);
    }
}

fn persist(g: &mut Inner, blocks: impl IntoIterator<Item = u64>) {
    for b in blocks {
        let s = (b * BLOCK) as usize;
        let e = (s + BLOCK as usize).min(g.current.len());
        let (cur, dur) = (&g.current, &mut g.durable);
        dur[s..e].copy_from_slice(&cur[s..e]);
    }
}

#[async_trait]
impl BlockDevice for MemDevice {
    fn size(&self) -> u64 {
        self.size
    }

    async fn read(&self, offset: u64, len: usize) -> Result<Bytes> {
        check_range(offset, len as u64, self.size)?;
        let g = self.lock();
        if g.dead {
            return Err(Error::PowerCut);
        }
        Ok(Bytes::copy_from_slice(
            &g.current[offset as usize..offset as usize + len],
        ))
    }

    async fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<()> {
        check_range(offset, data.len() as u64, self.size)?;
        let delay = self.lock().write_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut g = self.lock();
        Self::spend(&mut g)?;
        let s = offset as usize;
        g.current[s..s + data.len()].copy_from_slice(data);
        if data.is_empty() {
            return Ok(());
        }
        let first = offset / BLOCK;
        let last = (offset + data.len() as u64 - 1) / BLOCK;
        if fua {
            persist(&mut g, first..=last);
        } else {
            g.dirty.extend(first..=last);
        }
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn flush(&self) -> Result<()> {
        let mut g = self.lock();
        Self::spend(&mut g)?;
        let dirty = std::mem::take(&mut g.dirty);
        persist(&mut g, dirty);
        self.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn power_cut_drops_unflushed() {
        let d = MemDevice::new(65536);
        d.write(0, &[1; 4096], false).await.unwrap();
        d.flush().await.unwrap();
        d.write(0, &[2; 100], false).await.unwrap();
        d.write(8192, &[3; 4096], true).await.unwrap();
        d.power_cut();
        let r = d.read(0, 4096).await.unwrap();
        assert!(r.iter().all(|&b| b == 1));
        assert!(d.read(8192, 4096).await.unwrap().iter().all(|&b| b == 3));
    }

    #[tokio::test]
    async fn crash_after_budget() {
        let d = MemDevice::new(65536);
        d.crash_after(1);
        d.write(0, &[1; 4096], false).await.unwrap();
        assert!(matches!(d.flush().await, Err(Error::PowerCut)));
        assert!(d.is_dead());
        assert!(d.read(0, 1).await.is_err());
        d.revive();
        assert_eq!(d.read(0, 1).await.unwrap()[0], 0);
    }
}
