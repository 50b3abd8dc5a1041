//! The half-open `tcp_syn` check (raw sockets, needs CAP_NET_RAW) against loopback listeners on
//! 127.0.0.1 and ::1: the probe alone and the checker driving a table (both families take the
//! batched path); and across two namespaces, where checksums are verified, one by one and
//! batched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ha_lvs::checker::driver::{Checker, MemoryTable};
use ha_lvs::checker::probe::{ProbeContext, run_probe_in};
use ha_lvs::checker::syn::Verdict;
use ha_lvs::checker::synprobe::SynProber;
use ha_lvs::checker::{CheckKind, CheckSpec, ProbeKey, ProbeOutcome};
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

/// A port on loopback `lo` that nothing listens on (bound, then released).
async fn closed_port(lo: &str) -> SocketAddr {
    let l = tokio::net::TcpListener::bind(format!("{lo}:0"))
        .await
        .unwrap();
    l.local_addr().unwrap()
}

const V4: &str = "127.0.0.1";
const V6: &str = "[::1]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syn_probe_sees_open_and_closed_ports_without_completing_a_connection() {
    if !testkit::privileged("syn_probe_sees_open_and_closed_ports_without_completing_a_connection")
    {
        return;
    }
    probe_open_and_closed(V4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syn6_probe_sees_open_and_closed_ports_without_completing_a_connection() {
    if !testkit::privileged("syn6_probe_sees_open_and_closed_ports_without_completing_a_connection")
    {
        return;
    }
    probe_open_and_closed(V6).await;
}

async fn probe_open_and_closed(lo: &str) {
    let listener = tokio::net::TcpListener::bind(format!("{lo}:0"))
        .await
        .unwrap();
    let open = listener.local_addr().unwrap();
    let closed = closed_port(lo).await;
    let ctx = ProbeContext::with_syn(Arc::new(SynProber::new().unwrap()));
    let key = |target| ProbeKey {
        target,
        spec: spec(),
    };
    for _ in 0..20 {
        assert_eq!(run_probe_in(&key(open), &ctx).await, ProbeOutcome::Up);
        let down = run_probe_in(&key(closed), &ctx).await;
        assert!(
            matches!(&down, ProbeOutcome::Down(r) if r.contains("RST to SYN")),
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
    checker_quiesces_and_restores(V4, "10.0.0.1:80").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checker_with_syn6_checks_quiesces_and_restores() {
    if !testkit::privileged("checker_with_syn6_checks_quiesces_and_restores") {
        return;
    }
    checker_quiesces_and_restores(V6, "[fd00::1]:80").await;
}

async fn checker_quiesces_and_restores(lo: &str, vip: &str) {
    let listener = tokio::net::TcpListener::bind(format!("{lo}:0"))
        .await
        .unwrap();
    let open = listener.local_addr().unwrap();
    let closed = closed_port(lo).await;
    let svc = ServiceKey::tcp(vip.parse().unwrap());
    let monitor = common::one_service(svc, &[open, closed], spec());
    let mem = MemoryTable::default();
    let checker = Checker::spawn(monitor, mem.clone()).unwrap();
    // The closed port is quiesced, the open one keeps its weight.
    common::wait_weights(&mem, svc, &[(open, 1), (closed, 0)]).await;
    // Something starts listening on the closed port: restored.
    let revived = tokio::net::TcpListener::bind(closed).await.unwrap();
    common::wait_weights(&mem, svc, &[(closed, 1)]).await;
    let s = checker.stats();
    // At least: one run of the open probe, a failed and a successful one of the other.
    assert!(s.probes.load(Ordering::Relaxed) >= 3);
    assert!(s.failures.load(Ordering::Relaxed) >= 1);
    assert!(s.on_time.load(Ordering::Relaxed) >= 3);
    // Every run went out in a batch of SYNs, none as a task of its own. (Counters are added
    // together at the end of a driver iteration: read them in one go between two.)
    let batched_and_started = || {
        let started = s.on_time.load(Ordering::Relaxed) + s.late.load(Ordering::Relaxed);
        (s.batched.load(Ordering::Relaxed), started)
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (batched, started) = batched_and_started();
        if batched >= 3 && batched == started {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "batched {batched} of {started} starts"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    checker.stop().await.unwrap();
    // Every probe of the open port was half-open: nothing reached accept().
    let accepted = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
    assert!(accepted.is_err(), "a SYN check completed a connection");
    drop(revived);
}

/// Across a bridge between two namespaces (checksums are verified there, unlike on
/// loopback): host 0 probes a listener of host 1 over IPv6 and IPv4.
#[test]
fn syn6_probe_across_namespaces() {
    if !testkit::privileged("syn6_probe_across_namespaces") {
        return;
    }
    let topo = testkit::netns::Topology::builder()
        .hosts(2)
        .ipv6(true)
        .build()
        .unwrap();
    let h1 = topo.host(1);
    let v6 = std::net::IpAddr::V6(h1.ipv6().unwrap());
    let v4 = std::net::IpAddr::V4(h1.ipv4());
    // Sockets stay in the namespace they were made in.
    let (l6, l4) = h1.ns().run(|| {
        (
            std::net::TcpListener::bind(SocketAddr::new(v6, 0)).unwrap(),
            std::net::TcpListener::bind(SocketAddr::new(v4, 0)).unwrap(),
        )
    });
    let open6 = l6.local_addr().unwrap();
    let open4 = l4.local_addr().unwrap();
    // Ports nothing listens on (the listeners' ports + 1 are almost surely free; a listener
    // there would only make the assertion fail, not pass wrongly).
    let closed6 = SocketAddr::new(v6, open6.port().wrapping_add(1));
    let closed4 = SocketAddr::new(v4, open4.port().wrapping_add(1));
    topo.host(0).ns().run(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let ctx = ProbeContext::with_syn(Arc::new(SynProber::new().unwrap()));
                let key = |target| ProbeKey {
                    target,
                    spec: CheckSpec {
                        timeout: Duration::from_secs(2),
                        ..spec()
                    },
                };
                for open in [open6, open4] {
                    assert_eq!(
                        run_probe_in(&key(open), &ctx).await,
                        ProbeOutcome::Up,
                        "{open}"
                    );
                }
                for closed in [closed6, closed4] {
                    let down = run_probe_in(&key(closed), &ctx).await;
                    assert!(
                        matches!(&down, ProbeOutcome::Down(r) if r.contains("RST to SYN")),
                        "{closed}: {down:?}"
                    );
                }
                // The same four in one batch of untracked SYNs, both families mixed.
                let prober = SynProber::polled().unwrap();
                let src = |t: SocketAddr| match t {
                    SocketAddr::V4(t) => IpAddr::V4(prober.source_for(*t.ip()).unwrap()),
                    SocketAddr::V6(t) => IpAddr::V6(prober.source_for6(t).unwrap()),
                };
                let targets = [open6, closed4, closed6, open4];
                let syns: Vec<(IpAddr, SocketAddr, u32)> = targets
                    .iter()
                    .zip(100u32..)
                    .map(|(&t, seq)| (src(t), t, seq))
                    .collect();
                prober.send_untracked(&syns).unwrap();
                let (mut replies, mut tracked) = (Vec::new(), Vec::new());
                let deadline = Instant::now() + Duration::from_secs(5);
                while replies.len() < targets.len() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    prober.receive_untracked(&mut replies, &mut tracked);
                }
                assert!(tracked.is_empty(), "{tracked:?}");
                let verdict = |t: SocketAddr, seq: u32| {
                    replies
                        .iter()
                        .find(|r| r.from == t && r.seq == seq)
                        .map(|r| r.verdict)
                };
                assert_eq!(verdict(open6, 100), Some(Verdict::Open), "{replies:?}");
                assert_eq!(verdict(closed4, 101), Some(Verdict::Closed), "{replies:?}");
                assert_eq!(verdict(closed6, 102), Some(Verdict::Closed), "{replies:?}");
                assert_eq!(verdict(open4, 103), Some(Verdict::Open), "{replies:?}");
                // A source of the wrong family is refused, nothing sent.
                let wrong = [(src(open4), open6, 7)];
                assert!(prober.send_untracked(&wrong).is_err());
            })
    });
    // Half-open: the listener of host 1 never got a connection.
    l6.set_nonblocking(true).unwrap();
    assert!(l6.accept().is_err(), "a SYN check completed a connection");
}
