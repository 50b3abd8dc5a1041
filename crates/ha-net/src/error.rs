//! The crate's error type.

use std::io;

/// Result alias for `ha-net`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of `ha-net`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The authentication settings are unusable.
    #[error("authentication: {0}")]
    Auth(String),
    /// A configuration value cannot be used by the transport or a resource.
    #[error("configuration: {0}")]
    Config(String),
    /// A socket or device operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done (interface, address, device).
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A netlink request failed.
    #[error("netlink: {context}: {message}")]
    Netlink {
        /// What was being done.
        context: String,
        /// The kernel's or the library's answer.
        message: String,
    },
    /// A frame could not be built (message too large for one datagram).
    #[error("cannot encode frame: {0}")]
    Encode(String),
    /// A control-socket command was refused (by the node, or the node's answer to a client).
    #[error("control: {0}")]
    Control(String),
    /// An error from ha-core.
    #[error(transparent)]
    Core(#[from] ha_core::Error),
}

impl Error {
    /// An [`Error::Io`] with context.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
