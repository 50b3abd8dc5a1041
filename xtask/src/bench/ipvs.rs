//! `cargo xtask bench ipvs [--trials N] [--services N] [--dests N]`: build the same IPVS table
//! (default 10,000 services x 5 real servers) with our netlink client (`ha-lvs-vmcheck apply`)
//! and with `ipvsadm -R`, each in its own fresh VM.
//!
//! Fresh VMs because the kernel keeps deleted destinations on a trash list for about two
//! minutes and every new destination scans it: a second run in the same kernel is slower.
//! Both sides read the same ipvsadm rules file (written in the guest by `ha-lvs-bench rules`)
//! and are timed the same way: guest wall clock around the one command, process start and
//! parsing included. Each side's table is then saved (`ipvsadm -S -n`) and its line count
//! checked. Last line: `RESULT ours_s=.. ipvsadm_s=.. ratio=..` (medians over the trials).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use testkit::vm::{self, Vm};

/// Guest script: write the rules, time `__APPLY__`, check the resulting table size.
const SCRIPT: &str = r#"
set -eu
/bin/ha-lvs-bench rules __S__ __D__ > /tmp/rules
t0=$(date +%s%N)
__APPLY__
t1=$(date +%s%N)
echo "APPLY_NS $((t1 - t0))"
echo "LINES $(ipvsadm -S -n | wc -l)"
"#;

/// Build release binaries of ha-lvs and return their paths by name.
pub fn build_ha_lvs(bins: &[&str]) -> anyhow::Result<Vec<PathBuf>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?
        .to_path_buf();
    let mut args = vec!["build", "--release", "-p", "ha-lvs"];
    for b in bins {
        args.extend(["--bin", b]);
    }
    args.push("--message-format=json-render-diagnostics");
    eprintln!("bench: building {} (release)", bins.join(", "));
    let out = Command::new(&cargo)
        .current_dir(&root)
        .args(&args)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {cargo} build -p ha-lvs"))?;
    if !out.status.success() {
        bail!("`cargo {}` failed ({})", args.join(" "), out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    bins.iter()
        .map(|b| {
            text.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find_map(|v| {
                    (v["reason"] == "compiler-artifact" && v["target"]["name"] == *b)
                        .then(|| v["executable"].as_str().map(PathBuf::from))
                        .flatten()
                })
                .with_context(|| format!("cargo built ha-lvs but reported no {b} executable"))
        })
        .collect()
}

/// Median of a non-empty list.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

struct Opts {
    trials: usize,
    services: usize,
    dests: usize,
}

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts {
        trials: 3,
        services: 10_000,
        dests: 5,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| -> anyhow::Result<usize> {
            it.next()
                .with_context(|| format!("{name} needs a value"))?
                .parse()
                .with_context(|| format!("{name} takes a number"))
        };
        match a.as_str() {
            "--trials" => o.trials = val("--trials")?.max(1),
            "--services" => o.services = val("--services")?,
            "--dests" => o.dests = val("--dests")?,
            other => {
                bail!("bench ipvs: unknown argument `{other}` (--trials N --services N --dests N)")
            }
        }
    }
    Ok(o)
}

/// One fresh VM applying the table with `apply`; returns seconds.
fn one(
    img: &vm::VmImage,
    bins: &[PathBuf],
    o: &Opts,
    apply: &str,
    label: &str,
) -> anyhow::Result<f64> {
    let script = SCRIPT
        .replace("__S__", &o.services.to_string())
        .replace("__D__", &o.dests.to_string())
        .replace("__APPLY__", apply);
    let out = Vm::builder()
        .image(img.clone())
        .modules(["ip_vs", "ip_vs_wrr"])
        .memory_mb(1024)
        .binary(&bins[0], "/bin/ha-lvs-bench")
        .binary(&bins[1], "/bin/ha-lvs-vmcheck")
        .command(script)
        .timeout(Duration::from_secs(900))
        .run()
        .with_context(|| format!("VM run of {label}"))?;
    if !out.success() {
        bail!(
            "{label} failed in the VM (exit {}):\n{}\n{}",
            out.exit_code,
            out.stdout,
            out.stderr
        );
    }
    let field = |tag: &str| -> anyhow::Result<u64> {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(tag))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("{label}: no `{tag}` in guest output:\n{}", out.stdout))
    };
    let ns = field("APPLY_NS ")?;
    let lines = field("LINES ")?;
    let want = (o.services + o.services * o.dests) as u64;
    if lines != want {
        bail!("{label}: the kernel table has {lines} rules after the run, expected {want}");
    }
    Ok(ns as f64 / 1e9)
}

/// Run the benchmark.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let o = parse(args)?;
    let img = vm::ensure_image().context("VM image (`cargo xtask vm-image` builds it)")?;
    let bins = build_ha_lvs(&["ha-lvs-bench", "ha-lvs-vmcheck"])?;
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for t in 1..=o.trials {
        eprintln!("bench ipvs: trial {t}/{}", o.trials);
        ours.push(one(
            &img,
            &bins,
            &o,
            "/bin/ha-lvs-vmcheck apply /tmp/rules >/dev/null",
            "ha-lvs-vmcheck apply",
        )?);
        theirs.push(one(
            &img,
            &bins,
            &o,
            "ipvsadm -R < /tmp/rules",
            "ipvsadm -R",
        )?);
    }
    println!(
        "IPVS table build: {} services x {} real servers ({} rules), one fresh VM (qemu TCG, 1 vCPU) per run;",
        o.services,
        o.dests,
        o.services * (1 + o.dests)
    );
    println!(
        "guest wall clock around the one command (process start + parse + netlink), same rules file"
    );
    println!(
        "{:<6} {:>12} {:>12} {:>8}",
        "trial", "ours_s", "ipvsadm_s", "ratio"
    );
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        println!("{:<6} {:>12.2} {:>12.2} {:>8.3}", i + 1, a, b, a / b);
    }
    let (a, b) = (median(&ours), median(&theirs));
    println!("{:<6} {:>12.2} {:>12.2} {:>8.3}", "median", a, b, a / b);
    println!("RESULT ours_s={a:.2} ipvsadm_s={b:.2} ratio={:.3}", a / b);
    Ok(())
}
