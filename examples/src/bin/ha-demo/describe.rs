//! Human-readable lines for node events, shared by both modes.

use ha_core::{Event, NodeId};
use std::collections::BTreeMap;

/// One readable line for an event of node `me`, or `None` for noise (link flaps, own grants).
pub fn describe_event(ev: &Event, me: NodeId, names: &BTreeMap<NodeId, String>) -> Option<String> {
    let name = |n: &NodeId| names.get(n).cloned().unwrap_or_else(|| n.to_string());
    Some(match ev {
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
        Event::GroupGranted { group, to } if *to != me => {
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
    })
}
