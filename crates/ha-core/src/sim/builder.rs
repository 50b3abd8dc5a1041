//! Build [`ClusterModel`]s in code, for tests, the simulator and the demo.

use crate::ids::{GroupId, NodeId, ResourceId};
use crate::model::{
    AgentSpec, AuthSpec, ClusterModel, Constraint, DetectorKind, GroupSpec, LinkSpec, Medium,
    NoQuorumPolicy, NodeSpec, Policy, QuorumMode, ResourceSpec, Timing,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// A builder for small cluster models. Defaults: nodes `n1..nN` with ids 1..N and one vote
/// each, two links, keepalive 100 ms, warntime 300 ms, deadtime 500 ms, initdead 1 s, majority
/// quorum, no-quorum-policy stop, auto_failback on; resources are `Builtin { kind: "sim" }` with
/// start timeout 50 ms and stop timeout 20 ms.
#[derive(Debug, Clone)]
pub struct ModelBuilder {
    model: ClusterModel,
    monitor: Option<Duration>,
}

/// A builder for an `n`-node model (see [`ModelBuilder`]).
pub fn model_builder(n: u16) -> ModelBuilder {
    let nodes = (1..=n)
        .map(|i| NodeSpec {
            id: NodeId(i),
            name: format!("n{i}"),
            votes: 1,
        })
        .collect();
    let links = (0..2)
        .map(|i| LinkSpec {
            name: format!("link{i}"),
            medium: Medium::Bcast {
                interface: format!("eth{i}"),
                port: 694,
            },
        })
        .collect();
    ModelBuilder {
        model: ClusterModel {
            name: "sim".into(),
            nodes,
            links,
            timing: Timing {
                keepalive: Duration::from_millis(100),
                warntime: Duration::from_millis(300),
                deadtime: Duration::from_millis(500),
                initdead: Duration::from_millis(1000),
                detector: DetectorKind::Fixed,
            },
            policy: Policy::default(),
            ping_nodes: vec![],
            resources: BTreeMap::new(),
            groups: vec![],
            constraints: vec![],
            auth: AuthSpec {
                active: None,
                keys: vec![],
                insecure_no_auth: true,
            },
        },
        monitor: None,
    }
}

/// The classic two-node model: [`QuorumMode::TwoNode`] without fencing, one group `nfs`
/// (vip, disk, fs, nfsd) preferring node 1, auto_failback on.
pub fn two_node_model() -> ClusterModel {
    model_builder(2)
        .quorum(QuorumMode::TwoNode)
        .group("nfs", &["vip", "disk", "fs", "nfsd"], Some(1))
        .build()
}

impl ModelBuilder {
    /// Rename the nodes (in id order).
    pub fn names(mut self, names: &[&str]) -> Self {
        for (n, name) in self.model.nodes.iter_mut().zip(names) {
            n.name = (*name).to_owned();
        }
        self
    }

    /// Number of links.
    pub fn links(mut self, n: usize) -> Self {
        self.model.links = (0..n)
            .map(|i| LinkSpec {
                name: format!("link{i}"),
                medium: Medium::Bcast {
                    interface: format!("eth{i}"),
                    port: 694,
                },
            })
            .collect();
        self
    }

    /// Liveness timing.
    pub fn timing(mut self, t: Timing) -> Self {
        self.model.timing = t;
        self
    }

    /// Failure detector.
    pub fn detector(mut self, d: DetectorKind) -> Self {
        self.model.timing.detector = d;
        self
    }

    /// Quorum mode.
    pub fn quorum(mut self, q: QuorumMode) -> Self {
        self.model.policy.quorum = q;
        self
    }

    /// No-quorum policy.
    pub fn no_quorum_policy(mut self, p: NoQuorumPolicy) -> Self {
        self.model.policy.no_quorum_policy = p;
        self
    }

    /// auto_failback.
    pub fn auto_failback(mut self, on: bool) -> Self {
        self.model.policy.auto_failback = on;
        self
    }

    /// resource-stickiness.
    pub fn stickiness(mut self, s: i64) -> Self {
        self.model.policy.stickiness = s;
        self
    }

    /// migration-threshold.
    pub fn migration_threshold(mut self, t: Option<u32>) -> Self {
        self.model.policy.migration_threshold = t;
        self
    }

    /// failure-timeout.
    pub fn failure_timeout(mut self, t: Option<Duration>) -> Self {
        self.model.policy.failure_timeout = t;
        self
    }

    /// Fencing.
    pub fn fencing(mut self, on: bool) -> Self {
        self.model.policy.fencing = on;
        self
    }

    /// Ping nodes.
    pub fn ping_nodes(mut self, p: &[&str]) -> Self {
        self.model.ping_nodes = p.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Monitor interval of resources added afterwards.
    pub fn monitor(mut self, every: Option<Duration>) -> Self {
        self.monitor = every;
        self
    }

    /// Add a group of new resources named `resources`, preferring node `preferred`.
    pub fn group(mut self, id: &str, resources: &[&str], preferred: Option<u16>) -> Self {
        for r in resources {
            let rid = ResourceId::from(*r);
            self.model.resources.insert(
                rid.clone(),
                ResourceSpec {
                    id: rid,
                    agent: AgentSpec::Builtin { kind: "sim".into() },
                    params: BTreeMap::new(),
                    start_timeout: Duration::from_millis(50),
                    stop_timeout: Duration::from_millis(20),
                    monitor_interval: self.monitor,
                    monitor_timeout: Duration::from_millis(50),
                },
            );
        }
        self.model.groups.push(GroupSpec {
            id: GroupId::from(id),
            resources: resources.iter().map(|r| ResourceId::from(*r)).collect(),
            preferred_node: preferred.map(NodeId),
        });
        self
    }

    /// Add a constraint.
    pub fn constraint(mut self, c: Constraint) -> Self {
        self.model.constraints.push(c);
        self
    }

    /// The model.
    pub fn build(self) -> ClusterModel {
        self.model
    }
}
