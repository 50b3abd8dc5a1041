//! IPVS generic-netlink client, declarative reconcile, ipvsadm formats and a shared real-server
//! health checker.
//!
//! - [`model`]: services, real servers, counters.
//! - [`ipvsadm`]: `ipvsadm -S -n` rules (parse/write) and the `ipvsadm -L -n` listing.
//! - [`netlink`]: the kernel's generic netlink family "IPVS" (codec and client).
//! - [`reconcile`]: minimal changes from the current to a desired table.
//! - [`ldirectord`]: ldirectord.cf import.
//! - [`keepalived`]: keepalived.conf import (its `virtual_server` blocks).
//! - [`checker`]: shared real-server health checks driving the table.
//! - [`realserver`]: VIP on `lo` and ARP sysctls for DR/TUN real servers.
//! - [`agent`]: the director's table as an ha-core cluster resource.
//!
//! ```no_run
//! use ha_lvs::model::*;
//! use ha_lvs::{ipvsadm, netlink::IpvsClient, reconcile};
//! # fn main() -> ha_lvs::Result<()> {
//! let desired = ipvsadm::parse_rules(
//!     "-A -t 10.0.0.1:80 -s wrr\n-a -t 10.0.0.1:80 -r 10.0.1.1:80 -m -w 2\n",
//!     "rules",
//! )?;
//! let mut client = IpvsClient::connect()?; // resolves the IPVS family once
//! let applied = reconcile::apply(&mut client, &desired)?; // minimal, pipelined
//! let again = reconcile::apply(&mut client, &desired)?;
//! assert!(again.is_empty());
//! print!("{}", ipvsadm::render_list(&client.info()?, &client.table()?, Default::default()));
//! # let _ = applied; Ok(()) }
//! ```

pub mod agent;
pub mod checker;
pub mod error;
pub mod ipvsadm;
pub mod keepalived;
pub mod ldirectord;
pub mod model;
pub mod netlink;
pub mod realserver;
pub mod reconcile;
#[cfg(test)]
mod testutil;

pub use error::{Error, KernelError, KernelErrorKind, Result};
