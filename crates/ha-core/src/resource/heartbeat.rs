//! heartbeat v1 `resource.d` scripts: `name::arg1::arg2` in haresources becomes
//! `script arg1 arg2 start|stop|status`.
//!
//! heartbeat reads the *output* of `status`: a running resource prints `running` or `OK`. We
//! follow that, and make it stricter where heartbeat's substring match misreads common output:
//!
//! * output mentioning `not running` or `stopped` (any case) means NotRunning (heartbeat's
//!   `*running*` pattern would have called "foo is not running" running);
//! * otherwise output containing `running` (any case) or the word `OK` means running;
//! * otherwise exit code 0 means running and any other exit code NotRunning (heartbeat treats
//!   everything that is not "running" as stopped).
//!
//! `start` and `stop` succeed on exit code 0; any other exit code is a generic error, because v1
//! scripts do not use the OCF codes (an accidental `exit 6` must not stop the group cluster-wide).
//! A failed `stop` is double-checked with `status`: a script that refuses to stop a stopped
//! resource still satisfies the idempotent-stop contract.

use super::factory::AgentOptions;
use super::process::Outcome;
use super::script::Script;
use super::{OpTimeouts, Resource};
use crate::error::{Error, Result};
use crate::ids::ResourceId;
use crate::model::{AgentSpec, ResourceSpec};
use crate::outcome::{OcfCode, ResourceOp};
use async_trait::async_trait;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// A heartbeat `resource.d` script.
#[derive(Debug, Clone)]
pub struct HeartbeatAgent {
    script: Script,
    timeouts: OpTimeouts,
}

impl HeartbeatAgent {
    /// The agent for `spec`, whose agent must be `AgentSpec::Heartbeat`. The script is looked up
    /// in `opts.heartbeat_dirs` at every operation (a missing script yields ErrInstalled).
    pub fn new(spec: &ResourceSpec, opts: &AgentOptions) -> Result<Self> {
        let AgentSpec::Heartbeat { script, args } = &spec.agent else {
            return Err(Error::Agent {
                agent: spec.id.to_string(),
                message: "not a heartbeat resource.d agent".into(),
            });
        };
        if let Some(bad) = args.iter().find(|a| a.contains('\0')) {
            return Err(Error::Agent {
                agent: spec.id.to_string(),
                message: format!("argument {bad:?} contains a NUL byte"),
            });
        }
        Ok(HeartbeatAgent {
            script: Script::new(
                spec,
                "heartbeat resource script",
                script,
                args.iter().map(OsString::from).collect(),
                opts.heartbeat_dirs.clone(),
                opts.env_pairs(),
            )?,
            timeouts: OpTimeouts::from_spec(spec),
        })
    }

    /// Where the script is found now, if anywhere.
    pub fn script_path(&self) -> Option<PathBuf> {
        self.script.path()
    }

    async fn start_or_stop(&self, op: ResourceOp) -> OcfCode {
        let action = if op == ResourceOp::Start {
            "start"
        } else {
            "stop"
        };
        let out = self.script.run(action, self.timeouts.for_op(op)).await;
        let code = match &out {
            Outcome::Exited { code: 0, .. } => OcfCode::Success,
            Outcome::Exited { code, stderr, .. } => {
                tracing::warn!(resource = %self.script.id, action, code, stderr = %stderr.trim(),
                    "heartbeat script failed");
                OcfCode::ErrGeneric
            }
            other => other.abnormal_code().unwrap_or(OcfCode::ErrGeneric),
        };
        if op == ResourceOp::Stop && code == OcfCode::ErrGeneric {
            // Idempotent stop: a stopped resource is what we wanted.
            if self.monitor().await == OcfCode::NotRunning {
                return OcfCode::Success;
            }
        }
        code
    }
}

/// Map a heartbeat `status` run to an OCF code (see the module documentation).
pub(crate) fn status_code(exit: i32, output: &str) -> OcfCode {
    let lower = output.to_ascii_lowercase();
    if lower.contains("not running") || lower.contains("stopped") {
        return OcfCode::NotRunning;
    }
    let ok_word = output
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| w == "OK");
    if lower.contains("running") || ok_word || exit == 0 {
        OcfCode::Success
    } else {
        OcfCode::NotRunning
    }
}

#[async_trait]
impl Resource for HeartbeatAgent {
    fn id(&self) -> &ResourceId {
        &self.script.id
    }

    async fn start(&self) -> OcfCode {
        self.start_or_stop(ResourceOp::Start).await
    }

    async fn stop(&self) -> OcfCode {
        self.start_or_stop(ResourceOp::Stop).await
    }

    async fn monitor(&self) -> OcfCode {
        match self.script.run("status", self.timeouts.monitor).await {
            Outcome::Exited {
                code,
                stdout,
                stderr,
            } => status_code(code, &format!("{stdout}\n{stderr}")),
            other => other.abnormal_code().unwrap_or(OcfCode::ErrGeneric),
        }
    }

    fn timeout(&self, op: ResourceOp) -> Duration {
        self.timeouts.for_op(op)
    }
}

#[cfg(test)]
mod tests {
    use super::status_code;
    use crate::OcfCode::{NotRunning, Success};

    #[test]
    fn status_output_conventions() {
        assert_eq!(status_code(0, "running"), Success);
        assert_eq!(status_code(1, "IPaddr is running"), Success);
        assert_eq!(status_code(3, "OK"), Success);
        assert_eq!(status_code(0, "foo is not running"), NotRunning);
        assert_eq!(status_code(0, "Stopped"), NotRunning);
        assert_eq!(status_code(1, "BROKEN"), NotRunning, "OK must be a word");
        assert_eq!(status_code(0, ""), Success);
        assert_eq!(status_code(3, ""), NotRunning);
    }
}
