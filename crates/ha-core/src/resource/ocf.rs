//! OCF resource agents: `OCF_ROOT/resource.d/PROVIDER/TYPE ACTION`, configured through the
//! environment.
//!
//! Every invocation gets `OCF_ROOT`, `OCF_RA_VERSION_MAJOR`/`MINOR`, `OCF_RESOURCE_INSTANCE`
//! (the resource id), `OCF_RESOURCE_TYPE`, `OCF_RESOURCE_PROVIDER`, one `OCF_RESKEY_<name>` per
//! parameter, `OCF_RESKEY_CRM_meta_timeout` (the operation's timeout in milliseconds) and
//! `OCF_RESKEY_CRM_meta_interval` (the monitor interval in milliseconds, 0 for other actions,
//! as Pacemaker does). `OCF_*` variables of our own environment are not passed on, so a stray
//! `OCF_RESKEY_x` in the daemon's environment cannot configure every agent; anything else an
//! agent needs goes in [`AgentOptions::extra_env`]. Exit codes are OCF codes
//! ([`OcfCode::from_exit_code`]).

use super::factory::{AgentOptions, check_path_component};
use super::metadata::MetaData;
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

/// An OCF resource agent instance.
#[derive(Debug, Clone)]
pub struct OcfAgent {
    id: ResourceId,
    label: String,
    path: PathBuf,
    env: Vec<(OsString, OsString)>,
    timeouts: OpTimeouts,
    monitor_interval: Option<Duration>,
}

fn valid_param_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl OcfAgent {
    /// The agent for `spec`, whose agent must be `AgentSpec::Ocf`. Fails when a parameter name
    /// is not a valid environment variable suffix (`[A-Za-z0-9_]+`), a value holds a NUL byte,
    /// or the provider/type would escape `OCF_ROOT/resource.d`.
    pub fn new(spec: &ResourceSpec, opts: &AgentOptions) -> Result<Self> {
        let AgentSpec::Ocf { provider, r#type } = &spec.agent else {
            return Err(Error::Agent {
                agent: spec.id.to_string(),
                message: "not an OCF agent".into(),
            });
        };
        check_path_component(spec, "OCF provider", provider)?;
        check_path_component(spec, "OCF agent type", r#type)?;
        let label = format!("ocf:{provider}:{}", r#type);
        let mut env = opts.env_pairs();
        let mut set = |k: &str, v: &str| env.push((OsString::from(k), OsString::from(v)));
        set("OCF_ROOT", &opts.ocf_root.to_string_lossy());
        set("OCF_RA_VERSION_MAJOR", "1");
        set("OCF_RA_VERSION_MINOR", "1");
        set("OCF_RESOURCE_INSTANCE", spec.id.as_str());
        set("OCF_RESOURCE_TYPE", r#type);
        set("OCF_RESOURCE_PROVIDER", provider);
        for (name, value) in &spec.params {
            if !valid_param_name(name) || value.contains('\0') {
                return Err(Error::Agent {
                    agent: format!("{} ({label})", spec.id),
                    message: format!(
                        "parameter `{name}` cannot be passed as OCF_RESKEY_{name}: names must \
                         be letters, digits and `_`, values must not contain NUL"
                    ),
                });
            }
            set(&format!("OCF_RESKEY_{name}"), value);
        }
        Ok(OcfAgent {
            id: spec.id.clone(),
            path: opts.ocf_root.join("resource.d").join(provider).join(r#type),
            label,
            env,
            timeouts: OpTimeouts::from_spec(spec),
            monitor_interval: spec.monitor_interval,
        })
    }

    /// The agent's executable.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// `ocf:PROVIDER:TYPE`.
    pub fn label(&self) -> &str {
        &self.label
    }

    async fn invoke(&self, action: &str, timeout: Duration) -> Outcome {
        let interval = match (action, self.monitor_interval) {
            ("monitor", Some(i)) => i.as_millis(),
            _ => 0,
        };
        let mut env = self.env.clone();
        env.push((
            "OCF_RESKEY_CRM_meta_timeout".into(),
            timeout.as_millis().to_string().into(),
        ));
        env.push((
            "OCF_RESKEY_CRM_meta_interval".into(),
            interval.to_string().into(),
        ));
        process::run(&Invocation {
            program: self.path.clone(),
            args: vec![action.into()],
            env,
            timeout,
            scrub_prefix: Some("OCF_"),
        })
        .await
    }

    /// Run any action (e.g. `reload`, `promote`, `notify`) with `timeout` and map its exit code.
    pub async fn run_action(&self, action: &str, timeout: Duration) -> OcfCode {
        let outcome = self.invoke(action, timeout).await;
        match &outcome {
            Outcome::Exited { code: 0, .. } => OcfCode::Success,
            Outcome::Exited { code, stderr, .. } => {
                let rc = OcfCode::from_exit_code(*code);
                // NotRunning from a monitor is an answer, not a failure worth a warning.
                if rc == OcfCode::NotRunning && action == "monitor" {
                    tracing::debug!(resource = %self.id, agent = %self.label, "not running");
                } else {
                    tracing::warn!(resource = %self.id, agent = %self.label, action, code,
                        stderr = %stderr.trim(), "OCF agent action failed");
                }
                rc
            }
            Outcome::SpawnFailed(e) => {
                tracing::warn!(resource = %self.id, agent = %self.label, path = %self.path.display(),
                    error = %e, "cannot execute OCF agent");
                process::spawn_error_code(e)
            }
            other => other.abnormal_code().unwrap_or(OcfCode::ErrGeneric),
        }
    }
}

#[async_trait]
impl Resource for OcfAgent {
    fn id(&self) -> &ResourceId {
        &self.id
    }

    async fn start(&self) -> OcfCode {
        self.run_action("start", self.timeouts.start).await
    }

    async fn stop(&self) -> OcfCode {
        self.run_action("stop", self.timeouts.stop).await
    }

    async fn monitor(&self) -> OcfCode {
        self.run_action("monitor", self.timeouts.monitor).await
    }

    async fn validate(&self) -> OcfCode {
        self.run_action("validate-all", self.timeouts.monitor).await
    }

    async fn meta_data(&self) -> Result<Option<MetaData>> {
        let err = |message: String| Error::Agent {
            agent: format!("{} ({})", self.id, self.label),
            message,
        };
        match self.invoke("meta-data", self.timeouts.monitor).await {
            Outcome::Exited {
                code: 0, stdout, ..
            } => MetaData::parse(&stdout)
                .map(Some)
                .map_err(|e| err(format!("unreadable meta-data: {e}"))),
            Outcome::Exited { code, stderr, .. } => Err(err(format!(
                "meta-data exited with code {code}: {}",
                stderr.trim()
            ))),
            Outcome::SpawnFailed(e) => {
                Err(err(format!("cannot execute {}: {e}", self.path.display())))
            }
            Outcome::TimedOut => Err(err(format!(
                "meta-data timed out after {:?}",
                self.timeouts.monitor
            ))),
            Outcome::Signaled(sig) => Err(err(format!("meta-data killed by signal {sig:?}"))),
        }
    }

    fn timeout(&self, op: ResourceOp) -> Duration {
        self.timeouts.for_op(op)
    }
}
