//! IPVS generic-netlink client, declarative reconcile, ipvsadm formats and a shared real-server
//! health checker.
//!
//! - [`model`]: services, real servers, counters.
//! - [`ipvsadm`]: `ipvsadm -S -n` rules (parse/write) and the `ipvsadm -L -n` listing.
//! - [`netlink`]: the kernel's generic netlink family "IPVS" (codec and client).
//! - [`reconcile`]: minimal changes from the current to a desired table.
//! - [`ldirectord`]: ldirectord.cf import.
//! - [`checker`]: shared real-server health checks driving the table.
//! - [`realserver`]: VIP on `lo` and ARP sysctls for DR/TUN real servers.
//! - [`agent`]: the director's table as an ha-core cluster resource.

pub mod agent;
pub mod checker;
pub mod error;
pub mod ipvsadm;
pub mod ldirectord;
pub mod model;
pub mod netlink;
pub mod realserver;
pub mod reconcile;
#[cfg(test)]
mod testutil;

pub use error::{Error, KernelError, KernelErrorKind, Result};
