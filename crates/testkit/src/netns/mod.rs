//! Network namespaces for tests: created with `ip netns add`, always deleted on drop
//! (also while a panicking test unwinds).
//!
//! Names are `htk<pid>x<counter><role>` so tests running in parallel never collide, and a
//! namespace left behind by a killed test run can be recognised and removed
//! ([`cleanup_stale`]).

mod topology;

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub use topology::{Host, Netem, Topology, TopologyBuilder};

use crate::{Error, Result, cmd};

/// Prefix of every namespace this rig creates.
pub const NAME_PREFIX: &str = "htk";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique namespace name for this process: `htk<pid>x<counter><role>`.
pub(crate) fn unique_name(role: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{NAME_PREFIX}{}x{n}{role}", std::process::id())
}

/// A named network namespace (`/var/run/netns/NAME`), deleted when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Create a fresh namespace with a unique name; `role` is a short tag (e.g. "h0", "br")
    /// that ends up in the name. Loopback is brought up.
    pub fn new(role: &str) -> Result<Netns> {
        let name = unique_name(role);
        cmd::run("ip", &["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace name as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the namespace's bind mount, usable with setns(2).
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// Run `ip -n NAME args...`; fails unless it exits 0.
    pub fn ip(&self, args: &[&str]) -> Result<Output> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        cmd::run("ip", &full)
    }

    /// Run a program inside the namespace (`ip netns exec NAME program args...`) and capture
    /// its output whatever its exit status.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output> {
        let mut full = vec!["netns", "exec", self.name.as_str(), program];
        full.extend_from_slice(args);
        cmd::output("ip", &full)
    }

    /// Like [`Netns::exec`] but fails unless the program exits 0.
    pub fn exec_ok(&self, program: &str, args: &[&str]) -> Result<Output> {
        let mut full = vec!["netns", "exec", self.name.as_str(), program];
        full.extend_from_slice(args);
        cmd::run("ip", &full)
    }

    /// Run a shell script inside the namespace (`sh -c script`), output captured.
    pub fn sh(&self, script: &str) -> Result<Output> {
        self.exec("sh", &["-c", script])
    }

    /// Start a long-running program inside the namespace; it is killed when the returned
    /// guard drops.
    pub fn spawn(&self, program: &str, args: &[&str]) -> Result<NsChild> {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::io(
                    format!("cannot start `{program}` in netns {}", self.name),
                    e,
                )
            })?;
        Ok(NsChild { child: Some(child) })
    }

    /// Run `f` on a new thread that has entered this namespace with setns(2), and return its
    /// result. Threads the closure creates (e.g. a tokio runtime's workers) inherit the
    /// namespace. A panic inside `f` is propagated to the caller.
    pub fn run<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        match self.try_run(f) {
            Ok(r) => r,
            // Entering the namespace failed: a test-rig failure, reported as a panic like any
            // other failed test step (this API is for tests only).
            Err(e) => panic!("Netns::run({}): {e}", self.name),
        }
    }

    /// Like [`Netns::run`] but reports a failure to enter the namespace as an error.
    pub fn try_run<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let path = self.path();
        let file =
            File::open(&path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        std::thread::scope(|s| {
            let handle = s.spawn(move || -> Result<R> {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                    Error::io(
                        format!("setns({})", path.display()),
                        std::io::Error::from(e),
                    )
                })?;
                drop(file);
                Ok(f())
            });
            match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = cmd::run("ip", &["netns", "del", &self.name]) {
            tracing::warn!(netns = %self.name, error = %e, "cannot delete network namespace");
            eprintln!("testkit: cannot delete netns {}: {e}", self.name);
        }
    }
}

/// A process started with [`Netns::spawn`]; killed and reaped on drop.
#[derive(Debug)]
pub struct NsChild {
    child: Option<Child>,
}

impl NsChild {
    /// The underlying process (e.g. to read its pipes).
    pub fn child(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// Kill the process and return its collected output.
    pub fn stop(mut self) -> Result<Output> {
        let mut child = match self.child.take() {
            Some(c) => c,
            None => return Err(Error::Invalid("process already stopped".into())),
        };
        let _ = child.kill();
        child
            .wait_with_output()
            .map_err(|e| Error::io("wait for namespaced process", e))
    }
}

impl Drop for NsChild {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Names of the network namespaces that currently exist (`ip netns list`).
pub fn list() -> Result<Vec<String>> {
    let out = cmd::run("ip", &["netns", "list"])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// Delete namespaces left behind by test processes that no longer exist (a test killed with
/// SIGKILL cannot run its drop guards). Returns the names removed.
pub fn cleanup_stale() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in list()? {
        let Some(rest) = name.strip_prefix(NAME_PREFIX) else {
            continue;
        };
        let Some((pid, _)) = rest.split_once('x') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if PathBuf::from(format!("/proc/{pid}")).exists() {
            continue;
        }
        if cmd::run("ip", &["netns", "del", &name]).is_ok() {
            removed.push(name);
        }
    }
    Ok(removed)
}
