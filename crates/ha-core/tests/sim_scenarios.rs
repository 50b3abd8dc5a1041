//! Scripted simulator scenarios: failover, failback, two active nodes, failures and policies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ha_core::message::OperatorPref;
use ha_core::model::{Constraint, DetectorKind, NoQuorumPolicy, OrderKind, QuorumMode};
use ha_core::sim::{Fault, LogKind, Sim, SimConfig, model_builder, two_node_model};
use ha_core::{Error, Event, GroupId, Node, NodeId, OcfCode, ResourceId, ResourceOp, Timestamp};
use std::sync::Arc;
use std::time::Duration;

fn ms(x: u64) -> Timestamp {
    Timestamp::from_millis(x)
}
fn g(s: &str) -> GroupId {
    GroupId::from(s)
}
fn rec() -> SimConfig {
    SimConfig {
        record: true,
        ..SimConfig::default()
    }
}
fn dump(sim: &Sim) {
    for e in sim.log() {
        if !matches!(
            e.kind,
            LogKind::Event(Event::LinkUp { .. } | Event::LinkDown { .. })
        ) {
            println!("{:>6} {} {:?}", e.at.as_millis(), e.node, e.kind);
        }
    }
}
/// Resource operations of `node` in log order (monitors excluded).
fn ops(sim: &Sim, node: NodeId, from: Timestamp) -> Vec<(String, ResourceOp)> {
    sim.log()
        .iter()
        .filter(|e| e.node == node && e.at >= from)
        .filter_map(|e| match &e.kind {
            LogKind::Action(a) if a.op != ResourceOp::Monitor => {
                Some((a.resource.to_string(), a.op))
            }
            _ => None,
        })
        .collect()
}
fn events(sim: &Sim, node: NodeId) -> Vec<Event> {
    sim.log()
        .iter()
        .filter(|e| e.node == node)
        .filter_map(|e| match &e.kind {
            LogKind::Event(ev) => Some(ev.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn two_node_failover_and_failback_in_order() {
    let mut sim = Sim::new(two_node_model(), rec(), 1).unwrap();
    let nfs = g("nfs");
    sim.run_until(ms(2000));
    assert_eq!(sim.running_on(&nfs), Some(NodeId(1)));
    let start: Vec<_> = ops(&sim, NodeId(1), ms(0))
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    assert_eq!(start, ["vip", "disk", "fs", "nfsd"], "start left to right");
    sim.apply(Fault::Crash(NodeId(1)));
    sim.run_until(ms(3000));
    assert_eq!(sim.running_on(&nfs), Some(NodeId(2)));
    assert!(events(&sim, NodeId(2)).iter().any(|e| matches!(
        e,
        Event::Failover {
            from: NodeId(1),
            ..
        }
    )));
    sim.apply(Fault::Restart(NodeId(1)));
    sim.run_until(ms(5000));
    assert_eq!(sim.running_on(&nfs), Some(NodeId(1)));
    let stops = ops(&sim, NodeId(2), ms(3000));
    assert_eq!(
        stops,
        [
            ("nfsd".into(), ResourceOp::Stop),
            ("fs".into(), ResourceOp::Stop),
            ("disk".into(), ResourceOp::Stop),
            ("vip".into(), ResourceOp::Stop)
        ],
        "failback stops right to left"
    );
    // Handshake: alpha's request reached beta before beta stopped... and alpha started after.
    let ev2 = events(&sim, NodeId(2));
    assert!(ev2.iter().any(|e| matches!(
        e,
        Event::TakeoverRequested {
            from: NodeId(1),
            ..
        }
    )));
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[test]
fn each_node_active_for_own_group_and_backup_for_the_other() {
    let m = model_builder(2)
        .quorum(QuorumMode::TwoNode)
        .group("web", &["vip1", "httpd"], Some(1))
        .group("db", &["vip2", "mysql"], Some(2))
        .build();
    let mut sim = Sim::new(m, rec(), 7).unwrap();
    sim.run_until(ms(1500));
    assert_eq!(
        (sim.running_on(&g("web")), sim.running_on(&g("db"))),
        (Some(NodeId(1)), Some(NodeId(2)))
    );
    sim.apply(Fault::Crash(NodeId(2)));
    sim.run_until(ms(2500));
    assert_eq!(
        (sim.running_on(&g("web")), sim.running_on(&g("db"))),
        (Some(NodeId(1)), Some(NodeId(1)))
    );
    sim.apply(Fault::Restart(NodeId(2)));
    sim.run_until(ms(4000));
    assert_eq!(
        (sim.running_on(&g("web")), sim.running_on(&g("db"))),
        (Some(NodeId(1)), Some(NodeId(2)))
    );
    assert!(sim.violations().is_empty());
}

#[test]
fn auto_failback_off_keeps_group_on_backup() {
    let m = model_builder(2)
        .quorum(QuorumMode::TwoNode)
        .auto_failback(false)
        .group("nfs", &["vip"], Some(1))
        .build();
    let mut sim = Sim::new(m, rec(), 3).unwrap();
    sim.run_until(ms(1500));
    sim.apply(Fault::Crash(NodeId(1)));
    sim.run_until(ms(2500));
    sim.apply(Fault::Restart(NodeId(1)));
    sim.run_until(ms(5000));
    assert_eq!(sim.running_on(&g("nfs")), Some(NodeId(2)));
}

#[test]
fn monitor_failure_restarts_in_place_then_moves_after_threshold_then_expires() {
    let m = model_builder(2)
        .quorum(QuorumMode::TwoNode)
        .migration_threshold(Some(2))
        .failure_timeout(Some(Duration::from_millis(1500)))
        .monitor(Some(Duration::from_millis(50)))
        .group("nfs", &["vip", "nfsd"], Some(1))
        .build();
    let mut sim = Sim::new(m, rec(), 11).unwrap();
    let nfs = g("nfs");
    sim.run_until(ms(1000));
    assert_eq!(sim.running_on(&nfs), Some(NodeId(1)));
    // First failure: restart in place.
    sim.apply(Fault::Inject(
        NodeId(1),
        ResourceId::from("nfsd"),
        ResourceOp::Monitor,
        OcfCode::NotRunning,
    ));
    sim.run_until(ms(1300));
    assert_eq!(sim.running_on(&nfs), Some(NodeId(1)), "restarted in place");
    assert!(events(&sim, NodeId(1)).iter().any(|e| matches!(
        e,
        Event::GroupStopping {
            reason: ha_core::node::StopReason::Restart,
            ..
        }
    )));
    // Second failure reaches migration-threshold: move to n2.
    sim.apply(Fault::Inject(
        NodeId(1),
        ResourceId::from("nfsd"),
        ResourceOp::Monitor,
        OcfCode::ErrGeneric,
    ));
    sim.run_until(ms(1700));
    assert_eq!(
        sim.running_on(&nfs),
        Some(NodeId(2)),
        "moved after migration-threshold"
    );
    assert_eq!(sim.node(NodeId(1)).unwrap().status().groups[0].failcount, 2);
    // failure-timeout: the failures expire and the group returns to its preferred node.
    sim.run_until(ms(3500));
    assert_eq!(sim.node(NodeId(1)).unwrap().status().groups[0].failcount, 0);
    assert_eq!(
        sim.running_on(&nfs),
        Some(NodeId(1)),
        "back after failure-timeout"
    );
    assert!(sim.violations().is_empty());
}

#[test]
fn failed_start_rolls_back_in_reverse_and_moves() {
    let mut sim = Sim::new(two_node_model(), rec(), 5).unwrap();
    sim.apply(Fault::Inject(
        NodeId(1),
        ResourceId::from("fs"),
        ResourceOp::Start,
        OcfCode::ErrGeneric,
    ));
    sim.run_until(ms(1500));
    let seq = ops(&sim, NodeId(1), ms(0));
    let s = |r: &str, o| (r.to_string(), o);
    assert_eq!(
        seq,
        [
            s("vip", ResourceOp::Start),
            s("disk", ResourceOp::Start),
            s("fs", ResourceOp::Start),
            s("fs", ResourceOp::Stop),
            s("disk", ResourceOp::Stop),
            s("vip", ResourceOp::Stop)
        ]
    );
    // No migration-threshold: start-failure-is-fatal bans node 1.
    assert_eq!(sim.running_on(&g("nfs")), Some(NodeId(2)));
}

#[test]
fn hard_failure_bans_node_and_fatal_stops_everywhere() {
    let mut sim = Sim::new(
        model_builder(2)
            .quorum(QuorumMode::TwoNode)
            .migration_threshold(Some(5))
            .group("nfs", &["vip", "nfsd"], Some(1))
            .build(),
        rec(),
        2,
    )
    .unwrap();
    sim.apply(Fault::Inject(
        NodeId(1),
        ResourceId::from("nfsd"),
        ResourceOp::Start,
        OcfCode::ErrInstalled,
    ));
    sim.run_until(ms(1500));
    assert_eq!(
        sim.running_on(&g("nfs")),
        Some(NodeId(2)),
        "hard failure bans node 1"
    );
    let mut sim = Sim::new(two_node_model(), rec(), 2).unwrap();
    sim.apply(Fault::Inject(
        NodeId(1),
        ResourceId::from("disk"),
        ResourceOp::Start,
        OcfCode::ErrConfigured,
    ));
    sim.run_until(ms(2000));
    assert!(
        sim.active_nodes(&g("nfs")).is_empty(),
        "fatal: stopped everywhere"
    );
    assert!(ops(&sim, NodeId(2), ms(0)).is_empty(), "node 2 never tried");
}

#[test]
fn standby_hands_groups_over() {
    let mut sim = Sim::new(two_node_model(), rec(), 4).unwrap();
    sim.run_until(ms(1000));
    sim.apply(Fault::Standby(NodeId(1)));
    sim.run_until(ms(1500));
    assert_eq!(sim.running_on(&g("nfs")), Some(NodeId(2)));
    assert!(events(&sim, NodeId(1)).contains(&Event::StandbyDone));
    assert!(sim.violations().is_empty());
}

/// The two-node NFS pair with the given auto_failback.
fn nfs_pair(failback: bool) -> ha_core::model::ClusterModel {
    model_builder(2)
        .quorum(QuorumMode::TwoNode)
        .auto_failback(failback)
        .group("nfs", &["vip", "disk", "fs", "nfsd"], Some(1))
        .build()
}

/// Leaving standby makes the node eligible again: with auto_failback its preferred group comes
/// home; without it the group stays on the peer until the operator puts the peer in standby
/// (heartbeat's hb_standby workflow for moving groups by hand).
#[test]
fn online_after_standby_follows_auto_failback() {
    for failback in [true, false] {
        let m = nfs_pair(failback);
        let mut sim = Sim::new(m, rec(), 5).unwrap();
        sim.run_until(ms(1000));
        assert_eq!(sim.running_on(&g("nfs")), Some(NodeId(1)));
        sim.apply(Fault::Standby(NodeId(1)));
        sim.run_until(ms(1500));
        assert_eq!(sim.running_on(&g("nfs")), Some(NodeId(2)));
        assert!(sim.node(NodeId(1)).unwrap().status().standby);
        sim.apply(Fault::Online(NodeId(1)));
        sim.run_until(ms(2500));
        assert!(!sim.node(NodeId(1)).unwrap().status().standby);
        let want = if failback { NodeId(1) } else { NodeId(2) };
        assert_eq!(
            sim.running_on(&g("nfs")),
            Some(want),
            "auto_failback {failback}"
        );
        if !failback {
            // Move it home by hand: standby the holder, then bring it back.
            sim.apply(Fault::Standby(NodeId(2)));
            sim.run_until(ms(3000));
            sim.apply(Fault::Online(NodeId(2)));
            sim.run_until(ms(4000));
            assert_eq!(sim.running_on(&g("nfs")), Some(NodeId(1)));
        }
        assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    }
}

/// An operator's placement requests: prefer pulls the group to a node even against
/// auto_failback's preferred node, avoid pushes it off, clear gives placement back to the
/// policy; an unknown group is refused.
#[test]
fn operator_prefer_avoid_and_clear_move_groups() {
    for failback in [true, false] {
        let m = nfs_pair(failback);
        let mut sim = Sim::new(m, rec(), 6).unwrap();
        sim.run_until(ms(1000));
        assert_eq!(sim.running_on(&g("nfs")), Some(NodeId(1)));
        // hb_takeover on node 2.
        sim.apply(Fault::Operator(NodeId(2), g("nfs"), OperatorPref::Prefer));
        sim.run_until(ms(1500));
        assert_eq!(
            sim.running_on(&g("nfs")),
            Some(NodeId(2)),
            "failback {failback}"
        );
        sim.run_until(ms(2500));
        assert_eq!(
            sim.running_on(&g("nfs")),
            Some(NodeId(2)),
            "stays while preferred"
        );
        let st = sim.node(NodeId(2)).unwrap().status();
        assert_eq!(st.groups[0].operator, OperatorPref::Prefer);
        // Clear: with auto_failback the group goes home, without it stays.
        sim.apply(Fault::Operator(NodeId(2), g("nfs"), OperatorPref::None));
        sim.run_until(ms(3500));
        let home = if failback { NodeId(1) } else { NodeId(2) };
        assert_eq!(sim.running_on(&g("nfs")), Some(home), "failback {failback}");
        // Ban it from wherever it runs: it moves to the other node.
        sim.apply(Fault::Operator(home, g("nfs"), OperatorPref::Avoid));
        sim.run_until(ms(4500));
        let other = if home == NodeId(1) {
            NodeId(2)
        } else {
            NodeId(1)
        };
        assert_eq!(sim.running_on(&g("nfs")), Some(other));
        assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    }
    let mut node = Node::new(Arc::new(two_node_model()), NodeId(1), 1, ms(0)).unwrap();
    assert!(!node.request_placement(ms(1), &g("nope"), OperatorPref::Prefer));
    assert!(node.request_placement(ms(1), &g("nfs"), OperatorPref::Avoid));
}

#[test]
fn ipfail_node_that_lost_uplink_releases() {
    let m = model_builder(2)
        .quorum(QuorumMode::TwoNode)
        .ping_nodes(&["192.0.2.254"])
        .group("nfs", &["vip", "nfsd"], Some(1))
        .build();
    let mut sim = Sim::new(m, rec(), 9).unwrap();
    sim.run_until(ms(1000));
    assert_eq!(sim.running_on(&g("nfs")), Some(NodeId(1)));
    // Node 1 loses its uplink while the peer still reaches the ping nodes: move.
    sim.apply(Fault::Ping(NodeId(1), false));
    sim.run_until(ms(1500));
    assert_eq!(sim.running_on(&g("nfs")), Some(NodeId(2)));
    // Uplink back, then a partition where node 2 lost its uplink: node 2 (no ping, no peer)
    // loses quorum and releases; node 1 keeps/takes the group.
    sim.apply(Fault::Ping(NodeId(1), true));
    sim.run_until(ms(2500));
    assert_eq!(
        sim.running_on(&g("nfs")),
        Some(NodeId(1)),
        "failback once ping is back"
    );
    sim.apply(Fault::Ping(NodeId(2), false));
    sim.apply(Fault::Partition(vec![NodeId(1)]));
    sim.run_until(ms(3500));
    assert_eq!(sim.active_nodes(&g("nfs")), vec![NodeId(1)]);
    assert!(!sim.node(NodeId(2)).unwrap().status().quorate);
}

#[test]
fn no_quorum_policies() {
    for (policy, keeps) in [
        (NoQuorumPolicy::Stop, false),
        (NoQuorumPolicy::Freeze, true),
    ] {
        let m = model_builder(3)
            .no_quorum_policy(policy)
            .group("nfs", &["vip"], Some(1))
            .build();
        let mut sim = Sim::new(m, rec(), 13).unwrap();
        sim.run_until(ms(1500));
        assert_eq!(sim.running_on(&g("nfs")), Some(NodeId(1)));
        sim.apply(Fault::Partition(vec![NodeId(1)]));
        sim.run_until(ms(2500));
        assert_eq!(
            sim.active_nodes(&g("nfs")).contains(&NodeId(1)),
            keeps,
            "{policy:?}"
        );
    }
}

#[test]
fn order_constraint_between_groups() {
    let m = model_builder(2)
        .quorum(QuorumMode::TwoNode)
        .group("app", &["app1"], Some(1))
        .group("db", &["db1"], Some(1))
        .constraint(Constraint::Order {
            first: g("db"),
            then: g("app"),
            kind: OrderKind::Mandatory,
        })
        .build();
    let mut sim = Sim::new(m, rec(), 21).unwrap();
    sim.run_until(ms(1500));
    let seq: Vec<_> = ops(&sim, NodeId(1), ms(0))
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    assert_eq!(seq, ["db1", "app1"]);
    sim.apply(Fault::Standby(NodeId(1)));
    sim.run_until(ms(2500));
    let seq: Vec<_> = ops(&sim, NodeId(1), ms(1500))
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    assert_eq!(seq, ["app1", "db1"], "stop in reverse order");
    let seq: Vec<_> = ops(&sim, NodeId(2), ms(1500))
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    assert_eq!(seq, ["db1", "app1"]);
}

#[test]
fn phi_accrual_detector_fails_over_no_later_than_deadtime() {
    let m = model_builder(3)
        .detector(DetectorKind::PhiAccrual { threshold: 3.0 })
        .group("nfs", &["vip"], Some(1))
        .build();
    let mut sim = Sim::new(m, rec(), 17).unwrap();
    sim.run_until(ms(1500));
    sim.apply(Fault::Crash(NodeId(1)));
    assert!(sim.run_until_pred(ms(1500 + 500 + 150), |s| {
        s.running_on(&g("nfs")).is_some_and(|n| n != NodeId(1))
    }));
}

#[test]
fn partition_with_fencing_fences_the_lost_node() {
    let m = model_builder(2)
        .quorum(QuorumMode::TwoNode)
        .fencing(true)
        .group("nfs", &["vip"], Some(2))
        .build();
    let mut sim = Sim::new(m, rec(), 19).unwrap();
    sim.run_until(ms(1500));
    assert_eq!(sim.running_on(&g("nfs")), Some(NodeId(2)));
    sim.apply(Fault::Partition(vec![NodeId(1)]));
    sim.run_until(ms(3000));
    assert!(
        sim.log()
            .iter()
            .any(|e| matches!(e.kind, LogKind::Fenced(_))),
        "someone was fenced"
    );
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    if sim.violations().is_empty() && sim.running_on(&g("nfs")).is_none() {
        dump(&sim);
    }
}

#[test]
fn node_rejects_bad_timing_and_unknown_node() {
    let mut m = two_node_model();
    m.timing.deadtime = m.timing.keepalive * 2;
    let err = Node::new(Arc::new(m), NodeId(1), 1, Timestamp::ZERO).unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    assert!(Node::new(Arc::new(two_node_model()), NodeId(9), 1, Timestamp::ZERO).is_err());
}

#[test]
fn status_snapshot_serializes() {
    let mut sim = Sim::new(two_node_model(), rec(), 1).unwrap();
    sim.run_until(ms(1000));
    let st = sim.node(NodeId(1)).unwrap().status();
    assert!(st.quorate);
    assert_eq!(st.members, vec![NodeId(1), NodeId(2)]);
    assert_eq!(st.groups[0].location, Some(NodeId(1)));
    assert!(st.peers[0].links.iter().all(|l| l.up));
    let json = serde_json::to_string(&st).unwrap();
    let back: ha_core::NodeStatus = serde_json::from_str(&json).unwrap();
    assert_eq!(back, st);
}

#[test]
fn node_and_messages_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Node>();
    assert_send_sync::<ha_core::Message>();
    assert_send_sync::<ha_core::Output>();
}

#[test]
fn failed_stop_gets_the_node_fenced() {
    let m = model_builder(2)
        .quorum(QuorumMode::TwoNode)
        .fencing(true)
        .group("nfs", &["vip", "nfsd"], Some(1))
        .build();
    let mut sim = Sim::new(m, rec(), 23).unwrap();
    sim.run_until(ms(1000));
    assert_eq!(sim.running_on(&g("nfs")), Some(NodeId(1)));
    // Standby asks node 1 to stop; the stop of nfsd fails: the group is stuck there until the
    // peer fences node 1, then it runs on node 2.
    sim.apply(Fault::Inject(
        NodeId(1),
        ResourceId::from("nfsd"),
        ResourceOp::Stop,
        OcfCode::ErrGeneric,
    ));
    sim.apply(Fault::Standby(NodeId(1)));
    sim.run_until(ms(1300));
    assert!(
        sim.log()
            .iter()
            .any(|e| e.kind == LogKind::Fenced(NodeId(1))),
        "node 1 fenced"
    );
    assert_eq!(sim.running_on(&g("nfs")), Some(NodeId(2)));
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

/// auto_failback off: after the preferred node crashed and came back, the group stays on the
/// node that took it over and is never stopped there (no NoQuorum stop while the returning
/// node has not granted yet), whatever the quorum mode.
#[test]
fn auto_failback_off_holder_never_stops_when_preferred_node_returns() {
    let cases = [
        ("two_node", 2, QuorumMode::TwoNode),
        ("none", 2, QuorumMode::None),
        ("majority-3", 3, QuorumMode::Majority),
    ];
    for (name, n, quorum) in cases {
        for seed in 1..=40u64 {
            // Odd seeds: lossy, jittery links (the returning node's grant may come late).
            let cfg = if seed % 2 == 1 {
                SimConfig {
                    loss: 0.1,
                    delay_max: Duration::from_millis(40),
                    ..rec()
                }
            } else {
                rec()
            };
            let m = model_builder(n)
                .quorum(quorum)
                .auto_failback(false)
                .group("nfs", &["vip", "fs"], Some(1))
                .build();
            let mut sim = Sim::new(m, cfg, seed).unwrap();
            let nfs = g("nfs");
            sim.run_until(ms(2000));
            assert_eq!(sim.running_on(&nfs), Some(NodeId(1)), "{name} seed {seed}");
            sim.apply(Fault::Crash(NodeId(1)));
            sim.run_until(ms(3500));
            let holder = sim.running_on(&nfs);
            assert!(
                holder.is_some_and(|h| h != NodeId(1)),
                "{name} seed {seed}: no failover ({holder:?})"
            );
            let holder = holder.unwrap();
            let t_back = ms(3500);
            sim.apply(Fault::Restart(NodeId(1)));
            sim.run_until(ms(7000));
            let stops: Vec<_> = sim
                .log()
                .iter()
                .filter(|e| e.at >= t_back)
                .filter(|e| {
                    matches!(&e.kind, LogKind::Event(Event::GroupStopping { .. }))
                        || matches!(&e.kind, LogKind::Action(a) if a.op != ResourceOp::Monitor)
                })
                .collect();
            if !stops.is_empty() {
                dump(&sim);
            }
            assert!(
                stops.is_empty(),
                "{name} seed {seed}: group touched after node 1 returned: {stops:?}"
            );
            assert_eq!(sim.running_on(&nfs), Some(holder), "{name} seed {seed}");
            assert!(sim.violations().is_empty(), "{:?}", sim.violations());
        }
    }
}

/// A holder keeps its group while a peer that just (re)joined has not granted yet: the crash
/// and reboot of the idle backup never touches the group on the preferred node.
#[test]
fn holder_keeps_group_while_rebooted_backup_has_not_granted_yet() {
    for (name, n, quorum) in [
        ("two_node", 2, QuorumMode::TwoNode),
        ("none", 2, QuorumMode::None),
        ("majority-3", 3, QuorumMode::Majority),
    ] {
        for seed in 1..=10u64 {
            let m = model_builder(n)
                .quorum(quorum)
                .group("nfs", &["vip", "fs"], Some(1))
                .build();
            let mut sim = Sim::new(m, rec(), seed).unwrap();
            let nfs = g("nfs");
            sim.run_until(ms(2000));
            assert_eq!(sim.running_on(&nfs), Some(NodeId(1)), "{name} seed {seed}");
            let t_crash = ms(2000);
            sim.apply(Fault::Crash(NodeId(2)));
            sim.run_until(ms(3000));
            sim.apply(Fault::Restart(NodeId(2)));
            sim.run_until(ms(5000));
            let touched: Vec<_> = ops(&sim, NodeId(1), t_crash);
            assert!(
                touched.is_empty(),
                "{name} seed {seed}: group touched on node 1: {touched:?}"
            );
            assert_eq!(sim.running_on(&nfs), Some(NodeId(1)), "{name} seed {seed}");
            assert!(sim.violations().is_empty(), "{:?}", sim.violations());
        }
    }
}
