//! The crate's error type.

use std::path::PathBuf;

/// Result alias for `ha-core`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where in a configuration file a problem was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file that was read.
    pub file: PathBuf,
    /// 1-based line number, 0 when unknown.
    pub line: usize,
    /// The field or directive concerned, empty when unknown.
    pub field: String,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)?;
        if !self.field.is_empty() {
            write!(f, ": `{}`", self.field)?;
        }
        Ok(())
    }
}

/// Errors of `ha-core`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration file could not be parsed or failed validation.
    #[error("{location}: {message}")]
    Config {
        /// Where the problem is.
        location: Location,
        /// What is wrong and, where possible, how to fix it.
        message: String,
    },
    /// A configuration or model is inconsistent (not tied to a file position).
    #[error("invalid cluster model: {0}")]
    Invalid(String),
    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A resource agent failed in a way that is not an OCF outcome (spawn failure, bad output).
    #[error("resource agent {agent}: {message}")]
    Agent {
        /// The agent concerned.
        agent: String,
        /// What happened.
        message: String,
    },
}
