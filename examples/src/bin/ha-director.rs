//! `ha-director`: one node of an LVS director pair, the seeds' heartbeat + ldirectord setup as
//! one process. The cluster file (TOML) names the group that moves between the directors: the
//! virtual IP (`IPaddr`) and an `ldirectord` resource whose `config` parameter points at an
//! ldirectord.cf, or at a keepalived.conf with `format = "keepalived"` (its `virtual_server`
//! blocks; `autoreload = "yes"` reloads it on change, as keepalived does on SIGHUP). Where the
//! group runs, the IPVS services of that file are installed through
//! generic netlink and the health checker pulls failed real servers out (quiescent or removed)
//! and puts the fallback server in when all are down; on stop they are removed again.
//!
//! ```text
//! ha-director --cluster director.toml [--node NAME] [--check]
//! ```
//! `--check` validates both files and prints the IPVS table the group would install
//! (`ipvsadm -S -n` format), without touching the kernel. Needs root and the ip_vs module to run.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use async_trait::async_trait;
use clap::Parser;
use ha_core::model::{AgentSpec, ClusterModel, ResourceSpec};
use ha_core::resource::{Resource, ResourceRegistry};
use ha_core::{OcfCode, ResourceId};
use ha_lvs::agent::DirectorResource;
use ha_lvs::checker::driver::Checker;
use ha_lvs::checker::{Monitor, MonitorConfig, reload};
use ha_lvs::ipvsadm::{SaveOptions, write_rules};
use ha_lvs::netlink::IpvsClient;
use ha_lvs::{keepalived, ldirectord};
use ha_net::runtime::{NodeRuntime, RuntimeConfig, local_node};
use tokio::task::JoinHandle;

/// The built-in resource kind this binary adds.
const KIND: &str = "ldirectord";

#[derive(Parser, Debug)]
#[command(
    name = "ha-director",
    about = "LVS director node: VIP + IPVS table + health checks"
)]
struct Args {
    /// The cluster file (TOML).
    #[arg(long)]
    cluster: PathBuf,
    /// This node's name or id (default: the host name).
    #[arg(long)]
    node: Option<String>,
    /// Validate the configuration, print the IPVS table, exit.
    #[arg(long)]
    check: bool,
}

/// Which file format a resource's `config` is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Ldirectord,
    Keepalived,
}

/// Where a resource's configuration is and how to read it.
#[derive(Debug, Clone)]
struct CfSource {
    path: PathBuf,
    format: Format,
    /// keepalived.conf only (ldirectord.cf says it itself).
    autoreload: bool,
}

/// A loaded configuration.
struct LoadedCf {
    monitor: MonitorConfig,
    autoreload: bool,
    warnings: Vec<String>,
}

/// The configuration of a resource spec: `params.config` (relative to the cluster file),
/// `params.format` (`ldirectord`, the default, or `keepalived`), `params.autoreload`.
fn cf_source(spec: &ResourceSpec, base: &Path) -> anyhow::Result<CfSource> {
    let p = spec.params.get("config").with_context(|| {
        format!(
            "resource `{}` ({KIND}) needs params.config = \"path/to/ldirectord.cf\" (or a keepalived.conf with format = \"keepalived\")",
            spec.id
        )
    })?;
    let format = match spec.params.get("format").map(String::as_str) {
        None | Some("ldirectord") => Format::Ldirectord,
        Some("keepalived") => Format::Keepalived,
        Some(other) => bail!(
            "resource `{}`: format = \"{other}\" is unknown (ldirectord or keepalived)",
            spec.id
        ),
    };
    let autoreload = match spec.params.get("autoreload").map(String::as_str) {
        None | Some("no") => false,
        Some("yes") => true,
        Some(other) => bail!(
            "resource `{}`: autoreload = \"{other}\" must be yes or no",
            spec.id
        ),
    };
    Ok(CfSource {
        path: base.join(p),
        format,
        autoreload,
    })
}

fn load_cf(src: &CfSource) -> anyhow::Result<LoadedCf> {
    // The parsers' errors carry file:line.
    Ok(match src.format {
        Format::Ldirectord => {
            let path = &src.path;
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read {}", path.display()))?;
            let cf = ldirectord::parse_ldirectord(&text, &path.display().to_string())?;
            LoadedCf {
                monitor: cf.monitor,
                autoreload: cf.autoreload,
                warnings: cf.warnings,
            }
        }
        Format::Keepalived => {
            let cf = keepalived::parse_keepalived_file(&src.path)?;
            LoadedCf {
                monitor: cf.monitor,
                autoreload: src.autoreload,
                warnings: cf.warnings,
            }
        }
    })
}

/// A running checker and its autoreload watcher.
struct Running {
    checker: Arc<Checker>,
    watcher: Option<JoinHandle<()>>,
}

/// ldirectord as a cluster resource: start installs the services and starts checking, stop
/// stops checking and removes the services, monitor checks both.
struct Ldirectord {
    id: ResourceId,
    src: CfSource,
    running: Mutex<Option<Running>>,
}

impl Ldirectord {
    fn director(&self) -> anyhow::Result<DirectorResource> {
        let cf = load_cf(&self.src)?;
        Ok(DirectorResource::new(
            self.id.clone(),
            Monitor::new(cf.monitor).desired_table(),
        ))
    }

    fn take(&self) -> Option<Running> {
        self.running.lock().ok().and_then(|mut r| r.take())
    }

    fn is_running(&self) -> bool {
        self.running
            .lock()
            .map(|r| {
                r.as_ref()
                    .is_some_and(|r| !r.watcher.as_ref().is_some_and(|w| w.is_finished()))
            })
            .unwrap_or(false)
    }

    async fn start_checker(&self) -> anyhow::Result<()> {
        let cf = load_cf(&self.src)?;
        for w in &cf.warnings {
            tracing::warn!(resource = %self.id, "{w}");
        }
        let client = IpvsClient::connect()?;
        // Installs the services in their desired state, then checks.
        let checker = Arc::new(Checker::spawn(Monitor::new(cf.monitor), client)?);
        let watcher = cf.autoreload.then(|| {
            let (c, src) = (checker.clone(), self.src.clone());
            let poll = Duration::from_secs(1);
            // The same loader as the start, whichever the format.
            tokio::spawn(async move {
                let path = src.path.clone();
                reload::watch_file(path, &c, poll, |_| {
                    load_cf(&src).map(|cf| (cf.monitor, cf.warnings))
                })
                .await
            })
        });
        if let Ok(mut r) = self.running.lock() {
            *r = Some(Running { checker, watcher });
        }
        Ok(())
    }
}

#[async_trait]
impl Resource for Ldirectord {
    fn id(&self) -> &ResourceId {
        &self.id
    }

    async fn start(&self) -> OcfCode {
        if self.is_running() {
            return OcfCode::Success;
        }
        match self.start_checker().await {
            Ok(()) => OcfCode::Success,
            Err(e) => {
                tracing::error!(resource = %self.id, error = %format!("{e:#}"), "start failed");
                OcfCode::ErrGeneric
            }
        }
    }

    async fn stop(&self) -> OcfCode {
        if let Some(r) = self.take() {
            if let Some(w) = r.watcher {
                w.abort();
                let _ = w.await;
            }
            match Arc::try_unwrap(r.checker) {
                Ok(c) => {
                    if let Err(e) = c.stop().await {
                        tracing::warn!(resource = %self.id, %e, "checker stopped with an error");
                    }
                }
                Err(_) => tracing::warn!(resource = %self.id, "checker still shared; left running"),
            }
        }
        match self.director() {
            Ok(d) => d.stop().await,
            Err(e) => {
                tracing::error!(resource = %self.id, error = %format!("{e:#}"), "stop failed");
                OcfCode::ErrGeneric
            }
        }
    }

    async fn monitor(&self) -> OcfCode {
        let installed = match self.director() {
            Ok(d) => d.monitor().await,
            Err(_) => OcfCode::ErrConfigured,
        };
        match (installed, self.is_running()) {
            (OcfCode::Success, true) => OcfCode::Success,
            (OcfCode::NotRunning, false) => OcfCode::NotRunning,
            (OcfCode::Success, false) => {
                tracing::warn!(resource = %self.id, "services installed but nobody checks them");
                OcfCode::ErrGeneric
            }
            (code, _) => code,
        }
    }

    fn timeout(&self, op: ha_core::outcome::ResourceOp) -> Duration {
        let _ = op;
        Duration::from_secs(20)
    }
}

fn register(registry: &mut ResourceRegistry, base: PathBuf) {
    registry.register(KIND, move |spec: &ResourceSpec| {
        let src = cf_source(spec, &base).map_err(|e| ha_core::Error::Agent {
            agent: spec.id.to_string(),
            message: format!("{e:#}"),
        })?;
        Ok(Box::new(Ldirectord {
            id: spec.id.clone(),
            src,
            running: Mutex::new(None),
        }) as Box<dyn Resource>)
    });
}

/// The `ldirectord` resources of the model and their configuration files.
fn director_resources(
    model: &ClusterModel,
    base: &Path,
) -> anyhow::Result<Vec<(ResourceId, CfSource)>> {
    let mut out = Vec::new();
    for spec in model.resources.values() {
        if matches!(&spec.agent, AgentSpec::Builtin { kind } if kind == KIND) {
            out.push((spec.id.clone(), cf_source(spec, base)?));
        }
    }
    if out.is_empty() {
        bail!(
            "the cluster has no resource of kind `{KIND}` (class = \"builtin\", kind = \"{KIND}\")"
        );
    }
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ha_examples::init_logging();
    let model = ha_core::config::load_file(&args.cluster)?;
    let base = args
        .cluster
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let me = local_node(&model, args.node.as_deref())?;
    let directors = director_resources(&model, &base)?;
    if args.check {
        for (id, src) in &directors {
            let cf = load_cf(src)?;
            let table = Monitor::new(cf.monitor).desired_table();
            println!(
                "# resource {id}: {} ({} services)",
                src.path.display(),
                table.len()
            );
            print!("{}", write_rules(&table, SaveOptions::default()));
            for w in &cf.warnings {
                println!("# warning: {w}");
            }
        }
        println!(
            "configuration OK: cluster `{}`, this is node {me}",
            model.name
        );
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut cfg = RuntimeConfig::new(Arc::new(model), me);
        ha_net::floating_ip::register(&mut cfg.agents.registry);
        register(&mut cfg.agents.registry, base);
        let node = NodeRuntime::start(cfg)?;
        node.shutdown_on_signal(Duration::from_secs(30)).await?;
        Ok(())
    })
}
