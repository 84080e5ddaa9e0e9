//! `cargo xtask bench memory`: each VMM's memory outside guest RAM with an
//! idle guest (1 vCPU, 128 MiB, the tiny image waiting at its shell), in
//! the virtual host — the overhead Firecracker's specification bounds at
//! 5 MiB and measured here at about 4 MiB for Firecracker itself.
//!
//! `scripts/vmm-memory.sh` sums the RSS of every mapping smaller than the
//! guest's RAM from `/proc/PID/smaps`.

use std::path::PathBuf;
use std::time::Duration;

use crate::case::CaseResult;
use crate::error::Result;
use crate::images::GuestImage;
use crate::script::Script;
use crate::vhost::{Outcome, VirtualHost};
use crate::vmms::{Boot, GuestFiles};

/// The measured guest.
pub const MEMORY_MIB: u32 = 128;
const SCRIPT: &str = include_str!("../scripts/vmm-memory.sh");
const RUN_TIMEOUT_SECS: u64 = 200;

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Measurements per configuration.
    pub runs: u32,
    /// The stratus-vmm binary.
    pub stratus_vmm: PathBuf,
    /// A Firecracker binary, to include it.
    pub firecracker: Option<PathBuf>,
    /// The guest.
    pub image: GuestImage,
}

/// The configurations measured, by label.
fn labels(plan: &Plan) -> Vec<&'static str> {
    let mut all = vec!["stratus-vmm", "stratus-vmm+api"];
    if plan.firecracker.is_some() {
        all.push("firecracker+api");
    }
    all
}

impl Plan {
    /// The virtual host that runs the measurements.
    pub fn host(&self) -> Result<VirtualHost> {
        let files = GuestFiles::of(&self.image);
        let boot = Boot::new(&files, 1, MEMORY_MIB, "stratus.run=wait");
        let mut host = VirtualHost::new("bench-memory");
        host.binary("stratus-vmm", &self.stratus_vmm)
            .binary("curl", &crate::vhost::which("curl")?)
            .file(&files.kernel, &self.image.kernel)
            .file(&files.initrd, &self.image.initrd);
        let mut script = Script::new();
        script.line("cat > /tmp/vmm-memory.sh <<'STRATUS-EOF'");
        script.line(SCRIPT.trim_end());
        script.line("STRATUS-EOF");
        if let Some(firecracker) = &self.firecracker {
            host.binary("firecracker", firecracker);
            script.line("cat > /tmp/firecracker.json <<'EOF'");
            script.line(&boot.firecracker_config());
            script.line("EOF");
        }
        let log = "/tmp/memory-console.log";
        let mib = MEMORY_MIB.to_string();
        let labels = labels(self);
        for run in 0..self.runs {
            for k in 0..labels.len() {
                let label = labels[(k + run as usize) % labels.len()];
                let (sock, vmm): (&str, Vec<String>) = match label {
                    "stratus-vmm" => ("-", boot.stratus_vmm_with(&format!("file:{log}"), &[])),
                    "stratus-vmm+api" => (
                        "/tmp/memory.sock",
                        boot.stratus_vmm_with(
                            &format!("file:{log}"),
                            &["--api-sock", "/tmp/memory.sock"],
                        ),
                    ),
                    _ => (
                        "/tmp/memory.sock",
                        [
                            "firecracker",
                            "--api-sock",
                            "/tmp/memory.sock",
                            "--config-file",
                            "/tmp/firecracker.json",
                        ]
                        .map(str::to_owned)
                        .to_vec(),
                    ),
                };
                let mut argv: Vec<String> = ["sh", "/tmp/vmm-memory.sh", label, &mib, log, sock]
                    .map(str::to_owned)
                    .to_vec();
                argv.extend(vmm);
                script.case(&format!("{label}-{}", run + 1), RUN_TIMEOUT_SECS, &argv);
            }
        }
        host.scenario(script.text());
        let cases = u64::from(self.runs) * labels.len() as u64;
        host.timeout(Duration::from_secs(300 + cases * RUN_TIMEOUT_SECS));
        Ok(host)
    }

    /// The per-run figures and medians.
    pub fn report(&self, outcome: &Outcome) -> String {
        let cases = outcome.cases();
        let mut out = format!(
            "memory outside guest RAM, 1 vCPU, {MEMORY_MIB} MiB, idle tiny guest (KiB, smaps Rss of mappings smaller than guest RAM)\n"
        );
        for label in labels(self) {
            let prefix = format!("{label}-");
            let mut values: Vec<u64> = Vec::new();
            out.push_str(&format!("{label}:"));
            for case in cases.iter().filter(|c| c.name.starts_with(&prefix)) {
                match measured(case) {
                    Some((nonguest, total, threads)) => {
                        out.push_str(&format!(" {nonguest} (total {total}, {threads} threads);"));
                        values.push(nonguest);
                    }
                    None => out.push_str(&format!(" {} failed;", case.name)),
                }
            }
            values.sort_unstable();
            match values.get(values.len() / 2) {
                Some(median) if !values.is_empty() => {
                    out.push_str(&format!(" median {median} KiB\n"))
                }
                _ => out.push_str(" no measurement\n"),
            }
        }
        out
    }
}

/// `(non-guest RSS, total RSS, threads)` from a case's MEMORY line.
fn measured(case: &CaseResult) -> Option<(u64, u64, u64)> {
    let line = case.stdout.iter().find(|l| l.starts_with("MEMORY "))?;
    let get = |key: &str| {
        let needle = format!("{key}=");
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(needle.as_str()))
            .and_then(|v| v.parse().ok())
    };
    Some((
        get("nonguest_rss_kib")?,
        get("total_rss_kib")?,
        get("threads")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::CaseExit;

    #[test]
    fn reads_the_memory_line() {
        let case = CaseResult {
            name: "stratus-vmm-1".into(),
            exit: Some(CaseExit::Code(0)),
            wall: None,
            stdout: vec![
                "MEMORY label=stratus-vmm nonguest_rss_kib=2900 total_rss_kib=40000 threads=4"
                    .into(),
            ],
            stderr: Vec::new(),
        };
        assert_eq!(measured(&case), Some((2900, 40000, 4)));
        assert!(SCRIPT.contains("smaps"));
    }
}
