//! Waiting for a VM and reading what it reported over its serial ports.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use super::base64;
use super::builder::PORTS;
use super::init::{EXIT_MARKER, FILE_END_MARKER, FILE_MARKER, SETUP_FAILED_MARKER};
use crate::{Error, Result};

/// A VM booting or running; dropping it kills qemu.
#[derive(Debug)]
pub struct RunningVm {
    child: Option<Child>,
    dir: tempfile::TempDir,
    started: Instant,
    timeout: Duration,
}

impl RunningVm {
    pub(super) fn new(child: Child, dir: tempfile::TempDir, timeout: Duration) -> RunningVm {
        RunningVm {
            child: Some(child),
            dir,
            started: Instant::now(),
            timeout,
        }
    }

    /// Wait for the guest to finish (or for the timeout, which kills it).
    pub fn wait(mut self) -> Result<VmOutput> {
        let deadline = self.started + self.timeout;
        let mut child = self
            .child
            .take()
            .ok_or_else(|| Error::Invalid("VM already waited for".into()))?;
        let status = loop {
            match try_wait_rusage(&child).map_err(|e| Error::io("wait for qemu", e))? {
                Some(s) => break Some(s),
                None if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        let elapsed = self.started.elapsed();
        let read = |name: &str| fs::read(self.dir.path().join(name)).unwrap_or_default();
        let console = String::from_utf8_lossy(&read(PORTS[0])).replace('\r', "");
        let stdout = String::from_utf8_lossy(&read(PORTS[1])).into_owned();
        let stderr = String::from_utf8_lossy(&read(PORTS[2])).into_owned();
        let control = String::from_utf8_lossy(&read(PORTS[3])).into_owned();
        let Some((status, cpu_time)) = status else {
            return Err(Error::VmTimeout {
                after: self.timeout,
                console_tail: tail(&console, 30),
                stdout_tail: tail(&stdout, 30),
            });
        };
        let parsed = parse_control(&control)?;
        match parsed.outcome {
            Outcome::Exit(code) => Ok(VmOutput {
                exit_code: code,
                stdout,
                stderr,
                console,
                files: parsed.files,
                elapsed,
                cpu_time,
            }),
            Outcome::SetupFailed => Err(Error::GuestSetup { stderr }),
            Outcome::Missing => {
                let mut qemu_err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut qemu_err);
                }
                Err(Error::VmNoExit {
                    qemu_status: format!("{status}; stderr: {}", qemu_err.trim()),
                    console_tail: tail(&console, 40),
                })
            }
        }
    }
}

impl Drop for RunningVm {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `try_wait` that also returns qemu's CPU time (user + system), a measure of the guest's work
/// that stays stable when other jobs load the host, unlike wall time.
fn try_wait_rusage(child: &Child) -> std::io::Result<Option<(ExitStatus, Duration)>> {
    let pid = libc::pid_t::try_from(child.id())
        .map_err(|_| std::io::Error::other("child pid out of range"))?;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data, for which all-zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 only writes through the two pointers, which point to live locals; the pid
    // is our own unreaped child (reaped only here or by `Child::wait` after a kill).
    let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
    match r {
        -1 => Err(std::io::Error::last_os_error()),
        0 => Ok(None),
        _ => {
            let tv = |t: libc::timeval| {
                Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
                    + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
            };
            Ok(Some((
                ExitStatus::from_raw(status),
                tv(usage.ru_utime) + tv(usage.ru_stime),
            )))
        }
    }
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// What a finished guest command produced.
#[derive(Debug, Clone)]
pub struct VmOutput {
    /// Exit status of the command.
    pub exit_code: i32,
    /// Its standard output, exactly (no kernel messages).
    pub stdout: String,
    /// Its standard error (and the setup script's).
    pub stderr: String,
    /// The kernel console (ttyS0), for diagnosis.
    pub console: String,
    /// Files the command left under `/out`, by path relative to `/out`.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Wall time from starting qemu to its exit.
    pub elapsed: Duration,
    /// CPU time qemu used (user + system): unlike `elapsed`, barely affected by other load
    /// on the host, so better for comparing runs.
    pub cpu_time: Duration,
}

impl VmOutput {
    /// True when the command exited 0.
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }

    /// The distinct lines of stdout that start with `tag`, without it: guest scripts tag what
    /// a test reads back (e.g. `SUM ` before each checksum line).
    pub fn tagged(&self, tag: &str) -> BTreeSet<&str> {
        self.stdout
            .lines()
            .filter_map(|l| l.strip_prefix(tag))
            .collect()
    }

    /// `Ok(self)` when the command exited 0, else an error carrying its output.
    pub fn check(self) -> Result<VmOutput> {
        if self.success() {
            Ok(self)
        } else {
            Err(Error::GuestCommand {
                exit_code: self.exit_code,
                stdout: self.stdout,
                stderr: self.stderr,
            })
        }
    }
}

enum Outcome {
    Exit(i32),
    SetupFailed,
    Missing,
}

struct Control {
    outcome: Outcome,
    files: BTreeMap<String, Vec<u8>>,
}

/// Parse the control port: file blocks then the exit marker.
fn parse_control(text: &str) -> Result<Control> {
    let mut files = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    let mut outcome = Outcome::Missing;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some((name, buf)) = current.as_mut() {
            if line == FILE_END_MARKER {
                let data = base64::decode(buf).map_err(|e| {
                    Error::Invalid(format!("guest file {name}: bad base64 from the guest: {e}"))
                })?;
                files.insert(std::mem::take(name), data);
                current = None;
            } else {
                buf.push_str(line.trim());
            }
        } else if let Some(name) = line
            .strip_prefix(FILE_MARKER)
            .and_then(|r| r.strip_prefix(' '))
        {
            current = Some((name.to_string(), String::new()));
        } else if let Some(code) = line
            .strip_prefix(EXIT_MARKER)
            .and_then(|r| r.trim().parse::<i32>().ok())
        {
            outcome = Outcome::Exit(code);
        } else if line.trim() == SETUP_FAILED_MARKER {
            outcome = Outcome::SetupFailed;
        }
    }
    Ok(Control { outcome, files })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_port_is_parsed() {
        let text =
            "HA-TOOLKIT-FILE a/b.txt\r\naGVs\nbG8=\nHA-TOOLKIT-FILE-END\nHA-TOOLKIT-EXIT 3\n";
        let c = parse_control(text).unwrap();
        assert!(matches!(c.outcome, Outcome::Exit(3)));
        assert_eq!(
            c.files.get("a/b.txt").map(Vec::as_slice),
            Some(&b"hello"[..])
        );
        assert!(matches!(
            parse_control("garbage\n").unwrap().outcome,
            Outcome::Missing
        ));
        assert!(matches!(
            parse_control("HA-TOOLKIT-SETUP-FAILED\n").unwrap().outcome,
            Outcome::SetupFailed
        ));
    }
}
