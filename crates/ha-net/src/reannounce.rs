//! When to re-announce the addresses of a group this node holds (sans-IO).
//!
//! A peer that falsely declared us dead (a stall under load) starts our groups, adds the
//! floating IP and sends gratuitous ARP; when it sees us again it stops them, but the
//! neighbours keep sending to its MAC until their cache entries expire (seconds). keepalived
//! has the same hole: no GARP when the master did not change state. So the holder announces
//! again whenever a peer may have announced the same address:
//! - a peer's heartbeat reports one of our held groups entering or leaving Starting, Running
//!   or Stopping (both edges: the burst after the peer stopped is the one that wins);
//! - a peer asks to take over a held group;
//! - membership moved (peer up, peer restarted, view change): all held groups.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use ha_core::message::{GroupState, Message};
use ha_core::node::Event;
use ha_core::{GroupId, NodeId};

/// Tracks held groups and peers' claims on them; yields groups to re-announce.
#[derive(Debug, Default)]
pub struct Reannounce {
    /// Groups running here.
    held: BTreeSet<GroupId>,
    /// Per peer, the groups it last reported as (possibly) active.
    claims: BTreeMap<NodeId, BTreeSet<GroupId>>,
    /// Groups waiting to be re-announced, without duplicates.
    due: VecDeque<GroupId>,
}

/// A state in which the group's addresses may be (or have just been) on the reporting node.
fn active(s: GroupState) -> bool {
    matches!(
        s,
        GroupState::Starting | GroupState::Running | GroupState::Stopping
    )
}

impl Reannounce {
    /// Nothing held.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the group runs here (as far as the events said).
    pub fn holds(&self, g: &GroupId) -> bool {
        self.held.contains(g)
    }

    fn queue(&mut self, g: &GroupId) {
        if self.held.contains(g) && !self.due.contains(g) {
            self.due.push_back(g.clone());
        }
    }

    fn queue_all(&mut self) {
        let held: Vec<GroupId> = self.held.iter().cloned().collect();
        for g in &held {
            self.queue(g);
        }
    }

    /// Feed an event of the local node.
    pub fn on_event(&mut self, ev: &Event) {
        match ev {
            Event::GroupRunning { group } => {
                self.held.insert(group.clone());
            }
            Event::GroupStopping { group, .. }
            | Event::GroupStopped { group }
            | Event::GroupFailed { group, .. } => {
                self.held.remove(group);
                self.due.retain(|g| g != group);
            }
            Event::TakeoverRequested { group, .. } => self.queue(group),
            Event::PeerUp { .. } | Event::PeerRestarted { .. } | Event::ViewChanged { .. } => {
                self.queue_all()
            }
            _ => {}
        }
    }

    /// Feed a message received from `from` (before or after the node handles it).
    pub fn on_message(&mut self, from: NodeId, msg: &Message) {
        let Message::Heartbeat(hb) = msg else {
            return;
        };
        // Cheap path: nothing held, only remember the claims.
        let now: BTreeSet<GroupId> = hb
            .groups
            .iter()
            .filter(|r| active(r.state))
            .map(|r| r.group.clone())
            .collect();
        let before = self.claims.entry(from).or_default();
        if *before == now {
            return;
        }
        let changed: Vec<GroupId> = before.symmetric_difference(&now).cloned().collect();
        *before = now;
        for g in &changed {
            self.queue(g);
        }
    }

    /// The next group whose addresses should be announced again.
    pub fn poll(&mut self) -> Option<GroupId> {
        self.due.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ha_core::message::{GroupReport, Heartbeat};

    fn g(s: &str) -> GroupId {
        GroupId::from(s)
    }

    fn hb(groups: &[(&str, GroupState)]) -> Message {
        Message::Heartbeat(Heartbeat {
            incarnation: 1,
            seq: 1,
            view: 1,
            ping_ok: true,
            standby: false,
            peers: vec![],
            groups: groups
                .iter()
                .map(|(n, s)| GroupReport {
                    group: g(n),
                    state: *s,
                    claim: None,
                    grant: None,
                    failcount: 0,
                    banned: false,
                    fatal: false,
                    operator: Default::default(),
                })
                .collect(),
        })
    }

    fn drain(r: &mut Reannounce) -> Vec<GroupId> {
        std::iter::from_fn(|| r.poll()).collect()
    }

    #[test]
    fn peer_claiming_a_held_group_triggers_on_both_edges() {
        let mut r = Reannounce::new();
        let b = NodeId(2);
        r.on_event(&Event::GroupRunning { group: g("web") });
        r.on_message(b, &hb(&[("web", GroupState::Stopped)]));
        assert!(drain(&mut r).is_empty(), "peer idle: nothing to do");
        r.on_message(b, &hb(&[("web", GroupState::Starting)]));
        assert_eq!(drain(&mut r), vec![g("web")]);
        // Starting -> Running -> Stopping: still active, no new burst per heartbeat.
        r.on_message(b, &hb(&[("web", GroupState::Running)]));
        r.on_message(b, &hb(&[("web", GroupState::Stopping)]));
        assert!(drain(&mut r).is_empty());
        // The peer let go: announce again so the neighbours come back to us.
        r.on_message(b, &hb(&[("web", GroupState::Stopped)]));
        assert_eq!(drain(&mut r), vec![g("web")]);
    }

    #[test]
    fn groups_not_held_are_never_announced() {
        let mut r = Reannounce::new();
        r.on_message(NodeId(2), &hb(&[("web", GroupState::Running)]));
        r.on_event(&Event::PeerUp { node: NodeId(2) });
        assert!(drain(&mut r).is_empty());
        r.on_event(&Event::GroupRunning { group: g("web") });
        r.on_event(&Event::GroupStopping {
            group: g("web"),
            reason: ha_core::node::StopReason::Moved,
        });
        r.on_event(&Event::PeerUp { node: NodeId(2) });
        assert!(drain(&mut r).is_empty());
    }

    #[test]
    fn membership_changes_reannounce_every_held_group_once() {
        let mut r = Reannounce::new();
        r.on_event(&Event::GroupRunning { group: g("a") });
        r.on_event(&Event::GroupRunning { group: g("b") });
        r.on_event(&Event::PeerUp { node: NodeId(2) });
        r.on_event(&Event::PeerRestarted {
            node: NodeId(2),
            old: 1,
            new: 2,
        });
        r.on_event(&Event::TakeoverRequested {
            group: g("a"),
            from: NodeId(2),
        });
        assert_eq!(drain(&mut r), vec![g("a"), g("b")]);
        assert!(!r.holds(&g("c")));
    }
}
