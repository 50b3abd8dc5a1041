//! A real Debian kernel under qemu (TCG), for tests that need kernel features the host lacks
//! (IPVS, NBD, DRBD, netem ...).
//!
//! ```no_run
//! use std::time::Duration;
//! let Some(image) = testkit::vm::image_or_skip("my_test") else { return };
//! let out = testkit::vm::Vm::builder()
//!     .image(image)
//!     .modules(["ip_vs"])
//!     .command("ipvsadm -A -t 10.0.0.1:80 -s rr && ipvsadm -Ln")
//!     .timeout(Duration::from_secs(30))
//!     .run()
//!     .unwrap();
//! assert_eq!(out.exit_code, 0, "{}", out.stderr);
//! ```
//!
//! The command runs under bash as root in an initramfs (merged /usr, busybox for everything
//! the image has no real tool for). Files the command writes under `/out` come back in
//! [`VmOutput::files`]. Guest time is ~5-12x slower than the host (no KVM): compare timings
//! only between runs in the same kind of VM.
//!
//! Notes for test authors:
//! - NICs become `eth0`, `eth1`, ... in the order they are added; disks `/dev/vda`, ...
//! - Two VMs on a [`UdpLink`] boot at slightly different times: retry the first ping/connect.
//! - stdout, stderr and `/out` files travel over emulated UARTs (~0.5 MB/s): fine for results
//!   and logs; pass bulk data through a [`VmBuilder::disk`] instead.
//! - `run` returns `Ok` for any exit status (check [`VmOutput::exit_code`]), and distinct
//!   errors for a timeout ([`Error::VmTimeout`]), a failed setup ([`Error::GuestSetup`]) or a
//!   guest that died without reporting ([`Error::VmNoExit`]).

mod base64;
mod builder;
mod cpio;
pub mod image;
mod init;
mod net;
mod output;
mod recipe;

use std::time::Duration;

pub use builder::{Vm, VmBuilder};
pub use image::{VmImage, build_image, cache_root, ensure_image, image_available};
pub use net::{LinkEnd, UdpLink};
pub use output::{RunningVm, VmOutput};

use crate::{Error, Result};

/// Address the guest uses for the host's 127.0.0.1 with [`VmBuilder::user_net`].
pub const HOST_FROM_GUEST: &str = "10.0.2.2";
/// The guest's own address with [`VmBuilder::user_net`].
pub const GUEST_USER_NET_ADDR: &str = "10.0.2.15";

/// For tests: the cached image, built on first use when possible (root and the host packages
/// present); otherwise [`crate::skip_or_fail`] is called with the reason and `None` returned.
pub fn image_or_skip(test: &str) -> Option<VmImage> {
    if let Some(img) = image_available() {
        return Some(img);
    }
    match ensure_image() {
        Ok(img) => Some(img),
        Err(e) => {
            crate::skip_or_fail(
                test,
                &format!("no VM image ({e}); build it with `cargo xtask vm-image`"),
            );
            None
        }
    }
}

/// Start several VMs at once and wait for all (results in the same order).
pub fn run_all(vms: Vec<VmBuilder>) -> Vec<Result<VmOutput>> {
    let running: Vec<Result<RunningVm>> = vms.into_iter().map(VmBuilder::spawn).collect();
    running
        .into_iter()
        .map(|r| r.and_then(RunningVm::wait))
        .collect()
}

/// Run two named VMs at once (e.g. both sides of a failover) and return both outputs. Each
/// VM's elapsed time, stdout and stderr go to stderr first, and a failed VM is named, so a
/// failing test shows both sides. The first failure is returned.
pub fn run_pair(a: (&str, VmBuilder), b: (&str, VmBuilder)) -> Result<(VmOutput, VmOutput)> {
    let names = [a.0, b.0];
    let [oa, ob]: [Result<VmOutput>; 2] = run_all(vec![a.1, b.1])
        .try_into()
        .map_err(|_| Error::Invalid("run_all lost a VM's result".into()))?;
    for (name, o) in names.iter().zip([&oa, &ob]) {
        match o {
            Ok(o) => eprintln!(
                "VM {name} ({:.1} s):\n{}\n{}",
                o.elapsed.as_secs_f64(),
                o.stdout,
                o.stderr
            ),
            Err(e) => eprintln!("VM {name} failed: {e:?}"),
        }
    }
    Ok((oa?, ob?))
}

/// Wall and CPU time of one VM run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootTime {
    /// From starting qemu to its exit.
    pub wall: Duration,
    /// qemu's user + system CPU time.
    pub cpu: Duration,
}

/// Boot-to-exit times of `runs` sequential VMs running `true` (no devices): the rig's fixed
/// cost per VM, for benchmarks and reports. Sorted by wall time.
pub fn boot_times(image: &VmImage, runs: usize) -> Result<Vec<BootTime>> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let out = Vm::builder()
            .image(image.clone())
            .command("true")
            .timeout(Duration::from_secs(60))
            .run()?;
        if !out.success() {
            return Err(Error::GuestCommand {
                exit_code: out.exit_code,
                stdout: out.stdout,
                stderr: out.stderr,
            });
        }
        times.push(BootTime {
            wall: out.elapsed,
            cpu: out.cpu_time,
        });
    }
    times.sort_by_key(|t| t.wall);
    Ok(times)
}
