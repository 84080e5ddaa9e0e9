//! The boot-time benchmark: several VMMs boot the same guest alternately
//! in one virtual-host run, so that all of them see the same (slow, TCG)
//! machine and only their ratios are compared.

use std::fmt::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::case::{CaseExit, CaseResult};
use crate::error::Result;
use crate::images::GuestImage;
use crate::script::Script;
use crate::vhost::{Outcome, VirtualHost};
use crate::vmms::{with_stratus_log, Boot, GuestFiles};

/// Guest size of every benchmark boot (the Firecracker measurement in the
/// project's anchors uses the same).
pub const VCPUS: u32 = 1;
/// Guest memory of every benchmark boot, in MiB.
pub const MEMORY_MIB: u32 = 256;
/// Per-boot time limit inside the virtual host.
const RUN_TIMEOUT_SECS: u64 = 240;

/// A VMM taking part in the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contender {
    /// The VMM under test.
    Stratus,
    /// QEMU `-M microvm` on KVM.
    QemuMicrovm,
    /// Firecracker, `--no-api --config-file`.
    Firecracker,
}

impl Contender {
    /// Short name, also the case-name prefix.
    pub fn name(self) -> &'static str {
        match self {
            Contender::Stratus => "stratus-vmm",
            Contender::QemuMicrovm => "qemu-microvm",
            Contender::Firecracker => "firecracker",
        }
    }

    /// The exit code of a successful boot that ends in a guest reboot:
    /// stratus-vmm reports the reboot (3); QEMU with `-no-reboot` and
    /// Firecracker simply exit 0.
    fn reboot_exit(self) -> i32 {
        match self {
            Contender::Stratus => 3,
            Contender::QemuMicrovm | Contender::Firecracker => 0,
        }
    }
}

/// Guest command line for every contender (QEMU gets `reboot=a`, see
/// `vmms`): a verbose console and a guest that reboots when booted.
pub const BENCH_CMDLINE: &str = "console=ttyS0 reboot=k panic=1 stratus.exit=reboot";
/// The same with `quiet`: the kernel's own messages stay off the console,
/// so console exits stop dominating and the platform's cost shows.
pub const BENCH_CMDLINE_QUIET: &str = "console=ttyS0 reboot=k panic=1 quiet stratus.exit=reboot";

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Boots per contender.
    pub runs: u32,
    /// The stratus-vmm binary.
    pub stratus_vmm: PathBuf,
    /// A Firecracker binary, to include it.
    pub firecracker: Option<PathBuf>,
    /// The guest.
    pub image: GuestImage,
    /// Use [`BENCH_CMDLINE_QUIET`] instead of [`BENCH_CMDLINE`].
    pub quiet: bool,
    /// Leave QEMU microvm out (it is the slowest; stratus-vmm and
    /// Firecracker are compared either way).
    pub without_qemu: bool,
    /// Words appended to every contender's command line (for diagnosis,
    /// e.g. `initcall_debug`); empty for the published measurement.
    pub extra_cmdline: String,
    /// `STRATUS_LOG` for stratus-vmm (its own timings on stderr, for
    /// diagnosis); empty for none.
    pub stratus_log: String,
}

impl Plan {
    /// The guest command line every contender gets.
    pub fn cmdline(&self) -> String {
        let base = if self.quiet {
            BENCH_CMDLINE_QUIET
        } else {
            BENCH_CMDLINE
        };
        if self.extra_cmdline.is_empty() {
            base.to_owned()
        } else {
            format!("{base} {}", self.extra_cmdline)
        }
    }

    fn contenders(&self) -> Vec<Contender> {
        let mut all = vec![Contender::Stratus];
        if !self.without_qemu {
            all.push(Contender::QemuMicrovm);
        }
        if self.firecracker.is_some() {
            all.push(Contender::Firecracker);
        }
        all
    }

    /// The virtual host that runs the benchmark.
    pub fn host(&self) -> Result<VirtualHost> {
        let files = GuestFiles::of(&self.image);
        let mut boot = Boot::new(&files, VCPUS, MEMORY_MIB, "");
        // The command line of the published Firecracker measurement
        // (ANCHORS: verbose console, `reboot=k`), or the same with `quiet`;
        // identical for every VMM, so the guest does the same work.
        boot.cmdline = self.cmdline();
        let mut host = VirtualHost::new("bench-boot");
        host.binary("stratus-vmm", &self.stratus_vmm)
            .file(&files.kernel, &self.image.kernel)
            .file(&files.initrd, &self.image.initrd)
            .nested_qemu()?;
        let mut script = Script::new();
        if let Some(firecracker) = &self.firecracker {
            host.binary("firecracker", firecracker);
            script.line("cat > /tmp/firecracker.json <<'EOF'");
            script.line(&boot.firecracker_config());
            script.line("EOF");
        }
        let contenders = self.contenders();
        for run in 0..self.runs {
            // Rotate who goes first so no VMM always follows the same one.
            for k in 0..contenders.len() {
                let who = contenders[(k + run as usize) % contenders.len()];
                let argv = match who {
                    Contender::Stratus => with_stratus_log(&self.stratus_log, boot.stratus_vmm()),
                    Contender::QemuMicrovm => boot.qemu_microvm(),
                    Contender::Firecracker => [
                        "firecracker",
                        "--no-api",
                        "--config-file",
                        "/tmp/firecracker.json",
                    ]
                    .map(str::to_owned)
                    .to_vec(),
                };
                script.case(
                    &format!("{}-{}", who.name(), run + 1),
                    RUN_TIMEOUT_SECS,
                    &argv,
                );
            }
        }
        host.scenario(script.text());
        // Generous: the slowest nested boots take tens of seconds under TCG.
        let boots = u64::from(self.runs) * contenders.len() as u64;
        host.timeout(Duration::from_secs(300 + boots * RUN_TIMEOUT_SECS));
        Ok(host)
    }

    /// Summarizes a finished run.
    pub fn report(&self, outcome: &Outcome) -> Report {
        let cases = outcome.cases();
        let rows = self
            .contenders()
            .into_iter()
            .map(|who| {
                let prefix = format!("{}-", who.name());
                let mine: Vec<&CaseResult> = cases
                    .iter()
                    .filter(|c| c.name.starts_with(&prefix))
                    .collect();
                let good: Vec<&CaseResult> =
                    mine.iter().copied().filter(|c| succeeded(who, c)).collect();
                Row {
                    who,
                    attempted: mine.len(),
                    wall: good.iter().filter_map(|c| c.wall).collect(),
                    boot_complete: good.iter().filter_map(|c| c.boot_complete()).collect(),
                    failures: mine
                        .iter()
                        .filter(|c| !succeeded(who, c))
                        .map(|c| c.describe())
                        .collect(),
                }
            })
            .collect();
        Report {
            rows,
            host_ready: outcome.host_ready,
        }
    }
}

/// A boot counts if the guest reached userspace and the VMM then exited as
/// it should for a guest reboot.
fn succeeded(who: Contender, case: &CaseResult) -> bool {
    case.stdout_contains("STRATUS-TINY-BOOTED")
        && case.exit == Some(CaseExit::Code(who.reboot_exit()))
}

/// One contender's results.
#[derive(Debug, Clone)]
pub struct Row {
    /// Which VMM.
    pub who: Contender,
    /// Boots attempted.
    pub attempted: usize,
    /// Process wall times of the successful boots.
    pub wall: Vec<Duration>,
    /// VMM-reported boot-complete times (stratus-vmm only).
    pub boot_complete: Vec<Duration>,
    /// Descriptions of the failed boots.
    pub failures: Vec<String>,
}

/// The benchmark's results.
#[derive(Debug, Clone)]
pub struct Report {
    /// One row per contender.
    pub rows: Vec<Row>,
    /// How long the virtual host took to come up.
    pub host_ready: Option<Duration>,
}

/// Median, minimum and maximum of a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// The median (mean of the middle two for an even count).
    pub median: Duration,
    /// The smallest value.
    pub min: Duration,
    /// The largest value.
    pub max: Duration,
}

/// Statistics of `values`, `None` when empty.
pub fn stats(values: &[Duration]) -> Option<Stats> {
    let mut sorted = values.to_vec();
    sorted.sort();
    let n = sorted.len();
    let median = match n {
        0 => return None,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
    };
    Some(Stats {
        median,
        min: sorted[0],
        max: sorted[n - 1],
    })
}

impl Report {
    /// Whether every boot of every contender succeeded.
    pub fn all_succeeded(&self) -> bool {
        self.rows
            .iter()
            .all(|r| r.failures.is_empty() && r.attempted > 0)
    }

    /// The report as text for a person.
    pub fn render(&self, plan: &Plan) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "boot benchmark: {} ({}), {VCPUS} vCPU, {MEMORY_MIB} MiB, guest runs `reboot -f`; \
             wall time from process start to exit",
            plan.image.name, plan.image.kernel_release
        );
        let _ = writeln!(out, "guest command line: {}", plan.cmdline());
        if let Some(ready) = self.host_ready {
            let _ = writeln!(out, "virtual host ready after {:.1} s (inside it everything runs under TCG: compare ratios only)", ready.as_secs_f64());
        }
        let _ = writeln!(
            out,
            "{:<14} {:>10} {:>22} {:>6}",
            "VMM", "median", "range", "ok"
        );
        for row in &self.rows {
            let ok = format!("{}/{}", row.wall.len(), row.attempted);
            match stats(&row.wall) {
                Some(s) => {
                    let _ = writeln!(
                        out,
                        "{:<14} {:>8.3} s {:>22} {ok:>6}",
                        row.who.name(),
                        secs(s.median),
                        range(&s)
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "{:<14} {:>10} {:>22} {ok:>6}",
                        row.who.name(),
                        "-",
                        "-"
                    );
                }
            }
        }
        for row in &self.rows {
            let runs: Vec<String> = row
                .wall
                .iter()
                .map(|d| format!("{:.3}", secs(*d)))
                .collect();
            let _ = writeln!(out, "{} per run (s): {}", row.who.name(), runs.join(" "));
        }
        for row in &self.rows {
            if let Some(s) = stats(&row.boot_complete) {
                let _ = writeln!(
                    out,
                    "{} boot-complete (VMM-reported, guest signal): median {:.3} s, range {}",
                    row.who.name(),
                    secs(s.median),
                    range(&s)
                );
            }
        }
        let medians: Vec<(Contender, Duration)> = self
            .rows
            .iter()
            .filter_map(|r| Some((r.who, stats(&r.wall)?.median)))
            .collect();
        for (i, (a, ma)) in medians.iter().enumerate() {
            for (b, mb) in &medians[i + 1..] {
                let _ = writeln!(
                    out,
                    "ratio of medians {}/{} = {:.2}",
                    a.name(),
                    b.name(),
                    ma.as_secs_f64() / mb.as_secs_f64()
                );
            }
        }
        for row in &self.rows {
            for failure in &row.failures {
                let _ = writeln!(out, "FAILED boot of {}:\n{failure}", row.who.name());
            }
        }
        out
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn range(s: &Stats) -> String {
    format!("{:.3}–{:.3} s", secs(s.min), secs(s.max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn stats_of_odd_even_and_empty_samples() {
        assert_eq!(stats(&[]), None);
        assert_eq!(
            stats(&[ms(5), ms(1), ms(3)]),
            Some(Stats {
                median: ms(3),
                min: ms(1),
                max: ms(5)
            })
        );
        assert_eq!(
            stats(&[ms(4), ms(1), ms(2), ms(3)]).map(|s| s.median),
            Some(Duration::from_micros(2500))
        );
    }

    #[test]
    fn only_boots_that_reached_userspace_and_exited_right_count() {
        let case = |exit, booted: bool| CaseResult {
            name: "x".into(),
            exit: Some(CaseExit::Code(exit)),
            wall: Some(ms(1)),
            stdout: if booted {
                vec!["STRATUS-TINY-BOOTED".into()]
            } else {
                vec![]
            },
            stderr: vec![],
        };
        assert!(succeeded(Contender::Stratus, &case(3, true)));
        assert!(!succeeded(Contender::Stratus, &case(0, true)));
        assert!(!succeeded(Contender::Stratus, &case(3, false)));
        assert!(succeeded(Contender::QemuMicrovm, &case(0, true)));
    }

    #[test]
    fn report_shows_medians_ranges_ratios_and_failures() {
        let plan = Plan {
            runs: 3,
            stratus_vmm: PathBuf::from("stratus-vmm"),
            firecracker: None,
            image: GuestImage {
                name: "tiny",
                kernel: PathBuf::from("k"),
                initrd: PathBuf::from("i"),
                kernel_release: "6.12-test".into(),
            },
            quiet: false,
            without_qemu: false,
            extra_cmdline: String::new(),
            stratus_log: String::new(),
        };
        let report = Report {
            rows: vec![
                Row {
                    who: Contender::Stratus,
                    attempted: 3,
                    wall: vec![ms(1000), ms(3000), ms(2000)],
                    boot_complete: vec![ms(900)],
                    failures: vec![],
                },
                Row {
                    who: Contender::QemuMicrovm,
                    attempted: 3,
                    wall: vec![ms(4000), ms(4000)],
                    boot_complete: vec![],
                    failures: vec!["case qemu-microvm-2: exit Some(Code(1))".into()],
                },
            ],
            host_ready: Some(ms(9000)),
        };
        let text = report.render(&plan);
        assert!(text.contains("2.000 s"), "{text}");
        assert!(text.contains("1.000–3.000 s"), "{text}");
        assert!(text.contains("3/3") && text.contains("2/3"), "{text}");
        assert!(
            text.contains("ratio of medians stratus-vmm/qemu-microvm = 0.50"),
            "{text}"
        );
        assert!(text.contains("FAILED boot of qemu-microvm"), "{text}");
        assert!(!report.all_succeeded());
    }
}
