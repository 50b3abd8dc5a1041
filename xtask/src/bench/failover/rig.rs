//! The bench rig: nodes A and B and client C on one bridge (testkit's star topology), a work
//! directory, and the process-level helpers the trials need (kill a whole node, CPU time of
//! a node, who holds the floating address).

use std::fs;
use std::io::Read;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Child;

use anyhow::Context;
use testkit::netns::{Netns, NsChild, Topology};

/// The floating address, only inside the bench's namespaces.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);
/// Prefix length of [`VIP`].
pub const VIP_PREFIX: u8 = 24;
/// UDP port of the responders.
pub const PROBE_PORT: u16 = 7777;
/// Interface of every host inside its namespace.
pub const IFACE: &str = "eth0";
/// Names the responders answer with, by node index.
pub const NODE_NAMES: [&str; 2] = ["A", "B"];
/// Index of the client host.
pub const CLIENT: usize = 2;

/// Topology plus work directory. Dropping it kills every process left in the node and
/// client namespaces (a daemon killed with SIGKILL leaves children behind otherwise, and a
/// deleted namespace does not stop its processes), then deletes the namespaces.
pub struct Rig {
    /// A (0), B (1), client (2).
    pub topo: Topology,
    /// None once [`Rig::keep_dir`] made it permanent.
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Rig {
    /// Build the topology (IPv4 only: 10.77.0.1 A, .2 B, .3 client).
    pub fn new() -> anyhow::Result<Rig> {
        let topo = Topology::builder()
            .hosts(3)
            .ipv6(false)
            .build()
            .context("building the namespace topology (needs root and iproute2)")?;
        let dir = tempfile::Builder::new()
            .prefix("bench-failover-")
            .tempdir()
            .context("creating the bench work directory")?;
        let path = dir.path().to_path_buf();
        Ok(Rig {
            topo,
            dir: Some(dir),
            path,
        })
    }

    /// Keep the work directory after the run; returns its path.
    pub fn keep_dir(&mut self) -> PathBuf {
        if let Some(d) = self.dir.take() {
            let _ = d.keep();
        }
        self.path.clone()
    }

    /// The work directory (configs, logs).
    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// Namespace of host `i`.
    pub fn ns(&self, i: usize) -> &Netns {
        self.topo.host(i).ns()
    }

    /// IPv4 address of host `i`.
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        self.topo.host(i).ipv4()
    }

    /// Whether node `i` has the floating address on its interface.
    pub fn holds_vip(&self, i: usize) -> anyhow::Result<bool> {
        let out = self.ns(i).ip(&["-o", "-4", "addr", "show", "dev", IFACE])?;
        Ok(String::from_utf8_lossy(&out.stdout).contains(&format!("inet {VIP}/")))
    }

    /// Remove the floating address from node `i` (a daemon killed with SIGKILL leaves it).
    pub fn drop_vip(&self, i: usize) -> anyhow::Result<()> {
        if self.holds_vip(i)? {
            self.ns(i)
                .ip(&["addr", "del", &format!("{VIP}/{VIP_PREFIX}"), "dev", IFACE])?;
        }
        Ok(())
    }

    /// Start `program` in node `i`'s namespace with its stdout and stderr appended to
    /// `log` in the work directory (drained by threads, so a chatty daemon never blocks on a
    /// full pipe).
    pub fn spawn_logged(
        &self,
        i: usize,
        program: &str,
        args: &[&str],
        log: &str,
    ) -> anyhow::Result<NsChild> {
        let mut child = self
            .ns(i)
            .spawn(program, args)
            .with_context(|| format!("starting `{program}` on host {i}"))?;
        let path = self.dir().join(log);
        if let Some(c) = child.child() {
            drain(c, &path)?;
        }
        Ok(child)
    }

    /// Pids of every process in host `i`'s namespace.
    pub fn pids(&self, i: usize) -> anyhow::Result<Vec<i32>> {
        ns_pids(&self.ns(i).path())
    }

    /// `pid:comm` of every process in host `i`'s namespace, for error reports.
    pub fn describe(&self, i: usize) -> String {
        let pids = self.pids(i).unwrap_or_default();
        pids.iter()
            .map(|p| {
                let comm = fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
                format!("{p}:{}", comm.trim())
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Crash the given processes at once: SIGSTOP all, then SIGKILL all; returns how many
    /// were killed. Freezing first matters: killed one by one, a process could react to
    /// another's death before its own SIGKILL lands (keepalived's VRRP child turns its
    /// parent's death into SIGTERM and announces priority 0, a graceful handover).
    pub fn kill_pids(pids: &[i32]) -> usize {
        use nix::sys::signal::{Signal, kill};
        let me = std::process::id() as i32;
        let targets: Vec<nix::unistd::Pid> = pids
            .iter()
            .filter(|&&p| p != me && p > 1)
            .map(|&p| nix::unistd::Pid::from_raw(p))
            .collect();
        for &p in &targets {
            let _ = kill(p, Signal::SIGSTOP);
        }
        targets
            .iter()
            .filter(|&&p| kill(p, Signal::SIGKILL).is_ok())
            .count()
    }

    /// SIGKILL every process in host `i`'s namespace until none is left (a forking daemon
    /// may race with the scan), then remove the floating address.
    pub fn wipe(&self, i: usize) -> anyhow::Result<()> {
        for _ in 0..50 {
            let pids = self.pids(i)?;
            if pids.is_empty() {
                return self.drop_vip(i);
            }
            Self::kill_pids(&pids);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        anyhow::bail!(
            "processes keep running in namespace {} after SIGKILL",
            self.ns(i).name()
        )
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for i in 0..self.topo.hosts().len() {
            if let Err(e) = self.wipe(i) {
                eprintln!("bench failover: cleanup of host {i}: {e:#}");
            }
        }
    }
}

/// Copy the child's stdout and stderr into `path` on two threads.
fn drain(child: &mut Child, path: &Path) -> anyhow::Result<()> {
    let open = || {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening log {}", path.display()))
    };
    if let Some(mut out) = child.stdout.take() {
        let mut f = open()?;
        std::thread::spawn(move || std::io::copy(&mut out, &mut f));
    }
    if let Some(mut err) = child.stderr.take() {
        let mut f = open()?;
        std::thread::spawn(move || std::io::copy(&mut err, &mut f));
    }
    Ok(())
}

/// Pids whose network namespace is the one bound at `ns_path` (what `ip netns pids` does,
/// without forking: the fault path wants to be quick).
pub fn ns_pids(ns_path: &Path) -> anyhow::Result<Vec<i32>> {
    let ino = fs::metadata(ns_path)
        .with_context(|| format!("stat {}", ns_path.display()))?
        .ino();
    let want = format!("net:[{ino}]");
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").context("reading /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        // Processes exit while we scan: a failed readlink just means "gone".
        if let Ok(link) = fs::read_link(entry.path().join("ns/net"))
            && link.as_os_str() == want.as_str()
        {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// CPU time (user + system, all threads) of `pid` in seconds; None when it is gone.
pub fn cpu_secs(pid: i32) -> Option<f64> {
    let mut s = String::new();
    fs::File::open(format!("/proc/{pid}/stat"))
        .ok()?
        .read_to_string(&mut s)
        .ok()?;
    // Fields after the command name (which may contain spaces) start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Have the kernel SIGKILL this process when the bench that started it dies, even by
/// SIGKILL before its clean-up runs (its helper processes must not outlive it).
pub fn die_with_parent() {
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
    }
}

/// Give the calling thread SCHED_FIFO `prio`; false when refused (the bench then runs with
/// normal priority and says so). Processes it starts get normal priority again
/// (SCHED_RESET_ON_FORK), so the daemons under test only run real-time if they ask for it.
pub fn realtime_thread(prio: i32) -> bool {
    let param = libc::sched_param {
        sched_priority: prio,
    };
    // SAFETY: plain syscall with a valid pointer; pid 0 is the calling thread.
    unsafe {
        libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_of_a_busy_process_grows() {
        let me = std::process::id() as i32;
        let before = cpu_secs(me).unwrap();
        let t0 = std::time::Instant::now();
        let mut x = 0u64;
        while t0.elapsed() < std::time::Duration::from_millis(200) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(cpu_secs(me).unwrap() > before);
        assert_eq!(cpu_secs(i32::MAX), None);
    }

    #[test]
    fn node_wipe_kills_everything_in_the_namespace() {
        if !testkit::privileged("node_wipe_kills_everything_in_the_namespace") {
            return;
        }
        let ns = Netns::new("bfo").unwrap();
        let mut child = ns.spawn("sleep", &["30"]).unwrap();
        let pid = child.child().unwrap().id() as i32;
        // `ip netns exec` enters the namespace after the fork: wait for it.
        let t0 = std::time::Instant::now();
        while ns_pids(&ns.path()).unwrap().is_empty()
            && t0.elapsed() < std::time::Duration::from_secs(5)
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(ns_pids(&ns.path()).unwrap(), vec![pid]);
        assert_eq!(Rig::kill_pids(&[pid]), 1);
        let status = child.child().unwrap().wait().unwrap();
        assert!(!status.success());
        assert!(ns_pids(&ns.path()).unwrap().is_empty());
    }
}
