//! Resource operations and their outcomes, mapped to OCF exit codes.
//!
//! Shared by the state machines (which ask for operations and react to outcomes) and by the
//! agents in [`crate::resource`] (which carry them out).

use serde::{Deserialize, Serialize};

/// An operation on a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceOp {
    /// Start (idempotent: starting a running resource succeeds).
    Start,
    /// Stop (idempotent: stopping a stopped resource succeeds).
    Stop,
    /// Check the state.
    Monitor,
}

impl std::fmt::Display for ResourceOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ResourceOp::Start => "start",
            ResourceOp::Stop => "stop",
            ResourceOp::Monitor => "monitor",
        })
    }
}

/// OCF exit codes 0-9 (plus timeouts, which OCF reports as a generic error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OcfCode {
    /// 0 OCF_SUCCESS (monitor: running).
    Success,
    /// 1 OCF_ERR_GENERIC.
    ErrGeneric,
    /// 2 OCF_ERR_ARGS.
    ErrArgs,
    /// 3 OCF_ERR_UNIMPLEMENTED.
    ErrUnimplemented,
    /// 4 OCF_ERR_PERM.
    ErrPerm,
    /// 5 OCF_ERR_INSTALLED.
    ErrInstalled,
    /// 6 OCF_ERR_CONFIGURED.
    ErrConfigured,
    /// 7 OCF_NOT_RUNNING.
    NotRunning,
    /// 8 OCF_RUNNING_PROMOTED (formerly RUNNING_MASTER).
    RunningPromoted,
    /// 9 OCF_FAILED_PROMOTED (formerly FAILED_MASTER).
    FailedPromoted,
    /// The operation did not finish within its timeout.
    Timeout,
}

/// What a failure means for placement (Pacemaker's classification).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Not a failure.
    Ok,
    /// Soft: restart in place or move after migration-threshold.
    Soft,
    /// Hard: the resource cannot run on this node; ban the group from it.
    Hard,
    /// Fatal: the configuration is wrong; stop the group everywhere.
    Fatal,
}

impl OcfCode {
    /// Map a process exit code to an OCF code; unknown codes are generic errors.
    pub fn from_exit_code(code: i32) -> OcfCode {
        match code {
            0 => OcfCode::Success,
            2 => OcfCode::ErrArgs,
            3 => OcfCode::ErrUnimplemented,
            4 => OcfCode::ErrPerm,
            5 => OcfCode::ErrInstalled,
            6 => OcfCode::ErrConfigured,
            7 => OcfCode::NotRunning,
            8 => OcfCode::RunningPromoted,
            9 => OcfCode::FailedPromoted,
            _ => OcfCode::ErrGeneric,
        }
    }

    /// The numeric OCF code (Timeout reports as 1, as OCF does).
    pub fn exit_code(self) -> i32 {
        match self {
            OcfCode::Success => 0,
            OcfCode::ErrGeneric | OcfCode::Timeout => 1,
            OcfCode::ErrArgs => 2,
            OcfCode::ErrUnimplemented => 3,
            OcfCode::ErrPerm => 4,
            OcfCode::ErrInstalled => 5,
            OcfCode::ErrConfigured => 6,
            OcfCode::NotRunning => 7,
            OcfCode::RunningPromoted => 8,
            OcfCode::FailedPromoted => 9,
        }
    }

    /// Severity of this code as the result of `op`. A monitor returning NotRunning is a soft
    /// failure only when the resource was expected to run; the caller decides that, so here
    /// NotRunning after monitor counts as Ok and after start as Soft; after stop it is success.
    pub fn severity(self, op: ResourceOp) -> Severity {
        match (self, op) {
            (OcfCode::Success, _) | (OcfCode::RunningPromoted, ResourceOp::Monitor) => Severity::Ok,
            (OcfCode::NotRunning, ResourceOp::Stop | ResourceOp::Monitor) => Severity::Ok,
            (OcfCode::ErrInstalled | OcfCode::ErrPerm, _) => Severity::Hard,
            (OcfCode::ErrConfigured, _) => Severity::Fatal,
            _ => Severity::Soft,
        }
    }
}
