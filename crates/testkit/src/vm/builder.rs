//! [`Vm`] and [`VmBuilder`]: what to boot, and starting qemu.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::cpio::CpioWriter;
use super::image::{VmImage, image_available};
use super::net::{LinkEnd, Nic, NicKind, unique_mac};
use super::output::RunningVm;
use super::recipe;
use super::{GUEST_USER_NET_ADDR, HOST_FROM_GUEST, VmOutput};
use crate::{Error, Result};

#[derive(Debug, Clone)]
enum Source {
    Host(PathBuf),
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone)]
struct GuestFile {
    source: Source,
    guest_path: String,
    mode: u32,
    with_libs: bool,
}

/// Entry point: `Vm::builder()`.
#[derive(Debug)]
pub struct Vm;

impl Vm {
    /// A builder with defaults: 512 MiB, 1 CPU, 60 s timeout, no devices.
    pub fn builder() -> VmBuilder {
        VmBuilder {
            image: None,
            command: None,
            files: Vec::new(),
            disks: Vec::new(),
            nics: Vec::new(),
            modules: Vec::new(),
            memory_mb: 512,
            cpus: 1,
            timeout: Duration::from_secs(60),
            hostname: None,
            append: Vec::new(),
        }
    }
}

/// Describes one VM run.
#[derive(Debug, Clone)]
pub struct VmBuilder {
    image: Option<VmImage>,
    command: Option<String>,
    files: Vec<GuestFile>,
    disks: Vec<(PathBuf, String)>,
    nics: Vec<Nic>,
    modules: Vec<String>,
    memory_mb: u32,
    cpus: u32,
    timeout: Duration,
    hostname: Option<String>,
    append: Vec<String>,
}

impl VmBuilder {
    /// Use this image (default: the cached one, see [`image_available`]).
    pub fn image(mut self, image: VmImage) -> Self {
        self.image = Some(image);
        self
    }

    /// The bash script to run in the guest (required). Its exit status becomes
    /// [`VmOutput::exit_code`].
    pub fn command(mut self, script: impl Into<String>) -> Self {
        self.command = Some(script.into());
        self
    }

    /// Copy a host executable into the guest at `guest_path`, with the shared libraries it
    /// needs that the image lacks (so Rust test binaries run as they are).
    pub fn binary(mut self, host_path: impl Into<PathBuf>, guest_path: impl Into<String>) -> Self {
        self.files.push(GuestFile {
            source: Source::Host(host_path.into()),
            guest_path: guest_path.into(),
            mode: 0o755,
            with_libs: true,
        });
        self
    }

    /// Copy a host file into the guest (mode 0644).
    pub fn file(mut self, host_path: impl Into<PathBuf>, guest_path: impl Into<String>) -> Self {
        self.files.push(GuestFile {
            source: Source::Host(host_path.into()),
            guest_path: guest_path.into(),
            mode: 0o644,
            with_libs: false,
        });
        self
    }

    /// Put `contents` into the guest at `guest_path` with permission bits `mode`.
    pub fn file_bytes(
        mut self,
        guest_path: impl Into<String>,
        contents: impl Into<Vec<u8>>,
        mode: u32,
    ) -> Self {
        self.files.push(GuestFile {
            source: Source::Bytes(contents.into()),
            guest_path: guest_path.into(),
            mode,
            with_libs: false,
        });
        self
    }

    /// Attach a raw disk image as the next virtio-blk device (`/dev/vda`, `/dev/vdb`, ...),
    /// with qemu's default cache mode (writeback).
    pub fn disk(self, raw_file: impl Into<PathBuf>) -> Self {
        self.disk_with_options(raw_file, "")
    }

    /// Like [`VmBuilder::disk`] with extra qemu `-drive` options, e.g. `"cache=none"` for
    /// latency measurements or `"cache=unsafe"` for speed, `"readonly=on"`.
    pub fn disk_with_options(mut self, raw_file: impl Into<PathBuf>, options: &str) -> Self {
        self.disks.push((raw_file.into(), options.to_string()));
        self
    }

    /// Load these modules (with dependencies) before the command runs; a failure to load
    /// one is reported as [`Error::GuestSetup`].
    pub fn modules<I, S>(mut self, modules: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.modules.extend(modules.into_iter().map(Into::into));
        self
    }

    /// Guest memory in MiB (default 512).
    pub fn memory_mb(mut self, mb: u32) -> Self {
        self.memory_mb = mb;
        self
    }

    /// Number of virtual CPUs (default 1; TCG runs them on one host thread each).
    pub fn cpus(mut self, n: u32) -> Self {
        self.cpus = n.max(1);
        self
    }

    /// Hard timeout for the whole run, boot included (default 60 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Guest hostname (default `vm`).
    pub fn hostname(mut self, name: impl Into<String>) -> Self {
        self.hostname = Some(name.into());
        self
    }

    /// Add a NIC on qemu's user network as the next `ethN`, configured as 10.0.2.15/24 with
    /// a default route; the host's 127.0.0.1 is reachable as [`HOST_FROM_GUEST`].
    pub fn user_net(mut self) -> Self {
        self.nics.push(Nic {
            kind: NicKind::User,
            addr: Some(format!("{GUEST_USER_NET_ADDR}/24")),
            mac: unique_mac(),
        });
        self
    }

    /// Add a NIC on a VM-to-VM link as the next `ethN`, configured with `cidr` (e.g.
    /// `"192.168.50.1/24"`) when given.
    pub fn link(mut self, end: LinkEnd, cidr: Option<&str>) -> Self {
        self.nics.push(Nic {
            kind: NicKind::Udp(end),
            addr: cidr.map(str::to_string),
            mac: unique_mac(),
        });
        self
    }

    /// Extra kernel command-line parameter.
    pub fn append(mut self, param: impl Into<String>) -> Self {
        self.append.push(param.into());
        self
    }

    /// Boot, run the command, and wait for it.
    pub fn run(self) -> Result<VmOutput> {
        self.spawn()?.wait()
    }

    /// Boot in the background; [`RunningVm::wait`] collects the result. Start two VMs this
    /// way to run them concurrently.
    pub fn spawn(self) -> Result<RunningVm> {
        let image = match self.image.clone() {
            Some(i) => i,
            None => image_available().ok_or_else(|| {
                Error::Image("not built; run `cargo xtask vm-image` (or call ensure_image)".into())
            })?,
        };
        let command = self
            .command
            .clone()
            .ok_or_else(|| Error::Invalid("VmBuilder needs a command".into()))?;
        let dir = tempfile::Builder::new()
            .prefix("htk-vm-")
            .tempdir()
            .map_err(|e| Error::io("create a temporary directory for the VM run", e))?;
        let initrd = dir.path().join("initrd.cpio");
        self.write_initrd(&image, &command, &initrd)?;

        let mut args: Vec<String> = vec![
            "-accel".into(),
            "tcg".into(),
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-display".into(),
            "none".into(),
            "-no-reboot".into(),
            "-m".into(),
            self.memory_mb.to_string(),
            "-smp".into(),
            self.cpus.to_string(),
            "-kernel".into(),
            image.kernel().to_string_lossy().into_owned(),
            "-initrd".into(),
            initrd.to_string_lossy().into_owned(),
            "-append".into(),
            self.cmdline(),
        ];
        for port in PORTS {
            args.push("-serial".into());
            args.push(format!("file:{}", dir.path().join(port).display()));
        }
        for (d, options) in &self.disks {
            if !d.is_file() {
                return Err(Error::Invalid(format!(
                    "disk image {} does not exist",
                    d.display()
                )));
            }
            let escaped = d.to_string_lossy().replace(',', ",,");
            args.push("-drive".into());
            let mut drive = format!("file={escaped},format=raw,if=virtio");
            if !options.is_empty() {
                drive.push(',');
                drive.push_str(options);
            }
            args.push(drive);
        }
        for (i, nic) in self.nics.iter().enumerate() {
            let netdev = match nic.kind {
                NicKind::User => format!("user,id=n{i}"),
                NicKind::Udp(end) => format!(
                    "socket,id=n{i},udp=127.0.0.1:{},localaddr=127.0.0.1:{}",
                    end.remote_port, end.local_port
                ),
            };
            args.push("-netdev".into());
            args.push(netdev);
            args.push("-device".into());
            args.push(format!("virtio-net-pci,netdev=n{i},mac={}", nic.mac));
        }
        tracing::debug!(?args, "starting qemu");
        let child = Command::new(QEMU)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::io(
                    format!("cannot start {QEMU} (Debian package qemu-system-x86)"),
                    e,
                )
            })?;
        Ok(RunningVm::new(child, dir, self.timeout))
    }

    fn cmdline(&self) -> String {
        let mut s = String::from(BASE_CMDLINE);
        for a in &self.append {
            s.push(' ');
            s.push_str(a);
        }
        s
    }

    /// The setup script run by /init before the command (busybox sh, `set -e`).
    fn setup_script(&self) -> String {
        let mut s = String::new();
        if let Some(h) = &self.hostname {
            s.push_str(&format!("hostname {}\n", shell_quote(h)));
        }
        if !self.nics.is_empty() || !self.disks.is_empty() {
            s.push_str("modprobe virtio_pci\n");
        }
        if !self.disks.is_empty() {
            s.push_str("modprobe virtio_blk\n");
        }
        if !self.nics.is_empty() {
            s.push_str("modprobe virtio_net\n");
        }
        for m in &self.modules {
            s.push_str(&format!("modprobe {}\n", shell_quote(m)));
        }
        for (i, nic) in self.nics.iter().enumerate() {
            if let Some(addr) = &nic.addr {
                s.push_str(&format!(
                    "/usr/sbin/ip addr add {} dev eth{i}\n",
                    shell_quote(addr)
                ));
            }
            s.push_str(&format!("/usr/sbin/ip link set eth{i} up\n"));
            if matches!(nic.kind, NicKind::User) {
                s.push_str(&format!(
                    "/usr/sbin/ip route add default via {HOST_FROM_GUEST} dev eth{i}\n"
                ));
            }
        }
        s
    }

    /// Base image + an appended archive with /ha/cmd, /ha/setup and the caller's files.
    fn write_initrd(&self, image: &VmImage, command: &str, dst: &Path) -> Result<()> {
        fs::copy(image.initrd(), dst)
            .map_err(|e| Error::io(format!("copy {}", image.initrd().display()), e))?;
        let base_libs: Vec<String> = fs::read_to_string(image.dir().join("libs.txt"))
            .map(|t| t.lines().map(str::to_string).collect())
            .unwrap_or_default();
        let file = fs::OpenOptions::new()
            .append(true)
            .open(dst)
            .map_err(|e| Error::io(format!("open {}", dst.display()), e))?;
        let mut w = CpioWriter::new(std::io::BufWriter::new(file));
        let ctx = |e| Error::io(format!("write {}", dst.display()), e);
        w.dir("ha", 0o755).map_err(ctx)?;
        w.file("ha/cmd", 0o755, command.as_bytes()).map_err(ctx)?;
        w.file("ha/setup", 0o755, self.setup_script().as_bytes())
            .map_err(ctx)?;
        let mut made_dirs = std::collections::BTreeSet::new();
        let mut libs = std::collections::BTreeSet::new();
        for f in &self.files {
            let rel = recipe::guest_rel(&f.guest_path);
            if rel.is_empty() || rel.split('/').any(|c| c == "..") {
                return Err(Error::Invalid(format!("bad guest path {:?}", f.guest_path)));
            }
            add_parent_dirs(&mut w, &rel, &mut made_dirs).map_err(ctx)?;
            match &f.source {
                Source::Bytes(b) => w.file(&rel, f.mode, b).map_err(ctx)?,
                Source::Host(p) => {
                    w.file_from(&rel, f.mode, p)
                        .map_err(|e| Error::io(format!("add {} to the guest", p.display()), e))?;
                    if f.with_libs {
                        libs.extend(recipe::shared_libs(p)?);
                    }
                }
            }
        }
        for lib in libs {
            let rel = recipe::guest_rel(&lib.to_string_lossy());
            if base_libs.contains(&rel) {
                continue;
            }
            add_parent_dirs(&mut w, &rel, &mut made_dirs).map_err(ctx)?;
            w.file_from(&rel, 0o755, &lib)
                .map_err(|e| Error::io(format!("add {} to the guest", lib.display()), e))?;
        }
        w.finish().map_err(ctx)?;
        Ok(())
    }
}

fn add_parent_dirs<W: std::io::Write>(
    w: &mut CpioWriter<W>,
    rel: &str,
    made: &mut std::collections::BTreeSet<String>,
) -> std::io::Result<()> {
    let comps: Vec<&str> = rel.split('/').collect();
    for i in 1..comps.len() {
        let d = comps[..i].join("/");
        if made.insert(d.clone()) {
            w.dir(&d, 0o755)?;
        }
    }
    Ok(())
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

const QEMU: &str = "qemu-system-x86_64";
/// `quiet` keeps the console short; `panic=-1` + `-no-reboot` turns a guest panic into a
/// qemu exit instead of a hang. `mitigations=off tsc=reliable no_timer_check` save ~7% of the
/// boot's CPU time under TCG and keep a loaded host from making the guest drop its TSC clock.
const BASE_CMDLINE: &str =
    "console=ttyS0 quiet panic=-1 oops=panic mitigations=off tsc=reliable no_timer_check";
/// Serial port files, in ttyS order.
pub(super) const PORTS: [&str; 4] = ["console.log", "stdout.log", "stderr.log", "control.log"];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::UdpLink;
    #[test]
    fn setup_script_configures_nics_in_order() {
        let (a, _b) = UdpLink::pair().unwrap();
        let s = Vm::builder()
            .user_net()
            .link(a, Some("192.168.50.1/24"))
            .modules(["ip_vs"])
            .setup_script();
        assert!(s.contains("modprobe virtio_net"));
        assert!(s.contains("modprobe 'ip_vs'"));
        assert!(s.contains("addr add '10.0.2.15/24' dev eth0"));
        assert!(s.contains("addr add '192.168.50.1/24' dev eth1"));
        assert!(!s.contains("virtio_blk"));
    }
}
