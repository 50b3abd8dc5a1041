//! The tokio driver: one task owns the [`Monitor`] and the [`Schedule`]. Probes start on a
//! fixed grid per probe (first slot + k x interval), woken in batches on [`TICK`]s; a probe
//! whose previous run is still going skips the slot (counted in [`CheckerStats::skipped`]).
//! `tcp_syn` probes need no task at all: a tick's SYNs go out in one `sendmmsg`, replies come
//! back by sequence number (which carries the probe's slot in a dense table: no per-probe
//! hash lookup), timeouts expire from calendar buckets. Every other probe runs as a
//! lightweight task in a `JoinSet`. Results go back into the monitor and its edits to a
//! [`TableSink`] (the kernel through [`IpvsClient`], or a [`MemoryTable`] in tests).

use super::idhash::IdMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
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
    /// Probe starts that went out in a batch of SYNs (`tcp_syn`, no task of their own).
    pub batched: std::sync::atomic::AtomicU64,
}

/// Counters of one driver iteration, added to [`CheckerStats`] once at its end: a locked
/// read-modify-write per probe and counter would also stall the overlapping cache misses of
/// the probe loop.
#[derive(Default)]
struct Counts {
    probes: u64,
    failures: u64,
    edits: u64,
    on_time: u64,
    late: u64,
    skipped: u64,
    max_late_us: u64,
    batched: u64,
}

impl Counts {
    fn flush(&mut self, stats: &CheckerStats) {
        use std::sync::atomic::Ordering::Relaxed;
        let c = std::mem::take(self);
        for (n, a) in [
            (c.probes, &stats.probes),
            (c.failures, &stats.failures),
            (c.edits, &stats.edits),
            (c.on_time, &stats.on_time),
            (c.late, &stats.late),
            (c.skipped, &stats.skipped),
            (c.batched, &stats.batched),
        ] {
            if n > 0 {
                a.fetch_add(n, Relaxed);
            }
        }
        if c.max_late_us > 0 {
            stats.max_late_us.fetch_max(c.max_late_us, Relaxed);
        }
    }
}

/// How late after its slot a probe may start and still count as on time: a tenth of the
/// interval, at most 100 ms.
pub fn on_time_tolerance(interval: Duration) -> Duration {
    (interval / 10).min(Duration::from_millis(100))
}

/// Due probes are started in batches on ticks of this length: thousands of probes per second
/// cost forty wake-ups, not one each (each wake-up costs a timer reset, an `epoll_wait`
/// and a `sendmmsg`). A quarter of the 100 ms on-time tolerance of 1 s intervals; probes with
/// short intervals shorten the tick ([`tick_for`]).
pub const TICK: Duration = Duration::from_millis(25);

/// The tick for a probe with `interval`: at most a quarter of its on-time tolerance, between
/// 1 ms and [`TICK`].
pub fn tick_for(interval: Duration) -> Duration {
    (on_time_tolerance(interval) / 4).clamp(Duration::from_millis(1), TICK)
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

/// Per-probe state of the driver, in a dense table (see [`Probes`]).
struct Entry {
    id: ProbeId,
    interval: Duration,
    timeout: Duration,
    /// (source, target) of a `tcp_syn` probe sent in batches; `None`: run as a task.
    syn: Option<(IpAddr, SocketAddr)>,
    /// Grid slot of the run in progress.
    running: Option<Duration>,
    /// Sequence number of the SYN in flight (meaningful while `running`).
    seq: u32,
}

/// A slot of the table: its entry, and counters that outlive it so a reused slot never
/// takes a stale schedule entry or SYN reply for its own.
#[derive(Default)]
struct Slot {
    entry: Option<Entry>,
    /// Bumped when the slot is freed; tags its schedule entries and task results.
    generation: u32,
    /// SYNs sent from this slot, the nonce part of their sequence numbers.
    sends: u32,
}

/// The driver's probes, indexed by a dense slot number that travels in schedule entries,
/// task results and (for `tcp_syn`) the SYN's sequence number, so the per-probe path does no
/// hash lookup: at 10,000 probes per second each one is a likely cache miss.
#[derive(Default)]
struct Probes {
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_id: IdMap<ProbeId, u32>,
    /// XORed into sequence numbers so they are not guessable from the slot layout.
    seq_key: u32,
    /// `tcp_syn` probes in flight.
    syn_inflight: usize,
}

/// Bits of a sequence number that carry the slot; the rest carry the slot's send count.
const SLOT_BITS: u32 = 20;
const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;

impl Probes {
    fn add(&mut self, id: ProbeId, key: &super::ProbeKey, ctx: &ProbeContext) -> (u32, u32) {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        // Batched SYNs for tcp_syn probes whose slot fits the sequence number; others (and a
        // prober that failed to open, an IPv6 target on a host without IPv6, or a target
        // without a source address) run as tasks, which report the problem: a batch holds
        // only SYNs that can be sent.
        let syn = match (&key.spec.kind, ctx.syn()) {
            (super::CheckKind::TcpSyn, Some(p))
                if slot <= SLOT_MASK && (key.target.is_ipv4() || p.has_ipv6()) =>
            {
                let src = match key.target {
                    SocketAddr::V4(t) => p.source_for(*t.ip()).map(IpAddr::V4),
                    SocketAddr::V6(t) => p.source_for6(t).map(IpAddr::V6),
                };
                match src {
                    Ok(src) => Some((src, key.target)),
                    Err(e) => {
                        tracing::warn!(target = %key.target, %e, "tcp_syn: no source address, probing from a task");
                        None
                    }
                }
            }
            _ => None,
        };
        let s = &mut self.slots[slot as usize];
        s.entry = Some(Entry {
            id,
            interval: key.spec.interval,
            timeout: key.spec.timeout,
            syn,
            running: None,
            seq: 0,
        });
        self.by_id.insert(id, slot);
        (slot, s.generation)
    }

    fn remove(&mut self, id: ProbeId) {
        let Some(slot) = self.by_id.remove(&id) else {
            return;
        };
        let s = &mut self.slots[slot as usize];
        if let Some(e) = s.entry.take()
            && e.syn.is_some()
            && e.running.is_some()
        {
            self.syn_inflight -= 1;
        }
        s.generation = s.generation.wrapping_add(1);
        self.free.push(slot);
    }

    /// The live entry of `slot` if `generation` is current.
    fn get(&mut self, slot: u32, generation: u32) -> Option<&mut Entry> {
        let s = self.slots.get_mut(slot as usize)?;
        if s.generation != generation {
            return None;
        }
        s.entry.as_mut()
    }

    /// Whether `slot` holds a live entry of `generation`.
    fn is_current(&self, slot: u32, generation: u32) -> bool {
        self.slots
            .get(slot as usize)
            .is_some_and(|s| s.generation == generation && s.entry.is_some())
    }

    /// A fresh sequence number for the SYN of `slot`.
    fn next_seq(&mut self, slot: u32) -> u32 {
        let s = &mut self.slots[slot as usize];
        s.sends = s.sends.wrapping_add(1);
        (slot | (s.sends << SLOT_BITS)) ^ self.seq_key
    }

    /// The probe a SYN reply answers, if it answers the SYN in flight of that probe.
    fn syn_reply(&self, r: &super::synprobe::Reply) -> Option<(u32, u32)> {
        let slot = (r.seq ^ self.seq_key) & SLOT_MASK;
        let s = self.slots.get(slot as usize)?;
        let e = s.entry.as_ref()?;
        // Address and port only: replies carry no IPv6 flow label nor scope.
        let matches = e.running.is_some()
            && e.seq == r.seq
            && e.syn
                .is_some_and(|(_, t)| t.ip() == r.from.ip() && t.port() == r.from.port());
        matches.then_some((slot, s.generation))
    }
}

/// Where the results of a driver iteration go: everything [`finish`] needs.
struct Ctx<'a, S> {
    monitor: &'a mut Monitor,
    sink: &'a mut S,
    sched: &'a mut Schedule,
    probes: &'a mut Probes,
    counts: &'a mut Counts,
    epoch: Instant,
}

async fn run<S: TableSink>(
    mut monitor: Monitor,
    mut sink: S,
    mut ctl: mpsc::UnboundedReceiver<Control>,
    stats: Arc<CheckerStats>,
) -> Result<()> {
    let epoch = Instant::now();
    let mut sched = Schedule::new();
    // Deadlines of SYNs in flight, tagged with their sequence number.
    let mut syn_deadlines = Schedule::new();
    let mut ctx = ProbeContext::default();
    let uses_syn = |keys: &[(ProbeId, super::ProbeKey)]| {
        keys.iter()
            .any(|(_, k)| k.spec.kind == super::CheckKind::TcpSyn)
    };
    // tcp_syn probes go out in batches without a task each; their replies are read on the
    // ticks (a polled prober: no reactor wake-up per reply).
    let initial = monitor.probes();
    if uses_syn(&initial) {
        ctx.ensure_syn_polled();
    }
    let mut probes = Probes {
        seq_key: super::synprobe::random_u32(),
        ..Probes::default()
    };
    // The tick of the shortest interval seen (never lengthened again: harmless).
    let mut tick = TICK;
    for (id, key) in &initial {
        tick = tick.min(tick_for(key.spec.interval));
        let (slot, generation) = probes.add(*id, key, &ctx);
        sched.insert(slot, generation, spread(*id, key.spec.interval));
    }
    drop(initial);
    // Buffers reused across iterations.
    let mut due = Vec::new();
    let mut batch: Vec<(IpAddr, SocketAddr, u32)> = Vec::new();
    let mut batch_slots: Vec<(u32, u32)> = Vec::new();
    let mut replies = Vec::new();
    let mut verdicts = Vec::new();
    let mut running: JoinSet<(u32, u32, super::ProbeOutcome)> = JoinSet::new();
    let sleep = tokio::time::sleep_until(epoch + Duration::from_secs(86400 * 365));
    tokio::pin!(sleep);
    let mut armed: Option<Duration> = None;
    let mut counts = Counts::default();
    loop {
        let now = epoch.elapsed();
        let mut c = Ctx {
            monitor: &mut monitor,
            sink: &mut sink,
            sched: &mut sched,
            probes: &mut probes,
            counts: &mut counts,
            epoch,
        };
        c.sched.pop_due(now, &mut due);
        // Touch every due entry first: independent loads whose cache misses overlap, where
        // the loop below would wait for them one at a time.
        let live = due
            .iter()
            .filter(|d| c.probes.is_current(d.slot, d.tag))
            .count();
        batch.reserve(live);
        for d in due.drain(..) {
            let Some(e) = c.probes.get(d.slot, d.tag) else {
                continue; // removed by a reload
            };
            let late = now.saturating_sub(d.at);
            if late <= on_time_tolerance(e.interval) {
                c.counts.on_time += 1;
            } else {
                c.counts.late += 1;
            }
            c.counts.max_late_us = c.counts.max_late_us.max(late.as_micros() as u64);
            e.running = Some(d.at);
            match e.syn {
                Some((src, target)) => {
                    let timeout = e.timeout;
                    let seq = c.probes.next_seq(d.slot);
                    if let Some(e) = c.probes.get(d.slot, d.tag) {
                        e.seq = seq;
                    }
                    c.probes.syn_inflight += 1;
                    c.counts.batched += 1;
                    batch.push((src, target, seq));
                    batch_slots.push((d.slot, d.tag));
                    syn_deadlines.insert(d.slot, seq, now + timeout);
                }
                None => {
                    let id = e.id;
                    if let Some(key) = c.monitor.probe_key(id).cloned() {
                        let ctx = ctx.clone();
                        let (slot, generation) = (d.slot, d.tag);
                        running.spawn(
                            async move { (slot, generation, run_probe_in(&key, &ctx).await) },
                        );
                    }
                }
            }
        }
        if let Some(syn) = ctx.syn().filter(|_| !batch.is_empty()) {
            if let Err(e) = syn.send_untracked(&batch) {
                let why = format!("send SYN: {e}");
                for &(slot, generation) in &batch_slots {
                    if c.probes.get(slot, generation).is_some() {
                        c.probes.syn_inflight -= 1;
                        finish(
                            &mut c,
                            slot,
                            generation,
                            super::ProbeOutcome::Down(why.clone()),
                        );
                    }
                }
            }
            batch.clear();
            batch_slots.clear();
        }
        // Replies queued since the last tick, and those to the SYNs just sent (on loopback and
        // fast links they are there when sendmmsg returns). Before the timeouts below, so a
        // reply read now is never expired.
        let syn_waiting = match ctx.syn() {
            Some(syn) if c.probes.syn_inflight > 0 || syn.has_pending() => {
                syn.receive_untracked(&mut replies, &mut verdicts);
                let ids = replies
                    .iter()
                    .filter_map(|r| c.probes.syn_reply(r))
                    .filter_map(|(slot, _)| c.probes.slots[slot as usize].entry.as_ref())
                    .map(|e| e.id);
                c.monitor.warm(ids);
                for r in replies.drain(..) {
                    let Some((slot, generation)) = c.probes.syn_reply(&r) else {
                        continue; // late (after the timeout), stale or forged
                    };
                    c.probes.syn_inflight -= 1;
                    let outcome = match r.verdict {
                        super::syn::Verdict::Open => super::ProbeOutcome::Up,
                        super::syn::Verdict::Closed => super::ProbeOutcome::Down(
                            "connection refused (RST in reply to SYN)".into(),
                        ),
                    };
                    finish(&mut c, slot, generation, outcome);
                }
                // The driver sends no tracked batches; SYN futures settle themselves.
                verdicts.clear();
                c.probes.syn_inflight > 0 || syn.has_pending()
            }
            _ => false,
        };
        syn_deadlines.pop_due(epoch.elapsed(), &mut due);
        for d in due.drain(..) {
            let s = &c.probes.slots[d.slot as usize];
            let generation = s.generation;
            let timed_out = s
                .entry
                .as_ref()
                .filter(|e| e.running.is_some() && e.seq == d.tag)
                .map(|e| e.timeout);
            if let Some(t) = timed_out {
                c.probes.syn_inflight -= 1;
                let why = format!("no answer to SYN within {} ms", t.as_millis());
                finish(&mut c, d.slot, generation, super::ProbeOutcome::Down(why));
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
                let t = tick.as_nanos();
                Duration::from_nanos((d.as_nanos().div_ceil(t) * t) as u64)
            });
        if wake != armed {
            if let Some(w) = wake {
                sleep.as_mut().reset(epoch + w);
            }
            armed = wake;
        }
        counts.flush(&stats);
        tokio::select! {
            Some(done) = running.join_next(), if !running.is_empty() => {
                let mut c = Ctx {
                    monitor: &mut monitor,
                    sink: &mut sink,
                    sched: &mut sched,
                    probes: &mut probes,
                    counts: &mut counts,
                    epoch,
                };
                let mut next = Some(done);
                // Take every finished probe in one go.
                while let Some(done) = next.take() {
                    if let Ok((slot, generation, outcome)) = done {
                        finish(&mut c, slot, generation, outcome);
                    }
                    next = running.try_join_next();
                }
            }
            _ = &mut sleep, if armed.is_some() => { armed = None; }
            msg = ctl.recv() => match msg {
                Some(Control::Reload(cfg, reply)) => {
                    let r = monitor.reconfigure(cfg);
                    apply_logged(&mut sink, &r.changes);
                    // Removed probes leave the table: their schedule entries, task results
                    // and SYN replies no longer match anything.
                    for id in &r.removed {
                        probes.remove(*id);
                    }
                    if uses_syn(&r.added) {
                        ctx.ensure_syn_polled();
                    }
                    let now = epoch.elapsed();
                    for (id, key) in &r.added {
                        tick = tick.min(tick_for(key.spec.interval));
                        let (slot, generation) = probes.add(*id, key, &ctx);
                        sched.insert(slot, generation, now + spread(*id, key.spec.interval));
                    }
                    let _ = reply.send(r.changes.len());
                }
                Some(Control::Stop) | None => break,
            },
        }
    }
    counts.flush(&stats);
    running.abort_all();
    Ok(())
}

/// A probe run finished: feed the monitor, apply its edits, schedule the next slot.
fn finish<S: TableSink>(
    c: &mut Ctx<'_, S>,
    slot: u32,
    generation: u32,
    outcome: super::ProbeOutcome,
) {
    let Some(e) = c.probes.get(slot, generation) else {
        return; // removed by a reload while running
    };
    let Some(started) = e.running.take() else {
        return;
    };
    let (id, interval) = (e.id, e.interval);
    c.counts.probes += 1;
    if matches!(outcome, super::ProbeOutcome::Down(_)) {
        c.counts.failures += 1;
    }
    let changes = c.monitor.on_result(id, outcome);
    if !changes.is_empty() {
        c.counts.edits += changes.len() as u64;
        apply_logged(c.sink, &changes);
    }
    // Next slot on the grid; slots that already passed while this run was going are
    // skipped (never two runs of one probe at once), and counted.
    let (next, skipped) = next_slot(started, c.epoch.elapsed(), interval);
    c.counts.skipped += skipped;
    c.sched.insert(slot, generation, next);
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
    use crate::checker::syn::Verdict;
    use crate::checker::synprobe::Reply;

    /// A table with one running tcp_syn probe per target, sent with seq from `next_seq`.
    fn table(targets: &[&str]) -> (Probes, Vec<(u32, u32, Reply)>) {
        let mut p = Probes {
            seq_key: 0x5a5a_1234,
            ..Probes::default()
        };
        let mut sent = Vec::new();
        for (i, t) in targets.iter().enumerate() {
            let target: SocketAddr = t.parse().unwrap();
            let (slot, generation) = p.add(
                ProbeId(i as u64 + 1),
                &crate::checker::ProbeKey {
                    target,
                    spec: crate::checker::CheckSpec::new(crate::checker::CheckKind::Connect),
                },
                &ProbeContext::default(),
            );
            let seq = p.next_seq(slot);
            let e = p.get(slot, generation).unwrap();
            e.syn = Some((local(target), target));
            e.running = Some(Duration::ZERO);
            e.seq = seq;
            p.syn_inflight += 1;
            let reply = Reply {
                from: target,
                seq,
                verdict: Verdict::Open,
            };
            sent.push((slot, generation, reply));
        }
        (p, sent)
    }

    /// The loopback address of `target`'s family.
    fn local(target: SocketAddr) -> IpAddr {
        match target {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        }
    }

    #[test]
    fn syn6_replies_match_without_flow_label_or_scope() {
        let (p, sent) = table(&["[fd00::1]:80", "10.0.0.1:80"]);
        let (slot, generation, r) = sent[0];
        assert_eq!(p.syn_reply(&r), Some((slot, generation)));
        // A link-local target carries a scope; its replies do not.
        let (mut p, sent) = table(&["[fe80::1]:80"]);
        let (slot, generation, r) = sent[0];
        let scoped = SocketAddr::V6(std::net::SocketAddrV6::new(
            "fe80::1".parse().unwrap(),
            80,
            0,
            2,
        ));
        p.get(slot, generation).unwrap().syn = Some((local(scoped), scoped));
        assert_eq!(p.syn_reply(&r), Some((slot, generation)));
        // Same address, another port: not ours.
        let mut forged = r;
        forged.from.set_port(81);
        assert_eq!(p.syn_reply(&forged), None);
    }

    #[test]
    fn syn_replies_find_their_probe_by_sequence_number_only_while_current() {
        let (mut p, sent) = table(&["10.0.0.1:80", "10.0.0.2:81", "10.0.0.3:82"]);
        for (slot, generation, r) in &sent {
            assert_eq!(p.syn_reply(r), Some((*slot, *generation)));
        }
        let (slot, generation, r) = sent[1];
        // From another address or port: not ours.
        let mut forged = r;
        forged.from = "10.0.0.2:80".parse().unwrap();
        assert_eq!(p.syn_reply(&forged), None);
        // Another sequence number: not ours.
        forged = r;
        forged.seq ^= 1 << 25;
        assert_eq!(p.syn_reply(&forged), None);
        // Finished (not running): a duplicate reply is ignored.
        p.get(slot, generation).unwrap().running = None;
        p.syn_inflight -= 1;
        assert_eq!(p.syn_reply(&r), None);
        // Next run: the old reply no longer matches the new SYN.
        let seq = p.next_seq(slot);
        let e = p.get(slot, generation).unwrap();
        e.running = Some(Duration::ZERO);
        e.seq = seq;
        p.syn_inflight += 1;
        assert_ne!(seq, r.seq);
        assert_eq!(p.syn_reply(&r), None);
        // Removed and the slot reused by another probe: old generation and replies are stale.
        let (s0, g0, r0) = sent[0];
        p.remove(ProbeId(1));
        assert_eq!(p.syn_inflight, 2);
        assert!(!p.is_current(s0, g0));
        let (s, g) = p.add(
            ProbeId(9),
            &crate::checker::ProbeKey {
                target: r0.from,
                spec: crate::checker::CheckSpec::new(crate::checker::CheckKind::Connect),
            },
            &ProbeContext::default(),
        );
        assert_eq!(s, s0);
        assert_ne!(g, g0);
        assert!(p.get(s0, g0).is_none());
        let seq = p.next_seq(s);
        let e = p.get(s, g).unwrap();
        e.syn = Some((local(r0.from), r0.from));
        e.running = Some(Duration::ZERO);
        e.seq = seq;
        assert_eq!(p.syn_reply(&r0), None);
        let fresh = Reply { seq, ..r0 };
        assert_eq!(p.syn_reply(&fresh), Some((s, g)));
    }

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
        assert_eq!(tick_for(s), TICK);
        assert_eq!(tick_for(ms(200)), ms(5));
        assert_eq!(tick_for(ms(10)), ms(1));
    }
}
