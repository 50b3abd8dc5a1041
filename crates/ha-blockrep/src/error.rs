//! The crate's single error type.

use std::io;

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in the block replication engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a backing device or socket, with what we were doing.
    #[error("{context}: {source}")]
    Io {
        /// What the engine was doing when the error happened.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A request that falls outside the device or is not aligned as required.
    #[error("request out of range: offset {offset} length {len} on a device of {size} bytes")]
    OutOfRange {
        /// Byte offset of the request.
        offset: u64,
        /// Length in bytes.
        len: u64,
        /// Device size in bytes.
        size: u64,
    },
    /// The in-memory test device lost power (crash test); reload to continue.
    #[error("device lost power (simulated power cut)")]
    PowerCut,
    /// Metadata could not be found or is corrupt.
    #[error("metadata: {0}")]
    Metadata(String),
    /// An operation is not allowed in the current state (e.g. a write on a Secondary).
    #[error("state: {0}")]
    State(String),
    /// The peer violated the replication protocol, or a packet failed to decode.
    #[error("protocol: {0}")]
    Protocol(String),
    /// Peer authentication failed (wrong shared secret).
    #[error("authentication failed: {0}")]
    Auth(String),
    /// A configuration file could not be parsed or is invalid.
    #[error("config {file}:{line}: {msg}")]
    Config {
        /// File name.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// The connection to the peer is gone.
    #[error("peer disconnected: {0}")]
    Disconnected(String),
    /// A timeout elapsed.
    #[error("timeout: {0}")]
    Timeout(String),
}

impl Error {
    /// Wrap an `io::Error` with context.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
