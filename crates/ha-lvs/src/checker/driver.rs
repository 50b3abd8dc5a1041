//! The tokio driver: one task owns the [`Monitor`] and the [`Schedule`]; each due probe runs as
//! a lightweight task in a `JoinSet`; results go back into the monitor and its edits to a
//! [`TableSink`] (the kernel through [`IpvsClient`], or a [`MemoryTable`] in tests).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::probe::run_probe;
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
}

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
    for (id, key) in monitor.probes() {
        sched.insert(id, spread(id, key.spec.interval));
    }
    let mut running: JoinSet<(ProbeId, super::ProbeOutcome)> = JoinSet::new();
    let mut inflight: HashMap<ProbeId, Duration> = HashMap::new();
    loop {
        let now = epoch.elapsed();
        for id in sched.pop_due(now) {
            if let Some(key) = monitor.probe_key(id).cloned() {
                inflight.insert(id, now);
                running.spawn(async move { (id, run_probe(&key).await) });
            }
        }
        let wake = sched.next_due().map(|d| epoch + d);
        tokio::select! {
            Some(done) = running.join_next(), if !running.is_empty() => {
                let Ok((id, outcome)) = done else { continue };
                let Some(started) = inflight.remove(&id) else { continue };
                stats.probes.fetch_add(1, Relaxed);
                if matches!(outcome, super::ProbeOutcome::Down(_)) {
                    stats.failures.fetch_add(1, Relaxed);
                }
                let changes = monitor.on_result(id, outcome);
                stats.edits.fetch_add(changes.len() as u64, Relaxed);
                apply_logged(&mut sink, &changes);
                if let Some(key) = monitor.probe_key(id) {
                    // Keep the rate (next start one interval after this start) without overlap.
                    let next = (started + key.spec.interval).max(epoch.elapsed());
                    sched.insert(id, next);
                }
            }
            _ = async { if let Some(w) = wake { tokio::time::sleep_until(w).await } }, if wake.is_some() => {}
            msg = ctl.recv() => match msg {
                Some(Control::Reload(cfg, reply)) => {
                    let r = monitor.reconfigure(cfg);
                    apply_logged(&mut sink, &r.changes);
                    for id in &r.removed {
                        sched.remove(*id);
                        inflight.remove(id);
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
