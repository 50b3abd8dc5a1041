//! The tokio node: owns the media, the transport session, the timers and the resource tasks,
//! and drives `ha_core::node::Node` with them. All cluster logic stays in ha-core; this loop
//! only moves bytes, time and action outcomes in and outputs out.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ha_core::message::{GroupState, Message, OperatorPref};
use ha_core::model::ClusterModel;
use ha_core::node::{ActionId, Event, Node, NodeStatus, Output, ResourceAction};
use ha_core::resource::{AgentOptions, Resource, agent_for, run_with_timeout};
use ha_core::{GroupId, LinkId, NodeId, OcfCode, ResourceId, Timestamp};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::alarm::Alarm;
use crate::auth::{Counters, Keyring};
use crate::exit_watch::{ExitWatch, PeerExit};
use crate::media::{Inbound, Media, RecvBatch, UnreachableWatch};
use crate::operator_state::OperatorState;
use crate::ping::{PingConfig, spawn_pinger};
use crate::reannounce::Reannounce;
use crate::session::{Session, SessionConfig};
use crate::wire::ClusterId;
use crate::{Error, Result};

/// Longest time the status snapshot's counters may lag behind.
pub const STATUS_REFRESH: Duration = Duration::from_millis(100);

/// Keepalives up to this short make [`NodeRuntime::start`] drain the UDP media from the
/// node's timer ticks instead of waking for every received frame (see
/// [`RuntimeConfig::poll_media`]): received control messages then wait up to one keepalive,
/// 20 ms at most, which no handshake notices; liveness uses the kernel's arrival stamps.
pub const POLL_MEDIA_MAX_KEEPALIVE: Duration = Duration::from_millis(20);

/// A fencing hook: power off or reset `node`, true on success.
pub type FenceFn =
    Arc<dyn Fn(NodeId) -> futures::future::BoxFuture<'static, bool> + Send + Sync + 'static>;

/// What a [`NodeRuntime`] needs.
pub struct RuntimeConfig {
    /// The cluster.
    pub model: Arc<ClusterModel>,
    /// This node.
    pub me: NodeId,
    /// Where agents live and the built-in kinds (register `IPaddr` with
    /// [`crate::floating_ip::register`]).
    pub agents: AgentOptions,
    /// Incarnation; `None`: nanoseconds since the Unix epoch, which grows across restarts.
    pub incarnation: Option<u64>,
    /// Ping probing of `model.ping_nodes` (`None`: defaults when ping nodes are configured).
    pub ping: Option<PingConfig>,
    /// Fencing hook; without one a fence request reports failure (and ha-core retries).
    pub fence: Option<FenceFn>,
    /// Transport tuning; `None`: derived from the model's timing. Its `me` and `incarnation`
    /// are overridden by the fields above.
    pub session: Option<SessionConfig>,
    /// Drain the UDP media on the node's timer ticks (at least every keepalive) instead of
    /// waking for each received frame: halves the wake-ups of a short keepalive, at the price
    /// of up to one keepalive of extra latency for received messages. `None`: on when the
    /// model's keepalive is at most [`POLL_MEDIA_MAX_KEEPALIVE`].
    pub poll_media: Option<bool>,
    /// Keep the operator's standby and move/ban requests in this file across restarts
    /// ([`crate::operator_state`]); `None`: they last as long as the process.
    pub state_file: Option<PathBuf>,
    /// Act on "port unreachable" answers to our unicast heartbeats: the peer's host is up but
    /// its daemon is gone, so in two-node and no-quorum clusters the link is declared down as
    /// soon as its next heartbeat is overdue instead of after deadtime
    /// ([`ha_core::Node::handle_unreachable`]). Default on.
    pub unreachable_reports: bool,
    /// Hold a TCP connection open to every unicast peer ([`crate::exit_watch`]): the peer's
    /// host closes it when its daemon dies, and in two-node and no-quorum clusters the peer is
    /// declared dead at once ([`ha_core::Node::handle_peer_exit`]). Default on.
    pub exit_watch: bool,
}

impl std::fmt::Debug for RuntimeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeConfig")
            .field("me", &self.me)
            .field("incarnation", &self.incarnation)
            .finish_non_exhaustive()
    }
}

impl RuntimeConfig {
    /// Defaults for node `me` of `model`.
    pub fn new(model: Arc<ClusterModel>, me: NodeId) -> Self {
        RuntimeConfig {
            model,
            me,
            agents: AgentOptions::from_env(),
            incarnation: None,
            ping: None,
            fence: None,
            session: None,
            poll_media: None,
            state_file: None,
            unreachable_reports: true,
            exit_watch: true,
        }
    }
}

/// A serializable snapshot: the state machine's view plus the transport counters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuntimeStatus {
    /// ha-core's status.
    pub node: NodeStatus,
    /// Frames sent, accepted and dropped (by reason).
    pub transport: Counters,
    /// Control messages waiting for acknowledgement.
    pub pending_control: usize,
    /// Resource actions running.
    pub running_actions: usize,
}

enum Command {
    /// Standby (true) or online (false); acknowledged (always true) once applied and in the
    /// status.
    Standby(bool, oneshot::Sender<bool>),
    /// An operator's placement request; acknowledged (false: no such group) once applied.
    Place(GroupId, OperatorPref, oneshot::Sender<bool>),
    Shutdown {
        timeout: Duration,
        done: oneshot::Sender<bool>,
    },
}

/// Handle to a running node.
#[derive(Debug)]
pub struct NodeRuntime {
    cmd: mpsc::Sender<Command>,
    events: broadcast::Sender<Event>,
    status: watch::Receiver<RuntimeStatus>,
    task: JoinHandle<Result<()>>,
}

/// Operator commands for a running node, detached from its [`NodeRuntime`] (cheap to clone;
/// the commands fail once the node has stopped).
#[derive(Debug, Clone)]
pub struct NodeControl {
    cmd: mpsc::Sender<Command>,
    status: watch::Receiver<RuntimeStatus>,
}

impl NodeControl {
    /// Hand every group over to the peers but keep running (heartbeat's `hb_standby`).
    /// Returns once the node is in standby and its status says so (the handover follows).
    pub async fn standby(&self) -> Result<()> {
        self.set_standby(true).await
    }

    /// Leave standby (eligible for groups again); returns once the status says so.
    pub async fn online(&self) -> Result<()> {
        self.set_standby(false).await
    }

    /// Ask for `group` on this node ([`OperatorPref::Prefer`], heartbeat's `hb_takeover`), keep
    /// it away ([`OperatorPref::Avoid`]) or clear the request ([`OperatorPref::None`]); see
    /// [`ha_core::node::Node::request_placement`]. Returns once applied and in the status.
    pub async fn place(&self, group: &GroupId, pref: OperatorPref) -> Result<()> {
        if self
            .apply(|ack| Command::Place(group.clone(), pref, ack))
            .await?
        {
            Ok(())
        } else {
            Err(Error::Control(format!(
                "no group `{group}` in this cluster"
            )))
        }
    }

    async fn set_standby(&self, on: bool) -> Result<()> {
        self.apply(|ack| Command::Standby(on, ack))
            .await
            .map(|_| ())
    }

    /// Send the command `make` builds around an acknowledgement and wait for it.
    async fn apply(&self, make: impl FnOnce(oneshot::Sender<bool>) -> Command) -> Result<bool> {
        let (ack, done) = oneshot::channel();
        self.send(make(ack)).await?;
        done.await
            .map_err(|_| Error::Config("node runtime stopped before applying the command".into()))
    }

    /// The latest status snapshot.
    pub fn status(&self) -> RuntimeStatus {
        self.status.borrow().clone()
    }

    async fn send(&self, c: Command) -> Result<()> {
        self.cmd
            .send(c)
            .await
            .map_err(|_| Error::Config("node runtime is not running".into()))
    }
}

/// This host's node in `model`: `wanted` is a node name or wire id; `None` means the host name
/// (`uname -n`), as heartbeat matches its `node` lines. The error lists the cluster's nodes.
pub fn local_node(model: &ClusterModel, wanted: Option<&str>) -> Result<NodeId> {
    let wanted = match wanted {
        Some(w) => w.to_string(),
        None => nix::unistd::gethostname()
            .map_err(|e| {
                Error::Config(format!(
                    "no node given and the host name is unreadable: {e}"
                ))
            })?
            .to_string_lossy()
            .into_owned(),
    };
    if let Some(n) = model.nodes.iter().find(|n| n.name == wanted) {
        return Ok(n.id);
    }
    if let Ok(id) = wanted.parse::<u16>()
        && model.node(NodeId(id)).is_some()
    {
        return Ok(NodeId(id));
    }
    let names: Vec<&str> = model.nodes.iter().map(|n| n.name.as_str()).collect();
    Err(Error::Config(format!(
        "node `{wanted}` is not in the cluster (nodes: {}); pass --node NAME",
        names.join(", ")
    )))
}

/// The default incarnation: wall-clock nanoseconds, larger after every restart.
pub fn default_incarnation() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl NodeRuntime {
    /// Open the model's media and start the node. Needs a tokio runtime.
    pub fn start(cfg: RuntimeConfig) -> Result<NodeRuntime> {
        let (tx, rx) = mpsc::channel(1024);
        let poll = cfg
            .poll_media
            .unwrap_or(cfg.model.timing.keepalive <= POLL_MEDIA_MAX_KEEPALIVE);
        let media = Media::open_with(&cfg.model.links, &tx, poll)?;
        Self::start_with_media(cfg, media, tx, rx)
    }

    /// Start with media opened by the caller; `inbound` must be the receiving end of the
    /// channel the media deliver to (`keep` is a sender of it kept alive while running).
    pub fn start_with_media(
        cfg: RuntimeConfig,
        media: Media,
        keep: mpsc::Sender<Inbound>,
        inbound: mpsc::Receiver<Inbound>,
    ) -> Result<NodeRuntime> {
        let model = cfg.model.clone();
        let me = cfg.me;
        if model.node(me).is_none() {
            return Err(Error::Config(format!(
                "node {me} is not in the cluster model"
            )));
        }
        let keyring = Keyring::from_spec(&model.auth)?;
        let watch_keyring = keyring.clone();
        let incarnation = cfg.incarnation.unwrap_or_else(default_incarnation);
        let mut resources: BTreeMap<ResourceId, Arc<dyn Resource>> = BTreeMap::new();
        for (id, spec) in &model.resources {
            let r = agent_for(spec, &cfg.agents)?;
            resources.insert(id.clone(), Arc::from(r));
        }
        let session_cfg = cfg.session.clone().unwrap_or_else(|| {
            let mut s = SessionConfig::new(
                ClusterId::from_name(&model.name),
                me,
                incarnation,
                model.nodes.iter().map(|n| n.id).collect(),
            );
            s.links = u8::try_from(model.links.len()).unwrap_or(u8::MAX);
            // Resend control messages about every other heartbeat, but not absurdly often.
            s.resend_interval = (model.timing.keepalive * 2).max(Duration::from_millis(20));
            s.nack_interval = (model.timing.keepalive / 2).max(Duration::from_millis(2));
            s
        });
        let session = Session::<Message>::new(
            SessionConfig {
                incarnation,
                me,
                ..session_cfg
            },
            keyring,
        );
        let start = Instant::now();
        let mut node = Node::new(model.clone(), me, incarnation, Timestamp::ZERO)?;
        let operator = match &cfg.state_file {
            Some(path) => {
                let mut st = OperatorState::load(path)?;
                apply_operator_state(&mut node, &mut st, path);
                Some((path.clone(), st))
            }
            None => None,
        };
        let (cmd_tx, cmd_rx) = mpsc::channel(8);
        let (ev_tx, _) = broadcast::channel(1024);
        let (st_tx, st_rx) = watch::channel(RuntimeStatus {
            node: node.status(),
            transport: Counters::default(),
            pending_control: 0,
            running_actions: 0,
        });
        let (ping_tx, ping_rx) = mpsc::channel(16);
        let pinger = if model.ping_nodes.is_empty() {
            None
        } else {
            let pc = cfg.ping.clone().unwrap_or_else(|| {
                PingConfig::new(model.ping_nodes.clone(), model.timing.keepalive)
            });
            Some(spawn_pinger(pc, ping_tx)?)
        };
        let media_polled = media.has_polled();
        let unreachable = if cfg.unreachable_reports {
            media.unreachable_watch()?
        } else {
            None
        };
        let mut others = model.nodes.iter().map(|n| n.id).filter(|&n| n != me);
        let lone_peer = match (others.next(), others.next()) {
            (Some(p), None) => Some(p),
            _ => None,
        };
        let driver = Driver {
            node,
            session,
            media,
            start,
            resources,
            fence: cfg.fence,
            events: ev_tx.clone(),
            status: st_tx,
            running: 0,
            status_dirty: true,
            last_status: start,
            fed: std::cell::Cell::new(Timestamp::ZERO),
            rx_batch: media_polled.then(|| Box::new(RecvBatch::default())),
            poll_every: model.timing.keepalive.max(Duration::from_millis(1)),
            reannounce: Reannounce::new(),
            unreachable,
            senders: BTreeMap::new(),
            lone_peer,
            operator,
            group_members: model
                .groups
                .iter()
                .map(|g| (g.id.clone(), g.resources.clone()))
                .collect(),
            _keep: keep,
            _pinger: pinger,
            _exit_watch: None,
        };
        let (exit_tx, exit_rx) = mpsc::channel(16);
        let exit_watch = cfg.exit_watch.then(|| {
            let id = crate::exit_watch::Identity {
                me,
                incarnation,
                nodes: model.nodes.iter().map(|n| n.id).collect(),
                keyring: watch_keyring,
            };
            ExitWatch::start(&driver.media.watch_links(), id, exit_tx)
        });
        let driver = Driver {
            _exit_watch: exit_watch,
            ..driver
        };
        let task = tokio::spawn(driver.run(inbound, cmd_rx, ping_rx, exit_rx));
        Ok(NodeRuntime {
            cmd: cmd_tx,
            events: ev_tx,
            status: st_rx,
            task,
        })
    }

    /// Events from now on (every state change of the node).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The latest status snapshot.
    pub fn status(&self) -> RuntimeStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every new status snapshot.
    pub fn watch_status(&self) -> watch::Receiver<RuntimeStatus> {
        self.status.clone()
    }

    /// Hand every group over to the peers but keep running.
    pub async fn standby(&self) -> Result<()> {
        self.control().standby().await
    }

    /// Leave standby: eligible for groups again (see [`ha_core::node::Node::request_online`]).
    pub async fn online(&self) -> Result<()> {
        self.control().online().await
    }

    /// A cloneable handle for operator commands and status (e.g. for [`crate::control`]).
    pub fn control(&self) -> NodeControl {
        NodeControl {
            cmd: self.cmd.clone(),
            status: self.status.clone(),
        }
    }

    /// Graceful shutdown: standby, wait (at most `timeout`) until every group is stopped here
    /// and handed over, then stop. Returns whether the handover completed in time.
    pub async fn shutdown(self, timeout: Duration) -> Result<bool> {
        let (done, rx) = oneshot::channel();
        if self
            .cmd
            .send(Command::Shutdown { timeout, done })
            .await
            .is_err()
        {
            return self.join().await.map(|()| false);
        }
        let handed_over = rx.await.unwrap_or(false);
        self.join().await?;
        Ok(handed_over)
    }

    /// Run until SIGTERM or SIGINT, then [`Self::shutdown`] with `timeout`: a daemon's stop hands
    /// its groups to a peer first (heartbeat's standby on stop). SIGKILL stays a crash.
    pub async fn shutdown_on_signal(self, timeout: Duration) -> Result<bool> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())
            .map_err(|e| Error::io("install the SIGTERM handler", e))?;
        let mut int = signal(SignalKind::interrupt())
            .map_err(|e| Error::io("install the SIGINT handler", e))?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("stop requested: handing groups over");
        self.shutdown(timeout).await
    }

    /// Stop at once, without handing anything over (resources stay as they are).
    pub fn abort(&self) {
        self.task.abort();
    }

    async fn join(self) -> Result<()> {
        match self.task.await {
            Ok(r) => r,
            Err(e) if e.is_cancelled() => Ok(()),
            Err(e) => Err(Error::Config(format!("node runtime task failed: {e}"))),
        }
    }
}

struct Driver {
    node: Node,
    session: Session<Message>,
    media: Media,
    start: Instant,
    resources: BTreeMap<ResourceId, Arc<dyn Resource>>,
    fence: Option<FenceFn>,
    events: broadcast::Sender<Event>,
    status: watch::Sender<RuntimeStatus>,
    running: usize,
    status_dirty: bool,
    last_status: Instant,
    /// Latest time handed to the state machine.
    fed: std::cell::Cell<Timestamp>,
    /// Scratch buffers for draining polled media (`None` when none is polled).
    rx_batch: Option<Box<RecvBatch>>,
    /// Longest sleep while media are polled: frames must not wait longer than this.
    poll_every: Duration,
    /// When to announce held floating IPs again (a peer may have taken them over briefly).
    reannounce: Reannounce,
    /// Resources of each group, for [`crate::floating_ip::reannounce`].
    group_members: BTreeMap<GroupId, Vec<ResourceId>>,
    /// Wakes on "port unreachable" from a peer's host (taken by `run`).
    unreachable: Option<UnreachableWatch>,
    /// Which peer each (link, source address) carried authenticated frames from: tells whom
    /// a "port unreachable" is about.
    senders: BTreeMap<(LinkId, IpAddr), NodeId>,
    /// The only peer of a two-node cluster (every report is about it).
    lone_peer: Option<NodeId>,
    /// The operator's requests and the file they are kept in, if any.
    operator: Option<(PathBuf, OperatorState)>,
    _keep: mpsc::Sender<Inbound>,
    _pinger: Option<crate::ping::Pinger>,
    /// Connections peers watch us through, and ours to them (closed when dropped).
    _exit_watch: Option<ExitWatch>,
}

/// Remember that `from` sends on `link` from `src` (a map write only when it changes).
fn learn_sender(
    senders: &mut BTreeMap<(LinkId, IpAddr), NodeId>,
    link: LinkId,
    src: SocketAddr,
    from: NodeId,
) {
    let key = (link, src.ip());
    if senders.get(&key) != Some(&from) {
        senders.insert(key, from);
    }
}

/// Wait for the error watch, forever without one.
async fn wait_unreachable(w: Option<&UnreachableWatch>) -> Result<()> {
    match w {
        Some(w) => w.wait().await,
        None => std::future::pending().await,
    }
}

enum Done {
    Action(ActionId, OcfCode),
    Fence(NodeId, bool),
}

/// Apply the operator's saved requests to a fresh node, dropping groups the model no longer
/// has (the file is rewritten at the next command).
fn apply_operator_state(node: &mut Node, st: &mut OperatorState, path: &Path) {
    if st.standby {
        tracing::info!(path = %path.display(), "starting in standby (operator state)");
        node.request_standby(Timestamp::ZERO);
    }
    st.groups.retain(|g, pref| {
        let known = node.request_placement(Timestamp::ZERO, g, *pref);
        if known {
            tracing::info!(group = %g, ?pref, "operator request restored");
        } else {
            tracing::warn!(group = %g, path = %path.display(), "operator state names a group the cluster no longer has; dropped");
        }
        known
    });
}

impl Driver {
    /// Update the operator state and rewrite its file (when one is configured).
    fn keep_operator_state(&mut self, change: impl FnOnce(&mut OperatorState)) {
        if let Some((path, st)) = &mut self.operator {
            change(st);
            if let Err(e) = st.save(path) {
                // The request applies anyway; only its survival across a restart is lost.
                tracing::error!(error = %e, "cannot keep the operator's request across restarts");
            }
        }
    }

    fn now(&self) -> Timestamp {
        let t = Timestamp::from_duration(self.start.elapsed());
        self.fed.set(t);
        t
    }

    async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut cmds: mpsc::Receiver<Command>,
        mut ping: mpsc::Receiver<bool>,
        mut exits: mpsc::Receiver<PeerExit>,
    ) -> Result<()> {
        let (done_tx, mut done_rx) = mpsc::channel::<Done>(256);
        // Offsets of the alarm count from its creation, a little after `self.start`: it
        // never fires before `self.now()` reaches the deadline.
        let mut alarm = Alarm::new()?;
        let skew = self.start.elapsed();
        let mut shutdown: Option<(tokio::time::Instant, oneshot::Sender<bool>)> = None;
        let mut standby_done = false;
        // Operator commands applied but not yet in the status snapshot.
        let mut acks: Vec<(oneshot::Sender<bool>, bool)> = Vec::new();
        // A local: its future lives in the select below while the handlers borrow `self`.
        let mut unreachable = self.unreachable.take();
        loop {
            standby_done |= self.pump(&done_tx);
            for (ack, applied) in acks.drain(..) {
                let _ = ack.send(applied);
            }
            // StandbyDone means our groups are stopped; stay until a peer actually runs them,
            // because it may still need our grant (leaving now would make it wait for our
            // deadtime instead).
            if standby_done
                && shutdown.is_some()
                && self.handed_over()
                && let Some((_, done)) = shutdown.take()
            {
                tracing::info!(node = %self.node.id(), "groups handed over; shutting down");
                // Last word: the frames the final pump queued are already sent.
                let _ = done.send(true);
                return Ok(());
            }
            let next = [self.node.poll_timeout(), self.session.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let mut wake = next.map(|t| t.as_duration());
            if self.rx_batch.is_some() {
                let latest = self.start.elapsed() + self.poll_every;
                wake = Some(wake.map_or(latest, |w| w.min(latest)));
            }
            alarm.set(wake.map(|w| w.saturating_sub(skew)))?;
            let far = tokio::time::Instant::now() + Duration::from_secs(3600);
            let stop_at = shutdown.as_ref().map(|(t, _)| *t);
            tokio::select! {
                biased;
                c = cmds.recv() => match c {
                    Some(Command::Standby(on, ack)) => {
                        if on {
                            self.node.request_standby(self.now());
                        } else {
                            self.node.request_online(self.now());
                        }
                        self.keep_operator_state(|st| st.standby = on);
                        self.status_dirty = true;
                        acks.push((ack, true));
                    }
                    Some(Command::Place(group, pref, ack)) => {
                        let known = self.node.request_placement(self.now(), &group, pref);
                        if known {
                            self.keep_operator_state(|st| st.set(&group, pref));
                        }
                        self.status_dirty = true;
                        acks.push((ack, known));
                    }
                    Some(Command::Shutdown { timeout, done }) => {
                        tracing::info!(node = %self.node.id(), ?timeout, "graceful shutdown: handing groups over");
                        self.node.request_standby(self.now());
                        standby_done = false;
                        shutdown = Some((tokio::time::Instant::now() + timeout, done));
                    }
                    None => return Ok(()),
                },
                _ = tokio::time::sleep_until(stop_at.unwrap_or(far)), if stop_at.is_some() => {
                    tracing::warn!(node = %self.node.id(), "graceful shutdown timed out before every group was handed over");
                    if let Some((_, done)) = shutdown.take() {
                        let _ = done.send(false);
                    }
                    return Ok(());
                }
                Some(d) = done_rx.recv() => {
                    let now = self.now();
                    match d {
                        Done::Action(id, code) => {
                            self.running = self.running.saturating_sub(1);
                            self.status_dirty = true;
                            self.node.handle_action_done(now, id, code);
                        }
                        Done::Fence(n, ok) => self.node.handle_fence_done(now, n, ok),
                    }
                }
                Some(f) = inbound.recv() => {
                    let now = self.now();
                    self.receive_inbound(now, &f);
                    // Take whatever else already arrived before running the state machine.
                    while let Ok(f) = inbound.try_recv() {
                        self.receive_inbound(now, &f);
                    }
                }
                Some(x) = exits.recv() => self.on_peer_exit(x),
                r = wait_unreachable(unreachable.as_ref()) => match r {
                    Ok(()) => self.on_unreachable(),
                    Err(e) => {
                        tracing::error!(error = %e, "udp error watch failed; deadtime alone detects dead peers now");
                        unreachable = None;
                    }
                },
                Some(ok) = ping.recv() => self.node.handle_ping(self.now(), ok),
                () = alarm.wait() => {
                    // Frames that waited in polled media count before any deadline does.
                    if self.drain_polled() {
                        standby_done |= self.pump(&done_tx);
                    }
                    let now = self.now();
                    self.session.handle_timeout(now);
                    if self.node.poll_timeout().is_some_and(|t| t <= now) {
                        self.node.handle_timeout(now);
                    }
                }
            }
        }
    }

    /// Hand one frame from a media task to the session, learning who sent it from where.
    fn receive_inbound(&mut self, now: Timestamp, f: &Inbound) {
        if let Ok(from) = self.session.receive(now, f.link, &f.frame)
            && let Some(src) = f.source
        {
            learn_sender(&mut self.senders, f.link, src, from);
        }
    }

    /// A peer's daemon exited: frames already waiting count first (its last heartbeats; the
    /// state machine ignores that instance from now on).
    fn on_peer_exit(&mut self, x: PeerExit) {
        self.drain_polled();
        self.session.note_exit();
        let now = self.now();
        self.node.handle_peer_exit(now, x.node, x.incarnation);
        self.status_dirty = true;
    }

    /// Some unicast medium has ICMP errors queued: tell ha-core about every peer whose host
    /// answered "port unreachable". Frames already waiting are read first, so a heartbeat that
    /// arrived before the report still counts.
    fn on_unreachable(&mut self) {
        self.drain_polled();
        let mut reports = Vec::new();
        self.media
            .poll_unreachable(|link, dest| reports.push((link, dest)));
        let now = self.now();
        for (link, dest) in reports {
            let peer = self
                .senders
                .get(&(link, dest.ip()))
                .copied()
                .or(self.lone_peer);
            self.session.note_unreachable(peer.is_some());
            match peer {
                Some(p) => {
                    tracing::debug!(%link, %dest, peer = %p, "port unreachable");
                    self.node.handle_unreachable(now, p, link);
                }
                None => {
                    tracing::debug!(%link, %dest, "port unreachable from an address no peer was heard from")
                }
            }
        }
        self.status_dirty = true;
    }

    /// Feed every frame waiting in polled media to the session and the state machine, each at
    /// its kernel arrival time (so reading a tick late neither delays failure detection nor
    /// makes heartbeats look late); true if there was any.
    fn drain_polled(&mut self) -> bool {
        if self.rx_batch.is_none() {
            return false;
        }
        let before = self.fed.get();
        let now = self.now();
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        // Times handed to ha-core never go backwards: not before what it saw last, not
        // after now (a clock step makes the stamps useless, not harmful).
        // (`now` above already moved `fed`: remember the time before it.)
        let mut t = before;
        let Driver {
            media,
            session,
            node,
            reannounce,
            senders,
            rx_batch: Some(rx_batch),
            ..
        } = self
        else {
            return false;
        };
        let n = media.poll_receive(rx_batch, |link, r| {
            let arrived = r.stamp.map_or(now, |s| {
                let age = wall.saturating_sub(s);
                Timestamp::from_duration(now.as_duration().saturating_sub(age))
            });
            t = t.max(arrived.min(now));
            if let Ok(from) = session.receive(t, link, r.frame)
                && let Some(src) = r.source
            {
                learn_sender(senders, link, src, from);
            }
            while let Some(d) = session.poll_delivered() {
                reannounce.on_message(d.from, &d.message);
                node.handle_message(t, d.from, d.link, d.message);
            }
        });
        self.fed.set(now);
        n > 0
    }

    /// True when every group is stopped here and, if some node may run it, a peer has it
    /// (or no peer is alive to take it).
    fn handed_over(&self) -> bool {
        let st = self.node.status();
        let me = self.node.id();
        if !st.members.iter().any(|m| *m != me) {
            return true;
        }
        st.groups.iter().all(|g| {
            g.state == GroupState::Stopped
                && match g.target {
                    None => true,
                    Some(t) => t != me && g.location == Some(t),
                }
        })
    }

    /// Move everything between the state machine, the session and the media. Returns true when
    /// the node reported StandbyDone.
    fn pump(&mut self, done: &mpsc::Sender<Done>) -> bool {
        let mut standby_done = false;
        loop {
            let now = self.now();
            let mut progressed = false;
            while let Some(d) = self.session.poll_delivered() {
                progressed = true;
                self.reannounce.on_message(d.from, &d.message);
                self.node.handle_message(now, d.from, d.link, d.message);
            }
            while let Some(out) = self.node.poll_output() {
                progressed = true;
                match out {
                    Output::Send { to, link, msg } => {
                        if let Err(e) = self.session.send(now, to, link, msg) {
                            tracing::error!(error = %e, "cannot encode message");
                        }
                    }
                    Output::Action(a) => self.spawn_action(a, done),
                    Output::Fence { node } => self.spawn_fence(node, done),
                    Output::Event(ev) => {
                        standby_done |= matches!(ev, Event::StandbyDone);
                        self.status_dirty = true;
                        log_event(self.node.id(), &ev);
                        self.reannounce.on_event(&ev);
                        let _ = self.events.send(ev);
                    }
                }
            }
            if !progressed {
                break;
            }
        }
        while let Some((link, f)) = self.session.poll_transmit() {
            self.media.send(Some(link), &f);
        }
        while let Some(g) = self.reannounce.poll() {
            for r in self.group_members.get(&g).into_iter().flatten() {
                // Cheap: a channel send to the resource's announcer thread, if it has one.
                crate::floating_ip::reannounce(r);
            }
        }
        // The snapshot costs a walk over the whole node state: refresh it when the node
        // reported something, otherwise at most every STATUS_REFRESH (counters only move).
        if !(self.status_dirty || self.last_status.elapsed() >= STATUS_REFRESH) {
            return standby_done;
        }
        self.status_dirty = false;
        self.last_status = Instant::now();
        let st = RuntimeStatus {
            node: self.node.status(),
            transport: self.session.counters(),
            pending_control: self.session.pending_control(),
            running_actions: self.running,
        };
        self.status.send_if_modified(|old| {
            if *old == st {
                false
            } else {
                *old = st;
                true
            }
        });
        standby_done
    }

    fn spawn_action(&mut self, a: ResourceAction, done: &mpsc::Sender<Done>) {
        let tx = done.clone();
        let Some(res) = self.resources.get(&a.resource).cloned() else {
            tracing::error!(resource = %a.resource, "action for a resource without agent");
            let _ = tx.try_send(Done::Action(a.id, OcfCode::ErrConfigured));
            return;
        };
        self.running += 1;
        self.status_dirty = true;
        tracing::info!(node = %self.node.id(), group = %a.group, resource = %a.resource, op = %a.op, action = %a.id, "running resource action");
        tokio::spawn(async move {
            let t0 = Instant::now();
            let code = run_with_timeout(&*res, a.op, a.timeout).await;
            tracing::info!(resource = %a.resource, op = %a.op, ?code, elapsed_ms = t0.elapsed().as_millis() as u64, "resource action done");
            let _ = tx.send(Done::Action(a.id, code)).await;
        });
    }

    fn spawn_fence(&mut self, node: NodeId, done: &mpsc::Sender<Done>) {
        let tx = done.clone();
        match self.fence.clone() {
            Some(f) => {
                tokio::spawn(async move {
                    let ok = f(node).await;
                    let _ = tx.send(Done::Fence(node, ok)).await;
                });
            }
            None => {
                tracing::error!(%node, "fencing requested but no fencing hook is configured");
                let _ = tx.try_send(Done::Fence(node, false));
            }
        }
    }
}

/// Log every state change; late heartbeats and losses at warn.
fn log_event(me: NodeId, ev: &Event) {
    match ev {
        Event::LateHeartbeat { peer, link, delay } => {
            tracing::warn!(node = %me, %peer, %link, delay_ms = delay.as_millis() as u64, "late heartbeat")
        }
        Event::StallDetected { delay } => {
            tracing::warn!(node = %me, delay_ms = delay.as_millis() as u64, "node was not scheduled in time")
        }
        Event::PeerDown { .. }
        | Event::LinkDown { .. }
        | Event::GroupFailed { .. }
        | Event::Failover { .. }
        | Event::FenceRequested { .. } => tracing::warn!(node = %me, event = ?ev, "cluster event"),
        _ => tracing::info!(node = %me, event = ?ev, "cluster event"),
    }
}

/// What [`raise_priority`] achieved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PriorityOutcome {
    /// Memory locked (mlockall): no page fault can stall the heartbeat path.
    pub memory_locked: bool,
    /// Real-time FIFO scheduling for the calling thread.
    pub realtime: bool,
    /// Nice value set when real-time scheduling was refused.
    pub nice: Option<i32>,
}

/// Raise the calling thread's priority where allowed: lock all memory (MCL_CURRENT |
/// MCL_FUTURE) and switch to SCHED_FIFO at `rt_priority`, falling back to nice -10.
///
/// What it buys: a heartbeat path that never waits for a page-in (swapped or evicted code
/// pages) and is not queued behind CPU-bound work, so keepalive timers fire on time under
/// load. Fewer stalls mean deadtime can sit closer to 2 x keepalive without false failovers.
/// Call it from the thread that runs the node (e.g. a current-thread tokio runtime).
pub fn raise_priority(rt_priority: i32) -> PriorityOutcome {
    // SAFETY: plain syscall without pointers.
    let memory_locked = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } == 0;
    if !memory_locked {
        tracing::warn!(error = %std::io::Error::last_os_error(), "mlockall refused");
    }
    let param = libc::sched_param {
        sched_priority: rt_priority,
    };
    // SAFETY: plain syscall with a valid pointer to an initialised sched_param.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    let realtime = rc == 0;
    let mut nice = None;
    if !realtime {
        tracing::warn!(error = %std::io::Error::last_os_error(), "SCHED_FIFO refused; trying nice -10");
        // SAFETY: plain syscall on the calling thread.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -10) } == 0 {
            nice = Some(-10);
        }
    }
    let o = PriorityOutcome {
        memory_locked,
        realtime,
        nice,
    };
    tracing::info!(outcome = ?o, "priority raised");
    o
}
