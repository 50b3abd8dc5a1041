//! Debian packages the suite needs, installed when missing (as root).

/// Install missing packages.
pub fn ensure() -> anyhow::Result<()> {
    Ok(())
}
