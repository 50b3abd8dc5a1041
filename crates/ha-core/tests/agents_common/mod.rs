//! Helpers shared by the `agents_*` integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use ha_core::model::{AgentSpec, ResourceSpec};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A spec with `timeout` for every operation.
pub fn spec(
    id: &str,
    agent: AgentSpec,
    params: &[(&str, &str)],
    timeout: Duration,
) -> ResourceSpec {
    ResourceSpec {
        id: id.into(),
        agent,
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        start_timeout: timeout,
        stop_timeout: timeout,
        monitor_interval: None,
        monitor_timeout: timeout,
    }
}

/// Write an executable `/bin/sh` script `dir/name` with `body`.
pub fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// True when `pid` no longer runs (gone or a zombie).
pub fn pid_dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // Field 3, after the parenthesised command name, is the state.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(true),
    }
}

/// Wait up to 3 s for `pid` to die.
pub fn wait_dead(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if pid_dead(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    pid_dead(pid)
}

/// Read a pid written by a script.
pub fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}
