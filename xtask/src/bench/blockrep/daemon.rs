//! Processes the blockrep benches drive: `blockrepd` (status lines in a log, commands on
//! stdin) and `qemu-nbd`. Both are stopped by their own PID when dropped.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Where scratch disks go (a real filesystem, like the benches' other files).
pub fn scratch_root() -> PathBuf {
    std::env::temp_dir()
}

/// `cargo build --release -p ha-blockrep --bin blockrepd`; returns the executable.
pub fn build_blockrepd() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?
        .to_path_buf();
    eprintln!("bench blockrep: building blockrepd (release)");
    let out = Command::new(&cargo)
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "-p",
            "ha-blockrep",
            "--bin",
            "blockrepd",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {cargo} build -p ha-blockrep"))?;
    if !out.status.success() {
        bail!(
            "`cargo build --release -p ha-blockrep --bin blockrepd` failed ({})",
            out.status
        );
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] == "compiler-artifact"
            && v["target"]["name"] == "blockrepd"
            && let Some(exe) = v["executable"].as_str()
        {
            return Ok(PathBuf::from(exe));
        }
    }
    bail!("cargo built ha-blockrep but reported no blockrepd executable")
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: plain syscall; the PID is our own child, not yet reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// A running `blockrepd`.
pub struct Blockrepd {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    log: PathBuf,
    /// Bytes of the log already looked at (later waits look past them): a wait reads only
    /// what was appended since, so polling a long log does not eat the CPU it measures.
    pos: u64,
}

impl Blockrepd {
    /// Start `bin args...` with stdout and stderr going to `log`.
    pub fn start(bin: &Path, args: &[String], log: &Path) -> anyhow::Result<Self> {
        let f = std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let mut child = Command::new(bin)
            .args(args)
            .args(["--status-ms", "10"])
            .stdin(Stdio::piped())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let stdin = child.stdin.take();
        Ok(Blockrepd {
            child: Some(child),
            stdin,
            log: log.to_owned(),
            pos: 0,
        })
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Complete lines appended to the log since `self.pos`, with their end offsets.
    fn new_lines(&self) -> Vec<(u64, String)> {
        use std::io::{Read, Seek, SeekFrom};
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log)
            && f.seek(SeekFrom::Start(self.pos)).is_ok()
        {
            let _ = f.read_to_string(&mut text);
        }
        let mut end = self.pos;
        let mut out = Vec::new();
        for l in text.split_inclusive('\n') {
            if !l.ends_with('\n') {
                break; // still being written
            }
            end += l.len() as u64;
            out.push((end, l.trim_end().to_string()));
        }
        out
    }

    /// Wait for a log line containing `pat` after the last matched one; returns it.
    pub fn wait_for(&mut self, pat: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            for (end, l) in self.new_lines() {
                self.pos = end;
                if l.contains(pat) {
                    return Ok(l);
                }
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                bail!(
                    "blockrepd exited ({st}) while waiting for `{pat}`: {}",
                    self.lines().join("\n")
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "timeout waiting for `{pat}` in {}: {}",
                    self.log.display(),
                    self.lines().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Same as [`Blockrepd::wait_for`]: kept as a separate name where "after" matters.
    pub fn wait_for_after(&mut self, pat: &str, timeout: Duration) -> anyhow::Result<String> {
        self.wait_for(pat, timeout)
    }

    /// The data size from the `READY size=N` line.
    pub fn data_size(&self) -> anyhow::Result<u64> {
        self.lines()
            .iter()
            .find_map(|l| l.strip_prefix("READY size="))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .context("no READY size= line from blockrepd")
    }

    /// Ask for a status line; returns the resync bytes sent so far (`rs=`).
    pub fn query_rs(&mut self) -> anyhow::Result<u64> {
        // Only a status line printed after this request counts.
        self.pos = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let stdin = self.stdin.as_mut().context("blockrepd stdin closed")?;
        stdin.write_all(b"status\n")?;
        stdin.flush()?;
        let line = self.wait_for("STATUS ", Duration::from_secs(10))?;
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("rs="))
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("no rs= in `{line}`"))
    }

    /// Orderly stop (SIGTERM), SIGKILL after 30 s.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        signal(c.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if c.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        c.kill().ok();
        c.wait().ok();
        bail!(
            "blockrepd did not stop within 30 s: {}",
            self.lines().join("\n")
        )
    }
}

impl Drop for Blockrepd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }
}

/// A running `qemu-nbd` serving one raw file as export `r0`.
pub struct QemuNbd {
    child: Child,
    port: u16,
}

impl QemuNbd {
    /// Serve `file` on 127.0.0.1:`port` (page cache on, like blockrepd's buffered files).
    pub fn start(file: &Path, port: u16) -> anyhow::Result<Self> {
        let child = Command::new("qemu-nbd")
            .args([
                "-f",
                "raw",
                "-x",
                "r0",
                "-b",
                "127.0.0.1",
                "-t",
                "--cache=writeback",
            ])
            .arg(format!("--port={port}"))
            .arg(file)
            .spawn()
            .context("start qemu-nbd")?;
        let q = QemuNbd { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("qemu-nbd did not listen on port {port}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(q)
    }

    /// NBD URL of the export.
    pub fn url(&self) -> String {
        format!("nbd://127.0.0.1:{}/r0", self.port)
    }
}

impl Drop for QemuNbd {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}
