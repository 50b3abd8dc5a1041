//! `cargo xtask bench blockrep`: the replication engine's NBD export on the host, against
//! qemu-nbd serving a plain file, all driven by `qemu-img bench` in one run.
//!
//! Setups: (a) qemu-nbd on a plain file, (b) `blockrepd` without a peer, (c) with a protocol C
//! peer on loopback, (d) protocol A. Per setup: sequential 1 MiB writes (queue depth 8) and
//! 4 KiB writes in writethrough mode (queue depth 1: each write is durable before the next).
//! Also the initial full resync against `cp` of the same bytes, and the bytes an incremental
//! resync moves against the bytes dirtied while the peer was away; every timed run starts
//! with all dirty pages written back. Last line:
//! `RESULT c_vs_qemu_nbd=.. lat4k_c_us=.. lat4k_qemu_us=.. incr_resync_ratio=.. full_resync_vs_cp=..`.

pub mod daemon;
pub mod vm;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use self::daemon::{Blockrepd, QemuNbd};

/// Data size of every export.
const SIZE_MIB: u64 = 256;
/// 4 KiB writethrough writes per latency run.
const LAT_COUNT: u32 = 1000;

/// Throughput and latency of one setup.
struct Row {
    name: &'static str,
    seq_mb_s: f64,
    lat4k_us: f64,
}

/// Run the host benchmark.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    if let Some(a) = args.first() {
        bail!("bench blockrep takes no arguments (got `{a}`)");
    }
    for tool in ["qemu-img", "qemu-io", "qemu-nbd"] {
        which(tool).with_context(|| format!("{tool} is missing: apt-get install qemu-utils"))?;
    }
    let bin = daemon::build_blockrepd()?;
    let dir = tempfile::Builder::new()
        .prefix("bench-blockrep-")
        .tempdir_in(daemon::scratch_root())
        .context("create a scratch directory")?;
    let d = dir.path();
    let size = SIZE_MIB << 20;

    // Source data for cp and for the Primary's disk (real bytes, not a sparse file).
    let src = d.join("src.img");
    sh(&format!("head -c {size} /dev/urandom >{}", src.display()))?;
    let cp_secs = best_of(3, || {
        let dst = d.join("cp.img");
        let _ = std::fs::remove_file(&dst);
        settle()?;
        let t = Instant::now();
        sh(&format!("cp {} {}", src.display(), dst.display()))?;
        let e = t.elapsed();
        std::fs::remove_file(&dst).ok();
        Ok(e)
    })?;

    // The same copy made durable (what a resync must deliver before the target may claim
    // UpToDate): cp followed by fdatasync of the copy, so the disk's write speed shows.
    let cp_sync_secs = best_of(3, || {
        let dst = d.join("cp.img");
        let _ = std::fs::remove_file(&dst);
        settle()?;
        let t = Instant::now();
        sh(&format!(
            "cp {} {} && dd if=/dev/null of={} oflag=append conv=notrunc,fdatasync status=none",
            src.display(),
            dst.display(),
            dst.display()
        ))?;
        let e = t.elapsed();
        std::fs::remove_file(&dst).ok();
        Ok(e)
    })?;

    let mut rows = Vec::new();

    // (a) qemu-nbd serving a plain file.
    let plain = d.join("plain.img");
    std::fs::File::create(&plain)?.set_len(size)?;
    {
        let q = QemuNbd::start(&plain, 10850)?;
        rows.push(measure("qemu-nbd, plain file", &q.url())?);
    }

    // (b) our export, no peer. The disk holds the source bytes plus room for metadata.
    let a_img = d.join("a.img");
    let b_img = d.join("b.img");
    sh(&format!("cp {} {}", src.display(), a_img.display()))?;
    let md_room = 16 << 20;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&a_img)?
        .set_len(size + md_room)?;
    std::fs::File::create(&b_img)?.set_len(size + md_room)?;
    let peer_port = 17870;
    let a_args = |proto: &str, create: bool| {
        let mut v = vec![
            "--disk".to_string(),
            a_img.display().to_string(),
            "--node".into(),
            "a".into(),
            "--primary".into(),
            "--force".into(),
            "--listen".into(),
            format!("127.0.0.1:{peer_port}"),
            "--nbd".into(),
            "127.0.0.1:10851".into(),
            "--protocol".into(),
            proto.into(),
            "--rate".into(),
            "64G".into(),
        ];
        if create {
            v.push("--create-md".into());
        }
        v
    };
    let b_args = |proto: &str, create: bool| {
        let mut v = vec![
            "--disk".to_string(),
            b_img.display().to_string(),
            "--node".into(),
            "b".into(),
            "--connect".into(),
            format!("127.0.0.1:{peer_port}"),
            "--protocol".into(),
            proto.into(),
            "--rate".into(),
            "64G".into(),
        ];
        if create {
            v.push("--create-md".into());
        }
        v
    };
    let url = "nbd://127.0.0.1:10851/r0".to_string();
    let mut a = Blockrepd::start(&bin, &a_args("C", true), &d.join("a.log"))?;
    a.wait_for("STATUS cs=WFConnection ro=Primary", Duration::from_secs(30))?;
    let data_size = a.data_size()?;
    rows.push(measure("blockrepd, no peer", &url)?);

    // Full resync: the peer joins with fresh metadata.
    settle()?;
    let t = Instant::now();
    let mut b = Blockrepd::start(&bin, &b_args("C", true), &d.join("b.log"))?;
    a.wait_for(
        "cs=Connected ro=Primary/Secondary ds=UpToDate/UpToDate",
        Duration::from_secs(300),
    )?;
    let full_secs = t.elapsed();
    // cp moved `size` bytes; the resync `data_size` (a little less): compare rates.
    let full_mb_s = data_size as f64 / full_secs.as_secs_f64() / 1e6;
    let cp_mb_s = size as f64 / cp_secs.as_secs_f64() / 1e6;

    // (c) protocol C with the peer.
    rows.push(measure("blockrepd, protocol C peer", &url)?);

    // Incremental resync: the peer goes away, 4 KiB..64 KiB pieces are dirtied, it returns.
    b.stop()?;
    a.wait_for_after("ro=Primary/Unknown", Duration::from_secs(30))?;
    let rs0 = a.query_rs()?;
    let mut cmds = Vec::new();
    let mut dirty = 0u64;
    for i in 0..256u64 {
        // Varying lengths (multiples of 4 KiB) at a 1 MiB stride: no overlaps.
        let len = 4096 * (1 + i % 16);
        cmds.push(format!("write -P 0x{:02x} {} {}", i % 251, i << 20, len));
        dirty += len;
    }
    qemu_io(&url, &cmds)?;
    let t = Instant::now();
    let mut b = Blockrepd::start(&bin, &b_args("C", false), &d.join("b2.log"))?;
    b.wait_for(
        "cs=Connected ro=Secondary/Primary ds=UpToDate/UpToDate",
        Duration::from_secs(120),
    )?;
    let incr_secs = t.elapsed();
    let moved = a.query_rs()? - rs0;
    b.stop()?;
    a.stop()?;

    // (d) protocol A: same disks, clean metadata, no resync.
    let mut a = Blockrepd::start(&bin, &a_args("A", false), &d.join("a3.log"))?;
    let mut b = Blockrepd::start(&bin, &b_args("A", false), &d.join("b3.log"))?;
    a.wait_for(
        "cs=Connected ro=Primary/Secondary ds=UpToDate/UpToDate",
        Duration::from_secs(60),
    )?;
    rows.push(measure("blockrepd, protocol A peer", &url)?);
    b.stop()?;
    a.stop()?;

    println!();
    println!(
        "{:32} {:>14} {:>16}",
        "setup", "seq 1M MB/s", "4K sync lat us"
    );
    for r in &rows {
        println!("{:32} {:>14.1} {:>16.1}", r.name, r.seq_mb_s, r.lat4k_us);
    }
    println!(
        "full resync {} MiB: {:.2} s ({full_mb_s:.0} MB/s); cp {} MiB: {:.3} s ({cp_mb_s:.0} MB/s)",
        data_size >> 20,
        full_secs.as_secs_f64(),
        SIZE_MIB,
        cp_secs.as_secs_f64()
    );
    let cp_sync_mb_s = size as f64 / cp_sync_secs.as_secs_f64() / 1e6;
    println!(
        "cp + fdatasync {} MiB: {:.3} s ({cp_sync_mb_s:.0} MB/s); full resync vs durable cp: {:.2}",
        SIZE_MIB,
        cp_sync_secs.as_secs_f64(),
        full_mb_s / cp_sync_mb_s
    );
    println!(
        "incremental resync: dirtied {} KiB, moved {} KiB in {:.3} s",
        dirty / 1024,
        moved / 1024,
        incr_secs.as_secs_f64()
    );
    let qemu = &rows[0];
    let c = &rows[2];
    println!(
        "RESULT c_vs_qemu_nbd={:.2} lat4k_c_us={:.0} lat4k_qemu_us={:.0} incr_resync_ratio={:.3} full_resync_vs_cp={:.2}",
        c.seq_mb_s / qemu.seq_mb_s,
        c.lat4k_us,
        qemu.lat4k_us,
        moved as f64 / dirty as f64,
        full_mb_s / cp_mb_s
    );
    Ok(())
}

/// Sequential 1 MiB writes and 4 KiB writethrough latency against `url` (best of 3 / 2).
fn measure(name: &'static str, url: &str) -> anyhow::Result<Row> {
    let seq = best_of(3, || {
        settle()?;
        qemu_img_bench(
            url,
            &["-w", "-s", "1M", "-c", &SIZE_MIB.to_string(), "-d", "8"],
        )
    })?;
    let lat = best_of(2, || {
        settle()?;
        qemu_img_bench(
            url,
            &[
                "-w",
                "-s",
                "4k",
                "-c",
                &LAT_COUNT.to_string(),
                "-d",
                "1",
                "-t",
                "writethrough",
            ],
        )
    })?;
    let row = Row {
        name,
        seq_mb_s: (SIZE_MIB << 20) as f64 / seq.as_secs_f64() / 1e6,
        lat4k_us: lat.as_secs_f64() * 1e6 / f64::from(LAT_COUNT),
    };
    eprintln!(
        "bench blockrep: {name}: {:.1} MB/s, {:.1} us",
        row.seq_mb_s, row.lat4k_us
    );
    Ok(row)
}

/// `qemu-img bench` run; returns the time it reports.
fn qemu_img_bench(url: &str, args: &[&str]) -> anyhow::Result<Duration> {
    let out = Command::new("qemu-img")
        .args(["bench", "-f", "raw", "--pattern=0x5a"])
        .args(args)
        .arg(url)
        .output()
        .context("run qemu-img bench")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "qemu-img bench {args:?} {url} failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // "Run completed in 1.234 seconds."
    let secs = text
        .lines()
        .find_map(|l| l.strip_prefix("Run completed in "))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.parse::<f64>().ok())
        .with_context(|| format!("no run time in qemu-img bench output: {text}"))?;
    Ok(Duration::from_secs_f64(secs))
}

fn qemu_io(url: &str, cmds: &[String]) -> anyhow::Result<()> {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "raw"]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let out = c.arg(url).output().context("run qemu-io")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("failed") {
        bail!("qemu-io against {url} failed: {text}");
    }
    Ok(())
}

fn best_of(n: usize, mut f: impl FnMut() -> anyhow::Result<Duration>) -> anyhow::Result<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..n {
        best = best.min(f()?);
    }
    Ok(best)
}

/// Write back all dirty pages before a timed run: otherwise the write-back of the previous
/// run (hundreds of MiB) competes with the next one, and which setup pays for it depends on
/// the order of the runs.
fn settle() -> anyhow::Result<()> {
    sh("sync")
}

fn sh(script: &str) -> anyhow::Result<()> {
    let st = Command::new("sh")
        .args(["-c", script])
        .status()
        .with_context(|| format!("run `{script}`"))?;
    if !st.success() {
        bail!("`{script}` failed ({st})");
    }
    Ok(())
}

fn which(tool: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|p| p.join(tool))
        .find(|p| p.is_file())
        .with_context(|| format!("`{tool}` not found on PATH"))
}
