//! Ping nodes (heartbeat's `ping` / `ping_group`): ICMP echo reachability of configured
//! addresses, fed to `Node::handle_ping`.
//!
//! A round sends one echo request to every address and waits up to `timeout` for replies; the
//! round succeeds when any address answers (a ping group is up while any member answers).
//! Reachability is lost after `failures` failed rounds in a row and regained at the first
//! successful round, so one lost packet does not move resources.
//!
//! Probing runs on its own thread with a blocking socket: unprivileged ICMP datagram sockets
//! (`net.ipv4.ping_group_range`) when allowed, raw sockets (root) otherwise.

use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::mpsc;

use crate::{Error, Result};

/// Ping probing parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingConfig {
    /// Addresses to probe.
    pub targets: Vec<String>,
    /// Time between rounds.
    pub interval: Duration,
    /// How long a round waits for replies.
    pub timeout: Duration,
    /// Failed rounds in a row before reachability is lost.
    pub failures: u32,
}

impl PingConfig {
    /// Probe `targets` every `interval` (at least 100 ms), 3 failures to lose reachability.
    pub fn new(targets: Vec<String>, interval: Duration) -> Self {
        let interval = interval.max(Duration::from_millis(100));
        PingConfig {
            targets,
            interval,
            timeout: interval.min(Duration::from_secs(1)),
            failures: 3,
        }
    }
}

/// A running prober; dropping it stops the probes (at the end of the current round).
#[derive(Debug)]
pub struct Pinger {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Pinger {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// RFC 1071 Internet checksum.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        sum += u32::from(w);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request (ICMPv4 type 8 or ICMPv6 type 128) with `id`, `seq` and a payload.
pub fn echo_request(v6: bool, id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"ha-ping!");
    if !v6 {
        // The kernel fills in the ICMPv6 checksum (it needs the pseudo-header).
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// If `packet` (ICMP, possibly behind an IPv4 header on raw sockets) is an echo reply, its
/// sequence number.
pub fn parse_reply(v6: bool, raw: bool, packet: &[u8]) -> Option<u16> {
    let icmp = if raw && !v6 {
        let ihl = usize::from(packet.first()? & 0x0F) * 4;
        packet.get(ihl..)?
    } else {
        packet
    };
    let want = if v6 { 129 } else { 0 };
    if *icmp.first()? != want || icmp.len() < 8 {
        return None;
    }
    Some(u16::from_be_bytes([icmp[6], icmp[7]]))
}

struct Prober {
    socket: Socket,
    v6: bool,
    raw: bool,
    targets: Vec<SocketAddr>,
}

impl Prober {
    fn open(v6: bool, targets: Vec<SocketAddr>) -> Result<Prober> {
        let (domain, proto) = if v6 {
            (Domain::IPV6, Protocol::ICMPV6)
        } else {
            (Domain::IPV4, Protocol::ICMPV4)
        };
        let (socket, raw) = match Socket::new(domain, Type::DGRAM, Some(proto)) {
            Ok(s) => (s, false),
            Err(_) => (
                Socket::new(domain, Type::RAW, Some(proto)).map_err(|e| {
                    Error::io("ICMP socket (needs root or net.ipv4.ping_group_range)", e)
                })?,
                true,
            ),
        };
        Ok(Prober {
            socket,
            v6,
            raw,
            targets,
        })
    }

    /// One round: true when any target answered within `timeout`.
    fn round(&self, seq: u16, timeout: Duration) -> bool {
        let id = (std::process::id() & 0xFFFF) as u16;
        let req = echo_request(self.v6, id, seq);
        for t in &self.targets {
            if let Err(e) = self.socket.send_to(&req, &(*t).into()) {
                tracing::debug!(target = %t, error = %e, "ping send failed");
            }
        }
        let deadline = Instant::now() + timeout;
        let mut buf = [MaybeUninit::<u8>::uninit(); 1500];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if self.socket.set_read_timeout(Some(left)).is_err() {
                return false;
            }
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    // SAFETY: recv_from initialised the first n bytes.
                    let pkt: Vec<u8> = buf[..n]
                        .iter()
                        .map(|b| unsafe { b.assume_init() })
                        .collect();
                    let from = from.as_socket().map(|a| a.ip());
                    if parse_reply(self.v6, self.raw, &pkt) == Some(seq)
                        && from.is_some_and(|f| self.targets.iter().any(|t| t.ip() == f))
                    {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    }
}

/// Start probing; reachability (true/false) goes to `tx` at the start and on every change.
pub fn spawn_pinger(cfg: PingConfig, tx: mpsc::Sender<bool>) -> Result<Pinger> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for t in &cfg.targets {
        let ip: IpAddr = t
            .parse()
            .map_err(|_| Error::Config(format!("ping node `{t}` is not an IP address")))?;
        let sa = SocketAddr::new(ip, 0);
        if ip.is_ipv6() {
            v6.push(sa)
        } else {
            v4.push(sa)
        }
    }
    let mut probers = Vec::new();
    if !v4.is_empty() {
        probers.push(Prober::open(false, v4)?);
    }
    if !v6.is_empty() {
        probers.push(Prober::open(true, v6)?);
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    std::thread::Builder::new()
        .name("ha-ping".into())
        .spawn(move || {
            let mut seq: u16 = 0;
            let mut failed = 0u32;
            let mut reported: Option<bool> = None;
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                let t0 = Instant::now();
                seq = seq.wrapping_add(1);
                let ok = probers.iter().any(|p| p.round(seq, cfg.timeout));
                failed = if ok { 0 } else { failed + 1 };
                let reachable = match reported {
                    None => ok,
                    Some(_) if ok => true,
                    Some(prev) => prev && failed < cfg.failures.max(1),
                };
                if reported != Some(reachable) {
                    tracing::info!(reachable, targets = ?cfg.targets, "ping nodes reachability");
                    if tx.blocking_send(reachable).is_err() {
                        return;
                    }
                    reported = Some(reachable);
                }
                if let Some(rest) = cfg.interval.checked_sub(t0.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
        })
        .map_err(|e| Error::io("spawn ping thread", e))?;
    Ok(Pinger { stop })
}
