//! Bounding an operation by its timeout, whatever the resource's implementation does.

use super::Resource;
use crate::outcome::{OcfCode, ResourceOp};
use std::time::Duration;

/// Run `op` on `resource`, giving up after `limit` with [`OcfCode::Timeout`]. On expiry the
/// operation's future is dropped, which cancels it (the process agents kill the agent's process
/// group).
pub async fn run_with_timeout<R: Resource + ?Sized>(
    resource: &R,
    op: ResourceOp,
    limit: Duration,
) -> OcfCode {
    match tokio::time::timeout(limit, resource.run(op)).await {
        Ok(code) => code,
        Err(_) => {
            tracing::warn!(resource = %resource.id(), %op, limit_ms = limit.as_millis() as u64,
                "operation timed out");
            OcfCode::Timeout
        }
    }
}

/// Run `op` on `resource` bounded by the resource's own timeout for it
/// ([`Resource::timeout`], from its spec).
pub async fn execute<R: Resource + ?Sized>(resource: &R, op: ResourceOp) -> OcfCode {
    run_with_timeout(resource, op, resource.timeout(op)).await
}
