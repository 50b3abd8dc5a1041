//! Debian packages the suite needs, installed when missing (as root).
//!
//! The one list of host packages: the VM image recipe (`testkit::vm::image`) copies tools
//! from these, and the network-namespace rig drives `ip`, `tc` and `ping`.

use std::process::{Command, Stdio};

use anyhow::Context;

/// Debian packages needed on the host, with why.
pub const PACKAGES: &[(&str, &str)] = &[
    (
        "qemu-system-x86",
        "runs the test kernel (qemu-system-x86_64, TCG)",
    ),
    ("busybox-static", "the guest's userland"),
    ("cpio", "inspecting initramfs images"),
    (
        "lz4",
        "unpacks the kernel for qemu's direct (PVH) boot, ~0.3 s faster per VM",
    ),
    (
        "kmod",
        "depmod/modprobe to resolve module dependencies for the image",
    ),
    ("ipvsadm", "reference IPVS tool, copied into the guest"),
    ("nbd-client", "kernel NBD client, copied into the guest"),
    (
        "drbd-utils",
        "drbdadm/drbdsetup/drbdmeta for DRBD 8.4, copied into the guest",
    ),
    ("e2fsprogs", "mkfs.ext4/e2fsck, copied into the guest"),
    ("iproute2", "ip/tc for network namespaces and the guest"),
    ("iputils-ping", "ping between namespaces"),
    ("coreutils", "dd/date/sha256sum copied into the guest"),
    ("bash", "the guest runs commands under bash"),
    (
        "qemu-utils",
        "qemu-img/qemu-io as NBD clients (ha-blockrep tests)",
    ),
    (
        "resource-agents",
        "real OCF agents (ha-core agents_real test)",
    ),
    (
        "keepalived",
        "the peer measured by `cargo xtask bench failover`",
    ),
    (
        "stress-ng",
        "CPU load for the false-failover phase of the failover bench",
    ),
];

/// Names of the packages in [`PACKAGES`] that are not installed.
pub fn missing() -> anyhow::Result<Vec<&'static str>> {
    let mut missing = Vec::new();
    for (pkg, _) in PACKAGES {
        let out = Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", pkg])
            .stderr(Stdio::null())
            .output()
            .context("running dpkg-query (is this a Debian system?)")?;
        if !String::from_utf8_lossy(&out.stdout).contains("install ok installed") {
            missing.push(*pkg);
        }
    }
    Ok(missing)
}

/// Install missing packages: as root, `apt-get update` once then `apt-get install` the missing
/// ones; otherwise only report them.
pub fn ensure() -> anyhow::Result<()> {
    let missing = missing()?;
    if missing.is_empty() {
        return Ok(());
    }
    if !testkit::is_root() {
        eprintln!(
            "xtask: missing Debian packages (not root, not installing): {}\n  install with: sudo apt-get install --no-install-recommends {}",
            missing.join(", "),
            missing.join(" ")
        );
        return Ok(());
    }
    eprintln!(
        "xtask: installing missing Debian packages: {}",
        missing.join(" ")
    );
    // Other jobs on the machine may hold the dpkg lock for a while: wait for it.
    apt(&["update"])?;
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(&missing);
    apt(&args)
}

fn apt(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("apt-get")
        .args(["-o", "DPkg::Lock::Timeout=600", "-q"])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("running apt-get {}", args.join(" ")))?;
    anyhow::ensure!(
        status.success(),
        "apt-get {} failed with {status}",
        args.join(" ")
    );
    Ok(())
}
