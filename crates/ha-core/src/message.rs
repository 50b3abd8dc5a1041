//! Messages exchanged between nodes.
//!
//! Every field is plain (ids, integers, booleans, enums, `Vec`s) so `ha-net` can encode a
//! [`Message`] by hand in a compact binary frame. The core never depends on transport
//! reliability: a lost message is made good by the next heartbeat (every heartbeat carries the
//! sender's whole state) and requests are re-sent every keepalive until answered.
//!
//! # Protocol in one paragraph
//! Every node broadcasts a [`Heartbeat`] every keepalive on every link, and at once whenever its
//! own state changes. A heartbeat carries the sender's incarnation, a sequence number, what it
//! knows of each peer ([`PeerReport`]: liveness and the highest sequence it received from that
//! peer, which acknowledges the peer's heartbeats) and the state of every group on the sender
//! ([`GroupReport`]). A node that wants to run a group *claims* it and asks every peer with a
//! [`TakeoverRequest`]; a peer *grants* the group to at most one claimant at a time, and only to
//! the node its own placement computation also chooses; the current holder grants only after it
//! stopped the group (heartbeat's ip-request / ip-request-resp failback handshake). The grant is
//! answered by a [`TakeoverResponse`] and repeated in every heartbeat ([`GroupReport::grant`]). A
//! node starts a group once it holds grants from a majority of votes (or from every live peer
//! when quorum is not by majority), and keeps it only while those grants stay backed by fresh
//! acknowledgements (a lease).

use crate::ids::{GroupId, NodeId};
use serde::{Deserialize, Serialize};

/// Version of the message schema; `ha-net` puts it in its frame header.
pub const PROTOCOL_VERSION: u8 = 1;

/// A message between two nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Periodic (and triggered) state broadcast; also the liveness signal.
    Heartbeat(Heartbeat),
    /// "I want to run this group: grant it to me" (heartbeat's ip-request).
    TakeoverRequest(TakeoverRequest),
    /// Answer to a [`TakeoverRequest`] (heartbeat's ip-request-resp).
    TakeoverResponse(TakeoverResponse),
}

/// The periodic status message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The sender's incarnation: a fresh, larger number each time its process starts. A larger
    /// incarnation than the one known means the sender restarted and lost its resources.
    pub incarnation: u64,
    /// Sequence number of this heartbeat within the incarnation, from 1, +1 per heartbeat.
    /// Receivers ignore a heartbeat older than one already seen (reordering).
    pub seq: u64,
    /// The sender's local view number (monotonic per incarnation; for diagnostics).
    pub view: u64,
    /// The sender reaches its ping nodes (always true when none are configured).
    pub ping_ok: bool,
    /// The sender is in standby: it hands its groups over and accepts none.
    pub standby: bool,
    /// What the sender knows about each other node (every configured node except itself).
    pub peers: Vec<PeerReport>,
    /// State of every configured group on the sender, in model order.
    pub groups: Vec<GroupReport>,
}

/// The sender's knowledge of one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerReport {
    /// The peer.
    pub node: NodeId,
    /// The peer's incarnation as last heard (0: never heard).
    pub incarnation: u64,
    /// Highest heartbeat `seq` received from that incarnation (0: none). This acknowledges the
    /// peer's heartbeats; the peer derives its leases from it.
    pub last_seq: u64,
    /// The sender considers the peer alive (a member of its view).
    pub alive: bool,
}

/// Lifecycle of a group on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupState {
    /// Not running (every member stopped).
    Stopped,
    /// Members are being started left to right.
    Starting,
    /// Every member started.
    Running,
    /// Members are being stopped right to left.
    Stopping,
    /// A stop failed: the group may still be partly active and is left alone (needs fencing or
    /// an operator).
    Failed,
}

impl GroupState {
    /// Whether any member may be active on the node in this state.
    pub fn maybe_active(self) -> bool {
        !matches!(self, GroupState::Stopped)
    }
}

/// A grant: the sender lets `node` (in `incarnation`, for its claim `claim`) run a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Grant {
    /// The grantee.
    pub node: NodeId,
    /// The grantee's incarnation.
    pub incarnation: u64,
    /// The grantee's claim id (see [`GroupReport::claim`]).
    pub claim: u64,
}

/// An operator's placement request for a group on one node (Pacemaker's `crm_resource
/// --move` / `--ban`, heartbeat's `hb_takeover`). It holds until cleared and is shared in the
/// node's heartbeats, so every node places the group the same way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorPref {
    /// No request.
    #[default]
    None,
    /// Run the group on this node (+INFINITY: overrides stickiness and auto_failback off,
    /// not hard bans or -INFINITY constraints). Several nodes asking: the lowest id wins.
    Prefer,
    /// Never run the group on this node.
    Avoid,
}

/// The state of one group on the sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupReport {
    /// The group.
    pub group: GroupId,
    /// Its state on the sender.
    pub state: GroupState,
    /// The sender wants to run (or runs) the group under this claim id (unique per sender
    /// incarnation, increasing); None when it does not claim it.
    pub claim: Option<u64>,
    /// Whom the sender grants the group to, if anyone.
    pub grant: Option<Grant>,
    /// Failures of the group on the sender not yet expired (failure-timeout).
    pub failcount: u32,
    /// A hard failure banned the group from the sender.
    pub banned: bool,
    /// A fatal failure (configuration error) stopped the group everywhere.
    pub fatal: bool,
    /// The operator's placement request for the group on the sender.
    #[serde(default)]
    pub operator: OperatorPref,
}

/// Request a group (sent by a claimant to every peer, re-sent every keepalive until granted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakeoverRequest {
    /// The group.
    pub group: GroupId,
    /// The requester's incarnation.
    pub incarnation: u64,
    /// The requester's claim id.
    pub claim: u64,
}

/// Answer to a [`TakeoverRequest`]; also sent unsolicited when a grant is issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakeoverResponse {
    /// The group.
    pub group: GroupId,
    /// The responder's incarnation.
    pub incarnation: u64,
    /// The claim id answered.
    pub claim: u64,
    /// True: granted (the responder released the group, if it held it). False: not (yet).
    pub granted: bool,
    /// The responder's first heartbeat `seq` that carries the grant. A receiver that already saw
    /// a heartbeat from the responder with this or a later `seq` trusts the heartbeat instead.
    pub grant_seq: u64,
}

impl Message {
    /// Short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Heartbeat(_) => "heartbeat",
            Message::TakeoverRequest(_) => "takeover-request",
            Message::TakeoverResponse(_) => "takeover-response",
        }
    }
}
