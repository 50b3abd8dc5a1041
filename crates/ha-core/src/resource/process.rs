//! Running one agent action as a child process, bounded by a timeout.
//!
//! The child leads its own process group, so a timeout (or the caller dropping the future)
//! kills the script *and* whatever it forked (`sleep`, a hung helper) with one `killpg`.
//! Output is captured (capped) for status parsing, meta-data and logs. A daemon started by an
//! init script may keep our stdout pipe open forever, so after the child exits we wait only a
//! short grace period for the pipes to reach end-of-file and keep what was read.

use crate::outcome::OcfCode;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

/// At most this much of each output stream is kept (meta-data is tens of kilobytes).
const OUTPUT_CAP: usize = 1 << 20;
/// How long to wait for the output pipes after the child exited.
const PIPE_GRACE: Duration = Duration::from_millis(200);
/// How long to wait for a killed child to be reaped.
const REAP_GRACE: Duration = Duration::from_secs(2);
/// Spawn attempts when the script is busy being written (ETXTBSY) by someone else.
const SPAWN_ATTEMPTS: u32 = 5;

/// One invocation of an agent.
#[derive(Debug, Clone)]
pub(crate) struct Invocation {
    /// The executable.
    pub program: PathBuf,
    /// Arguments (the action is among them).
    pub args: Vec<OsString>,
    /// Variables added to the inherited environment.
    pub env: Vec<(OsString, OsString)>,
    /// Inherited variables starting with this prefix are removed first (e.g. `OCF_`, so an
    /// `OCF_RESKEY_x` in the daemon's own environment cannot leak into every agent).
    pub scrub_prefix: Option<&'static str>,
    /// Bound on the whole run.
    pub timeout: Duration,
}

/// How an invocation ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The process exited.
    Exited {
        /// Exit code.
        code: i32,
        /// Captured standard output (lossy UTF-8).
        stdout: String,
        /// Captured standard error (lossy UTF-8).
        stderr: String,
    },
    /// Killed by a signal we did not send.
    Signaled(Option<i32>),
    /// The timeout expired; the process group was killed.
    TimedOut,
    /// The program could not be started.
    SpawnFailed(io::Error),
}

impl Outcome {
    /// The OCF code of an outcome that is not a normal exit; None for `Exited`.
    pub fn abnormal_code(&self) -> Option<OcfCode> {
        match self {
            Outcome::Exited { .. } => None,
            Outcome::Signaled(_) => Some(OcfCode::ErrGeneric),
            Outcome::TimedOut => Some(OcfCode::Timeout),
            Outcome::SpawnFailed(e) => Some(spawn_error_code(e)),
        }
    }
}

/// OCF code for a failure to execute the agent.
pub(crate) fn spawn_error_code(e: &io::Error) -> OcfCode {
    match e.kind() {
        io::ErrorKind::NotFound => OcfCode::ErrInstalled,
        io::ErrorKind::PermissionDenied => OcfCode::ErrPerm,
        _ => OcfCode::ErrGeneric,
    }
}

/// Kills a process group when dropped while armed: covers both the timeout and the caller
/// cancelling the operation.
struct GroupKiller {
    pgid: Option<Pid>,
}

impl GroupKiller {
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // ESRCH (already gone) is fine.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }

    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        if self.pgid.is_some() {
            tracing::debug!(pgid = ?self.pgid, "agent operation cancelled; killing its process group");
        }
        self.kill();
    }
}

async fn read_capped<R: AsyncRead + Unpin>(reader: Option<R>, out: &mut Vec<u8>) {
    let Some(mut reader) = reader else { return };
    let mut chunk = [0u8; 8192];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                // Keep draining past the cap so the writer never blocks on a full pipe.
                let room = OUTPUT_CAP.saturating_sub(out.len());
                out.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
}

async fn spawn(inv: &Invocation) -> io::Result<tokio::process::Child> {
    let mut attempt = 0;
    loop {
        let mut cmd = Command::new(&inv.program);
        if let Some(prefix) = inv.scrub_prefix {
            for (k, _) in std::env::vars_os() {
                if k.as_encoded_bytes().starts_with(prefix.as_bytes()) {
                    cmd.env_remove(k);
                }
            }
        }
        // Init scripts and agents expect to run from `/`, as under init or Pacemaker.
        cmd.current_dir("/")
            .args(&inv.args)
            .envs(inv.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        match cmd.spawn() {
            Err(e)
                if e.raw_os_error() == Some(nix::errno::Errno::ETXTBSY as i32)
                    && attempt + 1 < SPAWN_ATTEMPTS =>
            {
                // Another thread forked while the script was open for writing (or it is being
                // replaced); the window is short.
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
            other => return other,
        }
    }
}

/// Run `inv` to completion or timeout.
pub(crate) async fn run(inv: &Invocation) -> Outcome {
    let started = Instant::now();
    let mut child = match spawn(inv).await {
        Ok(c) => c,
        Err(e) => return Outcome::SpawnFailed(e),
    };
    let pgid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .map(Pid::from_raw);
    let mut killer = GroupKiller { pgid };
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let mut out = Vec::new();
    let mut err = Vec::new();

    let status = {
        let mut reads = Box::pin(async {
            tokio::join!(read_capped(stdout, &mut out), read_capped(stderr, &mut err));
        });
        let waited = tokio::time::timeout(inv.timeout, async {
            let mut reads_done = false;
            let status = loop {
                tokio::select! {
                    s = child.wait() => break s,
                    _ = &mut reads, if !reads_done => reads_done = true,
                }
            };
            if !reads_done {
                let _ = tokio::time::timeout(PIPE_GRACE, &mut reads).await;
            }
            status
        })
        .await;
        drop(reads);
        waited
    };

    match status {
        Err(_elapsed) => {
            killer.kill();
            // Reap the leader so it does not linger as a zombie.
            let _ = tokio::time::timeout(REAP_GRACE, child.wait()).await;
            tracing::warn!(
                program = %inv.program.display(),
                timeout_ms = inv.timeout.as_millis() as u64,
                "agent timed out; process group killed"
            );
            Outcome::TimedOut
        }
        Ok(Err(e)) => {
            killer.kill();
            Outcome::SpawnFailed(e)
        }
        Ok(Ok(st)) => {
            // Children the script left behind (daemons) are the service itself: leave them.
            killer.disarm();
            tracing::trace!(
                program = %inv.program.display(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                ?st,
                "agent finished"
            );
            match st.code() {
                Some(code) => Outcome::Exited {
                    code,
                    stdout: String::from_utf8_lossy(&out).into_owned(),
                    stderr: String::from_utf8_lossy(&err).into_owned(),
                },
                None => {
                    use std::os::unix::process::ExitStatusExt;
                    Outcome::Signaled(st.signal())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, scrub_prefix: Option<&'static str>) -> Invocation {
        Invocation {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![("EXTRA".into(), "x y".into())],
            timeout: Duration::from_secs(10),
            scrub_prefix,
        }
    }

    #[tokio::test]
    async fn captures_exit_code_and_output() {
        match run(&sh(r#"echo "out $EXTRA"; echo err >&2; exit 42"#, None)).await {
            Outcome::Exited {
                code,
                stdout,
                stderr,
            } => {
                assert_eq!(code, 42);
                assert_eq!(stdout, "out x y\n");
                assert_eq!(stderr, "err\n");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn scrubs_inherited_variables_by_prefix() {
        // cargo sets CARGO_MANIFEST_DIR for the test process.
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        let script = r#"echo "${CARGO_MANIFEST_DIR-unset}""#;
        let Outcome::Exited { stdout, .. } = run(&sh(script, None)).await else {
            panic!("no exit")
        };
        assert_ne!(stdout.trim(), "unset");
        let Outcome::Exited { stdout, .. } = run(&sh(script, Some("CARGO_MANIFEST"))).await else {
            panic!("no exit")
        };
        assert_eq!(stdout.trim(), "unset");
    }

    #[tokio::test]
    async fn output_is_capped_and_drained() {
        // 3 MiB of output must neither block the writer nor be kept whole.
        let inv = sh("head -c 3145728 /dev/zero; exit 0", None);
        let Outcome::Exited { code, stdout, .. } = run(&inv).await else {
            panic!("no exit")
        };
        assert_eq!(code, 0);
        assert_eq!(stdout.len(), OUTPUT_CAP);
    }

    #[tokio::test]
    async fn spawn_failures_and_timeout() {
        let mut inv = sh("", None);
        inv.program = "/nonexistent/agent".into();
        assert_eq!(run(&inv).await.abnormal_code(), Some(OcfCode::ErrInstalled));
        let mut inv = sh("sleep 30", None);
        inv.timeout = Duration::from_millis(200);
        let t0 = Instant::now();
        assert_eq!(run(&inv).await.abnormal_code(), Some(OcfCode::Timeout));
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
}
