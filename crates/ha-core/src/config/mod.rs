//! Configuration: the TOML cluster file and the import of heartbeat's ha.cf, haresources and
//! authkeys, both producing a validated [`ClusterModel`].
//!
//! Every error is an [`Error::Config`] naming the file, the 1-based line and the field (line 0
//! when something is missing altogether), and its message says how to fix the problem.
//!
//! # TOML
//!
//! See `examples/config/cluster.toml` for a commented example. Defaults follow heartbeat and
//! Pacemaker: keepalive 2 s, deadtime 30 s, warntime deadtime/2, initdead 2 x deadtime; link
//! port 694, mcast ttl 1, serial baud 19200; operation timeouts 20 s, no monitor unless
//! `monitor_interval` is set; stickiness 0, migration threshold INFINITY, failure timeout never,
//! no-quorum-policy stop, auto_failback on. Quorum defaults to `two_node` for two nodes (as
//! `pcs cluster setup` does) and `majority` otherwise. Node ids default to the node's position
//! (from 1). A resource listed in no `[[group]]` gets a group of its own with the resource's id.
//! Relative `secret_file` paths are relative to the configuration file's directory.
//!
//! # heartbeat
//!
//! [`import_heartbeat`] reads a heartbeat v1 configuration (ha.cf, haresources, authkeys); see
//! [`heartbeat`] for the mapping choices and [`haresources`] for resource ids and agents.
//! [`to_toml_string`] writes any model as TOML that loads back to the same model, which makes
//! the import a one-time migration.

mod authkeys;
pub mod duration;
mod export;
mod ha_cf;
pub mod haresources;
pub mod heartbeat;
mod locate;
mod toml_build;
mod toml_schema;
pub mod validate;

pub use duration::{format_duration, parse_duration, parse_heartbeat_time};
pub use export::to_toml_string;
pub use heartbeat::{
    HeartbeatText, ImportOptions, import_heartbeat, import_heartbeat_str, import_heartbeat_texts,
    import_heartbeat_with,
};

use crate::error::{Error, Result};
use crate::model::ClusterModel;
use locate::Source;
use std::path::Path;

/// Reads and validates a TOML cluster file.
pub fn load_file(path: impl AsRef<Path>) -> Result<ClusterModel> {
    let path = path.as_ref();
    let text = read(path)?;
    from_toml_str(&text, path)
}

/// Parses and validates TOML text; `path_for_errors` names the file in errors and anchors
/// relative `secret_file` paths.
pub fn from_toml_str(text: &str, path_for_errors: impl AsRef<Path>) -> Result<ClusterModel> {
    let src = Source {
        path: path_for_errors.as_ref(),
        text,
    };
    // Syntax first, so a broken line is not blamed on a field of the schema.
    toml::from_str::<toml::Table>(text).map_err(|e| src.toml_error(&e, true))?;
    let file: toml_schema::FileToml =
        toml::from_str(text).map_err(|e| src.toml_error(&e, false))?;
    toml_build::build(&file, src)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}
