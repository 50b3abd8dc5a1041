//! The node state machine (sans-IO, in the style of quinn-proto and raft-rs).
//!
//! The driver feeds in time, messages, action outcomes, ping reachability and fencing results;
//! it drains [`Output`]s with [`Node::poll_output`] and calls [`Node::handle_timeout`] at
//! [`Node::poll_timeout`]. Nothing here reads a clock or does I/O.
//!
//! Safety rests on grants (see [`crate::message`]): each node grants a group to at most one node
//! at a time and only to the node its own placement picks; a node starts a group only with
//! grants from a majority of votes (majority quorum) or from every live peer (two-node / no
//! quorum, where fencing provides safety), and a holder stops its groups when the leases behind
//! its grants run out. A lease from peer K lasts from the send time of the latest heartbeat K
//! acknowledged for [`crate::model::Timing::detection_floor`] minus a guard covering the stop
//! time: K cannot declare the holder dead (and hand its grant to someone else) before that.

mod grants;
mod run;
mod types;

pub use types::*;

use crate::error::{Error, Result};
use crate::ids::{GroupId, LinkId, NodeId};
use crate::liveness::{HeartbeatVerdict, Liveness, LivenessEvent, PeerState};
use crate::membership::View;
use crate::message::{
    Grant, GroupReport, GroupState, Heartbeat, Message, OperatorPref, PeerReport, TakeoverRequest,
    TakeoverResponse,
};
use crate::model::{ClusterModel, Constraint, NoQuorumPolicy, OrderKind, QuorumMode};
use crate::outcome::{OcfCode, ResourceOp, Severity};
use crate::placement::{self, GroupFacts, NodeFacts, PlacementInput};
use crate::quorum::{self, Quorum};
use crate::time::Timestamp;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// A peer's latest reported state.
#[derive(Debug, Clone)]
struct PeerInfo {
    incarnation: u64,
    /// Seq of the latest heartbeat whose content was applied.
    hb_seq: u64,
    ping_ok: bool,
    standby: bool,
    reports: Vec<GroupReport>,
    /// Until when this peer cannot declare us dead (lease).
    lease_until: Option<Timestamp>,
    /// Highest of our heartbeat seqs its latest heartbeat acknowledges.
    acked_me: u64,
    /// Fenced since it was last seen alive: none of its resources can be active.
    clean: bool,
    fence_pending: bool,
    fence_retry_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy)]
struct GrantRec {
    grant: Grant,
    /// Our first heartbeat seq carrying it.
    seq: u64,
}

/// One group on this node.
#[derive(Debug, Clone)]
struct LocalGroup {
    id: GroupId,
    state: GroupState,
    /// Index of the member being started/stopped, or the next one.
    step: usize,
    pending: Option<(ActionId, ResourceOp)>,
    claim: Option<u64>,
    claim_sent_at: Option<Timestamp>,
    grant: Option<GrantRec>,
    /// Grants announced by TakeoverResponse: peer -> grant_seq.
    responses: BTreeMap<NodeId, u64>,
    failures: Vec<Timestamp>,
    banned: bool,
    fatal: bool,
    /// The operator's placement request here (kept until cleared or the process restarts).
    operator: OperatorPref,
    /// After the current stop, start again (restart in place).
    restart: bool,
    retry_at: Option<Timestamp>,
    monitor_due: Vec<Option<Timestamp>>,
    /// The last node other than us seen holding it.
    last_holder: Option<NodeId>,
    /// The latest TakeoverRequest received (node, claim).
    last_request: Option<(NodeId, u64)>,
    /// Peers whose TakeoverResponse granted our current claim was reported.
    granted_by: Vec<NodeId>,
}

/// Why a step of [`Node::drive_group`] is needed.
enum Want {
    Nothing,
    Stop(StopReason),
    Start,
}

/// One cluster node's state machine.
#[derive(Debug)]
pub struct Node {
    model: Arc<ClusterModel>,
    me: NodeId,
    incarnation: u64,
    boot: Timestamp,
    now: Timestamp,
    liveness: Liveness,
    view: View,
    quorum: Quorum,
    ping_ok: bool,
    standby: bool,
    standby_reported: bool,
    seq: u64,
    sent: VecDeque<(u64, Timestamp)>,
    next_hb: Timestamp,
    hb_needed: bool,
    peers: BTreeMap<NodeId, PeerInfo>,
    groups: Vec<LocalGroup>,
    order: Vec<usize>,
    actions: BTreeMap<ActionId, (usize, usize, ResourceOp)>,
    next_action: u64,
    next_claim: u64,
    targets: Vec<Option<NodeId>>,
    dirty: bool,
    outputs: VecDeque<Output>,
    expected_wakeup: Option<Timestamp>,
    lease_len: Duration,
}

impl Node {
    /// A node `me` of `model`, started at `now` as `incarnation` (must grow across restarts,
    /// e.g. a boot counter or the wall-clock time at start).
    pub fn new(
        model: Arc<ClusterModel>,
        me: NodeId,
        incarnation: u64,
        now: Timestamp,
    ) -> Result<Node> {
        if model.node(me).is_none() {
            return Err(Error::Invalid(format!(
                "node {me} is not in the cluster model"
            )));
        }
        if incarnation == 0 {
            return Err(Error::Invalid("incarnation must be at least 1".into()));
        }
        for g in &model.groups {
            for r in &g.resources {
                if !model.resources.contains_key(r) {
                    return Err(Error::Invalid(format!(
                        "group {} names unknown resource {r}",
                        g.id
                    )));
                }
            }
        }
        let peer_ids: Vec<NodeId> = model
            .nodes
            .iter()
            .map(|n| n.id)
            .filter(|&n| n != me)
            .collect();
        let liveness = Liveness::new(model.timing, peer_ids.clone(), model.links.len(), now)?;
        let timing = model.timing;
        let floor = timing.detection_floor();
        // The guard covers the time a holder needs to stop after its lease runs out.
        let stop_budget = model
            .groups
            .iter()
            .map(|g| {
                g.resources
                    .iter()
                    .filter_map(|r| model.resources.get(r))
                    .map(|r| r.stop_timeout)
                    .sum::<Duration>()
            })
            .max()
            .unwrap_or_default();
        let guard = (stop_budget + timing.keepalive / 4).min(floor / 3);
        let empty_reports: Vec<GroupReport> = model
            .groups
            .iter()
            .map(|g| GroupReport {
                group: g.id.clone(),
                state: GroupState::Stopped,
                claim: None,
                grant: None,
                failcount: 0,
                banned: false,
                fatal: false,
                operator: OperatorPref::None,
            })
            .collect();
        let peers = peer_ids
            .iter()
            .map(|&p| {
                (
                    p,
                    PeerInfo {
                        incarnation: 0,
                        hb_seq: 0,
                        ping_ok: true,
                        standby: false,
                        reports: empty_reports.clone(),
                        lease_until: None,
                        acked_me: 0,
                        clean: false,
                        fence_pending: false,
                        fence_retry_at: None,
                    },
                )
            })
            .collect();
        let groups = model
            .groups
            .iter()
            .map(|g| LocalGroup {
                id: g.id.clone(),
                state: GroupState::Stopped,
                step: 0,
                pending: None,
                claim: None,
                claim_sent_at: None,
                grant: None,
                responses: BTreeMap::new(),
                failures: Vec::new(),
                banned: false,
                fatal: false,
                operator: OperatorPref::None,
                restart: false,
                retry_at: None,
                monitor_due: vec![None; g.resources.len()],
                last_holder: None,
                last_request: None,
                granted_by: Vec::new(),
            })
            .collect();
        let order = placement::group_order(&model)
            .iter()
            .filter_map(|id| model.groups.iter().position(|g| &g.id == id))
            .collect();
        let quorum = quorum::compute(&model, &[me], true);
        let ngroups = model.groups.len();
        let mut node = Node {
            me,
            incarnation,
            boot: now,
            now,
            liveness,
            view: View::initial(me),
            quorum,
            ping_ok: true,
            standby: false,
            standby_reported: false,
            seq: 0,
            sent: VecDeque::new(),
            next_hb: now,
            hb_needed: true,
            peers,
            groups,
            order,
            actions: BTreeMap::new(),
            next_action: 1,
            next_claim: 1,
            targets: vec![None; ngroups],
            dirty: true,
            outputs: VecDeque::new(),
            expected_wakeup: None,
            lease_len: floor.saturating_sub(guard),
            model,
        };
        info!(node = %me, incarnation, "node started");
        node.step(now);
        Ok(node)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.me
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The model.
    pub fn model(&self) -> &Arc<ClusterModel> {
        &self.model
    }

    /// Next output for the driver.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When to call [`Node::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.expected_wakeup
    }

    /// Timers expired (call at or after [`Node::poll_timeout`]).
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.enter(now);
        self.step(now);
    }

    /// A message from `from` arrived on `link`.
    pub fn handle_message(&mut self, now: Timestamp, from: NodeId, link: LinkId, msg: Message) {
        self.enter(now);
        let now = self.now;
        if from == self.me || !self.peers.contains_key(&from) {
            debug!(node = %self.me, %from, "message from unknown node ignored");
            return;
        }
        match msg {
            Message::Heartbeat(hb) => {
                if !self.on_heartbeat(now, from, link, hb) {
                    // A redundant copy (other link) that changed nothing: no need to re-evaluate.
                    return;
                }
            }
            Message::TakeoverRequest(req) => self.on_takeover_request(from, req),
            Message::TakeoverResponse(resp) => self.on_takeover_response(from, resp),
        }
        self.step(now);
    }

    /// The transport learned that `from`'s host has nothing listening for our heartbeats on
    /// `link` (ICMP port unreachable): its process is gone. The link is then declared down as
    /// soon as its next heartbeat is overdue (see [`crate::liveness`]) instead
    /// of after deadtime; a heartbeat on the link cancels the report, and after
    /// [`crate::liveness::MAX_REFUTED`] cancelled reports the link's reports are ignored until
    /// it goes down.
    ///
    /// Ignored under majority quorum: there a holder's leases assume no peer declares it dead
    /// before the detection floor, and an early declaration could hand its group on while it
    /// still runs.
    pub fn handle_unreachable(&mut self, now: Timestamp, from: NodeId, link: LinkId) {
        self.enter(now);
        let now = self.now;
        if self.majority_grants() {
            debug!(node = %self.me, peer = %from, %link, "port unreachable ignored: majority quorum relies on leases");
            return;
        }
        if self.liveness.on_unreachable(from, link) {
            info!(node = %self.me, peer = %from, %link, "peer's port unreachable: its process is gone; link down unless its next heartbeat arrives on time");
        } else if self.liveness.unreachable_refuted(from, link) {
            debug!(node = %self.me, peer = %from, %link, "port unreachable ignored: the peer kept sending after earlier reports (wrong peer address or forged ICMP?)");
        }
        self.step(now);
    }

    /// The transport saw incarnation `incarnation` of `peer` exit: the connection its daemon
    /// held open to us was closed by its host (FIN or RST on an authenticated connection, see
    /// `ha_net::exit_watch`). The peer is declared dead at once, as after deadtime: its
    /// resources are not assumed stopped (a killed daemon leaves its addresses up), so with
    /// fencing it is fenced first. Ignored for another incarnation (the report came late) and
    /// under majority quorum, whose leases assume nobody is declared dead before the detection
    /// floor.
    pub fn handle_peer_exit(&mut self, now: Timestamp, peer: NodeId, incarnation: u64) {
        self.enter(now);
        let now = self.now;
        if self.majority_grants() {
            debug!(node = %self.me, %peer, "peer exit ignored: majority quorum relies on leases");
            return;
        }
        let current = self
            .liveness
            .peer(peer)
            .is_some_and(|p| p.incarnation == incarnation && p.state == PeerState::Up);
        if !current {
            debug!(node = %self.me, %peer, incarnation, "exit of a peer instance that is not the live one ignored");
            return;
        }
        info!(node = %self.me, %peer, incarnation, "peer's daemon exited: declaring it dead now");
        let mut ev = Vec::new();
        // Its PeerDown marks the placement dirty.
        self.liveness.mark_exited(peer, incarnation, &mut ev);
        self.apply_liveness_events(ev);
        self.step(now);
    }

    /// A resource operation finished.
    pub fn handle_action_done(&mut self, now: Timestamp, action: ActionId, outcome: OcfCode) {
        self.enter(now);
        let now = self.now;
        if let Some((gi, ri, op)) = self.actions.remove(&action)
            && self.groups[gi].pending.map(|p| p.0) == Some(action)
        {
            self.groups[gi].pending = None;
            self.on_action_done(now, gi, ri, op, outcome);
        }
        self.step(now);
    }

    /// Ping-node reachability (heartbeat's ping / ipfail) changed or was re-measured.
    pub fn handle_ping(&mut self, now: Timestamp, reachable: bool) {
        self.enter(now);
        if reachable != self.ping_ok {
            self.ping_ok = reachable;
            info!(node = %self.me, reachable, "ping nodes reachability changed");
            self.event(Event::PingChanged { reachable });
            self.dirty = true;
            self.hb_needed = true;
        }
        self.step(self.now);
    }

    /// Fencing of `node` finished.
    pub fn handle_fence_done(&mut self, now: Timestamp, node: NodeId, ok: bool) {
        self.enter(now);
        let now = self.now;
        self.event(Event::Fenced { node, ok });
        if let Some(p) = self.peers.get_mut(&node) {
            p.fence_pending = false;
            if ok {
                info!(node = %self.me, fenced = %node, "peer fenced");
                p.clean = true;
                for r in &mut p.reports {
                    r.state = GroupState::Stopped;
                    r.claim = None;
                    r.grant = None;
                }
                let mut ev = Vec::new();
                self.liveness.mark_down(node, &mut ev);
                self.apply_liveness_events(ev);
                self.dirty = true;
            } else {
                warn!(node = %self.me, target = %node, "fencing failed; retrying");
                p.fence_retry_at = Some(now + self.model.timing.keepalive);
            }
        }
        self.step(now);
    }

    /// Graceful shutdown: hand every group to the peers; [`Event::StandbyDone`] follows when
    /// this node runs nothing any more.
    pub fn request_standby(&mut self, now: Timestamp) {
        self.set_standby(now, true);
    }

    /// Leave standby (heartbeat's return from `hb_standby`, Pacemaker's `node online`): the
    /// node is eligible for groups again. With `auto_failback` its preferred groups come back
    /// through the takeover handshake; without it they stay where they run. No-op when not in
    /// standby.
    pub fn request_online(&mut self, now: Timestamp) {
        self.set_standby(now, false);
    }

    fn set_standby(&mut self, now: Timestamp, on: bool) {
        self.enter(now);
        if self.standby != on {
            if on {
                info!(node = %self.me, "standby requested");
            } else {
                info!(node = %self.me, "leaving standby");
            }
            self.standby = on;
            self.standby_reported = false;
            self.dirty = true;
            self.hb_needed = true;
        }
        self.step(self.now);
    }

    /// The operator's placement request for `group` on this node: [`OperatorPref::Prefer`]
    /// pulls it here (heartbeat's `hb_takeover`, `crm_resource --move`), [`OperatorPref::Avoid`]
    /// keeps it away (`crm_resource --ban`), [`OperatorPref::None`] clears either. The request
    /// travels in this node's heartbeats and moves the group through the usual takeover
    /// handshake. Returns false for an unknown group.
    pub fn request_placement(
        &mut self,
        now: Timestamp,
        group: &GroupId,
        pref: OperatorPref,
    ) -> bool {
        self.enter(now);
        let Some(g) = self.groups.iter_mut().find(|g| &g.id == group) else {
            return false;
        };
        if g.operator != pref {
            info!(node = %self.me, group = %group, ?pref, "operator placement request");
            g.operator = pref;
            self.dirty = true;
            self.hb_needed = true;
        }
        self.step(self.now);
        true
    }

    /// A snapshot for status displays.
    pub fn status(&self) -> NodeStatus {
        let peers = self
            .liveness
            .peers()
            .map(|p| {
                let info = self.peers.get(&p.node);
                PeerStatus {
                    node: p.node,
                    name: self
                        .model
                        .node(p.node)
                        .map(|n| n.name.clone())
                        .unwrap_or_default(),
                    state: p.state,
                    incarnation: p.incarnation,
                    links: p
                        .links()
                        .map(|(link, up, _)| LinkStatus { link, up })
                        .collect(),
                    ping_ok: info.is_some_and(|i| i.ping_ok),
                    standby: info.is_some_and(|i| i.standby),
                }
            })
            .collect();
        let groups = self
            .groups
            .iter()
            .enumerate()
            .map(|(gi, g)| GroupStatus {
                group: g.id.clone(),
                state: g.state,
                location: self.location(gi),
                target: self.targets[gi],
                failcount: self.failcount(gi),
                operator: g.operator,
            })
            .collect();
        NodeStatus {
            node: self.me,
            incarnation: self.incarnation,
            view: self.view.number,
            members: self.view.members.clone(),
            quorate: self.quorum.quorate,
            votes: (self.quorum.votes, self.quorum.total),
            ping_ok: self.ping_ok,
            standby: self.standby,
            peers,
            groups,
        }
    }

    // ---------------------------------------------------------------- plumbing

    fn event(&mut self, e: Event) {
        self.outputs.push_back(Output::Event(e));
    }

    /// Common entry: keep time monotonic and run the self-stall guard.
    fn enter(&mut self, now: Timestamp) {
        let now = now.max(self.now);
        if let Some(w) = self.expected_wakeup {
            let late = now.saturating_since(w);
            if late > self.model.timing.keepalive {
                warn!(node = %self.me, late_ms = late.as_millis() as u64, "stall detected: not counting it as peer silence");
                self.liveness.shift(now, late);
                self.event(Event::StallDetected { delay: late });
                self.hb_needed = true;
            }
        }
        self.now = now;
    }

    fn failcount(&self, gi: usize) -> u32 {
        let g = &self.groups[gi];
        let n = match self.model.policy.failure_timeout {
            Some(ft) if !ft.is_zero() => g
                .failures
                .iter()
                .filter(|&&t| self.now.saturating_since(t) < ft)
                .count(),
            _ => g.failures.len(),
        };
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn peer_up(&self, n: NodeId) -> bool {
        self.liveness
            .peer(n)
            .is_some_and(|p| p.state == PeerState::Up)
    }

    /// Where a group is active as far as we know (us first).
    fn location(&self, gi: usize) -> Option<NodeId> {
        if matches!(
            self.groups[gi].state,
            GroupState::Running | GroupState::Starting
        ) {
            return Some(self.me);
        }
        self.peers
            .iter()
            .filter(|(n, _)| self.peer_up(**n))
            .find(|(_, p)| {
                matches!(
                    p.reports[gi].state,
                    GroupState::Running | GroupState::Starting
                )
            })
            .map(|(n, _)| *n)
    }

    fn majority_grants(&self) -> bool {
        self.model.policy.quorum == QuorumMode::Majority
            && self.model.policy.no_quorum_policy != NoQuorumPolicy::Ignore
    }

    // ---------------------------------------------------------------- inputs

    /// Returns false when the heartbeat changed nothing that needs a re-evaluation.
    fn on_heartbeat(&mut self, now: Timestamp, from: NodeId, link: LinkId, hb: Heartbeat) -> bool {
        let mut ev = Vec::new();
        let verdict = self
            .liveness
            .on_heartbeat(now, from, link, hb.incarnation, hb.seq, &mut ev);
        let any_event = !ev.is_empty();
        self.apply_liveness_events(ev);
        if verdict != HeartbeatVerdict::Fresh {
            return any_event;
        }
        let my_inc = self.incarnation;
        let lease_len = self.lease_len;
        let ack = hb
            .peers
            .iter()
            .find(|r| r.node == self.me && r.incarnation == my_inc)
            .map(|r| r.last_seq)
            .unwrap_or(0);
        let ack_time = self.sent.iter().find(|(s, _)| *s == ack).map(|(_, t)| *t);
        let ngroups = self.groups.len();
        let Some(p) = self.peers.get_mut(&from) else {
            return false;
        };
        p.incarnation = hb.incarnation;
        p.hb_seq = hb.seq;
        p.acked_me = ack;
        p.clean = false;
        if let Some(t) = ack_time {
            let until = t + lease_len;
            p.lease_until = Some(p.lease_until.map_or(until, |u| u.max(until)));
        }
        let mut changed = p.ping_ok != hb.ping_ok || p.standby != hb.standby;
        p.ping_ok = hb.ping_ok;
        p.standby = hb.standby;
        let mut granted = Vec::new();
        for r in hb.groups {
            if let Some(gi) = self.groups.iter().position(|g| g.id == r.group)
                && gi < ngroups
                && p.reports[gi] != r
            {
                changed = true;
                if matches!(r.state, GroupState::Running | GroupState::Starting) {
                    self.groups[gi].last_holder = Some(from);
                }
                let g = &mut self.groups[gi];
                let mine = g.claim.map(|c| Grant {
                    node: self.me,
                    incarnation: my_inc,
                    claim: c,
                });
                if mine.is_some() && r.grant == mine && !g.granted_by.contains(&from) {
                    g.granted_by.push(from);
                    granted.push(g.id.clone());
                }
                p.reports[gi] = r;
            }
        }
        for group in granted {
            info!(node = %self.me, %from, %group, "takeover granted");
            self.event(Event::TakeoverGranted { group, by: from });
        }
        if changed {
            self.dirty = true;
        }
        true
    }

    fn on_takeover_request(&mut self, from: NodeId, req: TakeoverRequest) {
        let Some(gi) = self.groups.iter().position(|g| g.id == req.group) else {
            return;
        };
        let known = self.peers.get(&from).map(|p| p.incarnation).unwrap_or(0);
        if req.incarnation != known {
            return;
        }
        let granted = self.groups[gi].grant.filter(|g| {
            g.grant.node == from
                && g.grant.incarnation == req.incarnation
                && g.grant.claim == req.claim
        });
        debug!(node = %self.me, %from, group = %req.group, granted = granted.is_some(), "takeover request");
        if self.groups[gi].last_request != Some((from, req.claim)) {
            self.groups[gi].last_request = Some((from, req.claim));
            info!(node = %self.me, %from, group = %req.group, "takeover requested");
            self.event(Event::TakeoverRequested {
                group: req.group.clone(),
                from,
            });
        }
        self.outputs.push_back(Output::Send {
            to: Some(from),
            link: None,
            msg: Message::TakeoverResponse(TakeoverResponse {
                group: req.group,
                incarnation: self.incarnation,
                claim: req.claim,
                granted: granted.is_some(),
                grant_seq: granted.map_or(0, |g| g.seq),
            }),
        });
        self.dirty = true;
    }

    fn on_takeover_response(&mut self, from: NodeId, resp: TakeoverResponse) {
        let Some(gi) = self.groups.iter().position(|g| g.id == resp.group) else {
            return;
        };
        let Some(p) = self.peers.get(&from) else {
            return;
        };
        if resp.incarnation != p.incarnation || !resp.granted {
            return;
        }
        let stale = resp.grant_seq <= p.hb_seq;
        let g = &mut self.groups[gi];
        if g.claim == Some(resp.claim) {
            if !stale {
                g.responses.insert(from, resp.grant_seq);
            }
            if !g.granted_by.contains(&from) {
                g.granted_by.push(from);
                let group = g.id.clone();
                info!(node = %self.me, %from, %group, "takeover granted");
                self.event(Event::TakeoverGranted { group, by: from });
            }
        }
    }

    fn apply_liveness_events(&mut self, ev: Vec<LivenessEvent>) {
        for e in ev {
            match e {
                LivenessEvent::LinkUp(n, l) => {
                    debug!(node = %self.me, peer = %n, %l, "link up");
                    self.event(Event::LinkUp { node: n, link: l });
                }
                LivenessEvent::LinkDown(n, l) => {
                    info!(node = %self.me, peer = %n, %l, "link down");
                    self.event(Event::LinkDown { node: n, link: l });
                }
                LivenessEvent::PeerUp(n) => {
                    info!(node = %self.me, peer = %n, "peer up");
                    self.event(Event::PeerUp { node: n });
                    self.hb_needed = true;
                    self.dirty = true;
                }
                LivenessEvent::PeerDown(n) => {
                    info!(node = %self.me, peer = %n, "peer down");
                    self.event(Event::PeerDown { node: n });
                    if let Some(p) = self.peers.get_mut(&n) {
                        p.lease_until = None;
                    }
                    for g in &mut self.groups {
                        if g.last_request.is_some_and(|(r, _)| r == n) {
                            g.last_request = None;
                        }
                    }
                    self.dirty = true;
                }
                LivenessEvent::PeerRestarted { node, old, new } => {
                    info!(node = %self.me, peer = %node, old, new, "peer restarted");
                    self.event(Event::PeerRestarted { node, old, new });
                    if let Some(p) = self.peers.get_mut(&node) {
                        p.lease_until = None;
                        p.hb_seq = 0;
                        p.acked_me = 0;
                        for r in &mut p.reports {
                            r.state = GroupState::Stopped;
                            r.claim = None;
                            r.grant = None;
                        }
                    }
                    for g in &mut self.groups {
                        g.responses.remove(&node);
                        if g.last_request.is_some_and(|(r, _)| r == node) {
                            g.last_request = None;
                        }
                    }
                    self.dirty = true;
                }
                LivenessEvent::LateHeartbeat(n, l, d) => {
                    warn!(node = %self.me, peer = %n, %l, delay_ms = d.as_millis() as u64, "late heartbeat");
                    self.event(Event::LateHeartbeat {
                        peer: n,
                        link: l,
                        delay: d,
                    });
                }
            }
        }
    }

    // ---------------------------------------------------------------- evaluation

    /// Re-evaluate everything and emit outputs; the single place where decisions are made.
    fn step(&mut self, now: Timestamp) {
        let mut ev = Vec::new();
        self.liveness.check(now, &mut ev);
        self.apply_liveness_events(ev);
        self.update_view();
        self.expire_state(now);
        if self.dirty {
            self.dirty = false;
            self.compute_targets();
        }
        self.fence_lost_peers(now);
        for k in 0..self.order.len() {
            let gi = self.order[k];
            self.manage_claim(gi);
        }
        self.manage_grants(now);
        self.drive_groups(now);
        self.check_standby();
        if self.hb_needed || now >= self.next_hb {
            self.send_heartbeat(now);
        }
        self.resend_requests(now);
        self.expected_wakeup = Some(self.next_deadline());
    }

    fn update_view(&mut self) {
        let mut members: Vec<NodeId> = self.liveness.up_peers().collect();
        members.push(self.me);
        if self.view.update(members) {
            info!(node = %self.me, view = self.view.number, members = ?self.view.members, "view changed");
            self.event(Event::ViewChanged {
                view: self.view.number,
                members: self.view.members.clone(),
            });
            self.dirty = true;
            self.hb_needed = true;
        }
        let q = quorum::compute(&self.model, &self.view.members, self.ping_ok);
        if q != self.quorum {
            if q.quorate != self.quorum.quorate {
                info!(node = %self.me, quorate = q.quorate, votes = q.votes, total = q.total, "quorum changed");
                self.event(Event::QuorumChanged {
                    quorate: q.quorate,
                    votes: q.votes,
                    total: q.total,
                });
            }
            self.quorum = q;
            self.dirty = true;
        }
    }

    /// Forget expired failures and outdated send times.
    fn expire_state(&mut self, now: Timestamp) {
        if let Some(ft) = self.model.policy.failure_timeout.filter(|d| !d.is_zero()) {
            for g in &mut self.groups {
                let before = g.failures.len();
                g.failures.retain(|&t| now.saturating_since(t) < ft);
                if g.failures.len() != before {
                    self.dirty = true;
                    self.hb_needed = true;
                }
            }
        }
        let horizon = self.model.timing.deadtime * 2;
        while self.sent.len() > 2
            && self
                .sent
                .front()
                .is_some_and(|(_, t)| now.saturating_since(*t) > horizon)
        {
            self.sent.pop_front();
        }
    }

    fn compute_targets(&mut self) {
        let model = Arc::clone(&self.model);
        let nodes: Vec<NodeFacts> = model
            .nodes
            .iter()
            .map(|n| {
                if n.id == self.me {
                    NodeFacts {
                        node: n.id,
                        eligible: !self.standby && self.quorum.quorate,
                        ping_ok: self.ping_ok,
                    }
                } else {
                    let p = self.peers.get(&n.id);
                    NodeFacts {
                        node: n.id,
                        eligible: self.quorum.quorate
                            && self.peer_up(n.id)
                            && p.is_some_and(|p| !p.standby),
                        ping_ok: p.is_some_and(|p| p.ping_ok),
                    }
                }
            })
            .collect();
        let mut groups = BTreeMap::new();
        for (gi, g) in self.groups.iter().enumerate() {
            let mut f = GroupFacts::default();
            if g.state.maybe_active() {
                f.active_on.push(self.me);
            }
            f.failcount.insert(self.me, self.failcount(gi));
            if g.banned {
                f.banned.insert(self.me);
            }
            f.operator.insert(self.me, g.operator);
            f.fatal = g.fatal;
            for (&n, p) in &self.peers {
                let r = &p.reports[gi];
                f.fatal |= r.fatal;
                if !self.peer_up(n) {
                    continue;
                }
                if r.state.maybe_active() {
                    f.active_on.push(n);
                }
                f.failcount.insert(n, r.failcount);
                if r.banned {
                    f.banned.insert(n);
                }
                f.operator.insert(n, r.operator);
            }
            groups.insert(g.id.clone(), f);
        }
        let input = PlacementInput {
            model: &model,
            nodes,
            groups,
        };
        let t = placement::compute_targets(&input);
        for (gi, g) in self.groups.iter().enumerate() {
            let nt = t.get(&g.id).copied().flatten();
            if self.targets[gi] != nt {
                debug!(node = %self.me, group = %g.id, target = ?nt, "placement target changed");
                self.targets[gi] = nt;
            }
        }
    }

    fn send_heartbeat(&mut self, now: Timestamp) {
        self.seq += 1;
        self.sent.push_back((self.seq, now));
        self.hb_needed = false;
        self.next_hb = now + self.model.timing.keepalive;
        let peers = self
            .liveness
            .peers()
            .map(|p| PeerReport {
                node: p.node,
                incarnation: p.incarnation,
                last_seq: p.last_seq,
                alive: p.state == PeerState::Up,
            })
            .collect();
        let groups = (0..self.groups.len())
            .map(|gi| {
                let g = &self.groups[gi];
                GroupReport {
                    group: g.id.clone(),
                    state: g.state,
                    claim: g.claim,
                    grant: g.grant.map(|r| r.grant),
                    failcount: self.failcount(gi),
                    banned: g.banned,
                    fatal: g.fatal,
                    operator: g.operator,
                }
            })
            .collect();
        let hb = Heartbeat {
            incarnation: self.incarnation,
            seq: self.seq,
            view: self.view.number,
            ping_ok: self.ping_ok,
            standby: self.standby,
            peers,
            groups,
        };
        self.outputs.push_back(Output::Send {
            to: None,
            link: None,
            msg: Message::Heartbeat(hb),
        });
    }

    fn next_deadline(&self) -> Timestamp {
        let mut next = self.next_hb;
        let mut consider = |t: Timestamp| {
            if t < next {
                next = t;
            }
        };
        if let Some(t) = self.liveness.next_deadline() {
            consider(t);
        }
        let floor_end = self.boot + self.model.timing.detection_floor();
        if self.now < floor_end {
            consider(floor_end);
        }
        // Leases only gate majority grants (`grants_ok`); elsewhere their expiry changes
        // nothing, and waking for it would double an idle holder's wakeups.
        let holding = self.majority_grants() && self.groups.iter().any(|g| g.state.maybe_active());
        for p in self.peers.values() {
            if holding && let Some(u) = p.lease_until.filter(|&u| u > self.now) {
                consider(u);
            }
            if let Some(t) = p.fence_retry_at {
                consider(t);
            }
        }
        let ft = self.model.policy.failure_timeout.filter(|d| !d.is_zero());
        for g in &self.groups {
            if let Some(t) = g.retry_at.filter(|&t| t > self.now) {
                consider(t);
            }
            if g.pending.is_none() {
                for t in g.monitor_due.iter().flatten() {
                    consider(*t);
                }
            }
            if let Some(ft) = ft {
                for &f in &g.failures {
                    consider(f + ft);
                }
            }
        }
        next.max(self.now)
    }
}
