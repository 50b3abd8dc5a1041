//! Self-tests of the network-namespace rig (privileged: need root).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use testkit::netns::{self, Netem, Topology};

fn alive(names: &[String]) -> Vec<String> {
    let now = netns::list().unwrap();
    names.iter().filter(|n| now.contains(n)).cloned().collect()
}

#[test]
fn three_hosts_ping_and_link_down_breaks_it() {
    if !testkit::privileged("three_hosts_ping_and_link_down_breaks_it") {
        return;
    }
    let topo = Topology::star(3).unwrap();
    let (h0, h1, h2) = (topo.host(0), topo.host(1), topo.host(2));
    assert!(
        h0.ping(h1.ipv4(), Duration::from_secs(2)).unwrap(),
        "h0 -> h1"
    );
    assert!(
        h1.ping(h2.ipv4(), Duration::from_secs(2)).unwrap(),
        "h1 -> h2"
    );
    assert!(
        h2.ping(h0.ipv6().unwrap(), Duration::from_secs(2)).unwrap(),
        "h2 -> h0 over IPv6"
    );

    // Pull h2's cable: h0 can no longer reach it, but still reaches h1.
    topo.set_link(2, false).unwrap();
    assert!(
        !h0.ping(h2.ipv4(), Duration::from_secs(1)).unwrap(),
        "h2 still reachable with its link down"
    );
    assert!(h0.ping(h1.ipv4(), Duration::from_secs(2)).unwrap());
    topo.set_link(2, true).unwrap();
    assert!(
        h0.ping(h2.ipv4(), Duration::from_secs(3)).unwrap(),
        "h2 unreachable after link up"
    );

    // The host's own interface going down cuts it off too.
    h1.set_iface_up(false).unwrap();
    assert!(!h0.ping(h1.ipv4(), Duration::from_secs(1)).unwrap());
}

#[test]
fn closure_runs_inside_the_namespace() {
    if !testkit::privileged("closure_runs_inside_the_namespace") {
        return;
    }
    let topo = Topology::star(2).unwrap();
    let server_addr = (topo.host(0).ipv4(), 7000);
    // A listener bound inside h0 (its address exists only there) ...
    let listener = topo
        .host(0)
        .ns()
        .run(|| TcpListener::bind(server_addr))
        .unwrap();
    // ... accepts a connection made from inside h1.
    let client = topo
        .host(1)
        .ns()
        .run(move || TcpStream::connect_timeout(&server_addr.into(), Duration::from_secs(2)));
    let client = client.unwrap();
    let (_conn, peer) = listener.accept().unwrap();
    assert_eq!(peer.ip(), topo.host(1).ipv4());
    drop(client);
    // Outside the namespaces the address does not exist.
    assert!(TcpListener::bind(server_addr).is_err());
}

#[test]
fn exec_runs_commands_in_the_namespace() {
    if !testkit::privileged("exec_runs_commands_in_the_namespace") {
        return;
    }
    let topo = Topology::star(1).unwrap();
    let out = topo
        .host(0)
        .ns()
        .exec("ip", &["-4", "-o", "addr", "show", "dev", "eth0"])
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&topo.host(0).ipv4().to_string()));
    let out = topo.host(0).ns().sh("exit 7").unwrap();
    assert_eq!(out.status.code(), Some(7));
}

#[test]
fn netem_delay_is_measurable_when_available() {
    if !testkit::privileged("netem_delay_is_measurable_when_available") {
        return;
    }
    let topo = Topology::star(2).unwrap();
    let netem = Netem {
        delay: Duration::from_millis(100),
        ..Netem::default()
    };
    match topo.host(0).set_netem(netem) {
        Err(testkit::Error::NetemUnavailable { detail }) => {
            eprintln!("netem unavailable on this kernel ({detail}); delay not measured");
            return;
        }
        other => other.unwrap(),
    }
    let peer = topo.host(1).ipv4();
    let t = Instant::now();
    assert!(topo.host(0).ping(peer, Duration::from_secs(3)).unwrap());
    let rtt = t.elapsed();
    assert!(
        rtt >= Duration::from_millis(100),
        "ping took {rtt:?} despite 100 ms netem delay"
    );
    topo.host(0).clear_netem().unwrap();
}

#[test]
fn drop_removes_every_namespace() {
    if !testkit::privileged("drop_removes_every_namespace") {
        return;
    }
    let topo = Topology::star(3).unwrap();
    let names = topo.namespace_names();
    assert_eq!(names.len(), 4);
    assert_eq!(alive(&names).len(), 4, "namespaces not created");
    drop(topo);
    assert!(alive(&names).is_empty(), "left behind: {:?}", alive(&names));
}

#[test]
fn panic_inside_a_test_still_cleans_up() {
    if !testkit::privileged("panic_inside_a_test_still_cleans_up") {
        return;
    }
    let mut names = Vec::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let topo = Topology::star(2).unwrap();
        names = topo.namespace_names();
        // A panic inside a namespaced closure propagates and still unwinds the topology.
        topo.host(0)
            .ns()
            .run(|| panic!("deliberate panic inside the namespace"));
    }));
    assert!(result.is_err(), "the panic did not propagate");
    assert_eq!(names.len(), 3);
    assert!(alive(&names).is_empty(), "left behind: {:?}", alive(&names));
}

#[test]
fn spawned_process_is_killed_on_drop() {
    if !testkit::privileged("spawned_process_is_killed_on_drop") {
        return;
    }
    let topo = Topology::star(1).unwrap();
    let mut child = topo.host(0).ns().spawn("sleep", &["30"]).unwrap();
    let pid = child.child().unwrap().id();
    let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    // `ip netns exec` enters h0's namespace, then execs sleep under the same pid.
    let own_link = std::fs::read_link("/proc/self/ns/net").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_link(proc_dir.join("ns/net")).unwrap() == own_link {
        assert!(
            Instant::now() < deadline,
            "the process never entered the namespace"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(child);
    assert!(!proc_dir.exists(), "process {pid} survived its guard");
}

#[test]
fn public_subnets_are_refused() {
    let err = Topology::builder()
        .subnet_v4([8, 8, 8])
        .build()
        .unwrap_err();
    assert!(matches!(err, testkit::Error::Invalid(_)), "{err}");
}
