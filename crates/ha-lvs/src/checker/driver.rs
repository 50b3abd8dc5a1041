//! The tokio driver: one task owns the [`Monitor`] and the [`Schedule`]. Probes start on a
//! fixed grid per probe (first slot + k x interval), woken in batches on [`TICK`]s; a probe
//! whose previous run is still going skips the slot (counted in [`CheckerStats::skipped`]).
//! `tcp_syn` probes need no task at all: a tick's SYNs go out in one `sendmmsg`, replies come
//! back by sequence number, timeouts expire from tick buckets. Every other probe runs as a
//! lightweight task in a `JoinSet`. Results go back into the monitor and its edits to a
//! [`TableSink`] (the kernel through [`IpvsClient`], or a [`MemoryTable`] in tests).

use super::idhash::IdMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::probe::{ProbeContext, run_probe_in};
use super::{Monitor, MonitorConfig, ProbeId, Schedule};
use crate::error::{Error, KernelError, KernelErrorKind, Result};
use crate::model::{Table, VirtualService};
use crate::netlink::{IpvsClient, Request};
use crate::reconcile;

/// Where table edits go.
pub trait TableSink: Send + 'static {
    /// The current table.
    fn current(&mut self) -> Result<Table>;
    /// Apply edits in order.
    fn apply(&mut self, changes: &[Request]) -> Result<()>;
}

impl TableSink for IpvsClient {
    fn current(&mut self) -> Result<Table> {
        IpvsClient::current(self)
    }
    fn apply(&mut self, changes: &[Request]) -> Result<()> {
        IpvsClient::apply(self, changes)
    }
}

/// An in-memory IPVS table with the kernel's refusal rules, shareable for inspection.
#[derive(Debug, Clone, Default)]
pub struct MemoryTable {
    /// The table.
    pub table: Arc<Mutex<Table>>,
    /// Every request applied, in order.
    pub log: Arc<Mutex<Vec<Request>>>,
}

impl MemoryTable {
    /// Snapshot of the table.
    pub fn snapshot(&self) -> Table {
        self.table.lock().map(|t| t.clone()).unwrap_or_default()
    }

    fn apply_one(t: &mut Table, r: &Request) -> std::result::Result<(), KernelError> {
        let fail = |errno| {
            Err(KernelError {
                op: r.op(),
                object: r.object(),
                errno,
                kind: r.classify(errno),
            })
        };
        let find = |t: &mut Table, k| t.iter().position(|v: &VirtualService| v.service.key == k);
        match r {
            Request::NewService(s) => {
                if find(t, s.key).is_some() {
                    return fail(libc::EEXIST);
                }
                t.push(VirtualService {
                    service: s.clone(),
                    dests: Vec::new(),
                });
            }
            Request::SetService(s) => match find(t, s.key) {
                Some(i) => t[i].service = s.clone(),
                None => return fail(libc::ESRCH),
            },
            Request::DelService(k) => match find(t, *k) {
                Some(i) => {
                    t.remove(i);
                }
                None => return fail(libc::ESRCH),
            },
            Request::NewDest(k, d) | Request::SetDest(k, d) => {
                let Some(i) = find(t, *k) else {
                    return fail(libc::ESRCH);
                };
                let pos = t[i].dests.iter().position(|x| x.addr == d.addr);
                match (r, pos) {
                    (Request::NewDest(..), Some(_)) => return fail(libc::EEXIST),
                    (Request::NewDest(..), None) => t[i].dests.push(*d),
                    (_, Some(p)) => t[i].dests[p] = *d,
                    (_, None) => return fail(libc::ENOENT),
                }
            }
            Request::DelDest(k, a) => {
                let Some(i) = find(t, *k) else {
                    return fail(libc::ESRCH);
                };
                match t[i].dests.iter().position(|x| x.addr == *a) {
                    Some(p) => {
                        t[i].dests.remove(p);
                    }
                    None => return fail(libc::ENOENT),
                }
            }
            Request::Flush => t.clear(),
            _ => {}
        }
        Ok(())
    }
}

impl TableSink for MemoryTable {
    fn current(&mut self) -> Result<Table> {
        Ok(self.snapshot())
    }
    fn apply(&mut self, changes: &[Request]) -> Result<()> {
        let mut t = self
            .table
            .lock()
            .map_err(|_| Error::Check("memory table poisoned".into()))?;
        if let Ok(mut log) = self.log.lock() {
            log.extend_from_slice(changes);
        }
        let mut first = None;
        for r in changes {
            if let Err(e) = Self::apply_one(&mut t, r)
                && first.is_none()
            {
                first = Some(e);
            }
        }
        match first {
            Some(e) => Err(Error::Kernel(e)),
            None => Ok(()),
        }
    }
}

/// Counters of a running checker.
#[derive(Debug, Default)]
pub struct CheckerStats {
    /// Probe runs completed.
    pub probes: std::sync::atomic::AtomicU64,
    /// Of which failed.
    pub failures: std::sync::atomic::AtomicU64,
    /// Table edits applied.
    pub edits: std::sync::atomic::AtomicU64,
    /// Probe starts no later than [`on_time_tolerance`] after their slot. Every probe has a
    /// fixed grid of slots (first slot + k x interval).
    pub on_time: std::sync::atomic::AtomicU64,
    /// Probe starts later than that.
    pub late: std::sync::atomic::AtomicU64,
    /// Slots that passed without a start at all (the previous run of the probe was still going,
    /// or the driver fell a whole interval behind).
    pub skipped: std::sync::atomic::AtomicU64,
    /// Largest start delay after its slot seen, in microseconds.
    pub max_late_us: std::sync::atomic::AtomicU64,
}

/// How late after its slot a probe may start and still count as on time: a tenth of the
/// interval, at most 100 ms.
pub fn on_time_tolerance(interval: Duration) -> Duration {
    (interval / 10).min(Duration::from_millis(100))
}

/// Due probes are started in batches on ticks of this length: thousands of probes per second
/// cost a few hundred wake-ups, not one each.
pub const TICK: Duration = Duration::from_millis(5);

enum Control {
    Reload(MonitorConfig, tokio::sync::oneshot::Sender<usize>),
    Stop,
}

/// Handle of a running checker.
pub struct Checker {
    tx: mpsc::UnboundedSender<Control>,
    task: JoinHandle<Result<()>>,
    stats: Arc<CheckerStats>,
}

/// Start offset of a probe inside its interval, spread by a hash so that thousands of probes
/// with the same interval do not fire together.
fn spread(id: ProbeId, interval: Duration) -> Duration {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    let nanos = interval.as_nanos().max(1) as u64;
    Duration::from_nanos(h.finish() % nanos)
}

fn apply_logged<S: TableSink>(sink: &mut S, changes: &[Request]) {
    if changes.is_empty() {
        return;
    }
    if let Err(e) = sink.apply(changes) {
        // A refused edit (e.g. someone deleted the service by hand) must not stop checking.
        match &e {
            Error::Kernel(k) if k.kind == KernelErrorKind::AlreadyExists => {
                tracing::debug!(%e, "edit already in place")
            }
            _ => tracing::error!(%e, "applying health-check edits failed"),
        }
    }
}

impl Checker {
    /// Start checking (call from inside a tokio runtime). The services of the monitor are first
    /// brought to their desired state (services the monitor does not manage are left alone).
    /// Probes of one interval are spread over it so thousands of them do not fire together.
    pub fn spawn<S: TableSink>(monitor: Monitor, mut sink: S) -> Result<Checker> {
        let desired = monitor.desired_table();
        let current: Table = sink
            .current()?
            .into_iter()
            .filter(|v| desired.iter().any(|d| d.service.key == v.service.key))
            .collect();
        sink.apply(&reconcile::diff(&current, &desired))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(CheckerStats::default());
        let task = tokio::spawn(run(monitor, sink, rx, stats.clone()));
        Ok(Checker { tx, task, stats })
    }

    /// Live counters.
    pub fn stats(&self) -> &CheckerStats {
        &self.stats
    }

    /// Replace the configuration (autoreload); returns the number of table edits it caused.
    pub async fn reload(&self, config: MonitorConfig) -> Result<usize> {
        let (otx, orx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Control::Reload(config, otx))
            .map_err(|_| Error::Check("checker stopped".into()))?;
        orx.await
            .map_err(|_| Error::Check("checker stopped".into()))
    }

    /// Stop and wait for the driver task.
    pub async fn stop(self) -> Result<()> {
        let _ = self.tx.send(Control::Stop);
        self.task
            .await
            .map_err(|e| Error::Check(format!("checker task failed: {e}")))?
    }
}

async fn run<S: TableSink>(
    mut monitor: Monitor,
    mut sink: S,
    mut ctl: mpsc::UnboundedReceiver<Control>,
    stats: Arc<CheckerStats>,
) -> Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    let epoch = Instant::now();
    let mut sched = Schedule::new();
    let mut ctx = ProbeContext::default();
    let uses_syn = |keys: &[(ProbeId, super::ProbeKey)]| {
        keys.iter()
            .any(|(_, k)| k.spec.kind == super::CheckKind::TcpSyn)
    };
    // tcp_syn probes go out in batches without a task each; their replies are read on the
    // ticks (a polled prober: no reactor wake-up per reply).
    if uses_syn(&monitor.probes()) {
        ctx.ensure_syn_polled();
    }
    // tcp_syn probes in flight: their SYN's sequence number, and their deadlines.
    let mut syn_inflight: IdMap<ProbeId, u32> = IdMap::default();
    let mut syn_deadlines = SynDeadlines::default();
    let mut batch: Vec<(u64, std::net::SocketAddrV4)> = Vec::new();
    let mut batch_timeouts: Vec<Duration> = Vec::new();
    let mut verdicts = Vec::new();
    for (id, key) in monitor.probes() {
        sched.insert(id, spread(id, key.spec.interval));
    }
    let mut running: JoinSet<(ProbeId, super::ProbeOutcome)> = JoinSet::new();
    // Slot of each running probe's current start, and its interval (saves a monitor lookup
    // per finished probe: reloads remove dropped probes from here).
    let mut inflight: IdMap<ProbeId, (Duration, Duration)> = IdMap::default();
    let sleep = tokio::time::sleep_until(epoch + Duration::from_secs(86400 * 365));
    tokio::pin!(sleep);
    let mut armed: Option<Duration> = None;
    loop {
        let now = epoch.elapsed();
        for (id, slot) in sched.pop_due_at(now) {
            if let Some(key) = monitor.probe_key(id).cloned() {
                let late = now.saturating_sub(slot);
                if late <= on_time_tolerance(key.spec.interval) {
                    stats.on_time.fetch_add(1, Relaxed);
                } else {
                    stats.late.fetch_add(1, Relaxed);
                }
                stats
                    .max_late_us
                    .fetch_max(late.as_micros() as u64, Relaxed);
                inflight.insert(id, (slot, key.spec.interval));
                match (&key.spec.kind, key.target, ctx.syn()) {
                    (super::CheckKind::TcpSyn, std::net::SocketAddr::V4(t), Some(_)) => {
                        batch.push((id.0, t));
                        batch_timeouts.push(key.spec.timeout);
                    }
                    _ => {
                        let ctx = ctx.clone();
                        running.spawn(async move { (id, run_probe_in(&key, &ctx).await) });
                    }
                }
            }
        }
        if let Some(syn) = ctx.syn().filter(|_| !batch.is_empty()).cloned() {
            let sent = syn.send_batch(&batch);
            for ((&(token, _), sent), &timeout) in batch.iter().zip(sent).zip(&batch_timeouts) {
                let id = ProbeId(token);
                match sent {
                    Ok(seq) => {
                        syn_inflight.insert(id, seq);
                        syn_deadlines.insert(id, seq, now + timeout);
                    }
                    Err(e) => {
                        let target = monitor.probe_key(id).map(|k| k.target);
                        let why = format!("send SYN to {target:?}: {e}");
                        finish(
                            &mut monitor,
                            &mut sink,
                            &mut sched,
                            &mut inflight,
                            &stats,
                            epoch,
                            id,
                            super::ProbeOutcome::Down(why),
                        );
                    }
                }
            }
            batch.clear();
            batch_timeouts.clear();
        }
        // Replies queued since the last tick, and those to the SYNs just sent (on loopback and
        // fast links they are there when sendmmsg returns). Before the timeouts below, so a
        // reply read now is never expired.
        let syn_waiting = match ctx.syn() {
            Some(syn) if syn.has_pending() => {
                syn.receive_now(&mut verdicts);
                syn_settle(
                    &mut monitor,
                    &mut sink,
                    &mut sched,
                    &mut inflight,
                    &stats,
                    epoch,
                    &mut syn_inflight,
                    &mut verdicts,
                );
                syn.has_pending()
            }
            _ => false,
        };
        for (id, seq) in syn_deadlines.pop_due(epoch.elapsed()) {
            if syn_inflight.get(&id) == Some(&seq) {
                syn_inflight.remove(&id);
                if let Some(syn) = ctx.syn() {
                    syn.forget(seq);
                }
                let t = monitor
                    .probe_key(id)
                    .map(|k| k.spec.timeout)
                    .unwrap_or_default();
                let why = format!("no answer to SYN within {} ms", t.as_millis());
                finish(
                    &mut monitor,
                    &mut sink,
                    &mut sched,
                    &mut inflight,
                    &stats,
                    epoch,
                    id,
                    super::ProbeOutcome::Down(why),
                );
            }
        }
        // Wake on the tick boundary at or after the next slot.
        // While SYNs wait for replies, also the next tick: that is when they are read.
        let poll = syn_waiting.then(|| epoch.elapsed() + Duration::from_nanos(1));
        let wake = [sched.next_due(), syn_deadlines.next_due(), poll]
            .into_iter()
            .flatten()
            .min()
            .map(|d| {
                let t = TICK.as_nanos();
                Duration::from_nanos((d.as_nanos().div_ceil(t) * t) as u64)
            });
        if wake != armed {
            if let Some(w) = wake {
                sleep.as_mut().reset(epoch + w);
            }
            armed = wake;
        }
        tokio::select! {
            Some(done) = running.join_next(), if !running.is_empty() => {
                let mut next = Some(done);
                // Take every finished probe in one go.
                while let Some(done) = next.take() {
                    if let Ok((id, outcome)) = done {
                        finish(&mut monitor, &mut sink, &mut sched, &mut inflight, &stats, epoch, id, outcome);
                    }
                    next = running.try_join_next();
                }
            }
            _ = &mut sleep, if armed.is_some() => { armed = None; }
            msg = ctl.recv() => match msg {
                Some(Control::Reload(cfg, reply)) => {
                    let r = monitor.reconfigure(cfg);
                    apply_logged(&mut sink, &r.changes);
                    for id in &r.removed {
                        sched.remove(*id);
                        inflight.remove(id);
                        if let (Some(seq), Some(syn)) = (syn_inflight.remove(id), ctx.syn()) {
                            syn.forget(seq);
                        }
                    }
                    if uses_syn(&r.added) {
                        ctx.ensure_syn_polled();
                    }
                    let now = epoch.elapsed();
                    for (id, key) in &r.added {
                        sched.insert(*id, now + spread(*id, key.spec.interval));
                    }
                    let _ = reply.send(r.changes.len());
                }
                Some(Control::Stop) | None => break,
            },
        }
    }
    running.abort_all();
    Ok(())
}

/// Timeouts of tcp_syn probes in flight, bucketed by [`TICK`]: cheap to add, and nothing to
/// do when a probe is answered (its entry is skipped at expiry since its sequence number no
/// longer matches the one in flight).
#[derive(Default)]
struct SynDeadlines {
    buckets: std::collections::BTreeMap<u64, Vec<(ProbeId, u32)>>,
}

impl SynDeadlines {
    fn tick(at: Duration) -> u64 {
        at.as_nanos().div_ceil(TICK.as_nanos()) as u64
    }

    fn insert(&mut self, id: ProbeId, seq: u32, at: Duration) {
        self.buckets
            .entry(Self::tick(at))
            .or_default()
            .push((id, seq));
    }

    fn next_due(&self) -> Option<Duration> {
        let t = *self.buckets.keys().next()?;
        Some(Duration::from_nanos(
            t.saturating_mul(TICK.as_nanos() as u64),
        ))
    }

    fn pop_due(&mut self, now: Duration) -> Vec<(ProbeId, u32)> {
        let keep = self
            .buckets
            .split_off(&(now.as_nanos() as u64 / TICK.as_nanos() as u64 + 1));
        let due = std::mem::replace(&mut self.buckets, keep);
        due.into_values().flatten().collect()
    }
}

/// Settle tcp_syn probes from their verdicts (drains `verdicts`).
#[allow(clippy::too_many_arguments)]
fn syn_settle<S: TableSink>(
    monitor: &mut Monitor,
    sink: &mut S,
    sched: &mut Schedule,
    inflight: &mut IdMap<ProbeId, (Duration, Duration)>,
    stats: &CheckerStats,
    epoch: Instant,
    syn_inflight: &mut IdMap<ProbeId, u32>,
    verdicts: &mut Vec<super::synprobe::BatchResult>,
) {
    for (token, seq, verdict) in verdicts.drain(..) {
        let id = ProbeId(token);
        if syn_inflight.get(&id) != Some(&seq) {
            continue; // a reply after the probe timed out
        }
        syn_inflight.remove(&id);
        let outcome = match verdict {
            super::syn::Verdict::Open => super::ProbeOutcome::Up,
            super::syn::Verdict::Closed => {
                super::ProbeOutcome::Down("connection refused (RST in reply to SYN)".into())
            }
        };
        finish(monitor, sink, sched, inflight, stats, epoch, id, outcome);
    }
}

/// A probe finished: feed the monitor, apply its edits, schedule the next slot.
#[allow(clippy::too_many_arguments)]
fn finish<S: TableSink>(
    monitor: &mut Monitor,
    sink: &mut S,
    sched: &mut Schedule,
    inflight: &mut IdMap<ProbeId, (Duration, Duration)>,
    stats: &CheckerStats,
    epoch: Instant,
    id: ProbeId,
    outcome: super::ProbeOutcome,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let Some((slot, interval)) = inflight.remove(&id) else {
        return;
    };
    stats.probes.fetch_add(1, Relaxed);
    if matches!(outcome, super::ProbeOutcome::Down(_)) {
        stats.failures.fetch_add(1, Relaxed);
    }
    let changes = monitor.on_result(id, outcome);
    stats.edits.fetch_add(changes.len() as u64, Relaxed);
    apply_logged(sink, &changes);
    // Next slot on the grid; slots that already passed while this run was going are
    // skipped (never two runs of one probe at once), and counted.
    let (next, skipped) = next_slot(slot, epoch.elapsed(), interval);
    stats.skipped.fetch_add(skipped, Relaxed);
    sched.insert(id, next);
}

/// The next slot of a probe whose run of `slot` finished at `now`, and how many slots it
/// skips: those that can no longer start on time.
fn next_slot(slot: Duration, now: Duration, interval: Duration) -> (Duration, u64) {
    let iv = interval.max(Duration::from_millis(1));
    let tol = on_time_tolerance(iv);
    let next = slot + iv;
    if now <= next + tol {
        return (next, 0);
    }
    let mut behind = ((now - next).as_nanos() / iv.as_nanos()) as u32;
    if now - next - iv * behind > tol {
        behind += 1;
    }
    (next + iv * behind, u64::from(behind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_slot_keeps_the_grid_and_counts_skipped_slots() {
        let ms = Duration::from_millis;
        let s = ms(1000);
        // Finished within the interval: the next grid slot, nothing skipped.
        assert_eq!(next_slot(ms(0), ms(300), s), (s, 0));
        // Finished just inside the tolerance of the next slot: still startable on time.
        assert_eq!(next_slot(ms(0), ms(1090), s), (s, 0));
        // Past it: that slot is skipped, the one after is next.
        assert_eq!(next_slot(ms(0), ms(1150), s), (ms(2000), 1));
        // 3.05 intervals late: slots 1 and 2 skipped, slot 3 still on time.
        assert_eq!(next_slot(ms(0), ms(3050), s), (ms(3000), 2));
        assert_eq!(next_slot(ms(0), ms(3200), s), (ms(4000), 3));
        assert_eq!(on_time_tolerance(ms(200)), ms(20));
    }

    #[test]
    fn syn_deadlines_expire_by_tick() {
        let ms = Duration::from_millis;
        let mut d = SynDeadlines::default();
        d.insert(ProbeId(1), 10, ms(12));
        d.insert(ProbeId(2), 11, ms(3));
        d.insert(ProbeId(3), 12, ms(12));
        assert_eq!(d.next_due(), Some(ms(5)));
        assert!(d.pop_due(ms(4)).is_empty());
        assert_eq!(d.pop_due(ms(5)), vec![(ProbeId(2), 11)]);
        assert_eq!(d.next_due(), Some(ms(15)));
        assert_eq!(d.pop_due(ms(100)), vec![(ProbeId(1), 10), (ProbeId(3), 12)]);
        assert_eq!(d.next_due(), None);
    }
}
