//! A cluster resource for director failover: the node running it owns the IPVS services of a
//! table (start installs them, stop removes them, monitor checks they are all in place).
//! Services of the kernel that are not in the table are never touched.

use std::sync::Mutex;

use async_trait::async_trait;
use ha_core::resource::Resource;
use ha_core::{OcfCode, ResourceId};

use crate::error::Error;
use crate::model::Table;
use crate::netlink::{IpvsClient, Request};
use crate::reconcile;

/// The IPVS table of a director as a cluster resource.
pub struct DirectorResource {
    id: ResourceId,
    table: Table,
    client: Mutex<Option<IpvsClient>>,
}

impl DirectorResource {
    /// A resource owning the services of `table`.
    pub fn new(id: ResourceId, table: Table) -> Self {
        DirectorResource {
            id,
            table,
            client: Mutex::new(None),
        }
    }

    fn with_client<T>(
        &self,
        f: impl FnOnce(&mut IpvsClient) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut guard = self
            .client
            .lock()
            .map_err(|_| Error::Check("IPVS client lock poisoned".into()))?;
        if guard.is_none() {
            *guard = Some(IpvsClient::connect()?);
        }
        match guard.as_mut() {
            Some(c) => {
                let r = f(c);
                if matches!(r, Err(Error::Io { .. }) | Err(Error::Protocol(_))) {
                    // Start over with a fresh socket next time.
                    *guard = None;
                }
                r
            }
            None => Err(Error::Check("no IPVS client".into())),
        }
    }

    fn managed(&self, current: Table) -> Table {
        current
            .into_iter()
            .filter(|v| self.table.iter().any(|d| d.service.key == v.service.key))
            .collect()
    }

    fn code(&self, op: &str, e: &Error) -> OcfCode {
        tracing::error!(resource = %self.id.as_str(), %e, "{op} failed");
        match e {
            Error::FamilyNotFound => OcfCode::ErrInstalled,
            Error::Invalid(_) | Error::Parse { .. } => OcfCode::ErrConfigured,
            Error::Kernel(k) if k.kind == crate::KernelErrorKind::PermissionDenied => {
                OcfCode::ErrPerm
            }
            _ => OcfCode::ErrGeneric,
        }
    }
}

#[async_trait]
impl Resource for DirectorResource {
    fn id(&self) -> &ResourceId {
        &self.id
    }

    async fn start(&self) -> OcfCode {
        let r = self.with_client(|c| {
            reconcile::validate(&self.table)?;
            let current = self.managed(c.current()?);
            c.apply(&reconcile::diff(&current, &self.table))
        });
        match r {
            Ok(()) => OcfCode::Success,
            Err(e) => self.code("start", &e),
        }
    }

    async fn stop(&self) -> OcfCode {
        let r = self.with_client(|c| {
            let reqs: Vec<Request> = self
                .managed(c.current()?)
                .into_iter()
                .map(|v| Request::DelService(v.service.key))
                .collect();
            c.apply(&reqs)
        });
        match r {
            Ok(()) => OcfCode::Success,
            Err(e) => self.code("stop", &e),
        }
    }

    async fn monitor(&self) -> OcfCode {
        match self.with_client(|c| c.current()) {
            Ok(current) => {
                let present = self.managed(current);
                if present.is_empty() {
                    OcfCode::NotRunning
                } else if present.len() == self.table.len() {
                    // Weights may legitimately differ (health checker quiesced a server).
                    OcfCode::Success
                } else {
                    tracing::warn!(resource = %self.id.as_str(), present = present.len(), want = self.table.len(), "some services missing");
                    OcfCode::ErrGeneric
                }
            }
            Err(e) => self.code("monitor", &e),
        }
    }

    async fn validate(&self) -> OcfCode {
        match reconcile::validate(&self.table) {
            Ok(()) => OcfCode::Success,
            Err(e) => self.code("validate", &e),
        }
    }
}
