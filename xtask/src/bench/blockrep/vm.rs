//! `cargo xtask bench blockrep-vm`: two VMs on testkit's UDP link, same disks, kernel DRBD
//! 8.4 (protocol C) against `blockrepd` (protocol C) exported to the guest kernel over NBD.
//! On the Primary: 200 MiB `dd oflag=direct` of 1 MiB blocks, and 4 KiB `oflag=direct,dsync`
//! writes (time / count). The systems alternate over `--rounds N` (default 2; pass after
//! `--`) and each keeps its best figures. Last line: `RESULT tput_vs_drbd=.. lat_vs_drbd=..`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use testkit::vm::{self, UdpLink, Vm, VmOutput};

/// Backing disk of each VM.
const DISK_MIB: u64 = 256;
/// 4 KiB synchronous writes per latency run.
const LAT_COUNT: u32 = 300;

/// What the Primary measures once its device is ready (`$DEV`).
const MEASURE: &str = r#"
dd if=/dev/zero of=$DEV bs=1M count=200 oflag=direct 2>/tmp/dd1 || { cat /tmp/dd1 >&2; exit 1; }
echo "TPUT $(grep copied /tmp/dd1)"
dd if=/dev/zero of=$DEV bs=4k count=__N__ oflag=direct,dsync 2>/tmp/dd2 || { cat /tmp/dd2 >&2; exit 1; }
echo "LAT $(grep copied /tmp/dd2)"
"#;

const HELPERS: &str = r#"
set -u
waitcmd() { # SECONDS COMMAND...: retry until the command succeeds
    local secs=$1 i; shift
    for i in $(seq 1 $((secs * 10))); do "$@" && return 0; sleep 0.1; done
    echo "timeout: $*" >&2; return 1
}
inlog() { tail -n +"${3:-1}" "$1" | grep -q -- "$2"; }
"#;

const DRBD_CONF: &str = r#"
global { usage-count no; }
resource r0 {
  protocol C;
  device /dev/drbd0;
  disk /dev/vda;
  meta-disk internal;
  net { max-buffers 8000; max-epoch-size 8000; sndbuf-size 0; }
  on a { address 192.168.62.1:7789; }
  on b { address 192.168.62.2:7789; }
}
"#;

const DRBD_A: &str = r#"
drbdadm -- --force create-md r0 >/dev/null 2>&1
drbdadm up r0
waitcmd 60 sh -c 'drbdadm cstate r0 | grep -q Connected'
# Fresh pair: skip the initial sync, as DRBD's guide allows for empty disks.
drbdadm -- --clear-bitmap new-current-uuid r0
waitcmd 30 sh -c 'drbdadm dstate r0 | grep -q UpToDate/UpToDate'
drbdadm primary r0
DEV=/dev/drbd0
__MEASURE__
cat /proc/drbd >&2
drbdadm down r0
"#;

const DRBD_B: &str = r#"
drbdadm -- --force create-md r0 >/dev/null 2>&1
drbdadm up r0
waitcmd 60 sh -c 'drbdadm cstate r0 | grep -q Connected'
waitcmd 60 sh -c 'drbdadm role r0 | grep -q Secondary/Primary'
waitcmd 200 sh -c '! drbdadm cstate r0 | grep -q Connected'
"#;

const OURS_A: &str = r#"
/bin/blockrepd --disk /dev/vda --direct --create-md --rate 1G --node a --primary --force --listen 192.168.62.1:7789 --nbd 127.0.0.1:10809 --no-stdin >/tmp/a.log 2>&1 &
pid=$!
waitcmd 200 inlog /tmp/a.log 'cs=Connected ro=Primary/Secondary ds=UpToDate/UpToDate'
nbd-client 127.0.0.1 10809 /dev/nbd0 -N r0 -b 4096 >&2
DEV=/dev/nbd0
__MEASURE__
nbd-client -d /dev/nbd0 >&2
kill -TERM $pid; wait $pid
tail -3 /tmp/a.log >&2
"#;

const OURS_B: &str = r#"
/bin/blockrepd --disk /dev/vda --direct --create-md --rate 1G --node b --connect 192.168.62.1:7789 --no-stdin >/tmp/b.log 2>&1 &
waitcmd 200 inlog /tmp/b.log 'cs=Connected ro=Secondary/Primary'
n=$(wc -l </tmp/b.log)
waitcmd 200 inlog /tmp/b.log 'ro=Secondary/Unknown' $((n + 1))
"#;

/// Seconds from a dd summary (`... copied, 3.96 s, 53 MB/s`).
fn dd_secs(stdout: &str, tag: &str) -> anyhow::Result<f64> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(tag))
        .with_context(|| format!("no `{tag}` line in: {stdout}"))?;
    let after = line
        .split("copied, ")
        .nth(1)
        .with_context(|| format!("unexpected dd line `{line}`"))?;
    after
        .split_whitespace()
        .next()
        .and_then(|s| s.replace(',', ".").parse().ok())
        .with_context(|| format!("no seconds in `{line}`"))
}

/// Throughput (s for 200 MiB) and 4 KiB latency (s) of one system.
fn run_pair(
    img: &testkit::vm::VmImage,
    dir: &Path,
    bin: &Path,
    a_script: &str,
    b_script: &str,
) -> anyhow::Result<(f64, f64)> {
    let (la, lb) = UdpLink::pair()?;
    let measure = MEASURE.replace("__N__", &LAT_COUNT.to_string());
    let mk = |name: &str, end, cidr: &str, script: &str| -> anyhow::Result<_> {
        let disk = dir.join(format!("{name}.img"));
        let f = std::fs::File::create(&disk)?;
        f.set_len(DISK_MIB << 20)?;
        Ok(Vm::builder()
            .image(img.clone())
            .hostname(name)
            .binary(bin, "/bin/blockrepd")
            .file_bytes("/etc/drbd.conf", DRBD_CONF, 0o644)
            .disk(disk)
            .modules(["nbd", "drbd"])
            .link(end, Some(cidr))
            .command(format!(
                "{HELPERS}\nset -e\n{}",
                script.replace("__MEASURE__", &measure)
            ))
            .timeout(Duration::from_secs(300)))
    };
    let outs = vm::run_all(vec![
        mk("a", la, "192.168.62.1/24", a_script)?,
        mk("b", lb, "192.168.62.2/24", b_script)?,
    ]);
    let mut outs: Vec<VmOutput> = outs.into_iter().collect::<Result<_, _>>()?;
    let b = outs.pop().context("no output of VM b")?;
    let a = outs.pop().context("no output of VM a")?;
    if a.exit_code != 0 {
        bail!(
            "primary VM failed ({}): {}\n{}",
            a.exit_code,
            a.stdout,
            a.stderr
        );
    }
    if b.exit_code != 0 {
        eprintln!("warning: secondary VM exited {}: {}", b.exit_code, b.stderr);
    }
    eprintln!("{}{}", a.stdout, a.stderr);
    Ok((
        dd_secs(&a.stdout, "TPUT ")?,
        dd_secs(&a.stdout, "LAT ")? / f64::from(LAT_COUNT),
    ))
}

/// Run the VM benchmark.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    // The machine is shared: alternate the systems over several rounds and keep each
    // one's best figures, so a burst of load elsewhere does not decide the ratio.
    let rounds: usize = match args {
        [] => 2,
        [flag, n] if flag == "--rounds" => n
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .with_context(|| format!("--rounds wants a positive number, not `{n}`"))?,
        other => bail!("usage: cargo xtask bench blockrep-vm [--rounds N] (got {other:?})"),
    };
    if !testkit::is_root() {
        bail!("bench blockrep-vm needs root (qemu, VM image)");
    }
    let img = vm::ensure_image().context("VM image (cargo xtask vm-image)")?;
    let bin = super::daemon::build_blockrepd()?;
    let dir = tempfile::Builder::new()
        .prefix("bench-blockrep-vm-")
        .tempdir_in(super::daemon::scratch_root())?;
    let (mut drbd_t, mut drbd_l, mut ours_t, mut ours_l) = (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
    for round in 1..=rounds {
        let (t, l) = run_pair(&img, dir.path(), &bin, DRBD_A, DRBD_B)?;
        eprintln!("round {round}: DRBD {t:.2} s, {:.2} ms", l * 1e3);
        (drbd_t, drbd_l) = (drbd_t.min(t), drbd_l.min(l));
        let (t, l) = run_pair(&img, dir.path(), &bin, OURS_A, OURS_B)?;
        eprintln!("round {round}: ours {t:.2} s, {:.2} ms", l * 1e3);
        (ours_t, ours_l) = (ours_t.min(t), ours_l.min(l));
    }
    println!();
    println!(
        "{:28} {:>16} {:>10} {:>16}",
        "system (2 TCG VMs, UDP, best)", "200 MiB dd, s", "MB/s", "4K dsync lat ms"
    );
    for (name, t, l) in [
        ("DRBD 8.4 protocol C", drbd_t, drbd_l),
        ("blockrepd C + kernel NBD", ours_t, ours_l),
    ] {
        println!(
            "{name:28} {t:>16.2} {:>10.1} {:>16.2}",
            209.715_2 / t,
            l * 1e3
        );
    }
    println!(
        "RESULT tput_vs_drbd={:.2} lat_vs_drbd={:.2}",
        drbd_t / ours_t,
        ours_l / drbd_l
    );
    Ok(())
}
