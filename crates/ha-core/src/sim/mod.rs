//! Deterministic simulator: N real [`Node`]s under virtual time.
//!
//! One event queue (a binary heap ordered by virtual time, then insertion order), no threads,
//! no sleeping. Everything random (loss, delay, jitter, action durations, fault schedules)
//! comes from one [`ChaCha8Rng`] seeded with a `u64`, so a failing seed replays exactly.
//!
//! Faults: per-link loss, delay with jitter (reordering), partitions, crashes and restarts (new
//! incarnation), timer stalls (the node's timers, messages and action results are held back
//! and delivered when it resumes), clock jumps, ping-node loss, injected OCF results. With
//! [`SimConfig::unreachable_answers`] a message to a crashed node comes back as "port
//! unreachable" (its host still answers, as after a daemon crash), and with
//! [`SimConfig::exit_notices`] its peers learn of its exit at once; forged "port unreachable"
//! reports can be injected.
//!
//! Ground truth: a resource counts as active on a node from the moment its start is issued until
//! its stop succeeds or the node crashes (a fenced node is crashed). [`Sim::violations`] lists
//! every moment a group was active on two nodes at once.

mod builder;

pub use builder::{ModelBuilder, model_builder, two_node_model};

use crate::ids::{GroupId, LinkId, NodeId, ResourceId};
use crate::message::{Message, OperatorPref};
use crate::model::ClusterModel;
use crate::node::{ActionId, Event, Node, Output, ResourceAction};
use crate::outcome::{OcfCode, ResourceOp};
use crate::time::Timestamp;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::Arc;
use std::time::Duration;

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Probability that one message copy on one link is lost.
    pub loss: f64,
    /// Minimum one-way delay.
    pub delay_min: Duration,
    /// Maximum one-way delay (uniform jitter between min and max: reordering).
    pub delay_max: Duration,
    /// Range of start durations.
    pub start_time: (Duration, Duration),
    /// Range of stop durations.
    pub stop_time: (Duration, Duration),
    /// Duration of a monitor.
    pub monitor_time: Duration,
    /// Time a fencing operation takes.
    pub fence_delay: Duration,
    /// A fenced node boots again after this long (None: stays down).
    pub fence_reboot: Option<Duration>,
    /// Keep a log of events and actions ([`Sim::log`]).
    pub record: bool,
    /// A message to a crashed node comes back as "port unreachable": its daemon died but its
    /// host still answers. Off (the default): the host died too, as [`Fault::Crash`] says.
    pub unreachable_answers: bool,
    /// A crash is seen by every peer it is not cut off from, one delay later, as its daemon's
    /// exit (the host closing the connection the daemon held open). Off by default.
    pub exit_notices: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            loss: 0.0,
            delay_min: Duration::from_millis(1),
            delay_max: Duration::from_millis(5),
            start_time: (Duration::from_millis(5), Duration::from_millis(30)),
            stop_time: (Duration::from_millis(2), Duration::from_millis(10)),
            monitor_time: Duration::from_millis(2),
            fence_delay: Duration::from_millis(20),
            fence_reboot: Some(Duration::from_millis(300)),
            record: false,
            unreachable_answers: false,
            exit_notices: false,
        }
    }
}

/// A fault or operator action to apply at a given time.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Kill a node (its resources die with it).
    Crash(NodeId),
    /// Boot a crashed node with a new incarnation.
    Restart(NodeId),
    /// Cut every link between `side` and the other nodes.
    Partition(Vec<NodeId>),
    /// Cut one direction: messages from the first to the second node are lost.
    Cut(NodeId, NodeId),
    /// Remove every partition and cut.
    Heal,
    /// Set the loss probability.
    Loss(f64),
    /// Stall a node for a while (timers and deliveries held back).
    Stall(NodeId, Duration),
    /// Jump a node's clock forward.
    ClockJump(NodeId, Duration),
    /// Set a node's ping-node reachability.
    Ping(NodeId, bool),
    /// Ask a node to go to standby.
    Standby(NodeId),
    /// Ask a node to leave standby.
    Online(NodeId),
    /// An operator's placement request for a group on a node.
    Operator(NodeId, GroupId, OperatorPref),
    /// The next `op` of `resource` on the node returns `code`.
    Inject(NodeId, ResourceId, ResourceOp, OcfCode),
    /// The first node gets a (forged or stale) report that nothing listens on the second
    /// node's end of every link, as an ICMP port unreachable would tell it.
    Unreachable(NodeId, NodeId),
}

/// What the log records.
#[derive(Debug, Clone, PartialEq)]
pub enum LogKind {
    /// A node's event.
    Event(Event),
    /// A resource operation begins.
    Action(ResourceAction),
    /// A resource operation ended.
    ActionDone {
        /// The group.
        group: GroupId,
        /// The resource.
        resource: ResourceId,
        /// The operation.
        op: ResourceOp,
        /// Outcome.
        code: OcfCode,
    },
    /// A fault was applied.
    Fault(Fault),
    /// A node was fenced.
    Fenced(NodeId),
    /// A node booted.
    Booted {
        /// Its incarnation.
        incarnation: u64,
    },
}

/// One log line.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// Virtual time.
    pub at: Timestamp,
    /// The node concerned.
    pub node: NodeId,
    /// What happened.
    pub kind: LogKind,
}

/// A group found active on two nodes at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// When.
    pub at: Timestamp,
    /// The group.
    pub group: GroupId,
    /// Where it was active.
    pub nodes: Vec<NodeId>,
}

#[derive(Debug)]
enum Ev {
    Deliver {
        to: NodeId,
        from: NodeId,
        link: LinkId,
        msg: Box<Message>,
    },
    Timer {
        node: NodeId,
    },
    ActionDone {
        node: NodeId,
        inc: u64,
        id: ActionId,
        group: GroupId,
        resource: ResourceId,
        op: ResourceOp,
        code: OcfCode,
    },
    FenceDone {
        fencer: NodeId,
        inc: u64,
        target: NodeId,
    },
    Resume {
        node: NodeId,
    },
    /// `about`'s host answered a message from `to` with "port unreachable".
    Unreachable {
        to: NodeId,
        about: NodeId,
        link: LinkId,
    },
    /// `to` learns that instance `incarnation` of `about` exited.
    Exit {
        to: NodeId,
        about: NodeId,
        incarnation: u64,
    },
    Fault(Fault),
}

struct Scheduled {
    at: Timestamp,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

struct SimNode {
    id: NodeId,
    node: Option<Node>,
    incarnation: u64,
    clock_offset: Duration,
    stalled_until: Option<Timestamp>,
    held: Vec<Ev>,
    timer_at: Option<Timestamp>,
    /// Ground truth: resources active here.
    active: BTreeSet<ResourceId>,
    ping_ok: bool,
}

/// The simulator.
pub struct Sim {
    model: Arc<ClusterModel>,
    cfg: SimConfig,
    rng: ChaCha8Rng,
    now: Timestamp,
    seq: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    nodes: Vec<SimNode>,
    cuts: BTreeSet<(NodeId, NodeId)>,
    injections: Vec<(NodeId, ResourceId, ResourceOp, OcfCode)>,
    group_of: BTreeMap<ResourceId, GroupId>,
    violations: Vec<Violation>,
    log: Vec<LogEntry>,
    events: u64,
}

impl Sim {
    /// A simulator running every node of `model`, all booted at time zero.
    pub fn new(model: ClusterModel, cfg: SimConfig, seed: u64) -> crate::Result<Sim> {
        let model = Arc::new(model);
        let group_of = model
            .groups
            .iter()
            .flat_map(|g| g.resources.iter().map(move |r| (r.clone(), g.id.clone())))
            .collect();
        let nodes = model
            .nodes
            .iter()
            .map(|n| SimNode {
                id: n.id,
                node: None,
                incarnation: 0,
                clock_offset: Duration::ZERO,
                stalled_until: None,
                held: Vec::new(),
                timer_at: None,
                active: BTreeSet::new(),
                ping_ok: true,
            })
            .collect();
        let mut sim = Sim {
            model,
            cfg,
            rng: ChaCha8Rng::seed_from_u64(seed),
            now: Timestamp::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            cuts: BTreeSet::new(),
            injections: Vec::new(),
            group_of,
            violations: Vec::new(),
            log: Vec::new(),
            events: 0,
        };
        let ids: Vec<NodeId> = sim.nodes.iter().map(|n| n.id).collect();
        for id in ids {
            sim.boot(id)?;
        }
        Ok(sim)
    }

    /// The model every node runs.
    pub fn model(&self) -> &Arc<ClusterModel> {
        &self.model
    }

    /// Current virtual time.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Events processed so far.
    pub fn events_processed(&self) -> u64 {
        self.events
    }

    /// Safety violations seen so far.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// The log (empty unless [`SimConfig::record`]).
    pub fn log(&self) -> &[LogEntry] {
        &self.log
    }

    /// The live node `id`, if it runs.
    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.slot(id).and_then(|n| n.node.as_ref())
    }

    /// Whether node `id` runs.
    pub fn is_up(&self, id: NodeId) -> bool {
        self.node(id).is_some()
    }

    /// Nodes where `group` is active now (ground truth).
    pub fn active_nodes(&self, group: &GroupId) -> Vec<NodeId> {
        let Some(spec) = self.model.group(group) else {
            return vec![];
        };
        self.nodes
            .iter()
            .filter(|n| spec.resources.iter().any(|r| n.active.contains(r)))
            .map(|n| n.id)
            .collect()
    }

    /// Where `group` fully runs now: every member active on exactly one node.
    pub fn running_on(&self, group: &GroupId) -> Option<NodeId> {
        let spec = self.model.group(group)?;
        let full: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|n| spec.resources.iter().all(|r| n.active.contains(r)))
            .map(|n| n.id)
            .collect();
        match full.as_slice() {
            [one] if self.active_nodes(group).len() == 1 => Some(*one),
            _ => None,
        }
    }

    /// Apply `fault` at time `at` (or now, if `at` is in the past).
    pub fn schedule(&mut self, at: Timestamp, fault: Fault) {
        let at = at.max(self.now);
        self.push(at, Ev::Fault(fault));
    }

    /// Apply `fault` now.
    pub fn apply(&mut self, fault: Fault) {
        self.schedule(self.now, fault);
        let now = self.now;
        self.run_until(now);
    }

    /// Process every event up to and including `until`.
    pub fn run_until(&mut self, until: Timestamp) {
        while let Some(Reverse(top)) = self.queue.peek() {
            if top.at > until {
                break;
            }
            let Some(Reverse(s)) = self.queue.pop() else {
                break;
            };
            self.now = s.at;
            self.events += 1;
            self.dispatch(s.ev);
        }
        self.now = self.now.max(until);
    }

    /// Run for `d` more virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Run until `pred` holds (checked after every event) or `deadline`; returns whether it held.
    pub fn run_until_pred(
        &mut self,
        deadline: Timestamp,
        mut pred: impl FnMut(&Sim) -> bool,
    ) -> bool {
        if pred(self) {
            return true;
        }
        while let Some(Reverse(top)) = self.queue.peek() {
            if top.at > deadline {
                break;
            }
            let Some(Reverse(s)) = self.queue.pop() else {
                break;
            };
            self.now = s.at;
            self.events += 1;
            self.dispatch(s.ev);
            if pred(self) {
                return true;
            }
        }
        self.now = self.now.max(deadline);
        pred(self)
    }

    // ---------------------------------------------------------------- internals

    fn slot(&self, id: NodeId) -> Option<&SimNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    fn idx(&self, id: NodeId) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    fn push(&mut self, at: Timestamp, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            ev,
        }));
    }

    fn record(&mut self, node: NodeId, kind: LogKind) {
        if self.cfg.record {
            self.log.push(LogEntry {
                at: self.now,
                node,
                kind,
            });
        }
    }

    fn local_now(&self, i: usize) -> Timestamp {
        self.now + self.nodes[i].clock_offset
    }

    fn boot(&mut self, id: NodeId) -> crate::Result<()> {
        let Some(i) = self.idx(id) else { return Ok(()) };
        if self.nodes[i].node.is_some() {
            return Ok(());
        }
        let inc = self.nodes[i].incarnation + 1;
        let local = self.local_now(i);
        let mut node = Node::new(Arc::clone(&self.model), id, inc, local)?;
        if !self.nodes[i].ping_ok {
            node.handle_ping(local, false);
        }
        let n = &mut self.nodes[i];
        n.incarnation = inc;
        n.node = Some(node);
        n.stalled_until = None;
        n.held.clear();
        n.timer_at = None;
        self.record(id, LogKind::Booted { incarnation: inc });
        self.after_call(i);
        Ok(())
    }

    fn crash(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.node = None;
        n.active.clear();
        n.held.clear();
        n.timer_at = None;
        n.stalled_until = None;
    }

    fn dispatch(&mut self, ev: Ev) {
        // Events for a stalled node wait until it resumes.
        let target = match &ev {
            Ev::Deliver { to, .. } | Ev::Unreachable { to, .. } | Ev::Exit { to, .. } => Some(*to),
            Ev::Timer { node } | Ev::ActionDone { node, .. } => Some(*node),
            Ev::FenceDone { fencer, .. } => Some(*fencer),
            Ev::Resume { .. } | Ev::Fault(_) => None,
        };
        if let Some(i) = target.and_then(|t| self.idx(t))
            && let Some(until) = self.nodes[i].stalled_until
            && self.now < until
        {
            if !matches!(ev, Ev::Timer { .. }) {
                self.nodes[i].held.push(ev);
            }
            return;
        }
        match ev {
            Ev::Deliver {
                to,
                from,
                link,
                msg,
            } => {
                let Some(i) = self.idx(to) else { return };
                let now = self.local_now(i);
                let Some(node) = self.nodes[i].node.as_mut() else {
                    // Nothing listens on a crashed node; a host that survived its daemon
                    // answers "port unreachable" (a lossy path may eat that too).
                    if self.cfg.unreachable_answers {
                        self.send_unreachable(from, to, link);
                    }
                    return;
                };
                node.handle_message(now, from, link, *msg);
                self.after_call(i);
            }
            Ev::Unreachable { to, about, link } => {
                self.call_node(to, |n, now| n.handle_unreachable(now, about, link));
            }
            Ev::Exit {
                to,
                about,
                incarnation,
            } => self.call_node(to, |n, now| n.handle_peer_exit(now, about, incarnation)),
            Ev::Timer { node } => {
                let Some(i) = self.idx(node) else { return };
                if self.nodes[i].timer_at != Some(self.now) {
                    return; // superseded
                }
                self.nodes[i].timer_at = None;
                let now = self.local_now(i);
                let Some(n) = self.nodes[i].node.as_mut() else {
                    return;
                };
                n.handle_timeout(now);
                self.after_call(i);
            }
            Ev::ActionDone {
                node,
                inc,
                id,
                group,
                resource,
                op,
                code,
            } => {
                let Some(i) = self.idx(node) else { return };
                if self.nodes[i].incarnation != inc || self.nodes[i].node.is_none() {
                    return;
                }
                if op == ResourceOp::Stop && code == OcfCode::Success {
                    self.nodes[i].active.remove(&resource);
                }
                self.record(
                    node,
                    LogKind::ActionDone {
                        group,
                        resource,
                        op,
                        code,
                    },
                );
                let now = self.local_now(i);
                if let Some(n) = self.nodes[i].node.as_mut() {
                    n.handle_action_done(now, id, code);
                }
                self.after_call(i);
            }
            Ev::FenceDone {
                fencer,
                inc,
                target,
            } => {
                let Some(fi) = self.idx(fencer) else { return };
                if self.nodes[fi].incarnation != inc || self.nodes[fi].node.is_none() {
                    return; // the fencer died: the request never completed
                }
                if let Some(ti) = self.idx(target)
                    && self.nodes[ti].node.is_some()
                {
                    self.crash(ti);
                    if let Some(d) = self.cfg.fence_reboot {
                        let at = self.now + d;
                        self.push(at, Ev::Fault(Fault::Restart(target)));
                    }
                }
                self.record(target, LogKind::Fenced(target));
                let now = self.local_now(fi);
                if let Some(n) = self.nodes[fi].node.as_mut() {
                    n.handle_fence_done(now, target, true);
                }
                self.after_call(fi);
            }
            Ev::Resume { node } => {
                let Some(i) = self.idx(node) else { return };
                if self.nodes[i].stalled_until.is_some_and(|u| u <= self.now) {
                    self.nodes[i].stalled_until = None;
                    let held = std::mem::take(&mut self.nodes[i].held);
                    for ev in held {
                        self.dispatch(ev);
                    }
                    // Timers that should have fired during the stall fire now.
                    self.nodes[i].timer_at = None;
                    let now = self.local_now(i);
                    if let Some(n) = self.nodes[i].node.as_mut() {
                        n.handle_timeout(now);
                    }
                    self.after_call(i);
                }
            }
            Ev::Fault(f) => self.apply_fault(f),
        }
    }

    fn apply_fault(&mut self, f: Fault) {
        let subject = match &f {
            Fault::Crash(n)
            | Fault::Restart(n)
            | Fault::Stall(n, _)
            | Fault::ClockJump(n, _)
            | Fault::Ping(n, _)
            | Fault::Standby(n)
            | Fault::Online(n)
            | Fault::Operator(n, ..)
            | Fault::Inject(n, ..)
            | Fault::Unreachable(n, _)
            | Fault::Cut(n, _) => *n,
            Fault::Partition(s) => s.first().copied().unwrap_or(NodeId(0)),
            Fault::Heal | Fault::Loss(_) => NodeId(0),
        };
        self.record(subject, LogKind::Fault(f.clone()));
        match f {
            Fault::Crash(n) => {
                if let Some(i) = self.idx(n) {
                    let was_up = self.nodes[i].node.is_some();
                    self.crash(i);
                    if was_up && self.cfg.exit_notices {
                        self.send_exit_notices(i);
                    }
                }
            }
            Fault::Restart(n) => {
                // A model that passed Node::new once cannot fail it later.
                let _ = self.boot(n);
            }
            Fault::Partition(side) => {
                let all: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
                for &a in &side {
                    for &b in all.iter().filter(|b| !side.contains(b)) {
                        self.cuts.insert((a, b));
                        self.cuts.insert((b, a));
                    }
                }
            }
            Fault::Cut(a, b) => {
                self.cuts.insert((a, b));
            }
            Fault::Heal => self.cuts.clear(),
            Fault::Loss(p) => self.cfg.loss = p.clamp(0.0, 1.0),
            Fault::Stall(n, d) => {
                if let Some(i) = self.idx(n)
                    && self.nodes[i].node.is_some()
                {
                    let until = self.now + d;
                    let u = self.nodes[i].stalled_until.map_or(until, |x| x.max(until));
                    self.nodes[i].stalled_until = Some(u);
                    self.push(u, Ev::Resume { node: n });
                }
            }
            Fault::ClockJump(n, d) => {
                if let Some(i) = self.idx(n) {
                    self.nodes[i].clock_offset += d;
                    self.rearm(i);
                }
            }
            Fault::Ping(n, ok) => {
                if let Some(i) = self.idx(n) {
                    self.nodes[i].ping_ok = ok;
                }
                self.call_node(n, |node, now| node.handle_ping(now, ok));
            }
            Fault::Standby(n) => self.call_node(n, |node, now| node.request_standby(now)),
            Fault::Online(n) => self.call_node(n, |node, now| node.request_online(now)),
            Fault::Operator(n, g, pref) => {
                self.call_node(n, |node, now| {
                    node.request_placement(now, &g, pref);
                });
            }
            Fault::Inject(n, r, op, code) => self.injections.push((n, r, op, code)),
            Fault::Unreachable(to, about) => {
                for l in 0..self.model.links.len().max(1) {
                    let link = LinkId(u8::try_from(l).unwrap_or(u8::MAX));
                    self.push(self.now, Ev::Unreachable { to, about, link });
                }
            }
        }
    }

    /// Carry `about`'s "port unreachable" answer back to `to` like a message.
    fn send_unreachable(&mut self, to: NodeId, about: NodeId, link: LinkId) {
        if let Some(at) = self.arrival(about, to) {
            self.push(at, Ev::Unreachable { to, about, link });
        }
    }

    /// Tell every peer not cut off from crashed node `i` that its instance exited (over TCP:
    /// not lost, only delayed).
    fn send_exit_notices(&mut self, i: usize) {
        let about = self.nodes[i].id;
        let incarnation = self.nodes[i].incarnation;
        let peers: Vec<NodeId> = self
            .nodes
            .iter()
            .map(|n| n.id)
            .filter(|&n| n != about && !self.cuts.contains(&(about, n)))
            .collect();
        for to in peers {
            let d = self.rand_between(self.cfg.delay_min, self.cfg.delay_max);
            let at = self.now + d;
            self.push(
                at,
                Ev::Exit {
                    to,
                    about,
                    incarnation,
                },
            );
        }
    }

    /// When a packet sent now from `from` reaches `to`; `None` if cut or lost.
    fn arrival(&mut self, from: NodeId, to: NodeId) -> Option<Timestamp> {
        if self.cuts.contains(&(from, to)) {
            return None;
        }
        if self.cfg.loss > 0.0 && self.rng.gen_bool(self.cfg.loss) {
            return None;
        }
        let d = self.rand_between(self.cfg.delay_min, self.cfg.delay_max);
        Some(self.now + d)
    }

    /// Call `f` on node `id` at its local time if it runs, then handle what it output.
    fn call_node(&mut self, id: NodeId, f: impl FnOnce(&mut Node, Timestamp)) {
        let Some(i) = self.idx(id) else { return };
        let now = self.local_now(i);
        if let Some(node) = self.nodes[i].node.as_mut() {
            f(node, now);
            self.after_call(i);
        }
    }

    /// Drain a node's outputs and re-arm its timer.
    fn after_call(&mut self, i: usize) {
        let id = self.nodes[i].id;
        while let Some(out) = self.nodes[i].node.as_mut().and_then(Node::poll_output) {
            match out {
                Output::Send { to, link, msg } => self.send(id, to, link, msg),
                Output::Action(a) => self.start_action(i, a),
                Output::Fence { node } => {
                    let at = self.now + self.cfg.fence_delay;
                    let inc = self.nodes[i].incarnation;
                    self.push(
                        at,
                        Ev::FenceDone {
                            fencer: id,
                            inc,
                            target: node,
                        },
                    );
                }
                Output::Event(e) => self.record(id, LogKind::Event(e)),
            }
        }
        self.rearm(i);
    }

    fn rearm(&mut self, i: usize) {
        let Some(node) = self.nodes[i].node.as_ref() else {
            return;
        };
        let Some(local) = node.poll_timeout() else {
            return;
        };
        let offset = self.nodes[i].clock_offset;
        let global = Timestamp(
            local
                .0
                .saturating_sub(u64::try_from(offset.as_nanos()).unwrap_or(u64::MAX)),
        )
        .max(self.now);
        if self.nodes[i].timer_at != Some(global) {
            self.nodes[i].timer_at = Some(global);
            let id = self.nodes[i].id;
            self.push(global, Ev::Timer { node: id });
        }
    }

    fn send(&mut self, from: NodeId, to: Option<NodeId>, link: Option<LinkId>, msg: Message) {
        let recipients: Vec<NodeId> = match to {
            Some(t) => vec![t],
            None => self
                .nodes
                .iter()
                .map(|n| n.id)
                .filter(|&n| n != from)
                .collect(),
        };
        let nlinks = self.model.links.len().max(1);
        let links: Vec<LinkId> = match link {
            Some(l) => vec![l],
            None => (0..nlinks)
                .map(|l| LinkId(u8::try_from(l).unwrap_or(u8::MAX)))
                .collect(),
        };
        for &r in &recipients {
            for &l in &links {
                let Some(at) = self.arrival(from, r) else {
                    continue;
                };
                self.push(
                    at,
                    Ev::Deliver {
                        to: r,
                        from,
                        link: l,
                        msg: Box::new(msg.clone()),
                    },
                );
            }
        }
    }

    fn rand_between(&mut self, a: Duration, b: Duration) -> Duration {
        if b <= a {
            return a;
        }
        let (a, b) = (a.as_nanos() as u64, b.as_nanos() as u64);
        Duration::from_nanos(self.rng.gen_range(a..=b))
    }

    fn start_action(&mut self, i: usize, a: ResourceAction) {
        let id = self.nodes[i].id;
        let d = match a.op {
            ResourceOp::Start => self.rand_between(self.cfg.start_time.0, self.cfg.start_time.1),
            ResourceOp::Stop => self.rand_between(self.cfg.stop_time.0, self.cfg.stop_time.1),
            ResourceOp::Monitor => self.cfg.monitor_time,
        };
        let injected = self
            .injections
            .iter()
            .position(|(n, r, op, _)| *n == id && *r == a.resource && *op == a.op)
            .map(|k| self.injections.remove(k).3);
        let mut code = injected.unwrap_or(OcfCode::Success);
        if a.op == ResourceOp::Monitor
            && injected.is_none()
            && !self.nodes[i].active.contains(&a.resource)
        {
            code = OcfCode::NotRunning;
        }
        if a.op == ResourceOp::Start {
            self.nodes[i].active.insert(a.resource.clone());
            self.check_safety(&a.resource);
        }
        self.record(id, LogKind::Action(a.clone()));
        let at = self.now + d.min(a.timeout);
        let code = if d > a.timeout {
            OcfCode::Timeout
        } else {
            code
        };
        let inc = self.nodes[i].incarnation;
        self.push(
            at,
            Ev::ActionDone {
                node: id,
                inc,
                id: a.id,
                group: a.group,
                resource: a.resource,
                op: a.op,
                code,
            },
        );
    }

    fn check_safety(&mut self, r: &ResourceId) {
        let Some(g) = self.group_of.get(r).cloned() else {
            return;
        };
        let on = self.active_nodes(&g);
        if on.len() > 1 {
            self.violations.push(Violation {
                at: self.now,
                group: g,
                nodes: on,
            });
        }
    }
}

/// A random fault schedule over `[from, until)` for a cluster of `nodes`: crashes followed by
/// restarts, partitions and one-way cuts followed by heals, loss changes, operators'
/// requests (standby followed by online, a group's prefer or avoid followed by clear; both
/// undone by `until`) and forged "port unreachable" reports; with `stalls` also timer stalls
/// and clock jumps. Used by the property
/// tests.
pub fn random_faults(
    rng: &mut ChaCha8Rng,
    nodes: &[NodeId],
    groups: &[GroupId],
    from: Timestamp,
    until: Timestamp,
    count: usize,
    stalls: bool,
) -> Vec<(Timestamp, Fault)> {
    let mut out = Vec::new();
    let span = until.0.saturating_sub(from.0).max(1);
    for _ in 0..count {
        let at = Timestamp(from.0 + rng.gen_range(0..span));
        let n = nodes[rng.gen_range(0..nodes.len())];
        let back = at + Duration::from_millis(rng.gen_range(100..1500));
        match rng.gen_range(0..if stalls { 9 } else { 7 }) {
            0 => {
                out.push((at, Fault::Crash(n)));
                out.push((back, Fault::Restart(n)));
            }
            1 => {
                let side: Vec<NodeId> = nodes
                    .iter()
                    .copied()
                    .filter(|_| rng.gen_bool(0.5))
                    .collect();
                out.push((at, Fault::Partition(side)));
                out.push((back, Fault::Heal));
            }
            2 => {
                let m = nodes[rng.gen_range(0..nodes.len())];
                if m != n {
                    out.push((at, Fault::Cut(n, m)));
                    out.push((back, Fault::Heal));
                }
            }
            3 => {
                out.push((at, Fault::Loss(rng.gen_range(0.0..0.3))));
                out.push((back, Fault::Loss(0.0)));
            }
            4 => {
                // Online by the end of the window: two nodes in standby at once legitimately
                // run nothing, and callers check that groups run once the faults are over.
                out.push((at, Fault::Standby(n)));
                out.push((back.min(until), Fault::Online(n)));
            }
            5 if !groups.is_empty() => {
                let g = groups[rng.gen_range(0..groups.len())].clone();
                let pref = if rng.gen_bool(0.5) {
                    OperatorPref::Prefer
                } else {
                    OperatorPref::Avoid
                };
                out.push((at, Fault::Operator(n, g.clone(), pref)));
                out.push((back.min(until), Fault::Operator(n, g, OperatorPref::None)));
            }
            5 => {}
            6 => {
                let m = nodes[rng.gen_range(0..nodes.len())];
                if m != n {
                    out.push((at, Fault::Unreachable(n, m)));
                }
            }
            7 => out.push((
                at,
                Fault::Stall(n, Duration::from_millis(rng.gen_range(50..1500))),
            )),
            _ => out.push((
                at,
                Fault::ClockJump(n, Duration::from_millis(rng.gen_range(50..1000))),
            )),
        }
    }
    out.sort_by_key(|(t, _)| *t);
    out
}
