//! The agent's settings: flags, or a JSON file with the same names.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::AgentError;

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(
    name = "stratus-agent",
    version,
    about = "Stratus host agent: images, subnets, key pairs and security groups over an HTTP/JSON API"
)]
pub struct Flags {
    /// Where the state database lives.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Address of the API (loopback unless you mean otherwise).
    #[arg(long)]
    pub listen: Option<String>,
    /// File holding the API's bearer token; made (mode 0600, random) if
    /// missing. Default: `api-token` in the state directory.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The `stratus-vmm` binary instances run (default: the one beside
    /// this binary, else `stratus-vmm` on PATH).
    #[arg(long)]
    pub vmm: Option<PathBuf>,
    /// Where to POST the health document (plain `http://` only): every
    /// `--report-interval-secs` and soon after any instance changes state.
    /// Without it nothing is pushed.
    #[arg(long, value_name = "URL")]
    pub report_url: Option<String>,
    /// Seconds between periodic reports (default 30; 1-86400).
    #[arg(long, value_name = "N")]
    pub report_interval_secs: Option<u64>,
    /// Most guests booting at once; more launches wait `pending` in
    /// order (default: the CPUs the agent may run on).
    #[arg(long, value_name = "N")]
    pub max_booting: Option<usize>,
    /// A JSON file with any of `state_dir`, `listen`, `token_file`,
    /// `vmm`, `report_url`, `report_interval_secs`, `max_booting`; flags
    /// win over it.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// The same settings from a file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    state_dir: Option<PathBuf>,
    listen: Option<String>,
    token_file: Option<PathBuf>,
    vmm: Option<PathBuf>,
    report_url: Option<String>,
    report_interval_secs: Option<u64>,
    max_booting: Option<usize>,
}

/// The effective settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub state_dir: PathBuf,
    pub listen: String,
    pub token_file: PathBuf,
    pub vmm: PathBuf,
    /// Reporting upward, if a report URL is set.
    pub report: Option<crate::report::Settings>,
    /// Most guests booting at once (see [`crate::launcher`]).
    pub max_booting: usize,
}

/// Longest interval between periodic reports: a day (a longer one is
/// more likely a unit mistake than a wish).
pub const MAX_REPORT_INTERVAL_SECS: u64 = 86_400;

/// Default API address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8470";
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/stratus";

impl Config {
    /// Flags over the config file over defaults.
    pub fn resolve(flags: Flags) -> Result<Self, String> {
        let file = match &flags.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("config file {}: {e}", path.display()))?;
                serde_json::from_str::<FileConfig>(&text)
                    .map_err(|e| format!("config file {}: {e}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let state_dir = flags
            .state_dir
            .or(file.state_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let token_file = flags
            .token_file
            .or(file.token_file)
            .unwrap_or_else(|| state_dir.join("api-token"));
        let listen = flags
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.into());
        let vmm = flags.vmm.or(file.vmm).unwrap_or_else(default_vmm);
        let interval = flags.report_interval_secs.or(file.report_interval_secs);
        if let Some(secs) = interval {
            if !(1..=MAX_REPORT_INTERVAL_SECS).contains(&secs) {
                return Err(format!(
                    "--report-interval-secs {secs}: give 1-{MAX_REPORT_INTERVAL_SECS}"
                ));
            }
        }
        let report = match flags.report_url.or(file.report_url) {
            Some(url) => Some(crate::report::Settings {
                target: crate::report::target::Target::parse(&url).map_err(|e| e.to_string())?,
                interval: interval.map_or(crate::report::DEFAULT_INTERVAL, Duration::from_secs),
            }),
            None => {
                if interval.is_some() {
                    tracing::warn!(
                        "--report-interval-secs without --report-url: nothing is reported"
                    );
                }
                None
            }
        };
        let max_booting = flags.max_booting.or(file.max_booting);
        if max_booting == Some(0) {
            return Err("--max-booting 0: give at least 1".into());
        }
        Ok(Self {
            state_dir,
            listen,
            token_file,
            vmm,
            report,
            max_booting: max_booting.unwrap_or_else(crate::launcher::default_max_booting),
        })
    }
}

/// `stratus-vmm` beside this binary if it is there, else from PATH.
fn default_vmm() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("stratus-vmm")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("stratus-vmm"))
}

/// Reads the bearer token, making a random one first if the file is
/// missing.
pub fn load_or_create_token(path: &Path) -> Result<String, AgentError> {
    let err = |source| AgentError::Token {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim().to_string();
            if token.is_empty() {
                return Err(AgentError::EmptyToken(path.display().to_string()));
            }
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            getrandom::getrandom(&mut bytes)
                .map_err(|e| err(std::io::Error::other(e.to_string())))?;
            let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(err)?;
            writeln!(f, "{token}")
                .and_then(|()| f.sync_all())
                .map_err(err)?;
            tracing::info!(path = %path.display(), "made a new API token");
            Ok(token)
        }
        Err(e) => Err(err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file() {
        let dir = std::env::temp_dir().join(format!("stratus-agent-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("agent.json");
        std::fs::write(&file, r#"{"state_dir": "/srv/a", "listen": "127.0.0.1:1"}"#).unwrap();
        let c = Config::resolve(Flags::parse_from([
            "stratus-agent",
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:2",
        ]))
        .unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/srv/a"));
        assert_eq!(c.listen, "127.0.0.1:2");
        assert_eq!(c.token_file, PathBuf::from("/srv/a/api-token"));
        std::fs::write(&file, r#"{"stat_dir": "/srv/a"}"#).unwrap();
        assert!(Config::resolve(Flags::parse_from([
            "stratus-agent",
            "--config",
            file.to_str().unwrap()
        ]))
        .is_err());
        assert_eq!(c.report, None);
        // The report URL from the file, its interval from a flag; bad ones
        // are refused with a message naming the flag.
        std::fs::write(
            &file,
            r#"{"report_url": "http://collector:9000/reports", "report_interval_secs": 5}"#,
        )
        .unwrap();
        let resolve = |extra: &[&str]| {
            let mut args = vec!["stratus-agent", "--config", file.to_str().unwrap()];
            args.extend_from_slice(extra);
            Config::resolve(Flags::parse_from(args))
        };
        let r = resolve(&["--report-interval-secs", "7"])
            .unwrap()
            .report
            .unwrap();
        assert_eq!(r.target.url(), "http://collector:9000/reports");
        assert_eq!(r.interval, Duration::from_secs(7));
        let r = resolve(&[]).unwrap().report.unwrap();
        assert_eq!(r.interval, Duration::from_secs(5));
        for bad in [
            &["--report-url", "ftp://x"][..],
            &["--report-url", "https://collector/"],
            &["--report-url", "not a url"],
            &["--report-interval-secs", "0"],
            &["--report-interval-secs", "86401"],
        ] {
            let e = resolve(bad).unwrap_err();
            assert!(e.starts_with("--report-"), "{bad:?}: {e}");
        }
        std::fs::write(&file, r#"{"state_dir": "/srv/a"}"#).unwrap();
        let r = Config::resolve(Flags::parse_from([
            "stratus-agent",
            "--config",
            file.to_str().unwrap(),
            "--report-url",
            "http://127.0.0.1:1/",
        ]))
        .unwrap()
        .report
        .unwrap();
        assert_eq!(r.interval, crate::report::DEFAULT_INTERVAL);
        let token = dir.join("token");
        let _ = std::fs::remove_file(&token);
        let made = load_or_create_token(&token).unwrap();
        assert_eq!(made.len(), 64);
        assert_eq!(load_or_create_token(&token).unwrap(), made);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
