//! Where agents are looked up, and the factory turning a [`ResourceSpec`] into a [`Resource`].

use super::{HeartbeatAgent, LsbAgent, OcfAgent, Resource, ResourceRegistry};
use crate::error::{Error, Result};
use crate::model::{AgentSpec, ResourceSpec};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Default OCF root (Debian's `resource-agents` installs here).
pub const DEFAULT_OCF_ROOT: &str = "/usr/lib/ocf";

/// Where the process agents live and what they get in their environment.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// OCF root: agents are `OCF_ROOT/resource.d/PROVIDER/TYPE`; exported as `OCF_ROOT`.
    pub ocf_root: PathBuf,
    /// Directories searched, in order, for heartbeat `resource.d` scripts.
    pub heartbeat_dirs: Vec<PathBuf>,
    /// Directories searched, in order, for LSB init scripts.
    pub lsb_dirs: Vec<PathBuf>,
    /// Extra environment for every agent (e.g. `HA_RSCTMP` to move the OCF agents' state
    /// directory).
    pub extra_env: Vec<(String, String)>,
    /// Constructors of `AgentSpec::Builtin` kinds.
    pub registry: ResourceRegistry,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            ocf_root: PathBuf::from(DEFAULT_OCF_ROOT),
            heartbeat_dirs: vec![
                PathBuf::from("/etc/ha.d/resource.d"),
                PathBuf::from("/etc/init.d"),
            ],
            lsb_dirs: vec![PathBuf::from("/etc/init.d")],
            extra_env: Vec::new(),
            registry: ResourceRegistry::new(),
        }
    }
}

impl AgentOptions {
    /// The defaults, with the OCF root taken from the `OCF_ROOT` environment variable when set.
    pub fn from_env() -> Self {
        let mut o = Self::default();
        if let Some(root) = std::env::var_os("OCF_ROOT").filter(|r| !r.is_empty()) {
            o.ocf_root = PathBuf::from(root);
        }
        o
    }

    /// The extra environment as `OsString` pairs, for a child process.
    pub(crate) fn env_pairs(&self) -> Vec<(OsString, OsString)> {
        self.extra_env
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }
}

/// Build the resource for `spec`: a [`HeartbeatAgent`], [`LsbAgent`] or [`OcfAgent`] for script
/// agents, or the registered constructor (`opts.registry`) for `Builtin` kinds.
///
/// Fails on a spec that cannot be right anywhere (a script name with a `/`, a parameter name that
/// is no environment variable name, an unknown built-in kind). A script that is merely missing on
/// this node is not an error here: its operations report `ErrInstalled`, which bans the resource
/// from this node only.
pub fn agent_for(spec: &ResourceSpec, opts: &AgentOptions) -> Result<Box<dyn Resource>> {
    Ok(match &spec.agent {
        AgentSpec::Heartbeat { .. } => Box::new(HeartbeatAgent::new(spec, opts)?),
        AgentSpec::Lsb { .. } => Box::new(LsbAgent::new(spec, opts)?),
        AgentSpec::Ocf { .. } => Box::new(OcfAgent::new(spec, opts)?),
        AgentSpec::Builtin { .. } => opts.registry.build(spec)?,
    })
}

/// Reject names that would escape their directory or confuse a path join.
pub(crate) fn check_path_component(spec: &ResourceSpec, what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(Error::Agent {
            agent: spec.id.to_string(),
            message: format!(
                "invalid {what} `{name}`: must be a plain file name (no `/`, not empty)"
            ),
        });
    }
    Ok(())
}

/// The first regular file named `name` in `dirs`.
pub(crate) fn find_in(dirs: &[PathBuf], name: &str) -> Option<PathBuf> {
    dirs.iter().map(|d| d.join(name)).find(|p| Path::is_file(p))
}
