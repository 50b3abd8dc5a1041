//! The ICMP echo (`ping`) check: loopback, real servers in network namespaces whose cable is
//! pulled and plugged back, both socket kinds (datagram via `net.ipv4.ping_group_range`, raw
//! via CAP_NET_RAW), concurrent probes, and the "neither socket" failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ha_lvs::checker::driver::{Checker, MemoryTable};
use ha_lvs::checker::ping::{SocketKind, echo};
use ha_lvs::checker::probe::run_probe;
use ha_lvs::checker::{CheckKind, CheckSpec, ProbeKey, ProbeOutcome};
use ha_lvs::model::ServiceKey;
use testkit::netns::{Netns, Topology};

fn key(ip: IpAddr, timeout_ms: u64) -> ProbeKey {
    ProbeKey {
        target: SocketAddr::new(ip, 0),
        spec: CheckSpec {
            kind: CheckKind::Ping,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(timeout_ms),
            rise: 1,
            fall: 1,
        },
    }
}

async fn probe(ip: IpAddr, timeout_ms: u64) -> ProbeOutcome {
    run_probe(&key(ip, timeout_ms)).await
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Allow (`true`) or forbid ICMP datagram sockets for every group in `ns`.
fn ping_group_range(ns: &Netns, allow: bool) {
    let range = if allow { "0 2147483647" } else { "1 0" };
    let out = ns
        .sh(&format!(
            "echo '{range}' > /proc/sys/net/ipv4/ping_group_range"
        ))
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test]
async fn loopback_answers_on_v4_and_v6() {
    if !testkit::privileged("loopback_answers_on_v4_and_v6") {
        return;
    }
    for ip in ["127.0.0.1", "::1"] {
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(probe(ip, 1000).await, ProbeOutcome::Up, "{ip}");
        let r = echo(SocketAddr::new(ip, 0)).await.unwrap();
        assert!(r.rtt < Duration::from_secs(1), "{r:?}");
    }
}

#[test]
fn datagram_sockets_when_ping_group_range_allows_raw_otherwise() {
    if !testkit::privileged("datagram_sockets_when_ping_group_range_allows_raw_otherwise") {
        return;
    }
    let ns = Netns::new("pg").unwrap();
    for (allow, want) in [(true, SocketKind::Datagram), (false, SocketKind::Raw)] {
        ping_group_range(&ns, allow);
        ns.run(|| {
            rt().block_on(async {
                for ip in ["127.0.0.1", "::1"] {
                    let ip: IpAddr = ip.parse().unwrap();
                    let r = echo(SocketAddr::new(ip, 0)).await.unwrap();
                    assert_eq!(r.kind, want, "{ip}");
                    assert_eq!(probe(ip, 1000).await, ProbeOutcome::Up, "{ip} {want:?}");
                }
            })
        });
    }
}

/// Probe host 1 of a two-host bridge from host 0 (v4 and v6, both socket kinds), pull its
/// cable, check it goes down (and that concurrent probes of live and dead targets do not take
/// each other's replies), plug it back.
#[test]
fn real_server_down_when_its_cable_is_pulled_and_up_again() {
    if !testkit::privileged("real_server_down_when_its_cable_is_pulled_and_up_again") {
        return;
    }
    let topo = Topology::builder().hosts(2).ipv6(true).build().unwrap();
    let (h0, h1) = (topo.host(0), topo.host(1));
    let v4 = IpAddr::V4(h1.ipv4());
    let v6 = IpAddr::V6(h1.ipv6().unwrap());
    // In the subnet but nobody's: ARP / neighbour discovery gets no answer.
    let nobody_v4: IpAddr = "10.77.0.200".parse().unwrap();
    let nobody_v6: IpAddr = "fd00:77::c8".parse().unwrap();
    // No route at all from host 0.
    let unroutable: IpAddr = "192.0.2.1".parse().unwrap();
    // Routed by host 0 via host 1, which has an `unreachable` route for them: host 1 answers
    // with ICMP destination unreachable.
    let rejected_v4: IpAddr = "198.51.100.1".parse().unwrap();
    let rejected_v6: IpAddr = "2001:db8:1::1".parse().unwrap();
    let out = h1
        .ns()
        .sh("echo 1 > /proc/sys/net/ipv4/ip_forward && \
             echo 1 > /proc/sys/net/ipv6/conf/all/forwarding && \
             ip route add unreachable 198.51.100.0/24 && \
             ip -6 route add unreachable 2001:db8:1::/48")
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    h0.ns()
        .ip(&[
            "route",
            "add",
            "198.51.100.0/24",
            "via",
            &h1.ipv4().to_string(),
        ])
        .unwrap();
    h0.ns()
        .ip(&[
            "-6",
            "route",
            "add",
            "2001:db8:1::/48",
            "via",
            &v6.to_string(),
        ])
        .unwrap();
    for allow_dgram in [true, false] {
        ping_group_range(h0.ns(), allow_dgram);
        h0.ns().run(|| {
            rt().block_on(async {
                for ip in [v4, v6] {
                    assert_eq!(probe(ip, 2000).await, ProbeOutcome::Up, "{ip}");
                }
                let down = probe(unroutable, 1000).await;
                eprintln!("unroutable: {down:?}");
                assert!(
                    matches!(&down, ProbeOutcome::Down(r) if r.contains("unreachable")),
                    "{down:?}"
                );
                // The ICMP error makes the probe down at once, long before its timeout.
                // Both socket kinds name the ICMP error and the router that sent it.
                for (ip, router) in [(rejected_v4, v4), (rejected_v6, v6)] {
                    let t0 = Instant::now();
                    let down = probe(ip, 3000).await;
                    eprintln!("rejected by a router, {ip}: {down:?}");
                    let from = format!("(ICMP code 1) from {router}");
                    let from6 = format!("(ICMP code 0) from {router}");
                    assert!(
                        matches!(&down, ProbeOutcome::Down(r) if r.contains(&ip.to_string())
                            && (r.ends_with(&from) || r.ends_with(&from6))),
                        "{ip}: {down:?}"
                    );
                    assert!(
                        t0.elapsed() < Duration::from_secs(2),
                        "{ip}: {down:?} took {:?}",
                        t0.elapsed()
                    );
                }
                // Concurrent probes: 16 to each live and each dead address at once.
                let mut set = tokio::task::JoinSet::new();
                for i in 0..64 {
                    let ip = [v4, v6, nobody_v4, nobody_v6][i % 4];
                    set.spawn(async move { (ip, probe(ip, 1500).await) });
                }
                while let Some(r) = set.join_next().await {
                    let (ip, outcome) = r.unwrap();
                    if ip == v4 || ip == v6 {
                        assert_eq!(outcome, ProbeOutcome::Up, "{ip}");
                    } else {
                        assert!(
                            matches!(outcome, ProbeOutcome::Down(_)),
                            "{ip}: {outcome:?}"
                        );
                    }
                }
            })
        });
        topo.set_link(1, false).unwrap();
        h0.ns().run(|| {
            rt().block_on(async {
                for ip in [v4, v6] {
                    let down = probe(ip, 700).await;
                    eprintln!("cable pulled, {ip}: {down:?}");
                    assert!(
                        matches!(&down, ProbeOutcome::Down(r) if r.contains(&ip.to_string())),
                        "{ip}: {down:?}"
                    );
                }
            })
        });
        topo.set_link(1, true).unwrap();
        h0.ns().run(|| {
            rt().block_on(async {
                for ip in [v4, v6] {
                    // The neighbour entry may need to be relearnt: allow a few tries.
                    let mut last = ProbeOutcome::Down(String::new());
                    for _ in 0..5 {
                        last = probe(ip, 1000).await;
                        if last == ProbeOutcome::Up {
                            break;
                        }
                    }
                    assert_eq!(last, ProbeOutcome::Up, "{ip} after the cable came back");
                }
            })
        });
    }
}

/// Linux capability number of CAP_NET_RAW.
const CAP_NET_RAW: u32 = 13;

/// Drop CAP_NET_RAW from the calling thread's effective set (capset(2) is per thread).
fn drop_net_raw_on_this_thread() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut h = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: valid header and two data structs, as version 3 requires.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) };
    assert_eq!(rc, 0, "capget: {}", std::io::Error::last_os_error());
    d[0].effective &= !(1 << CAP_NET_RAW);
    // SAFETY: as above.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()) };
    assert_eq!(rc, 0, "capset: {}", std::io::Error::last_os_error());
}

#[test]
fn without_ping_sockets_or_raw_sockets_the_probe_says_why() {
    if !testkit::privileged("without_ping_sockets_or_raw_sockets_the_probe_says_why") {
        return;
    }
    let ns = Netns::new("nr").unwrap();
    ping_group_range(&ns, false);
    // Threads of Netns::run end with the closure, so the dropped capability goes with them.
    ns.run(|| {
        drop_net_raw_on_this_thread();
        rt().block_on(async {
            for ip in ["127.0.0.1", "::1"] {
                let ip: IpAddr = ip.parse().unwrap();
                let down = probe(ip, 1000).await;
                assert!(
                    matches!(&down, ProbeOutcome::Down(r)
                        if r.contains("ping_group_range") && r.contains("CAP_NET_RAW")),
                    "{ip}: {down:?}"
                );
            }
        })
    });
    // The same namespace with datagram sockets allowed works without CAP_NET_RAW.
    ping_group_range(&ns, true);
    ns.run(|| {
        drop_net_raw_on_this_thread();
        rt().block_on(async {
            let r = echo("127.0.0.1:0".parse().unwrap()).await.unwrap();
            assert_eq!(r.kind, SocketKind::Datagram);
        })
    });
}

/// The checker driving a table with ping checks: inside a namespace, a real server whose
/// address nobody holds is quiesced, then restored once the address appears; the one that
/// answers keeps its weight.
#[test]
fn checker_quiesces_and_restores_a_ping_checked_real_server() {
    if !testkit::privileged("checker_quiesces_and_restores_a_ping_checked_real_server") {
        return;
    }
    let ns = Netns::new("pc").unwrap();
    // v0 holds 10.99.0.1; v1 (its peer, no address) answers nothing for 10.99.0.2.
    let out = ns
        .sh(
            "ip link add v0 type veth peer name v1 && ip addr add 10.99.0.1/24 dev v0 && \
             ip link set v0 up && ip link set v1 up",
        )
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let live: SocketAddr = "10.99.0.1:80".parse().unwrap();
    let dead: SocketAddr = "10.99.0.2:80".parse().unwrap();
    let svc = ServiceKey::tcp("10.0.0.1:80".parse().unwrap());
    let check = CheckSpec {
        interval: Duration::from_millis(200),
        timeout: Duration::from_millis(300),
        ..key(live.ip(), 300).spec
    };
    let monitor = common::one_service(svc, &[live, dead], check);
    ns.run(|| {
        rt().block_on(async {
            let mem = MemoryTable::default();
            let checker = Checker::spawn(monitor, mem.clone()).unwrap();
            common::wait_weights(&mem, svc, &[(live, 1), (dead, 0)]).await;
            // The address appears (on v1): it answers, and the real server is restored.
            let out = std::process::Command::new("ip")
                .args(["addr", "add", "10.99.0.2/24", "dev", "v1"])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            common::wait_weights(&mem, svc, &[(live, 1), (dead, 1)]).await;
            checker.stop().await.unwrap();
        })
    });
}
