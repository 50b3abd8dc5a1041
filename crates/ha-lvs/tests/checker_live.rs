//! The checker driver against real TCP and HTTP servers on loopback that start, fail and
//! recover; fallback; shared probes; command checks; autoreload keeping state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ha_lvs::checker::driver::{Checker, MemoryTable};
use ha_lvs::checker::{
    CheckKind, CheckSpec, FailureAction, Monitor, MonitorConfig, MonitoredReal, MonitoredService,
};
use ha_lvs::model::*;
use ha_lvs::netlink::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::task::JoinHandle;

struct Server {
    addr: SocketAddr,
    healthy: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
    task: Option<JoinHandle<()>>,
}

impl Server {
    async fn start_at(
        addr: SocketAddr,
        healthy: Arc<AtomicBool>,
        hits: Arc<AtomicUsize>,
    ) -> Server {
        let sock = TcpSocket::new_v4().unwrap();
        sock.set_reuseaddr(true).unwrap();
        sock.bind(addr).unwrap();
        let listener = sock.listen(128).unwrap();
        let addr = listener.local_addr().unwrap();
        let (h, n) = (healthy.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                n.fetch_add(1, Ordering::SeqCst);
                let ok = h.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let resp: &[u8] = if ok {
                        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall systems ok\n"
                    } else {
                        b"HTTP/1.0 500 Internal Server Error\r\n\r\nbroken\n"
                    };
                    let _ = s.write_all(resp).await;
                });
            }
        });
        Server {
            addr,
            healthy,
            hits,
            task: Some(task),
        }
    }

    async fn start() -> Server {
        Self::start_at(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(AtomicBool::new(true)),
            Arc::new(AtomicUsize::new(0)),
        )
        .await
    }

    fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    async fn restart(&mut self) {
        self.stop();
        tokio::time::sleep(Duration::from_millis(20)).await;
        *self = Server::start_at(self.addr, self.healthy.clone(), self.hits.clone()).await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spec(kind: CheckKind) -> CheckSpec {
    CheckSpec {
        kind,
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(500),
        rise: 1,
        fall: 1,
    }
}

fn http_check() -> CheckSpec {
    spec(CheckKind::Http {
        path: "/health".into(),
        host: None,
        expect_status: 200.into(),
        expect_body: Some("ok".into()),
        expect_md5: None,
        tls: None,
    })
}

fn real(addr: SocketAddr, weight: u32, check: CheckSpec) -> MonitoredReal {
    MonitoredReal {
        dest: Destination::new(addr, Forward::Masq).with_weight(weight),
        check: Some(check),
        check_addr: None,
    }
}

fn k(s: &str) -> ServiceKey {
    ServiceKey::tcp(s.parse().unwrap())
}

fn weight_of(t: &Table, key: ServiceKey, addr: SocketAddr) -> Option<u32> {
    t.iter()
        .find(|v| v.service.key == key)?
        .dests
        .iter()
        .find(|d| d.addr == addr)
        .map(|d| d.weight)
}

async fn wait_for(mem: &MemoryTable, what: &str, f: impl Fn(&Table) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let t = mem.snapshot();
        if f(&t) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; table: {t:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checker_follows_real_servers() {
    let web = Server::start().await;
    let mut tcp = Server::start().await;
    let fallback: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let (s1, s2) = (k("10.0.0.1:80"), k("10.0.0.2:80"));
    let config = MonitorConfig {
        services: vec![
            MonitoredService {
                service: Service::new(s1, Scheduler::Wrr),
                reals: vec![
                    real(web.addr, 3, http_check()),
                    real(tcp.addr, 2, spec(CheckKind::Connect)),
                ],
                fallback: Some(Destination::new(fallback, Forward::Masq)),
                on_failure: FailureAction::Quiesce,
            },
            MonitoredService {
                service: Service::new(s2, Scheduler::Rr),
                reals: vec![real(web.addr, 4, http_check())],
                fallback: None,
                on_failure: FailureAction::Remove,
            },
        ],
        start_down: true,
    };
    let monitor = Monitor::new(config.clone());
    assert_eq!(monitor.probe_count(), 2, "web is shared by both services");
    let mem = MemoryTable::default();
    let checker = Checker::spawn(monitor, mem.clone()).unwrap();

    // Start down: fallback first, then the servers come up.
    wait_for(&mem, "both servers up", |t| {
        weight_of(t, s1, web.addr) == Some(3)
            && weight_of(t, s1, tcp.addr) == Some(2)
            && weight_of(t, s2, web.addr) == Some(4)
            && weight_of(t, s1, fallback).is_none()
    })
    .await;

    // One probe per endpoint: over ~1 s at 100 ms, web sees about 10 connections, not 20.
    let before = web.hits.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let n = web.hits.load(Ordering::SeqCst) - before;
    assert!(
        (3..=15).contains(&n),
        "web probed {n} times in 1 s (one shared probe, not two)"
    );

    // HTTP 500: quiesced in s1, removed from s2.
    web.healthy.store(false, Ordering::SeqCst);
    wait_for(&mem, "web failed", |t| {
        weight_of(t, s1, web.addr) == Some(0) && weight_of(t, s2, web.addr).is_none()
    })
    .await;

    // TCP server gone too: everything down, fallback enters s1.
    tcp.stop();
    wait_for(&mem, "fallback in", |t| {
        weight_of(t, s1, tcp.addr) == Some(0) && weight_of(t, s1, fallback) == Some(1)
    })
    .await;

    // Recovery: fallback leaves, weights return.
    tcp.restart().await;
    web.healthy.store(true, Ordering::SeqCst);
    wait_for(&mem, "recovered", |t| {
        weight_of(t, s1, web.addr) == Some(3)
            && weight_of(t, s1, tcp.addr) == Some(2)
            && weight_of(t, s2, web.addr) == Some(4)
            && weight_of(t, s1, fallback).is_none()
    })
    .await;

    // Autoreload: drop s2 and change tcp's weight; web's state is kept (no extra edits for it).
    web.healthy.store(false, Ordering::SeqCst);
    wait_for(&mem, "web failed again", |t| {
        weight_of(t, s1, web.addr) == Some(0)
    })
    .await;
    let mut cfg2 = config.clone();
    cfg2.services.remove(1);
    cfg2.services[0].reals[1].dest.weight = 7;
    let log_len = mem.log.lock().unwrap().len();
    let n = checker.reload(cfg2).await.unwrap();
    assert_eq!(n, 2, "delete s2 + edit tcp weight");
    let t = mem.snapshot();
    assert_eq!(t.len(), 1);
    assert_eq!(weight_of(&t, s1, tcp.addr), Some(7));
    assert_eq!(
        weight_of(&t, s1, web.addr),
        Some(0),
        "web stays quiesced across the reload"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = mem.log.lock().unwrap()[log_len..].to_vec();
    assert!(
        !log.iter().any(|r| matches!(r, Request::SetDest(_, d) | Request::NewDest(_, d) if d.addr == web.addr && d.weight > 0)),
        "web flapped up on reload: {log:?}"
    );
    checker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_check_with_misc_dynamic() {
    let dir = std::env::temp_dir().join(format!("ha-lvs-misc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rc = dir.join("rc");
    std::fs::write(&rc, "7").unwrap();
    let script = dir.join("check.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nexit $(cat {})\n", rc.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let s = k("10.0.0.3:80");
    let check = spec(CheckKind::Command {
        program: script.clone(),
        args: Vec::new(),
        dynamic: true,
    });
    let config = MonitorConfig {
        services: vec![MonitoredService {
            service: Service::new(s, Scheduler::Wlc),
            reals: vec![real(addr, 1, check)],
            fallback: None,
            on_failure: FailureAction::Remove,
        }],
        start_down: false,
    };
    let mem = MemoryTable::default();
    let checker = Checker::spawn(Monitor::new(config), mem.clone()).unwrap();
    wait_for(&mem, "dynamic weight 5", |t| {
        weight_of(t, s, addr) == Some(5)
    })
    .await;
    std::fs::write(&rc, "1").unwrap();
    wait_for(&mem, "removed on exit 1", |t| {
        weight_of(t, s, addr).is_none()
    })
    .await;
    std::fs::write(&rc, "0").unwrap();
    wait_for(&mem, "back with configured weight", |t| {
        weight_of(t, s, addr) == Some(1)
    })
    .await;
    checker.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldirectord_autoreload_applies_a_minimal_diff() {
    let dir = std::env::temp_dir().join(format!("ha-lvs-autoreload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cf = dir.join("ldirectord.cf");
    let v1 = "autoreload=yes\nvirtual=10.0.0.9:80\n\treal=10.0.9.1:80 gate\n\tchecktype=on\n\tscheduler=rr\n";
    std::fs::write(&cf, v1).unwrap();
    let cfg = ha_lvs::ldirectord::parse_ldirectord(v1, "ldirectord.cf").unwrap();
    assert!(cfg.autoreload);
    let mem = MemoryTable::default();
    let checker = Arc::new(Checker::spawn(Monitor::new(cfg.monitor), mem.clone()).unwrap());
    let s = k("10.0.0.9:80");
    wait_for(&mem, "initial", |t| {
        weight_of(t, s, "10.0.9.1:80".parse().unwrap()) == Some(1)
    })
    .await;
    let c2 = checker.clone();
    let path = cf.clone();
    let watcher = tokio::spawn(async move {
        ha_lvs::ldirectord::watch_and_reload(path, &c2, Duration::from_millis(30)).await;
    });
    let log_len = mem.log.lock().unwrap().len();
    // Replace the file atomically: the watcher could otherwise read it truncated (an empty
    // file is a valid, empty configuration).
    let write_atomic = |text: &str| {
        let tmp = cf.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &cf).unwrap();
    };
    // A broken file is ignored.
    write_atomic("virtual=10.0.0.9:80\n\treal=10.0.9.1:80 bogus\n");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        mem.log.lock().unwrap().len(),
        log_len,
        "invalid file must not change the table"
    );
    // Add a real server and change the scheduler: exactly two edits.
    write_atomic(
        &format!("{v1}\treal=10.0.9.2:80 gate 3\n").replace("scheduler=rr", "scheduler=wlc"),
    );
    wait_for(&mem, "reloaded", |t| {
        weight_of(t, s, "10.0.9.2:80".parse().unwrap()) == Some(3)
    })
    .await;
    let log = mem.log.lock().unwrap()[log_len..].to_vec();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(matches!(&log[0], Request::SetService(svc) if svc.scheduler == Scheduler::Wlc));
    assert!(matches!(&log[1], Request::NewDest(_, d) if d.weight == 3));
    watcher.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The HTTP check sends the configured path and Host header and checks status and body text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_check_sends_path_and_host_and_matches_body() {
    use ha_lvs::checker::ProbeKey;
    use ha_lvs::checker::probe::run_probe;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                let resp: &[u8] = if req.starts_with("GET /status HTTP/1.0\r\n")
                    && req.contains("\r\nHost: www.example.test\r\n")
                {
                    b"HTTP/1.0 200 OK\r\n\r\n<html>Test Page</html>"
                } else {
                    b"HTTP/1.0 404 Not Found\r\n\r\nno"
                };
                let _ = s.write_all(resp).await;
            });
        }
    });
    let key = |path: &str, host: &str, text: &str, status: u16| ProbeKey {
        target: addr,
        spec: spec(CheckKind::Http {
            path: path.into(),
            host: Some(host.into()),
            expect_status: status.into(),
            expect_body: Some(text.into()),
            expect_md5: None,
            tls: None,
        }),
    };
    assert_eq!(
        run_probe(&key("/status", "www.example.test", "Test Page", 200)).await,
        ha_lvs::checker::ProbeOutcome::Up
    );
    let wrong_host = run_probe(&key("/status", "other.test", "Test Page", 200)).await;
    assert!(
        matches!(&wrong_host, ha_lvs::checker::ProbeOutcome::Down(r) if r.contains("404")),
        "{wrong_host:?}"
    );
    let wrong_text = run_probe(&key("/status", "www.example.test", "Welcome", 200)).await;
    assert!(
        matches!(&wrong_text, ha_lvs::checker::ProbeOutcome::Down(r) if r.contains("lacks")),
        "{wrong_text:?}"
    );
    // Expecting the 404 makes it a success.
    assert_eq!(
        run_probe(&key("/nope", "x", "no", 404)).await,
        ha_lvs::checker::ProbeOutcome::Up
    );
    // Nothing listening: down with the connect error; a silent server: down on the timeout.
    let closed = ProbeKey {
        target: "127.0.0.1:1".parse().unwrap(),
        spec: spec(CheckKind::Connect),
    };
    assert!(
        matches!(run_probe(&closed).await, ha_lvs::checker::ProbeOutcome::Down(r) if r.contains("connect"))
    );
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut slow = key("/", "x", "y", 200);
    slow.target = silent.local_addr().unwrap();
    slow.spec.timeout = Duration::from_millis(200);
    let t = Instant::now();
    assert!(
        matches!(run_probe(&slow).await, ha_lvs::checker::ProbeOutcome::Down(r) if r.contains("no answer within"))
    );
    assert!(t.elapsed() < Duration::from_secs(2));
    drop(silent);
}
