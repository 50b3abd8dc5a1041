//! `cargo xtask bench failover`: failover time of keepalived and of this toolkit in the same
//! namespace topology and the same run.
//!
//! Nodes A and B and client C sit on one bridge (testkit's star topology). Each node runs a
//! UDP responder answering with its name; the client probes the floating address every
//! millisecond. A trial starts A (preferred), waits until the client gets A's answers,
//! starts B, lets both settle, waits a random offset within one heartbeat cycle and then
//! SIGKILLs every process in A's namespace (daemon and responder; all frozen with SIGSTOP
//! first so none reacts to another's death). Failover time = fault to the client's first
//! answer from B. Trials of the two systems alternate so machine noise hits both alike.
//! Then, per system: 60 s with `stress-ng --cpu 2` counting false failovers (episodes in
//! which the address is not A's alone: B holds it, A lost it, or B answered), and the CPU
//! use (utime + stime) of each idle node's daemon processes over 10 s; the busier node
//! counts. Then, unless `--no-floor`, the floor: a minimal heartbeat loop (sleep, drain, send
//! one datagram) at each system's period in the same namespaces, measured the same way, so the
//! idle figures can be read against what the machine charges for a wake-up and a packet
//! (see `floor.rs`). The last line is
//! `RESULT ours_ms=.. keepalived_ms=.. ratio=.. false_failovers=.. idle_cpu_pct=..`.
//!
//! Our node is `ha-net-node`, built here in release mode unless `--ours-bin` names one; if
//! it is unavailable keepalived is still measured and printed, then the bench fails.
//! Options: `cargo xtask bench failover -- --help`.

mod floor;
mod keepalived;
mod opts;
mod ours;
mod probe;
mod report;
mod responder;
mod rig;
mod sniff;
mod system;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use testkit::netns::NsChild;

use self::opts::{Mode, Only, Opts};
use self::probe::Prober;
use self::report::{Idle, Steady, SystemResult, Trial, median};
use self::rig::{CLIENT, NODE_NAMES, PROBE_PORT, Rig};
use self::sniff::Sniffer;
use self::system::System;

/// Longest wait for a node to take the address (start-up or failover).
const TAKEOVER_LIMIT: Duration = Duration::from_secs(10);
/// Ownership sampling period in steady state.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// Run the benchmark (or, internally, a responder).
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let opts = match opts::parse(args)? {
        Mode::Responder { name, port } => return responder::serve(&name, port),
        Mode::Floor {
            peer,
            port,
            period,
            bytes,
        } => return floor::serve(peer, port, period, bytes),
        Mode::Bench(o) => o,
    };
    if !testkit::is_root() {
        bail!("bench failover needs root (network namespaces, SIGKILL of daemons)");
    }
    let mut systems: Vec<(Box<dyn System>, SystemResult)> = Vec::new();
    if opts.only != Only::Ours {
        let ka = keepalived::Keepalived::new(&opts.advert_int, opts.keepalived_rt)?;
        systems.push((Box::new(ka), SystemResult::default()));
    }
    // Ours may be missing (not built yet, build broken): keepalived is still measured and
    // printed, then the bench fails with this error instead of inventing numbers.
    let mut ours_missing = None;
    if opts.only != Only::Keepalived {
        let bin = match &opts.ours_bin {
            Some(b) if b.is_file() => Ok(b.clone()),
            Some(b) => Err(anyhow::anyhow!("--ours-bin {} does not exist", b.display())),
            None => ours::build_node(opts.ours_release),
        };
        match bin {
            Ok(bin) => {
                let o = ours::Ours::new(bin, opts.ours_keepalive, opts.ours_deadtime)
                    .heartbeats_only(opts.ours_heartbeats_only);
                systems.push((Box::new(o), SystemResult::default()));
            }
            Err(e) => ours_missing = Some(format!("{e:#}")),
        }
    }
    which("stress-ng").context("stress-ng is missing: apt-get install stress-ng")?;

    // The main thread injects faults: real-time so its offsets and kills are on time.
    let main_rt = rig::realtime_thread(45);
    let mut rig = Rig::new()?;
    let prober = Prober::start(rig.ns(CLIENT), opts.probe_every)?;
    let sniffer = Sniffer::start(rig.ns(1), rig.ip(0))?;
    let mut bench = Bench {
        rig: &rig,
        prober: &prober,
        sniffer: &sniffer,
        join_disturbed: HashMap::new(),
        startups: HashMap::new(),
        opts: &opts,
        rng: Rng(opts.seed | 1),
        run: 0,
    };
    for (sys, res) in systems.iter_mut() {
        sys.prepare(&rig)?;
        res.title = sys.setting();
        res.cycle = sys.cycle();
    }
    eprintln!(
        "bench failover: {} trials per system, seed {}, probe every {} us (real-time client: {}, injector: {main_rt}), work dir {}",
        opts.trials,
        opts.seed,
        opts.probe_every.as_micros(),
        prober.realtime(),
        rig.dir().display()
    );
    for t in 0..opts.trials {
        for (sys, res) in systems.iter_mut() {
            let r = bench.trial(sys.as_mut());
            match &r {
                Ok(tr) => eprintln!(
                    "  {} trial {}: {:.1} ms",
                    sys.name(),
                    t + 1,
                    tr.failover.as_secs_f64() * 1000.0
                ),
                Err(e) => eprintln!("  {} trial {}: FAILED {e:#}", sys.name(), t + 1),
            }
            res.trials.push(r.map_err(|e| format!("{e:#}")));
        }
    }
    for (sys, res) in systems.iter_mut() {
        eprintln!(
            "  {}: {} s steady state under stress-ng --cpu 2, then {} s idle",
            sys.name(),
            opts.steady.as_secs(),
            opts.idle.as_secs()
        );
        let (steady, idle) = bench.steady_and_idle(sys.as_mut());
        res.steady = Some(steady.map_err(|e| format!("{e:#}")));
        res.idle = Some(idle.map_err(|e| format!("{e:#}")));
    }
    for (sys, res) in systems.iter_mut() {
        res.join_disturbed = bench.join_disturbed.get(sys.name()).copied().unwrap_or(0);
        res.startups = bench.startups.get(sys.name()).copied().unwrap_or(0);
    }
    let floors = if opts.floor {
        measure_floors(&rig, &systems, &opts)
    } else {
        Vec::new()
    };
    drop(sniffer);
    drop(prober);
    if opts.keep_dir {
        eprintln!("bench failover: logs kept in {}", rig.keep_dir().display());
    }
    drop(rig);

    println!();
    for (_, res) in &systems {
        println!("{}", res.table());
    }
    print_floors(&floors, &systems);
    finish(&systems, ours_missing)
}

/// The floor loop's idle CPU at the period of each measured system: (system, period, result).
type Floors = Vec<(String, Duration, Result<Idle, String>)>;

fn measure_floors(rig: &Rig, systems: &[(Box<dyn System>, SystemResult)], opts: &Opts) -> Floors {
    let mut out = Floors::new();
    for (sys, _) in systems {
        let period = sys.cycle();
        eprintln!(
            "  floor loop at {} us ({}'s period): {} s",
            period.as_micros(),
            sys.name(),
            opts.idle.as_secs()
        );
        let r = floor::measure(rig, period, opts.idle).map_err(|e| format!("{e:#}"));
        out.push((sys.name().to_string(), period, r));
    }
    out
}

fn print_floors(floors: &Floors, systems: &[(Box<dyn System>, SystemResult)]) {
    if floors.is_empty() {
        return;
    }
    println!(
        "== floor: a minimal heartbeat loop at the same period (sleep to the next period, drain the \
         socket, send one {}-byte datagram; SCHED_FIFO, mlockall), same namespaces ==",
        floor::FLOOR_BYTES
    );
    for (name, period, r) in floors {
        let daemon = systems
            .iter()
            .find(|(s, _)| s.name() == name)
            .and_then(|(_, res)| res.idle.as_ref())
            .and_then(|i| i.as_ref().ok());
        match r {
            Ok(f) => {
                let ratio = daemon
                    .filter(|_| f.worst() > 0.0)
                    .map(|d| format!(", {name} idle / floor = {:.2}", d.worst() / f.worst()))
                    .unwrap_or_default();
                println!(
                    "period {:.1} ms ({name}): master {:.2} %, backup {:.2} %{ratio}",
                    period.as_secs_f64() * 1000.0,
                    f.master_pct,
                    f.backup_pct
                );
            }
            Err(e) => println!("period {period:?} ({name}): FAILED {e}"),
        }
    }
    println!();
}

/// Check completeness and print the RESULT line (or fail saying what is missing).
fn finish(
    systems: &[(Box<dyn System>, SystemResult)],
    ours_missing: Option<String>,
) -> anyhow::Result<()> {
    let get = |name: &str| {
        systems
            .iter()
            .find(|(s, _)| s.name() == name)
            .map(|(_, r)| r)
    };
    let mut problems = Vec::new();
    if let Some(e) = ours_missing {
        problems.push(format!("our node daemon is unavailable: {e}"));
    }
    for (s, r) in systems {
        problems.extend(r.errors().into_iter().map(|e| format!("{}: {e}", s.name())));
    }
    let (Some(ka), Some(ours)) = (get("keepalived"), get("ours")) else {
        problems.push("the RESULT line needs both systems measured".into());
        bail!("no RESULT:\n  {}", problems.join("\n  "));
    };
    if !problems.is_empty() {
        bail!("no RESULT:\n  {}", problems.join("\n  "));
    }
    let (Some(ours_ms), Some(ka_ms)) = (median(&ours.failover_ms()), median(&ka.failover_ms()))
    else {
        bail!("no RESULT: no successful trial");
    };
    let (Some(Ok(steady)), Some(Ok(idle))) = (&ours.steady, &ours.idle) else {
        bail!("no RESULT: steady state or idle CPU of ours missing");
    };
    let ratio = ours_ms / ka_ms;
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "targets: ratio <= 0.5 {}, false_failovers = 0 {}, idle_cpu_pct <= 1 {}",
        met(ratio <= 0.5),
        met(steady.false_failovers == 0),
        met(idle.worst() <= 1.0)
    );
    println!(
        "RESULT ours_ms={ours_ms:.1} keepalived_ms={ka_ms:.1} ratio={ratio:.2} false_failovers={} idle_cpu_pct={:.2}",
        steady.false_failovers,
        idle.worst()
    );
    Ok(())
}

/// A running two-node cluster: responders and daemons, killed on drop.
struct Cluster {
    responders: [NsChild; 2],
    daemons: Vec<NsChild>,
}

impl Cluster {
    fn responder_pids(&mut self) -> Vec<i32> {
        self.responders
            .iter_mut()
            .filter_map(|r| r.child().map(|c| c.id() as i32))
            .collect()
    }
}

struct Bench<'a> {
    rig: &'a Rig,
    prober: &'a Prober,
    sniffer: &'a Sniffer,
    /// Per system: start-ups in which B's start disturbed A's service.
    join_disturbed: HashMap<String, usize>,
    /// Per system: cluster start-ups.
    startups: HashMap<String, usize>,
    opts: &'a Opts,
    rng: Rng,
    /// Numbers daemon log files.
    run: usize,
}

impl Bench<'_> {
    /// Clean both nodes, start responders, A (until the client gets A's answers), then B,
    /// and let them settle.
    fn bring_up(&mut self, sys: &mut dyn System) -> anyhow::Result<Cluster> {
        self.run += 1;
        let run = self.run;
        *self.startups.entry(sys.name().to_string()).or_default() += 1;
        let rig = self.rig;
        rig.wipe(0)?;
        rig.wipe(1)?;
        let t0 = Instant::now();
        self.prober.forget_before(t0);
        let responders = [self.responder(0)?, self.responder(1)?];
        let mut cluster = Cluster {
            responders,
            daemons: Vec::new(),
        };
        cluster.daemons.push(sys.start(rig, 0, run)?);
        if !self.prober.wait_stable_from(0, 20, TAKEOVER_LIMIT) {
            bail!(
                "{}: the client got no steady answers from A within {TAKEOVER_LIMIT:?} of \
                 starting A (holds address: {})\n{}",
                sys.name(),
                rig.holds_vip(0)?,
                sys.log_tail(rig, 0, run)
            );
        }
        cluster.daemons.push(sys.start(rig, 1, run)?);
        let b_started = Instant::now();
        std::thread::sleep(self.opts.settle);
        let tail = |n| sys.log_tail(rig, n, run);
        // Exit of a daemon during start-up (bad config) shows up here.
        for (i, d) in cluster.daemons.iter_mut().enumerate() {
            if let Some(c) = d.child()
                && let Ok(Some(st)) = c.try_wait()
            {
                bail!(
                    "{}: daemon of {} exited: {st}\n{}",
                    sys.name(),
                    NODE_NAMES[i],
                    tail(i)
                );
            }
        }
        // B joining must leave A's service alone. When it does not, that is counted and
        // shown (a defect of the system, not of this trial), and the fault waits until A
        // serves alone again.
        let b_answers = |since| {
            self.prober
                .since(since)
                .iter()
                .filter(|r| r.node != 0)
                .count()
        };
        if b_answers(b_started) > 0 || rig.holds_vip(1)? {
            *self
                .join_disturbed
                .entry(sys.name().to_string())
                .or_default() += 1;
            eprintln!(
                "  {}: starting B disturbed A's service ({} answers from B); waiting for A alone",
                sys.name(),
                b_answers(b_started)
            );
        }
        let window = Duration::from_millis(200);
        let t1 = Instant::now();
        loop {
            let now = Instant::now();
            let recent = self.prober.since(now - window);
            let alone = !recent.is_empty()
                && recent.iter().all(|r| r.node == 0)
                && rig.holds_vip(0)?
                && !rig.holds_vip(1)?;
            if alone {
                break;
            }
            if t1.elapsed() > TAKEOVER_LIMIT {
                bail!(
                    "{}: A does not serve alone with B running ({} answers in the last 200 ms, \
                     {} from B; address on A: {}, on B: {})\nprocesses: A [{}], B [{}]\n{}\n{}",
                    sys.name(),
                    recent.len(),
                    recent.iter().filter(|r| r.node != 0).count(),
                    rig.holds_vip(0)?,
                    rig.holds_vip(1)?,
                    rig.describe(0),
                    rig.describe(1),
                    tail(0),
                    tail(1)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(cluster)
    }

    fn responder(&self, node: usize) -> anyhow::Result<NsChild> {
        let exe = std::env::current_exe().context("locating the xtask executable")?;
        let port = PROBE_PORT.to_string();
        self.rig.spawn_logged(
            node,
            &exe.to_string_lossy(),
            &[
                "bench",
                "failover",
                "--",
                "--responder",
                NODE_NAMES[node],
                &port,
            ],
            &format!("responder-{}.log", NODE_NAMES[node]),
        )
    }

    /// One fault: SIGKILL of every process on A at a random offset within one cycle.
    fn trial(&mut self, sys: &mut dyn System) -> anyhow::Result<Trial> {
        let cluster = self.bring_up(sys)?;
        let run = self.run;
        let rig = self.rig;
        // Listed before the wait so the fault itself is only kill(2) calls.
        let pids = rig.pids(0)?;
        let offset = self.rng.below(sys.cycle());
        std::thread::sleep(offset);
        let fault = Instant::now();
        let mut killed = Rig::kill_pids(&pids);
        let phase = self.sniffer.since_last_before(fault);
        // Anything forked since the scan (the killed ones may still be listed while exiting).
        let late: Vec<i32> = rig
            .pids(0)?
            .into_iter()
            .filter(|p| !pids.contains(p))
            .collect();
        killed += Rig::kill_pids(&late);
        let answer = loop {
            if let Some(at) = self.prober.first_from(1, fault) {
                break at;
            }
            if fault.elapsed() > TAKEOVER_LIMIT {
                let logs = sys.log_tail(rig, 1, run);
                drop(cluster);
                bail!(
                    "{}: no answer from B within {TAKEOVER_LIMIT:?} of killing A\n{logs}",
                    sys.name()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        drop(cluster);
        rig.wipe(0)?;
        rig.wipe(1)?;
        Ok(Trial {
            offset,
            phase,
            failover: answer - fault,
            killed,
        })
    }

    /// Loaded steady state, then idle CPU of both nodes, on one cluster.
    fn steady_and_idle(
        &mut self,
        sys: &mut dyn System,
    ) -> (anyhow::Result<Steady>, anyhow::Result<Idle>) {
        let mut cluster = match self.bring_up(sys) {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("{e:#}");
                return (Err(e), Err(anyhow::anyhow!("cluster did not start: {msg}")));
            }
        };
        let steady = self.steady(&mut cluster);
        let idle = match &steady {
            Ok(_) => self.idle(&mut cluster),
            Err(_) => Err(anyhow::anyhow!("skipped: steady state failed")),
        };
        drop(cluster);
        let wiped = self.rig.wipe(0).and(self.rig.wipe(1));
        match wiped {
            Ok(()) => (steady, idle),
            Err(e) => (steady, Err(e.context("cleaning up the nodes"))),
        }
    }

    fn steady(&mut self, _cluster: &mut Cluster) -> anyhow::Result<Steady> {
        let rig = self.rig;
        let _stress = Stress::start(self.opts.steady)?;
        let t0 = Instant::now();
        self.sniffer.reset_gap();
        let sent0 = self.prober.sent();
        let mut s = Steady::default();
        let mut answers = 0usize;
        let mut last_answer = t0;
        let mut window_start = t0;
        let mut anomalous = false;
        while t0.elapsed() < self.opts.steady {
            std::thread::sleep(SAMPLE_EVERY);
            let (a, b) = (rig.holds_vip(0)?, rig.holds_vip(1)?);
            let now = Instant::now();
            let replies: Vec<_> = self
                .prober
                .since(window_start)
                .into_iter()
                .filter(|r| r.at < now)
                .collect();
            window_start = now;
            self.prober.forget_before(now - Duration::from_secs(1));
            let b_answered = replies.iter().any(|r| r.node != 0);
            for r in &replies {
                s.max_gap = s.max_gap.max(r.at - last_answer);
                last_answer = r.at;
            }
            answers += replies.len();
            if a && b {
                s.both_held_samples += 1;
            }
            // An episode: any stretch where the address is not A's alone.
            let bad = b || !a || b_answered;
            if bad && !anomalous {
                s.false_failovers += 1;
            }
            anomalous = bad;
        }
        s.max_gap = s.max_gap.max(Instant::now() - last_answer);
        s.secs = t0.elapsed().as_secs_f64();
        s.max_heartbeat_gap = self.sniffer.max_gap();
        let sent = self.prober.sent().saturating_sub(sent0).max(1);
        s.answered = (answers as f64 / sent as f64).min(1.0);
        Ok(s)
    }

    fn idle(&mut self, cluster: &mut Cluster) -> anyhow::Result<Idle> {
        // Let the load's after-effects (catch-up timers, queued packets) pass.
        std::thread::sleep(Duration::from_secs(1));
        let exclude = cluster.responder_pids();
        let daemon_pids = |i: usize| -> anyhow::Result<Vec<i32>> {
            let p: Vec<i32> = self
                .rig
                .pids(i)?
                .into_iter()
                .filter(|p| !exclude.contains(p))
                .collect();
            if p.is_empty() {
                bail!("no daemon process on {}", NODE_NAMES[i]);
            }
            Ok(p)
        };
        let (pa, pb) = (daemon_pids(0)?, daemon_pids(1)?);
        let total = |p: &[i32]| p.iter().filter_map(|&p| rig::cpu_secs(p)).sum::<f64>();
        let (a0, b0, t0) = (total(&pa), total(&pb), Instant::now());
        std::thread::sleep(self.opts.idle);
        let (a1, b1, secs) = (total(&pa), total(&pb), t0.elapsed().as_secs_f64());
        if !self.rig.holds_vip(0)? || self.rig.holds_vip(1)? {
            bail!("the address moved during the idle measurement");
        }
        Ok(Idle {
            master_pct: (a1 - a0).max(0.0) / secs * 100.0,
            backup_pct: (b1 - b0).max(0.0) / secs * 100.0,
        })
    }
}

/// `stress-ng --cpu 2` in the root namespace, stopped on drop.
struct Stress(Child);

impl Stress {
    fn start(duration: Duration) -> anyhow::Result<Stress> {
        // --timeout is a safety net: even a bench killed with SIGKILL leaves no spinning load
        // behind for long. (Same process group as the bench, so Ctrl-C reaches it too.)
        let timeout = format!("{}s", duration.as_secs() + 30);
        let child = Command::new("stress-ng")
            .args(["--cpu", "2", "--quiet", "--timeout", &timeout])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting stress-ng --cpu 2")?;
        // Let its workers fork and spin up before sampling starts.
        std::thread::sleep(Duration::from_millis(300));
        Ok(Stress(child))
    }
}

impl Drop for Stress {
    fn drop(&mut self) {
        // SIGINT makes stress-ng stop its workers and exit; SIGKILL if it does not.
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Path of `program` on PATH.
fn which(program: &str) -> anyhow::Result<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .with_context(|| format!("`{program}` is not on PATH"))
}

/// xorshift64*: fault offsets only need to be spread, not secret.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, d).
    fn below(&mut self, d: Duration) -> Duration {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        d.mul_f64(unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_offsets_stay_within_one_cycle_and_spread() {
        let mut rng = Rng(12345);
        let cycle = Duration::from_millis(10);
        let v: Vec<Duration> = (0..1000).map(|_| rng.below(cycle)).collect();
        assert!(v.iter().all(|d| *d < cycle));
        assert!(v.iter().any(|d| *d < Duration::from_millis(1)));
        assert!(v.iter().any(|d| *d > Duration::from_millis(9)));
    }
}
