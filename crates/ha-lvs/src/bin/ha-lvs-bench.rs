//! Benchmarks of the checker and the IPVS client.
//!
//! ```text
//! ha-lvs-bench checker ENDPOINTS INTERVAL_MS SECONDS [connect|tcp_syn|floor] [own|host]
//!                                                      CPU of ENDPOINTS TCP probes on loopback
//!                                                      (floor: a minimal SYN loop, no checker)
//! ha-lvs-bench ipvs SERVICES DESTS                     time to build/read/diff a table (needs ip_vs)
//! ha-lvs-bench rules SERVICES DESTS                    the same table as ipvsadm rules
//! ha-lvs-bench serve COUNT                             (helper) accept-and-close listeners
//! ```
//!
//! `checker` runs the listeners in a child process so the figure is the checker's own CPU
//! (utime + stime of this process from /proc/self/stat). Endpoint i is a listener of its own
//! on 127.20.(i / 100).1 port 20000 + i % 100. It prints one `CHECKER key=value ...` line.
//!
//! By default (`own`, as root) the checker and its listeners run in a network namespace of
//! their own, made with unshare(2) before any thread starts: a loopback of their own, no
//! other traffic or sockets of the host in the way, nothing left behind (the namespace goes
//! with the two processes, also when they are killed). `host` runs in the caller's namespace.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ha_lvs::Error;
use ha_lvs::checker::driver::{Checker, MemoryTable, TICK};
use ha_lvs::checker::syn::{Segment, flags as syn_flags};
use ha_lvs::checker::{
    CheckKind, CheckSpec, FailureAction, Monitor, MonitorConfig, MonitoredReal, MonitoredService,
};
use ha_lvs::model::*;
use ha_lvs::netlink::{IpvsClient, Request};
use ha_lvs::reconcile;

const PORTS: u16 = 100;
const BASE_PORT: u16 = 20000;

/// Endpoint `i` of the checker benchmark.
fn endpoint(i: usize) -> SocketAddr {
    let a = i / PORTS as usize;
    SocketAddr::from((
        [127, 20, (a / 250) as u8, (a % 250) as u8 + 1],
        BASE_PORT + (i % PORTS as usize) as u16,
    ))
}

/// (utime, stime) of this process in seconds, from /proc/self/stat.
fn proc_cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name: state is field 3; utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / hz;
    (n(11), n(12))
}

/// Allow `n` open files (10,000 listeners need more than the usual 1024).
fn raise_nofile(n: u64) {
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: plain setrlimit with a valid struct; failure only leaves the old limit.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("tokio runtime", e))
}

fn serve(count: usize) -> Result<(), Error> {
    raise_nofile(count as u64 + 1024);
    runtime()?.block_on(async move {
        for i in 0..count {
            let a = endpoint(i);
            let l = tokio::net::TcpListener::bind(a)
                .await
                .map_err(|e| Error::io(format!("bind {a}"), e))?;
            tokio::spawn(async move {
                while let Ok((s, _)) = l.accept().await {
                    drop(s);
                }
            });
        }
        println!("ready");
        // Serve until the parent kills us.
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    })
}

/// Move this (still single-threaded) process into a new network namespace and bring its
/// loopback up; threads and children started later inherit it.
fn own_netns() -> Result<(), Error> {
    // SAFETY: unshare has no memory effects; called before any other thread exists.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(Error::io(
            "unshare(CLONE_NEWNET) (needs CAP_SYS_ADMIN; pass `host` to stay in this namespace)",
            std::io::Error::last_os_error(),
        ));
    }
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").map_err(|e| Error::io("socket", e))?;
    // SAFETY: an all-zero ifreq is valid; the name is NUL-terminated by the zeroing.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo") {
        *d = *s as libc::c_char;
    }
    use std::os::fd::AsRawFd;
    // SAFETY: req is a valid ifreq for both calls; the flags member is the one they use.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(Error::io(
                "get flags of lo",
                std::io::Error::last_os_error(),
            ));
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(Error::io("set lo up", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

fn checker(
    endpoints: usize,
    interval_ms: u64,
    seconds: u64,
    kind: &str,
    netns: &str,
) -> Result<(), Error> {
    let netns = match netns {
        "own" => {
            own_netns()?;
            "own"
        }
        "host" => "host",
        n => {
            return Err(Error::invalid(format!(
                "unknown namespace choice {n} (own, host)"
            )));
        }
    };
    let (kind, kind_name) = match kind {
        "connect" => (Some(CheckKind::Connect), "connect"),
        "tcp_syn" => (Some(CheckKind::TcpSyn), "tcp_syn"),
        "floor" => (None, "floor"),
        k => {
            return Err(Error::invalid(format!(
                "unknown check kind {k} (connect, tcp_syn, floor)"
            )));
        }
    };
    let exe = std::env::current_exe().map_err(|e| Error::io("current exe", e))?;
    let mut child = Command::new(exe)
        .args(["serve", &endpoints.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io("spawn servers", e))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        BufReader::new(out)
            .read_line(&mut line)
            .map_err(|e| Error::io("servers ready", e))?;
    }
    let result = (|| {
        if line.trim() != "ready" {
            return Err(Error::invalid("listener process failed to start"));
        }
        raise_nofile(65536);
        let interval = Duration::from_millis(interval_ms);
        let Some(kind) = kind else {
            return syn_floor(endpoints, interval, seconds, netns);
        };
        let mut services = Vec::new();
        let per_service = 5;
        for s in 0..endpoints.div_ceil(per_service) {
            let vip = SocketAddr::from(([10, 1, (s / 250) as u8, (s % 250) as u8 + 1], 80));
            let reals = (s * per_service..((s + 1) * per_service).min(endpoints))
                .map(|i| MonitoredReal {
                    dest: Destination::new(endpoint(i), Forward::Masq),
                    check: Some(CheckSpec {
                        kind: kind.clone(),
                        interval,
                        timeout: interval.mul_f64(0.9),
                        rise: 1,
                        fall: 3,
                    }),
                    check_addr: None,
                })
                .collect();
            services.push(MonitoredService {
                service: Service::new(ServiceKey::tcp(vip), Scheduler::Wlc),
                reals,
                fallback: None,
                on_failure: FailureAction::Quiesce,
            });
        }
        let monitor = Monitor::new(MonitorConfig {
            services,
            start_down: false,
        });
        let probes = monitor.probe_count();
        runtime()?.block_on(async move {
            let ch = Checker::spawn(monitor, MemoryTable::default())?;
            // Warm up one interval (probes start spread over it), then measure.
            tokio::time::sleep(interval + Duration::from_millis(200)).await;
            let snap = |c: &Checker| {
                let s = c.stats();
                [
                    s.probes.load(Ordering::Relaxed),
                    s.failures.load(Ordering::Relaxed),
                    s.on_time.load(Ordering::Relaxed),
                    s.late.load(Ordering::Relaxed),
                    s.skipped.load(Ordering::Relaxed),
                ]
            };
            let (c0, s0, t0) = (proc_cpu(), snap(&ch), Instant::now());
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            let (c1, s1, wall) = (proc_cpu(), snap(&ch), t0.elapsed().as_secs_f64());
            let max_late_ms = ch.stats().max_late_us.load(Ordering::Relaxed) as f64 / 1e3;
            ch.stop().await?;
            let d: Vec<u64> = s0.iter().zip(&s1).map(|(a, b)| b - a).collect();
            let (user, sys) = (c1.0 - c0.0, c1.1 - c0.1);
            let cpu = user + sys;
            println!(
                "CHECKER kind={kind_name} netns={netns} endpoints={probes} interval_ms={interval_ms} wall_s={wall:.2} expected={:.0} done={} failed={} on_time={} late={} skipped={} missed={} max_late_ms={max_late_ms:.1} tolerance_ms={} user_s={user:.2} sys_s={sys:.2} cpu_pct={:.1} us_per_probe={:.1}",
                probes as f64 * wall * 1000.0 / interval_ms as f64,
                d[0],
                d[1],
                d[2],
                d[3],
                d[4],
                d[3] + d[4],
                ha_lvs::checker::driver::on_time_tolerance(interval).as_millis(),
                100.0 * cpu / wall,
                1e6 * cpu / (d[0].max(1) as f64)
            );
            Ok::<(), Error>(())
        })
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// The kernel's floor for the `tcp_syn` exchange: a minimal loop that sends the same SYNs
/// (same sockets and options as the checker: a raw TCP socket bound to the source, the kernel
/// writes the IP header, one `sendmmsg` per tick) to the same endpoints at the same rate and
/// drains the replies with `recvmmsg`, only counting them: no schedule, no verdicts, no
/// timeouts, no runtime. What the checker costs beyond it is the checker's own work.
struct SynFloor {
    raw: std::os::fd::OwnedFd,
    sport: u16,
    endpoints: usize,
    per_tick: usize,
    next: usize,
    sent: u64,
    open: u64,
    tcp: Vec<[u8; 20]>,
    addrs: Vec<libc::sockaddr_in>,
    rbuf: Vec<[u8; 128]>,
}

impl SynFloor {
    fn new(endpoints: usize, interval: Duration, sport: u16) -> Result<SynFloor, Error> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        // SAFETY: plain socket(2); checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::IPPROTO_TCP,
            )
        };
        if fd < 0 {
            return Err(last_os_error("raw socket (needs CAP_NET_RAW)"));
        }
        // SAFETY: fd is a fresh descriptor we own.
        let raw = unsafe { OwnedFd::from_raw_fd(fd) };
        let local = socket2::SockAddr::from(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        // SAFETY: `local` is a valid address of the length it reports.
        if unsafe { libc::bind(raw.as_raw_fd(), local.as_ptr().cast(), local.len()) } < 0 {
            return Err(last_os_error("bind raw socket"));
        }
        let per_tick =
            (endpoints as u128 * TICK.as_nanos() / interval.as_nanos().max(1)).max(1) as usize;
        let batch = per_tick.min(1024);
        Ok(SynFloor {
            raw,
            sport,
            endpoints,
            per_tick,
            next: 0,
            sent: 0,
            open: 0,
            tcp: vec![[0; 20]; batch],
            // SAFETY: an all-zero sockaddr_in is valid.
            addrs: vec![unsafe { std::mem::zeroed() }; batch],
            rbuf: vec![[0; 128]; 256],
        })
    }

    /// One tick: this tick's share of SYNs, then the replies queued.
    fn tick(&mut self) -> Result<(), Error> {
        use std::os::fd::AsRawFd;
        let mut left = self.per_tick;
        while left > 0 {
            let n = left.min(self.tcp.len());
            for j in 0..n {
                let i = (self.next + j) % self.endpoints;
                let SocketAddr::V4(t) = endpoint(i) else {
                    continue;
                };
                let seg =
                    Segment::syn(Ipv4Addr::LOCALHOST, self.sport, *t.ip(), t.port(), i as u32)
                        .encode();
                self.tcp[j].copy_from_slice(&seg[20..]);
                self.addrs[j].sin_family = libc::AF_INET as libc::sa_family_t;
                self.addrs[j].sin_addr.s_addr = u32::from_ne_bytes(t.ip().octets());
            }
            self.next += n;
            let mut iov: Vec<libc::iovec> = self.tcp[..n].iter_mut().map(|p| iovec(p)).collect();
            let mut hdrs = mmsg_headers(&mut iov, |i| {
                (
                    (&mut self.addrs[i] as *mut libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                )
            });
            // SAFETY: every header points at a live packet and address.
            let r = unsafe {
                libc::sendmmsg(
                    self.raw.as_raw_fd(),
                    hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    0,
                )
            };
            if r < 0 {
                return Err(last_os_error("sendmmsg"));
            }
            self.sent += r as u64;
            left -= n;
        }
        loop {
            let mut iov: Vec<libc::iovec> = self.rbuf.iter_mut().map(|b| iovec(b)).collect();
            let mut hdrs = mmsg_headers(&mut iov, |_| (std::ptr::null_mut(), 0));
            // SAFETY: every header points at a live buffer of the length given.
            let n = unsafe {
                libc::recvmmsg(
                    self.raw.as_raw_fd(),
                    hdrs.as_mut_ptr(),
                    hdrs.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n <= 0 {
                return Ok(());
            }
            let lens: Vec<usize> = hdrs
                .iter()
                .take(n as usize)
                .map(|h| h.msg_len as usize)
                .collect();
            for (len, b) in lens.into_iter().zip(&self.rbuf) {
                if let Some(seg) = Segment::decode(&b[..len.min(b.len())])
                    && seg.dport == self.sport
                    && seg.flags & syn_flags::SYN != 0
                {
                    self.open += 1;
                }
            }
        }
    }

    /// Run `ticks` ticks on the tick grid.
    fn run(&mut self, ticks: u32) -> Result<(), Error> {
        let t0 = Instant::now();
        for k in 1..=ticks {
            self.tick()?;
            if let Some(w) = (t0 + TICK * k).checked_duration_since(Instant::now()) {
                std::thread::sleep(w);
            }
        }
        Ok(())
    }
}

fn iovec(buf: &mut [u8]) -> libc::iovec {
    libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    }
}

/// One `mmsghdr` per iovec, with the address `name(i)` gives (null, 0: none).
fn mmsg_headers(
    iov: &mut [libc::iovec],
    mut name: impl FnMut(usize) -> (*mut libc::c_void, u32),
) -> Vec<libc::mmsghdr> {
    iov.iter_mut()
        .enumerate()
        .map(|(i, v)| {
            // SAFETY: an all-zero mmsghdr is valid; the pointers are filled in.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            (h.msg_hdr.msg_name, h.msg_hdr.msg_namelen) = name(i);
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect()
}

fn last_os_error(what: &str) -> Error {
    Error::io(what.to_string(), std::io::Error::last_os_error())
}

/// Measure [`SynFloor`] over `seconds` after one interval of warm-up; print its CHECKER line.
fn syn_floor(endpoints: usize, interval: Duration, seconds: u64, netns: &str) -> Result<(), Error> {
    // Holds the source port: SYN-ACKs to it find no socket, so the kernel answers RST.
    let reserve = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .map_err(|e| Error::io("reserve socket", e))?;
    reserve
        .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
        .map_err(|e| Error::io("bind reserve socket", e))?;
    let sport = reserve
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map(|a| a.port())
        .ok_or_else(|| Error::invalid("reserve socket has no port"))?;
    let mut f = SynFloor::new(endpoints, interval, sport)?;
    let ticks = |d: Duration| (d.as_nanos() / TICK.as_nanos()).max(1) as u32;
    f.run(ticks(interval))?;
    let (s0, o0) = (f.sent, f.open);
    let (c0, t0) = (proc_cpu(), Instant::now());
    f.run(ticks(Duration::from_secs(seconds)))?;
    let (c1, wall) = (proc_cpu(), t0.elapsed().as_secs_f64());
    let (user, sys) = (c1.0 - c0.0, c1.1 - c0.1);
    let (sent, open) = (f.sent - s0, f.open - o0);
    // A floor that lost its replies measured something else: refuse it.
    if open * 100 < sent * 99 {
        return Err(Error::invalid(format!(
            "floor: only {open} SYN-ACKs for {sent} SYNs"
        )));
    }
    println!(
        "CHECKER kind=floor netns={netns} endpoints={endpoints} interval_ms={} wall_s={wall:.2} expected={:.0} done={open} failed={} on_time=- late=- skipped=- missed=- max_late_ms=- tolerance_ms=- user_s={user:.2} sys_s={sys:.2} cpu_pct={:.1} us_per_probe={:.1}",
        interval.as_millis(),
        endpoints as f64 * wall / interval.as_secs_f64(),
        sent - open,
        100.0 * (user + sys) / wall,
        1e6 * (user + sys) / (sent.max(1) as f64)
    );
    Ok(())
}

fn table(services: usize, dests: usize) -> Table {
    (0..services)
        .map(|s| {
            let vip = SocketAddr::from(([10, 2, (s / 250) as u8, (s % 250) as u8 + 1], 80));
            VirtualService {
                service: Service::new(ServiceKey::tcp(vip), Scheduler::Wrr),
                dests: (0..dests)
                    .map(|d| {
                        Destination::new(
                            SocketAddr::from((
                                [10, 3, (s / 250) as u8, (s % 250) as u8 + 1],
                                8000 + d as u16,
                            )),
                            Forward::Masq,
                        )
                    })
                    .collect(),
            }
        })
        .collect()
}

fn ipvs(services: usize, dests: usize) -> Result<(), Error> {
    let want = table(services, dests);
    let mut c = IpvsClient::connect()?;
    c.request(Request::Flush)?;
    let t = Instant::now();
    let changes = reconcile::apply(&mut c, &want)?;
    let build = t.elapsed();
    let t = Instant::now();
    let current = c.current()?;
    let read = t.elapsed();
    let t = Instant::now();
    let again = reconcile::diff(&current, &want);
    let diff = t.elapsed();
    // One weight change in every service: an edit each.
    let mut edited = want.clone();
    for v in &mut edited {
        if let Some(d) = v.dests.first_mut() {
            d.weight = 2;
        }
    }
    let t = Instant::now();
    let edits = reconcile::apply(&mut c, &edited)?;
    let edit = t.elapsed();
    println!(
        "ipvs: {services} services x {dests} dests: build {} requests in {:.2} s; read back in {:.2} s; diff of identical tables {} changes in {:.1} ms; {} weight edits in {:.2} s",
        changes.len(),
        build.as_secs_f64(),
        read.as_secs_f64(),
        again.len(),
        diff.as_secs_f64() * 1e3,
        edits.len(),
        edit.as_secs_f64()
    );
    c.request(Request::Flush)?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("serve") => serve(arg(&args, 1, 10_000)),
        Some("checker") => checker(
            arg(&args, 1, 10_000),
            arg(&args, 2, 1000),
            arg(&args, 3, 10),
            args.get(4).map(String::as_str).unwrap_or("connect"),
            args.get(5).map(String::as_str).unwrap_or("own"),
        ),
        Some("ipvs") => ipvs(arg(&args, 1, 1000), arg(&args, 2, 5)),
        Some("rules") => {
            print!(
                "{}",
                ha_lvs::ipvsadm::write_rules(
                    &table(arg(&args, 1, 1000), arg(&args, 2, 5)),
                    Default::default()
                )
            );
            Ok(())
        }
        _ => Err(Error::invalid(
            "usage: ha-lvs-bench checker [ENDPOINTS INTERVAL_MS SECONDS [connect|tcp_syn|floor [own|host]]] | ipvs [SERVICES DESTS]",
        )),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ha-lvs-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
