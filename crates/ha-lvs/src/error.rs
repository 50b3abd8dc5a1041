//! The crate's error type.

use std::fmt;

/// What the kernel said no to, classified the way ipvsadm explains it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelErrorKind {
    /// EEXIST: the service or destination is already there.
    AlreadyExists,
    /// ESRCH on a service operation: no such service.
    NoSuchService,
    /// ESRCH on a destination operation: the service of the destination is not defined.
    ServiceNotDefined,
    /// ENOENT on a destination operation: no such destination.
    NoSuchDestination,
    /// ENOENT on a service add/edit: unknown scheduler or persistence engine module.
    SchedulerOrPeNotFound,
    /// EINVAL: invalid request (bad address, missing attribute, bad netmask...).
    Invalid,
    /// EPERM: not root / no CAP_NET_ADMIN.
    PermissionDenied,
    /// ESRCH on a daemon stop: no daemon of that kind runs.
    NoDaemon,
    /// Any other errno.
    Other,
}

/// A negative acknowledgement from the kernel for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError {
    /// The operation, e.g. "add destination".
    pub op: &'static str,
    /// The object it concerned, e.g. "10.0.0.2:80 of TCP 10.0.0.1:80".
    pub object: String,
    /// Positive errno.
    pub errno: i32,
    /// Classification.
    pub kind: KernelErrorKind,
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            KernelErrorKind::AlreadyExists => "already exists".to_string(),
            KernelErrorKind::NoSuchService => "no such service".to_string(),
            KernelErrorKind::ServiceNotDefined => "service not defined".to_string(),
            KernelErrorKind::NoSuchDestination => "no such destination".to_string(),
            KernelErrorKind::SchedulerOrPeNotFound => {
                "scheduler or persistence engine not found (is its ip_vs_* module available?)"
                    .to_string()
            }
            KernelErrorKind::Invalid => {
                "invalid request (address, netmask or parameter rejected)".to_string()
            }
            KernelErrorKind::PermissionDenied => {
                "permission denied (needs CAP_NET_ADMIN)".to_string()
            }
            KernelErrorKind::NoDaemon => "no such sync daemon is running".to_string(),
            KernelErrorKind::Other => std::io::Error::from_raw_os_error(self.errno).to_string(),
        };
        write!(
            f,
            "{} {}: {} (errno {})",
            self.op, self.object, what, self.errno
        )
    }
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value is not acceptable (bad scheduler name, bad address...).
    #[error("{0}")]
    Invalid(String),
    /// A text input (ipvsadm rules, ldirectord.cf) could not be parsed.
    #[error("{source_name}:{line}: {message}")]
    Parse {
        /// File name or other label of the input.
        source_name: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An I/O call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel rejected a request.
    #[error("{0}")]
    Kernel(KernelError),
    /// The generic netlink family "IPVS" is not registered (ip_vs module not loaded).
    #[error("generic netlink family IPVS not found: load the ip_vs kernel module (modprobe ip_vs)")]
    FamilyNotFound,
    /// A netlink message could not be decoded or was unexpected.
    #[error("netlink protocol error: {0}")]
    Protocol(String),
    /// A health-check or agent operation failed.
    #[error("{0}")]
    Check(String),
}

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The kernel error, if this is one.
    pub fn kernel(&self) -> Option<&KernelError> {
        match self {
            Error::Kernel(k) => Some(k),
            _ => None,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
