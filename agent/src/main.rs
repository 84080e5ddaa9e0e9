//! `stratus-agent`: the per-host agent.
//!
//! Only `--version` works today. Every other invocation says plainly that the
//! agent is not available yet and exits non-zero, so nothing can mistake this
//! skeleton for a working agent.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version") | Some("-V") => {
            println!("stratus-agent {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("stratus-agent: not yet available (only --version is implemented)");
            ExitCode::from(2)
        }
    }
}
