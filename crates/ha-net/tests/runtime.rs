//! Two node runtimes in one process over UDP on loopback: takeover after a crash, graceful
//! handover, status snapshot. No root needed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (common rules)

use std::sync::Arc;
use std::time::{Duration, Instant};

use ha_core::model::{AuthAlgorithm, AuthKey, AuthSpec, ClusterModel, QuorumMode, Timing};
use ha_core::node::Event;
use ha_core::resource::{AgentOptions, MemoryResource, ResourceRegistry};
use ha_core::sim::model_builder;
use ha_core::{NodeId, ResourceId};
use ha_net::media::{Media, UdpConfig, UdpMode};
use ha_net::runtime::{NodeRuntime, RuntimeConfig};
use tokio::sync::mpsc;

fn model(auto_failback: bool) -> ClusterModel {
    let mut m = model_builder(2)
        .quorum(QuorumMode::TwoNode)
        .auto_failback(auto_failback)
        .timing(Timing {
            keepalive: Duration::from_millis(20),
            warntime: Duration::from_millis(60),
            deadtime: Duration::from_millis(100),
            initdead: Duration::from_millis(200),
            detector: Default::default(),
        })
        .group("web", &["vip"], Some(1))
        .build();
    m.auth = AuthSpec {
        active: Some(1),
        keys: vec![AuthKey {
            id: 1,
            algorithm: AuthAlgorithm::HmacSha256,
            secret: b"runtime-test".to_vec(),
        }],
        insecure_no_auth: false,
    };
    m
}

struct TestNode {
    rt: NodeRuntime,
    vip: MemoryResource,
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(model: &Arc<ClusterModel>, id: u16, port: u16) -> TestNode {
    start_with_state(model, id, port, None)
}

fn start_with_state(
    model: &Arc<ClusterModel>,
    id: u16,
    port: u16,
    state_file: Option<std::path::PathBuf>,
) -> TestNode {
    start_configured(model, id, port, |c| c.state_file = state_file)
}

fn start_configured(
    model: &Arc<ClusterModel>,
    id: u16,
    port: u16,
    configure: impl FnOnce(&mut RuntimeConfig),
) -> TestNode {
    let vip = MemoryResource::new(ResourceId::from("vip"));
    let handle = vip.clone();
    let mut cfg = RuntimeConfig::new(model.clone(), NodeId(id));
    configure(&mut cfg);
    cfg.agents = AgentOptions {
        registry: ResourceRegistry::new().with("sim", move |_| Ok(Box::new(handle.clone()))),
        ..AgentOptions::default()
    };
    let (tx, rx) = mpsc::channel(256);
    let mut media = Media::new();
    media
        .add_udp(
            "lo",
            &UdpConfig {
                interface: String::new(),
                port,
                bind: Some(format!("127.0.0.{id}").parse().unwrap()),
                mode: UdpMode::Unicast {
                    peers: vec![
                        format!("127.0.0.1:{port}").parse().unwrap(),
                        format!("127.0.0.2:{port}").parse().unwrap(),
                    ],
                },
            },
            tx.clone(),
        )
        .unwrap();
    let rt = NodeRuntime::start_with_media(cfg, media, tx, rx).unwrap();
    TestNode { rt, vip }
}

async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    t0.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_moves_the_group_and_graceful_stop_hands_it_back() {
    let model = Arc::new(model(true));
    let port = free_port();
    let a = start(&model, 1, port);
    let b = start(&model, 2, port);
    let mut events_b = b.rt.subscribe();
    wait_for("A runs the group", Duration::from_secs(5), || {
        a.vip.is_running()
    })
    .await;
    assert!(!b.vip.is_running());
    let st = b.rt.status();
    assert!(st.transport.frames_accepted > 0);
    assert_eq!(st.transport.dropped(), 0, "{:?}", st.transport);
    assert!(
        serde_json::to_string(&st)
            .unwrap()
            .contains("frames_accepted")
    );

    // Crash A (its resource stays "running": nothing stops it, as after a power loss... but
    // here a memory resource, so clear it to model the lost host).
    a.rt.abort();
    a.vip.set_running(false);
    let took = wait_for("B takes over", Duration::from_secs(5), || {
        b.vip.is_running()
    })
    .await;
    eprintln!("takeover after crash: {took:?}");
    let mut saw_down = false;
    while let Ok(ev) = events_b.try_recv() {
        saw_down |= matches!(ev, Event::PeerDown { node } if node == NodeId(1));
    }
    assert!(saw_down, "B reported A down");

    // A comes back as a new incarnation; auto_failback moves the group home.
    let a2 = start(&model, 1, port);
    wait_for("failback to A", Duration::from_secs(5), || {
        a2.vip.is_running() && !b.vip.is_running()
    })
    .await;

    // Graceful stop of A hands the group to B.
    let handed = a2.rt.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(handed, "standby completed");
    assert!(!a2.vip.is_running(), "A stopped its group before exiting");
    wait_for("B runs the group again", Duration::from_secs(5), || {
        b.vip.is_running()
    })
    .await;
}

/// The test model with a 3 s deadtime: anything faster is fast detection at work.
fn three_second_deadtime() -> ClusterModel {
    let mut m = model(false);
    m.timing.deadtime = Duration::from_secs(3);
    m.timing.warntime = Duration::from_secs(3);
    m.timing.initdead = Duration::from_secs(3);
    m
}

/// Stop A's runtime as a crash would (its memory resource goes with it) and wait for B to run
/// the group: how long that took, and B's transport counters then.
async fn crash_a(a: &TestNode, b: &TestNode) -> (Duration, ha_net::auth::Counters) {
    a.rt.abort();
    a.vip.set_running(false);
    let took = wait_for("B takes over", Duration::from_secs(10), || {
        b.vip.is_running()
    })
    .await;
    (took, b.rt.status().transport)
}

/// A daemon killed on a live host: the host answers B's next heartbeat with "port
/// unreachable" and B takes over once A's next heartbeat is overdue, long before deadtime
/// (3 s here). With the reports turned off, B waits for deadtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_unreachable_after_a_crash_fails_over_before_deadtime() {
    let model = Arc::new(three_second_deadtime());
    for reports in [true, false] {
        let port = free_port();
        let a = start(&model, 1, port);
        let b = start_configured(&model, 2, port, |c| {
            c.unreachable_reports = reports;
            c.exit_watch = false;
        });
        wait_for("A runs the group", Duration::from_secs(5), || {
            a.vip.is_running()
        })
        .await;
        // Both sides heard each other: B knows A's address.
        wait_for("B hears A", Duration::from_secs(5), || {
            b.rt.status().transport.frames_accepted > 2
        })
        .await;
        let (took, st) = crash_a(&a, &b).await;
        eprintln!("reports {reports}: takeover after {took:?}, {st:?}");
        if reports {
            assert!(st.unreachable_reports > 0, "{st:?}");
            assert_eq!(st.unreachable_unknown, 0, "{st:?}");
            assert!(
                took < Duration::from_millis(1500),
                "took {took:?}: the report did not shorten deadtime"
            );
        } else {
            assert_eq!(st.unreachable_reports + st.unreachable_unknown, 0, "{st:?}");
            assert!(
                took >= Duration::from_millis(2500),
                "took {took:?} without reports"
            );
        }
    }
}

/// The exit watch: B holds a connection to A's daemon; A's host closes it when A dies and B
/// takes over at once, without waiting for a heartbeat (deadtime 3 s, "port unreachable"
/// reports off to isolate the watch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_watch_fails_over_at_once_when_the_peer_daemon_dies() {
    let model = Arc::new(three_second_deadtime());
    let port = free_port();
    let a = start(&model, 1, port);
    let b = start_configured(&model, 2, port, |c| c.unreachable_reports = false);
    wait_for("A runs the group", Duration::from_secs(5), || {
        a.vip.is_running()
    })
    .await;
    // Let B's watcher connect and check A's hello (one retry pause included).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (took, st) = crash_a(&a, &b).await;
    eprintln!("exit watch: takeover after {took:?}, {st:?}");
    assert_eq!(st.peer_exits, 1, "{st:?}");
    assert_eq!(st.unreachable_reports, 0, "{st:?}");
    assert!(took < Duration::from_millis(1500), "took {took:?}");
}

/// Two nodes on loopback, each with a control socket.
struct Pair {
    a: TestNode,
    b: TestNode,
    dir: tempfile::TempDir,
    pa: std::path::PathBuf,
    pb: std::path::PathBuf,
    _servers: [ha_net::control::ControlServer; 2],
}

impl Pair {
    async fn start(auto_failback: bool) -> Pair {
        use ha_net::control;
        let model = Arc::new(model(auto_failback));
        let port = free_port();
        let a = start(&model, 1, port);
        let b = start(&model, 2, port);
        let dir = tempfile::tempdir().unwrap();
        let (pa, pb) = (dir.path().join("a.sock"), dir.path().join("b.sock"));
        let sa = control::serve(&pa, a.rt.control()).await.unwrap();
        let sb = control::serve(&pb, b.rt.control()).await.unwrap();
        Pair {
            a,
            b,
            dir,
            pa,
            pb,
            _servers: [sa, sb],
        }
    }
}

/// The operator's control socket (heartbeat's hb_standby and its return): without
/// auto_failback, `standby` on the holder moves the group, `online` makes the node eligible
/// again without moving anything back; `status` reports the standby flag; bad commands and a
/// second server on a live socket are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_socket_standby_and_online_move_groups_by_hand() {
    use ha_net::control::{self, ControlCommand};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let p = Pair::start(false).await;
    let (a, b, dir) = (&p.a, &p.b, &p.dir);
    let (pa, pb) = (p.pa.clone(), p.pb.clone());
    let standby_of = |p: &std::path::Path| {
        let p = p.to_path_buf();
        async move {
            let json = control::request(&p, &ControlCommand::Status).await.unwrap();
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            v["node"]["standby"].as_bool().unwrap()
        }
    };
    wait_for("A runs the group", Duration::from_secs(5), || {
        a.vip.is_running()
    })
    .await;
    assert!(!standby_of(&pa).await);

    assert_eq!(
        control::request(&pa, &ControlCommand::Standby)
            .await
            .unwrap(),
        "ok"
    );
    wait_for(
        "B takes the group from A in standby",
        Duration::from_secs(5),
        || b.vip.is_running() && !a.vip.is_running(),
    )
    .await;
    assert!(standby_of(&pa).await);

    // Online again: no auto_failback, so the group stays on B.
    assert_eq!(
        control::request(&pa, &ControlCommand::Online)
            .await
            .unwrap(),
        "ok"
    );
    assert!(!standby_of(&pa).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(b.vip.is_running() && !a.vip.is_running(), "no failback");

    // Move it home by hand: standby B, then B online.
    control::request(&pb, &ControlCommand::Standby)
        .await
        .unwrap();
    wait_for("A takes the group back", Duration::from_secs(5), || {
        a.vip.is_running() && !b.vip.is_running()
    })
    .await;
    control::request(&pb, &ControlCommand::Online)
        .await
        .unwrap();
    assert!(!standby_of(&pb).await);

    // A bad command gets an error naming the commands; the socket stays usable.
    let mut s = tokio::net::UnixStream::connect(&pa).await.unwrap();
    s.write_all(b"takeover\n").await.unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.starts_with("error: unknown command `takeover`"),
        "{answer}"
    );
    // A second server cannot take a live socket over.
    let e = control::serve(&pa, a.rt.control()).await.unwrap_err();
    assert!(e.to_string().contains("in use"), "{e}");
    // Nor replace a file that is not a socket.
    let file = dir.path().join("plain");
    std::fs::write(&file, b"keep me").unwrap();
    let e = control::serve(&file, a.rt.control()).await.unwrap_err();
    assert!(e.to_string().contains("not a socket"), "{e}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    assert!(!standby_of(&pa).await);
}

/// `move`, `ban` and `clear` through the control sockets: with auto_failback on, a move pulls
/// the group off its preferred node and holds it there until cleared; a ban pushes it off;
/// an unknown group is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_socket_move_ban_and_clear() {
    use ha_core::GroupId;
    use ha_net::control::{self, ControlCommand};

    let p = Pair::start(true).await;
    let (a, b) = (&p.a, &p.b);
    let (pa, pb) = (p.pa.clone(), p.pb.clone());
    let web = || GroupId::from("web");
    let on_a = || a.vip.is_running() && !b.vip.is_running();
    let on_b = || b.vip.is_running() && !a.vip.is_running();
    wait_for("A runs the group", Duration::from_secs(5), on_a).await;

    let ok = control::request(&pb, &ControlCommand::Move(web())).await;
    assert_eq!(ok.unwrap(), "ok");
    wait_for("the move to B", Duration::from_secs(5), on_b).await;
    let st = control::request(&pb, &ControlCommand::Status)
        .await
        .unwrap();
    assert!(st.contains("\"operator\": \"prefer\""), "{st}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(on_b(), "auto_failback does not undo an operator's move");

    control::request(&pb, &ControlCommand::Clear(web()))
        .await
        .unwrap();
    wait_for("failback to A after clear", Duration::from_secs(5), on_a).await;

    control::request(&pa, &ControlCommand::Ban(web()))
        .await
        .unwrap();
    wait_for("the ban pushes it to B", Duration::from_secs(5), on_b).await;
    control::request(&pa, &ControlCommand::Clear(web()))
        .await
        .unwrap();
    wait_for("back to A after clear", Duration::from_secs(5), on_a).await;

    let e = control::request(&pa, &ControlCommand::Move(GroupId::from("nope")))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no group `nope`"), "{e}");
}

/// With a state file, a ban survives the node's restart: the restarted node keeps away from
/// the group (which stays on the peer) until the ban is cleared; the file then forgets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_ban_survives_a_restart_with_a_state_file() {
    use ha_core::GroupId;
    use ha_core::message::OperatorPref;

    let model = Arc::new(model(true));
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("alpha-operator.json");
    let a = start_with_state(&model, 1, port, Some(state.clone()));
    let b = start(&model, 2, port);
    let web = GroupId::from("web");
    wait_for("A runs the group", Duration::from_secs(5), || {
        a.vip.is_running()
    })
    .await;
    a.rt.control()
        .place(&web, OperatorPref::Avoid)
        .await
        .unwrap();
    wait_for("the ban moves it to B", Duration::from_secs(5), || {
        b.vip.is_running() && !a.vip.is_running()
    })
    .await;
    assert!(std::fs::read_to_string(&state).unwrap().contains("avoid"));

    // Crash and restart A with the same file: the ban holds, auto_failback or not.
    a.rt.abort();
    let a2 = start_with_state(&model, 1, port, Some(state.clone()));
    wait_for("A is back in B's view", Duration::from_secs(5), || {
        b.rt.status().node.members.contains(&NodeId(1))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(b.vip.is_running() && !a2.vip.is_running(), "ban kept");
    assert_eq!(a2.rt.status().node.groups[0].operator, OperatorPref::Avoid);

    a2.rt
        .control()
        .place(&web, OperatorPref::None)
        .await
        .unwrap();
    wait_for("failback after the clear", Duration::from_secs(5), || {
        a2.vip.is_running() && !b.vip.is_running()
    })
    .await;
    assert!(!std::fs::read_to_string(&state).unwrap().contains("avoid"));
}
