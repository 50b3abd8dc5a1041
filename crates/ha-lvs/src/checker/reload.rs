//! Reloading a changed configuration file into a running [`Checker`] (ldirectord's
//! `autoreload`, keepalived's reload on SIGHUP), whatever format the file is in.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::MonitorConfig;
use super::driver::Checker;

/// Identity of a file's content for change detection (modification time and length).
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Poll `path` every `poll`; when it changed, `load` it (a configuration and its import
/// warnings) and hand the configuration to `checker`, which applies it as a minimal diff that
/// keeps the state of unchanged probes. A file that fails to load is logged and ignored: the
/// running configuration stays. Returns when the checker has stopped.
pub async fn watch_file<E: std::fmt::Display>(
    path: PathBuf,
    checker: &Checker,
    poll: Duration,
    load: impl Fn(&Path) -> Result<(MonitorConfig, Vec<String>), E>,
) {
    let mut last = stamp(&path);
    loop {
        tokio::time::sleep(poll).await;
        let now = stamp(&path);
        if now == last {
            continue;
        }
        last = now;
        match load(&path) {
            Ok((monitor, warnings)) => {
                for w in &warnings {
                    tracing::warn!(path = %path.display(), warning = %w, "configuration imported approximately");
                }
                match checker.reload(monitor).await {
                    Ok(n) => {
                        tracing::info!(path = %path.display(), changes = n, "configuration reloaded")
                    }
                    Err(_) => return,
                }
            }
            Err(e) => {
                tracing::error!(path = %path.display(), %e, "invalid configuration; keeping the running one")
            }
        }
    }
}
