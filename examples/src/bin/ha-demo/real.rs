//! The real timeline: two [`NodeRuntime`]s in this process, talking authenticated UDP
//! (HMAC-SHA256) over loopback, with in-memory resources; wall-clock milliseconds.
//!
//! A crash is [`NodeRuntime::abort`]: the node stops sending heartbeats at once, without
//! handing anything over; its in-memory resources die with it. The reboot is a fresh runtime
//! on the same port with a new (larger) incarnation.

use crate::demo_model;
use crate::describe::describe_event;
use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use ha_core::message::GroupState;
use ha_core::model::{
    AuthAlgorithm, AuthKey, AuthSpec, ClusterModel, DetectorKind, LinkSpec, Medium, Timing,
};
use ha_core::node::StopReason;
use ha_core::resource::{MemoryResource, Resource, ResourceRegistry};
use ha_core::{Event, GroupId, NodeId, OcfCode, ResourceId, ResourceOp};
use ha_net::runtime::{NodeRuntime, RuntimeConfig};
use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ALPHA: NodeId = NodeId(1);
const BETA: NodeId = NodeId(2);
/// Longest wait for any step of the story (generous: CI machines can be slow).
const STEP_TIMEOUT: Duration = Duration::from_secs(15);
const START_DELAY: Duration = Duration::from_millis(30);
const STOP_DELAY: Duration = Duration::from_millis(15);

/// One recorded event.
#[derive(Debug, Clone)]
struct Rec {
    at: Duration,
    node: NodeId,
    /// Which life of the node (0: first boot, 1: after the reboot).
    life: u32,
    event: Event,
}

/// Prints timeline lines (ms since the demo started) and records the events.
#[derive(Debug)]
struct Timeline {
    start: Instant,
    names: BTreeMap<NodeId, String>,
    events: Mutex<Vec<Rec>>,
}

impl Timeline {
    fn say(&self, node: NodeId, line: &str) {
        let who = self.names.get(&node).map_or("-", String::as_str);
        println!(
            "{:>6} ms  {who:<6} {line}",
            self.start.elapsed().as_millis()
        );
    }

    fn record(&self, node: NodeId, life: u32, event: Event) {
        if let Some(line) = describe_event(&event, node, &self.names) {
            self.say(node, &line);
        }
        let at = self.start.elapsed();
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Rec {
                at,
                node,
                life,
                event,
            });
    }

    fn any(&self, pred: impl Fn(&Rec) -> bool) -> bool {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(pred)
    }
}

/// An in-memory resource that prints its operations on the timeline.
struct Traced {
    inner: MemoryResource,
    node: NodeId,
    timeline: Arc<Timeline>,
}

impl Traced {
    async fn traced(&self, op: ResourceOp) -> OcfCode {
        let id = self.inner.id().clone();
        self.timeline.say(self.node, &format!("  {op} {id} ..."));
        let code = self.inner.run(op).await;
        let outcome = if ha_core::resource::op_succeeded(op, code) {
            "ok".to_owned()
        } else {
            format!("{code:?}")
        };
        self.timeline
            .say(self.node, &format!("  {op} {id}: {outcome}"));
        code
    }
}

#[async_trait]
impl Resource for Traced {
    fn id(&self) -> &ResourceId {
        self.inner.id()
    }
    async fn start(&self) -> OcfCode {
        self.traced(ResourceOp::Start).await
    }
    async fn stop(&self) -> OcfCode {
        self.traced(ResourceOp::Stop).await
    }
    async fn monitor(&self) -> OcfCode {
        self.inner.monitor().await
    }
    fn timeout(&self, op: ResourceOp) -> Duration {
        self.inner.timeout(op)
    }
}

/// Two distinct free UDP ports on loopback (both held while asking, so they differ).
fn free_ports() -> Result<(u16, u16)> {
    let a = UdpSocket::bind("127.0.0.1:0").context("bind a loopback UDP socket")?;
    let b = UdpSocket::bind("127.0.0.1:0").context("bind a loopback UDP socket")?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

/// The demo model as seen by `me`: short timings, one unicast loopback link listing both nodes
/// (each node binds its own port and skips itself), an HMAC-SHA256 key.
fn node_model(ports: (u16, u16), me: NodeId) -> ClusterModel {
    let mut m = demo_model();
    m.name = "ha-demo".into();
    m.timing = Timing {
        keepalive: Duration::from_millis(50),
        warntime: Duration::from_millis(150),
        deadtime: Duration::from_millis(300),
        initdead: Duration::from_millis(600),
        detector: DetectorKind::Fixed,
    };
    m.links = vec![LinkSpec {
        name: "loopback".into(),
        medium: Medium::Ucast {
            interface: String::new(),
            peers: vec![
                format!("127.0.0.1:{}", ports.0),
                format!("127.0.0.1:{}", ports.1),
            ],
            port: if me == ALPHA { ports.0 } else { ports.1 },
        },
    }];
    m.auth = AuthSpec {
        active: Some(1),
        keys: vec![AuthKey {
            id: 1,
            algorithm: AuthAlgorithm::HmacSha256,
            secret: b"ha-demo shared secret, not for production".to_vec(),
        }],
        insecure_no_auth: false,
    };
    // Generous bounds: the in-memory operations take START_DELAY / STOP_DELAY.
    for r in m.resources.values_mut() {
        r.start_timeout = Duration::from_secs(2);
        r.stop_timeout = Duration::from_secs(1);
    }
    m
}

/// Start node `me` (its `life`-th boot) and forward its events to the timeline.
fn boot(ports: (u16, u16), me: NodeId, life: u32, timeline: &Arc<Timeline>) -> Result<NodeRuntime> {
    let model = Arc::new(node_model(ports, me));
    let mut cfg = RuntimeConfig::new(model, me);
    // The same story as the simulated mode: deadtime finds the crash. A real daemon would
    // also learn of a crashed peer's exit at once (`ha_net::exit_watch`, "port unreachable"),
    // which would skip the wait this demo is about.
    cfg.exit_watch = false;
    cfg.unreachable_reports = false;
    let tl = timeline.clone();
    cfg.agents.registry = ResourceRegistry::new().with("sim", move |spec| {
        let inner = MemoryResource::from_spec(spec);
        inner.set_delay(ResourceOp::Start, START_DELAY);
        inner.set_delay(ResourceOp::Stop, STOP_DELAY);
        Ok(Box::new(Traced {
            inner,
            node: me,
            timeline: tl.clone(),
        }) as Box<dyn Resource>)
    });
    let rt = NodeRuntime::start(cfg).with_context(|| format!("start node {me}"))?;
    // Subscribe before yielding to the runtime: on the current-thread runtime the node task
    // has not run yet, so no event is missed.
    let mut rx = rt.subscribe();
    let port = if me == ALPHA { ports.0 } else { ports.1 };
    timeline.say(
        me,
        &format!(
            "boots on 127.0.0.1:{port} (incarnation {})",
            rt.status().node.incarnation
        ),
    );
    let tl = timeline.clone();
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match rx.recv().await {
                Ok(ev) => tl.record(me, life, ev),
                Err(RecvError::Lagged(n)) => tl.say(me, &format!("({n} events lost)")),
                Err(RecvError::Closed) => return,
            }
        }
    });
    Ok(rt)
}

/// Wait until `cond` holds, polling; fail after [`STEP_TIMEOUT`] naming `what`.
async fn wait_for(what: &str, cond: impl Fn() -> bool) -> Result<()> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    while !cond() {
        if Instant::now() > deadline {
            bail!("timed out after {STEP_TIMEOUT:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

fn running(rt: &NodeRuntime, group: &GroupId) -> bool {
    rt.status()
        .node
        .groups
        .iter()
        .any(|g| &g.group == group && g.state == GroupState::Running)
}

/// Run the story on real runtimes and print the timeline.
pub fn run() -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("build the tokio runtime")?
        .block_on(story())
}

async fn story() -> Result<()> {
    let ports = free_ports()?;
    let model = node_model(ports, ALPHA);
    let names: BTreeMap<NodeId, String> =
        model.nodes.iter().map(|n| (n.id, n.name.clone())).collect();
    println!(
        "ha-demo: two-node NFS cluster, REAL runtimes over loopback UDP (HMAC-SHA256); \
         keepalive {} ms, deadtime {} ms",
        model.timing.keepalive.as_millis(),
        model.timing.deadtime.as_millis()
    );
    println!("group nfs = vip -> drbd-disk -> filesystem -> nfs-server, preferred node alpha\n");
    let tl = Arc::new(Timeline {
        start: Instant::now(),
        names,
        events: Mutex::new(Vec::new()),
    });
    let nfs = GroupId::from("nfs");

    let alpha = boot(ports, ALPHA, 0, &tl)?;
    let beta = boot(ports, BETA, 0, &tl)?;
    wait_for("nfs running on alpha", || running(&alpha, &nfs)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    tl.say(
        ALPHA,
        "*** CRASH: runtime aborted, no more heartbeats, resources gone ***",
    );
    let crashed_at = tl.start.elapsed();
    alpha.abort();
    drop(alpha);
    wait_for("failover of nfs to beta", || running(&beta, &nfs)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    tl.say(ALPHA, "*** node powered on again ***");
    let alpha = boot(ports, ALPHA, 1, &tl)?;
    wait_for("failback of nfs to alpha", || {
        running(&alpha, &nfs) && !running(&beta, &nfs)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    alpha.abort();
    beta.abort();

    let failover = tl.any(|r| {
        r.node == BETA
            && r.at > crashed_at
            && matches!(&r.event, Event::Failover { from, .. } if *from == ALPHA)
    });
    let handover = tl.any(|r| {
        r.node == BETA
            && matches!(
                &r.event,
                Event::GroupStopping {
                    reason: StopReason::Moved,
                    ..
                }
            )
    });
    let failback = tl
        .any(|r| r.node == ALPHA && r.life == 1 && matches!(&r.event, Event::GroupRunning { .. }));
    println!();
    println!(
        "end: nfs runs on alpha (failover on beta: {failover}, handover by beta: {handover}, \
         failback to alpha: {failback})"
    );
    if !(failover && handover && failback) {
        bail!("the timeline misses a step of the story");
    }
    Ok(())
}
