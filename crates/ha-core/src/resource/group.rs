//! Carrying out a group's start and stop on this node: the *how* for a runtime (which runs it
//! when the cluster state machine decides *what* to do).
//!
//! Members start left to right. When one fails to start, the members started so far and the
//! failed one itself (a failed start may leave half of it up) are stopped again, right to left,
//! so the node is left clean for the cluster to place the group elsewhere. Members stop right to
//! left; the first failed stop ends the stop, because its left neighbours are what it depends on
//! (a filesystem that will not unmount keeps its disk); a failed stop is the cluster's cue to
//! fence. Every operation is bounded by the member's own timeout ([`execute`]).

use super::{Resource, execute, op_succeeded};
use crate::ids::ResourceId;
use crate::outcome::{OcfCode, ResourceOp};
use std::fmt;

/// A member operation that failed, and what was done about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupFailure {
    /// Position of the failing member in the group (start order).
    pub index: usize,
    /// The failing member.
    pub resource: ResourceId,
    /// The operation that failed.
    pub op: ResourceOp,
    /// Its result.
    pub code: OcfCode,
    /// After a failed start: the rollback stops, in the order run, with their results.
    pub rollback: Vec<(ResourceId, OcfCode)>,
}

impl GroupFailure {
    /// Whether the rollback after a failed start stopped everything it tried to stop.
    pub fn rolled_back_cleanly(&self) -> bool {
        self.rollback
            .iter()
            .all(|(_, c)| op_succeeded(ResourceOp::Stop, *c))
    }
}

impl fmt::Display for GroupFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of member {} ({}) failed with {:?}",
            self.op, self.index, self.resource, self.code
        )?;
        if !self.rollback.is_empty() {
            let clean = if self.rolled_back_cleanly() {
                "clean"
            } else {
                "INCOMPLETE"
            };
            write!(f, "; rollback of {} member(s) {clean}", self.rollback.len())?;
        }
        Ok(())
    }
}

impl std::error::Error for GroupFailure {}

/// The members of one group, in start order.
pub struct ResourceGroup {
    members: Vec<Box<dyn Resource>>,
}

impl fmt::Debug for ResourceGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.members.iter().map(|m| m.id()))
            .finish()
    }
}

impl ResourceGroup {
    /// A group of `members`, in start order.
    pub fn new(members: Vec<Box<dyn Resource>>) -> Self {
        ResourceGroup { members }
    }

    /// The members, in start order.
    pub fn members(&self) -> &[Box<dyn Resource>] {
        &self.members
    }

    /// Start every member left to right; on failure roll back (see the module documentation).
    pub async fn start(&self) -> Result<(), GroupFailure> {
        for (index, member) in self.members.iter().enumerate() {
            let code = execute(member.as_ref(), ResourceOp::Start).await;
            if op_succeeded(ResourceOp::Start, code) {
                continue;
            }
            tracing::warn!(resource = %member.id(), ?code, "group member failed to start; rolling back");
            let mut rollback = Vec::with_capacity(index + 1);
            for m in self.members[..=index].iter().rev() {
                let c = execute(m.as_ref(), ResourceOp::Stop).await;
                rollback.push((m.id().clone(), c));
            }
            return Err(GroupFailure {
                index,
                resource: member.id().clone(),
                op: ResourceOp::Start,
                code,
                rollback,
            });
        }
        Ok(())
    }

    /// Stop every member right to left, ending at the first failure.
    pub async fn stop(&self) -> Result<(), GroupFailure> {
        for (index, member) in self.members.iter().enumerate().rev() {
            let code = execute(member.as_ref(), ResourceOp::Stop).await;
            if !op_succeeded(ResourceOp::Stop, code) {
                tracing::error!(resource = %member.id(), ?code, "group member failed to stop");
                return Err(GroupFailure {
                    index,
                    resource: member.id().clone(),
                    op: ResourceOp::Stop,
                    code,
                    rollback: Vec::new(),
                });
            }
        }
        Ok(())
    }

    /// Monitor every member (left to right), each bounded by its timeout.
    pub async fn monitor(&self) -> Vec<(ResourceId, OcfCode)> {
        let mut out = Vec::with_capacity(self.members.len());
        for m in &self.members {
            out.push((
                m.id().clone(),
                execute(m.as_ref(), ResourceOp::Monitor).await,
            ));
        }
        out
    }
}
