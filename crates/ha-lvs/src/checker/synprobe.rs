//! The I/O side of the half-open TCP check ([`super::CheckKind::TcpSyn`]): a raw TCP socket per
//! local source address, bound to it, sends SYNs with crafted TCP headers and reads the
//! replies (SYN-ACK = open, RST = closed). No socket owns the SYN's source port, so the kernel
//! itself answers a SYN-ACK with RST and the server drops its half-open connection. Needs
//! CAP_NET_RAW. Targets of both families can be probed in batches
//! ([`SynProber::send_untracked`]; IPv4 also [`SynProber::send_batch`]) or one by one
//! ([`SynProber::probe`], [`SynProber::probe6`]). IPv6 goes through raw IPv6 TCP sockets,
//! which send and deliver the TCP header without the IPv6 header.
//!
//! Why: a full connect costs a socket, a three-way handshake and a teardown per probe (on
//! loopback the prober is also charged for the server's side); this costs a share of one
//! `sendmmsg` and one `recvmmsg` of a filtered reply.
//!
//! Cost, measured with `cargo xtask bench checker` (10,000 endpoints every second, listeners on
//! the same loopback): about 10 us of CPU per probe, 90 % of it kernel time. Loopback runs the
//! receiving side of each packet in the sender's softirq, so the checker is charged for the
//! listener's work too: SYN -> request sock -> SYN-ACK, RST -> drop (perf: the
//! `tcp_conn_request` subtree is ~20 % of the checker's samples, and two of the three packet
//! deliveries per probe another ~19 %), about 40 % of the figure, which a remote real server
//! would pay itself. Of the rest: the SYN send path ~22 %, the kernel's RST to the SYN-ACK
//! ~11 %, raw-socket clone and `recvmmsg` ~8 %, user space ~10 %. Sending through the bound
//! raw TCP sockets rather than an IP_HDRINCL socket measured the same within noise (it saves a
//! route allocation per packet and spends it on `ip_append_data`); it is kept because it needs
//! one socket less and the kernel, not we, fills the IP header.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::idhash::IdMap;
use super::syn::{Segment, Segment6, TCP_HEADER_LEN, Verdict};

/// Length of the IPv4 header of our segments (no options).
const IP_HEADER_LEN: usize = 20;

/// Who waits for a reply.
enum Waiter {
    /// A [`SynProber::probe`] future.
    Future(oneshot::Sender<Verdict>),
    /// A batch sender ([`SynProber::send_batch`]): the verdict goes to the results channel.
    Batch(u64),
}

struct Pending {
    target: SocketAddr,
    waiter: Waiter,
}

/// A verdict for a batch-sent probe: (token, sequence number, verdict).
pub type BatchResult = (u64, u32, Verdict);

/// A reply to a SYN sent with [`SynProber::send_untracked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// Who answered (the probed endpoint, if genuine; IPv6 without flow label or scope).
    pub from: SocketAddr,
    /// Sequence number of the SYN it answers.
    pub seq: u32,
    /// Open or closed.
    pub verdict: Verdict,
}

struct Inner {
    /// One socket per local source address, bound to it, with its receive task; it also
    /// sends the SYNs from that address.
    recvs: Mutex<Vec<RecvSock>>,
    sport: u16,
    pending: Mutex<IdMap<u32, Pending>>,
    next_seq: AtomicU32,
    sources: Mutex<IdMap<Ipv4Addr, Ipv4Addr>>,
    sources6: Mutex<IdMap<Ipv6Addr, Ipv6Addr>>,
    /// Whether the source port is reserved for IPv6 too (IPv6 probes need it).
    v6: bool,
    results: Option<mpsc::UnboundedSender<BatchResult>>,
    /// No receive tasks: the owner reads replies with [`SynProber::receive_now`].
    polled: bool,
}

/// A shared sender/receiver of SYN probes. Dropping it stops its receive task.
pub struct SynProber {
    inner: Arc<Inner>,
    // Holds the source port so no other socket of this host gets it.
    _reserve: socket2::Socket,
}

impl Drop for SynProber {
    fn drop(&mut self) {
        for r in lock(&self.inner.recvs).drain(..) {
            if let Some(t) = r.task {
                t.abort();
            }
        }
    }
}

/// A receive socket bound to one local address and the task that reads it (none when
/// polled).
struct RecvSock {
    addr: IpAddr,
    fd: Arc<OwnedFd>,
    task: Option<JoinHandle<()>>,
}

fn raw_socket(domain: libc::c_int, protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Let only TCP segments addressed to `port` through to the receive socket. IPv4 raw sockets
/// see the IP header first; IPv6 ones start at the TCP header.
fn attach_port_filter(fd: &OwnedFd, port: u16, v6: bool) -> io::Result<()> {
    let ins = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    let mut prog = [
        ins(0xb1, 0, 0, 0),               // ldxb 4*([0]&0xf): IP header length
        ins(0x48, 0, 0, 2),               // ldh [x+2]: TCP destination port
        ins(0x15, 0, 1, u32::from(port)), // jeq port
        ins(0x06, 0, 0, 128),             // accept 128 bytes
        ins(0x06, 0, 0, 0),               // drop
    ];
    if v6 {
        prog[0] = ins(0x01, 0, 0, 0); // ldx #0: no IP header
    }
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: fprog points at `prog`, alive for the call; the kernel copies the program.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl SynProber {
    /// Open the raw sockets (needs CAP_NET_RAW) and start the receive task (call inside a tokio
    /// runtime).
    pub fn new() -> io::Result<SynProber> {
        Self::open(None, false)
    }

    /// A prober without receive tasks: its receive sockets are never registered with the
    /// reactor, so a queued reply costs the kernel no wake-up. The owner must call
    /// [`SynProber::receive_now`] regularly (every few milliseconds) while
    /// [`SynProber::has_pending`]; it settles [`SynProber::probe`] futures too.
    pub fn polled() -> io::Result<SynProber> {
        Self::open(None, true)
    }

    /// Whether the source port is reserved for IPv6 too, so IPv6 targets can be probed (no
    /// when the host has IPv6 disabled).
    pub fn has_ipv6(&self) -> bool {
        self.inner.v6
    }

    /// Whether any probe still waits for its reply.
    pub fn has_pending(&self) -> bool {
        !lock(&self.inner.pending).is_empty()
    }

    /// Like [`SynProber::new`], delivering the verdicts of [`SynProber::send_batch`] to
    /// `results`.
    pub fn with_results(results: mpsc::UnboundedSender<BatchResult>) -> io::Result<SynProber> {
        Self::open(Some(results), false)
    }

    fn open(
        results: Option<mpsc::UnboundedSender<BatchResult>>,
        polled: bool,
    ) -> io::Result<SynProber> {
        // Reserve a source port: a bound, never listening socket, so SYN-ACKs to it find no
        // socket (the kernel answers RST) and no local connect() picks the same port.
        // Dual-stack when the host has IPv6, so the port is ours in both families.
        let (reserve, v6) = match reserve_port_dual_stack() {
            Ok(r) => (r, true),
            Err(e) => {
                tracing::debug!(%e, "tcp_syn: no IPv6 source port, IPv4 only");
                let r = socket2::Socket::new(
                    socket2::Domain::IPV4,
                    socket2::Type::STREAM,
                    Some(socket2::Protocol::TCP),
                )?;
                r.bind(&std::net::SocketAddr::from(([0, 0, 0, 0], 0)).into())?;
                (r, false)
            }
        };
        let sport = reserve
            .local_addr()?
            .as_socket()
            .map(|a| a.port())
            .ok_or_else(|| io::Error::other("reserved socket has no port"))?;
        // Sockets open per source address on first use; fail now if raw sockets are denied.
        drop(raw_socket(libc::AF_INET, libc::IPPROTO_TCP)?);
        let inner = Arc::new(Inner {
            recvs: Mutex::new(Vec::new()),
            sport,
            pending: Mutex::new(IdMap::default()),
            next_seq: AtomicU32::new(random_u32()),
            sources: Mutex::new(IdMap::default()),
            sources6: Mutex::new(IdMap::default()),
            v6,
            results,
            polled,
        });
        Ok(SynProber {
            inner,
            _reserve: reserve,
        })
    }

    /// Open the receive socket for replies to local address `addr` (if not open yet) and
    /// start its task. Bound to `addr` so the kernel clones to it only TCP segments *to*
    /// that address: not our own SYNs nor the kernel's RSTs (on loopback every segment of
    /// the exchange is also an incoming one), nor other local traffic.
    fn open_recv(&self, addr: IpAddr) -> io::Result<()> {
        let mut recvs = lock(&self.inner.recvs);
        if recvs.iter().any(|r| r.addr == addr) {
            return Ok(());
        }
        let (domain, v6) = match addr {
            IpAddr::V4(_) => (libc::AF_INET, false),
            IpAddr::V6(_) => (libc::AF_INET6, true),
        };
        let recv = raw_socket(domain, libc::IPPROTO_TCP)?;
        attach_port_filter(&recv, self.inner.sport, v6)?;
        let local = socket2::SockAddr::from(SocketAddr::new(addr, 0));
        // SAFETY: `local` is a valid socket address of the length it reports.
        let r = unsafe { libc::bind(recv.as_raw_fd(), local.as_ptr().cast(), local.len()) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("bind tcp_syn receive socket to {addr}: {e}"),
            ));
        }
        // Replies of a whole tick's SYNs arrive in a burst, and a tick's SYNs leave in one:
        // room for thousands each way (on a real link the qdisc holds them a while).
        set_buffer(&recv, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, 8 << 20);
        set_buffer(&recv, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, 4 << 20);
        // Don't fragment, strictly: 40-byte SYNs never need it, and the kernel then leaves the
        // IP id 0 instead of drawing one from its shared id table per packet (a cache miss).
        // (IPv4 only: IPv6 has no in-flight fragmentation and no id to draw for a SYN.)
        let pmtu: libc::c_int = libc::IP_PMTUDISC_DO;
        let r = if v6 {
            0
        } else {
            // SAFETY: pmtu is a valid c_int for the call.
            unsafe {
                libc::setsockopt(
                    recv.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_MTU_DISCOVER,
                    (&pmtu as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            }
        };
        if r < 0 {
            tracing::debug!(e = %io::Error::last_os_error(), "tcp_syn socket: IP_MTU_DISCOVER");
        }
        let fd = Arc::new(recv);
        let task = if self.inner.polled {
            None
        } else {
            let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
                io::Error::other(format!("tcp_syn prober needs a tokio runtime: {e}"))
            })?;
            let _guard = runtime.enter();
            // SAFETY: RecvFd holds the descriptor open as long as the AsyncFd lives.
            let afd = unsafe {
                AsyncFd::register_with_interest(RecvFd(fd.clone()), tokio::io::Interest::READABLE)
            }?;
            // The task holds a weak reference: dropping the prober frees Inner.
            Some(runtime.spawn(receive(Arc::downgrade(&self.inner), afd, addr)))
        };
        recvs.push(RecvSock { addr, fd, task });
        Ok(())
    }

    /// Send one SYN to `target` and wait for its verdict (bound the wait with a timeout: a
    /// silent host never answers). Cancel-safe: dropping the future forgets the probe.
    pub async fn probe(&self, target: SocketAddrV4) -> io::Result<Verdict> {
        let src = self.source_for(*target.ip())?;
        let seq = self.inner.next_seq.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.pending).insert(
            seq,
            Pending {
                target: target.into(),
                waiter: Waiter::Future(tx),
            },
        );
        let guard = Forget {
            inner: &self.inner,
            seq,
        };
        self.send_packets(&[OutSyn::v4(src, self.inner.sport, target, seq)])?;
        let v = rx
            .await
            .map_err(|_| io::Error::other("SYN receive task stopped"))?;
        std::mem::forget(guard); // the receive task already removed the entry
        Ok(v)
    }

    /// Send SYNs to many targets with few system calls; each verdict arrives on the results
    /// channel given to [`SynProber::with_results`] as (token, seq, verdict). Returns the
    /// sequence number of each SYN (for [`SynProber::forget`]); per-target errors (no source
    /// address) come back in place.
    pub fn send_batch(&self, probes: &[(u64, SocketAddrV4)]) -> Vec<io::Result<u32>> {
        let mut out = Vec::with_capacity(probes.len());
        let mut syns = Vec::with_capacity(probes.len());
        {
            let mut pending = lock(&self.inner.pending);
            for &(token, target) in probes {
                match self.source_for(*target.ip()) {
                    Ok(src) => {
                        let seq = self.inner.next_seq.fetch_add(1, Ordering::Relaxed);
                        pending.insert(
                            seq,
                            Pending {
                                target: target.into(),
                                waiter: Waiter::Batch(token),
                            },
                        );
                        syns.push(OutSyn::v4(src, self.inner.sport, target, seq));
                        out.push(Ok(seq));
                    }
                    Err(e) => out.push(Err(e)),
                }
            }
        }
        if let Err(e) = self.send_packets(&syns) {
            let mut pending = lock(&self.inner.pending);
            for r in &mut out {
                if let Ok(seq) = r {
                    pending.remove(seq);
                    *r = Err(io::Error::new(e.kind(), e.to_string()));
                }
            }
        }
        out
    }

    /// Read the replies already queued (on loopback and fast links they are there when
    /// [`SynProber::send_batch`] returns) and hand batch verdicts to `out` directly, saving
    /// the receive task's wake-up.
    pub fn receive_now(&self, out: &mut Vec<BatchResult>) {
        self.receive_all(&mut |r| out.push(r), &mut |_| {});
    }

    /// Send SYNs the prober does not track: `(source, target, seq)` each, the source from
    /// [`SynProber::source_for`] or [`SynProber::source_for6`] (same family as the target),
    /// the sequence number the caller's own key to its probe. All go out with few system
    /// calls (`sendmmsg` per run of one source), IPv4 and IPv6 alike; their replies come back
    /// from [`SynProber::receive_untracked`]. The caller matches them and handles timeouts, so
    /// a probe costs the prober no map insert nor lookup. A source of the other family than
    /// its target is refused before anything is sent.
    pub fn send_untracked(&self, syns: &[(IpAddr, SocketAddr, u32)]) -> io::Result<()> {
        let sport = self.inner.sport;
        let out = syns
            .iter()
            .map(|&(src, target, seq)| match (src, target) {
                (IpAddr::V4(s), SocketAddr::V4(t)) => Ok(OutSyn::v4(s, sport, t, seq)),
                (IpAddr::V6(s), SocketAddr::V6(t)) if self.inner.v6 => {
                    Ok(OutSyn::v6(s, sport, t, seq))
                }
                (IpAddr::V6(_), SocketAddr::V6(_)) => Err(io::Error::other(
                    "no IPv6 source port reserved (IPv6 disabled on this host?)",
                )),
                _ => Err(io::Error::other(format!(
                    "tcp_syn: source {src} and target {target} are of different families"
                ))),
            })
            .collect::<io::Result<Vec<_>>>()?;
        self.send_packets(&out)
    }

    /// Read the replies already queued (on loopback and fast links they are there when the
    /// send returns). Replies to SYNs of [`SynProber::send_untracked`] (any reply this prober
    /// does not track) go to `out`; tracked ones settle their probes as in
    /// [`SynProber::receive_now`], batch verdicts going to `batch`.
    pub fn receive_untracked(&self, out: &mut Vec<Reply>, batch: &mut Vec<BatchResult>) {
        self.receive_all(&mut |r| batch.push(r), &mut |r| out.push(r));
    }

    fn receive_all(&self, batch: &mut dyn FnMut(BatchResult), other: &mut dyn FnMut(Reply)) {
        let recvs = lock(&self.inner.recvs);
        for r in recvs.iter() {
            if let Err(e) = drain(&self.inner, &r.fd, r.addr, batch, other) {
                tracing::warn!(%e, "tcp_syn receive");
            }
        }
    }

    /// Stop waiting for the reply to SYN `seq` (its probe timed out).
    pub fn forget(&self, seq: u32) {
        lock(&self.inner.pending).remove(&seq);
    }

    /// Send prepared SYNs with `sendmmsg`, each from the receive socket bound to its source
    /// address (runs of one source share a call). The sockets are plain raw TCP sockets, not
    /// IP_HDRINCL: the kernel writes the IP header from the bound source, and its route
    /// lookup can use the cached route (a header-including send asks for a fresh route
    /// object per packet, allocated and freed through RCU).
    fn send_packets(&self, syns: &[OutSyn]) -> io::Result<()> {
        let recvs = lock(&self.inner.recvs);
        for run in syns.chunk_by(|a, b| a.src == b.src) {
            let src = run[0].src;
            let fd = recvs
                .iter()
                .find(|r| r.addr == src)
                .map(|r| r.fd.as_raw_fd())
                .ok_or_else(|| io::Error::other(format!("no tcp_syn socket for source {src}")))?;
            sendmmsg_all(fd, run)?;
        }
        Ok(())
    }

    /// The local address the kernel would use towards `dst` (cached: a UDP connect per new
    /// destination address).
    /// (Opens the receive socket for replies to that source.)
    pub fn source_for(&self, dst: Ipv4Addr) -> io::Result<Ipv4Addr> {
        if let Some(s) = lock(&self.inner.sources).get(&dst) {
            return Ok(*s);
        }
        let IpAddr::V4(src) = route_source(SocketAddr::from((dst, 9)))? else {
            return Err(io::Error::other("no IPv4 source address"));
        };
        self.open_recv(src.into())?;
        lock(&self.inner.sources).insert(dst, src);
        Ok(src)
    }

    /// Send one SYN to the IPv6 `target` and wait for its verdict, like
    /// [`SynProber::probe`]. Cancel-safe.
    pub async fn probe6(&self, target: SocketAddrV6) -> io::Result<Verdict> {
        if !self.inner.v6 {
            return Err(io::Error::other(
                "no IPv6 source port reserved (IPv6 disabled on this host?)",
            ));
        }
        let src = self.source_for6(target)?;
        let seq = self.inner.next_seq.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.pending).insert(
            seq,
            Pending {
                target: SocketAddr::V6(SocketAddrV6::new(*target.ip(), target.port(), 0, 0)),
                waiter: Waiter::Future(tx),
            },
        );
        let guard = Forget {
            inner: &self.inner,
            seq,
        };
        self.send_packets(&[OutSyn::v6(src, self.inner.sport, target, seq)])?;
        let v = rx
            .await
            .map_err(|_| io::Error::other("SYN receive task stopped"))?;
        std::mem::forget(guard); // the receive task already removed the entry
        Ok(v)
    }

    /// The local IPv6 address the kernel would use towards `dst` (cached; opens the receive
    /// socket for replies to it).
    pub fn source_for6(&self, dst: SocketAddrV6) -> io::Result<Ipv6Addr> {
        if let Some(s) = lock(&self.inner.sources6).get(dst.ip()) {
            return Ok(*s);
        }
        let to = SocketAddrV6::new(*dst.ip(), 9, 0, dst.scope_id());
        let IpAddr::V6(src) = route_source(to.into())? else {
            return Err(io::Error::other("no IPv6 source address"));
        };
        self.open_recv(src.into())?;
        lock(&self.inner.sources6).insert(*dst.ip(), src);
        Ok(src)
    }
}

/// The local address the kernel's routing picks towards `dst` (a connected UDP socket: no
/// packet is sent).
fn route_source(dst: SocketAddr) -> io::Result<IpAddr> {
    let any: SocketAddr = match dst {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let u = std::net::UdpSocket::bind(any)?;
    u.connect(dst)?;
    Ok(u.local_addr()?.ip())
}

/// A bound, never listening dual-stack TCP socket holding a port in both families.
fn reserve_port_dual_stack() -> io::Result<socket2::Socket> {
    let s = socket2::Socket::new(
        socket2::Domain::IPV6,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    s.set_only_v6(false)?;
    s.bind(&std::net::SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)).into())?;
    Ok(s)
}

/// Set a socket buffer size: the FORCE option works as root and beyond the sysctl maximum;
/// fall back to the capped option otherwise (a failure only leaves the default).
fn set_buffer(fd: &OwnedFd, force: libc::c_int, capped: libc::c_int, size: libc::c_int) {
    for opt in [force, capped] {
        // SAFETY: size is a valid c_int for the call.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            break;
        }
    }
}

/// A SYN ready to go: the TCP header (checksum over the pseudo-header filled in; the kernel
/// adds the IP header) and where it goes from.
struct OutSyn {
    src: IpAddr,
    tcp: [u8; TCP_HEADER_LEN],
    dst: socket2::SockAddr,
}

impl OutSyn {
    fn v4(src: Ipv4Addr, sport: u16, target: SocketAddrV4, seq: u32) -> OutSyn {
        let pkt = Segment::syn(src, sport, *target.ip(), target.port(), seq).encode();
        let mut tcp = [0; TCP_HEADER_LEN];
        tcp.copy_from_slice(&pkt[IP_HEADER_LEN..]);
        OutSyn {
            src: src.into(),
            tcp,
            // Port 0: raw sockets take the protocol, not a port, from the address.
            dst: SocketAddrV4::new(*target.ip(), 0).into(),
        }
    }

    fn v6(src: Ipv6Addr, sport: u16, target: SocketAddrV6, seq: u32) -> OutSyn {
        OutSyn {
            src: src.into(),
            tcp: Segment6::syn(src, sport, *target.ip(), target.port(), seq).encode(),
            // The scope picks the interface of a link-local target.
            dst: SocketAddrV6::new(*target.ip(), 0, 0, target.scope_id()).into(),
        }
    }
}

/// `sendmmsg` `syns` on raw socket `fd`, retrying the rest after a partial send.
fn sendmmsg_all(fd: std::os::fd::RawFd, syns: &[OutSyn]) -> io::Result<()> {
    let mut iov: Vec<libc::iovec> = syns
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.tcp.as_ptr() as *mut libc::c_void,
            iov_len: p.tcp.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iov
        .iter_mut()
        .zip(syns)
        .map(|(v, p)| {
            // SAFETY: an all-zero msghdr is valid; the pointers are filled in below.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = p.dst.as_ptr() as *mut libc::c_void;
            h.msg_hdr.msg_namelen = p.dst.len();
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    let mut done = 0;
    while done < msgs.len() {
        let rest = &mut msgs[done..];
        // SAFETY: every header points at live iovecs, packets and addresses.
        let n = unsafe {
            libc::sendmmsg(
                fd,
                rest.as_mut_ptr(),
                rest.len().min(1024) as libc::c_uint,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

/// Removes a pending probe whose future was dropped (timeout).
struct Forget<'a> {
    inner: &'a Inner,
    seq: u32,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(&self.inner.pending).remove(&self.seq);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere cannot leave these maps inconsistent: keep using them.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A random 32-bit number (from the std hasher's random keys; not for cryptography).
pub(crate) fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    h.finish() as u32
}

/// A receive socket, for registration with the reactor.
struct RecvFd(Arc<OwnedFd>);

impl AsRawFd for RecvFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

/// Replies read per recvmmsg call.
const RECV_BATCH: usize = 128;
/// Bytes kept of each reply (the filter truncates to 128 as well).
const RECV_LEN: usize = 128;

/// Read every queued reply (recvmmsg, [`RECV_BATCH`] at a time) and settle the probes they
/// answer: futures directly, batch probes through `batch`; replies to SYNs the prober does not
/// track go to `other`. Returns when the socket is empty.
fn drain(
    inner: &Inner,
    recv: &OwnedFd,
    local: IpAddr,
    batch: &mut dyn FnMut(BatchResult),
    other: &mut dyn FnMut(Reply),
) -> io::Result<()> {
    let mut bufs = [[0u8; RECV_LEN]; RECV_BATCH];
    // IPv6 raw sockets deliver no IP header: the source comes from the socket address.
    // SAFETY: an all-zero sockaddr_in6 is valid.
    let mut names: [libc::sockaddr_in6; RECV_BATCH] = unsafe { std::mem::zeroed() };
    loop {
        let mut iov: [libc::iovec; RECV_BATCH] = std::array::from_fn(|i| libc::iovec {
            iov_base: bufs[i].as_mut_ptr().cast(),
            iov_len: RECV_LEN,
        });
        // SAFETY: an all-zero mmsghdr is valid; iov pointers are set below.
        let mut msgs: [libc::mmsghdr; RECV_BATCH] = unsafe { std::mem::zeroed() };
        for ((m, v), name) in msgs.iter_mut().zip(iov.iter_mut()).zip(names.iter_mut()) {
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
            if local.is_ipv6() {
                m.msg_hdr.msg_name = (name as *mut libc::sockaddr_in6).cast();
                m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as u32;
            }
        }
        // SAFETY: every header points at a live iovec over a live buffer (and, for IPv6, at a
        // live sockaddr_in6).
        let n = unsafe {
            libc::recvmmsg(
                recv.as_raw_fd(),
                msgs.as_mut_ptr(),
                RECV_BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(()),
                io::ErrorKind::Interrupted => continue,
                _ => Err(e),
            };
        }
        let n = n as usize;
        let mut pending = lock(&inner.pending);
        for ((m, b), name) in msgs.iter().zip(bufs.iter()).zip(names.iter()).take(n) {
            let len = (m.msg_len as usize).min(RECV_LEN);
            let (from, dport, reply) = match local {
                IpAddr::V4(_) => {
                    let Some(seg) = Segment::decode(&b[..len]) else {
                        continue;
                    };
                    let from = SocketAddr::V4(SocketAddrV4::new(seg.src, seg.sport));
                    (from, seg.dport, seg.reply_to_syn())
                }
                IpAddr::V6(local) => {
                    let src = Ipv6Addr::from(name.sin6_addr.s6_addr);
                    let Some(seg) = Segment6::decode(src, local, &b[..len]) else {
                        continue;
                    };
                    let from = SocketAddr::V6(SocketAddrV6::new(src, seg.sport, 0, 0));
                    (from, seg.dport, seg.reply_to_syn())
                }
            };
            if dport != inner.sport {
                continue;
            }
            let Some((verdict, seq)) = reply else {
                continue;
            };
            // Most replies answer untracked SYNs: skip the map while it is empty.
            let tracked =
                !pending.is_empty() && pending.get(&seq).is_some_and(|p| p.target == from);
            if !tracked {
                other(Reply { from, seq, verdict });
            } else if let Some(p) = pending.remove(&seq) {
                match p.waiter {
                    Waiter::Future(tx) => {
                        let _ = tx.send(verdict);
                    }
                    Waiter::Batch(token) => batch((token, seq, verdict)),
                }
            }
        }
        drop(pending);
        if n < RECV_BATCH {
            return Ok(());
        }
    }
}

async fn receive(inner: std::sync::Weak<Inner>, fd: AsyncFd<RecvFd>, local: IpAddr) {
    loop {
        let mut guard = match fd.readable().await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(%e, "tcp_syn receive socket failed");
                return;
            }
        };
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let r = drain(
            &inner,
            &fd.get_ref().0,
            local,
            &mut |res| {
                if let Some(tx) = &inner.results {
                    let _ = tx.send(res);
                }
            },
            // Untracked SYNs are sent only by owners of polled probers.
            &mut |_| {},
        );
        if let Err(e) = r {
            tracing::warn!(%e, "tcp_syn receive");
        }
        // Only a read that hit EAGAIN proves the socket empty; a short batch is close enough:
        // a reply arriving later raises a new edge.
        guard.clear_ready();
    }
}
