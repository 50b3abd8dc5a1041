//! The validated cluster model: what the configuration produces and what every state machine
//! consumes. Every node must hold an identical model; placement is a pure function of it, the
//! membership view and the shared failure history, so all nodes compute the same answer.

use crate::ids::{GroupId, NodeId, ResourceId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Pacemaker's INFINITY for scores.
pub const SCORE_INFINITY: i64 = 1_000_000;

/// A whole cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterModel {
    /// Cluster name; its hash is the cluster id on the wire, so two clusters on one LAN stay apart.
    pub name: String,
    /// Members, ordered by id.
    pub nodes: Vec<NodeSpec>,
    /// Heartbeat media (redundant links). Their transport details are `ha-net`'s business.
    pub links: Vec<LinkSpec>,
    /// Liveness timing.
    pub timing: Timing,
    /// Quorum, failback and failure policy.
    pub policy: Policy,
    /// Ping nodes used as a tie-breaker in two-node mode (heartbeat's `ping` + ipfail).
    pub ping_nodes: Vec<String>,
    /// Every resource, by id.
    pub resources: BTreeMap<ResourceId, ResourceSpec>,
    /// Groups, in configuration order.
    pub groups: Vec<GroupSpec>,
    /// Placement constraints.
    pub constraints: Vec<Constraint>,
    /// Authentication keys (heartbeat's authkeys): the key id in use and all known keys.
    pub auth: AuthSpec,
}

/// One cluster member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Numeric id used on the wire.
    pub id: NodeId,
    /// Node name (heartbeat requires `uname -n`).
    pub name: String,
    /// Quorum votes, normally 1.
    pub votes: u32,
}

/// A heartbeat medium as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkSpec {
    /// Name, for logs.
    pub name: String,
    /// Kind of medium and its parameters.
    pub medium: Medium,
}

/// The heartbeat media heartbeat's ha.cf knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Medium {
    /// UDP unicast to each peer address.
    Ucast {
        /// Interface to bind to (may be empty for any).
        interface: String,
        /// Peer socket addresses (`IP:PORT`).
        peers: Vec<String>,
        /// Local port.
        port: u16,
    },
    /// UDP multicast.
    Mcast {
        /// Interface.
        interface: String,
        /// Group address.
        group: String,
        /// Port.
        port: u16,
        /// Multicast TTL.
        ttl: u32,
        /// Loop back to the sender.
        r#loop: bool,
    },
    /// UDP broadcast.
    Bcast {
        /// Interface.
        interface: String,
        /// Port.
        port: u16,
    },
    /// A serial line (or any byte stream).
    Serial {
        /// Device path.
        device: String,
        /// Baud rate.
        baud: u32,
    },
}

/// Which failure detector to use.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DetectorKind {
    /// heartbeat's fixed deadtime.
    #[default]
    Fixed,
    /// Phi accrual: declare dead when phi exceeds `threshold` (deadtime stays the upper bound).
    PhiAccrual {
        /// Suspicion threshold, typically 8 to 12.
        threshold: f64,
    },
}

/// Liveness timing (heartbeat's ha.cf names).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Interval between heartbeats.
    pub keepalive: Duration,
    /// A heartbeat later than this is logged as late.
    pub warntime: Duration,
    /// A peer unheard for this long is dead. Must exceed 2 x keepalive.
    pub deadtime: Duration,
    /// Deadtime used right after boot, before a peer was ever heard.
    pub initdead: Duration,
    /// The failure detector.
    pub detector: DetectorKind,
}

impl Default for Timing {
    fn default() -> Self {
        // heartbeat's documented defaults: keepalive 2 s, deadtime 30 s, warntime deadtime/2,
        // initdead 2 x deadtime.
        Timing {
            keepalive: Duration::from_secs(2),
            warntime: Duration::from_secs(15),
            deadtime: Duration::from_secs(30),
            initdead: Duration::from_secs(60),
            detector: DetectorKind::Fixed,
        }
    }
}

/// What the nodes of a partition without quorum do (Pacemaker's no-quorum-policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NoQuorumPolicy {
    /// Stop every resource (Pacemaker's default).
    #[default]
    Stop,
    /// Keep what runs, start nothing new.
    Freeze,
    /// Act as if quorate.
    Ignore,
}

/// How quorum is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum QuorumMode {
    /// Strict majority of configured votes.
    #[default]
    Majority,
    /// Two-node clusters: a lone node is quorate when it reaches the ping nodes and its peer is
    /// dead or cannot (heartbeat's ipfail; corosync's two_node).
    TwoNode,
    /// No quorum at all (heartbeat's classic behaviour).
    None,
}

/// Cluster-wide policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Quorum computation.
    pub quorum: QuorumMode,
    /// What to do without quorum.
    pub no_quorum_policy: NoQuorumPolicy,
    /// heartbeat's auto_failback: move groups back to their preferred node when it returns.
    pub auto_failback: bool,
    /// Pacemaker's resource-stickiness (score for staying where a group runs).
    pub stickiness: i64,
    /// Failures on a node before a group is moved away (None: INFINITY, never).
    pub migration_threshold: Option<u32>,
    /// Failures older than this are forgotten (None: never).
    pub failure_timeout: Option<Duration>,
    /// Fencing is configured: a lost node's groups move only after it is fenced.
    pub fencing: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            quorum: QuorumMode::Majority,
            no_quorum_policy: NoQuorumPolicy::Stop,
            auto_failback: true,
            stickiness: 0,
            migration_threshold: None,
            failure_timeout: None,
            fencing: false,
        }
    }
}

/// The kind of agent that drives a resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "class", rename_all = "snake_case")]
pub enum AgentSpec {
    /// heartbeat `resource.d` script called as `script [args...] start|stop|status`.
    Heartbeat {
        /// Script name (looked up in the resource.d directories).
        script: String,
        /// Arguments from `name::arg1::arg2`.
        args: Vec<String>,
    },
    /// LSB init script in /etc/init.d (start, stop, status).
    Lsb {
        /// Script name.
        script: String,
    },
    /// OCF agent `ocf:PROVIDER:TYPE`; parameters go in as OCF_RESKEY_*.
    Ocf {
        /// Provider, e.g. `heartbeat`.
        provider: String,
        /// Agent type, e.g. `Dummy`.
        r#type: String,
    },
    /// A resource implemented in Rust by the embedding program or another crate of the toolkit
    /// (`ha-net`'s FloatingIp, `ha-blockrep`'s drbddisk, `ha-lvs`'s director); `kind` names it.
    Builtin {
        /// Registered kind, e.g. `IPaddr`, `drbddisk`.
        kind: String,
    },
}

/// One resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceSpec {
    /// Unique id.
    pub id: ResourceId,
    /// Agent.
    pub agent: AgentSpec,
    /// Named parameters (OCF_RESKEY_name for OCF agents).
    pub params: BTreeMap<String, String>,
    /// Start timeout.
    pub start_timeout: Duration,
    /// Stop timeout.
    pub stop_timeout: Duration,
    /// Interval of the periodic monitor; None disables it.
    pub monitor_interval: Option<Duration>,
    /// Monitor timeout.
    pub monitor_timeout: Duration,
}

/// A group of resources that run together on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSpec {
    /// Unique id.
    pub id: GroupId,
    /// Members in start order.
    pub resources: Vec<ResourceId>,
    /// The node named first on the haresources line (location score INFINITY-ish preference).
    pub preferred_node: Option<NodeId>,
}

/// How strict an order constraint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderKind {
    /// `then` starts only after `first` runs; stopping goes the other way.
    Mandatory,
    /// Ordered only when both change in the same transition.
    Optional,
    /// Never start or stop both at once.
    Serialize,
}

/// Placement constraints between groups and nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Constraint {
    /// Preference (positive) or aversion (negative) of a group for a node.
    Location {
        /// The group.
        group: GroupId,
        /// The node.
        node: NodeId,
        /// Score; +/- SCORE_INFINITY is mandatory.
        score: i64,
    },
    /// `group` wants (positive) or avoids (negative) the node where `with` runs.
    Colocation {
        /// The dependent group.
        group: GroupId,
        /// The group it follows.
        with: GroupId,
        /// Score; SCORE_INFINITY means it can only run there.
        score: i64,
    },
    /// `then` starts after `first`.
    Order {
        /// The group to start first.
        first: GroupId,
        /// The group to start after it.
        then: GroupId,
        /// Strictness.
        kind: OrderKind,
    },
}

/// Digest used by an authentication key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthAlgorithm {
    /// HMAC-SHA256 (the toolkit's default).
    HmacSha256,
    /// HMAC-SHA1 (heartbeat's `sha1`).
    HmacSha1,
    /// HMAC-MD5 (heartbeat's `md5`).
    HmacMd5,
    /// CRC only: no authentication at all (heartbeat's `crc`); warned about loudly.
    Crc,
}

/// One key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthKey {
    /// Key id carried in every frame (authkeys' N).
    pub id: u8,
    /// Digest.
    pub algorithm: AuthAlgorithm,
    /// Secret bytes.
    pub secret: Vec<u8>,
}

/// Authentication settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AuthSpec {
    /// Key id used to sign outgoing frames; None with `insecure_no_auth` only.
    pub active: Option<u8>,
    /// Keys accepted on receive (rotation keeps old and new).
    pub keys: Vec<AuthKey>,
    /// Explicit opt-in to run without authentication.
    pub insecure_no_auth: bool,
}

impl ClusterModel {
    /// The node spec for `id`.
    pub fn node(&self, id: NodeId) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The node with `name`.
    pub fn node_by_name(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The group with `id`.
    pub fn group(&self, id: &GroupId) -> Option<&GroupSpec> {
        self.groups.iter().find(|g| &g.id == id)
    }

    /// Sum of all votes.
    pub fn total_votes(&self) -> u32 {
        self.nodes.iter().map(|n| n.votes).sum()
    }
}
