//! `cargo xtask vm-image` and `cargo xtask vm`: thin wrappers over `testkit::vm`.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use testkit::vm;

/// Build or reuse the image; returns its directory.
pub fn image(force: bool) -> anyhow::Result<PathBuf> {
    let started = Instant::now();
    let img = vm::build_image(force).context("building the VM image")?;
    eprintln!(
        "VM image ready in {} ({:.1} s): kernel {}",
        img.dir().display(),
        started.elapsed().as_secs_f64(),
        vm::image::kernel_release()
    );
    Ok(img.dir().to_path_buf())
}

/// Boot and run `command` in the guest, exiting with its status.
pub fn run(command: &str, timeout_s: u64) -> anyhow::Result<()> {
    let img = vm::ensure_image().context("the VM image is missing and could not be built")?;
    let out = vm::Vm::builder()
        .image(img)
        .user_net()
        .command(command)
        .timeout(Duration::from_secs(timeout_s))
        .run()
        .context("running the VM")?;
    std::io::stdout().write_all(out.stdout.as_bytes())?;
    std::io::stderr().write_all(out.stderr.as_bytes())?;
    for (name, data) in &out.files {
        eprintln!("[guest file /out/{name}: {} bytes]", data.len());
    }
    eprintln!(
        "[guest exit {} after {:.2} s wall, {:.2} s qemu CPU]",
        out.exit_code,
        out.elapsed.as_secs_f64(),
        out.cpu_time.as_secs_f64()
    );
    std::io::stdout().flush()?;
    std::process::exit(out.exit_code);
}
