//! The image recipe: what goes into the initramfs and how it is assembled from the Debian
//! kernel package and the host's tools.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::cpio::CpioWriter;
use super::image::{RECIPE_VERSION, kernel_package, kernel_release};
use super::init::INIT;
use crate::{Error, Result, cmd};

/// IPVS with every scheduler and the SIP persistence engine (load them all with
/// `Vm::builder().modules(IPVS_MODULES.iter().copied())`).
pub const IPVS_MODULES: &[&str] = &[
    "ip_vs",
    "ip_vs_rr",
    "ip_vs_wrr",
    "ip_vs_lc",
    "ip_vs_wlc",
    "ip_vs_fo",
    "ip_vs_ovf",
    "ip_vs_lblc",
    "ip_vs_lblcr",
    "ip_vs_dh",
    "ip_vs_sh",
    "ip_vs_sed",
    "ip_vs_nq",
    "ip_vs_mh",
    "ip_vs_pe_sip",
];

/// Modules (with their dependencies) shipped in the image besides [`IPVS_MODULES`]; load them
/// with [`super::VmBuilder::modules`] or `modprobe` in the guest.
pub const MODULES: &[&str] = &[
    "ip_vs_ftp",
    "nf_conntrack",
    "nbd",
    "drbd",
    "loop",
    "veth",
    "bridge",
    "dummy",
    "macvlan",
    "bonding",
    "tun",
    "sch_netem",
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
];

/// Host programs copied into the image (found on PATH), with their shared libraries.
pub const TOOLS: &[&str] = &[
    "bash",
    "ip",
    "tc",
    "bridge",
    "ipvsadm",
    "ipvsadm-save",
    "ipvsadm-restore",
    "nbd-client",
    "mke2fs",
    "mkfs.ext4",
    "e2fsck",
    "fsck.ext4",
    "drbdadm",
    "drbdsetup",
    "drbdmeta",
    "dd",
    "date",
    "sha256sum",
];

/// Other host files copied as they are (missing ones are skipped).
const EXTRA_FILES: &[&str] = &[
    "/usr/lib/drbd/drbdadm-84",
    "/usr/lib/drbd/drbdsetup-84",
    "/etc/mke2fs.conf",
    "/etc/iproute2",
    "/usr/lib/tc",
];

fn io_ctx<T>(r: std::io::Result<T>, what: impl FnOnce() -> String) -> Result<T> {
    r.map_err(|e| Error::io(what(), e))
}

/// Fetch the kernel .deb into `root/debs` unless already there; returns its path. The download
/// goes to `tmp` first and is renamed into place, so a cached .deb is always complete.
fn kernel_deb(root: &Path, tmp: &Path) -> Result<PathBuf> {
    let debs = root.join("debs");
    io_ctx(fs::create_dir_all(&debs), || {
        format!("create {}", debs.display())
    })?;
    let prefix = format!("{}_", kernel_package());
    let find = |dir: &Path| -> Option<PathBuf> {
        fs::read_dir(dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
            })
    };
    if let Some(p) = find(&debs) {
        return Ok(p);
    }
    let dl = tmp.join("download");
    io_ctx(fs::create_dir_all(&dl), || {
        format!("create {}", dl.display())
    })?;
    let pkg = kernel_package();
    let download = || {
        std::process::Command::new("apt-get")
            .args(["download", &pkg])
            .current_dir(&dl)
            .stdin(std::process::Stdio::null())
            .output()
    };
    let mut out = io_ctx(download(), || "cannot run apt-get (is this Debian?)".into())?;
    if !out.status.success() && crate::is_root() {
        // Fresh machines have no package lists yet.
        cmd::run("apt-get", &["update"])?;
        out = io_ctx(download(), || "cannot run apt-get".into())?;
    }
    if !out.status.success() {
        let e = cmd::failure("apt-get", &["download", &pkg], &out);
        return Err(Error::Image(format!(
            "{e}\n(if Debian dropped this kernel, pick a current one with `apt-cache search --names-only \
             'linux-image-.*-cloud-amd64'` and change KERNEL_ABI in crates/testkit/src/vm/image.rs)"
        )));
    }
    let got = find(&dl).ok_or_else(|| {
        Error::Image(format!(
            "apt-get download {pkg} left no .deb in {}",
            dl.display()
        ))
    })?;
    let name = got
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    let dst = debs.join(name);
    io_ctx(fs::rename(&got, &dst), || {
        format!("move {} to {}", got.display(), dst.display())
    })?;
    let _ = fs::remove_dir_all(&dl);
    Ok(dst)
}

/// LZ4 legacy frame magic, as the kernel's `CONFIG_KERNEL_LZ4` payload starts.
const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];

/// Unpack the ELF `vmlinux` from the bzImage into `tmp/vmlinux` when the kernel supports PVH
/// entry: qemu then starts it directly, skipping the in-guest decompression (~0.3 s of the
/// ~2.4 s boot under TCG). Returns false (the bzImage is used) when that is not possible.
fn extract_vmlinux(bzimage: &Path, kconfig: &Path, tmp: &Path) -> Result<bool> {
    let config = fs::read_to_string(kconfig).unwrap_or_default();
    if !config.lines().any(|l| l == "CONFIG_PVH=y") || cmd::which("lz4").is_none() {
        return Ok(false);
    }
    let data = io_ctx(fs::read(bzimage), || format!("read {}", bzimage.display()))?;
    let Some(off) = data.windows(4).position(|w| w == LZ4_LEGACY_MAGIC) else {
        return Ok(false);
    };
    let payload = tmp.join("payload.lz4");
    io_ctx(fs::write(&payload, &data[off..]), || {
        "write the kernel payload".into()
    })?;
    let out_path = tmp.join("vmlinux");
    let out = io_ctx(fs::File::create(&out_path), || {
        format!("create {}", out_path.display())
    })?;
    let input = io_ctx(fs::File::open(&payload), || {
        "open the kernel payload".into()
    })?;
    // lz4 exits non-zero on the bzImage's trailing bytes after the payload: judge the result
    // by what it wrote instead.
    let _ = std::process::Command::new("lz4")
        .arg("-dc")
        .stdin(input)
        .stdout(out)
        .stderr(std::process::Stdio::null())
        .status();
    let _ = fs::remove_file(&payload);
    let mut head = [0u8; 4];
    let ok = fs::File::open(&out_path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .is_ok()
        && head == *b"\x7fELF"
        && fs::metadata(&out_path)
            .map(|m| m.len() > (4 << 20))
            .unwrap_or(false);
    if !ok {
        let _ = fs::remove_file(&out_path);
    }
    Ok(ok)
}

/// Map a host path to where it goes in the merged-/usr guest (`/lib/x` -> `usr/lib/x`).
pub(crate) fn guest_rel(path: &str) -> String {
    let p = path.trim_start_matches('/');
    for top in ["bin/", "sbin/", "lib/", "lib64/"] {
        if p.starts_with(top) {
            return format!("usr/{p}");
        }
    }
    p.to_string()
}

/// Copy a host file (following symlinks) into the staging tree at `guest` path.
fn stage_copy(stage: &Path, host: &Path, guest: &str) -> Result<()> {
    let dst = stage.join(guest_rel(guest));
    if let Some(parent) = dst.parent() {
        io_ctx(fs::create_dir_all(parent), || {
            format!("create {}", parent.display())
        })?;
    }
    let _ = fs::remove_file(&dst);
    io_ctx(fs::copy(host, &dst), || {
        format!("copy {} to {}", host.display(), dst.display())
    })?;
    Ok(())
}

/// Copy a host file or directory tree into the staging tree at the same path.
fn stage_tree(stage: &Path, host: &Path) -> Result<()> {
    let md = io_ctx(fs::metadata(host), || format!("stat {}", host.display()))?;
    if md.is_dir() {
        let entries = io_ctx(fs::read_dir(host), || format!("read {}", host.display()))?;
        for e in entries.flatten() {
            stage_tree(stage, &e.path())?;
        }
        Ok(())
    } else {
        stage_copy(stage, host, &host.to_string_lossy())
    }
}

/// Shared libraries (and the loader) a dynamically linked host binary needs, per `ldd`.
/// Scripts and static binaries yield nothing.
pub(crate) fn shared_libs(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = cmd::output("ldd", &[&bin.to_string_lossy()])?;
    if !out.status.success() {
        return Ok(Vec::new());
    }
    let mut libs = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let line = line.trim();
        if line.contains("not found") {
            return Err(Error::Image(format!(
                "{}: ldd reports a missing library: {line}",
                bin.display()
            )));
        }
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

pub(super) fn build_into(root: &Path, tmp: &Path) -> Result<()> {
    let krel = kernel_release();
    let deb = kernel_deb(root, tmp)?;
    let kroot = tmp.join("kroot");
    let stage = tmp.join("stage");
    io_ctx(fs::create_dir_all(&kroot), || {
        format!("create {}", kroot.display())
    })?;
    cmd::run(
        "dpkg",
        &["-x", &deb.to_string_lossy(), &kroot.to_string_lossy()],
    )?;
    let vmlinuz = kroot.join("boot").join(format!("vmlinuz-{krel}"));
    io_ctx(fs::copy(&vmlinuz, tmp.join("vmlinuz")), || {
        format!("copy {}", vmlinuz.display())
    })?;
    let kconfig = kroot.join("boot").join(format!("config-{krel}"));
    let direct = extract_vmlinux(&vmlinuz, &kconfig, tmp)?;
    tracing::info!(pvh_direct_boot = direct, "kernel prepared");
    cmd::run("depmod", &["-b", &kroot.to_string_lossy(), &krel])?;

    // Skeleton: merged /usr like the host, so host paths work unchanged in the guest.
    for d in [
        "usr/bin",
        "usr/sbin",
        "usr/lib",
        "usr/lib64",
        "etc",
        "proc",
        "sys",
        "run",
        "tmp",
        "root",
        "var/lib/drbd",
        "mnt",
        "out",
        "ha",
    ] {
        io_ctx(fs::create_dir_all(stage.join(d)), || {
            format!("create {d} in {}", stage.display())
        })?;
    }
    for (link, target) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("var/run", "../run"),
        ("var/lock", "../run/lock"),
    ] {
        io_ctx(std::os::unix::fs::symlink(target, stage.join(link)), || {
            format!("symlink {link}")
        })?;
    }

    // Kernel modules and their dependencies.
    let kmods = kroot.join("lib/modules").join(&krel);
    let mut module_files = BTreeSet::new();
    for m in IPVS_MODULES.iter().chain(MODULES) {
        let out = cmd::run(
            "modprobe",
            &[
                "-d",
                &kroot.to_string_lossy(),
                "-S",
                &krel,
                "--show-depends",
                m,
            ],
        )?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(rest) = line.strip_prefix("insmod ")
                && let Some(p) = rest.split_whitespace().next()
            {
                module_files.insert(PathBuf::from(p));
            }
        }
    }
    let guest_mods = stage.join("usr/lib/modules").join(&krel);
    for f in &module_files {
        let rel = f.strip_prefix(&kmods).map_err(|_| {
            Error::Image(format!(
                "module {} is outside {}",
                f.display(),
                kmods.display()
            ))
        })?;
        let dst = guest_mods.join(rel);
        if let Some(parent) = dst.parent() {
            io_ctx(fs::create_dir_all(parent), || {
                format!("create {}", parent.display())
            })?;
        }
        io_ctx(fs::copy(f, &dst), || format!("copy {}", f.display()))?;
    }
    for meta in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        let src = kmods.join(meta);
        if src.is_file() {
            io_ctx(fs::copy(&src, guest_mods.join(meta)), || {
                format!("copy {}", src.display())
            })?;
        }
    }
    cmd::run("depmod", &["-b", &stage.to_string_lossy(), &krel])?;

    // Tools and their libraries.
    let mut missing = Vec::new();
    let mut libs = BTreeSet::new();
    // Rust test binaries need these even though no tool pulls them in.
    for l in [
        "/lib/x86_64-linux-gnu/libgcc_s.so.1",
        "/lib/x86_64-linux-gnu/libm.so.6",
    ] {
        if Path::new(l).is_file() {
            libs.insert(PathBuf::from(l));
        }
    }
    for t in TOOLS {
        match cmd::which(t) {
            Some(p) => {
                stage_copy(&stage, &p, &p.to_string_lossy())?;
                libs.extend(shared_libs(&p)?);
            }
            None => missing.push(*t),
        }
    }
    if !missing.is_empty() {
        return Err(Error::Image(format!(
            "host tools missing: {} (install the Debian packages listed in xtask/src/deps.rs, e.g. `cargo xtask test` as root does it)",
            missing.join(", ")
        )));
    }
    for f in EXTRA_FILES {
        let p = Path::new(f);
        if p.exists() {
            stage_tree(&stage, p)?;
            if p.is_file() {
                libs.extend(shared_libs(p)?);
            }
        }
    }
    let mut lib_list = String::new();
    for l in &libs {
        stage_copy(&stage, l, &l.to_string_lossy())?;
        lib_list.push_str(&guest_rel(&l.to_string_lossy()));
        lib_list.push('\n');
    }
    // Per-run archives skip libraries the base image already has.
    io_ctx(fs::write(tmp.join("libs.txt"), lib_list), || {
        "write libs.txt".into()
    })?;

    // Busybox: every applet that has no real tool of the same name.
    let busybox = cmd::which("busybox").ok_or_else(|| {
        Error::Image(
            "busybox not found (Debian package busybox-static, listed in xtask/src/deps.rs)".into(),
        )
    })?;
    stage_copy(&stage, &busybox, "/usr/bin/busybox")?;
    // At their usual paths: the kernel runs /sbin/modprobe to autoload modules, and libipvs
    // runs it to load ip_vs.
    let list = cmd::run(&busybox.to_string_lossy(), &["--list-full"])?;
    for full in String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        let rel = guest_rel(full);
        let Some(applet) = Path::new(&rel)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
        else {
            continue;
        };
        let taken = ["usr/bin", "usr/sbin"]
            .iter()
            .any(|d| fs::symlink_metadata(stage.join(d).join(&applet)).is_ok());
        if taken {
            continue;
        }
        let dst = stage.join(&rel);
        if let Some(parent) = dst.parent() {
            io_ctx(fs::create_dir_all(parent), || {
                format!("create {}", parent.display())
            })?;
        }
        io_ctx(std::os::unix::fs::symlink("/usr/bin/busybox", &dst), || {
            format!("link applet {applet}")
        })?;
    }

    // Small /etc.
    let etc = stage.join("etc");
    for (name, text) in [
        (
            "passwd",
            "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        ),
        ("group", "root:x:0:\nnogroup:x:65534:\n"),
        ("hosts", "127.0.0.1 localhost vm\n::1 localhost\n"),
        (
            "nsswitch.conf",
            "passwd: files\ngroup: files\nhosts: files\n",
        ),
    ] {
        io_ctx(fs::write(etc.join(name), text), || {
            format!("write /etc/{name}")
        })?;
    }
    let init = stage.join("init");
    io_ctx(fs::write(&init, INIT), || "write /init".into())?;
    io_ctx(
        fs::set_permissions(&init, fs::Permissions::from_mode(0o755)),
        || "chmod /init".into(),
    )?;

    // The archive (dev/console first: the kernel opens it for init's stdio before /init runs).
    let cpio_path = tmp.join("base.cpio");
    let file = io_ctx(fs::File::create(&cpio_path), || {
        format!("create {}", cpio_path.display())
    })?;
    let mut w = CpioWriter::new(std::io::BufWriter::new(file));
    let res = (|| -> std::io::Result<()> {
        w.dir("dev", 0o755)?;
        w.char_dev("dev/console", 0o600, 5, 1)?;
        w.tree(&stage, "")?;
        Ok(())
    })();
    io_ctx(res, || format!("write {}", cpio_path.display()))?;
    io_ctx(w.finish(), || format!("finish {}", cpio_path.display()))?;

    let manifest = format!(
        "kernel package: {}\nkernel deb: {}\nrecipe: {RECIPE_VERSION}\nmodules: {}\ntools: {}\n",
        kernel_package(),
        deb.display(),
        [IPVS_MODULES, MODULES].concat().join(" "),
        TOOLS.join(" "),
    );
    io_ctx(fs::write(tmp.join("manifest.txt"), manifest), || {
        "write manifest".into()
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_paths_follow_merged_usr() {
        assert_eq!(
            guest_rel("/lib/x86_64-linux-gnu/libc.so.6"),
            "usr/lib/x86_64-linux-gnu/libc.so.6"
        );
        assert_eq!(
            guest_rel("/lib64/ld-linux-x86-64.so.2"),
            "usr/lib64/ld-linux-x86-64.so.2"
        );
        assert_eq!(guest_rel("/usr/sbin/ip"), "usr/sbin/ip");
        assert_eq!(guest_rel("/etc/x"), "etc/x");
    }
}
