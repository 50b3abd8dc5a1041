//! The `drbddisk` resource for ha-core: start = promote, stop = demote, monitor = role.
//!
//! Mirrors heartbeat's `drbddisk::RES` script: `RES` names one resource or `all`.

use crate::engine::Engine;
use async_trait::async_trait;
use ha_core::ResourceId;
use ha_core::outcome::OcfCode;
use ha_core::resource::{Resource, ResourceRegistry};
use std::collections::BTreeMap;

/// Promotes/demotes one or more engines as a cluster resource.
pub struct DrbdDisk {
    id: ResourceId,
    engines: Vec<Engine>,
}

impl DrbdDisk {
    /// A resource `id` driving `engines`.
    pub fn new(id: ResourceId, engines: Vec<Engine>) -> Self {
        DrbdDisk { id, engines }
    }
}

#[async_trait]
impl Resource for DrbdDisk {
    fn id(&self) -> &ResourceId {
        &self.id
    }

    async fn start(&self) -> OcfCode {
        for e in &self.engines {
            if let Err(err) = e.promote(false).await {
                tracing::error!(resource = e.name(), error = %err, "drbddisk start: promote failed");
                return OcfCode::ErrGeneric;
            }
        }
        OcfCode::Success
    }

    async fn stop(&self) -> OcfCode {
        for e in &self.engines {
            if let Err(err) = e.demote().await {
                tracing::error!(resource = e.name(), error = %err, "drbddisk stop: demote failed");
                return OcfCode::ErrGeneric;
            }
        }
        OcfCode::Success
    }

    async fn monitor(&self) -> OcfCode {
        let primaries = self
            .engines
            .iter()
            .filter(|e| e.status().role == crate::state::Role::Primary)
            .count();
        match primaries {
            0 => OcfCode::NotRunning,
            n if n == self.engines.len() => OcfCode::Success,
            _ => OcfCode::ErrGeneric,
        }
    }

    async fn validate(&self) -> OcfCode {
        if self.engines.is_empty() {
            OcfCode::ErrConfigured
        } else {
            OcfCode::Success
        }
    }
}

/// Register the `drbddisk` kind: param `resource` picks an engine by name (`all` = every one).
pub fn register(registry: &mut ResourceRegistry, engines: BTreeMap<String, Engine>) {
    registry.register("drbddisk", move |spec| {
        let which = spec
            .params
            .get("resource")
            .map(String::as_str)
            .unwrap_or("all");
        let chosen: Vec<Engine> = if which == "all" {
            engines.values().cloned().collect()
        } else {
            engines.get(which).cloned().into_iter().collect()
        };
        if chosen.is_empty() {
            return Err(ha_core::Error::Agent {
                agent: spec.id.to_string(),
                message: format!(
                    "drbddisk: no replicated resource named `{which}` (known: {})",
                    engines.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            });
        }
        Ok(Box::new(DrbdDisk::new(spec.id.clone(), chosen)) as Box<dyn Resource>)
    });
}
