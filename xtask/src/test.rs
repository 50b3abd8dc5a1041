//! `cargo xtask test`: the one test command (README, `.ci/run`).
//!
//! Steps: install missing Debian packages (as root), check formatting, lints and docs, check
//! that the fuzz targets compile, build the VM boot image, then run every test of the workspace.
//! Privileged tests run because we are root; `.ci/run` also sets
//! `HA_TOOLKIT_REQUIRE_PRIVILEGED=1` so that a privileged test that would skip fails instead.

use anyhow::{Context, bail};
use std::process::Command;
use std::time::Instant;

/// Run the whole suite; `args` go to `cargo test` after `--`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let started = Instant::now();
    step("install missing packages", super::deps::ensure)?;
    step("cargo fmt --check", || {
        cargo(&["fmt", "--all", "--", "--check"])
    })?;
    step("cargo clippy", || {
        cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
    })?;
    step("cargo doc (warnings denied)", || {
        cargo_env(
            &["doc", "--workspace", "--no-deps"],
            &[("RUSTDOCFLAGS", "-D warnings")],
        )
    })?;
    // The fuzz targets need nightly to fuzz, but must always compile against the current APIs.
    step("fuzz targets compile", || {
        cargo(&["check", "--manifest-path", "fuzz/Cargo.toml", "--bins"])
    })?;
    step("build tests", || {
        cargo(&["test", "--workspace", "--no-run"])
    })?;
    step("vm image", || {
        if testkit::is_root() {
            super::vm::image(false).map(|_| ())
        } else {
            eprintln!("not root: VM image not built, VM tests will skip (or fail under CI)");
            Ok(())
        }
    })?;
    step("cargo test", || {
        let mut cmd = vec!["test", "--workspace"];
        if !args.is_empty() {
            cmd.push("--");
            cmd.extend(args.iter().map(String::as_str));
        }
        cargo(&cmd)
    })?;
    eprintln!("xtask test: all steps passed in {:.0?}", started.elapsed());
    Ok(())
}

fn step(name: &str, f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    eprintln!("==> {name}");
    let t = Instant::now();
    f().with_context(|| format!("step `{name}` failed"))?;
    eprintln!("<== {name}: ok in {:.1?}", t.elapsed());
    Ok(())
}

/// Run cargo with `args` in the workspace root, failing on a non-zero status.
pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    cargo_env(args, &[])
}

/// [`cargo`] with extra environment variables.
pub fn cargo_env(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("cannot run {cargo}"))?;
    if !status.success() {
        bail!("cargo {} exited with {status}", args.join(" "));
    }
    Ok(())
}

/// The workspace root (the parent of xtask's manifest directory).
pub fn workspace_root() -> std::path::PathBuf {
    let xtask = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask).to_path_buf()
}
