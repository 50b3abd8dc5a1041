//! Property tests under random faults: no group is ever active on two nodes at once.
//!
//! Every schedule is one u64 seed; a failing seed is printed and replays exactly
//! (`HA_SIM_SEED=<seed> cargo test -p ha-core --test sim_safety -- --nocapture`).
//! `HA_SIM_SCHEDULES` scales the number of schedules.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ha_core::model::QuorumMode;
use ha_core::sim::{Fault, Sim, SimConfig, model_builder, random_faults};
use ha_core::{GroupId, NodeId, Timestamp};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io::Write;
use std::time::{Duration, Instant};

fn schedules(default: u64) -> u64 {
    std::env::var("HA_SIM_SCHEDULES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn seeds(default: u64) -> Vec<u64> {
    match std::env::var("HA_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(s) => vec![s],
        None => (0..schedules(default)).collect(),
    }
}

/// Run one random schedule: faults during 0.5-2.3 s, then heal, restart every node and let
/// the cluster settle until 3.4 s.
fn run(model: ha_core::model::ClusterModel, seed: u64, nfaults: usize, stalls: bool) -> Sim {
    let mut frng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_f417);
    let cfg = SimConfig {
        record: std::env::var("HA_SIM_DUMP").is_ok(),
        loss: frng.gen_range(0.0..0.1),
        delay_max: Duration::from_millis(frng.gen_range(1..40)),
        unreachable_answers: frng.gen_bool(0.5),
        exit_notices: frng.gen_bool(0.5),
        ..SimConfig::default()
    };
    let ids: Vec<NodeId> = model.nodes.iter().map(|n| n.id).collect();
    let groups: Vec<GroupId> = model.groups.iter().map(|g| g.id.clone()).collect();
    let mut sim = Sim::new(model, cfg, seed).unwrap();
    for (at, f) in random_faults(
        &mut frng,
        &ids,
        &groups,
        Timestamp::from_millis(500),
        Timestamp::from_millis(2300),
        nfaults,
        stalls,
    ) {
        sim.schedule(at, f);
    }
    sim.schedule(Timestamp::from_millis(2300), Fault::Heal);
    sim.schedule(Timestamp::from_millis(2300), Fault::Loss(0.0));
    for &n in &ids {
        sim.schedule(Timestamp::from_millis(2300), Fault::Restart(n));
    }
    // Stalls may outlast the fault window and a fenced node reboots, waits out initdead and its
    // boot blackout: give it time.
    sim.run_until(Timestamp::from_millis(if stalls { 5200 } else { 3400 }));
    sim
}

fn check(name: &str, n: u64, stalls: bool, mk: impl Fn() -> ha_core::model::ClusterModel) {
    let t0 = Instant::now();
    let mut events = 0;
    let mut count = 0;
    for seed in seeds(n) {
        let sim = run(mk(), seed, 1 + (seed % 6) as usize, stalls);
        events += sim.events_processed();
        if std::env::var("HA_SIM_DUMP").is_ok() {
            for e in sim.log() {
                if !matches!(
                    e.kind,
                    ha_core::sim::LogKind::Event(
                        ha_core::Event::LinkUp { .. } | ha_core::Event::LinkDown { .. }
                    )
                ) {
                    println!("{:>6} {} {:?}", e.at.as_millis(), e.node, e.kind);
                }
            }
        }
        assert!(
            sim.violations().is_empty(),
            "{name}: seed {seed}: split brain {:?}",
            sim.violations()
        );
        // After the calm period every group runs somewhere exactly once.
        for g in &sim.model().groups {
            assert!(
                sim.running_on(&g.id).is_some(),
                "{name}: seed {seed}: group {} not running after recovery (active on {:?})",
                g.id,
                sim.active_nodes(&g.id)
            );
        }
        count += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    // Written to the real stdout, not through println!, so libtest's capture does not hide
    // the count in CI (the issue asks the suite to print it).
    let _ = writeln!(
        std::io::stdout().lock(),
        "{name}: schedules: {count} in {secs:.2}s = {:.0} schedules/s ({events} events)",
        count as f64 / secs
    );
}

#[test]
fn safety_three_nodes_majority() {
    check("3 nodes, majority", 3000, false, || {
        model_builder(3)
            .group("web", &["vip1", "httpd"], Some(1))
            .group("db", &["vip2", "disk", "fs", "mysql"], Some(2))
            .build()
    });
}

#[test]
fn safety_two_nodes_fencing() {
    check("2 nodes, two_node + fencing", 2500, false, || {
        model_builder(2)
            .quorum(QuorumMode::TwoNode)
            .fencing(true)
            .group("nfs", &["vip", "disk", "fs", "nfsd"], Some(1))
            .group("db", &["vip2", "mysql"], Some(2))
            .build()
    });
}

#[test]
fn safety_three_nodes_fencing_failback_off() {
    check(
        "3 nodes, majority + fencing, failback off",
        1500,
        false,
        || {
            model_builder(3)
                .fencing(true)
                .auto_failback(false)
                .group("nfs", &["vip", "disk", "fs", "nfsd"], Some(3))
                .build()
        },
    );
}

/// With fencing, even a stalled holder or a jumping clock cannot cause split brain: the
/// unresponsive node is fenced before its groups move.
#[test]
fn safety_two_nodes_fencing_with_stalls_and_clock_jumps() {
    check(
        "2 nodes, two_node + fencing, stalls + clock jumps",
        1000,
        true,
        || {
            model_builder(2)
                .quorum(QuorumMode::TwoNode)
                .fencing(true)
                .group("nfs", &["vip", "disk", "fs", "nfsd"], Some(1))
                .build()
        },
    );
}

/// The phi accrual detector under the same faults (leases use its detection floor).
#[test]
fn safety_three_nodes_phi_accrual() {
    check("3 nodes, majority, phi accrual", 500, false, || {
        model_builder(3)
            .detector(ha_core::model::DetectorKind::PhiAccrual { threshold: 2.0 })
            .group("web", &["vip1", "httpd"], Some(1))
            .group("db", &["vip2", "disk", "fs", "mysql"], Some(2))
            .build()
    });
}

fn group(s: &str) -> GroupId {
    GroupId::from(s)
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    fn fault() -> impl Strategy<Value = (u64, Fault)> {
        let node = (1u16..=3).prop_map(NodeId);
        let at = 500u64..2300;
        prop_oneof![
            (at.clone(), node.clone()).prop_map(|(t, n)| (t, Fault::Crash(n))),
            (at.clone(), node.clone()).prop_map(|(t, n)| (t, Fault::Restart(n))),
            (at.clone(), proptest::collection::vec(node.clone(), 1..3))
                .prop_map(|(t, s)| (t, Fault::Partition(s))),
            (at.clone(), node.clone(), node.clone()).prop_map(|(t, a, b)| (t, Fault::Cut(a, b))),
            at.clone().prop_map(|t| (t, Fault::Heal)),
            (at, 0.0f64..0.5).prop_map(|(t, p)| (t, Fault::Loss(p))),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Arbitrary (shrinkable) fault lists on a 3-node majority cluster: never split brain.
        #[test]
        fn arbitrary_faults_never_split_brain(seed in any::<u64>(), faults in proptest::collection::vec(fault(), 0..10)) {
            let model = model_builder(3)
                .group("web", &["vip1", "httpd"], Some(1))
                .group("db", &["vip2", "mysql"], Some(3))
                .build();
            let mut sim = Sim::new(model, SimConfig::default(), seed).unwrap();
            for (t, f) in faults {
                sim.schedule(Timestamp::from_millis(t), f);
            }
            sim.schedule(Timestamp::from_millis(2300), Fault::Heal);
            sim.schedule(Timestamp::from_millis(2300), Fault::Loss(0.0));
            for n in 1..=3 {
                sim.schedule(Timestamp::from_millis(2300), Fault::Restart(NodeId(n)));
            }
            sim.run_until(Timestamp::from_millis(3400));
            prop_assert!(sim.violations().is_empty(), "{:?}", sim.violations());
            for g in ["web", "db"] {
                prop_assert!(sim.running_on(&group(g)).is_some(), "{g} not running after recovery");
            }
        }
    }
}
