//! The simulated timeline: the demo cluster under [`ha_core::sim::Sim`], virtual time.

use crate::demo_model;
use crate::describe::describe_event;
use anyhow::{Result, bail};
use ha_core::sim::{Fault, LogEntry, LogKind, Sim, SimConfig};
use ha_core::{GroupId, NodeId, OcfCode, ResourceOp, Timestamp};
use std::collections::BTreeMap;

/// Run the scripted story in the simulator and print its log.
pub fn run(seed: u64) -> Result<()> {
    let model = demo_model();
    let names: BTreeMap<NodeId, String> =
        model.nodes.iter().map(|n| (n.id, n.name.clone())).collect();
    let t = model.timing;
    println!(
        "ha-demo: two-node NFS cluster, simulated (seed {seed}); keepalive {} ms, deadtime {} ms",
        t.keepalive.as_millis(),
        t.deadtime.as_millis()
    );
    println!("group nfs = vip -> drbd-disk -> filesystem -> nfs-server, preferred node alpha\n");
    let cfg = SimConfig {
        record: true,
        ..SimConfig::default()
    };
    let mut sim = Sim::new(model, cfg, seed)?;
    let alpha = NodeId(1);
    let nfs = GroupId::from("nfs");
    sim.run_until(Timestamp::from_millis(1500));
    sim.apply(Fault::Crash(alpha));
    sim.run_until(Timestamp::from_millis(3000));
    sim.apply(Fault::Restart(alpha));
    sim.run_until(Timestamp::from_millis(4500));

    let mut printed = 0usize;
    for e in sim.log() {
        if let Some(line) = describe(e, &names) {
            let who = names.get(&e.node).map_or("-", String::as_str);
            println!("{:>6} ms  {:<6} {line}", e.at.as_millis(), who);
            printed += 1;
        }
    }
    println!();
    match sim.running_on(&nfs) {
        Some(n) => println!(
            "end: nfs runs on {}",
            names.get(&n).map_or("?", String::as_str)
        ),
        None => println!("end: nfs is not running"),
    }
    if !sim.violations().is_empty() {
        bail!("split brain detected: {:?}", sim.violations());
    }
    if printed == 0 {
        bail!("the simulation produced no events");
    }
    Ok(())
}

/// One readable line per interesting log entry.
fn describe(e: &LogEntry, names: &BTreeMap<NodeId, String>) -> Option<String> {
    Some(match &e.kind {
        LogKind::Booted { incarnation } => format!("boots (incarnation {incarnation})"),
        LogKind::Fault(Fault::Crash(_)) => "*** CRASH: the node dies with its resources ***".into(),
        LogKind::Fault(Fault::Restart(_)) => "*** node powered on again ***".into(),
        LogKind::Fault(_) => return None,
        LogKind::Fenced(_) => "fenced".into(),
        LogKind::Action(a) if a.op != ResourceOp::Monitor => {
            format!("  {} {} ...", a.op, a.resource)
        }
        LogKind::Action(_) => return None,
        LogKind::ActionDone {
            resource, op, code, ..
        } if *op != ResourceOp::Monitor => {
            let outcome = if *code == OcfCode::Success {
                "ok".to_owned()
            } else {
                format!("{code:?}")
            };
            format!("  {op} {resource}: {outcome}")
        }
        LogKind::ActionDone { .. } => return None,
        LogKind::Event(ev) => return describe_event(ev, e.node, names),
    })
}
