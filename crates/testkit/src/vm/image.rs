//! Building and finding the cached boot image: a Debian cloud kernel plus an uncompressed
//! initramfs with busybox, the needed modules and the Debian tools the tests drive.
//!
//! Cache layout: `<target>/vm-image/<kernel release>-r<recipe>/{vmlinuz,vmlinux,base.cpio,...}`,
//! `<target>/vm-image/debs/` (downloaded .deb), `<target>/vm-image/.lock`. A build happens in
//! a temporary directory under the lock and is renamed into place, so a directory that exists
//! is complete, and concurrent test processes build it once.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::recipe::build_into;
pub use super::recipe::{IPVS_MODULES, MODULES, TOOLS};
use crate::{Error, Result, cmd};

/// The pinned Debian kernel ABI (the ONE place to change it). Its `-cloud-amd64` flavour
/// ships ip_vs, nbd, drbd (8.4) and virtio as modules.
pub const KERNEL_ABI: &str = "6.1.0-56";
/// Kernel flavour of the Debian package.
pub const KERNEL_FLAVOUR: &str = "cloud-amd64";
/// Bump when the image contents change, so caches are rebuilt.
pub const RECIPE_VERSION: u32 = 6;
/// Overrides where the image cache lives (a directory holding the `<release>-r<recipe>` dirs).
pub const IMAGE_DIR_ENV: &str = "HA_TOOLKIT_VM_IMAGE_DIR";

/// The full kernel release string, e.g. `6.1.0-56-cloud-amd64`.
pub fn kernel_release() -> String {
    format!("{KERNEL_ABI}-{KERNEL_FLAVOUR}")
}

/// Name of the Debian package holding the kernel.
pub fn kernel_package() -> String {
    format!("linux-image-{}", kernel_release())
}

/// Cache key: kernel release plus recipe version.
pub fn image_key() -> String {
    format!("{}-r{RECIPE_VERSION}", kernel_release())
}

/// A built boot image.
#[derive(Debug, Clone)]
pub struct VmImage {
    dir: PathBuf,
}

impl VmImage {
    /// Use an image directory (holding `vmlinuz` and `base.cpio`).
    pub fn at(dir: impl Into<PathBuf>) -> Result<VmImage> {
        let img = VmImage { dir: dir.into() };
        for p in [img.kernel(), img.initrd()] {
            if !p.is_file() {
                return Err(Error::Image(format!("{} is missing", p.display())));
            }
        }
        Ok(img)
    }

    /// The image directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The kernel (`-kernel`): the unpacked ELF `vmlinux` (PVH direct boot) when the build
    /// could make it, else the bzImage `vmlinuz`.
    pub fn kernel(&self) -> PathBuf {
        let elf = self.dir.join("vmlinux");
        if elf.is_file() {
            elf
        } else {
            self.dir.join("vmlinuz")
        }
    }

    /// The base initramfs (uncompressed cpio; per-run archives are appended to it).
    pub fn initrd(&self) -> PathBuf {
        self.dir.join("base.cpio")
    }
}

/// The cache root: `$HA_TOOLKIT_VM_IMAGE_DIR`, else `<cargo target dir>/vm-image`.
pub fn cache_root() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os(IMAGE_DIR_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    Ok(target_dir()?.join("vm-image"))
}

/// The workspace's cargo target directory: `$CARGO_TARGET_DIR`, else the nearest ancestor of
/// the running executable holding cargo's `CACHEDIR.TAG` (test binaries and xtask live in
/// it), else `cargo metadata`.
pub fn target_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.ancestors().find(|a| a.join("CACHEDIR.TAG").is_file())
    {
        return Ok(dir.to_path_buf());
    }
    let out = cmd::run("cargo", &["metadata", "--format-version", "1", "--no-deps"])?;
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::Image(format!("cannot parse `cargo metadata` output: {e}")))?;
    meta.get("target_directory")
        .and_then(|v| v.as_str())
        .map(PathBuf::from)
        .ok_or_else(|| Error::Image("`cargo metadata` has no target_directory".into()))
}

/// The cached image, when it has been built.
pub fn image_available() -> Option<VmImage> {
    let root = cache_root().ok()?;
    VmImage::at(root.join(image_key())).ok()
}

/// Return the cached image, building it first when missing (needs root for `apt-get
/// download` only when the .deb is not cached yet, plus the host packages of
/// `xtask/src/deps.rs`). Safe to call from many processes at once.
pub fn ensure_image() -> Result<VmImage> {
    build_image(false)
}

/// Build the image (again, when `force`), under the cache lock.
pub fn build_image(force: bool) -> Result<VmImage> {
    let root = cache_root()?;
    let final_dir = root.join(image_key());
    if !force && let Ok(img) = VmImage::at(&final_dir) {
        return Ok(img);
    }
    fs::create_dir_all(&root).map_err(|e| Error::io(format!("create {}", root.display()), e))?;
    let lock_path = root.join(".lock");
    let lock_file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io(format!("open {}", lock_path.display()), e))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::io(format!("lock {}", lock_path.display()), e.into()))?;
    // Somebody else may have built it while we waited for the lock.
    if !force && let Ok(img) = VmImage::at(&final_dir) {
        return Ok(img);
    }
    let started = Instant::now();
    let tmp = root.join(format!(".tmp-{}-{}", image_key(), std::process::id()));
    remove_dir_if_exists(&tmp)?;
    let built = build_into(&root, &tmp);
    if let Err(e) = built {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    // Only the finished parts stay; the staging tree and extracted kernel package go.
    let _ = fs::remove_dir_all(tmp.join("stage"));
    let _ = fs::remove_dir_all(tmp.join("kroot"));
    remove_dir_if_exists(&final_dir)?;
    fs::rename(&tmp, &final_dir).map_err(|e| {
        Error::io(
            format!("rename {} to {}", tmp.display(), final_dir.display()),
            e,
        )
    })?;
    tracing::info!(dir = %final_dir.display(), secs = started.elapsed().as_secs_f64(), "VM image built");
    remove_stale_images(&root);
    VmImage::at(&final_dir)
}

/// Drop images of other kernel/recipe versions (called under the lock, after a build).
fn remove_stale_images(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name != image_key() && !name.starts_with('.') && e.path().join("base.cpio").is_file() {
            tracing::info!(dir = %e.path().display(), "removing stale VM image");
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

fn remove_dir_if_exists(d: &Path) -> Result<()> {
    match fs::remove_dir_all(d) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("remove {}", d.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_pins_kernel_and_recipe() {
        assert!(image_key().starts_with(KERNEL_ABI));
        assert!(image_key().ends_with(&format!("-r{RECIPE_VERSION}")));
    }
}
