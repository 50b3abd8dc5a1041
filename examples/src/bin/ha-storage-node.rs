//! `ha-storage-node`: one node of the seeds' DRBD-backed service pair (NFS or MySQL on a
//! replicated disk) as one process: the heartbeat node runtime, the replicated block devices of
//! a drbd.conf, and their NBD export on loopback that the kernel's `nbd-client` attaches (our
//! `/dev/drbdN`). The cluster file's group does the rest in order, as haresources did:
//! `IPaddr` (floating IP + gratuitous ARP), `drbddisk` (promote), `nbd` (attach /dev/nbdN to
//! the export), `Filesystem` (mount), then the service (`nfs-kernel-server`, `mysql`, ...).
//!
//! ```text
//! ha-storage-node --cluster nfs.toml --drbd r0.res [--node NAME] [--nbd 127.0.0.1:10809]
//!                 [--create-md] [--seed] [--check]
//! ```
//! `--create-md` writes fresh metadata where none is found (DRBD's `create-md`); `--seed` on
//! one node of a fresh pair declares its data the good copy (`primary --force` once), so the
//! peer fully syncs from it. Engine state changes are logged (`cs=.. ro=.. ds=..`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use async_trait::async_trait;
use clap::Parser;
use ha_blockrep::attach::{MetaMode, open_backing};
use ha_blockrep::config::{DrbdConf, MetaDisk, ResourceConf};
use ha_blockrep::device::DynDevice;
use ha_blockrep::engine::Engine;
use ha_blockrep::meta::Metadata;
use ha_blockrep::nbd::{Export, NbdServer};
use ha_core::model::ResourceSpec;
use ha_core::resource::{Resource, ResourceRegistry};
use ha_core::{OcfCode, ResourceId};
use ha_net::runtime::{NodeRuntime, RuntimeConfig, local_node};

#[derive(Parser, Debug)]
#[command(
    name = "ha-storage-node",
    about = "heartbeat + DRBD node: VIP, replicated disk, filesystem, service"
)]
struct Args {
    /// The cluster file (TOML).
    #[arg(long)]
    cluster: PathBuf,
    /// The replicated resources (drbd.conf / .res syntax).
    #[arg(long)]
    drbd: PathBuf,
    /// This node's name (default: the host name); also its `on NAME` section.
    #[arg(long)]
    node: Option<String>,
    /// Where the NBD export of the resources listens (export name = resource name).
    #[arg(long, default_value = "127.0.0.1:10809")]
    nbd: SocketAddr,
    /// Write fresh metadata on a disk that has none.
    #[arg(long)]
    create_md: bool,
    /// Fresh pair: this node's data is the good copy (the peer syncs from it).
    #[arg(long)]
    seed: bool,
    /// Validate both files and exit.
    #[arg(long)]
    check: bool,
}

/// Open the backing disk of `res` on `node` with its metadata.
async fn open_disk(
    res: &ResourceConf,
    node: &str,
    create_md: bool,
) -> anyhow::Result<(DynDevice, Metadata)> {
    let host = res
        .host(node)
        .with_context(|| format!("resource {} has no `on {node}` section", res.name))?;
    let md = match &host.meta_disk {
        MetaDisk::Internal => None,
        MetaDisk::External(path) => Some(path.as_path()),
    };
    let mode = if create_md {
        MetaMode::LoadOrCreate
    } else {
        MetaMode::Load
    };
    Ok(open_backing(&host.disk, md, res.al_extents, false, mode).await?)
}

/// Bring up the engines of every resource that has a section for `node`.
async fn start_engines(
    conf: &DrbdConf,
    node: &str,
    args: &Args,
) -> anyhow::Result<BTreeMap<String, Engine>> {
    let mut engines = BTreeMap::new();
    for res in conf.resources.iter().filter(|r| r.host(node).is_some()) {
        let (data, md) = open_disk(res, node, args.create_md).await?;
        let engine = Engine::attach(data, md, res.engine_config(node)?).await?;
        if args.seed {
            // `drbdadm primary --force` on a fresh pair, then back to Secondary: the cluster
            // decides where it runs.
            engine.promote(true).await?;
            engine.demote().await?;
        }
        let me = res.host(node).context("no host section")?;
        let peer = res.peer_of(node).context("the resource has no peer host")?;
        // One side listens, the other connects (and retries): the first `on` section listens.
        if res.hosts.first().is_some_and(|h| h.name == node) {
            engine.listen(me.address).await?;
        } else {
            engine.connect(peer.address);
        }
        spawn_state_log(engine.clone());
        engines.insert(res.name.clone(), engine);
    }
    if engines.is_empty() {
        bail!(
            "no resource of {} has an `on {node}` section",
            args.drbd.display()
        );
    }
    Ok(engines)
}

/// Log every change of an engine's connection, roles and disks.
fn spawn_state_log(e: Engine) {
    tokio::spawn(async move {
        let mut last = String::new();
        loop {
            let s = e.status();
            let line = format!(
                "cs={} ro={}/{} ds={}/{}",
                s.cs(),
                s.role,
                s.peer_role,
                s.disk,
                s.peer_disk
            );
            if line != last {
                tracing::info!(resource = %s.name, "{line}");
                last = line;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// `nbd`: attach a kernel NBD device to one export (params `device`, `export`; the server is
/// this process's `--nbd` address), through Debian's `nbd-client`.
struct NbdAttach {
    id: ResourceId,
    device: String,
    export: String,
    server: SocketAddr,
}

impl NbdAttach {
    async fn nbd_client(&self, args: &[&str]) -> OcfCode {
        match tokio::process::Command::new("nbd-client")
            .args(args)
            .output()
            .await
        {
            Ok(o) if o.status.success() => OcfCode::Success,
            Ok(o) => {
                tracing::error!(resource = %self.id, stderr = %String::from_utf8_lossy(&o.stderr).trim(), "nbd-client failed");
                OcfCode::ErrGeneric
            }
            Err(e) => {
                tracing::error!(resource = %self.id, %e, "cannot run nbd-client (apt-get install nbd-client)");
                OcfCode::ErrInstalled
            }
        }
    }

    fn attached(&self) -> bool {
        let name = Path::new(&self.device)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        std::fs::read_to_string(format!("/sys/block/{name}/pid"))
            .is_ok_and(|p| !p.trim().is_empty())
    }
}

#[async_trait]
impl Resource for NbdAttach {
    fn id(&self) -> &ResourceId {
        &self.id
    }
    async fn start(&self) -> OcfCode {
        if self.attached() {
            return OcfCode::Success;
        }
        let (host, port) = (self.server.ip().to_string(), self.server.port().to_string());
        self.nbd_client(&[&host, &port, &self.device, "-N", &self.export, "-b", "4096"])
            .await
    }
    async fn stop(&self) -> OcfCode {
        if !self.attached() {
            return OcfCode::Success;
        }
        self.nbd_client(&["-d", &self.device]).await
    }
    async fn monitor(&self) -> OcfCode {
        if self.attached() {
            OcfCode::Success
        } else {
            OcfCode::NotRunning
        }
    }
}

fn register_nbd(registry: &mut ResourceRegistry, server: SocketAddr) {
    registry.register("nbd", move |spec: &ResourceSpec| {
        let get = |k: &str| {
            spec.params
                .get(k)
                .cloned()
                .ok_or_else(|| ha_core::Error::Agent {
                    agent: spec.id.to_string(),
                    message: format!("nbd needs params.{k}"),
                })
        };
        Ok(Box::new(NbdAttach {
            id: spec.id.clone(),
            device: get("device")?,
            export: get("export")?,
            server,
        }) as Box<dyn Resource>)
    });
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ha_examples::init_logging();
    let model = ha_core::config::load_file(&args.cluster)?;
    let drbd = DrbdConf::load(&args.drbd)?;
    let me = local_node(&model, args.node.as_deref())?;
    // Also its `on NAME` section in the drbd.conf.
    let name = model
        .node(me)
        .map(|n| n.name.clone())
        .context("the chosen node has no name")?;
    if args.check {
        for r in drbd.resources.iter().filter(|r| r.host(&name).is_some()) {
            let h = r.host(&name).context("no host section")?;
            println!(
                "resource {}: disk {} replicates {} <-> {:?}, protocol {:?}",
                r.name,
                h.disk.display(),
                h.address,
                r.peer_of(&name).map(|p| p.address),
                r.protocol
            );
        }
        println!(
            "configuration OK: cluster `{}`, this is node {me} ({name})",
            model.name
        );
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let engines = start_engines(&drbd, &name, &args).await?;
        let exports: Vec<Arc<dyn Export>> = engines
            .values()
            .map(|e| Arc::new(e.clone()) as Arc<dyn Export>)
            .collect();
        let (nbd_addr, _nbd_task) = NbdServer::new(exports).spawn(args.nbd).await?;
        tracing::info!(%nbd_addr, "NBD export listening");
        let mut cfg = RuntimeConfig::new(Arc::new(model), me);
        ha_net::floating_ip::register(&mut cfg.agents.registry);
        ha_blockrep::drbddisk::register(&mut cfg.agents.registry, engines.clone());
        register_nbd(&mut cfg.agents.registry, nbd_addr);
        let node = NodeRuntime::start(cfg)?;
        node.shutdown_on_signal(Duration::from_secs(60)).await?;
        for e in engines.values() {
            e.down().await?;
        }
        Ok(())
    })
}
