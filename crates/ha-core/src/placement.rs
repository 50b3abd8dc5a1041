//! Placement (the CRM): where each group should run, and the ordered actions to get there.
//!
//! A pure function of the model, the live nodes and the shared failure history, so every node
//! that sees the same inputs computes the same answer (ties go to the lowest node id).
//!
//! Scoring, per group and node (Pacemaker's rules, simplified):
//! * not eligible (down, standby, other partition), banned by a hard failure, failcount at the
//!   migration-threshold, or -INFINITY from a constraint: cannot run there;
//! * with ping nodes configured, nodes that lost them are not eligible while another node still
//!   reaches them (heartbeat's ipfail);
//! * + location constraint scores, + [`PREFERRED_SCORE`] on the group's preferred node,
//!   + stickiness on the node where it runs;
//! * an operator's request ([`OperatorPref`]): `Avoid` makes a node ineligible for the group,
//!   `Prefer` adds +INFINITY (so it moves even with auto_failback off);
//! * auto_failback off: a group stays where it runs as long as it can run there;
//! * colocation: + score on the node where the `with` group is placed (INFINITY: only there);
//! * a fatal failure stops the group everywhere.

use crate::ids::{GroupId, NodeId, ResourceId};
use crate::message::OperatorPref;
use crate::model::{ClusterModel, Constraint, SCORE_INFINITY};
use crate::outcome::ResourceOp;
use std::collections::{BTreeMap, BTreeSet};

/// Score given to a group's preferred node (the first node of a haresources line).
pub const PREFERRED_SCORE: i64 = 100;

/// What placement knows about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    /// The node.
    pub node: NodeId,
    /// It may run groups: alive in the view, quorate partition, not in standby.
    pub eligible: bool,
    /// It reaches its ping nodes.
    pub ping_ok: bool,
}

/// What placement knows about one group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupFacts {
    /// Nodes where the group is (maybe) active now.
    pub active_on: Vec<NodeId>,
    /// Unexpired failures per node.
    pub failcount: BTreeMap<NodeId, u32>,
    /// Nodes banned by a hard failure.
    pub banned: BTreeSet<NodeId>,
    /// A fatal failure happened: stop everywhere.
    pub fatal: bool,
    /// Operators' placement requests per node (missing: none).
    pub operator: BTreeMap<NodeId, OperatorPref>,
}

/// Inputs of [`compute_targets`].
#[derive(Debug, Clone)]
pub struct PlacementInput<'a> {
    /// The model.
    pub model: &'a ClusterModel,
    /// Every node of the model (nodes missing here are not eligible).
    pub nodes: Vec<NodeFacts>,
    /// Facts per group (missing: nothing known, i.e. stopped with no failures).
    pub groups: BTreeMap<GroupId, GroupFacts>,
}

/// One step of a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedOp {
    /// Where.
    pub node: NodeId,
    /// The group.
    pub group: GroupId,
    /// The resource.
    pub resource: ResourceId,
    /// Start or stop.
    pub op: ResourceOp,
}

fn clamp_score(s: i64) -> i64 {
    s.clamp(-SCORE_INFINITY, SCORE_INFINITY)
}

/// Groups in start order: order constraints first (`first` before `then`), then colocation
/// (`with` before the dependent group), otherwise model order. Cycles fall back to model order.
pub fn group_order(model: &ClusterModel) -> Vec<GroupId> {
    let ids: Vec<GroupId> = model.groups.iter().map(|g| g.id.clone()).collect();
    let deps = |g: &GroupId| -> Vec<GroupId> {
        model
            .constraints
            .iter()
            .filter_map(|c| match c {
                Constraint::Order { first, then, .. } if then == g => Some(first.clone()),
                Constraint::Colocation { group, with, .. } if group == g => Some(with.clone()),
                _ => None,
            })
            .filter(|d| ids.contains(d))
            .collect()
    };
    let mut out: Vec<GroupId> = Vec::with_capacity(ids.len());
    while out.len() < ids.len() {
        let next = ids
            .iter()
            .find(|g| !out.contains(g) && deps(g).iter().all(|d| out.contains(d)))
            .or_else(|| ids.iter().find(|g| !out.contains(g)));
        match next {
            Some(g) => out.push(g.clone()),
            None => break,
        }
    }
    out
}

/// Where each group should run (None: nowhere).
pub fn compute_targets(input: &PlacementInput<'_>) -> BTreeMap<GroupId, Option<NodeId>> {
    let model = input.model;
    let policy = &model.policy;
    let any_ping = input.nodes.iter().any(|n| n.eligible && n.ping_ok);
    let use_ping = !model.ping_nodes.is_empty() && any_ping;
    let eligible: Vec<NodeId> = input
        .nodes
        .iter()
        .filter(|n| n.eligible && (!use_ping || n.ping_ok))
        .map(|n| n.node)
        .collect();
    let empty = GroupFacts::default();
    let mut targets: BTreeMap<GroupId, Option<NodeId>> = BTreeMap::new();
    for gid in group_order(model) {
        let Some(spec) = model.group(&gid) else {
            continue;
        };
        let facts = input.groups.get(&gid).unwrap_or(&empty);
        if facts.fatal {
            targets.insert(gid, None);
            continue;
        }
        let holder = facts.active_on.iter().min().copied();
        let mut scores: BTreeMap<NodeId, i64> = BTreeMap::new();
        for &n in &eligible {
            let pref = facts.operator.get(&n).copied().unwrap_or_default();
            if facts.banned.contains(&n) || pref == OperatorPref::Avoid {
                continue;
            }
            let fc = facts.failcount.get(&n).copied().unwrap_or(0);
            if policy.migration_threshold.is_some_and(|t| t > 0 && fc >= t) {
                continue;
            }
            let mut s: i64 = 0;
            if spec.preferred_node == Some(n) {
                s += PREFERRED_SCORE;
            }
            if holder == Some(n) {
                s += policy.stickiness;
            }
            if pref == OperatorPref::Prefer {
                // Like Pacemaker's cli-prefer constraint: overrides stickiness.
                s = s.saturating_add(SCORE_INFINITY);
            }
            let mut forbidden = false;
            for c in &model.constraints {
                match c {
                    Constraint::Location { group, node, score } if group == &gid && *node == n => {
                        if *score <= -SCORE_INFINITY {
                            forbidden = true;
                        }
                        s = s.saturating_add(*score);
                    }
                    Constraint::Colocation { group, with, score } if group == &gid => {
                        let with_at = targets.get(with).copied().flatten();
                        if *score >= SCORE_INFINITY && with_at != Some(n) {
                            forbidden = true;
                        }
                        if *score <= -SCORE_INFINITY && with_at == Some(n) {
                            forbidden = true;
                        }
                        if with_at == Some(n) {
                            s = s.saturating_add(*score);
                        }
                    }
                    _ => {}
                }
            }
            if !forbidden {
                scores.insert(n, clamp_score(s));
            }
        }
        let must_move = scores.values().any(|&s| s >= SCORE_INFINITY);
        let target = match holder {
            // auto_failback off: stay where it runs while it may run there.
            Some(h) if !policy.auto_failback && scores.contains_key(&h) && !must_move => Some(h),
            _ => scores
                .iter()
                // Highest score; BTreeMap order makes the lowest id win ties.
                .fold(None, |best: Option<(NodeId, i64)>, (&n, &s)| match best {
                    Some((_, bs)) if bs >= s => best,
                    _ => Some((n, s)),
                })
                .map(|(n, _)| n),
        };
        targets.insert(gid, target);
    }
    targets
}

/// The ordered resource operations from `current` (where each group is active) to `targets`:
/// every stop before every start; groups stop in reverse [`group_order`] and start in
/// [`group_order`]; within a group resources stop right to left and start left to right.
pub fn plan(
    model: &ClusterModel,
    current: &BTreeMap<GroupId, Vec<NodeId>>,
    targets: &BTreeMap<GroupId, Option<NodeId>>,
) -> Vec<PlannedOp> {
    let order = group_order(model);
    let mut ops = Vec::new();
    for gid in order.iter().rev() {
        let Some(spec) = model.group(gid) else {
            continue;
        };
        let target = targets.get(gid).copied().flatten();
        for &n in current.get(gid).map(Vec::as_slice).unwrap_or(&[]) {
            if Some(n) != target {
                for r in spec.resources.iter().rev() {
                    ops.push(PlannedOp {
                        node: n,
                        group: gid.clone(),
                        resource: r.clone(),
                        op: ResourceOp::Stop,
                    });
                }
            }
        }
    }
    for gid in &order {
        let Some(spec) = model.group(gid) else {
            continue;
        };
        let Some(t) = targets.get(gid).copied().flatten() else {
            continue;
        };
        if current.get(gid).is_some_and(|c| c.contains(&t)) {
            continue;
        }
        for r in &spec.resources {
            ops.push(PlannedOp {
                node: t,
                group: gid.clone(),
                resource: r.clone(),
                op: ResourceOp::Start,
            });
        }
    }
    ops
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::OrderKind;
    use crate::sim::model_builder;

    fn nodes(up: &[u16]) -> Vec<NodeFacts> {
        up.iter()
            .map(|&n| NodeFacts {
                node: NodeId(n),
                eligible: true,
                ping_ok: true,
            })
            .collect()
    }
    fn g(s: &str) -> GroupId {
        GroupId::from(s)
    }
    fn input<'a>(m: &'a ClusterModel, up: &[u16]) -> PlacementInput<'a> {
        PlacementInput {
            model: m,
            nodes: nodes(up),
            groups: BTreeMap::new(),
        }
    }
    fn running(i: &mut PlacementInput<'_>, grp: &str, on: u16) {
        i.groups.entry(g(grp)).or_default().active_on = vec![NodeId(on)];
    }

    #[test]
    fn operator_requests_override_stickiness_but_not_hard_limits() {
        let mut m = model_builder(3)
            .auto_failback(false)
            .group("nfs", &["vip"], Some(1))
            .build();
        let pref = |i: &mut PlacementInput<'_>, n: u16, p: OperatorPref| {
            i.groups
                .entry(g("nfs"))
                .or_default()
                .operator
                .insert(NodeId(n), p);
        };
        let mut i = input(&m, &[1, 2, 3]);
        running(&mut i, "nfs", 1);
        pref(&mut i, 3, OperatorPref::Prefer);
        assert_eq!(compute_targets(&i)[&g("nfs")], Some(NodeId(3)), "move");
        pref(&mut i, 2, OperatorPref::Prefer);
        assert_eq!(compute_targets(&i)[&g("nfs")], Some(NodeId(2)), "lowest id");
        pref(&mut i, 2, OperatorPref::None);
        pref(&mut i, 3, OperatorPref::None);
        pref(&mut i, 1, OperatorPref::Avoid);
        assert_eq!(compute_targets(&i)[&g("nfs")], Some(NodeId(2)), "ban");
        // A hard ban or a -INFINITY constraint beats an operator's move.
        pref(&mut i, 1, OperatorPref::None);
        pref(&mut i, 3, OperatorPref::Prefer);
        i.groups
            .get_mut(&g("nfs"))
            .unwrap()
            .banned
            .insert(NodeId(3));
        assert_eq!(compute_targets(&i)[&g("nfs")], Some(NodeId(1)));
        m.constraints.push(Constraint::Location {
            group: g("nfs"),
            node: NodeId(2),
            score: -SCORE_INFINITY,
        });
        let mut i = input(&m, &[1, 2, 3]);
        running(&mut i, "nfs", 1);
        pref(&mut i, 2, OperatorPref::Prefer);
        assert_eq!(compute_targets(&i)[&g("nfs")], Some(NodeId(1)));
    }

    #[test]
    fn one_active_node_preferred() {
        let m = model_builder(2)
            .group("nfs", &["vip", "disk", "fs", "nfsd"], Some(1))
            .build();
        let t = compute_targets(&input(&m, &[1, 2]));
        assert_eq!(t[&g("nfs")], Some(NodeId(1)));
        let t = compute_targets(&input(&m, &[2]));
        assert_eq!(t[&g("nfs")], Some(NodeId(2)));
        let t = compute_targets(&input(&m, &[]));
        assert_eq!(t[&g("nfs")], None);
        // Ordered actions: start left to right.
        let ops = plan(&m, &BTreeMap::new(), &compute_targets(&input(&m, &[1, 2])));
        let names: Vec<_> = ops.iter().map(|o| (o.resource.as_str(), o.op)).collect();
        assert_eq!(
            names,
            vec![
                ("vip", ResourceOp::Start),
                ("disk", ResourceOp::Start),
                ("fs", ResourceOp::Start),
                ("nfsd", ResourceOp::Start)
            ]
        );
        // Moving from 2 to 1: stop right to left on 2 first.
        let cur = BTreeMap::from([(g("nfs"), vec![NodeId(2)])]);
        let ops = plan(&m, &cur, &compute_targets(&input(&m, &[1, 2])));
        assert_eq!(ops.len(), 8);
        assert_eq!(
            (ops[0].node, ops[0].resource.as_str(), ops[0].op),
            (NodeId(2), "nfsd", ResourceOp::Stop)
        );
        assert_eq!(
            (ops[3].resource.as_str(), ops[3].op),
            ("vip", ResourceOp::Stop)
        );
        assert_eq!(
            (ops[4].node, ops[4].resource.as_str(), ops[4].op),
            (NodeId(1), "vip", ResourceOp::Start)
        );
    }

    #[test]
    fn two_nodes_each_active_for_own_group() {
        let m = model_builder(2)
            .group("web", &["vip1", "httpd"], Some(1))
            .group("db", &["vip2", "mysql"], Some(2))
            .build();
        let t = compute_targets(&input(&m, &[1, 2]));
        assert_eq!(
            (t[&g("web")], t[&g("db")]),
            (Some(NodeId(1)), Some(NodeId(2)))
        );
        let t = compute_targets(&input(&m, &[1]));
        assert_eq!(
            (t[&g("web")], t[&g("db")]),
            (Some(NodeId(1)), Some(NodeId(1)))
        );
    }

    #[test]
    fn auto_failback_and_stickiness() {
        let on = model_builder(2).group("nfs", &["vip"], Some(1)).build();
        let off = model_builder(2)
            .group("nfs", &["vip"], Some(1))
            .auto_failback(false)
            .build();
        let mut i = input(&on, &[1, 2]);
        running(&mut i, "nfs", 2);
        assert_eq!(
            compute_targets(&i)[&g("nfs")],
            Some(NodeId(1)),
            "failback on: back home"
        );
        let mut i = input(&off, &[1, 2]);
        running(&mut i, "nfs", 2);
        assert_eq!(
            compute_targets(&i)[&g("nfs")],
            Some(NodeId(2)),
            "failback off: stays"
        );
        // Stickiness above the preference keeps it too.
        let sticky = model_builder(2)
            .group("nfs", &["vip"], Some(1))
            .stickiness(200)
            .build();
        let mut i = input(&sticky, &[1, 2]);
        running(&mut i, "nfs", 2);
        assert_eq!(compute_targets(&i)[&g("nfs")], Some(NodeId(2)));
    }

    #[test]
    fn constraints() {
        let m = model_builder(3)
            .group("a", &["ra"], None)
            .group("b", &["rb"], None)
            .constraint(Constraint::Location {
                group: g("a"),
                node: NodeId(1),
                score: -SCORE_INFINITY,
            })
            .constraint(Constraint::Location {
                group: g("a"),
                node: NodeId(3),
                score: 50,
            })
            .constraint(Constraint::Colocation {
                group: g("b"),
                with: g("a"),
                score: SCORE_INFINITY,
            })
            .build();
        let t = compute_targets(&input(&m, &[1, 2, 3]));
        assert_eq!((t[&g("a")], t[&g("b")]), (Some(NodeId(3)), Some(NodeId(3))));
        let t = compute_targets(&input(&m, &[1]));
        assert_eq!(
            (t[&g("a")], t[&g("b")]),
            (None, None),
            "b follows a nowhere"
        );
        // Anti-colocation.
        let m = model_builder(2)
            .group("a", &["ra"], Some(1))
            .group("b", &["rb"], Some(1))
            .constraint(Constraint::Colocation {
                group: g("b"),
                with: g("a"),
                score: -SCORE_INFINITY,
            })
            .build();
        let t = compute_targets(&input(&m, &[1, 2]));
        assert_eq!((t[&g("a")], t[&g("b")]), (Some(NodeId(1)), Some(NodeId(2))));
    }

    #[test]
    fn order_constraints_order_actions() {
        let m = model_builder(2)
            .group("app", &["app1"], Some(1))
            .group("db", &["db1"], Some(1))
            .constraint(Constraint::Order {
                first: g("db"),
                then: g("app"),
                kind: OrderKind::Mandatory,
            })
            .build();
        assert_eq!(group_order(&m), vec![g("db"), g("app")]);
        let t = compute_targets(&input(&m, &[1, 2]));
        let ops = plan(&m, &BTreeMap::new(), &t);
        assert_eq!(ops[0].resource.as_str(), "db1");
        assert_eq!(ops[1].resource.as_str(), "app1");
        let cur = BTreeMap::from([(g("db"), vec![NodeId(1)]), (g("app"), vec![NodeId(1)])]);
        let ops = plan(&m, &cur, &compute_targets(&input(&m, &[2])));
        let seq: Vec<_> = ops.iter().map(|o| (o.resource.as_str(), o.op)).collect();
        assert_eq!(
            seq,
            vec![
                ("app1", ResourceOp::Stop),
                ("db1", ResourceOp::Stop),
                ("db1", ResourceOp::Start),
                ("app1", ResourceOp::Start)
            ]
        );
    }

    #[test]
    fn failcounts_bans_and_fatal() {
        let m = model_builder(2)
            .group("nfs", &["vip"], Some(1))
            .migration_threshold(Some(3))
            .build();
        let mut i = input(&m, &[1, 2]);
        running(&mut i, "nfs", 1);
        i.groups
            .get_mut(&g("nfs"))
            .unwrap()
            .failcount
            .insert(NodeId(1), 2);
        assert_eq!(
            compute_targets(&i)[&g("nfs")],
            Some(NodeId(1)),
            "below threshold: restart in place"
        );
        i.groups
            .get_mut(&g("nfs"))
            .unwrap()
            .failcount
            .insert(NodeId(1), 3);
        assert_eq!(
            compute_targets(&i)[&g("nfs")],
            Some(NodeId(2)),
            "threshold reached: move"
        );
        let mut i = input(&m, &[1, 2]);
        i.groups
            .entry(g("nfs"))
            .or_default()
            .banned
            .insert(NodeId(1));
        assert_eq!(
            compute_targets(&i)[&g("nfs")],
            Some(NodeId(2)),
            "hard failure bans the node"
        );
        i.groups
            .get_mut(&g("nfs"))
            .unwrap()
            .banned
            .insert(NodeId(2));
        assert_eq!(compute_targets(&i)[&g("nfs")], None);
        let mut i = input(&m, &[1, 2]);
        i.groups.entry(g("nfs")).or_default().fatal = true;
        assert_eq!(
            compute_targets(&i)[&g("nfs")],
            None,
            "fatal stops everywhere"
        );
    }

    #[test]
    fn ping_loss_moves_groups() {
        let m = model_builder(2)
            .group("nfs", &["vip"], Some(1))
            .ping_nodes(&["192.0.2.1"])
            .build();
        let mut i = input(&m, &[1, 2]);
        i.nodes[0].ping_ok = false;
        assert_eq!(compute_targets(&i)[&g("nfs")], Some(NodeId(2)));
        i.nodes[1].ping_ok = false;
        assert_eq!(
            compute_targets(&i)[&g("nfs")],
            Some(NodeId(1)),
            "nobody pings: ignore ping"
        );
    }
}
