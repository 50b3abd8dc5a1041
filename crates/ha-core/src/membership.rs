//! Membership: the local node's view of who is alive, with a monotonic view number.

use crate::ids::NodeId;
use serde::{Deserialize, Serialize};

/// The set of live nodes as seen locally (always includes the local node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// Increases by one on every change of `members`.
    pub number: u64,
    /// Live nodes, sorted by id.
    pub members: Vec<NodeId>,
}

impl View {
    /// The initial view: only the local node, number 1.
    pub fn initial(me: NodeId) -> Self {
        View {
            number: 1,
            members: vec![me],
        }
    }

    /// Replace the members; returns true (and bumps the number) when they changed.
    pub fn update(&mut self, mut members: Vec<NodeId>) -> bool {
        members.sort_unstable();
        members.dedup();
        if members == self.members {
            return false;
        }
        self.members = members;
        self.number += 1;
        true
    }

    /// Whether `n` is a member.
    pub fn contains(&self, n: NodeId) -> bool {
        self.members.binary_search(&n).is_ok()
    }

    /// The designated coordinator: the member with the lowest id.
    pub fn dc(&self) -> Option<NodeId> {
        self.members.first().copied()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn view_numbers_increase_on_change_only() {
        let mut v = View::initial(NodeId(2));
        assert!(!v.update(vec![NodeId(2)]));
        assert!(v.update(vec![NodeId(3), NodeId(2), NodeId(1)]));
        assert_eq!(v.number, 2);
        assert_eq!(v.members, vec![NodeId(1), NodeId(2), NodeId(3)]);
        assert_eq!(v.dc(), Some(NodeId(1)));
        assert!(!v.update(vec![NodeId(1), NodeId(2), NodeId(3)]));
        assert!(v.update(vec![NodeId(2)]));
        assert_eq!(v.number, 3);
        assert!(!v.contains(NodeId(1)));
    }
}
