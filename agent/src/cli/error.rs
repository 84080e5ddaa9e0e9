//! Why a `stratus` command failed, and the exit status each failure gets:
//! 2 for a command line that cannot be acted on (as clap's own usage
//! errors), 1 for everything found out while acting on it.

use std::path::PathBuf;

use super::endpoint::EndpointError;

/// A failed command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Flags that parse but do not make a request (clap cannot see these:
    /// `--port` with `--protocol icmp`, a JSON flag that is not JSON, …).
    #[error("{0}")]
    Usage(String),
    /// `--endpoint` or `STRATUS_ENDPOINT` is not a URL the client can use.
    #[error("{origin}: {error}")]
    Endpoint {
        origin: &'static str,
        error: EndpointError,
    },
    /// The agent is not there (down, wrong port, firewalled).
    #[error("cannot connect to the agent at {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("the agent at {endpoint} did not answer within {secs} s")]
    Timeout { endpoint: String, secs: u64 },
    /// Something at the endpoint that does not speak HTTP/1.1 properly.
    #[error("talking to the agent at {endpoint}: {message}")]
    Http { endpoint: String, message: String },
    /// The API's own refusal (4xx/5xx), with its message.
    #[error("{message} (HTTP {status})")]
    Api { status: u16, message: String },
    /// A 401 with a token: says where the token came from (never what it is).
    #[error("{message} (HTTP 401); the token was read from {origin}")]
    Unauthorized { message: String, origin: String },
    /// A 401 and no token anywhere the client looks.
    #[error(
        "no API token: pass --token-file PATH or set STRATUS_TOKEN \
         (the agent writes its token to {default}, which is not readable here)"
    )]
    NoToken { default: String },
    #[error("token file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("token from {0} is empty")]
    EmptyToken(String),
    /// A token an HTTP header cannot carry; its text is not repeated.
    #[error("token from {0} holds characters other than printable ASCII")]
    BadToken(String),
    /// A file a flag names (`--public-key-file`, `--user-data-file`).
    #[error("{path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A 2xx whose body is not the JSON the API documents.
    #[error("the agent answered HTTP {status} with a body that is not JSON: {error}")]
    NotJson {
        status: u16,
        error: serde_json::Error,
    },
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(std::io::Error),
    #[error("writing the output: {0}")]
    Stdout(std::io::Error),
}

impl CliError {
    /// The process's exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Endpoint { .. } => 2,
            _ => 1,
        }
    }
}
