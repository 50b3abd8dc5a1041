//! Benchmarks of the checker and the IPVS client.
//!
//! ```text
//! ha-lvs-bench checker ENDPOINTS INTERVAL_MS SECONDS [connect|tcp_syn] [own|host]
//!                                                      CPU of ENDPOINTS TCP probes on loopback
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
use std::net::SocketAddr;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ha_lvs::Error;
use ha_lvs::checker::driver::{Checker, MemoryTable};
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
    let kind = match kind {
        "connect" => CheckKind::Connect,
        "tcp_syn" => CheckKind::TcpSyn,
        k => {
            return Err(Error::invalid(format!(
                "unknown check kind {k} (connect, tcp_syn)"
            )));
        }
    };
    let kind_name = if kind == CheckKind::Connect {
        "connect"
    } else {
        "tcp_syn"
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
            "usage: ha-lvs-bench checker [ENDPOINTS INTERVAL_MS SECONDS [connect|tcp_syn [own|host]]] | ipvs [SERVICES DESTS]",
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
