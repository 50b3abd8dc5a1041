//! Takeover tests between network namespaces (root): two cluster nodes and a client on one
//! bridge. Each node is a real process (`ha-net-node`), so a crash is a real SIGKILL. The
//! client probes the floating address over UDP every 10 ms; each node runs an echo service
//! that answers with its name, so the client sees who answers (which proves the gratuitous
//! ARP moved its neighbour entry).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (common rules)

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ha_core::model::{
    AgentSpec, AuthAlgorithm, AuthKey, AuthSpec, ClusterModel, LinkSpec, Medium, QuorumMode,
    ResourceSpec, Timing,
};
use ha_core::sim::model_builder;
use ha_core::{NodeId, ResourceId};
use ha_net::auth::Keyring;
use ha_net::session::{Session, SessionConfig};
use ha_net::wire::ClusterId;
use testkit::netns::{NsChild, Topology};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);
const ECHO_PORT: u16 = 7777;
const HB_PORT: u16 = 694;
const SECRET: &[u8] = b"netns-test-secret";

/// Namespace tests share 2 cores: run them one at a time so timing stays honest.
static SERIAL: Mutex<()> = Mutex::new(());

struct Opts {
    auto_failback: bool,
    /// Second heartbeat link on its own bridge (eth1, 10.78.0.0/24).
    second_link: bool,
    /// Ping node for both cluster nodes (the client's address on the first bridge).
    ping_client: bool,
    /// Also send every frame to the client (to capture frames for the replay test).
    tap_client: bool,
    /// Keepalive and deadtime (default 25 ms / 150 ms).
    timing: (Duration, Duration),
    /// Nodes write their status file (off for CPU measurements).
    status_file: bool,
    /// Client probe period (and answer deadline).
    probe_every: Duration,
    /// More arguments for every `ha-net-node`.
    node_args: Vec<&'static str>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            auto_failback: true,
            second_link: false,
            ping_client: false,
            tap_client: false,
            timing: (Duration::from_millis(25), Duration::from_millis(150)),
            status_file: true,
            probe_every: Duration::from_millis(10),
            node_args: Vec::new(),
        }
    }
}

fn model(o: &Opts) -> ClusterModel {
    let mut m = model_builder(2)
        .names(&["alpha", "beta"])
        .quorum(QuorumMode::TwoNode)
        .auto_failback(o.auto_failback)
        .timing(Timing {
            keepalive: o.timing.0,
            warntime: o.timing.1 / 2,
            deadtime: o.timing.1,
            initdead: (o.timing.1 * 2).max(Duration::from_millis(400)),
            detector: Default::default(),
        })
        .group("web", &["vip"], Some(1))
        .build();
    m.name = "netns-test".into();
    let mut peers = vec![
        format!("10.77.0.1:{HB_PORT}"),
        format!("10.77.0.2:{HB_PORT}"),
    ];
    if o.tap_client {
        peers.push(format!("10.77.0.3:{HB_PORT}"));
    }
    m.links = vec![LinkSpec {
        name: "lan".into(),
        medium: Medium::Ucast {
            interface: "eth0".into(),
            peers,
            port: HB_PORT,
        },
    }];
    if o.second_link {
        m.links.push(LinkSpec {
            name: "crossover".into(),
            medium: Medium::Ucast {
                interface: "eth1".into(),
                peers: vec![
                    format!("10.78.0.1:{HB_PORT}"),
                    format!("10.78.0.2:{HB_PORT}"),
                ],
                port: HB_PORT,
            },
        });
    }
    if o.ping_client {
        m.ping_nodes = vec!["10.77.0.3".into()];
    }
    let vip = ResourceId::from("vip");
    m.resources.insert(
        vip.clone(),
        ResourceSpec {
            id: vip,
            agent: AgentSpec::Builtin {
                kind: "IPaddr".into(),
            },
            params: [
                ("ip", VIP.to_string()),
                ("cidr_netmask", "24".into()),
                ("nic", "eth0".into()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            start_timeout: Duration::from_secs(2),
            stop_timeout: Duration::from_secs(2),
            monitor_interval: None,
            monitor_timeout: Duration::from_secs(2),
        },
    );
    m.auth = AuthSpec {
        active: Some(1),
        keys: vec![AuthKey {
            id: 1,
            algorithm: AuthAlgorithm::HmacSha256,
            secret: SECRET.to_vec(),
        }],
        insecure_no_auth: false,
    };
    m
}

/// One probe: when it was sent and who answered (None: lost).
#[derive(Debug, Clone)]
struct Probe {
    at: Instant,
    from: Option<String>,
}

struct Cluster {
    topo: Arc<Topology>,
    dir: tempfile::TempDir,
    nodes: [Option<NsChild>; 2],
    probes: Arc<Mutex<Vec<Probe>>>,
    stop_probe: Arc<AtomicBool>,
    prober: Option<std::thread::JoinHandle<()>>,
    status_file: bool,
    probe_every: Duration,
    node_args: Vec<&'static str>,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Cluster {
    fn new(o: &Opts) -> Cluster {
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let topo = Topology::builder().hosts(3).ipv6(false).build().unwrap();
        if o.second_link {
            add_second_bridge(&topo);
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("model.json"),
            serde_json::to_string_pretty(&model(o)).unwrap(),
        )
        .unwrap();
        Cluster {
            status_file: o.status_file,
            node_args: o.node_args.clone(),
            probe_every: o.probe_every,
            topo: Arc::new(topo),
            dir,
            nodes: [None, None],
            probes: Arc::new(Mutex::new(Vec::new())),
            stop_probe: Arc::new(AtomicBool::new(false)),
            prober: None,
            _serial: serial,
        }
    }

    fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    fn start(&mut self, i: usize) {
        // HA_NET_NODE_BIN: e.g. a release build, for the benchmark.
        let bin_override = std::env::var("HA_NET_NODE_BIN").ok();
        let bin = bin_override
            .as_deref()
            .unwrap_or(env!("CARGO_BIN_EXE_ha-net-node"));
        let id = (i + 1).to_string();
        let model = self.path("model.json");
        let log = self.path(&format!("node{}.log", i + 1));
        // Keep earlier logs of the same node.
        if log.exists() {
            let old = std::fs::read_to_string(&log).unwrap_or_default();
            let all = self.path(&format!("node{}.earlier.log", i + 1));
            let prev = std::fs::read_to_string(&all).unwrap_or_default();
            std::fs::write(all, prev + &old).unwrap();
        }
        let status = self.path(&format!("node{}.json", i + 1));
        let (model, log, status) = (
            model.to_str().unwrap(),
            log.to_str().unwrap(),
            status.to_str().unwrap(),
        );
        let echo = ECHO_PORT.to_string();
        let mut args = vec![
            "--model",
            model,
            "--node",
            &id,
            "--log",
            log,
            "--echo-port",
            &echo,
            "--stop-timeout-ms",
            "5000",
            // SCHED_FIFO + mlockall: the nodes keep their timing while the machine is busy
            // (these tests share 2 cores with builds).
            "--realtime",
        ];
        if self.status_file {
            args.extend(["--status", status]);
        }
        args.extend(self.node_args.iter().copied());
        let child = self.topo.host(i).ns().spawn(bin, &args).unwrap();
        self.nodes[i] = Some(child);
    }

    fn pid(&mut self, i: usize) -> nix::unistd::Pid {
        let c = self.nodes[i].as_mut().unwrap().child().unwrap();
        nix::unistd::Pid::from_raw(c.id() as i32)
    }

    fn kill(&mut self, i: usize) {
        nix::sys::signal::kill(self.pid(i), nix::sys::signal::Signal::SIGKILL).unwrap();
        let mut c = self.nodes[i].take().unwrap();
        c.child().unwrap().wait().unwrap();
    }

    /// SIGTERM and wait for the process to exit; returns how long the handover took.
    fn stop_gracefully(&mut self, i: usize) -> Duration {
        let t0 = Instant::now();
        nix::sys::signal::kill(self.pid(i), nix::sys::signal::Signal::SIGTERM).unwrap();
        let mut c = self.nodes[i].take().unwrap();
        let st = c.child().unwrap().wait().unwrap();
        assert!(st.success(), "node {} exited with {st}", i + 1);
        t0.elapsed()
    }

    /// Whether host `i` holds the floating address.
    fn holds_vip(&self, i: usize) -> bool {
        let out = self
            .topo
            .host(i)
            .ns()
            .ip(&["-o", "-4", "addr", "show", "dev", "eth0"])
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&format!("inet {VIP}/"))
    }

    fn status(&self, i: usize) -> serde_json::Value {
        let p = self.path(&format!("node{}.json", i + 1));
        serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_default())
            .unwrap_or(serde_json::Value::Null)
    }

    fn start_prober(&mut self) {
        let topo = self.topo.clone();
        let probes = self.probes.clone();
        let stop = self.stop_probe.clone();
        let every = self.probe_every;
        self.prober = Some(std::thread::spawn(move || {
            topo.host(2).ns().run(|| probe_loop(&stop, &probes, every));
        }));
    }

    /// Probes sent since `since`.
    fn probes_since(&self, since: Instant) -> Vec<Probe> {
        let p = self.probes.lock().unwrap();
        p.iter().filter(|p| p.at >= since).cloned().collect()
    }

    /// Wait until the last probe was answered by `name`; returns when the first such answer
    /// (after `since`) was sent.
    fn wait_answer_from(&self, name: &str, since: Instant, limit: Duration) -> Duration {
        let t0 = Instant::now();
        loop {
            if let Some(p) = self
                .probes_since(since)
                .iter()
                .find(|p| p.from.as_deref() == Some(name))
            {
                return p.at.saturating_duration_since(since);
            }
            if t0.elapsed() > limit {
                self.dump_logs();
                panic!("no answer from {name} within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn dump_logs(&self) {
        for f in [
            "node1.earlier.log",
            "node1.log",
            "node2.earlier.log",
            "node2.log",
        ] {
            if let Ok(s) = std::fs::read_to_string(self.path(f)) {
                let tail: Vec<&str> = s.lines().rev().take(60).collect();
                eprintln!("===== {f} (last lines) =====");
                for l in tail.into_iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }

    /// Sample ownership for `d`; panics if both hosts hold the address at one sample.
    fn assert_single_owner_for(&self, d: Duration) {
        let t0 = Instant::now();
        while t0.elapsed() < d {
            let (a, b) = (self.holds_vip(0), self.holds_vip(1));
            if a && b {
                self.dump_logs();
                panic!("both nodes hold {VIP}");
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_probe.store(true, Ordering::Relaxed);
        if let Some(p) = self.prober.take() {
            let _ = p.join();
        }
        if std::thread::panicking() {
            self.dump_logs();
        }
    }
}

fn probe_loop(stop: &AtomicBool, probes: &Mutex<Vec<Probe>>, every: Duration) {
    // Real-time client: under CPU load its probes stay on time (best effort).
    let param = libc::sched_param { sched_priority: 40 };
    // SAFETY: plain syscall with a valid pointer to an initialised sched_param.
    let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
    let target = SocketAddr::from((VIP, ECHO_PORT));
    let mut buf = [0u8; 512];
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let at = Instant::now();
        let deadline = at + every;
        let msg = seq.to_string();
        let _ = sock.send_to(msg.as_bytes(), target);
        let mut from = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left)).unwrap();
            match sock.recv_from(&mut buf) {
                Ok((n, _)) => {
                    let s = String::from_utf8_lossy(&buf[..n]).to_string();
                    let mut it = s.split(' ');
                    let (name, echoed) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
                    if echoed == msg {
                        from = Some(name.to_string());
                        break;
                    }
                }
                Err(_) => {
                    // Timeout, or ICMP port unreachable from a host without the service.
                    if Instant::now() < deadline {
                        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                    }
                    break;
                }
            }
        }
        probes.lock().unwrap().push(Probe { at, from });
        let next = at + every;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

/// A second bridge (own namespace) with `eth1` legs for hosts 0 and 1: 10.78.0.{1,2}/24.
fn add_second_bridge(topo: &Topology) {
    let br = topo.bridge_ns();
    br.ip(&["link", "add", "br1", "type", "bridge"]).unwrap();
    br.ip(&["link", "set", "br1", "up"]).unwrap();
    for i in 0..2 {
        let ns = topo.host(i).ns();
        let port = format!("q{i}");
        ns.ip(&[
            "link",
            "add",
            "eth1",
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            br.name(),
        ])
        .unwrap();
        br.ip(&["link", "set", &port, "master", "br1", "up"])
            .unwrap();
        ns.ip(&[
            "addr",
            "add",
            &format!("10.78.0.{}/24", i + 1),
            "dev",
            "eth1",
        ])
        .unwrap();
        ns.ip(&["link", "set", "eth1", "up"]).unwrap();
    }
}

fn set_second_link(topo: &Topology, i: usize, up: bool) {
    topo.bridge_ns()
        .ip(&[
            "link",
            "set",
            &format!("q{i}"),
            if up { "up" } else { "down" },
        ])
        .unwrap();
}

fn started(o: Opts) -> Cluster {
    let mut c = Cluster::new(&o);
    c.start(0);
    c.start(1);
    c.start_prober();
    let t0 = Instant::now();
    c.wait_answer_from("alpha", t0, Duration::from_secs(10));
    assert!(c.holds_vip(0) && !c.holds_vip(1));
    c
}

#[test]
fn crash_failover_failback_and_graceful_handover() {
    if !testkit::privileged("crash_failover_failback_and_graceful_handover") {
        return;
    }
    let mut c = started(Opts::default());
    c.assert_single_owner_for(Duration::from_millis(300));

    // Crash A: B must answer for the address.
    let t_kill = Instant::now();
    c.kill(0);
    let failover = c.wait_answer_from("beta", t_kill, Duration::from_secs(5));
    eprintln!("MEASURED failover after SIGKILL: {failover:?}");
    assert!(c.holds_vip(1));
    // Deadtime 150 ms: the takeover must not take much longer than detection.
    assert!(
        failover < Duration::from_secs(2),
        "failover took {failover:?}"
    );

    // A comes back: auto_failback moves the address home.
    let t_back = Instant::now();
    c.start(0);
    let failback = c.wait_answer_from("alpha", t_back, Duration::from_secs(10));
    eprintln!("MEASURED failback after restart: {failback:?}");
    c.assert_single_owner_for(Duration::from_millis(300));
    assert!(c.holds_vip(0) && !c.holds_vip(1));

    // Graceful stop of A: handover with at most one lost 10 ms probe.
    let t_stop = Instant::now();
    let took = c.stop_gracefully(0);
    let handover = c.wait_answer_from("beta", t_stop, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(100));
    let probes = c.probes_since(t_stop);
    let lost = probes.iter().filter(|p| p.from.is_none()).count();
    eprintln!(
        "MEASURED graceful handover: process exit {took:?}, first answer from beta {handover:?}, lost probes {lost} of {}",
        probes.len()
    );
    assert!(!c.holds_vip(0), "stopped node released the address");
    assert!(c.holds_vip(1));
    assert!(lost <= 1, "{lost} probes lost during graceful handover");
}

/// Kill A's daemon with only one fast detection path on (`node_args` turns the other off),
/// deadtime 3 s: B must answer for the address long before deadtime.
fn killed_daemon_case(name: &str, node_args: Vec<&'static str>, path: &str) {
    if !testkit::privileged(name) {
        return;
    }
    let mut c = started(Opts {
        timing: (Duration::from_millis(20), Duration::from_secs(3)),
        node_args,
        probe_every: Duration::from_millis(2),
        ..Opts::default()
    });
    // Long enough for B's exit watcher to connect (one retry pause included).
    c.assert_single_owner_for(Duration::from_millis(1000));
    let t_kill = Instant::now();
    c.kill(0);
    let failover = c.wait_answer_from("beta", t_kill, Duration::from_secs(10));
    eprintln!("MEASURED failover through {path} (20 ms / 3 s): {failover:?}");
    assert!(c.holds_vip(1));
    assert!(
        failover < Duration::from_millis(1500),
        "took {failover:?}: deadtime, not {path}, detected the crash"
    );
}

/// A killed daemon on a live host: the host answers B's next heartbeat with "port
/// unreachable" and B takes the address once A's next heartbeat is overdue (polled media: the
/// report wakes B through its error watch; the exit watch is off to isolate the report).
#[test]
fn killed_daemon_fails_over_before_deadtime_through_port_unreachable() {
    killed_daemon_case(
        "killed_daemon_fails_over_before_deadtime_through_port_unreachable",
        vec!["--no-exit-watch"],
        "port unreachable",
    );
}

/// A killed daemon's host closes the exit-watch connection at once: B takes the address
/// without waiting for any heartbeat ("port unreachable" reports off to isolate the watch).
#[test]
fn killed_daemon_fails_over_at_once_through_the_exit_watch() {
    killed_daemon_case(
        "killed_daemon_fails_over_at_once_through_the_exit_watch",
        vec!["--no-unreachable"],
        "the exit watch",
    );
}

#[test]
fn link_down_moves_the_address() {
    if !testkit::privileged("link_down_moves_the_address") {
        return;
    }
    let c = started(Opts::default());
    let t0 = Instant::now();
    c.topo.set_link(0, false).unwrap();
    let took = c.wait_answer_from("beta", t0, Duration::from_secs(5));
    eprintln!("MEASURED failover after link down: {took:?}");
    assert!(c.holds_vip(1));
}

#[test]
fn redundant_links_one_cut_no_failover_both_cut_failover() {
    if !testkit::privileged("redundant_links_one_cut_no_failover_both_cut_failover") {
        return;
    }
    let c = started(Opts {
        second_link: true,
        ..Opts::default()
    });
    // Cut the dedicated link: the LAN still carries heartbeats.
    set_second_link(&c.topo, 0, false);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    let after = c.probes_since(t0);
    assert!(
        after.iter().all(|p| p.from.as_deref() != Some("beta")),
        "B answered although one link remained"
    );
    assert!(c.holds_vip(0) && !c.holds_vip(1));
    let st = c.status(1);
    assert_eq!(st["node"]["groups"][0]["state"], "stopped", "{st}");
    // Cut the LAN leg too: now B is cut off from A and takes over.
    let t1 = Instant::now();
    c.topo.set_link(0, false).unwrap();
    let took = c.wait_answer_from("beta", t1, Duration::from_secs(5));
    eprintln!("MEASURED failover after cutting both links: {took:?}");
}

#[test]
fn lost_uplink_releases_the_address_without_double_ownership() {
    if !testkit::privileged("lost_uplink_releases_the_address_without_double_ownership") {
        return;
    }
    let c = started(Opts {
        second_link: true,
        ping_client: true,
        ..Opts::default()
    });
    c.assert_single_owner_for(Duration::from_millis(500));
    // A loses its uplink (LAN leg) but keeps the dedicated heartbeat link to B.
    let t0 = Instant::now();
    c.topo.set_link(0, false).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut moved = false;
    while Instant::now() < deadline {
        // New owner first: B holding at t1 and A still holding at t2 > t1 is a real overlap
        // (the other order would flag a clean handover between the two reads).
        let b = c.holds_vip(1);
        let a = c.holds_vip(0);
        assert!(!(a && b), "both nodes hold {VIP} after {:?}", t0.elapsed());
        if b && !a {
            moved = true;
            break;
        }
    }
    assert!(moved, "address did not move to B");
    let took = c.wait_answer_from("beta", t0, Duration::from_secs(5));
    eprintln!("MEASURED move after lost uplink: {took:?}");
    c.assert_single_owner_for(Duration::from_millis(500));
}

#[test]
fn forged_replayed_and_garbage_frames_are_dropped_and_counted() {
    if !testkit::privileged("forged_replayed_and_garbage_frames_are_dropped_and_counted") {
        return;
    }
    let c = started(Opts {
        tap_client: true,
        ..Opts::default()
    });
    let before = c.status(1)["transport"].clone();
    let topo = c.topo.clone();
    topo.host(2).ns().run(|| {
        let sock = UdpSocket::bind(("10.77.0.3", HB_PORT)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        // Capture real frames of A (the client is in A's ucast peer list).
        let mut captured = Vec::new();
        let mut buf = [0u8; 2048];
        while captured.len() < 20 {
            let (n, from) = sock.recv_from(&mut buf).unwrap();
            if from.ip() == Ipv4Addr::new(10, 77, 0, 1) {
                captured.push(buf[..n].to_vec());
            }
        }
        let b = SocketAddr::from(([10, 77, 0, 2], HB_PORT));
        // Replays of genuine frames.
        for f in &captured {
            sock.send_to(f, b).unwrap();
        }
        // Garbage and truncated frames.
        sock.send_to(b"HA\x01garbage", b).unwrap();
        sock.send_to(&captured[0][..30], b).unwrap();
        // A forged takeover attempt: node 1 with a fresh incarnation, signed with a wrong key.
        let wrong = Keyring::from_spec(&AuthSpec {
            active: Some(1),
            keys: vec![AuthKey {
                id: 1,
                algorithm: AuthAlgorithm::HmacSha256,
                secret: b"guessed".to_vec(),
            }],
            insecure_no_auth: false,
        })
        .unwrap();
        let mut forger = Session::<ha_core::message::Message>::new(
            SessionConfig::new(
                ClusterId::from_name("netns-test"),
                NodeId(1),
                u64::MAX,
                vec![NodeId(1), NodeId(2)],
            ),
            wrong,
        );
        forger
            .send(
                ha_core::Timestamp::ZERO,
                None,
                None,
                ha_core::message::Message::TakeoverRequest(ha_core::message::TakeoverRequest {
                    group: "web".into(),
                    incarnation: u64::MAX,
                    claim: 1,
                }),
            )
            .unwrap();
        while let Some((_, f)) = forger.poll_transmit() {
            sock.send_to(&f, b).unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let after = c.status(1)["transport"].clone();
    let delta = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    eprintln!("counters before {before}\nafter {after}");
    assert!(
        delta("replayed") + delta("too_old") >= 20,
        "replays counted"
    );
    assert!(delta("malformed") >= 2, "garbage counted");
    assert!(delta("bad_mac") >= 1, "forgery counted");
    // Nothing changed: A still holds the address, B nothing.
    assert!(c.holds_vip(0) && !c.holds_vip(1));
    let st = c.status(1);
    assert_eq!(st["node"]["groups"][0]["state"], "stopped");
    assert!(
        c.probes_since(Instant::now() - Duration::from_millis(200))
            .iter()
            .all(|p| p.from.as_deref() == Some("alpha"))
    );
}

#[test]
fn without_auto_failback_the_address_stays_on_the_backup() {
    if !testkit::privileged("without_auto_failback_the_address_stays_on_the_backup") {
        return;
    }
    let mut c = started(Opts {
        auto_failback: false,
        ..Opts::default()
    });
    let t_kill = Instant::now();
    c.kill(0);
    c.wait_answer_from("beta", t_kill, Duration::from_secs(5));
    // A crashed host keeps the address in its kernel; a restarted node removes it as a
    // stale leftover only if it is told to, so model the reboot by removing it here.
    c.topo
        .host(0)
        .ns()
        .ip(&["addr", "del", &format!("{VIP}/24"), "dev", "eth0"])
        .unwrap();
    let t_back = Instant::now();
    c.start(0);
    std::thread::sleep(Duration::from_millis(1500));
    let probes = c.probes_since(t_back);
    let lost = probes
        .iter()
        .filter(|p| p.from.as_deref() != Some("beta"))
        .count();
    assert!(c.holds_vip(1) && !c.holds_vip(0), "address moved back");
    assert_eq!(lost, 0, "probes not answered by beta after A returned");
}

/// CPU time (user + system) of a process so far, from /proc/PID/stat.
/// A short keepalive (5 ms) makes the nodes drain their media on timer ticks with kernel
/// arrival stamps: heartbeats must still keep the backup quiet, and a crash must still fail
/// over quickly.
#[test]
fn short_keepalive_polled_media_hold_and_fail_over() {
    if !testkit::privileged("short_keepalive_polled_media_hold_and_fail_over") {
        return;
    }
    let mut c = started(Opts {
        timing: (Duration::from_millis(5), Duration::from_millis(30)),
        ..Opts::default()
    });
    let t0 = Instant::now();
    c.assert_single_owner_for(Duration::from_millis(700));
    let steady = c.probes_since(t0);
    assert!(
        steady.iter().all(|p| p.from.as_deref() != Some("beta")),
        "the backup answered while the primary was alive"
    );
    assert!(c.holds_vip(0) && !c.holds_vip(1));
    let t_kill = Instant::now();
    c.kill(0);
    let failover = c.wait_answer_from("beta", t_kill, Duration::from_secs(5));
    eprintln!("MEASURED failover (5/30 ms, polled media): {failover:?}");
    assert!(c.holds_vip(1));
    // Deadtime 30 ms: generous bound for a debug build on a busy machine.
    assert!(failover < Duration::from_millis(500), "{failover:?}");
}

fn cpu_time(pid: nix::unistd::Pid) -> Duration {
    // schedstat's first field: nanoseconds on a CPU, per thread (exact, unlike the clock
    // ticks of /proc/PID/stat that a process waking briefly is charged by sampling).
    let mut ns = 0u64;
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in dir.flatten() {
            let st = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            ns += st
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_nanos(ns)
}

/// Failover benchmark in the setting of the notes' table: fault = SIGKILL of the master
/// daemon at a random point of the heartbeat cycle, time = fault to the client's first reply
/// from the backup (client probes every 2 ms), median of 5; plus each idle node's CPU share.
/// Not a test (slow):
/// `cargo test -p ha-net --test netns -- --ignored --nocapture bench_failover`.
/// `HA_BENCH_TIMINGS=2/10,3/15` picks keepalive/deadtime pairs (ms), `HA_BENCH_CPU_SECS`
/// the CPU window (default 10 s).
#[test]
#[ignore = "benchmark; run explicitly"]
fn bench_failover() {
    if !testkit::privileged("bench_failover") {
        return;
    }
    let cpu_secs: u64 = env_or("HA_BENCH_CPU_SECS", 10);
    for (ka, dt) in bench_timings() {
        let timing = (Duration::from_millis(ka), Duration::from_millis(dt));
        let mut times = Vec::new();
        let mut cpu = (0.0, 0.0);
        for round in 0..5 {
            let mut c = started(Opts {
                timing,
                status_file: false,
                probe_every: Duration::from_millis(2),
                ..Opts::default()
            });
            if round == 0 {
                // Past start-up (agent probes, thread stacks locked by mlockall).
                std::thread::sleep(Duration::from_secs(1));
                let (p0, p1) = (c.pid(0), c.pid(1));
                let (a0, b0, t0) = (cpu_time(p0), cpu_time(p1), Instant::now());
                std::thread::sleep(Duration::from_secs(cpu_secs));
                let el = t0.elapsed().as_secs_f64();
                cpu = (
                    (cpu_time(p0) - a0).as_secs_f64() / el * 100.0,
                    (cpu_time(p1) - b0).as_secs_f64() / el * 100.0,
                );
            }
            // A random point of the heartbeat cycle.
            let phase = (Instant::now().elapsed().subsec_nanos() as u64 ^ (round * 7919)) % ka;
            std::thread::sleep(Duration::from_millis(200 + phase));
            let t_kill = Instant::now();
            c.kill(0);
            let t = c.wait_answer_from("beta", t_kill, Duration::from_secs(10));
            eprintln!("  keepalive {ka} ms deadtime {dt} ms round {round}: {t:?}");
            if t < timing.1 / 2 {
                // Faster than detection can be: the backup had taken over before the fault.
                eprintln!("  (suspicious: backup answered before it could detect the fault)");
                c.dump_logs();
            }
            times.push(t);
        }
        times.sort();
        eprintln!(
            "BENCH keepalive {ka} ms deadtime {dt} ms: failover median {:?} (min {:?}, max {:?}); CPU master {:.2} %, backup {:.2} %",
            times[2], times[0], times[4], cpu.0, cpu.1
        );
    }
}

/// False failovers with both cores loaded: `stress-ng --cpu 2` for `HA_BENCH_STRESS_SECS`
/// (default 60) while the client probes every 2 ms; counts PeerDown events in both logs and
/// probes answered by the backup. Not a test (slow):
/// `cargo test -p ha-net --test netns -- --ignored --nocapture bench_false_failovers`.
#[test]
#[ignore = "benchmark; run explicitly"]
fn bench_false_failovers() {
    if !testkit::privileged("bench_false_failovers") {
        return;
    }
    let secs: u64 = env_or("HA_BENCH_STRESS_SECS", 60);
    for (ka, dt) in bench_timings() {
        let timing = (Duration::from_millis(ka), Duration::from_millis(dt));
        let c = started(Opts {
            timing,
            status_file: false,
            probe_every: Duration::from_millis(2),
            ..Opts::default()
        });
        let mut stress = std::process::Command::new("stress-ng")
            .args(["--cpu", "2", "--quiet", "--timeout"])
            .arg(format!("{secs}s"))
            .spawn()
            .expect("stress-ng (apt-get install stress-ng)");
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(secs));
        let _ = stress.kill();
        let _ = stress.wait();
        let probes = c.probes_since(t0);
        let by_beta = probes
            .iter()
            .filter(|p| p.from.as_deref() == Some("beta"))
            .count();
        let lost = probes.iter().filter(|p| p.from.is_none()).count();
        let log = |f: &str| std::fs::read_to_string(c.path(f)).unwrap_or_default();
        let (l1, l2) = (log("node1.log"), log("node2.log"));
        if let Ok(dir) = std::env::var("HA_BENCH_KEEP_LOGS") {
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(format!("{dir}/stress-{ka}-{dt}-node1.log"), &l1);
            let _ = std::fs::write(format!("{dir}/stress-{ka}-{dt}-node2.log"), &l2);
        }
        let count = |s: &str, pat: &str| s.lines().filter(|l| l.contains(pat)).count();
        eprintln!(
            "BENCH stress keepalive {ka} ms deadtime {dt} ms, {secs} s: PeerDown alpha {} beta {}, \
             late heartbeats alpha {} beta {}, stalls alpha {} beta {}, probes {} (answered by beta {by_beta}, lost {lost})",
            count(&l1, "PeerDown"),
            count(&l2, "PeerDown"),
            count(&l1, "late heartbeat"),
            count(&l2, "late heartbeat"),
            count(&l1, "not scheduled in time"),
            count(&l2, "not scheduled in time"),
            probes.len(),
        );
    }
}

fn env_or(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `HA_BENCH_TIMINGS=KA/DT,...` in ms; default the notes' settings.
fn bench_timings() -> Vec<(u64, u64)> {
    let spec = std::env::var("HA_BENCH_TIMINGS").unwrap_or_else(|_| "100/300,25/150,10/50".into());
    spec.split(',')
        .filter_map(|p| {
            let (a, b) = p.trim().split_once('/')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect()
}
