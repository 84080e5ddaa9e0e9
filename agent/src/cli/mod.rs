//! `stratus [--endpoint URL] [--token-file PATH] [--output table|json]
//! <group> <command> [args]`: every route of the agent's API as a
//! command. Answers are aligned tables for people, or with `--output json`
//! the API's own JSON, indented. Failures are one line on stderr,
//! `stratus: …`, with exit status 1 (2 for a command line that cannot be
//! acted on); the API's refusals keep its message and HTTP status.

mod args;
mod commands;
mod endpoint;
mod error;
mod http;
mod json;
mod rules;
mod table;
mod token;
mod views;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser as _;
use serde_json::Value;

use args::{Args, Output};
use commands::Outcome;
use endpoint::Endpoint;
use error::CliError;
use http::Client;

pub fn main() -> ExitCode {
    // Usage errors: clap prints them and exits 2 (0 for --help).
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stratus: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(args: Args) -> Result<(), CliError> {
    let endpoint = resolve_endpoint(args.endpoint.as_deref())?;
    let env_token = match std::env::var("STRATUS_TOKEN") {
        Ok(t) => Some(t),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(CliError::BadToken("STRATUS_TOKEN".into()))
        }
    };
    let token = token::resolve(
        args.token_file.as_deref(),
        env_token,
        &token::default_file(),
    )?;
    let client = Client::new(endpoint, token, Duration::from_secs(args.timeout));
    // One call at a time: a single-threaded runtime is all it takes.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    let outcome = runtime.block_on(commands::execute(&client, args.command))?;
    write_stdout(&render(outcome, args.output)?)
}

/// `--endpoint`, else `STRATUS_ENDPOINT`, else the agent's default address.
fn resolve_endpoint(flag: Option<&str>) -> Result<Endpoint, CliError> {
    let env = std::env::var("STRATUS_ENDPOINT")
        .ok()
        .filter(|e| !e.trim().is_empty());
    let (origin, text) = match (flag, &env) {
        (Some(f), _) => ("--endpoint", f),
        (None, Some(e)) => ("STRATUS_ENDPOINT", e.as_str()),
        (None, None) => ("the default endpoint", endpoint::DEFAULT),
    };
    Endpoint::parse(text).map_err(|error| CliError::Endpoint { origin, error })
}

/// What is printed for `outcome`.
fn render(outcome: Outcome, output: Output) -> Result<String, CliError> {
    match (outcome, output) {
        (Outcome::Raw(text), _) => Ok(text),
        (Outcome::Done(message), Output::Table) => Ok(format!("{message}\n")),
        (Outcome::Done(_), Output::Json) => Ok(String::new()),
        (Outcome::Document { reply, .. }, Output::Json) => json::pretty(&reply.body)
            .map(|text| text + "\n")
            .map_err(|error| CliError::NotJson {
                status: reply.status,
                error,
            }),
        (Outcome::Document { reply, view }, Output::Table) => {
            serde_json::from_str::<Value>(&reply.body)
                .map(|doc| view(&doc))
                .map_err(|error| CliError::NotJson {
                    status: reply.status,
                    error,
                })
        }
    }
}

/// Writes `text`; a reader that went away (`stratus … | head`) is not a
/// failure of the command.
fn write_stdout(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::Stdout(e)),
        _ => Ok(()),
    }
}
