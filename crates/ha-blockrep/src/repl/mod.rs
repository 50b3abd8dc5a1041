//! Replication: wire format, authentication, sync decision, resync control and the TCP driver.

pub mod auth;
pub mod decide;
pub mod packet;
pub mod rate;
