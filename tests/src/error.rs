//! The one error type of the harness.
//!
//! Every variant carries enough context to act on it without reading the
//! harness source: which command, which file, what the serial log said.

use std::path::PathBuf;

/// An error from building images or running a virtual host.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation on `path` failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What the harness was doing ("read", "create", ...).
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A helper program could not be started at all (usually: not installed).
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        /// The program name.
        program: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A helper program ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        /// The command line, for copy-pasting.
        command: String,
        /// How it ended.
        status: String,
        /// The tail of its standard error.
        stderr: String,
    },
    /// Required apt packages are missing and could not be installed.
    #[error("missing packages {packages:?}: {reason}")]
    MissingPackages {
        /// Package names, as given to `apt-get install`.
        packages: Vec<String>,
        /// Why they could not be installed.
        reason: String,
    },
    /// apt knows no package matching what the harness needs.
    #[error("no apt package found for {0}; run `apt-get update`")]
    PackageNotFound(String),
    /// An input file does not have the expected layout.
    #[error("{path}: {problem}")]
    BadInput {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The virtual host did not finish its scenario within the time limit.
    #[error("virtual host timed out after {seconds} s (log: {log})")]
    Timeout {
        /// The limit that was exceeded.
        seconds: u64,
        /// Where the serial log was written.
        log: PathBuf,
    },
    /// The virtual host did not come up (print its ready line) in time.
    #[error("virtual host not ready after {seconds} s (log: {log})")]
    NotReady {
        /// The limit that was exceeded.
        seconds: u64,
        /// Where the serial log was written.
        log: PathBuf,
    },
    /// QEMU exited without the scenario reporting its exit status.
    #[error("virtual host ended without a scenario result ({status}); log: {log}")]
    NoScenarioResult {
        /// How QEMU ended.
        status: String,
        /// Where the serial log was written.
        log: PathBuf,
    },
    /// A program inside the virtual host (the agent benchmark) met
    /// something it cannot go on from; the text says what.
    #[error("{0}")]
    Message(String),
}

impl Error {
    /// An error that is only its text.
    pub fn msg(text: impl Into<String>) -> Error {
        Error::Message(text.into())
    }

    /// Wraps an I/O error with what was being done to which path.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}

/// The harness's result type.
pub type Result<T> = std::result::Result<T, Error>;
