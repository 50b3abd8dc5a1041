//! What B hears from A: a packet socket on B's interface timestamps every heartbeat frame
//! from A (VRRP, IP protocol 112, or our UDP port 694), so each fault's phase in the
//! heartbeat cycle is measured instead of assumed: phase = fault - A's last frame.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use testkit::netns::Netns;

use super::rig::{IFACE, realtime_thread};

const ETH_P_ALL: u16 = 0x0003;
const ETH_P_IP: u16 = 0x0800;
const IPPROTO_VRRP: u8 = 112;
const HB_PORT: u16 = 694;
const KEEP: usize = 256;

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    frames: Mutex<VecDeque<Instant>>,
    /// Longest gap between two consecutive frames since the last [`Sniffer::reset_gap`].
    max_gap: Mutex<Duration>,
}

/// A running capture; stops when dropped.
pub struct Sniffer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Sniffer {
    /// Capture heartbeats from `from` arriving on `IFACE` in namespace `ns`.
    pub fn start(ns: &Netns, from: Ipv4Addr) -> anyhow::Result<Sniffer> {
        let fd = ns
            .try_run(open_socket)
            .context("entering the backup's namespace")??;
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            realtime_thread(40);
            capture(&fd, from, &s)
        });
        Ok(Sniffer {
            shared,
            thread: Some(thread),
        })
    }

    /// Time from A's last heartbeat frame before `fault` to `fault`.
    pub fn since_last_before(&self, fault: Instant) -> Option<Duration> {
        let f = lock(&self.shared.frames);
        f.iter().rev().find(|&&t| t <= fault).map(|&t| fault - t)
    }

    /// Start a new window for [`Sniffer::max_gap`].
    pub fn reset_gap(&self) {
        *lock(&self.shared.max_gap) = Duration::ZERO;
    }

    /// Longest gap between two of A's heartbeat frames at B since [`Sniffer::reset_gap`]:
    /// how close the window came to the backup's detection threshold.
    pub fn max_gap(&self) -> Duration {
        *lock(&self.shared.max_gap)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A packet socket bound to `IFACE` of the current namespace, with a 50 ms receive timeout.
fn open_socket() -> anyhow::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(ETH_P_ALL.to_be()),
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error()).context("opening a packet socket");
    }
    // SAFETY: `raw` is a fresh, valid descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let name = std::ffi::CString::new(IFACE).context("interface name")?;
    // SAFETY: valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(std::io::Error::last_os_error()).context("looking up eth0's index");
    }
    // SAFETY: sockaddr_ll is plain data; zero is a valid initial value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = ETH_P_ALL.to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: pointer and length describe `sll`.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const sll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("binding the packet socket");
    }
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 50_000,
    };
    // SAFETY: pointer and length describe `tv`.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("setting SO_RCVTIMEO");
    }
    Ok(fd)
}

fn capture(fd: &OwnedFd, from: Ipv4Addr, s: &Shared) {
    let mut buf = [0u8; 2048];
    while !s.stop.load(Ordering::Relaxed) {
        // SAFETY: the buffer pointer and length describe `buf`.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let at = Instant::now();
        let Ok(n) = usize::try_from(n) else {
            continue; // timeout or signal
        };
        if is_heartbeat(&buf[..n], from) {
            let mut f = lock(&s.frames);
            if let Some(&last) = f.back() {
                let mut g = lock(&s.max_gap);
                *g = (*g).max(at - last);
            }
            if f.len() == KEEP {
                f.pop_front();
            }
            f.push_back(at);
        }
    }
}

/// An Ethernet frame carrying IPv4 from `from` that is VRRP or UDP to port 694.
fn is_heartbeat(frame: &[u8], from: Ipv4Addr) -> bool {
    let Some(ethertype) = frame.get(12..14) else {
        return false;
    };
    if u16::from_be_bytes([ethertype[0], ethertype[1]]) != ETH_P_IP {
        return false;
    }
    let ip = &frame[14..];
    let Some(&vihl) = ip.first() else {
        return false;
    };
    let ihl = usize::from(vihl & 0x0f) * 4;
    let (Some(&proto), Some(src)) = (ip.get(9), ip.get(12..16)) else {
        return false;
    };
    if src != from.octets() {
        return false;
    }
    match proto {
        IPPROTO_VRRP => true,
        17 => ip
            .get(ihl + 2..ihl + 4)
            .is_some_and(|p| u16::from_be_bytes([p[0], p[1]]) == HB_PORT),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(proto: u8, src: [u8; 4], dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
        let mut ip = vec![0u8; 20];
        ip[0] = 0x45;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&src);
        f.extend(ip);
        f.extend([0, 1]);
        f.extend(dport.to_be_bytes());
        f
    }

    #[test]
    fn recognises_heartbeats_of_the_peer_only() {
        let a = Ipv4Addr::new(10, 77, 0, 1);
        assert!(is_heartbeat(&frame(112, a.octets(), 0), a));
        assert!(is_heartbeat(&frame(17, a.octets(), 694), a));
        assert!(!is_heartbeat(&frame(17, a.octets(), 7777), a));
        assert!(!is_heartbeat(&frame(112, [10, 77, 0, 3], 0), a));
        assert!(!is_heartbeat(&frame(17, a.octets(), 694)[..30], a));
        assert!(!is_heartbeat(&[0u8; 5], a));
    }
}
