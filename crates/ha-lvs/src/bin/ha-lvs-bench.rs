//! Benchmarks of the checker and the IPVS client.
//!
//! ```text
//! ha-lvs-bench checker ENDPOINTS INTERVAL_MS SECONDS   CPU of ENDPOINTS TCP probes on loopback
//! ha-lvs-bench ipvs SERVICES DESTS                     time to build/read/diff a table (needs ip_vs)
//! ha-lvs-bench rules SERVICES DESTS                    the same table as ipvsadm rules
//! ha-lvs-bench serve BASE_PORT COUNT                   (helper) accept-and-close listeners
//! ```
//!
//! `checker` runs the servers in a child process so the figure is the checker's own CPU.
//! Endpoints are spread over 100 listening ports; every endpoint has its own probe.

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

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// (user, system) CPU seconds of this process.
fn cpu_seconds() -> (f64, f64) {
    // SAFETY: getrusage fills the zeroed struct we pass; no other memory is touched.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage struct.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("tokio runtime", e))
}

fn serve(base: u16, count: u16) -> Result<(), Error> {
    runtime()?.block_on(async move {
        for p in base..base.saturating_add(count) {
            let l = tokio::net::TcpListener::bind(("127.0.0.1", p))
                .await
                .map_err(|e| Error::io(format!("bind {p}"), e))?;
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

fn checker(endpoints: usize, interval_ms: u64, seconds: u64) -> Result<(), Error> {
    let base: u16 = 40000;
    let exe = std::env::current_exe().map_err(|e| Error::io("current exe", e))?;
    let mut child = Command::new(exe)
        .args(["serve", &base.to_string(), &PORTS.to_string()])
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
        let interval = Duration::from_millis(interval_ms);
        let mut services = Vec::new();
        let per_service = 5;
        for s in 0..endpoints.div_ceil(per_service) {
            let vip = SocketAddr::from(([10, 1, (s / 250) as u8, (s % 250) as u8 + 1], 80));
            let mut reals = Vec::new();
            for r in 0..per_service {
                let i = s * per_service + r;
                if i >= endpoints {
                    break;
                }
                let port = base + (i % PORTS as usize) as u16;
                // Distinct timeouts make every endpoint its own probe even on a shared port.
                let spec = CheckSpec {
                    kind: CheckKind::Connect,
                    interval,
                    timeout: Duration::from_millis(900 + (i / PORTS as usize) as u64),
                    rise: 1,
                    fall: 3,
                };
                reals.push(MonitoredReal {
                    dest: Destination::new(SocketAddr::from(([127, 0, 0, 1], port)), Forward::Masq),
                    check: Some(spec),
                    check_addr: None,
                });
            }
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
            // Warm up one interval, then measure.
            tokio::time::sleep(interval + Duration::from_millis(200)).await;
            let (c0, p0, f0, t0) = (cpu_seconds(), ch.stats().probes.load(Ordering::Relaxed), ch.stats().failures.load(Ordering::Relaxed), Instant::now());
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            let (c1, p1, f1, wall) = (cpu_seconds(), ch.stats().probes.load(Ordering::Relaxed), ch.stats().failures.load(Ordering::Relaxed), t0.elapsed().as_secs_f64());
            ch.stop().await?;
            let (user, sys) = (c1.0 - c0.0, c1.1 - c0.1);
            let cpu = user + sys;
            println!(
                "checker: {probes} probes every {interval_ms} ms; {:.0} probe runs/s ({} failed); CPU {:.3} s (user {:.3}, sys {:.3}) in {:.1} s = {:.1}% of one core; {:.1} us CPU per probe",
                (p1 - p0) as f64 / wall,
                f1 - f0,
                cpu,
                user,
                sys,
                wall,
                100.0 * cpu / wall,
                1e6 * cpu / ((p1 - p0).max(1) as f64)
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
        Some("serve") => serve(arg(&args, 1, 40000), arg(&args, 2, PORTS)),
        Some("checker") => checker(
            arg(&args, 1, 10_000),
            arg(&args, 2, 1000),
            arg(&args, 3, 10),
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
            "usage: ha-lvs-bench checker [ENDPOINTS INTERVAL_MS SECONDS] | ipvs [SERVICES DESTS]",
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
