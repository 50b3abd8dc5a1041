//! The I/O side of the ICMP echo check ([`super::CheckKind::Ping`]): one socket per probe,
//! one echo request, wait for the reply.
//!
//! Unprivileged ICMP datagram sockets are tried first (allowed when the gid is inside
//! `net.ipv4.ping_group_range`, which also governs ICMPv6); the kernel then assigns the
//! identifier and hands each socket only the replies to it. Otherwise a raw socket
//! (CAP_NET_RAW) is used: every raw ICMP socket sees every ICMP packet, so replies are
//! matched by source, random identifier, sequence and payload ([`icmp::verdict`]), which keeps
//! concurrent probes from taking each other's replies. A per-probe socket keeps the probe
//! self-contained; the codec is in [`super::icmp`].

use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::icmp::{self, Echo, Family, Verdict};

/// Which kind of ICMP socket a probe used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    /// Unprivileged ICMP datagram socket (`net.ipv4.ping_group_range`).
    Datagram,
    /// Raw socket (CAP_NET_RAW).
    Raw,
}

/// A successful echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// The socket kind that was used.
    pub kind: SocketKind,
    /// Round-trip time.
    pub rtt: Duration,
}

/// Fixed part of the payload; a random word follows so a stale or foreign reply with the
/// same identifier and sequence still does not match.
const PAYLOAD_TAG: &[u8] = b"ha-lvs ping ";
/// Largest packet read (an ICMP error quotes at most 576 / 1280 bytes; replies echo ours).
const RECV_BUF: usize = 1500;

/// `setsockopt` levels and names of the kernel-side ICMP type filters of raw sockets.
const SOL_RAW: libc::c_int = 255;
const ICMP_FILTER: libc::c_int = 1;
const ICMP6_FILTER: libc::c_int = 1;

/// Send one echo request to `target` (the port is ignored, an IPv6 scope id is kept) and
/// wait for the reply. Runs until a reply or an error arrives: the caller bounds it with the
/// check's timeout. The error says why the target is considered down.
pub async fn echo(target: SocketAddr) -> Result<Reply, String> {
    let ip = target.ip();
    let family = Family::of(ip);
    let (sock, kind) = open(family)?;
    let err = |what: &str, e: std::io::Error| format!("{what} {ip}: {e}");
    // Port 0; an IPv6 scope id (link-local targets) is kept.
    let mut dest = target;
    dest.set_port(0);
    let dest = SockAddr::from(dest);
    let random = super::synprobe::random_u32();
    let mut sent = Echo {
        id: (random >> 16) as u16,
        seq: random as u16,
        payload: [PAYLOAD_TAG, &super::synprobe::random_u32().to_be_bytes()].concat(),
    };
    if kind == SocketKind::Datagram {
        // Connected: errors about our requests (host unreachable) come back as socket errors.
        sock.connect(&dest)
            .map_err(|e| err("ICMP echo: connect to", e))?;
        // The kernel replaces the identifier with the socket's port.
        if let Some(port) = sock.local_addr().ok().and_then(|a| a.as_socket()) {
            sent.id = port.port();
        }
    }
    let request = icmp::encode_echo(family, false, &sent);
    // SAFETY: the Socket owns its descriptor, which stays open as long as the AsyncFd.
    let fd = unsafe { AsyncFd::register_with_interest(sock, Interest::READABLE | Interest::ERROR) }
        .map_err(|e| err("ICMP echo: register socket for", e.into()))?;
    let t0 = Instant::now();
    fd.get_ref()
        .send_to(&request, &dest)
        .map_err(|e| err("send echo request to", e))?;
    let mut buf = [MaybeUninit::<u8>::uninit(); RECV_BUF];
    loop {
        let mut guard = fd
            .ready(Interest::READABLE | Interest::ERROR)
            .await
            .map_err(|e| err("wait for echo reply from", e))?;
        loop {
            let (n, from) = match guard.get_inner().recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    guard.clear_ready();
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // A datagram socket reports an ICMP error about our request this way; the
                // error queue says which (IP_RECVERR).
                Err(e) => {
                    return Err(match queued_icmp_error(guard.get_inner(), family) {
                        Some((kind, code, from)) => {
                            let from = from.map(|f| format!(" from {f}")).unwrap_or_default();
                            format!(
                                "echo request to {ip}: {}{from}",
                                icmp::describe_error(family, kind, code)
                            )
                        }
                        None => err("echo request to", e),
                    });
                }
            };
            // SAFETY: recv_from initialised the first n bytes.
            let pkt: &[u8] = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), n) };
            match judge(family, kind, pkt, &from, ip, &sent) {
                Some(Verdict::Reply) => {
                    return Ok(Reply {
                        kind,
                        rtt: t0.elapsed(),
                    });
                }
                Some(Verdict::Failed { kind, code, from }) => {
                    return Err(format!(
                        "echo request to {ip}: {} from {from}",
                        icmp::describe_error(family, kind, code)
                    ));
                }
                None => {}
            }
        }
    }
}

/// The ICMP error queued on a datagram socket with IP_RECVERR / IPV6_RECVERR: its kind,
/// code and sender, read from the `sock_extended_err` of `recvmsg(MSG_ERRQUEUE)`.
fn queued_icmp_error(
    sock: &Socket,
    family: Family,
) -> Option<(icmp::ErrorKind, u8, Option<IpAddr>)> {
    let mut data = [0u8; 256];
    // u64 words: aligned for cmsghdr.
    let mut control = [0u64; 64];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is valid; the buffers are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: msg points at live buffers of the lengths given.
    let n = unsafe {
        libc::recvmsg(
            sock.as_raw_fd(),
            &mut msg,
            libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return None;
    }
    let ee_len = std::mem::size_of::<libc::sock_extended_err>();
    // SAFETY: msg was filled by recvmsg; the CMSG macros stay within msg_controllen.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !c.is_null() {
        // SAFETY: c is a header inside the control buffer.
        let h = unsafe { c.read_unaligned() };
        // SAFETY: pure arithmetic.
        let data_len = (h.cmsg_len as usize).saturating_sub(unsafe { libc::CMSG_LEN(0) } as usize);
        let ours = (h.cmsg_level == libc::IPPROTO_IP && h.cmsg_type == libc::IP_RECVERR)
            || (h.cmsg_level == libc::IPPROTO_IPV6 && h.cmsg_type == libc::IPV6_RECVERR);
        if ours && data_len >= ee_len {
            // SAFETY: the data holds at least a sock_extended_err (checked above).
            let ee_ptr = unsafe { libc::CMSG_DATA(c) };
            let ee = unsafe { ee_ptr.cast::<libc::sock_extended_err>().read_unaligned() };
            let icmp_origin = matches!(
                ee.ee_origin,
                libc::SO_EE_ORIGIN_ICMP | libc::SO_EE_ORIGIN_ICMP6
            );
            if let (true, Some(kind)) = (icmp_origin, icmp::error_kind(family, ee.ee_type)) {
                // SO_EE_OFFENDER: the sender's address follows the struct.
                // SAFETY: in bounds: read only when data_len covers it.
                let off = unsafe { ee_ptr.add(ee_len) };
                let from = match family {
                    Family::V4 if data_len >= ee_len + std::mem::size_of::<libc::sockaddr_in>() => {
                        // SAFETY: bounds checked by the guard.
                        let a = unsafe { off.cast::<libc::sockaddr_in>().read_unaligned() };
                        (i32::from(a.sin_family) == libc::AF_INET).then(|| {
                            IpAddr::from(std::net::Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes()))
                        })
                    }
                    Family::V6
                        if data_len >= ee_len + std::mem::size_of::<libc::sockaddr_in6>() =>
                    {
                        // SAFETY: bounds checked by the guard.
                        let a = unsafe { off.cast::<libc::sockaddr_in6>().read_unaligned() };
                        (i32::from(a.sin6_family) == libc::AF_INET6)
                            .then(|| IpAddr::from(std::net::Ipv6Addr::from(a.sin6_addr.s6_addr)))
                    }
                    _ => None,
                };
                return Some((kind, ee.ee_code, from));
            }
        }
        // SAFETY: as for CMSG_FIRSTHDR.
        c = unsafe { libc::CMSG_NXTHDR(&msg, c) };
    }
    None
}

/// What one received packet says about our request.
fn judge(
    family: Family,
    kind: SocketKind,
    pkt: &[u8],
    from: &SockAddr,
    target: IpAddr,
    sent: &Echo,
) -> Option<Verdict> {
    let (from, msg) = match (family, kind) {
        // Raw IPv4 sockets deliver the IP header too.
        (Family::V4, SocketKind::Raw) => {
            let (src, msg) = icmp::ipv4_payload(pkt)?;
            (IpAddr::V4(src), msg)
        }
        _ => (from.as_socket()?.ip(), pkt),
    };
    let msg = icmp::decode(family, msg)?;
    icmp::verdict(&msg, from, target, sent, kind == SocketKind::Raw)
}

/// Open a non-blocking ICMP socket: datagram if allowed, raw otherwise.
fn open(family: Family) -> Result<(Socket, SocketKind), String> {
    let (domain, proto, name) = match family {
        Family::V4 => (Domain::IPV4, Protocol::ICMPV4, "ICMP"),
        Family::V6 => (Domain::IPV6, Protocol::ICMPV6, "ICMPv6"),
    };
    let dgram_err = match Socket::new(domain, Type::DGRAM.nonblocking().cloexec(), Some(proto)) {
        Ok(s) => {
            if let Err(e) = set_recv_err(&s, family) {
                // Errors then only show as a timeout.
                tracing::debug!(%e, "cannot enable ICMP error reporting on a ping socket");
            }
            return Ok((s, SocketKind::Datagram));
        }
        Err(e) => e,
    };
    let raw = Socket::new(domain, Type::RAW.nonblocking().cloexec(), Some(proto)).map_err(|e| {
        // SAFETY: getgid cannot fail.
        let gid = unsafe { libc::getgid() };
        format!(
            "ping check impossible: no {name} datagram socket ({dgram_err}: gid {gid} is outside \
             net.ipv4.ping_group_range) and no raw socket ({e}: needs CAP_NET_RAW)"
        )
    })?;
    if let Err(e) = set_type_filter(&raw, family) {
        // Only an optimisation: replies are matched in user space anyway.
        tracing::debug!(%e, "cannot set the ICMP type filter of a raw socket");
    }
    Ok((raw, SocketKind::Raw))
}

/// Let the kernel pass only echo replies and errors to a raw socket, not every ICMP packet.
fn set_type_filter(sock: &Socket, family: Family) -> std::io::Result<()> {
    match family {
        Family::V4 => {
            // Bit n set = type n dropped (types >= 32 always pass).
            let pass = [
                icmp::V4_ECHO_REPLY,
                icmp::V4_DEST_UNREACH,
                icmp::V4_TIME_EXCEEDED,
            ];
            let mask: u32 = !pass.iter().fold(0u32, |m, t| m | 1 << t);
            setsockopt(sock, SOL_RAW, ICMP_FILTER, &mask)
        }
        Family::V6 => {
            // struct icmp6_filter: 256 bits, bit n set = type n blocked.
            let mut filt = [u32::MAX; 8];
            for t in [
                icmp::V6_ECHO_REPLY,
                icmp::V6_DEST_UNREACH,
                icmp::V6_TIME_EXCEEDED,
            ] {
                filt[usize::from(t >> 5)] &= !(1u32 << (t & 31));
            }
            setsockopt(sock, libc::IPPROTO_ICMPV6, ICMP6_FILTER, &filt)
        }
    }
}

/// Have every ICMP error about our request (not only the "hard" ones) reported on a
/// datagram socket, so an unreachable target is down at once instead of at the timeout.
fn set_recv_err(sock: &Socket, family: Family) -> std::io::Result<()> {
    let on: libc::c_int = 1;
    match family {
        Family::V4 => setsockopt(sock, libc::IPPROTO_IP, libc::IP_RECVERR, &on),
        Family::V6 => setsockopt(sock, libc::IPPROTO_IPV6, libc::IPV6_RECVERR, &on),
    }
}

/// setsockopt(2) with a plain-data value.
fn setsockopt<T: Copy>(
    sock: &Socket,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> std::io::Result<()> {
    // SAFETY: `value` points to a live, initialised T of the size given.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
