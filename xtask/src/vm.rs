//! `cargo xtask vm-image` and `cargo xtask vm`: thin wrappers over `testkit::vm`.

use std::path::PathBuf;

/// Build or reuse the image; returns its directory.
pub fn image(_force: bool) -> anyhow::Result<PathBuf> {
    anyhow::bail!("vm-image is not implemented yet")
}

/// Boot and run `command` in the guest, exiting with its status.
pub fn run(_command: &str, _timeout_s: u64) -> anyhow::Result<()> {
    anyhow::bail!("vm is not implemented yet")
}
