//! This toolkit: one `ha-net-node` process per node (crates/ha-net/src/bin/ha-net-node.rs),
//! two-node quorum, one group holding the `IPaddr` resource, preferring A, auto_failback on,
//! unicast heartbeats on eth0 authenticated with HMAC-SHA256, SCHED_FIFO (`--realtime`), exit
//! watch and "port unreachable" reports on (`--ours-heartbeats-only` turns both off).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use ha_core::model::{
    AgentSpec, AuthAlgorithm, AuthKey, AuthSpec, ClusterModel, DetectorKind, LinkSpec, Medium,
    QuorumMode, ResourceSpec, Timing,
};
use ha_core::sim::model_builder;
use ha_core::{NodeId, ResourceId};
use testkit::netns::NsChild;

use super::rig::{IFACE, Rig, VIP, VIP_PREFIX};
use super::system::{System, log_name};

const HB_PORT: u16 = 694;

/// Our node daemon with a given keepalive / deadtime.
pub struct Ours {
    bin: PathBuf,
    keepalive: Duration,
    deadtime: Duration,
    heartbeats_only: bool,
}

impl Ours {
    /// Use `bin` (an `ha-net-node` executable).
    pub fn new(bin: PathBuf, keepalive: Duration, deadtime: Duration) -> Ours {
        Ours {
            bin,
            keepalive,
            deadtime,
            heartbeats_only: false,
        }
    }

    /// With `on`, the nodes run without exit watch and "port unreachable" reports: deadtime
    /// alone finds a crash.
    pub fn heartbeats_only(mut self, on: bool) -> Ours {
        self.heartbeats_only = on;
        self
    }

    fn model(&self, rig: &Rig) -> ClusterModel {
        let mut m = model_builder(2)
            .names(&["alpha", "beta"])
            .quorum(QuorumMode::TwoNode)
            .auto_failback(true)
            .timing(Timing {
                keepalive: self.keepalive,
                warntime: self.deadtime / 2,
                deadtime: self.deadtime,
                initdead: (self.deadtime * 2).max(Duration::from_millis(400)),
                detector: DetectorKind::Fixed,
            })
            .group("bench", &["vip"], Some(1))
            .build();
        m.name = "bench-failover".into();
        m.links = vec![LinkSpec {
            name: "lan".into(),
            medium: Medium::Ucast {
                interface: IFACE.into(),
                peers: vec![
                    format!("{}:{HB_PORT}", rig.ip(0)),
                    format!("{}:{HB_PORT}", rig.ip(1)),
                ],
                port: HB_PORT,
            },
        }];
        let vip = ResourceId::from("vip");
        let params: BTreeMap<String, String> = [
            ("ip", VIP.to_string()),
            ("cidr_netmask", VIP_PREFIX.to_string()),
            ("nic", IFACE.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        m.resources.insert(
            vip.clone(),
            ResourceSpec {
                id: vip,
                agent: AgentSpec::Builtin {
                    kind: "IPaddr".into(),
                },
                params,
                start_timeout: Duration::from_secs(2),
                stop_timeout: Duration::from_secs(2),
                monitor_interval: None,
                monitor_timeout: Duration::from_secs(2),
            },
        );
        m.auth = AuthSpec {
            active: Some(1),
            keys: vec![AuthKey {
                id: 1,
                algorithm: AuthAlgorithm::HmacSha256,
                secret: b"bench-failover-secret".to_vec(),
            }],
            insecure_no_auth: false,
        };
        m
    }
}

impl System for Ours {
    fn name(&self) -> &str {
        "ours"
    }

    fn setting(&self) -> String {
        format!(
            "ha-net-node, ucast, keepalive {} ms, deadtime {} ms, realtime, {}",
            self.keepalive.as_millis(),
            self.deadtime.as_millis(),
            if self.heartbeats_only {
                "heartbeats only"
            } else {
                "exit watch + port unreachable"
            }
        )
    }

    fn cycle(&self) -> Duration {
        self.keepalive
    }

    fn prepare(&mut self, rig: &Rig) -> anyhow::Result<()> {
        let path = rig.dir().join("ours-model.json");
        let json = serde_json::to_string_pretty(&self.model(rig))
            .context("serialising our cluster model")?;
        std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))
    }

    fn start(&mut self, rig: &Rig, node: usize, run: usize) -> anyhow::Result<NsChild> {
        let d = rig.dir();
        let s = |p: PathBuf| p.to_string_lossy().into_owned();
        let model = s(d.join("ours-model.json"));
        let log = s(d.join(log_name(self.name(), node, run)));
        let id = NodeId((node + 1) as u16).0.to_string();
        let bin = self.bin.to_string_lossy().into_owned();
        let mut args = vec![
            "--model",
            &model,
            "--node",
            &id,
            "--log",
            &log,
            "--stop-timeout-ms",
            "2000",
            "--realtime",
        ];
        if self.heartbeats_only {
            args.extend(["--no-exit-watch", "--no-unreachable"]);
        }
        rig.spawn_logged(
            node,
            &bin,
            &args,
            &log_name(self.name(), node, run).replace(".log", ".stderr"),
        )
    }

    fn log_tail(&self, rig: &Rig, node: usize, run: usize) -> String {
        let mut out = String::new();
        for f in [
            log_name(self.name(), node, run),
            log_name(self.name(), node, run).replace(".log", ".stderr"),
        ] {
            let path = rig.dir().join(f);
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(30);
            out += &format!(
                "--- {} ---\n{}\n",
                path.display(),
                lines[start..].join("\n")
            );
        }
        out
    }
}

/// Build `ha-net-node` (release unless `release` is false) and return its path.
pub fn build_node(release: bool) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?
        .to_path_buf();
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&root).args([
        "build",
        "-p",
        "ha-net",
        "--bin",
        "ha-net-node",
        "--message-format=json-render-diagnostics",
    ]);
    if release {
        cmd.arg("--release");
    }
    eprintln!(
        "bench failover: building ha-net-node ({})",
        if release { "release" } else { "dev" }
    );
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {cargo} build -p ha-net"))?;
    if !out.status.success() {
        anyhow::bail!(
            "`cargo build -p ha-net --bin ha-net-node` failed ({})",
            out.status
        );
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] == "compiler-artifact"
            && v["target"]["name"] == "ha-net-node"
            && let Some(exe) = v["executable"].as_str()
        {
            return Ok(PathBuf::from(exe));
        }
    }
    anyhow::bail!("cargo built ha-net but reported no ha-net-node executable")
}
