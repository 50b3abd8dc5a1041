//! Inputs and outputs of [`super::Node`].

use crate::ids::{GroupId, LinkId, NodeId, ResourceId};
use crate::liveness::PeerState;
use crate::message::{GroupState, Message, OperatorPref};
use crate::outcome::{OcfCode, ResourceOp};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Identifies one resource operation asked for by a node; echoed in
/// [`super::Node::handle_action_done`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ActionId(pub u64);

impl std::fmt::Display for ActionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a{}", self.0)
    }
}

/// A resource operation for the driver to run. The driver enforces `timeout` and reports
/// [`OcfCode::Timeout`] when it is exceeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceAction {
    /// Echo this in `handle_action_done`.
    pub id: ActionId,
    /// The group.
    pub group: GroupId,
    /// The resource.
    pub resource: ResourceId,
    /// What to do.
    pub op: ResourceOp,
    /// How long the operation may take.
    pub timeout: Duration,
}

/// Something the driver must do or may report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Output {
    /// Send a message.
    Send {
        /// The recipient; None: every peer.
        to: Option<NodeId>,
        /// The link; None: every link.
        link: Option<LinkId>,
        /// The message.
        msg: Message,
    },
    /// Run a resource operation and report it with `handle_action_done`.
    Action(ResourceAction),
    /// Fence (power off / reset) a node and report with `handle_fence_done`.
    Fence {
        /// The node to fence.
        node: NodeId,
    },
    /// Something happened (also logged with `tracing`).
    Event(Event),
}

/// What happened, for logs, monitoring and tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// A peer became alive.
    PeerUp {
        /// The peer.
        node: NodeId,
    },
    /// A peer was declared dead.
    PeerDown {
        /// The peer.
        node: NodeId,
    },
    /// A peer restarted (new incarnation): its old resources are gone.
    PeerRestarted {
        /// The peer.
        node: NodeId,
        /// Previous incarnation.
        old: u64,
        /// New incarnation.
        new: u64,
    },
    /// A link to a peer came up.
    LinkUp {
        /// The peer.
        node: NodeId,
        /// The link.
        link: LinkId,
    },
    /// A link to a peer went down.
    LinkDown {
        /// The peer.
        node: NodeId,
        /// The link.
        link: LinkId,
    },
    /// A heartbeat arrived later than warntime.
    LateHeartbeat {
        /// The peer.
        peer: NodeId,
        /// The link.
        link: LinkId,
        /// Time since the previous heartbeat on that link.
        delay: Duration,
    },
    /// The local node was not scheduled for `delay` (late timer or clock jump); peer silence
    /// during that time is not held against the peers.
    StallDetected {
        /// How late the node ran.
        delay: Duration,
    },
    /// The membership view changed.
    ViewChanged {
        /// New view number.
        view: u64,
        /// Members.
        members: Vec<NodeId>,
    },
    /// Quorum was gained or lost.
    QuorumChanged {
        /// Quorate now.
        quorate: bool,
        /// Votes present.
        votes: u32,
        /// Votes configured.
        total: u32,
    },
    /// Ping-node reachability changed.
    PingChanged {
        /// Reachable now.
        reachable: bool,
    },
    /// This node claims a group and asks its peers for it (TakeoverRequest).
    GroupClaimed {
        /// The group.
        group: GroupId,
    },
    /// This node granted a group to `to` (itself or a peer).
    GroupGranted {
        /// The group.
        group: GroupId,
        /// The grantee.
        to: NodeId,
    },
    /// A peer asked for a group this node holds or votes on (TakeoverRequest).
    TakeoverRequested {
        /// The group.
        group: GroupId,
        /// The requester.
        from: NodeId,
    },
    /// A peer granted our claim on a group (TakeoverResponse).
    TakeoverGranted {
        /// The group.
        group: GroupId,
        /// The peer.
        by: NodeId,
    },
    /// Starting a group (members left to right).
    GroupStarting {
        /// The group.
        group: GroupId,
    },
    /// A group runs here.
    GroupRunning {
        /// The group.
        group: GroupId,
    },
    /// Stopping a group (members right to left).
    GroupStopping {
        /// The group.
        group: GroupId,
        /// Why.
        reason: StopReason,
    },
    /// A group is stopped here.
    GroupStopped {
        /// The group.
        group: GroupId,
    },
    /// A resource operation failed.
    GroupFailed {
        /// The group.
        group: GroupId,
        /// The failed resource.
        resource: ResourceId,
        /// The operation.
        op: ResourceOp,
        /// Its outcome.
        code: OcfCode,
    },
    /// A group lost on a dead node is being started here.
    Failover {
        /// The group.
        group: GroupId,
        /// The node it ran on.
        from: NodeId,
        /// This node.
        to: NodeId,
    },
    /// Asked the driver to fence a node.
    FenceRequested {
        /// The node.
        node: NodeId,
    },
    /// Fencing finished.
    Fenced {
        /// The node.
        node: NodeId,
        /// It succeeded.
        ok: bool,
    },
    /// Standby finished: every group of this node is stopped and handed over.
    StandbyDone,
}

/// Why a group is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Placement moves it to another node (failback, takeover, constraints).
    Moved,
    /// Quorum (or the lease backing it) was lost.
    NoQuorum,
    /// A failure: restart in place.
    Restart,
    /// A failure: migration-threshold reached, ban, or fatal.
    Failure,
    /// A failed start is rolled back.
    Rollback,
    /// Standby was requested.
    Standby,
}

/// Liveness of one link of one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStatus {
    /// The link.
    pub link: LinkId,
    /// Up.
    pub up: bool,
}

/// One peer in [`NodeStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The peer.
    pub node: NodeId,
    /// Its name.
    pub name: String,
    /// Liveness.
    pub state: PeerState,
    /// Its incarnation (0: never heard).
    pub incarnation: u64,
    /// Per link.
    pub links: Vec<LinkStatus>,
    /// Reaches its ping nodes.
    pub ping_ok: bool,
    /// In standby.
    pub standby: bool,
}

/// One group in [`NodeStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    /// The group.
    pub group: GroupId,
    /// State on this node.
    pub state: GroupState,
    /// Where it is active as far as this node knows.
    pub location: Option<NodeId>,
    /// Where placement wants it.
    pub target: Option<NodeId>,
    /// Unexpired failures on this node.
    pub failcount: u32,
    /// The operator's placement request for the group on this node.
    #[serde(default)]
    pub operator: OperatorPref,
}

/// A serializable snapshot of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// This node.
    pub node: NodeId,
    /// Its incarnation.
    pub incarnation: u64,
    /// View number.
    pub view: u64,
    /// Live members.
    pub members: Vec<NodeId>,
    /// Quorate.
    pub quorate: bool,
    /// Votes present / configured.
    pub votes: (u32, u32),
    /// Reaches ping nodes.
    pub ping_ok: bool,
    /// In standby.
    pub standby: bool,
    /// Peers.
    pub peers: Vec<PeerStatus>,
    /// Groups.
    pub groups: Vec<GroupStatus>,
}
