//! The I/O side of the half-open TCP check ([`super::CheckKind::TcpSyn`]): one raw socket sends
//! SYNs with crafted headers, another reads the replies (SYN-ACK = open, RST = closed). No
//! socket owns the SYN's source port, so the kernel itself answers a SYN-ACK with RST and the
//! server drops its half-open connection. Needs CAP_NET_RAW; IPv4 only.
//!
//! Why: a full connect costs a socket, a three-way handshake and a teardown per probe (on
//! loopback the prober is also charged for the server's side); this costs one `sendto` and one
//! `recv` of a filtered reply.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::idhash::IdMap;
use super::syn::{Segment, Verdict};

/// Who waits for a reply.
enum Waiter {
    /// A [`SynProber::probe`] future.
    Future(oneshot::Sender<Verdict>),
    /// A batch sender ([`SynProber::send_batch`]): the verdict goes to the results channel.
    Batch(u64),
}

struct Pending {
    target: SocketAddrV4,
    waiter: Waiter,
}

/// A verdict for a batch-sent probe: (token, sequence number, verdict).
pub type BatchResult = (u64, u32, Verdict);

struct Inner {
    send: OwnedFd,
    /// One receive socket per local source address, bound to it, with its receive task.
    recvs: Mutex<Vec<RecvSock>>,
    sport: u16,
    pending: Mutex<IdMap<u32, Pending>>,
    next_seq: AtomicU32,
    sources: Mutex<IdMap<Ipv4Addr, Ipv4Addr>>,
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
    addr: Ipv4Addr,
    fd: Arc<OwnedFd>,
    task: Option<JoinHandle<()>>,
}

fn raw_socket(protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
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

/// Let only TCP segments addressed to `port` through to the receive socket.
fn attach_port_filter(fd: &OwnedFd, port: u16) -> io::Result<()> {
    let ins = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    let mut prog = [
        ins(0xb1, 0, 0, 0),               // ldxb 4*([0]&0xf): IP header length
        ins(0x48, 0, 0, 2),               // ldh [x+2]: TCP destination port
        ins(0x15, 0, 1, u32::from(port)), // jeq port
        ins(0x06, 0, 0, 128),             // accept 128 bytes
        ins(0x06, 0, 0, 0),               // drop
    ];
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
        let reserve = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        reserve.bind(&std::net::SocketAddr::from(([0, 0, 0, 0], 0)).into())?;
        let sport = reserve
            .local_addr()?
            .as_socket()
            .map(|a| a.port())
            .ok_or_else(|| io::Error::other("reserved socket has no port"))?;
        // IPPROTO_RAW implies IP_HDRINCL: we write the IP header (for the source address the
        // TCP checksum covers).
        let send = raw_socket(libc::IPPROTO_RAW)?;
        let inner = Arc::new(Inner {
            send,
            recvs: Mutex::new(Vec::new()),
            sport,
            pending: Mutex::new(IdMap::default()),
            next_seq: AtomicU32::new(rand_seed()),
            sources: Mutex::new(IdMap::default()),
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
    fn open_recv(&self, addr: Ipv4Addr) -> io::Result<()> {
        let mut recvs = lock(&self.inner.recvs);
        if recvs.iter().any(|r| r.addr == addr) {
            return Ok(());
        }
        let recv = raw_socket(libc::IPPROTO_TCP)?;
        attach_port_filter(&recv, self.inner.sport)?;
        let sin = sockaddr(SocketAddrV4::new(addr, 0));
        // SAFETY: sin is a valid sockaddr_in for the call.
        let r = unsafe {
            libc::bind(
                recv.as_raw_fd(),
                (&sin as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("bind tcp_syn receive socket to {addr}: {e}"),
            ));
        }
        // Replies of a whole tick's SYNs arrive in a burst: room for thousands. FORCE works
        // as root and beyond rmem_max; fall back to the capped option otherwise.
        let sz: libc::c_int = 8 << 20;
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
            // SAFETY: sz is a valid c_int for the call.
            let r = unsafe {
                libc::setsockopt(
                    recv.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&sz as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r == 0 {
                break;
            }
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
            Some(runtime.spawn(receive(Arc::downgrade(&self.inner), afd)))
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
                target,
                waiter: Waiter::Future(tx),
            },
        );
        let guard = Forget {
            inner: &self.inner,
            seq,
        };
        let pkt = Segment::syn(src, self.inner.sport, *target.ip(), target.port(), seq).encode();
        self.send_packets(&[pkt], &[sockaddr(target)])?;
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
        let mut pkts = Vec::with_capacity(probes.len());
        let mut addrs = Vec::with_capacity(probes.len());
        {
            let mut pending = lock(&self.inner.pending);
            for &(token, target) in probes {
                match self.source_for(*target.ip()) {
                    Ok(src) => {
                        let seq = self.inner.next_seq.fetch_add(1, Ordering::Relaxed);
                        pending.insert(
                            seq,
                            Pending {
                                target,
                                waiter: Waiter::Batch(token),
                            },
                        );
                        pkts.push(
                            Segment::syn(src, self.inner.sport, *target.ip(), target.port(), seq)
                                .encode(),
                        );
                        addrs.push(sockaddr(target));
                        out.push(Ok(seq));
                    }
                    Err(e) => out.push(Err(e)),
                }
            }
        }
        if let Err(e) = self.send_packets(&pkts, &addrs) {
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
        let fds: Vec<_> = lock(&self.inner.recvs)
            .iter()
            .map(|r| r.fd.clone())
            .collect();
        for fd in fds {
            if let Err(e) = drain(&self.inner, &fd, &mut |r| out.push(r)) {
                tracing::warn!(%e, "tcp_syn receive");
            }
        }
    }

    /// Stop waiting for the reply to SYN `seq` (its probe timed out).
    pub fn forget(&self, seq: u32) {
        lock(&self.inner.pending).remove(&seq);
    }

    /// sendmmsg of prepared packets, retrying the rest after a partial send.
    fn send_packets(&self, pkts: &[[u8; 40]], addrs: &[libc::sockaddr_in]) -> io::Result<()> {
        let mut iov: Vec<libc::iovec> = pkts
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .zip(addrs)
            .map(|(v, a)| {
                // SAFETY: an all-zero msghdr is valid; the pointers are filled in below.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_name = (a as *const libc::sockaddr_in) as *mut libc::c_void;
                h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
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
                    self.inner.send.as_raw_fd(),
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

    /// The local address the kernel would use towards `dst` (cached: a UDP connect per new
    /// destination address).
    fn source_for(&self, dst: Ipv4Addr) -> io::Result<Ipv4Addr> {
        if let Some(s) = lock(&self.inner.sources).get(&dst) {
            return Ok(*s);
        }
        let u = std::net::UdpSocket::bind(("0.0.0.0", 0))?;
        u.connect((dst, 9))?;
        let src = match u.local_addr()? {
            std::net::SocketAddr::V4(a) => *a.ip(),
            std::net::SocketAddr::V6(_) => return Err(io::Error::other("no IPv4 source address")),
        };
        self.open_recv(src)?;
        lock(&self.inner.sources).insert(dst, src);
        Ok(src)
    }
}

fn sockaddr(target: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(target.ip().octets()),
        },
        sin_zero: [0; 8],
    }
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

fn rand_seed() -> u32 {
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
const RECV_BATCH: usize = 64;
/// Bytes kept of each reply (the filter truncates to 128 as well).
const RECV_LEN: usize = 128;

/// Read every queued reply (recvmmsg, [`RECV_BATCH`] at a time) and settle the probes they
/// answer: futures directly, batch probes through `batch`. Returns when the socket is empty.
fn drain(inner: &Inner, recv: &OwnedFd, batch: &mut dyn FnMut(BatchResult)) -> io::Result<()> {
    let mut bufs = [[0u8; RECV_LEN]; RECV_BATCH];
    loop {
        let mut iov: [libc::iovec; RECV_BATCH] = std::array::from_fn(|i| libc::iovec {
            iov_base: bufs[i].as_mut_ptr().cast(),
            iov_len: RECV_LEN,
        });
        // SAFETY: an all-zero mmsghdr is valid; iov pointers are set below.
        let mut msgs: [libc::mmsghdr; RECV_BATCH] = unsafe { std::mem::zeroed() };
        for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at a live iovec over a live buffer.
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
        for (m, b) in msgs.iter().zip(bufs.iter()).take(n) {
            let len = (m.msg_len as usize).min(RECV_LEN);
            let Some(seg) = Segment::decode(&b[..len]) else {
                continue;
            };
            if seg.dport != inner.sport {
                continue;
            }
            let Some((verdict, seq)) = seg.reply_to_syn() else {
                continue;
            };
            let matches = pending
                .get(&seq)
                .is_some_and(|p| *p.target.ip() == seg.src && p.target.port() == seg.sport);
            if matches && let Some(p) = pending.remove(&seq) {
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

async fn receive(inner: std::sync::Weak<Inner>, fd: AsyncFd<RecvFd>) {
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
        let r = drain(&inner, &fd.get_ref().0, &mut |res| {
            if let Some(tx) = &inner.results {
                let _ = tx.send(res);
            }
        });
        if let Err(e) = r {
            tracing::warn!(%e, "tcp_syn receive");
        }
        // Only a read that hit EAGAIN proves the socket empty; a short batch is close enough:
        // a reply arriving later raises a new edge.
        guard.clear_ready();
    }
}
