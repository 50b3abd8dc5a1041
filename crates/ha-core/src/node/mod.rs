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

mod types;

pub use types::*;

use crate::error::{Error, Result};
use crate::ids::{GroupId, LinkId, NodeId};
use crate::liveness::{HeartbeatVerdict, Liveness, LivenessEvent, PeerState};
use crate::membership::View;
use crate::message::{
    Grant, GroupReport, GroupState, Heartbeat, Message, PeerReport, TakeoverRequest,
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
        let guard = (stop_budget + timing.keepalive / 2).min(floor / 2);
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

    /// A resource operation finished.
    pub fn handle_action_done(&mut self, now: Timestamp, action: ActionId, outcome: OcfCode) {
        self.enter(now);
        let now = self.now;
        if let Some((gi, ri, op)) = self.actions.remove(&action) {
            if self.groups[gi].pending.map(|p| p.0) == Some(action) {
                self.groups[gi].pending = None;
                self.on_action_done(now, gi, ri, op, outcome);
            }
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
        self.enter(now);
        if !self.standby {
            info!(node = %self.me, "standby requested");
            self.standby = true;
            self.standby_reported = false;
            self.dirty = true;
            self.hb_needed = true;
        }
        self.step(self.now);
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
        for r in hb.groups {
            if let Some(gi) = self.groups.iter().position(|g| g.id == r.group) {
                if gi < ngroups && p.reports[gi] != r {
                    changed = true;
                    if matches!(r.state, GroupState::Running | GroupState::Starting) {
                        self.groups[gi].last_holder = Some(from);
                    }
                    p.reports[gi] = r;
                }
            }
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
            self.event(Event::TakeoverRequested { group: req.group.clone(), from });
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

    fn on_action_done(
        &mut self,
        now: Timestamp,
        gi: usize,
        ri: usize,
        op: ResourceOp,
        code: OcfCode,
    ) {
        let nres = self.model.groups[gi].resources.len();
        let rid = self.model.groups[gi].resources[ri].clone();
        let severity = match op {
            ResourceOp::Monitor => match code {
                OcfCode::Success | OcfCode::RunningPromoted => Severity::Ok,
                c => c.severity(op).max(Severity::Soft),
            },
            _ => code.severity(op),
        };
        let gid = self.groups[gi].id.clone();
        if severity != Severity::Ok {
            warn!(node = %self.me, group = %gid, resource = %rid, %op, ?code, "resource operation failed");
            self.event(Event::GroupFailed {
                group: gid.clone(),
                resource: rid.clone(),
                op,
                code,
            });
        }
        self.dirty = true;
        self.hb_needed = true;
        let g = &mut self.groups[gi];
        match op {
            ResourceOp::Start => {
                if severity == Severity::Ok {
                    g.step = ri + 1;
                    if g.step >= nres {
                        g.state = GroupState::Running;
                        let interval: Vec<Option<Duration>> = self.model.groups[gi]
                            .resources
                            .iter()
                            .map(|r| self.model.resources.get(r).and_then(|s| s.monitor_interval))
                            .collect();
                        for (d, i) in g.monitor_due.iter_mut().zip(interval) {
                            *d = i.map(|i| now + i);
                        }
                        info!(node = %self.me, group = %gid, "group running");
                        self.event(Event::GroupRunning { group: gid });
                    }
                } else {
                    g.failures.push(now);
                    match severity {
                        Severity::Hard => g.banned = true,
                        Severity::Fatal => g.fatal = true,
                        // Pacemaker's start-failure-is-fatal: without a migration-threshold a
                        // failed start bans the node.
                        _ if self.model.policy.migration_threshold.is_none() => g.banned = true,
                        _ => {}
                    }
                    // Roll back: stop the failed member and those before it, right to left.
                    g.state = GroupState::Stopping;
                    g.step = ri + 1;
                    g.retry_at = Some(now + self.model.timing.keepalive);
                    self.event(Event::GroupStopping {
                        group: gid,
                        reason: StopReason::Rollback,
                    });
                }
            }
            ResourceOp::Stop => {
                if severity == Severity::Ok {
                    g.step = ri;
                    if g.step == 0 {
                        g.state = GroupState::Stopped;
                        info!(node = %self.me, group = %gid, "group stopped");
                        self.event(Event::GroupStopped { group: gid });
                    }
                } else {
                    // A failed stop leaves the group possibly active: keep it blocked here.
                    g.state = GroupState::Failed;
                    g.step = ri + 1;
                }
            }
            ResourceOp::Monitor => {
                if severity == Severity::Ok {
                    let i = self
                        .model
                        .resources
                        .get(&self.model.groups[gi].resources[ri])
                        .and_then(|s| s.monitor_interval);
                    g.monitor_due[ri] = i.map(|i| now + i);
                } else if g.state == GroupState::Running {
                    g.failures.push(now);
                    match severity {
                        Severity::Hard => g.banned = true,
                        Severity::Fatal => g.fatal = true,
                        _ => {}
                    }
                    g.restart = true;
                    g.state = GroupState::Stopping;
                    g.step = nres;
                    for d in &mut g.monitor_due {
                        *d = None;
                    }
                    self.event(Event::GroupStopping {
                        group: gid,
                        reason: StopReason::Restart,
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

    /// With fencing, the coordinator of a quorate partition fences every lost peer.
    fn fence_lost_peers(&mut self, now: Timestamp) {
        if !self.model.policy.fencing || !self.quorum.quorate || self.view.dc() != Some(self.me) {
            return;
        }
        let lost: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(n, p)| {
                self.liveness
                    .peer(**n)
                    .is_some_and(|l| l.state == PeerState::Down)
                    && !p.clean
                    && !p.fence_pending
                    && p.fence_retry_at.is_none_or(|t| now >= t)
            })
            .map(|(n, _)| *n)
            .collect();
        for n in lost {
            if let Some(p) = self.peers.get_mut(&n) {
                p.fence_pending = true;
                p.fence_retry_at = None;
            }
            warn!(node = %self.me, target = %n, "fencing lost peer");
            self.event(Event::FenceRequested { node: n });
            self.outputs.push_back(Output::Fence { node: n });
        }
    }

    /// Release grants that are no longer needed and issue new ones.
    fn manage_grants(&mut self, now: Timestamp) {
        let fencing = self.model.policy.fencing;
        let blackout_over = now.saturating_since(self.boot) >= self.model.timing.detection_floor();
        for gi in 0..self.groups.len() {
            // Release.
            if let Some(rec) = self.groups[gi].grant {
                let to = rec.grant.node;
                let release = if to == self.me {
                    let g = &self.groups[gi];
                    rec.grant.incarnation != self.incarnation
                        || (g.claim != Some(rec.grant.claim) && g.state == GroupState::Stopped)
                } else {
                    match (self.peers.get(&to), self.liveness.peer(to)) {
                        (Some(p), Some(l)) => {
                            let r = &p.reports[gi];
                            let acked = l.incarnation == rec.grant.incarnation
                                && p.acked_me >= rec.seq
                                && r.claim != Some(rec.grant.claim)
                                && r.state == GroupState::Stopped;
                            let restarted = l.incarnation != rec.grant.incarnation;
                            let dead = l.state != PeerState::Up && (!fencing || p.clean);
                            acked || restarted || dead || p.clean
                        }
                        _ => true,
                    }
                };
                if release {
                    debug!(node = %self.me, group = %self.groups[gi].id, to = %to, "grant released");
                    self.groups[gi].grant = None;
                    self.hb_needed = true;
                }
            }
            // Issue.
            if self.groups[gi].grant.is_some() || !blackout_over {
                continue;
            }
            let Some(t) = self.targets[gi] else { continue };
            let grant = if t == self.me {
                self.groups[gi].claim.map(|c| Grant {
                    node: t,
                    incarnation: self.incarnation,
                    claim: c,
                })
            } else {
                let (Some(p), true) = (self.peers.get(&t), self.peer_up(t)) else {
                    continue;
                };
                p.reports[gi].claim.map(|c| Grant {
                    node: t,
                    incarnation: p.incarnation,
                    claim: c,
                })
            };
            let Some(grant) = grant else { continue };
            let seq = self.seq + 1;
            self.groups[gi].grant = Some(GrantRec { grant, seq });
            self.hb_needed = true;
            let gid = self.groups[gi].id.clone();
            info!(node = %self.me, group = %gid, to = %t, "group granted");
            self.event(Event::GroupGranted {
                group: gid.clone(),
                to: t,
            });
            if t != self.me {
                self.outputs.push_back(Output::Send {
                    to: Some(t),
                    link: None,
                    msg: Message::TakeoverResponse(TakeoverResponse {
                        group: gid,
                        incarnation: self.incarnation,
                        claim: grant.claim,
                        granted: true,
                        grant_seq: seq,
                    }),
                });
            }
        }
    }

    /// Start or withdraw a claim on a group.
    fn manage_claim(&mut self, gi: usize) {
        let want = self.want_run(gi);
        let g = &mut self.groups[gi];
        if want && g.claim.is_none() && !g.fatal {
            let c = self.next_claim;
            self.next_claim += 1;
            g.claim = Some(c);
            g.claim_sent_at = None;
            g.responses.clear();
            g.granted_by.clear();
            self.hb_needed = true;
            let gid = g.id.clone();
            info!(node = %self.me, group = %gid, claim = c, "claiming group");
            self.event(Event::GroupClaimed { group: gid });
        } else if !want
            && g.claim.is_some()
            && g.state == GroupState::Stopped
            && g.pending.is_none()
        {
            g.claim = None;
            g.responses.clear();
            self.hb_needed = true;
        }
    }

    fn want_run(&self, gi: usize) -> bool {
        self.targets[gi] == Some(self.me)
            && self.quorum.quorate
            && !self.standby
            && !self.liveness.any_unknown()
            && !self.groups[gi].fatal
            // A restarted node may still be bound by grants of its previous life for a while.
            && self.now.saturating_since(self.boot) >= self.model.timing.detection_floor()
    }

    /// Peers whose grant for our current claim on `gi` we hold.
    fn granters(&self, gi: usize) -> Vec<NodeId> {
        let g = &self.groups[gi];
        let Some(c) = g.claim else { return Vec::new() };
        let mine = Grant {
            node: self.me,
            incarnation: self.incarnation,
            claim: c,
        };
        let mut out = Vec::new();
        if g.grant.map(|r| r.grant) == Some(mine) {
            out.push(self.me);
        }
        for (&n, p) in &self.peers {
            let via_hb = p.reports[gi].grant == Some(mine);
            let via_resp = g.responses.get(&n).is_some_and(|&s| s > p.hb_seq);
            if via_hb || via_resp {
                out.push(n);
            }
        }
        out
    }

    /// Do we hold enough grants to run `gi`?
    /// `holding`: keeping a running group rather than starting one. Without majority grants a
    /// holder needs only its own grant (peers that joined since grant to it later).
    fn grants_ok(&self, gi: usize, now: Timestamp, holding: bool) -> bool {
        let granters = self.granters(gi);
        if !granters.contains(&self.me) {
            return false;
        }
        if self.majority_grants() {
            let valid: Vec<NodeId> = granters
                .into_iter()
                .filter(|&n| {
                    n == self.me
                        || (self.peer_up(n)
                            && self
                                .peers
                                .get(&n)
                                .and_then(|p| p.lease_until)
                                .is_some_and(|u| now < u))
                })
                .collect();
            quorum::is_majority(quorum::votes(&self.model, &valid), self.model.total_votes())
        } else {
            holding || self.liveness.up_peers().all(|n| granters.contains(&n))
        }
    }

    /// With fencing: every lost peer must be fenced before we start anything.
    fn fencing_clear(&self) -> bool {
        !self.model.policy.fencing || self.peers.iter().all(|(n, p)| self.peer_up(*n) || p.clean)
    }

    /// Mandatory order: every `first` of `gi` must run somewhere.
    fn order_ok(&self, gi: usize) -> bool {
        let id = &self.groups[gi].id;
        self.model.constraints.iter().all(|c| match c {
            Constraint::Order {
                first,
                then,
                kind: OrderKind::Mandatory,
            } if then == id => match self.groups.iter().position(|g| &g.id == first) {
                Some(fi) => {
                    self.location(fi).is_some() && self.groups[fi].state != GroupState::Starting
                }
                None => true,
            },
            _ => true,
        })
    }

    fn decide(&self, gi: usize, now: Timestamp) -> Want {
        let g = &self.groups[gi];
        let frozen =
            !self.quorum.quorate && self.model.policy.no_quorum_policy == NoQuorumPolicy::Freeze;
        match g.state {
            GroupState::Starting | GroupState::Running => {
                if frozen {
                    return Want::Nothing;
                }
                if self.standby {
                    Want::Stop(StopReason::Standby)
                } else if !self.quorum.quorate {
                    Want::Stop(StopReason::NoQuorum)
                } else if g.fatal
                    || g.banned
                    || self.targets[gi].is_none() && self.failcount(gi) > 0
                {
                    Want::Stop(StopReason::Failure)
                } else if !self.grants_ok(gi, now, true) {
                    // The leases behind our grants ran out: another node may get the group.
                    if self.model.policy.no_quorum_policy == NoQuorumPolicy::Freeze {
                        Want::Nothing
                    } else {
                        Want::Stop(StopReason::NoQuorum)
                    }
                } else if let Some(t) = self.targets[gi].filter(|&t| t != self.me) {
                    // Takeover handshake: hand over only once the new node asks for it.
                    let asks = self.peer_up(t)
                        && self.peers.get(&t).is_some_and(|p| p.reports[gi].claim.is_some());
                    if asks || g.last_request.is_some_and(|(n, _)| n == t) {
                        Want::Stop(StopReason::Moved)
                    } else {
                        Want::Nothing
                    }
                } else {
                    Want::Nothing
                }
            }
            GroupState::Stopped => {
                if self.want_run(gi)
                    && g.retry_at.is_none_or(|t| now >= t)
                    && self.grants_ok(gi, now, false)
                    && self.fencing_clear()
                    && self.order_ok(gi)
                {
                    Want::Start
                } else {
                    Want::Nothing
                }
            }
            GroupState::Stopping | GroupState::Failed => Want::Nothing,
        }
    }

    fn drive_groups(&mut self, now: Timestamp) {
        // Continue transitions in progress, then begin stops (reverse order), then starts.
        for k in 0..self.order.len() {
            let gi = self.order[k];
            if self.groups[gi].pending.is_none() {
                self.continue_group(now, gi);
            }
        }
        let busy = self
            .groups
            .iter()
            .any(|g| matches!(g.state, GroupState::Starting | GroupState::Stopping));
        if !busy {
            for k in (0..self.order.len()).rev() {
                let gi = self.order[k];
                if self.groups[gi].pending.is_some() && self.groups[gi].state != GroupState::Running
                {
                    continue;
                }
                if let Want::Stop(reason) = self.decide(gi, now) {
                    if self.groups[gi].pending.is_some() {
                        continue; // a monitor is running; stop after it.
                    }
                    self.begin_stop(gi, reason);
                    return;
                }
            }
            for k in 0..self.order.len() {
                let gi = self.order[k];
                if self.groups[gi].pending.is_none() {
                    if let Want::Start = self.decide(gi, now) {
                        self.begin_start(gi);
                        return;
                    }
                }
            }
        }
        self.run_monitors(now);
    }

    fn begin_stop(&mut self, gi: usize, reason: StopReason) {
        let nres = self.model.groups[gi].resources.len();
        let g = &mut self.groups[gi];
        g.step = if g.state == GroupState::Starting {
            g.step
        } else {
            nres
        };
        g.state = GroupState::Stopping;
        for d in &mut g.monitor_due {
            *d = None;
        }
        if reason != StopReason::Restart {
            g.restart = false;
        }
        let gid = g.id.clone();
        info!(node = %self.me, group = %gid, ?reason, "stopping group");
        self.event(Event::GroupStopping { group: gid, reason });
        self.hb_needed = true;
        self.continue_group(self.now, gi);
    }

    fn begin_start(&mut self, gi: usize) {
        let gid = self.groups[gi].id.clone();
        if let Some(from) = self.groups[gi].last_holder.filter(|&h| h != self.me) {
            if !self.peer_up(from) {
                info!(node = %self.me, group = %gid, %from, "failover");
                self.event(Event::Failover {
                    group: gid.clone(),
                    from,
                    to: self.me,
                });
            }
        }
        let g = &mut self.groups[gi];
        g.state = GroupState::Starting;
        g.step = 0;
        g.restart = false;
        g.last_holder = Some(self.me);
        info!(node = %self.me, group = %gid, "starting group");
        self.event(Event::GroupStarting { group: gid });
        self.hb_needed = true;
        self.continue_group(self.now, gi);
    }

    /// Issue the next action of a transition in progress, or finish it.
    fn continue_group(&mut self, now: Timestamp, gi: usize) {
        let nres = self.model.groups[gi].resources.len();
        match self.groups[gi].state {
            GroupState::Starting => {
                let step = self.groups[gi].step;
                if step >= nres {
                    self.groups[gi].state = GroupState::Running;
                    let gid = self.groups[gi].id.clone();
                    self.event(Event::GroupRunning { group: gid });
                } else if self.decide_abort_start(gi, now) {
                    // Lost the right to run while starting: roll back.
                    self.groups[gi].state = GroupState::Stopping;
                    let gid = self.groups[gi].id.clone();
                    self.event(Event::GroupStopping {
                        group: gid,
                        reason: StopReason::NoQuorum,
                    });
                    self.continue_group(now, gi);
                } else {
                    self.issue(gi, step, ResourceOp::Start);
                }
            }
            GroupState::Stopping => {
                let step = self.groups[gi].step;
                if step == 0 {
                    self.groups[gi].state = GroupState::Stopped;
                    let gid = self.groups[gi].id.clone();
                    info!(node = %self.me, group = %gid, "group stopped");
                    self.event(Event::GroupStopped { group: gid });
                    self.hb_needed = true;
                    self.dirty = true;
                } else {
                    self.issue(gi, step - 1, ResourceOp::Stop);
                }
            }
            _ => {}
        }
    }

    fn decide_abort_start(&self, gi: usize, now: Timestamp) -> bool {
        matches!(self.decide(gi, now), Want::Stop(_))
    }

    fn issue(&mut self, gi: usize, ri: usize, op: ResourceOp) {
        let rid = self.model.groups[gi].resources[ri].clone();
        let Some(spec) = self.model.resources.get(&rid) else {
            return;
        };
        let timeout = match op {
            ResourceOp::Start => spec.start_timeout,
            ResourceOp::Stop => spec.stop_timeout,
            ResourceOp::Monitor => spec.monitor_timeout,
        };
        let id = ActionId(self.next_action);
        self.next_action += 1;
        self.actions.insert(id, (gi, ri, op));
        self.groups[gi].pending = Some((id, op));
        debug!(node = %self.me, group = %self.groups[gi].id, resource = %rid, %op, "action");
        self.outputs.push_back(Output::Action(ResourceAction {
            id,
            group: self.groups[gi].id.clone(),
            resource: rid,
            op,
            timeout,
        }));
    }

    fn run_monitors(&mut self, now: Timestamp) {
        for gi in 0..self.groups.len() {
            let g = &self.groups[gi];
            if g.state != GroupState::Running || g.pending.is_some() {
                continue;
            }
            if let Some(ri) = g
                .monitor_due
                .iter()
                .position(|d| d.is_some_and(|t| now >= t))
            {
                self.groups[gi].monitor_due[ri] = None;
                self.issue(gi, ri, ResourceOp::Monitor);
            }
        }
    }

    fn check_standby(&mut self) {
        if !self.standby || self.standby_reported {
            return;
        }
        let idle = self
            .groups
            .iter()
            .all(|g| g.state == GroupState::Stopped && g.claim.is_none() && g.pending.is_none());
        if idle {
            self.standby_reported = true;
            info!(node = %self.me, "standby done");
            self.event(Event::StandbyDone);
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

    /// Re-send TakeoverRequests every keepalive for claims not yet fully granted.
    fn resend_requests(&mut self, now: Timestamp) {
        let ka = self.model.timing.keepalive;
        for gi in 0..self.groups.len() {
            let g = &self.groups[gi];
            let Some(c) = g.claim else { continue };
            if g.state != GroupState::Stopped
                || g.claim_sent_at
                    .is_some_and(|t| now.saturating_since(t) < ka)
            {
                continue;
            }
            let granters = self.granters(gi);
            let ask: Vec<NodeId> = self
                .liveness
                .up_peers()
                .filter(|n| !granters.contains(n))
                .collect();
            if ask.is_empty() {
                continue;
            }
            let gid = g.id.clone();
            self.groups[gi].claim_sent_at = Some(now);
            for n in ask {
                self.outputs.push_back(Output::Send {
                    to: Some(n),
                    link: None,
                    msg: Message::TakeoverRequest(TakeoverRequest {
                        group: gid.clone(),
                        incarnation: self.incarnation,
                        claim: c,
                    }),
                });
            }
        }
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
        let holding = self.groups.iter().any(|g| g.state.maybe_active());
        for p in self.peers.values() {
            if holding {
                if let Some(u) = p.lease_until.filter(|&u| u > self.now) {
                    consider(u);
                }
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
