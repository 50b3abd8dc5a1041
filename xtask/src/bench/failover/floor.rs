//! The platform floor of the idle-CPU figure: what the least a heartbeat daemon can do costs
//! on this machine, measured in the same namespaces and the same run as the daemons.
//!
//! The floor loop (`xtask bench failover -- --floor PEER PORT PERIOD_US BYTES`, one per node)
//! does only what any sender of periodic heartbeats must: sleep until the next period
//! (absolute `clock_nanosleep`, SCHED_FIFO 50 and mlockall like our node's `--realtime`),
//! drain its UDP socket without waking for each datagram, and send one datagram of BYTES to
//! the peer. No authentication, no state machine, no runtime. Dividing a daemon's idle CPU
//! by the floor at the same period says how much of it the daemon's own work is; the rest is
//! the machine's price of a timer wake-up and a packet over the bridge (on a virtual machine
//! mostly the hypervisor's).

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::report::Idle;
use super::rig::{Rig, cpu_secs, die_with_parent, realtime_thread};

/// UDP port of the floor loops (away from the daemons' and the client's ports).
const FLOOR_PORT: u16 = 7796;
/// Datagram size: about one of our heartbeat frames.
pub const FLOOR_BYTES: usize = 128;

/// Run the floor loop until killed.
pub fn serve(peer: Ipv4Addr, port: u16, period: Duration, bytes: usize) -> anyhow::Result<()> {
    die_with_parent();
    // What `ha-net-node --realtime` does (ha_net::runtime::raise_priority(50)).
    // SAFETY: plain syscall without pointers.
    unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
    realtime_thread(50);
    let sock = UdpSocket::bind(("0.0.0.0", port))
        .with_context(|| format!("floor: binding UDP port {port}"))?;
    sock.set_nonblocking(true).context("floor: O_NONBLOCK")?;
    let to = SocketAddrV4::new(peer, port);
    let frame = vec![0x5au8; bytes];
    let mut buf = [0u8; 2048];
    let mut next = monotonic();
    loop {
        next += period;
        sleep_until(next);
        while sock.recv(&mut buf).is_ok() {}
        // A lost datagram changes nothing here: the peer only drains.
        let _ = sock.send_to(&frame, to);
    }
}

fn monotonic() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn sleep_until(t: Duration) {
    let ts = libc::timespec {
        tv_sec: t.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(t.subsec_nanos()),
    };
    // SAFETY: valid timespec; an interrupted sleep just ends the period early.
    unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        )
    };
}

/// Run a floor loop with `period` on both nodes for `window` (after a second of warm-up)
/// and return their CPU use, measured like the daemons' idle CPU.
pub fn measure(rig: &Rig, period: Duration, window: Duration) -> anyhow::Result<Idle> {
    let exe = std::env::current_exe().context("locating the xtask executable")?;
    let exe = exe.to_string_lossy();
    let port = FLOOR_PORT.to_string();
    let us = period.as_micros().to_string();
    let bytes = FLOOR_BYTES.to_string();
    let mut loops = Vec::new();
    for (node, peer) in [(0, 1), (1, 0)] {
        let peer_ip = rig.ip(peer).to_string();
        loops.push(rig.spawn_logged(
            node,
            &exe,
            &[
                "bench", "failover", "--", "--floor", &peer_ip, &port, &us, &bytes,
            ],
            "floor.log",
        )?);
    }
    std::thread::sleep(Duration::from_secs(1));
    let mut pids = Vec::new();
    for l in &mut loops {
        let pid = l
            .child()
            .map(|c| c.id() as i32)
            .context("floor loop has no process")?;
        pids.push(pid);
    }
    let before: Vec<Option<f64>> = pids.iter().map(|&p| cpu_secs(p)).collect();
    let t0 = Instant::now();
    std::thread::sleep(window);
    let after: Vec<Option<f64>> = pids.iter().map(|&p| cpu_secs(p)).collect();
    let secs = t0.elapsed().as_secs_f64();
    let pct = |i: usize| -> anyhow::Result<f64> {
        match (before[i], after[i]) {
            (Some(b), Some(a)) => Ok((a - b).max(0.0) / secs * 100.0),
            _ => anyhow::bail!("the floor loop on node {i} exited (see floor.log)"),
        }
    };
    let idle = Idle {
        master_pct: pct(0)?,
        backup_pct: pct(1)?,
    };
    drop(loops);
    Ok(idle)
}
