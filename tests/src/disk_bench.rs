//! The disk benchmark: the Debian AMI under stratus-vmm and under QEMU
//! `-M microvm` (virtio-blk over virtio-mmio), alternating in one
//! virtual-host run, each boot on a fresh qcow2 overlay of the same base
//! with the same vCPUs and memory. Per boot it measures the time from the
//! VMM's start to `multi-user.target` and runs the image's `fio` hook.
//!
//! The boot time compared is the same for both VMMs: the scenario notes
//! `/proc/uptime` of the host just before starting the VMM and again when
//! the guest's `STRATUS-AMI-BOOTED` line arrives on the console (10 ms
//! resolution; busybox has no finer clock). stratus-vmm's own
//! boot-complete time is reported beside it. Everything inside the virtual
//! host runs under TCG, so only the ratios mean anything.

use std::fmt::Write;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::ami_guest::{self, AmiBoot, Fio, BOOTED};
use crate::bench::stats;
use crate::case::{CaseExit, CaseResult};
use crate::cmd;
use crate::debian_ami::DebianAmi;
use crate::error::{Error, Result};
use crate::script::Script;
use crate::vhost::{Outcome, VirtualHost};
use crate::vmms::with_stratus_log;

/// vCPUs of every benchmark guest.
pub const VCPUS: u32 = 1;
/// Memory of every benchmark guest, in MiB.
pub const MEMORY_MIB: u32 = 512;
/// Per-boot limit: a nested boot (~1 min) plus fio (~6 jobs × runtime plus
/// laying out the file) and the shutdown.
const RUN_TIMEOUT_SECS: u64 = 600;

/// Where things are inside the host.
const BASE_IN_HOST: &str = "images/debian-ami/disk.qcow2";
const KERNEL_IN_HOST: &str = "images/debian-ami/vmlinuz";
const INITRD_IN_HOST: &str = "images/debian-ami/initrd.img";
/// The base is copied to the host's tmpfs so that both VMMs read it from
/// RAM, not through the host's own (emulated) data disk.
const BASE: &str = "/tmp/base.qcow2";
const OVERLAY: &str = "/tmp/bench.qcow2";

/// The jobs of the guest's `fio` hook, in its order.
pub const FIO_JOBS: &[&str] = &[
    "seq-read-1m",
    "seq-write-1m",
    "rand-read-4k-qd1",
    "rand-read-4k-qd32",
    "rand-write-4k-qd1",
    "rand-write-4k-qd32",
];

/// Times the boot marker: prints the host's uptime before starting the
/// VMM (`$@`) and when the guest's boot marker passes by. The VMM's stderr
/// is not piped, so stratus-case still sees it as stderr.
const TIMED_SCRIPT: &str = r#"echo "BENCH-START uptime=$(cut -d' ' -f1 /proc/uptime)"
{ "$@"; echo "BENCH-VMM-EXIT $?"; } | while IFS= read -r line; do
    printf '%s\n' "$line"
    case "$line" in
        *STRATUS-AMI-BOOTED*) echo "BENCH-BOOTED uptime=$(cut -d' ' -f1 /proc/uptime)" ;;
    esac
done
"#;

/// A VMM in the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contender {
    /// stratus-vmm `--boot-from-disk`.
    Stratus,
    /// QEMU `-M microvm` with `-kernel`/`-initrd`.
    QemuMicrovm,
}

impl Contender {
    const ALL: [Contender; 2] = [Contender::Stratus, Contender::QemuMicrovm];

    /// Short name, also the case-name prefix.
    pub fn name(self) -> &'static str {
        match self {
            Contender::Stratus => "stratus-vmm",
            Contender::QemuMicrovm => "qemu-microvm",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Boots per VMM.
    pub runs: u32,
    /// fio's runtime per job, in seconds.
    pub fio_runtime_secs: u32,
    /// The stratus-vmm binary.
    pub stratus_vmm: PathBuf,
    /// The image.
    pub ami: DebianAmi,
    /// Its kernel and initrd, extracted for QEMU ([`extract_boot_files`]).
    pub boot_files: BootFiles,
    /// stratus-vmm's I/O engine (`--disk …,io=`): `auto` (the default) or
    /// `io_uring`/`sync`, for comparing the engines.
    pub io_engine: String,
    /// `STRATUS_LOG` for stratus-vmm (its timings and device counters on
    /// stderr, for diagnosis); empty for none.
    pub stratus_log: String,
}

/// The image's kernel and initrd as files, and its root filesystem's UUID.
#[derive(Debug, Clone)]
pub struct BootFiles {
    /// `/boot/vmlinuz-<release>`.
    pub kernel: PathBuf,
    /// `/boot/initrd.img-<release>`.
    pub initrd: PathBuf,
    /// The ext4 UUID (`root=UUID=`).
    pub root_uuid: String,
}

/// Copies the kernel and initrd out of the image's raw disk into `dir` with
/// `debugfs` (no mounts, no loop devices), as microvm needs them as files:
/// the partition's offset from `sfdisk -d`, the release and root UUID from
/// the bundle's `info`.
pub fn extract_boot_files(ami: &DebianAmi, dir: &Path) -> Result<BootFiles> {
    let info_path = ami.dir.join("info");
    let info = fs::read_to_string(&info_path).map_err(Error::io("read", &info_path))?;
    let root_uuid = info
        .lines()
        .find_map(|l| l.strip_prefix("root_uuid="))
        .ok_or_else(|| Error::BadInput {
            path: info_path.clone(),
            problem: "no root_uuid=".into(),
        })?
        .to_owned();
    let table = cmd::stdout(Command::new("sfdisk").arg("-d").arg(&ami.raw))?;
    let start_sector = partition_start(&table).ok_or_else(|| Error::BadInput {
        path: ami.raw.clone(),
        problem: format!("no partition in the table:\n{table}"),
    })?;
    let device = format!("{}?offset={}", ami.raw.display(), start_sector * 512);
    let release = &ami.kernel_release;
    let kernel = dir.join("vmlinuz");
    let initrd = dir.join("initrd.img");
    for (inside, out) in [
        (format!("/boot/vmlinuz-{release}"), &kernel),
        (format!("/boot/initrd.img-{release}"), &initrd),
    ] {
        let request = format!("dump {inside} {}", out.display());
        cmd::output(Command::new("debugfs").args(["-R", &request, &device]))?;
        // debugfs reports a missing file on stderr and still exits 0.
        let len = fs::metadata(out).map(|m| m.len()).unwrap_or(0);
        if len == 0 {
            return Err(Error::BadInput {
                path: ami.raw.clone(),
                problem: format!("debugfs could not extract {inside}"),
            });
        }
    }
    Ok(BootFiles {
        kernel,
        initrd,
        root_uuid,
    })
}

/// The first partition's start sector in `sfdisk -d` output.
fn partition_start(table: &str) -> Option<u64> {
    table.lines().find_map(|line| {
        let rest = line.split_once("start=")?.1;
        rest.split(',').next()?.trim().parse().ok()
    })
}

impl Plan {
    fn boot(&self) -> AmiBoot {
        AmiBoot::new(OVERLAY, VCPUS, MEMORY_MIB, &self.ami.kernel_cmdline)
            .tests(&["fio"])
            .param("fio_runtime", &self.fio_runtime_secs.to_string())
    }

    fn argv(&self, who: Contender) -> Vec<String> {
        let boot = self.boot();
        let vmm = match who {
            Contender::Stratus => {
                let mut argv = boot.stratus_vmm("stdout");
                if let Some(disk) = argv.iter_mut().find(|a| a.ends_with(",format=qcow2")) {
                    disk.push_str(&format!(",io={}", self.io_engine));
                }
                with_stratus_log(&self.stratus_log, argv)
            }
            Contender::QemuMicrovm => {
                boot.qemu_microvm(KERNEL_IN_HOST, INITRD_IN_HOST, &self.boot_files.root_uuid)
            }
        };
        let mut argv = vec!["sh".to_owned(), "/tmp/timed.sh".to_owned()];
        argv.extend(vmm);
        argv
    }

    /// The virtual host that runs the benchmark.
    pub fn host(&self) -> Result<VirtualHost> {
        let mut host = VirtualHost::new("bench-disk");
        host.binary("stratus-vmm", &self.stratus_vmm)
            .binary("qemu-img", &crate::vhost::which("qemu-img")?)
            .disk_file(BASE_IN_HOST, &self.ami.qcow2)
            .disk_file(KERNEL_IN_HOST, &self.boot_files.kernel)
            .disk_file(INITRD_IN_HOST, &self.boot_files.initrd)
            .nested_qemu()?
            // The base copy and one overlay (fio's file grows it) on tmpfs.
            .memory_mib(3072);
        let mut script = Script::new();
        script.line("cat > /tmp/timed.sh <<'EOF'");
        script.line(TIMED_SCRIPT.trim_end());
        script.line("EOF");
        script.case("copy_base", 300, &["cp", BASE_IN_HOST, BASE]);
        for run in 0..self.runs {
            // Alternate who goes first, so neither always follows the other.
            for k in 0..Contender::ALL.len() {
                let who = Contender::ALL[(k + run as usize) % Contender::ALL.len()];
                // A fresh overlay per boot: every boot starts from the same
                // disk state (first-boot work, fio's file allocation).
                script.line(&format!("rm -f {OVERLAY}"));
                script.command(&[
                    "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", BASE, OVERLAY,
                ]);
                script.case(
                    &format!("{}-{}", who.name(), run + 1),
                    RUN_TIMEOUT_SECS,
                    &self.argv(who),
                );
            }
        }
        host.scenario(script.text());
        let boots = u64::from(self.runs) * Contender::ALL.len() as u64;
        host.timeout(Duration::from_secs(600 + boots * RUN_TIMEOUT_SECS));
        Ok(host)
    }

    /// Summarizes a finished run.
    pub fn report(&self, outcome: &Outcome) -> Report {
        let cases = outcome.cases();
        let rows = Contender::ALL
            .into_iter()
            .map(|who| {
                let prefix = format!("{}-", who.name());
                let mut row = Row {
                    who,
                    attempted: 0,
                    boots: Vec::new(),
                    failures: Vec::new(),
                };
                for case in cases.iter().filter(|c| c.name.starts_with(&prefix)) {
                    row.attempted += 1;
                    match measure(case) {
                        Ok(boot) => row.boots.push(boot),
                        Err(why) => row.failures.push(format!("{why}\n{}", case.describe())),
                    }
                }
                row
            })
            .collect();
        Report {
            rows,
            host_ready: outcome.host_ready,
        }
    }
}

/// One successful benchmark boot.
#[derive(Debug, Clone)]
pub struct Measured {
    /// VMM start to the guest's boot marker, measured by the scenario.
    pub to_marker: Duration,
    /// The VMM's own boot-complete time (stratus-vmm only).
    pub boot_complete: Option<Duration>,
    /// fio's results.
    pub fio: Vec<Fio>,
}

fn uptime_after(case: &CaseResult, prefix: &str) -> Option<f64> {
    case.stdout
        .iter()
        .find_map(|l| l.split_once(prefix)?.1.trim().parse::<f64>().ok())
}

/// Reads a boot's record: it must have booted, run fio to status 0 with
/// every job, and its VMM must have exited 0 after the guest's power-off.
fn measure(case: &CaseResult) -> std::result::Result<Measured, String> {
    if case.exit != Some(CaseExit::Code(0)) || !case.stdout_contains("BENCH-VMM-EXIT 0") {
        return Err(format!("case {}: the VMM did not exit 0", case.name));
    }
    let start = uptime_after(case, "BENCH-START uptime=");
    let booted = uptime_after(case, "BENCH-BOOTED uptime=");
    let (Some(start), Some(booted)) = (start, booted) else {
        return Err(format!("case {}: no {BOOTED} marker", case.name));
    };
    let fio_ok = ami_guest::case_section(case, "fio").is_some_and(|s| s.passed());
    let fio = ami_guest::fio_results(&case.stdout);
    if !fio_ok || FIO_JOBS.iter().any(|j| !fio.iter().any(|f| f.job == *j)) {
        return Err(format!("case {}: fio did not complete", case.name));
    }
    Ok(Measured {
        to_marker: Duration::from_secs_f64((booted - start).max(0.0)),
        boot_complete: case.boot_complete(),
        fio,
    })
}

/// One VMM's results.
#[derive(Debug, Clone)]
pub struct Row {
    /// Which VMM.
    pub who: Contender,
    /// Boots attempted.
    pub attempted: usize,
    /// The successful ones.
    pub boots: Vec<Measured>,
    /// Descriptions of the failed ones.
    pub failures: Vec<String>,
}

impl Row {
    fn to_marker(&self) -> Vec<Duration> {
        self.boots.iter().map(|b| b.to_marker).collect()
    }

    /// Median IOPS and KiB/s of `job` over the successful boots.
    fn fio_median(&self, job: &str) -> Option<(f64, f64)> {
        let of = |get: fn(&Fio) -> f64| -> Option<f64> {
            let mut values: Vec<f64> = self
                .boots
                .iter()
                .filter_map(|b| b.fio.iter().find(|f| f.job == job).map(get))
                .collect();
            median(&mut values)
        };
        Some((of(Fio::iops)?, of(Fio::kib_s)?))
    }
}

fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// The benchmark's results.
#[derive(Debug, Clone)]
pub struct Report {
    /// One row per VMM.
    pub rows: Vec<Row>,
    /// How long the virtual host took to come up.
    pub host_ready: Option<Duration>,
}

impl Report {
    /// Whether every boot of every VMM succeeded.
    pub fn all_succeeded(&self) -> bool {
        self.rows
            .iter()
            .all(|r| r.failures.is_empty() && r.attempted > 0)
    }

    fn row(&self, who: Contender) -> Option<&Row> {
        self.rows.iter().find(|r| r.who == who)
    }

    /// The report as text for a person.
    pub fn render(&self, plan: &Plan) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "disk benchmark: Debian AMI {} ({}), {VCPUS} vCPU, {MEMORY_MIB} MiB, fresh qcow2 overlay per boot; \
             fio {} s per job on a file in the root filesystem",
            plan.ami.ami_id, plan.ami.kernel_release, plan.fio_runtime_secs
        );
        let _ = writeln!(out, "stratus-vmm disk I/O engine: {}", plan.io_engine);
        if let Some(ready) = self.host_ready {
            let _ = writeln!(
                out,
                "virtual host ready after {:.1} s (everything inside runs under TCG: compare ratios only)",
                ready.as_secs_f64()
            );
        }
        let _ = writeln!(
            out,
            "\nboot to multi-user.target (VMM start to the STRATUS-AMI-BOOTED console line):"
        );
        let _ = writeln!(
            out,
            "{:<14} {:>10} {:>22} {:>6}",
            "VMM", "median", "range", "ok"
        );
        for row in &self.rows {
            let ok = format!("{}/{}", row.boots.len(), row.attempted);
            match stats(&row.to_marker()) {
                Some(s) => {
                    let _ = writeln!(
                        out,
                        "{:<14} {:>8.2} s {:>22} {ok:>6}",
                        row.who.name(),
                        s.median.as_secs_f64(),
                        format!("{:.2}–{:.2} s", s.min.as_secs_f64(), s.max.as_secs_f64())
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
        if let Some(row) = self.row(Contender::Stratus) {
            let bc: Vec<Duration> = row.boots.iter().filter_map(|b| b.boot_complete).collect();
            if let Some(s) = stats(&bc) {
                let _ = writeln!(
                    out,
                    "stratus-vmm boot-complete (VMM-reported, from process start): median {:.2} s, range {:.2}–{:.2} s",
                    s.median.as_secs_f64(),
                    s.min.as_secs_f64(),
                    s.max.as_secs_f64()
                );
            }
        }
        let medians = |who| {
            self.row(who)
                .and_then(|r| stats(&r.to_marker()))
                .map(|s| s.median.as_secs_f64())
        };
        if let (Some(a), Some(b)) = (medians(Contender::Stratus), medians(Contender::QemuMicrovm)) {
            let _ = writeln!(
                out,
                "boot time ratio stratus-vmm/qemu-microvm = {:.2}",
                a / b
            );
        }

        let _ = writeln!(
            out,
            "\nfio (median over successful boots; ratio = stratus-vmm / qemu-microvm, >1 is better for stratus):"
        );
        let _ = writeln!(
            out,
            "{:<20} {:>12} {:>12} {:>12} {:>12} {:>7}",
            "job", "stratus IOPS", "stratus MiB/s", "qemu IOPS", "qemu MiB/s", "ratio"
        );
        let (stratus, qemu) = (
            self.row(Contender::Stratus),
            self.row(Contender::QemuMicrovm),
        );
        for job in FIO_JOBS {
            let s = stratus.and_then(|r| r.fio_median(job));
            let q = qemu.and_then(|r| r.fio_median(job));
            let cell = |v: Option<(f64, f64)>| match v {
                Some((iops, kib)) => (format!("{iops:.0}"), format!("{:.1}", kib / 1024.0)),
                None => ("-".into(), "-".into()),
            };
            let (si, sb) = cell(s);
            let (qi, qb) = cell(q);
            let ratio = match (s, q) {
                (Some((a, _)), Some((b, _))) if b > 0.0 => format!("{:.2}", a / b),
                _ => "-".into(),
            };
            let _ = writeln!(
                out,
                "{job:<20} {si:>12} {sb:>12} {qi:>12} {qb:>12} {ratio:>7}"
            );
        }
        for row in &self.rows {
            for failure in &row.failures {
                let _ = writeln!(out, "\nFAILED boot of {}: {failure}", row.who.name());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_start_from_sfdisk_dump() {
        let table = "label: gpt\nunit: sectors\n\ndisk.raw1 : start=        2048, size=     2095071, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709\n";
        assert_eq!(partition_start(table), Some(2048));
        assert_eq!(partition_start("label: gpt\n"), None);
    }

    fn fio_line(job: &str, read_iops: u32) -> String {
        let mut fields = vec!["0".to_owned(); 130];
        fields[0] = "3".into();
        fields[2] = job.into();
        fields[6] = (read_iops * 4).to_string();
        fields[7] = read_iops.to_string();
        format!("FIO: {}", fields.join(";"))
    }

    fn boot_case(name: &str, exit: i32, start: f64, booted: f64, iops: u32) -> CaseResult {
        let mut stdout = vec![
            format!("BENCH-START uptime={start}"),
            format!("{BOOTED} uptime=40.0"),
            format!("BENCH-BOOTED uptime={booted}"),
            "STRATUS-TEST-BEGIN fio".to_owned(),
        ];
        stdout.extend(FIO_JOBS.iter().map(|j| fio_line(j, iops)));
        stdout.push("STRATUS-TEST-END fio status=0".into());
        stdout.push(format!("BENCH-VMM-EXIT {exit}"));
        CaseResult {
            name: name.into(),
            exit: Some(CaseExit::Code(0)),
            wall: Some(Duration::from_secs(90)),
            stdout,
            stderr: vec!["stratus-vmm: boot complete in 50000.000 ms".into()],
        }
    }

    #[test]
    fn boots_are_measured_from_the_markers_and_failures_kept() {
        let good = measure(&boot_case("stratus-vmm-1", 0, 100.0, 150.5, 1000)).unwrap();
        assert_eq!(good.to_marker, Duration::from_millis(50_500));
        assert_eq!(good.boot_complete, Some(Duration::from_secs(50)));
        assert_eq!(good.fio.len(), FIO_JOBS.len());
        assert!(measure(&boot_case("x", 1, 100.0, 150.0, 1)).is_err());
        let mut no_fio = boot_case("x", 0, 1.0, 2.0, 1);
        no_fio.stdout.retain(|l| !l.contains("rand-write-4k-qd32"));
        assert!(measure(&no_fio).is_err());
    }

    #[test]
    fn report_has_boot_and_fio_ratios() {
        let row = |who, iops, secs: f64| Row {
            who,
            attempted: 1,
            boots: vec![measure(&boot_case("x", 0, 0.0, secs, iops)).unwrap()],
            failures: vec![],
        };
        let report = Report {
            rows: vec![
                row(Contender::Stratus, 2000, 40.0),
                row(Contender::QemuMicrovm, 1000, 50.0),
            ],
            host_ready: None,
        };
        assert!(report.all_succeeded());
        let ami = DebianAmi {
            dir: "d".into(),
            raw: "r".into(),
            qcow2: "q".into(),
            manifest: "m".into(),
            ami_id: "ami-0".into(),
            kernel_release: "6.1".into(),
            kernel_cmdline: "console=ttyS0".into(),
        };
        let plan = Plan {
            runs: 1,
            fio_runtime_secs: 3,
            stratus_vmm: "s".into(),
            ami,
            boot_files: BootFiles {
                kernel: "k".into(),
                initrd: "i".into(),
                root_uuid: "u".into(),
            },
            io_engine: "auto".into(),
            stratus_log: String::new(),
        };
        let text = report.render(&plan);
        assert!(
            text.contains("boot time ratio stratus-vmm/qemu-microvm = 0.80"),
            "{text}"
        );
        assert!(text.contains("rand-read-4k-qd1"), "{text}");
        assert!(text.contains("2.00"), "{text}");
        assert!(text.contains("1/1"), "{text}");
    }
}
