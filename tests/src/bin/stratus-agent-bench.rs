//! `stratus-agent-bench --endpoint ADDR --token-file FILE --manifest PATH
//! [--instance-type T] [--counts 1,5,max] [--runs N] [--load-clients N]
//! [--load-interval-ms MS] [--agent-pid PID]`
//!
//! The measuring side of `cargo xtask bench agent`, run inside the virtual
//! host against a running `stratus-agent`: see `stratus_tests::agent_bench`.
//! Prints raw lines as it goes and a summary; exits 1 on a failed run,
//! 2 on bad usage.

use std::path::PathBuf;
use std::time::Duration;

use stratus_tests::agent_bench::{self, Count, Settings};

fn main() {
    let settings = match parse(std::env::args().skip(1).collect()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("stratus-agent-bench: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = agent_bench::drive(&settings) {
        eprintln!("stratus-agent-bench: {e}");
        std::process::exit(1);
    }
}

fn parse(args: Vec<String>) -> Result<Settings, String> {
    let mut endpoint = None;
    let mut token_file = None;
    let mut manifest = None;
    let mut instance_type = "t2.nano".to_owned();
    let mut counts = vec![Count::Fixed(1), Count::Fixed(5), Count::Max];
    let mut runs = 1;
    let mut load_clients = 2;
    let mut load_interval = Duration::from_millis(100);
    let mut agent_pid = None;
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--endpoint" => {
                let v = value()?;
                endpoint = Some(v.parse().map_err(|e| format!("--endpoint {v}: {e}"))?);
            }
            "--token-file" => token_file = Some(PathBuf::from(value()?)),
            "--manifest" => manifest = Some(PathBuf::from(value()?)),
            "--instance-type" => instance_type = value()?,
            "--counts" => {
                counts = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
            }
            "--runs" => runs = number(&flag, &value()?)?,
            "--load-clients" => load_clients = number(&flag, &value()?)?,
            "--load-interval-ms" => {
                load_interval = Duration::from_millis(number(&flag, &value()?)?.into());
            }
            "--agent-pid" => {
                let v = value()?;
                agent_pid = Some(v.parse().map_err(|e| format!("--agent-pid {v}: {e}"))?);
            }
            _ => return Err(format!("unknown argument `{flag}`")),
        }
    }
    let token_file = token_file.ok_or("--token-file is required")?;
    let token = std::fs::read_to_string(&token_file)
        .map_err(|e| format!("--token-file {}: {e}", token_file.display()))?;
    Ok(Settings {
        endpoint: endpoint.ok_or("--endpoint is required")?,
        token,
        manifest: manifest.ok_or("--manifest is required")?,
        instance_type,
        counts,
        runs,
        load_clients,
        load_interval,
        agent_pid,
    })
}

/// A whole number from 1.
fn number(flag: &str, text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{flag} {text}: expected a whole number from 1")),
    }
}
