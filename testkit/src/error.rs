//! The one error type of every harness: what was being set up, and why it failed.

use std::time::Duration;

/// Why a test fixture could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: cannot run {program}: {reason}")]
    Spawn {
        what: String,
        program: String,
        reason: String,
    },
    #[error("{what}: `{command}` failed ({status}): {stderr}")]
    Command {
        what: String,
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{what}: not ready after {waited:?}{detail}")]
    Timeout {
        what: String,
        waited: Duration,
        detail: String,
    },
    #[error("{0}")]
    Setup(String),
    #[error("building {0}")]
    Build(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("schema {path}: {reason}")]
    Schema { path: String, reason: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A spawn failure; a program that is not installed gets the make target that installs it.
    pub fn spawn(what: &str, program: &str, e: &std::io::Error) -> Error {
        let reason = if e.kind() == std::io::ErrorKind::NotFound {
            format!("{e} (not installed? `make deps` installs the tools the tests run)")
        } else {
            e.to_string()
        };
        Error::Spawn {
            what: what.to_string(),
            program: program.to_string(),
            reason,
        }
    }

    /// An I/O failure while doing `what`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}
