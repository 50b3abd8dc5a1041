//! Resources: the [`Resource`] trait every runnable resource implements, and (with the `agents`
//! feature) the process-based agents that drive classic scripts.
//!
//! # Contract of a [`Resource`]
//!
//! * [`Resource::start`] and [`Resource::stop`] are **idempotent**: starting a running resource
//!   returns [`OcfCode::Success`] and leaves it running; stopping a stopped resource returns
//!   [`OcfCode::Success`] (or [`OcfCode::NotRunning`], which counts as success after stop; see
//!   [`OcfCode::severity`]). The cluster may repeat an operation after a crash or a lost reply.
//!   Script agents inherit this property from their scripts (LSB and OCF require it), and the
//!   LSB and heartbeat agents double-check a failed stop with a status call.
//! * [`Resource::monitor`] distinguishes three states: [`OcfCode::Success`] (running),
//!   [`OcfCode::NotRunning`] (cleanly stopped) and any error (failed).
//! * Operations are bounded by [`Resource::timeout`]. Callers that want the bound enforced
//!   whatever the implementation does use [`run_with_timeout`] or [`execute`] (feature
//!   `agents`); an expired operation reports [`OcfCode::Timeout`]. Implementations must be
//!   cancellation-safe: dropping an operation's future must not leave work running (the process
//!   agents kill the agent's whole process group).
//! * Operations on one resource do not overlap: the runtime serializes them (as Pacemaker's
//!   executor does). Different resources may be operated on concurrently.
//!
//! # Where resources come from
//!
//! [`agent_for`] (feature `agents`) builds the agent named by a [`ResourceSpec`]: heartbeat
//! `resource.d` scripts ([`HeartbeatAgent`]), LSB init scripts ([`LsbAgent`]) and OCF agents
//! ([`OcfAgent`]). Resources written in Rust (`AgentSpec::Builtin`) are constructed by the
//! [`ResourceRegistry`] that other crates register their kinds into. [`MemoryResource`] is an
//! in-memory test double with injectable failures.
//!
//! [`ResourceSpec`]: crate::model::ResourceSpec

use crate::error::Result;
use crate::ids::ResourceId;
use crate::model::ResourceSpec;
use crate::outcome::{OcfCode, ResourceOp};
use async_trait::async_trait;
use std::time::Duration;

mod memory;
mod metadata;
mod registry;

#[cfg(feature = "agents")]
mod factory;
#[cfg(feature = "agents")]
mod group;
#[cfg(feature = "agents")]
mod heartbeat;
#[cfg(feature = "agents")]
mod lsb;
#[cfg(feature = "agents")]
mod ocf;
#[cfg(feature = "agents")]
mod process;
#[cfg(feature = "agents")]
mod script;
#[cfg(feature = "agents")]
mod timeout;

pub use memory::{Journal, JournalEntry, MemoryResource};
pub use metadata::{ActionMeta, MetaData, ParameterMeta, parse_duration};
pub use registry::{ResourceConstructor, ResourceRegistry};

#[cfg(feature = "agents")]
pub use factory::{AgentOptions, DEFAULT_OCF_ROOT, agent_for};
#[cfg(feature = "agents")]
pub use group::{GroupFailure, ResourceGroup};
#[cfg(feature = "agents")]
pub use heartbeat::HeartbeatAgent;
#[cfg(feature = "agents")]
pub use lsb::LsbAgent;
#[cfg(feature = "agents")]
pub use ocf::OcfAgent;
#[cfg(feature = "agents")]
pub use timeout::{execute, run_with_timeout};

/// Timeout used when nothing better is known (Pacemaker's default operation timeout).
pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(20);

/// Per-operation timeouts of one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpTimeouts {
    /// Bound on `start`.
    pub start: Duration,
    /// Bound on `stop`.
    pub stop: Duration,
    /// Bound on `monitor`, and on the auxiliary actions (`meta-data`, `validate-all`).
    pub monitor: Duration,
}

impl Default for OpTimeouts {
    fn default() -> Self {
        OpTimeouts {
            start: DEFAULT_OP_TIMEOUT,
            stop: DEFAULT_OP_TIMEOUT,
            monitor: DEFAULT_OP_TIMEOUT,
        }
    }
}

impl OpTimeouts {
    /// The timeouts configured in `spec`.
    pub fn from_spec(spec: &ResourceSpec) -> Self {
        OpTimeouts {
            start: spec.start_timeout,
            stop: spec.stop_timeout,
            monitor: spec.monitor_timeout,
        }
    }

    /// The same timeout for every operation.
    pub fn uniform(d: Duration) -> Self {
        OpTimeouts {
            start: d,
            stop: d,
            monitor: d,
        }
    }

    /// The timeout of `op`.
    pub fn for_op(&self, op: ResourceOp) -> Duration {
        match op {
            ResourceOp::Start => self.start,
            ResourceOp::Stop => self.stop,
            ResourceOp::Monitor => self.monitor,
        }
    }
}

/// Something the cluster can start, stop and monitor on this node.
///
/// See the [module documentation](self) for the idempotence, monitor and timeout contract.
#[async_trait]
pub trait Resource: Send + Sync {
    /// The resource's cluster-wide id.
    fn id(&self) -> &ResourceId;

    /// Bring the resource up. Idempotent.
    async fn start(&self) -> OcfCode;

    /// Take the resource down. Idempotent.
    async fn stop(&self) -> OcfCode;

    /// Report the state: Success (running), NotRunning (cleanly stopped) or an error (failed).
    async fn monitor(&self) -> OcfCode;

    /// Check the configuration without touching the resource (OCF `validate-all`). The default
    /// accepts everything.
    async fn validate(&self) -> OcfCode {
        OcfCode::Success
    }

    /// Self-description (OCF `meta-data`): parameters and supported actions. `Ok(None)` when the
    /// kind of resource has no meta-data (the default).
    async fn meta_data(&self) -> Result<Option<MetaData>> {
        Ok(None)
    }

    /// The bound on `op` (from the resource's spec). The default is [`DEFAULT_OP_TIMEOUT`].
    fn timeout(&self, op: ResourceOp) -> Duration {
        let _ = op;
        DEFAULT_OP_TIMEOUT
    }

    /// Dispatch `op` to [`start`](Self::start), [`stop`](Self::stop) or
    /// [`monitor`](Self::monitor). Does not add a timeout; see [`run_with_timeout`].
    async fn run(&self, op: ResourceOp) -> OcfCode {
        match op {
            ResourceOp::Start => self.start().await,
            ResourceOp::Stop => self.stop().await,
            ResourceOp::Monitor => self.monitor().await,
        }
    }
}

/// True when `code` means `op` achieved its goal: start and monitor need Success (monitor also
/// accepts RunningPromoted), stop accepts NotRunning too.
pub fn op_succeeded(op: ResourceOp, code: OcfCode) -> bool {
    match op {
        ResourceOp::Start => code == OcfCode::Success,
        ResourceOp::Stop => matches!(code, OcfCode::Success | OcfCode::NotRunning),
        ResourceOp::Monitor => matches!(code, OcfCode::Success | OcfCode::RunningPromoted),
    }
}
