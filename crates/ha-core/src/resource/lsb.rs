//! LSB init scripts: `script start|stop|status`.
//!
//! LSB exit codes of `start` and `stop` (1 generic, 2 invalid arguments, 3 unimplemented,
//! 4 insufficient privilege, 5 not installed, 6 not configured, 7 not running) coincide with
//! the OCF codes, so they map one to one. `status` has its own codes: 0 running, 3 stopped
//! (NotRunning); 1 and 2 ("dead but pid/lock file exists") and anything else are errors: the
//! service failed rather than stopped cleanly. LSB requires `stop` of a stopped service to
//! succeed; many scripts do not, so a failed stop is double-checked with `status`.

use super::factory::{AgentOptions, check_path_component, find_in};
use super::process::{self, Invocation, Outcome};
use super::{OpTimeouts, Resource};
use crate::error::{Error, Result};
use crate::ids::ResourceId;
use crate::model::{AgentSpec, ResourceSpec};
use crate::outcome::{OcfCode, ResourceOp};
use async_trait::async_trait;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// An LSB init script.
#[derive(Debug, Clone)]
pub struct LsbAgent {
    id: ResourceId,
    script: String,
    dirs: Vec<PathBuf>,
    env: Vec<(OsString, OsString)>,
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
        check_path_component(spec, "LSB script name", script)?;
        Ok(LsbAgent {
            id: spec.id.clone(),
            script: script.clone(),
            dirs: opts.lsb_dirs.clone(),
            env: opts.env_pairs(),
            timeouts: OpTimeouts::from_spec(spec),
        })
    }

    /// Where the script is found now, if anywhere.
    pub fn script_path(&self) -> Option<PathBuf> {
        find_in(&self.dirs, &self.script)
    }

    async fn invoke(&self, action: &str, timeout: Duration) -> Outcome {
        let Some(program) = self.script_path() else {
            tracing::warn!(resource = %self.id, script = %self.script, dirs = ?self.dirs,
                "LSB init script not found");
            return Outcome::SpawnFailed(std::io::ErrorKind::NotFound.into());
        };
        process::run(&Invocation {
            program,
            args: vec![action.into()],
            env: self.env.clone(),
            timeout,
            scrub_prefix: None,
        })
        .await
    }

    async fn action(&self, op: ResourceOp) -> OcfCode {
        let action = match op {
            ResourceOp::Start => "start",
            ResourceOp::Stop => "stop",
            ResourceOp::Monitor => "status",
        };
        match self.invoke(action, self.timeouts.for_op(op)).await {
            Outcome::Exited { code, .. } if op == ResourceOp::Monitor => status_code(code),
            Outcome::Exited { code: 0, .. } => OcfCode::Success,
            Outcome::Exited { code, stderr, .. } => {
                tracing::warn!(resource = %self.id, action, code, stderr = %stderr.trim(),
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
        &self.id
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
