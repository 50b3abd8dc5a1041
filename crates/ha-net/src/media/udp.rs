//! UDP media: unicast to a list of peers, multicast, broadcast; each bound to one interface.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};

use crate::{Error, Result};

/// heartbeat's registered port.
pub const DEFAULT_PORT: u16 = 694;

/// How a UDP medium addresses its peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UdpMode {
    /// One datagram per peer address.
    Unicast {
        /// Peer socket addresses.
        peers: Vec<SocketAddr>,
    },
    /// One datagram to a multicast group.
    Multicast {
        /// Group address.
        group: IpAddr,
        /// Hop limit.
        ttl: u32,
        /// Deliver our own datagrams back to us (the session ignores them).
        r#loop: bool,
    },
    /// One datagram to the limited broadcast address.
    Broadcast,
}

/// Parameters of a UDP medium.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpConfig {
    /// Interface to bind to (SO_BINDTODEVICE); empty for any.
    pub interface: String,
    /// Local port (also the destination port of multicast and broadcast).
    pub port: u16,
    /// Local address to bind; defaults to the unspecified address of the peers' family.
    pub bind: Option<IpAddr>,
    /// Addressing.
    pub mode: UdpMode,
}

/// An open UDP medium. The socket is a plain non-blocking one: the media either register a
/// duplicate of it with tokio (a receive task) or drain it from the node's timer ticks.
#[derive(Debug, Clone)]
pub struct UdpLink {
    pub(crate) socket: Arc<std::net::UdpSocket>,
    pub(crate) dests: Vec<SocketAddr>,
    /// ICMP errors for our datagrams are queued for [`UdpLink::try_recv_unreachable`].
    pub(crate) reports_unreachable: bool,
    /// The interface it is bound to (empty: any).
    pub(crate) interface: String,
}

/// Parse `IP:PORT`, `[IPv6]:PORT` or a bare `IP` (then `default_port`).
pub fn parse_peer(s: &str, default_port: u16) -> Result<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, default_port))
        .map_err(|_| Error::Config(format!("peer `{s}` is not IP, IP:PORT or [IPv6]:PORT")))
}

/// Every address configured on this host (its network namespace).
fn local_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|a| socket_addr(&a.address?).map(|s| s.ip()))
        .collect()
}

/// The IPv4 or IPv6 socket address in a kernel-filled address (`None` for other families).
fn socket_addr(a: &nix::sys::socket::SockaddrStorage) -> Option<SocketAddr> {
    match (a.as_sockaddr_in(), a.as_sockaddr_in6()) {
        (Some(v4), _) => Some(SocketAddr::V4((*v4).into())),
        (_, Some(v6)) => Some(SocketAddr::V6((*v6).into())),
        _ => None,
    }
}

fn ifindex(interface: &str) -> Result<u32> {
    nix::net::if_::if_nametoindex(interface)
        .map_err(|e| Error::io(format!("interface `{interface}`"), e.into()))
}

impl UdpLink {
    /// Open the socket: bind to the interface and port, join the group, allow broadcast.
    pub fn open(cfg: &UdpConfig) -> Result<UdpLink> {
        let ctx = |what: &str| {
            format!(
                "udp medium on `{}` port {}: {what}",
                cfg.interface, cfg.port
            )
        };
        let v6 = match &cfg.mode {
            UdpMode::Unicast { peers } => peers.first().is_some_and(SocketAddr::is_ipv6),
            UdpMode::Multicast { group, .. } => group.is_ipv6(),
            UdpMode::Broadcast => false,
        };
        let bind_ip = cfg.bind.unwrap_or(if v6 {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        });
        let bind = SocketAddr::new(bind_ip, cfg.port);
        let s = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))
            .map_err(|e| Error::io(ctx("socket"), e))?;
        s.set_reuse_address(true)
            .map_err(|e| Error::io(ctx("SO_REUSEADDR"), e))?;
        if v6 {
            s.set_only_v6(true)
                .map_err(|e| Error::io(ctx("IPV6_V6ONLY"), e))?;
        }
        if !cfg.interface.is_empty() {
            s.bind_device(Some(cfg.interface.as_bytes()))
                .map_err(|e| Error::io(ctx("SO_BINDTODEVICE (needs CAP_NET_RAW)"), e))?;
        }
        let unicast = matches!(cfg.mode, UdpMode::Unicast { .. });
        if unicast {
            // "Port unreachable" for a heartbeat tells that the peer's daemon is gone
            // (IP_RECVERR queues it with the destination it was about). Multicast and
            // broadcast never draw ICMP errors.
            use nix::sys::socket::{setsockopt, sockopt};
            let r = if v6 {
                setsockopt(&s, sockopt::Ipv6RecvErr, &true)
            } else {
                setsockopt(&s, sockopt::Ipv4RecvErr, &true)
            };
            r.map_err(|e| Error::io(ctx("IP_RECVERR"), e.into()))?;
        }
        let dests = match &cfg.mode {
            UdpMode::Unicast { peers } => {
                // One configuration lists every node (as heartbeat's ha.cf does): skip our own
                // addresses instead of sending every frame to ourselves.
                let local = match cfg.bind {
                    Some(ip) => vec![ip],
                    None => local_addresses(),
                };
                peers
                    .iter()
                    .filter(|p| !(local.contains(&p.ip()) && p.port() == cfg.port))
                    .copied()
                    .collect()
            }
            UdpMode::Broadcast => {
                s.set_broadcast(true)
                    .map_err(|e| Error::io(ctx("SO_BROADCAST"), e))?;
                vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::BROADCAST), cfg.port)]
            }
            UdpMode::Multicast { group, ttl, r#loop } => {
                let index = if cfg.interface.is_empty() {
                    0
                } else {
                    ifindex(&cfg.interface)?
                };
                match group {
                    IpAddr::V4(g) => {
                        s.join_multicast_v4_n(g, &InterfaceIndexOrAddress::Index(index))
                            .map_err(|e| Error::io(ctx(&format!("join {g}")), e))?;
                        // Only the groups this socket joined, not every group of the host.
                        s.set_multicast_all_v4(false)
                            .map_err(|e| Error::io(ctx("IP_MULTICAST_ALL"), e))?;
                        s.set_multicast_ttl_v4(*ttl)
                            .map_err(|e| Error::io(ctx("IP_MULTICAST_TTL"), e))?;
                        s.set_multicast_loop_v4(*r#loop)
                            .map_err(|e| Error::io(ctx("IP_MULTICAST_LOOP"), e))?;
                    }
                    IpAddr::V6(g) => {
                        s.join_multicast_v6(g, index)
                            .map_err(|e| Error::io(ctx(&format!("join {g}")), e))?;
                        s.set_multicast_all_v6(false)
                            .map_err(|e| Error::io(ctx("IPV6_MULTICAST_ALL"), e))?;
                        s.set_multicast_if_v6(index)
                            .map_err(|e| Error::io(ctx("IPV6_MULTICAST_IF"), e))?;
                        s.set_multicast_hops_v6(*ttl)
                            .map_err(|e| Error::io(ctx("IPV6_MULTICAST_HOPS"), e))?;
                        s.set_multicast_loop_v6(*r#loop)
                            .map_err(|e| Error::io(ctx("IPV6_MULTICAST_LOOP"), e))?;
                    }
                }
                vec![SocketAddr::new(*group, cfg.port)]
            }
        };
        s.set_nonblocking(true)
            .map_err(|e| Error::io(ctx("O_NONBLOCK"), e))?;
        s.bind(&bind.into())
            .map_err(|e| Error::io(ctx(&format!("bind {bind}")), e))?;
        Ok(UdpLink {
            socket: Arc::new(s.into()),
            dests,
            reports_unreachable: unicast,
            interface: cfg.interface.clone(),
        })
    }

    /// True for unicast media: their ICMP errors are read by
    /// [`UdpLink::try_recv_unreachable`].
    pub fn reports_unreachable(&self) -> bool {
        self.reports_unreachable
    }

    /// Take one ICMP error from the socket's error queue without blocking (`WouldBlock` when
    /// none is queued): `Some(destination)` when a datagram we sent to that destination drew
    /// "port unreachable" (nothing listens there: the peer's daemon is gone), `None` for any
    /// other error (host or network unreachable, a too-big message), which says nothing about
    /// the daemon.
    pub fn try_recv_unreachable(&self) -> std::io::Result<Option<SocketAddr>> {
        use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg};
        use std::os::fd::AsRawFd;
        let mut buf = [0u8; 64];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!(libc::sock_extended_err, libc::sockaddr_in6);
        let msg = recvmsg::<SockaddrStorage>(
            self.socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
        )
        .map_err(std::io::Error::from)?;
        let dest = msg.address.as_ref().and_then(socket_addr);
        let Ok(cmsgs) = msg.cmsgs() else {
            return Ok(None);
        };
        for c in cmsgs {
            let port_unreachable = match c {
                ControlMessageOwned::Ipv4RecvErr(e, _) => {
                    e.ee_origin == libc::SO_EE_ORIGIN_ICMP
                        && e.ee_type == 3 // destination unreachable
                        && e.ee_code == 3 // port unreachable
                }
                ControlMessageOwned::Ipv6RecvErr(e, _) => {
                    e.ee_origin == libc::SO_EE_ORIGIN_ICMP6
                        && e.ee_type == 1 // destination unreachable
                        && e.ee_code == 4 // port unreachable
                }
                _ => false,
            };
            if port_unreachable {
                return Ok(dest);
            }
        }
        Ok(None)
    }

    /// The local address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.socket
            .local_addr()
            .map_err(|e| Error::io("udp local address", e))
    }

    /// Receive one waiting datagram without blocking (`WouldBlock` when none is queued).
    pub fn try_recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.socket.recv(buf)
    }

    /// Ask the kernel to stamp every received datagram with its arrival time
    /// (SO_TIMESTAMPNS), read by [`UdpLink::try_recv_stamped`].
    pub fn enable_rx_timestamps(&self) -> Result<()> {
        use std::os::fd::AsFd;
        nix::sys::socket::setsockopt(
            &self.socket.as_fd(),
            nix::sys::socket::sockopt::ReceiveTimestampns,
            &true,
        )
        .map_err(|e| Error::io("udp medium: SO_TIMESTAMPNS", e.into()))
    }

    /// Like [`UdpLink::try_recv`], also returning the kernel's arrival stamp (wall clock,
    /// since the Unix epoch) when [`UdpLink::enable_rx_timestamps`] is on.
    pub fn try_recv_stamped(
        &self,
        buf: &mut [u8],
        cmsg: &mut Vec<u8>,
    ) -> std::io::Result<(usize, Option<std::time::Duration>)> {
        use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
        use std::os::fd::AsRawFd;
        let mut iov = [std::io::IoSliceMut::new(buf)];
        let msg = recvmsg::<()>(
            self.socket.as_raw_fd(),
            &mut iov,
            Some(cmsg),
            MsgFlags::MSG_DONTWAIT,
        )
        .map_err(std::io::Error::from)?;
        let mut stamp = None;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmTimestampns(ts) = c {
                    stamp = Some(std::time::Duration::from(ts));
                }
            }
        }
        Ok((msg.bytes, stamp))
    }

    /// A tokio socket on a duplicate of the descriptor, for an async receive task.
    /// Needs a tokio runtime.
    pub fn tokio_socket(&self) -> Result<tokio::net::UdpSocket> {
        let dup = self
            .socket
            .try_clone()
            .map_err(|e| Error::io("udp medium: dup socket", e))?;
        tokio::net::UdpSocket::from_std(dup).map_err(|e| Error::io("udp medium: register", e))
    }

    /// Receive up to [`RecvBatch::SLOTS`] waiting datagrams with one `recvmmsg` call, each
    /// with its kernel arrival stamp (see [`UdpLink::enable_rx_timestamps`]). Returns how many
    /// slots of `batch` were filled (`WouldBlock` when none was waiting).
    pub fn try_recv_batch(&self, batch: &mut RecvBatch) -> std::io::Result<usize> {
        use std::os::fd::AsRawFd;
        let slot = RecvBatch::SLOT_LEN;
        let (data, cmsg) = (&mut batch.data, &mut batch.cmsg);
        let mut iovs: [libc::iovec; RecvBatch::SLOTS] = std::array::from_fn(|i| libc::iovec {
            iov_base: data[i * slot..].as_mut_ptr().cast(),
            iov_len: slot,
        });
        // SAFETY: an all-zero mmsghdr is valid (null pointers, zero lengths).
        let mut hdrs: [libc::mmsghdr; RecvBatch::SLOTS] = unsafe { std::mem::zeroed() };
        for ((i, h), name) in hdrs.iter_mut().enumerate().zip(batch.names.iter_mut()) {
            h.msg_hdr.msg_name = std::ptr::from_mut(name).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
            h.msg_hdr.msg_iov = &mut iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = cmsg[i * RecvBatch::CMSG_LEN..].as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = RecvBatch::CMSG_LEN as _;
        }
        // SAFETY: every header points into buffers owned by `batch` (or the local iovecs)
        // that outlive the call, with their true lengths.
        let n = unsafe {
            libc::recvmmsg(
                self.socket.as_raw_fd(),
                hdrs.as_mut_ptr(),
                RecvBatch::SLOTS as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = usize::try_from(n).unwrap_or(0);
        for (i, h) in hdrs.iter().take(n).enumerate() {
            // A datagram longer than a slot arrives cut: mark it so it is dropped whole.
            let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            batch.lens[i] = if truncated { 0 } else { h.msg_len as usize };
            batch.stamps[i] = stamp_of(&h.msg_hdr);
            // SAFETY: recvmmsg filled `names[i]` with an address of `msg_namelen` bytes.
            let name = unsafe {
                <nix::sys::socket::SockaddrStorage as nix::sys::socket::SockaddrLike>::from_raw(
                    std::ptr::from_ref(&batch.names[i]).cast(),
                    Some(h.msg_hdr.msg_namelen),
                )
            };
            batch.sources[i] = name.as_ref().and_then(socket_addr);
        }
        batch.filled = n;
        Ok(n)
    }

    /// Send one frame to every destination without waiting: a full socket buffer drops it,
    /// like a lost datagram (heartbeats are superseded, control messages retransmitted).
    pub fn send(&self, frame: &[u8]) -> usize {
        // A plain non-blocking sendto: tokio's try_send_to would refuse until the reactor has
        // seen the socket writable once, dropping the first frames of a fresh socket.
        let sock = socket2::SockRef::from(&*self.socket);
        let mut sent = 0;
        for d in &self.dests {
            match sock.send_to(frame, &(*d).into()) {
                Ok(_) => sent += 1,
                Err(e) => tracing::trace!(dest = %d, error = %e, "udp send failed"),
            }
        }
        sent
    }
}

/// The SCM_TIMESTAMPNS stamp of a received message, if any.
fn stamp_of(hdr: &libc::msghdr) -> Option<std::time::Duration> {
    // SAFETY: the header was filled by recvmmsg; the CMSG macros stay within
    // msg_control..msg_control + msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                return Some(std::time::Duration::new(
                    u64::try_from(ts.tv_sec).ok()?,
                    u32::try_from(ts.tv_nsec).ok()?,
                ));
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    None
}

/// Reusable buffers for [`UdpLink::try_recv_batch`].
pub struct RecvBatch {
    data: Vec<u8>,
    cmsg: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    lens: [usize; RecvBatch::SLOTS],
    stamps: [Option<std::time::Duration>; RecvBatch::SLOTS],
    sources: [Option<SocketAddr>; RecvBatch::SLOTS],
    filled: usize,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("filled", &self.filled)
            .finish_non_exhaustive()
    }
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            data: vec![0; Self::SLOTS * Self::SLOT_LEN],
            cmsg: vec![0; Self::SLOTS * Self::CMSG_LEN],
            // SAFETY: an all-zero sockaddr_storage is valid (family AF_UNSPEC).
            names: vec![unsafe { std::mem::zeroed() }; Self::SLOTS],
            lens: [0; Self::SLOTS],
            stamps: [None; Self::SLOTS],
            sources: [None; Self::SLOTS],
            filled: 0,
        }
    }
}

impl RecvBatch {
    /// Datagrams per call.
    pub const SLOTS: usize = 8;
    /// Bytes per datagram slot (any UDP payload fits).
    pub const SLOT_LEN: usize = 65_536;
    /// Control bytes per slot (room for a timestamp).
    const CMSG_LEN: usize = 64;

    /// The datagrams of the last call (a cut datagram reads as empty).
    pub fn frames(&self) -> impl Iterator<Item = Received<'_>> {
        (0..self.filled).map(|i| {
            let start = i * Self::SLOT_LEN;
            Received {
                frame: &self.data[start..start + self.lens[i]],
                stamp: self.stamps[i],
                source: self.sources[i],
            }
        })
    }
}

/// One datagram of a [`RecvBatch`].
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    /// Its bytes (not yet authenticated).
    pub frame: &'a [u8],
    /// The kernel's arrival stamp (wall clock since the Unix epoch), if any.
    pub stamp: Option<std::time::Duration>,
    /// The address it came from.
    pub source: Option<SocketAddr>,
}
