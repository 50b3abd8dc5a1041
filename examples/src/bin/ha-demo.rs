//! ha-demo: a two-node NFS cluster (heartbeat's classic topology) under the deterministic
//! simulator, printed as a timeline in virtual milliseconds.
//!
//! alpha is the preferred node of group `nfs` = vip + drbd disk + filesystem + nfs-server.
//! The story: both nodes boot, alpha starts the group left to right, alpha crashes, beta
//! declares it dead after deadtime and takes over, alpha reboots and rejoins, and the group
//! fails back through the takeover handshake (beta stops right to left, then alpha starts).
//!
//! `cargo run -p ha-examples --bin ha-demo [-- --seed N]`. No root, no setup.

use anyhow::{Result, bail};
use clap::Parser;
use ha_core::model::{ClusterModel, QuorumMode};
use ha_core::sim::{Fault, LogEntry, LogKind, Sim, SimConfig, model_builder};
use ha_core::{Event, GroupId, NodeId, OcfCode, ResourceOp, Timestamp};
use std::collections::BTreeMap;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Two-node NFS failover demo on the ha-toolkit simulator")]
struct Args {
    /// Seed of the simulation (message delays, action durations).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run over real sockets instead of the simulator (not available yet).
    #[arg(long)]
    real: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.real {
        bail!("--real mode is not implemented yet; run without --real for the simulated timeline");
    }
    simulated(args.seed)
}

/// The demo cluster: alpha (id 1) and beta (id 2), two-node quorum, auto_failback on.
fn demo_model() -> ClusterModel {
    model_builder(2)
        .names(&["alpha", "beta"])
        .quorum(QuorumMode::TwoNode)
        .auto_failback(true)
        .group(
            "nfs",
            &["vip", "drbd-disk", "filesystem", "nfs-server"],
            Some(1),
        )
        .build()
}

fn simulated(seed: u64) -> Result<()> {
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
    let name = |n: &NodeId| names.get(n).cloned().unwrap_or_else(|| n.to_string());
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
        LogKind::Event(ev) => match ev {
            Event::PeerUp { node } => format!("peer {} is up", name(node)),
            Event::PeerDown { node } => format!(
                "peer {} declared DEAD (no heartbeat for deadtime)",
                name(node)
            ),
            Event::PeerRestarted { node, old, new } => {
                format!(
                    "peer {} restarted (incarnation {old} -> {new}): its old resources are gone",
                    name(node)
                )
            }
            Event::ViewChanged { view, members } => {
                let m: Vec<String> = members.iter().map(name).collect();
                format!("membership view {view}: [{}]", m.join(", "))
            }
            Event::QuorumChanged {
                quorate,
                votes,
                total,
            } => {
                format!(
                    "quorum {} ({votes}/{total} votes)",
                    if *quorate { "gained" } else { "lost" }
                )
            }
            Event::LateHeartbeat { peer, delay, .. } => {
                format!(
                    "late heartbeat from {} ({} ms)",
                    name(peer),
                    delay.as_millis()
                )
            }
            Event::StallDetected { delay } => format!("stall detected ({} ms)", delay.as_millis()),
            Event::GroupClaimed { group } => {
                format!("claims {group} (TakeoverRequest to live peers)")
            }
            Event::TakeoverRequested { group, from } => {
                format!("TakeoverRequest for {group} from {}", name(from))
            }
            Event::GroupGranted { group, to } if *to != e.node => {
                format!("releases {group} to {}: sends TakeoverResponse", name(to))
            }
            Event::GroupGranted { .. } => return None,
            Event::TakeoverGranted { group, by } => {
                format!("TakeoverResponse for {group} from {}", name(by))
            }
            Event::Failover { group, from, .. } => {
                format!("FAILOVER: takes over {group} from dead {}", name(from))
            }
            Event::GroupStarting { group } => format!("starting {group} (left to right)"),
            Event::GroupRunning { group } => format!("{group} is RUNNING here"),
            Event::GroupStopping { group, reason } => {
                format!("stopping {group} (right to left), reason: {reason:?}")
            }
            Event::GroupStopped { group } => format!("{group} stopped"),
            Event::GroupFailed {
                group,
                resource,
                op,
                code,
            } => format!("{group}: {op} {resource} failed: {code:?}"),
            Event::FenceRequested { node } => format!("fencing {}", name(node)),
            Event::Fenced { node, ok } => format!(
                "fencing {}: {}",
                name(node),
                if *ok { "done" } else { "FAILED" }
            ),
            Event::StandbyDone => "standby done".into(),
            Event::PingChanged { reachable } => format!("ping nodes reachable: {reachable}"),
            Event::LinkUp { .. } | Event::LinkDown { .. } => return None,
        },
    })
}
