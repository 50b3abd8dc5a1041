//! LSB init scripts: `script start|stop|status`.
//!
//! LSB exit codes of `start` and `stop` (1 generic, 2 invalid arguments, 3 unimplemented,
//! 4 insufficient privilege, 5 not installed, 6 not configured, 7 not running) coincide with
//! the OCF codes, so they map one to one. `status` has its own codes: 0 running, 3 stopped
//! (NotRunning); 1 and 2 ("dead but pid/lock file exists") and anything else are errors: the
//! service failed rather than stopped cleanly. LSB requires `stop` of a stopped service to
//! succeed; many scripts do not, so a failed stop is double-checked with `status`.

use super::factory::AgentOptions;
use super::process::Outcome;
use super::script::Script;
use super::{OpTimeouts, Resource};
use crate::error::{Error, Result};
use crate::ids::ResourceId;
use crate::model::{AgentSpec, ResourceSpec};
use crate::outcome::{OcfCode, ResourceOp};
use async_trait::async_trait;
use std::path::PathBuf;
use std::time::Duration;

/// An LSB init script.
#[derive(Debug, Clone)]
pub struct LsbAgent {
    script: Script,
    timeouts: OpTimeouts,
}

/// Map an LSB `status` exit code.
pub(crate) fn status_code(exit: i32) -> OcfCode {
    match exit {
        0 => OcfCode::Success,
        3 => OcfCode::NotRunning,
        _ => OcfCode::ErrGeneric,
    }
}

impl LsbAgent {
    /// The agent for `spec`, whose agent must be `AgentSpec::Lsb`. The script is looked up in
    /// `opts.lsb_dirs` at every operation (a missing script yields ErrInstalled).
    pub fn new(spec: &ResourceSpec, opts: &AgentOptions) -> Result<Self> {
        let AgentSpec::Lsb { script } = &spec.agent else {
            return Err(Error::Agent {
                agent: spec.id.to_string(),
                message: "not an LSB agent".into(),
            });
        };
        Ok(LsbAgent {
            script: Script::new(
                spec,
                "LSB init script",
                script,
                Vec::new(),
                opts.lsb_dirs.clone(),
                opts.env_pairs(),
            )?,
            timeouts: OpTimeouts::from_spec(spec),
        })
    }

    /// Where the script is found now, if anywhere.
    pub fn script_path(&self) -> Option<PathBuf> {
        self.script.path()
    }

    async fn action(&self, op: ResourceOp) -> OcfCode {
        let action = match op {
            ResourceOp::Start => "start",
            ResourceOp::Stop => "stop",
            ResourceOp::Monitor => "status",
        };
        match self.script.run(action, self.timeouts.for_op(op)).await {
            Outcome::Exited { code, .. } if op == ResourceOp::Monitor => status_code(code),
            Outcome::Exited { code: 0, .. } => OcfCode::Success,
            Outcome::Exited { code, stderr, .. } => {
                tracing::warn!(resource = %self.script.id, action, code, stderr = %stderr.trim(),
                    "LSB script failed");
                OcfCode::from_exit_code(code)
            }
            other => other.abnormal_code().unwrap_or(OcfCode::ErrGeneric),
        }
    }
}

#[async_trait]
impl Resource for LsbAgent {
    fn id(&self) -> &ResourceId {
        &self.script.id
    }

    async fn start(&self) -> OcfCode {
        self.action(ResourceOp::Start).await
    }

    async fn stop(&self) -> OcfCode {
        let code = self.action(ResourceOp::Stop).await;
        match code {
            OcfCode::Success | OcfCode::Timeout => code,
            // A stopped service: stop achieved its goal whatever the script said.
            OcfCode::NotRunning => OcfCode::Success,
            _ if self.monitor().await == OcfCode::NotRunning => OcfCode::Success,
            _ => code,
        }
    }

    async fn monitor(&self) -> OcfCode {
        self.action(ResourceOp::Monitor).await
    }

    fn timeout(&self, op: ResourceOp) -> Duration {
        self.timeouts.for_op(op)
    }
}
