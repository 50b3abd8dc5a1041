//! The one error type of the test rig.

use std::time::Duration;

/// Result alias for the test rig.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while building a topology, an image or running a VM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path involved.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An external command (ip, tc, apt-get, qemu ...) exited with a failure.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line, for copy-paste.
        command: String,
        /// Exit status as text.
        status: String,
        /// Its standard error (trimmed).
        stderr: String,
    },
    /// `tc qdisc ... netem` is not available (the kernel lacks sch_netem). Tests that need
    /// delay/loss should skip on this error.
    #[error("netem is unavailable on this kernel (sch_netem missing): {detail}")]
    NetemUnavailable {
        /// What `tc` said.
        detail: String,
    },
    /// The VM boot image is missing or could not be built.
    #[error("VM image: {0}")]
    Image(String),
    /// The guest's setup (module loading, network configuration) failed before the command ran.
    #[error("guest setup failed (see its stderr):\n{stderr}")]
    GuestSetup {
        /// What the setup script printed.
        stderr: String,
    },
    /// The VM did not finish within its timeout and was killed.
    #[error(
        "VM timed out after {after:?}; last console lines:\n{console_tail}\nlast stdout lines:\n{stdout_tail}"
    )]
    VmTimeout {
        /// The timeout that expired.
        after: Duration,
        /// End of the kernel console, for diagnosis.
        console_tail: String,
        /// End of the command's stdout so far.
        stdout_tail: String,
    },
    /// The guest command exited non-zero (from [`crate::vm::VmOutput::check`]).
    #[error("guest command exited with {exit_code}\nstdout:\n{stdout}\nstderr:\n{stderr}")]
    GuestCommand {
        /// Its exit status.
        exit_code: i32,
        /// Its stdout.
        stdout: String,
        /// Its stderr.
        stderr: String,
    },
    /// The VM stopped without reporting an exit status (kernel panic, qemu crash).
    #[error(
        "VM ended without an exit marker (qemu {qemu_status}); last console lines:\n{console_tail}"
    )]
    VmNoExit {
        /// qemu's own exit status.
        qemu_status: String,
        /// End of the kernel console, for diagnosis.
        console_tail: String,
    },
    /// A caller passed something the rig cannot use.
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl Error {
    /// Wrap an I/O error with what was being done.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
