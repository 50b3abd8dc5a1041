//! The sync decision when two nodes connect (DRBD's UUID comparison) and the split-brain
//! recovery policies. Pure functions: both nodes evaluate them with the roles swapped and
//! reach mirrored answers.

use crate::meta::Uuids;
use crate::meta::superblock::UUID_JUST_CREATED;
use serde::{Deserialize, Serialize};

/// What each side knows about itself at connect time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Side {
    /// Generation UUIDs.
    pub uuids: Uuids,
    /// Currently Primary.
    pub primary: bool,
    /// Crashed while Primary (did not demote cleanly).
    pub crashed_primary: bool,
    /// Was Primary when its bitmap generation started (i.e. at the split).
    pub bm_while_primary: bool,
    /// Bits set in its bitmap ("changes" since the split).
    pub bits_set: u64,
    /// Operator asked to discard this side's data.
    pub discard_my_data: bool,
}

/// Raw relation of two UUID sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relation {
    /// Same data, nothing to do.
    InSync,
    /// I have newer data; bitmap-based resync to the peer.
    SourceBitmap,
    /// Peer has newer data; bitmap-based resync from it.
    TargetBitmap,
    /// I must send everything.
    SourceFull,
    /// I must receive everything.
    TargetFull,
    /// Both changed data since a common generation (auto policies may resolve).
    SplitBrain,
    /// Diverged with only older history shared: needs a human.
    SplitBrainManual,
    /// No common generation at all.
    Unrelated,
}

/// Compare UUIDs (DRBD `drbd_uuid_compare`). `i_win_ties` breaks symmetric cases and must be
/// the opposite on the peer.
pub fn compare(me: &Side, peer: &Side, i_win_ties: bool) -> Relation {
    let (m, p) = (&me.uuids, &peer.uuids);
    let m_fresh = m.current == UUID_JUST_CREATED;
    let p_fresh = p.current == UUID_JUST_CREATED;
    match (m_fresh, p_fresh) {
        (true, true) => return Relation::InSync,
        (true, false) => return Relation::TargetFull,
        (false, true) => return Relation::SourceFull,
        _ => {}
    }
    if m.current == p.current {
        return match (me.crashed_primary, peer.crashed_primary) {
            // Same generation and nobody crashed as Primary: bits can only come from an
            // activity log replayed after a crash as Secondary, i.e. that node's own data in
            // those extents is suspect and it must receive them.
            (false, false) => match (me.bits_set > 0, peer.bits_set > 0) {
                (false, false) => Relation::InSync,
                (true, false) => Relation::TargetBitmap,
                (false, true) => Relation::SourceBitmap,
                (true, true) if i_win_ties => Relation::SourceBitmap,
                (true, true) => Relation::TargetBitmap,
            },
            (true, false) => Relation::SourceBitmap,
            (false, true) => Relation::TargetBitmap,
            (true, true) if i_win_ties => Relation::SourceBitmap,
            (true, true) => Relation::TargetBitmap,
        };
    }
    let behind = p.bitmap != 0 && p.bitmap == m.current;
    let ahead = m.bitmap != 0 && m.bitmap == p.current;
    let hist_behind = p.history.contains(&m.current);
    let hist_ahead = m.history.contains(&p.current);
    if (behind && ahead) || (!behind && !ahead && hist_behind && hist_ahead) {
        // Each claims the other is older: contradictory generations.
        return Relation::SplitBrainManual;
    }
    if behind {
        return Relation::TargetBitmap;
    }
    if m.bitmap != 0 && m.bitmap == p.current {
        return Relation::SourceBitmap;
    }
    if p.history.contains(&m.current) {
        return Relation::TargetFull;
    }
    if m.history.contains(&p.current) {
        return Relation::SourceFull;
    }
    if m.bitmap != 0 && m.bitmap == p.bitmap {
        return Relation::SplitBrain;
    }
    let mine = [m.bitmap, m.history[0], m.history[1]];
    let theirs = [p.bitmap, p.history[0], p.history[1]];
    if mine.iter().any(|u| *u != 0 && theirs.contains(u)) {
        return Relation::SplitBrainManual;
    }
    Relation::Unrelated
}

/// after-sb-0pri: no node is Primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum AfterSb0 {
    /// Give up, go StandAlone.
    #[default]
    Disconnect,
    /// The node that became Primary later (was Secondary at the split) loses.
    DiscardYoungerPrimary,
    /// The node that was Primary at the split loses.
    DiscardOlderPrimary,
    /// A node without changes loses; disconnect if both changed.
    DiscardZeroChanges,
    /// The node with fewer changed blocks loses.
    DiscardLeastChanges,
}

/// after-sb-1pri: one node is Primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum AfterSb1 {
    /// Give up, go StandAlone.
    #[default]
    Disconnect,
    /// Apply after-sb-0pri; accept only if the Secondary loses.
    Consensus,
    /// The Secondary loses.
    DiscardSecondary,
}

/// after-sb-2pri: both are Primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum AfterSb2 {
    /// Give up, go StandAlone.
    #[default]
    Disconnect,
}

/// Split-brain recovery policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SbPolicies {
    /// No Primary.
    pub zero: AfterSb0,
    /// One Primary.
    pub one: AfterSb1,
    /// Two Primaries.
    pub two: AfterSb2,
}

/// The final decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to resync.
    NoSync,
    /// I send; `full` = every block, else the union of both bitmaps.
    Source {
        /// Full sync.
        full: bool,
    },
    /// I receive.
    Target {
        /// Full sync.
        full: bool,
    },
    /// Refuse the connection (go StandAlone) and say why.
    Disconnect(String),
}

/// Result of an after-sb policy: who wins.
fn as0(policy: AfterSb0, me: &Side, peer: &Side, i_win_ties: bool) -> Option<bool> {
    // Some(true) = I am the source (peer discarded).
    let tie = Some(i_win_ties);
    let zero_chg = || match (me.bits_set, peer.bits_set) {
        (0, 0) => tie,
        (_, 0) => Some(true),
        (0, _) => Some(false),
        _ => None,
    };
    let least = || match me.bits_set.cmp(&peer.bits_set) {
        std::cmp::Ordering::Less => Some(false),
        std::cmp::Ordering::Greater => Some(true),
        std::cmp::Ordering::Equal => tie,
    };
    match policy {
        AfterSb0::Disconnect => None,
        AfterSb0::DiscardYoungerPrimary | AfterSb0::DiscardOlderPrimary => {
            let older_wins = policy == AfterSb0::DiscardYoungerPrimary;
            match (me.bm_while_primary, peer.bm_while_primary) {
                (true, false) => Some(older_wins),
                (false, true) => Some(!older_wins),
                // No difference: DRBD falls back to discard-least-changes.
                _ => zero_chg().or_else(least),
            }
        }
        AfterSb0::DiscardZeroChanges => zero_chg(),
        AfterSb0::DiscardLeastChanges => zero_chg().or_else(least),
    }
}

/// Decide the sync direction for this connection.
pub fn decide(me: &Side, peer: &Side, pol: &SbPolicies, i_win_ties: bool) -> Decision {
    let rel = compare(me, peer, i_win_ties);
    let by_discard = match (me.discard_my_data, peer.discard_my_data) {
        (true, true) => {
            return Decision::Disconnect("both nodes were told to discard their data".into());
        }
        (true, false) => Some(false),
        (false, true) => Some(true),
        (false, false) => None,
    };
    match rel {
        Relation::InSync => Decision::NoSync,
        Relation::SourceBitmap => Decision::Source { full: false },
        Relation::TargetBitmap => Decision::Target { full: false },
        Relation::SourceFull => Decision::Source { full: true },
        Relation::TargetFull => Decision::Target { full: true },
        Relation::Unrelated => Decision::Disconnect(
            "unrelated data: the nodes share no data generation (wrong peer or fresh metadata?)"
                .into(),
        ),
        Relation::SplitBrainManual => match by_discard {
            Some(true) => Decision::Source { full: true },
            Some(false) => Decision::Target { full: true },
            None => Decision::Disconnect(
                "split brain with only old history shared: resolve by hand (connect --discard-my-data on the victim)"
                    .into(),
            ),
        },
        Relation::SplitBrain => {
            let winner = by_discard.or_else(|| match (me.primary, peer.primary) {
                (false, false) => as0(pol.zero, me, peer, i_win_ties),
                (true, true) => match pol.two {
                    AfterSb2::Disconnect => None,
                },
                (i_am_primary, _) => match pol.one {
                    AfterSb1::Disconnect => None,
                    AfterSb1::DiscardSecondary => Some(i_am_primary),
                    AfterSb1::Consensus => {
                        // Accept the 0pri verdict only if it discards the Secondary.
                        as0(pol.zero, me, peer, i_win_ties).filter(|w| *w == i_am_primary)
                    }
                },
            });
            match winner {
                Some(true) => Decision::Source { full: false },
                Some(false) => Decision::Target { full: false },
                None => Decision::Disconnect(
                    "split brain detected: after-sb policy did not resolve it".into(),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn side(current: u64, bitmap: u64, h0: u64) -> Side {
        Side {
            uuids: Uuids {
                current,
                bitmap,
                history: [h0, 0],
            },
            ..Default::default()
        }
    }

    fn mirror(d: &Decision) -> Decision {
        match d {
            Decision::Source { full } => Decision::Target { full: *full },
            Decision::Target { full } => Decision::Source { full: *full },
            other => other.clone(),
        }
    }

    #[test]
    fn classic_cases() {
        let pol = SbPolicies::default();
        let fresh = side(UUID_JUST_CREATED, 0, 0);
        assert_eq!(decide(&fresh, &fresh, &pol, true), Decision::NoSync);
        assert_eq!(
            decide(&side(10, 0, 0), &fresh, &pol, true),
            Decision::Source { full: true }
        );
        // Primary went on alone: new current 11, bitmap 10; the secondary still has 10.
        let pri = side(11, 10, 0);
        let sec = side(10, 0, 0);
        assert_eq!(
            decide(&pri, &sec, &pol, false),
            Decision::Source { full: false }
        );
        assert_eq!(
            decide(&sec, &pri, &pol, true),
            Decision::Target { full: false }
        );
        // Peer's history holds my current: I am far behind.
        assert_eq!(
            decide(&side(10, 0, 0), &side(12, 11, 10), &pol, true),
            Decision::Target { full: true }
        );
        // Both moved on from 10.
        let a = side(11, 10, 0);
        let b = side(12, 10, 0);
        assert!(
            matches!(decide(&a, &b, &pol, true), Decision::Disconnect(m) if m.contains("split brain"))
        );
        // Only history shared.
        assert!(
            matches!(decide(&side(13, 11, 9), &side(14, 12, 9), &pol, true), Decision::Disconnect(m) if m.contains("by hand"))
        );
        assert!(
            matches!(decide(&side(13, 0, 0), &side(14, 0, 0), &pol, true), Decision::Disconnect(m) if m.contains("unrelated"))
        );
    }

    #[test]
    fn crashed_secondary_receives_its_activity_log_extents() {
        let pol = SbPolicies::default();
        let mut a = side(10, 0, 0);
        a.bits_set = 1024;
        let b = side(10, 0, 0);
        assert_eq!(decide(&a, &b, &pol, true), Decision::Target { full: false });
        assert_eq!(
            decide(&b, &a, &pol, false),
            Decision::Source { full: false }
        );
    }

    #[test]
    fn crashed_primary_resyncs_from_crashed_node() {
        let pol = SbPolicies::default();
        let mut a = side(10, 0, 0);
        a.crashed_primary = true;
        let b = side(10, 0, 0);
        assert_eq!(
            decide(&a, &b, &pol, false),
            Decision::Source { full: false }
        );
        assert_eq!(decide(&b, &a, &pol, true), Decision::Target { full: false });
    }

    #[test]
    fn split_brain_policies() {
        let mut a = side(11, 10, 0);
        let mut b = side(12, 10, 0);
        a.bits_set = 5;
        b.bits_set = 0;
        a.bm_while_primary = true; // a was Primary at the split, b got promoted later
        let p = |zero, one| SbPolicies {
            zero,
            one,
            two: AfterSb2::Disconnect,
        };
        let src = Decision::Source { full: false };
        let tgt = Decision::Target { full: false };
        assert_eq!(
            decide(
                &a,
                &b,
                &p(AfterSb0::DiscardZeroChanges, AfterSb1::Disconnect),
                true
            ),
            src
        );
        assert_eq!(
            decide(
                &a,
                &b,
                &p(AfterSb0::DiscardLeastChanges, AfterSb1::Disconnect),
                false
            ),
            src
        );
        assert_eq!(
            decide(
                &a,
                &b,
                &p(AfterSb0::DiscardYoungerPrimary, AfterSb1::Disconnect),
                false
            ),
            src
        );
        assert_eq!(
            decide(
                &a,
                &b,
                &p(AfterSb0::DiscardOlderPrimary, AfterSb1::Disconnect),
                false
            ),
            tgt
        );
        b.bits_set = 3;
        assert!(matches!(
            decide(
                &a,
                &b,
                &p(AfterSb0::DiscardZeroChanges, AfterSb1::Disconnect),
                true
            ),
            Decision::Disconnect(_)
        ));
        // One primary (b): discard-secondary makes a the victim.
        b.primary = true;
        assert_eq!(
            decide(
                &a,
                &b,
                &p(AfterSb0::Disconnect, AfterSb1::DiscardSecondary),
                true
            ),
            tgt
        );
        // consensus: least-changes would discard b (the Primary) -> refuse.
        assert!(matches!(
            decide(
                &a,
                &b,
                &p(AfterSb0::DiscardLeastChanges, AfterSb1::Consensus),
                true
            ),
            Decision::Disconnect(_)
        ));
        a.bits_set = 1;
        assert_eq!(
            decide(
                &a,
                &b,
                &p(AfterSb0::DiscardLeastChanges, AfterSb1::Consensus),
                true
            ),
            tgt
        );
        // Two primaries: always disconnect.
        a.primary = true;
        assert!(matches!(
            decide(
                &a,
                &b,
                &p(AfterSb0::DiscardLeastChanges, AfterSb1::DiscardSecondary),
                true
            ),
            Decision::Disconnect(_)
        ));
        // Manual: discard-my-data on the victim.
        a.discard_my_data = true;
        assert_eq!(decide(&a, &b, &SbPolicies::default(), true), tgt);
    }

    proptest! {
        #[test]
        fn decisions_are_mirrored(u in proptest::collection::vec(prop_oneof![Just(0u64), Just(4), 10u64..14], 8),
                                  flags in any::<[bool; 8]>(), bits in any::<[u8; 2]>(), zero in 0usize..5, one in 0usize..3) {
            let mk = |o: usize| Side {
                uuids: Uuids { current: u[o].max(4), bitmap: u[o + 1], history: [u[o + 2], u[o + 3]] },
                primary: flags[o], crashed_primary: flags[o + 1], bm_while_primary: flags[o + 2],
                bits_set: u64::from(bits[o / 4]), discard_my_data: flags[o + 3],
            };
            let (a, b) = (mk(0), mk(4));
            let zeros = [AfterSb0::Disconnect, AfterSb0::DiscardYoungerPrimary, AfterSb0::DiscardOlderPrimary,
                         AfterSb0::DiscardZeroChanges, AfterSb0::DiscardLeastChanges];
            let ones = [AfterSb1::Disconnect, AfterSb1::Consensus, AfterSb1::DiscardSecondary];
            let pol = SbPolicies { zero: zeros[zero], one: ones[one], two: AfterSb2::Disconnect };
            let da = decide(&a, &b, &pol, true);
            let db = decide(&b, &a, &pol, false);
            prop_assert_eq!(mirror(&da), db);
        }
    }
}
