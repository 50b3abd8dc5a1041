//! The client: UDP probes to the floating address every `period` from the client's
//! namespace, and a log of who answered when.
//!
//! The socket is created inside the client namespace and then used from ordinary threads (a
//! socket stays in the namespace it was created in), so the bench's main thread never leaves
//! the root namespace.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use testkit::netns::Netns;

use super::rig::{NODE_NAMES, PROBE_PORT, VIP, realtime_thread};

/// One answer: when it arrived and which node (index into [`NODE_NAMES`]) sent it.
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    /// Arrival time at the client.
    pub at: Instant,
    /// Node index.
    pub node: usize,
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    sent: AtomicU64,
    replies: Mutex<Vec<Reply>>,
    realtime: AtomicBool,
}

/// A running prober; stops its threads when dropped.
pub struct Prober {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Prober {
    /// Start probing `VIP:PROBE_PORT` from `client`'s namespace every `period`.
    pub fn start(client: &Netns, period: Duration) -> anyhow::Result<Prober> {
        let sock = client
            .try_run(|| UdpSocket::bind("0.0.0.0:0"))
            .context("entering the client namespace")?
            .context("binding the client's UDP socket")?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let rx = sock.try_clone().context("cloning the client socket")?;
        let shared = Arc::new(Shared::default());
        let mut threads = Vec::new();
        let s = shared.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        threads.push(std::thread::spawn(move || {
            // Real-time so the probe period holds while stress-ng and builds load both cores.
            s.realtime.store(realtime_thread(40), Ordering::Relaxed);
            let _ = ready_tx.send(());
            send_loop(&sock, period, &s)
        }));
        // Wait for the sender so `realtime()` is meaningful right away.
        let _ = ready_rx.recv_timeout(Duration::from_secs(1));
        let s = shared.clone();
        threads.push(std::thread::spawn(move || recv_loop(&rx, &s)));
        Ok(Prober { shared, threads })
    }

    /// Whether the probe threads got real-time priority.
    pub fn realtime(&self) -> bool {
        self.shared.realtime.load(Ordering::Relaxed)
    }

    /// Probes sent so far.
    pub fn sent(&self) -> u64 {
        self.shared.sent.load(Ordering::Relaxed)
    }

    fn replies(&self) -> MutexGuard<'_, Vec<Reply>> {
        self.shared
            .replies
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Arrival of the first answer from `node` at or after `after`.
    pub fn first_from(&self, node: usize, after: Instant) -> Option<Instant> {
        self.replies()
            .iter()
            .find(|r| r.at >= after && r.node == node)
            .map(|r| r.at)
    }

    /// Every answer at or after `after`.
    pub fn since(&self, after: Instant) -> Vec<Reply> {
        self.replies()
            .iter()
            .filter(|r| r.at >= after)
            .copied()
            .collect()
    }

    /// Forget answers older than `before` (keeps the log small over long runs).
    pub fn forget_before(&self, before: Instant) {
        self.replies().retain(|r| r.at >= before);
    }

    /// Wait until the last `n` answers all came from `node` (at most `limit`).
    pub fn wait_stable_from(&self, node: usize, n: usize, limit: Duration) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            {
                let r = self.replies();
                if r.len() >= n && r[r.len() - n..].iter().all(|r| r.node == node) {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn send_loop(sock: &UdpSocket, period: Duration, s: &Shared) {
    let target = SocketAddr::from((VIP, PROBE_PORT));
    let mut seq = 0u64;
    let mut next = Instant::now();
    while !s.stop.load(Ordering::Relaxed) {
        seq += 1;
        // Errors (no neighbour yet, ICMP errors reported late) only mean "no answer".
        let _ = sock.send_to(seq.to_string().as_bytes(), target);
        s.sent.fetch_add(1, Ordering::Relaxed);
        next += period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            // Fell behind (descheduled): restart the grid instead of bursting.
            next = now;
        }
    }
}

fn recv_loop(sock: &UdpSocket, s: &Shared) {
    realtime_thread(40);
    let mut buf = [0u8; 256];
    while !s.stop.load(Ordering::Relaxed) {
        let Ok((n, _)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let at = Instant::now();
        let text = String::from_utf8_lossy(&buf[..n]);
        let name = text.split(' ').next().unwrap_or("");
        if let Some(node) = NODE_NAMES.iter().position(|&x| x == name) {
            s.replies
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(Reply { at, node });
        }
    }
}
