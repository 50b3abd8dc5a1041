//! Quorum: may this partition act?
//!
//! * [`QuorumMode::Majority`]: strictly more than half of all configured votes.
//! * [`QuorumMode::TwoNode`]: with both nodes up the pair is quorate; a lone node is quorate
//!   only while it reaches its ping nodes (heartbeat's ipfail): the node that lost its uplink
//!   (no ping node, no peer) releases its groups, the one that still reaches them keeps or takes
//!   them. Without configured ping nodes a lone node is quorate (corosync's two_node).
//! * [`QuorumMode::None`]: always quorate (heartbeat's classic behaviour).
//!
//! [`NoQuorumPolicy::Ignore`] makes every partition quorate.

use crate::ids::NodeId;
use crate::model::{ClusterModel, NoQuorumPolicy, QuorumMode};
use serde::{Deserialize, Serialize};

/// The quorum state of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quorum {
    /// The partition may act.
    pub quorate: bool,
    /// Votes present in the partition.
    pub votes: u32,
    /// Votes configured.
    pub total: u32,
}

/// Votes of `members`.
pub fn votes(model: &ClusterModel, members: &[NodeId]) -> u32 {
    members
        .iter()
        .filter_map(|m| model.node(*m))
        .map(|n| n.votes)
        .sum()
}

/// True when `v` votes are a strict majority of `total`.
pub fn is_majority(v: u32, total: u32) -> bool {
    u64::from(v) * 2 > u64::from(total)
}

/// Quorum of a partition made of `members` (the local node included); `ping_ok` is the local
/// node's ping-node reachability.
pub fn compute(model: &ClusterModel, members: &[NodeId], ping_ok: bool) -> Quorum {
    let total = model.total_votes();
    let v = votes(model, members);
    let quorate = if model.policy.no_quorum_policy == NoQuorumPolicy::Ignore {
        true
    } else {
        match model.policy.quorum {
            QuorumMode::Majority => is_majority(v, total),
            QuorumMode::TwoNode => {
                members.len() >= model.nodes.len() || model.ping_nodes.is_empty() || ping_ok
            }
            QuorumMode::None => true,
        }
    };
    Quorum {
        quorate,
        votes: v,
        total,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sim::model_builder;

    #[test]
    fn majority() {
        let m = model_builder(3).build();
        assert!(!compute(&m, &[NodeId(1)], true).quorate);
        assert!(compute(&m, &[NodeId(1), NodeId(3)], false).quorate);
        let q = compute(&m, &[NodeId(1), NodeId(2), NodeId(3)], true);
        assert_eq!((q.votes, q.total), (3, 3));
        let m = model_builder(2).build();
        assert!(
            !compute(&m, &[NodeId(1)], true).quorate,
            "1 of 2 is no majority"
        );
    }

    #[test]
    fn two_node_uses_ping() {
        let m = model_builder(2)
            .quorum(QuorumMode::TwoNode)
            .ping_nodes(&["192.0.2.1"])
            .build();
        assert!(compute(&m, &[NodeId(1), NodeId(2)], false).quorate);
        assert!(compute(&m, &[NodeId(1)], true).quorate);
        assert!(!compute(&m, &[NodeId(1)], false).quorate);
        let m = model_builder(2).quorum(QuorumMode::TwoNode).build();
        assert!(
            compute(&m, &[NodeId(1)], false).quorate,
            "no ping nodes: lone node is quorate"
        );
    }

    #[test]
    fn none_and_ignore() {
        let m = model_builder(3).quorum(QuorumMode::None).build();
        assert!(compute(&m, &[NodeId(1)], false).quorate);
        let m = model_builder(3)
            .no_quorum_policy(NoQuorumPolicy::Ignore)
            .build();
        assert!(compute(&m, &[NodeId(1)], false).quorate);
    }
}
