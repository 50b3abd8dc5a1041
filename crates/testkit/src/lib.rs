//! Test rig: network namespaces and a Debian kernel under qemu (dev only).
//!
//! - [`netns`]: named network namespaces with drop guards, a star [`netns::Topology`] of hosts
//!   on a bridge, link up/down, netem delay/loss, and [`netns::Netns::run`] to run a closure
//!   (e.g. a tokio runtime) inside a namespace.
//! - [`vm`]: a cached boot image (Debian cloud kernel + busybox + ipvsadm/nbd-client/drbd-utils)
//!   and a builder that boots it under qemu, runs one command and returns its exit status,
//!   stdout, stderr and files.
//!
//! Tests that need root call [`privileged`] first. It returns `false` (skip) when not root,
//! unless the variable [`REQUIRE_PRIVILEGED_ENV`] is set (CI sets it), in which case it panics so
//! a skipped privileged test can never pass silently.

/// Set by `.ci/run` (through `cargo xtask test`): a privileged test that would skip fails instead.
pub const REQUIRE_PRIVILEGED_ENV: &str = "HA_TOOLKIT_REQUIRE_PRIVILEGED";

/// True when the process runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// True when a privileged test may skip instead of failing.
pub fn skipping_allowed() -> bool {
    std::env::var_os(REQUIRE_PRIVILEGED_ENV).is_none_or(|v| v.is_empty() || v == "0")
}

/// Gate for a test that needs root. Returns `true` when the test should run, `false` when it
/// should return early (skip), and panics when skipping is not allowed.
pub fn privileged(test: &str) -> bool {
    if is_root() {
        return true;
    }
    skip_or_fail(test, "needs root")
}

/// Report a skip for `reason`: prints and returns `false`, or panics when
/// [`REQUIRE_PRIVILEGED_ENV`] is set.
pub fn skip_or_fail(test: &str, reason: &str) -> bool {
    if skipping_allowed() {
        eprintln!(
            "SKIPPED {test}: {reason} (set {REQUIRE_PRIVILEGED_ENV}=1 to make this a failure)"
        );
        false
    } else {
        panic!("{test}: {reason}, and {REQUIRE_PRIVILEGED_ENV} forbids skipping");
    }
}

mod cmd;
mod error;
pub mod netns;
pub mod vm;

pub use error::{Error, Result};
