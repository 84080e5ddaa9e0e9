//! `stratus`: the command-line client of the agent's HTTP/JSON API.
//!
//! Its code lives in `src/cli/` rather than in the library: the agent has
//! no use for it, and the library's public surface stays the agent's.

#[path = "../cli/mod.rs"]
mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
