//! Import of a heartbeat (v1, haresources-style) configuration into a [`ClusterModel`].
//!
//! Choices where heartbeat has no direct equivalent:
//! - Quorum: heartbeat has none. A two-node cluster with `ping`/`ping_group` nodes gets
//!   [`QuorumMode::TwoNode`] (what ipfail approximated); every other cluster gets
//!   [`QuorumMode::None`], heartbeat's classic behaviour.
//! - Node ids follow the order of `node` directives, from 1. The cluster name is the node
//!   names joined by `-` unless [`ImportOptions::cluster_name`] is set.
//! - heartbeat v1 has no operation timeouts and no monitoring: imported resources get
//!   [`ImportOptions::op_timeout`] for start, stop and monitor, and no monitor interval.
//! - `auto_failback legacy` is read as `on`; when absent, auto_failback is on.
//! - `crc` as the active authkeys method sets `insecure_no_auth`.
//!
//! Resource mapping and id rules: see [`super::haresources`].

use super::locate::{Source, config_error};
use super::validate::{self, TimingField};
use super::{authkeys, ha_cf, haresources};
use crate::error::{Error, Result};
use crate::ids::{GroupId, NodeId, ResourceId};
use crate::model::{
    ClusterModel, DetectorKind, GroupSpec, NodeSpec, Policy, QuorumMode, ResourceSpec, Timing,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Options of the heartbeat import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOptions {
    /// Refuse an authkeys file accessible by group or others (heartbeat does). Only file-based
    /// imports check; tests with temporary files may turn it off.
    pub check_authkeys_mode: bool,
    /// Cluster name; default: the node names joined by `-`.
    pub cluster_name: Option<String>,
    /// Start, stop and monitor timeout of imported resources (heartbeat v1 has none).
    pub op_timeout: Duration,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            check_authkeys_mode: true,
            cluster_name: None,
            op_timeout: Duration::from_secs(60),
        }
    }
}

/// One input file's name (for errors) and text.
#[derive(Debug, Clone, Copy)]
pub struct HeartbeatText<'a> {
    /// Name used in error locations.
    pub path: &'a Path,
    /// Contents.
    pub text: &'a str,
}

/// Reads ha.cf, haresources and authkeys (which must be mode 600) into a model.
pub fn import_heartbeat(ha_cf: &Path, haresources: &Path, authkeys: &Path) -> Result<ClusterModel> {
    import_heartbeat_with(ha_cf, haresources, authkeys, &ImportOptions::default())
}

/// [`import_heartbeat`] with options.
pub fn import_heartbeat_with(
    ha_cf: &Path,
    haresources: &Path,
    authkeys: &Path,
    options: &ImportOptions,
) -> Result<ClusterModel> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| Error::Io {
            path: p.to_path_buf(),
            source,
        })
    };
    let (cf, res, keys) = (read(ha_cf)?, read(haresources)?, read(authkeys)?);
    if options.check_authkeys_mode {
        authkeys::check_mode(authkeys)?;
    }
    import_heartbeat_texts(
        HeartbeatText {
            path: ha_cf,
            text: &cf,
        },
        HeartbeatText {
            path: haresources,
            text: &res,
        },
        HeartbeatText {
            path: authkeys,
            text: &keys,
        },
        options,
    )
}

/// Imports from texts; errors name the files `ha.cf`, `haresources` and `authkeys`.
pub fn import_heartbeat_str(
    ha_cf: &str,
    haresources: &str,
    authkeys: &str,
) -> Result<ClusterModel> {
    let names = [
        PathBuf::from("ha.cf"),
        PathBuf::from("haresources"),
        PathBuf::from("authkeys"),
    ];
    import_heartbeat_texts(
        HeartbeatText {
            path: &names[0],
            text: ha_cf,
        },
        HeartbeatText {
            path: &names[1],
            text: haresources,
        },
        HeartbeatText {
            path: &names[2],
            text: authkeys,
        },
        &ImportOptions::default(),
    )
}

/// Imports from texts with explicit names and options (no file-mode check: there is no file).
pub fn import_heartbeat_texts(
    ha_cf: HeartbeatText<'_>,
    haresources: HeartbeatText<'_>,
    authkeys: HeartbeatText<'_>,
    options: &ImportOptions,
) -> Result<ClusterModel> {
    let cf_src = Source {
        path: ha_cf.path,
        text: ha_cf.text,
    };
    let res_src = Source {
        path: haresources.path,
        text: haresources.text,
    };
    let key_src = Source {
        path: authkeys.path,
        text: authkeys.text,
    };

    let cf = ha_cf::parse(&cf_src)?;
    if cf.nodes.is_empty() {
        return Err(config_error(
            cf_src.path,
            0,
            "node",
            "no `node` directive; add `node NAME` (as `uname -n` prints it) for every member",
        ));
    }
    let nodes: Vec<NodeSpec> = cf
        .nodes
        .iter()
        .enumerate()
        .map(|(i, (name, line))| {
            let id = u16::try_from(i + 1).map_err(|_| {
                config_error(cf_src.path, *line, "node", "too many nodes; at most 65535")
            })?;
            Ok(NodeSpec {
                id: NodeId(id),
                name: name.clone(),
                votes: 1,
            })
        })
        .collect::<Result<_>>()?;
    let links = cf.links(&cf_src)?;
    if links.is_empty() && nodes.len() > 1 {
        return Err(config_error(
            cf_src.path,
            0,
            "bcast",
            "no heartbeat medium; add `bcast eth0`, `ucast eth0 PEER`, `mcast ...` or `serial /dev/ttyS0`",
        ));
    }
    let (keepalive, warntime, deadtime, initdead) =
        validate::resolve_timing(cf.timing).map_err(|(field, message)| {
            let index = match field {
                TimingField::Keepalive => 0,
                TimingField::Warntime => 1,
                TimingField::Deadtime => 2,
                TimingField::Initdead => 3,
            };
            config_error(cf_src.path, cf.timing_lines[index], field.name(), message)
        })?;

    let auth = authkeys::parse(&key_src)?;

    let ha_groups = haresources::parse(&res_src)?;
    let mut resources = std::collections::BTreeMap::new();
    let mut groups = Vec::new();
    for g in ha_groups {
        let node = nodes.iter().find(|n| n.name == g.node).ok_or_else(|| {
            let known: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
            config_error(
                res_src.path,
                g.line,
                g.node.as_str(),
                format!(
                    "`{}` is not a node of ha.cf; use one of [{}] or add `node {}` to ha.cf",
                    g.node,
                    known.join(", "),
                    g.node
                ),
            )
        })?;
        let mut members = Vec::new();
        for r in g.resources {
            let id = ResourceId::from(r.id);
            members.push(id.clone());
            resources.insert(
                id.clone(),
                ResourceSpec {
                    id,
                    agent: r.agent,
                    params: r.params,
                    start_timeout: options.op_timeout,
                    stop_timeout: options.op_timeout,
                    monitor_interval: None,
                    monitor_timeout: options.op_timeout,
                },
            );
        }
        groups.push(GroupSpec {
            id: GroupId::from(g.id),
            resources: members,
            preferred_node: Some(node.id),
        });
    }

    let name = match &options.cluster_name {
        Some(n) => n.clone(),
        None => haresources::sanitize_id(
            &nodes
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join("-"),
        ),
    };
    validate::check_name("cluster name", &name).map_err(Error::Invalid)?;

    let quorum = if nodes.len() == 2 && !cf.ping_nodes.is_empty() {
        QuorumMode::TwoNode
    } else {
        QuorumMode::None
    };
    let policy = Policy {
        quorum,
        auto_failback: cf.auto_failback.unwrap_or(true),
        ..Policy::default()
    };
    Ok(ClusterModel {
        name,
        nodes,
        links,
        timing: Timing {
            keepalive,
            warntime,
            deadtime,
            initdead,
            detector: DetectorKind::Fixed,
        },
        policy,
        ping_nodes: cf.ping_nodes,
        resources,
        groups,
        constraints: Vec::new(),
        auth,
    })
}
