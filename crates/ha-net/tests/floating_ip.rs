//! The floating IP resource and ping nodes: parameter parsing and packet layouts (no root),
//! then the real thing inside network namespaces (root).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (common rules)

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use ha_core::model::{AgentSpec, ResourceSpec};
use ha_core::resource::{Resource, ResourceRegistry};
use ha_core::{OcfCode, ResourceId};
use ha_net::floating_ip::{self, FloatingIp, FloatingIpConfig};
use ha_net::ping::{self, PingConfig};
use testkit::netns::Topology;

fn spec(params: &[(&str, &str)]) -> ResourceSpec {
    ResourceSpec {
        id: ResourceId::from("vip"),
        agent: AgentSpec::Builtin {
            kind: "IPaddr".into(),
        },
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        start_timeout: Duration::from_secs(5),
        stop_timeout: Duration::from_secs(5),
        monitor_interval: None,
        monitor_timeout: Duration::from_secs(5),
    }
}

#[test]
fn parameters() {
    let c = FloatingIpConfig::from_spec(&spec(&[
        ("ip", "10.0.0.5"),
        ("cidr_netmask", "255.255.255.0"),
        ("nic", "eth0"),
        ("label", "vip"),
    ]))
    .unwrap();
    assert_eq!(c.ip, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)));
    assert_eq!(c.prefix, 24);
    assert_eq!(c.label.as_deref(), Some("eth0:vip"));
    assert_eq!(c.garp_count, 5);
    assert_eq!(c.garp_refresh, None);
    let c = FloatingIpConfig::from_spec(&spec(&[("ip", "fd00::5"), ("nic", "eth1")])).unwrap();
    assert_eq!(c.prefix, 128);
    let bad = [
        vec![("nic", "eth0")],
        vec![("ip", "10.0.0.5")],
        vec![("ip", "nonsense"), ("nic", "eth0")],
        vec![("ip", "10.0.0.5"), ("nic", "eth0"), ("cidr_netmask", "33")],
        vec![
            ("ip", "10.0.0.5"),
            ("nic", "eth0"),
            ("cidr_netmask", "255.0.255.0"),
        ],
        vec![("ip", "fd00::5"), ("nic", "eth0"), ("label", "x")],
        vec![
            ("ip", "10.0.0.5"),
            ("nic", "eth0"),
            ("label", "much-too-long-label"),
        ],
        vec![("ip", "10.0.0.5"), ("nic", "eth0"), ("garp_count", "-1")],
    ];
    for b in bad {
        let e = FloatingIpConfig::from_spec(&spec(&b)).unwrap_err();
        assert!(e.to_string().contains("resource vip"), "{e}");
    }
    let mut reg = ResourceRegistry::new();
    floating_ip::register(&mut reg);
    assert!(reg.contains("IPaddr"));
    assert!(
        reg.build(&spec(&[("ip", "10.0.0.5"), ("nic", "eth0")]))
            .is_ok()
    );
    assert!(reg.build(&spec(&[("ip", "10.0.0.5")])).is_err());
}

#[test]
fn announcement_layouts() {
    let mac = [2, 0, 0, 0, 0, 9];
    let f = floating_ip::garp_frame(mac, Ipv4Addr::new(10, 0, 0, 5));
    assert_eq!(f.len(), 60);
    assert_eq!(&f[0..6], &[0xFF; 6]);
    assert_eq!(&f[6..12], &mac);
    assert_eq!(&f[12..14], &[0x08, 0x06]);
    assert_eq!(&f[20..22], &[0, 1], "ARP request");
    assert_eq!(&f[22..28], &mac, "sender MAC");
    assert_eq!(&f[28..32], &[10, 0, 0, 5], "sender IP");
    assert_eq!(&f[38..42], &[10, 0, 0, 5], "target IP = sender IP");
    let ip6: Ipv6Addr = "fd00::5".parse().unwrap();
    let na = floating_ip::unsolicited_na(mac, ip6);
    assert_eq!(na[0], 136);
    assert_eq!(na[4] & 0x20, 0x20, "override");
    assert_eq!(na[4] & 0x40, 0, "not solicited");
    assert_eq!(&na[8..24], &ip6.octets());
    assert_eq!(&na[24..26], &[2, 1]);
    assert_eq!(&na[26..32], &mac);
}

#[test]
fn icmp_helpers() {
    let req = ping::echo_request(false, 0x1234, 7);
    assert_eq!(
        ping::checksum(&req),
        0,
        "checksum over a valid packet is zero"
    );
    let mut reply = req.clone();
    reply[0] = 0;
    assert_eq!(ping::parse_reply(false, false, &reply), Some(7));
    let mut with_ip = vec![0x45; 20];
    with_ip.extend_from_slice(&reply);
    assert_eq!(ping::parse_reply(false, true, &with_ip), Some(7));
    assert_eq!(
        ping::parse_reply(false, false, &req),
        None,
        "a request is no reply"
    );
    assert_eq!(ping::parse_reply(false, true, &[0x4F]), None);
    assert_eq!(
        ping::parse_reply(true, false, &[129, 0, 0, 0, 0, 0, 0, 3]),
        Some(3)
    );
}

fn neigh_mac(topo: &Topology, host: usize, ip: &str) -> String {
    let out = topo.host(host).ns().ip(&["neigh", "show", ip]).unwrap();
    let s = String::from_utf8_lossy(&out.stdout).to_string();
    s.split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .unwrap_or("")
        .to_string()
}

fn mac_of(topo: &Topology, host: usize) -> String {
    let out = topo
        .host(host)
        .ns()
        .ip(&["-o", "link", "show", "eth0"])
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout).to_string();
    s.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap()
        .to_string()
}

fn wait(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn floating_ip_add_announce_monitor_remove() {
    if !testkit::privileged("floating_ip_add_announce_monitor_remove") {
        return;
    }
    let topo = Topology::builder()
        .hosts(2)
        .subnet_v4([10, 79, 0])
        .build()
        .unwrap();
    let fake = "02:00:00:00:00:01";
    for ip in ["10.79.0.50", "fd00:77::50"] {
        topo.host(1)
            .ns()
            .ip(&[
                "neigh", "replace", ip, "lladdr", fake, "dev", "eth0", "nud", "stale",
            ])
            .unwrap();
    }
    let v4 = FloatingIp::from_spec(&spec(&[
        ("ip", "10.79.0.50"),
        ("cidr_netmask", "24"),
        ("nic", "eth0"),
        ("label", "vip"),
        ("garp_count", "3"),
    ]))
    .unwrap();
    let v6 = FloatingIp::from_spec(&spec(&[
        ("ip", "fd00:77::50"),
        ("cidr_netmask", "64"),
        ("nic", "eth0"),
    ]))
    .unwrap();
    let run = |f: &(dyn Fn(&tokio::runtime::Runtime) + Sync)| {
        topo.host(0).ns().run(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            f(&rt)
        })
    };
    run(&|rt| {
        rt.block_on(async {
            assert_eq!(v4.monitor().await, OcfCode::NotRunning);
            let t0 = Instant::now();
            assert_eq!(v4.start().await, OcfCode::Success);
            eprintln!(
                "MEASURED floating ip start (add + first GARP): {:?}",
                t0.elapsed()
            );
            assert_eq!(v4.start().await, OcfCode::Success, "idempotent start");
            assert_eq!(v4.monitor().await, OcfCode::Success);
            assert_eq!(v6.start().await, OcfCode::Success);
            assert_eq!(v6.monitor().await, OcfCode::Success);
            // Let the rest of the burst go out.
            tokio::time::sleep(Duration::from_millis(50)).await;
        })
    });
    let addrs = topo
        .host(0)
        .ns()
        .ip(&["-o", "addr", "show", "dev", "eth0"])
        .unwrap();
    let addrs = String::from_utf8_lossy(&addrs.stdout).to_string();
    assert!(addrs.contains("inet 10.79.0.50/24"), "{addrs}");
    assert!(addrs.contains("eth0:vip"), "label set: {addrs}");
    assert!(addrs.contains("inet6 fd00:77::50/64"), "{addrs}");
    // The announcements moved the neighbour's entries to host 0's MAC.
    let mac = mac_of(&topo, 0);
    assert!(
        wait(Duration::from_secs(2), || neigh_mac(&topo, 1, "10.79.0.50")
            == mac),
        "gratuitous ARP did not update the neighbour: {} vs {mac}",
        neigh_mac(&topo, 1, "10.79.0.50")
    );
    assert!(
        wait(Duration::from_secs(2), || neigh_mac(
            &topo,
            1,
            "fd00:77::50"
        ) == mac),
        "neighbour advertisement did not update the neighbour: {} vs {mac}",
        neigh_mac(&topo, 1, "fd00:77::50")
    );
    assert!(
        topo.host(1)
            .ping("10.79.0.50", Duration::from_secs(1))
            .unwrap()
    );
    // Between bursts no packet socket stays open (it would get a copy of every frame).
    let packet_sockets = || {
        let out = topo
            .host(0)
            .ns()
            .exec_ok("cat", &["/proc/net/packet"])
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count() - 1
    };
    assert!(
        wait(Duration::from_secs(2), || packet_sockets() == 0),
        "{} packet socket(s) still open after the burst",
        packet_sockets()
    );
    // Someone removes the address behind our back: monitor notices.
    topo.host(0)
        .ns()
        .ip(&["addr", "del", "10.79.0.50/24", "dev", "eth0"])
        .unwrap();
    run(&|rt| {
        rt.block_on(async {
            assert_eq!(v4.monitor().await, OcfCode::NotRunning);
            assert_eq!(
                v4.stop().await,
                OcfCode::Success,
                "stop of a missing address"
            );
            assert_eq!(v6.stop().await, OcfCode::Success);
            assert_eq!(v6.monitor().await, OcfCode::NotRunning);
        })
    });
    let addrs = topo
        .host(0)
        .ns()
        .ip(&["-o", "addr", "show", "dev", "eth0"])
        .unwrap();
    let addrs = String::from_utf8_lossy(&addrs.stdout).to_string();
    assert!(
        !addrs.contains("10.79.0.50") && !addrs.contains("fd00:77::50"),
        "{addrs}"
    );
    // A missing interface is a hard error for this node (ban), not a generic failure.
    let nowhere =
        FloatingIp::from_spec(&spec(&[("ip", "10.79.0.51"), ("nic", "nosuch0")])).unwrap();
    run(&|rt| {
        rt.block_on(async {
            assert_eq!(nowhere.start().await, OcfCode::ErrInstalled);
        })
    });
}

#[test]
fn ping_nodes_report_reachability_changes() {
    if !testkit::privileged("ping_nodes_report_reachability_changes") {
        return;
    }
    let topo = Topology::builder()
        .hosts(2)
        .subnet_v4([10, 80, 0])
        .build()
        .unwrap();
    topo.host(0).ns().run(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (tx, mut rx) = tokio::sync::mpsc::channel(8);
            let mut cfg = PingConfig::new(
                vec!["10.80.0.2".into(), "fd00:77::2".into()],
                Duration::from_millis(100),
            );
            cfg.failures = 2;
            let _p = ping::spawn_pinger(cfg, tx).unwrap();
            let first = tokio::time::timeout(Duration::from_secs(3), rx.recv()).await;
            assert_eq!(first.unwrap(), Some(true));
            topo.set_link(1, false).unwrap();
            let t0 = Instant::now();
            let next = tokio::time::timeout(Duration::from_secs(3), rx.recv()).await;
            assert_eq!(next.unwrap(), Some(false));
            eprintln!("MEASURED ping loss detected after {:?}", t0.elapsed());
            topo.set_link(1, true).unwrap();
            let back = tokio::time::timeout(Duration::from_secs(3), rx.recv()).await;
            assert_eq!(back.unwrap(), Some(true));
        })
    });
}
