//! The half-open `tcp_syn` check (raw sockets, needs CAP_NET_RAW) against loopback listeners:
//! the probe alone and the checker's batched path driving a table.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ha_lvs::checker::driver::{Checker, MemoryTable};
use ha_lvs::checker::probe::{ProbeContext, run_probe_in};
use ha_lvs::checker::synprobe::SynProber;
use ha_lvs::checker::{
    CheckKind, CheckSpec, FailureAction, Monitor, MonitorConfig, MonitoredReal, MonitoredService,
    ProbeKey, ProbeOutcome,
};
use ha_lvs::model::*;

fn spec() -> CheckSpec {
    CheckSpec {
        kind: CheckKind::TcpSyn,
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(500),
        rise: 1,
        fall: 1,
    }
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
async fn closed_port() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syn_probe_sees_open_and_closed_ports_without_completing_a_connection() {
    if !testkit::privileged("syn_probe_sees_open_and_closed_ports_without_completing_a_connection")
    {
        return;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open = listener.local_addr().unwrap();
    let closed = closed_port().await;
    let ctx = ProbeContext::with_syn(Arc::new(SynProber::new().unwrap()));
    let key = |target| ProbeKey {
        target,
        spec: spec(),
    };
    for _ in 0..20 {
        assert_eq!(run_probe_in(&key(open), &ctx).await, ProbeOutcome::Up);
        let down = run_probe_in(&key(closed), &ctx).await;
        assert!(
            matches!(&down, ProbeOutcome::Down(r) if r.contains("refused")),
            "{down:?}"
        );
    }
    // Half-open only: the kernel reset every handshake, so nothing reaches accept().
    let accepted = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
    assert!(accepted.is_err(), "a SYN check completed a connection");
    // Without a prober the check falls back to a full connect.
    assert_eq!(
        run_probe_in(&key(open), &ProbeContext::default()).await,
        ProbeOutcome::Up
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checker_with_syn_checks_quiesces_and_restores() {
    if !testkit::privileged("checker_with_syn_checks_quiesces_and_restores") {
        return;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open = listener.local_addr().unwrap();
    let closed = closed_port().await;
    let svc = ServiceKey::tcp("10.0.0.1:80".parse().unwrap());
    let real = |a| MonitoredReal {
        dest: Destination::new(a, Forward::Route),
        check: Some(spec()),
        check_addr: None,
    };
    let monitor = Monitor::new(MonitorConfig {
        services: vec![MonitoredService {
            service: Service::new(svc, Scheduler::Wlc),
            reals: vec![real(open), real(closed)],
            fallback: None,
            on_failure: FailureAction::Quiesce,
        }],
        start_down: false,
    });
    let mem = MemoryTable::default();
    let checker = Checker::spawn(monitor, mem.clone()).unwrap();
    let weight = |a: SocketAddr| {
        mem.snapshot()
            .iter()
            .find(|v| v.service.key == svc)
            .and_then(|v| v.dests.iter().find(|d| d.addr == a).map(|d| d.weight))
    };
    // The closed port is quiesced, the open one keeps its weight.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(weight(closed) == Some(0) && weight(open) == Some(1)) {
        assert!(Instant::now() < deadline, "table: {:#?}", mem.snapshot());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Something starts listening on the closed port: restored.
    let revived = tokio::net::TcpListener::bind(closed).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while weight(closed) != Some(1) {
        assert!(Instant::now() < deadline, "table: {:#?}", mem.snapshot());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = checker.stats();
    // At least: one run of the open probe, a failed and a successful one of the other.
    assert!(s.probes.load(Ordering::Relaxed) >= 3);
    assert!(s.failures.load(Ordering::Relaxed) >= 1);
    assert!(s.on_time.load(Ordering::Relaxed) >= 3);
    checker.stop().await.unwrap();
    drop((listener, revived));
}
