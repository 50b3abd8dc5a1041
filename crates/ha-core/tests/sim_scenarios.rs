//! Scripted simulator scenarios: failover, failback, standby, failures.

use ha_core::sim::{Fault, LogKind, Sim, SimConfig, model_builder, two_node_model};
use ha_core::{GroupId, NodeId, Timestamp};

fn ms(x: u64) -> Timestamp {
    Timestamp::from_millis(x)
}

fn dump(sim: &Sim) {
    for e in sim.log() {
        match &e.kind {
            LogKind::Event(ha_core::Event::LinkUp { .. } | ha_core::Event::LinkDown { .. }) => {}
            k => println!("{:>6} {} {:?}", e.at.as_millis(), e.node, k),
        }
    }
}

#[test]
fn two_node_failover_and_failback() {
    let cfg = SimConfig { record: true, ..SimConfig::default() };
    let mut sim = Sim::new(two_node_model(), cfg, 1).unwrap();
    let nfs = GroupId::from("nfs");
    sim.run_until(ms(2000));
    dump(&sim);
    assert_eq!(sim.running_on(&nfs), Some(NodeId(1)));
    sim.apply(Fault::Crash(NodeId(1)));
    sim.run_until(ms(3000));
    dump(&sim);
    assert_eq!(sim.running_on(&nfs), Some(NodeId(2)));
    sim.apply(Fault::Restart(NodeId(1)));
    sim.run_until(ms(5000));
    dump(&sim);
    assert_eq!(sim.running_on(&nfs), Some(NodeId(1)));
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}
