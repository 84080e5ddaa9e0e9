//! The virtual host: a QEMU/TCG machine with an emulated AMD SVM in which
//! Debian's cloud kernel provides a real `kvm_amd` `/dev/kvm`, so that
//! stock guest kernels can run under a VMM on machines whose own `/dev/kvm`
//! cannot run them (see `hostcaps`).
//!
//! A caller describes what the host needs — binaries, files, kernel
//! modules, a scenario shell script — and [`VirtualHost::run`] builds an
//! initramfs (plus a data disk for large files), boots it, streams the
//! serial console to stderr and a log file, and returns the scenario's exit
//! status and console lines. QEMU is killed and temporary files removed on
//! every path out, including panics.
//!
//! On a machine with hardware KVM the same scenario runs directly on the
//! machine instead (`STRATUS_VHOST=always` forces the virtual host).

mod console;
mod payload;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub use payload::{shared_libraries, DISK_MOUNT, ROOT};

use crate::apt;
use crate::cache::{self, TempDir};
use crate::case::{self, CaseResult};
use crate::cmd;
use crate::cpio::Archive;
use crate::error::{Error, Result};
use crate::hostcaps::{self, Virtualization};
use crate::images;
use crate::kernel::{self, Kernel};

/// `/init` of the virtual host.
const INIT: &str = include_str!("init.sh");

/// The line the host's init prints with the scenario's exit status.
pub const EXIT_MARKER: &str = "STRATUS-SCENARIO-EXIT=";
/// The line the host's init prints when it is about to run the scenario.
pub const READY_MARKER: &str = "STRATUS-VHOST ready";

/// Packages needed to build and boot a virtual host.
pub const PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "zstd",
    "xz-utils",
    "kmod",
    "e2fsprogs",
    "libc-bin",
    // Scenarios drive the VMM's API socket with it.
    "curl",
    // iproute2's `ip`: taps (`ip tuntap`) and bridges for network scenarios.
    "iproute2",
];

/// Modules every virtual host loads: KVM for AMD (the emulated CPU is an
/// EPYC with SVM and nested paging).
const KVM_MODULES: &[&str] = &["kvm_amd"];

/// QEMU's data files that a nested `-M microvm` boot needs: its firmware
/// (qboot) and the option ROMs that load a kernel given with `-kernel`
/// (PVH for an ELF `vmlinux`, linuxboot for a bzImage).
const NESTED_QEMU_DATA: &[&str] = &[
    "bios-microvm.bin",
    "qboot.rom",
    "pvh.bin",
    "linuxboot_dma.bin",
    "linuxboot.bin",
    "kvmvapic.bin",
];

/// Boots of the virtual host before giving up, when it dies before its
/// scenario starts or while it runs.
const HOST_BOOT_ATTEMPTS: u32 = 4;
/// How many times a scenario is run again because the virtual host's own
/// kernel died while it ran (multi-threaded TCG flakiness, not the code
/// under test). Two: a long scenario (the AMI one runs eight nested boots)
/// has been seen to lose its host twice in one CI run; each death leaves
/// its log behind.
const MAX_HOST_DEATHS_MID_SCENARIO: u32 = 2;
/// How long the virtual host may take to be ready (it takes 5–15 s).
const HOST_READY_WITHIN: Duration = Duration::from_secs(180);

/// Where a scenario runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Inside the QEMU/TCG virtual host.
    Virtual,
    /// Directly on this machine (it has hardware KVM).
    Direct,
}

/// Picks the mode: `STRATUS_VHOST=always|never` overrides detection.
pub fn mode() -> Mode {
    match std::env::var("STRATUS_VHOST").as_deref() {
        Ok("always") => Mode::Virtual,
        Ok("never") => Mode::Direct,
        _ => match hostcaps::detect() {
            Virtualization::Hardware => Mode::Direct,
            Virtualization::Pvm | Virtualization::Absent => Mode::Virtual,
        },
    }
}

/// Installs what the virtual host needs. `Ok(false)` means "skip": QEMU is
/// missing and cannot be installed, outside CI. In CI (`CI` set) a missing
/// QEMU is an error, so that a broken setup cannot pass by skipping.
pub fn ensure_tools() -> Result<bool> {
    let installed = apt::ensure_installed(PACKAGES);
    let ci = std::env::var_os("CI").is_some();
    decide_tools(installed, cmd::on_path("qemu-system-x86_64"), ci)
}

fn decide_tools(installed: Result<()>, qemu_present: bool, ci: bool) -> Result<bool> {
    match installed {
        Ok(()) => Ok(true),
        Err(err) if !qemu_present && !ci => {
            crate::note(&format!(
                "SKIPPED: qemu-system-x86_64 is not available ({err})"
            ));
            Ok(false)
        }
        Err(err) => Err(err),
    }
}

/// How a scenario went.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Where it ran.
    pub mode: Mode,
    /// The scenario script's exit status.
    pub exit_code: i32,
    /// Every console line.
    pub lines: Vec<String>,
    /// The log file with the whole console (kept after the run).
    pub log: PathBuf,
    /// From QEMU's start until the host was ready to run the scenario.
    pub host_ready: Option<Duration>,
    /// Whether the host had `/dev/kvm` when the scenario started.
    pub kvm: Option<bool>,
    /// From QEMU's start until it exited.
    pub elapsed: Duration,
}

impl Outcome {
    /// All case records on the console.
    pub fn cases(&self) -> Vec<CaseResult> {
        case::parse_cases(self.lines.iter().map(String::as_str))
    }

    /// The case record named `name`.
    pub fn case(&self, name: &str) -> Option<CaseResult> {
        self.cases().into_iter().find(|c| c.name == name)
    }
}

/// A file to place in the host.
#[derive(Debug, Clone)]
struct Placed {
    /// Path relative to `$STRATUS_ROOT`.
    rel: String,
    source: PathBuf,
    on_disk: bool,
}

/// A virtual host being described. See the module documentation.
#[derive(Debug, Clone)]
pub struct VirtualHost {
    name: String,
    binaries: Vec<(String, PathBuf)>,
    files: Vec<Placed>,
    system_files: Vec<(String, PathBuf)>,
    modules: Vec<String>,
    scenario: String,
    timeout: Duration,
    memory_mib: u32,
    cpus: u32,
    echo: bool,
    case_runner: Option<PathBuf>,
    guests_on_one_cpu: bool,
}

impl VirtualHost {
    /// A host for scenario `name` (names the log file).
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            binaries: Vec::new(),
            files: Vec::new(),
            system_files: Vec::new(),
            modules: Vec::new(),
            scenario: String::new(),
            timeout: Duration::from_secs(20 * 60),
            memory_mib: 2048,
            cpus: 2,
            echo: std::env::var_os("STRATUS_QUIET").is_none(),
            case_runner: None,
            guests_on_one_cpu: false,
        }
    }

    /// Adds an executable as `$STRATUS_ROOT/bin/<name>` (on the scenario's
    /// `PATH`) with the shared libraries it needs.
    pub fn binary(&mut self, name: &str, path: &Path) -> &mut Self {
        self.binaries.push((name.to_owned(), path.to_path_buf()));
        self
    }

    /// Adds a file as `$STRATUS_ROOT/<rel>`, inside the initramfs.
    pub fn file(&mut self, rel: &str, source: &Path) -> &mut Self {
        self.files.push(Placed {
            rel: rel.to_owned(),
            source: source.to_path_buf(),
            on_disk: false,
        });
        self
    }

    /// Adds a large file as `$STRATUS_ROOT/<rel>`: it travels on a read-only
    /// virtio data disk (a symlink in the initramfs points at it), which
    /// keeps the initramfs small and the host's RAM free for guests.
    pub fn disk_file(&mut self, rel: &str, source: &Path) -> &mut Self {
        self.files.push(Placed {
            rel: rel.to_owned(),
            source: source.to_path_buf(),
            on_disk: true,
        });
        self
    }

    /// Adds a file at an absolute path of the host (virtual mode only; a
    /// direct run uses this machine's own files).
    pub fn system_file(&mut self, path: &str, source: &Path) -> &mut Self {
        self.system_files
            .push((path.to_owned(), source.to_path_buf()));
        self
    }

    /// Runs the scenario (and so every nested guest) on the host's last
    /// CPU only, the other one keeping the host's own work.
    ///
    /// Why: two nested guests running at the same time on the two CPUs of
    /// the QEMU/TCG host crash now and then: one of them triple-faults
    /// within its first seconds, or the host itself does. Measured with
    /// two Debian AMIs booted side by side, round after round (2026-11-30):
    /// as they were, 3 of 9 rounds lost a guest to a triple fault and one
    /// more took the host down (its own stock kernel triple-faulted; QEMU
    /// exited cleanly mid-round); with both VMMs on one CPU, 0 of 14. That
    /// is the emulator (multi-threaded TCG running two nested SVM guests
    /// at once), not the VMMs, which share nothing but read-only files; a
    /// scenario whose guests overlap asks for this and pays some speed.
    pub fn guests_on_one_cpu(&mut self) -> &mut Self {
        self.guests_on_one_cpu = true;
        self
    }

    /// Loads these modules of the host kernel (and their dependencies)
    /// before the scenario, e.g. `tun`, `bridge`.
    pub fn modules(&mut self, names: &[&str]) -> &mut Self {
        self.modules.extend(names.iter().map(|n| (*n).to_owned()));
        self
    }

    /// Adds this machine's QEMU (`qemu-system-x86_64` on the scenario's
    /// `PATH`) and the firmware it needs for nested `-M microvm` guests.
    pub fn nested_qemu(&mut self) -> Result<&mut Self> {
        let qemu = which("qemu-system-x86_64")?;
        self.binary("qemu-system-x86_64", &qemu);
        for name in NESTED_QEMU_DATA {
            let source = Path::new("/usr/share/qemu").join(name);
            if source.exists() {
                self.system_file(&format!("/usr/share/qemu/{name}"), &source);
            }
        }
        Ok(self)
    }

    /// Sets the scenario: a busybox `sh` script run as root in
    /// `$STRATUS_ROOT`; its exit status becomes [`Outcome::exit_code`].
    pub fn scenario(&mut self, script: &str) -> &mut Self {
        self.scenario = script.to_owned();
        self
    }

    /// Uses this `stratus-case` binary (integration tests pass the one cargo
    /// built for them) instead of finding or building one.
    pub fn case_runner(&mut self, path: &Path) -> &mut Self {
        self.case_runner = Some(path.to_path_buf());
        self
    }

    fn case_bin(&self) -> Result<PathBuf> {
        match &self.case_runner {
            Some(path) => Ok(path.clone()),
            None => case_binary(),
        }
    }

    /// Sets the hard time limit for the whole run (default 20 minutes).
    pub fn timeout(&mut self, timeout: Duration) -> &mut Self {
        self.timeout = timeout;
        self
    }

    /// Sets the host's memory (default 2048 MiB).
    pub fn memory_mib(&mut self, mib: u32) -> &mut Self {
        self.memory_mib = mib;
        self
    }

    /// The serial log's path for this host.
    pub fn log_path(&self) -> PathBuf {
        cache::root()
            .join("logs")
            .join(format!("{}.log", self.name))
    }

    /// Runs the scenario, in the virtual host or directly (see [`mode`]).
    pub fn run(&self) -> Result<Outcome> {
        match mode() {
            Mode::Virtual => self.run_virtual(),
            Mode::Direct => self.run_direct(),
        }
    }

    fn run_virtual(&self) -> Result<Outcome> {
        let kernel = Kernel::fetch(kernel::CLOUD_6_12)?;
        let tmp = TempDir::new("stratus-vhost")?;
        let build_start = Instant::now();
        let initrd = tmp.path().join("host-initrd.cpio");
        self.initramfs(&kernel)?.write_to(&initrd)?;
        let disk_files: Vec<(String, PathBuf)> = self
            .files
            .iter()
            .filter(|f| f.on_disk)
            .map(|f| (f.rel.clone(), f.source.clone()))
            .collect();
        let disk = tmp.path().join("data.ext4");
        if !disk_files.is_empty() {
            payload::build_disk(&disk_files, &tmp.path().join("disk-root"), &disk)?;
        }
        crate::note(&format!(
            "virtual host `{}` ({}) prepared in {:.1} s; booting under QEMU/TCG",
            self.name,
            hostcaps::detect(),
            build_start.elapsed().as_secs_f64()
        ));

        let qemu = || {
            let mut qemu = Command::new("qemu-system-x86_64");
            qemu.args(["-accel", "tcg,thread=multi", "-cpu", "EPYC,+svm,+npt"])
                .args([
                    "-smp",
                    &self.cpus.to_string(),
                    "-m",
                    &self.memory_mib.to_string(),
                ])
                .args([
                    "-nodefaults",
                    "-no-user-config",
                    "-display",
                    "none",
                    "-monitor",
                    "none",
                ])
                .args(["-serial", "stdio", "-no-reboot"])
                .arg("-kernel")
                .arg(kernel.vmlinuz())
                .arg("-initrd")
                .arg(&initrd)
                .args(["-append", "console=ttyS0 panic=-1 quiet"]);
            if !disk_files.is_empty() {
                qemu.arg("-drive").arg(format!(
                    "file={},if=virtio,format=raw,readonly=on",
                    disk.display()
                ));
            }
            qemu
        };
        self.finish(Mode::Virtual, qemu, "vhost")
    }

    /// Everything the host boots from: busybox, init, modules, payload.
    fn initramfs(&self, kernel: &Kernel) -> Result<Archive> {
        let mut archive = images::busybox_initramfs(INIT)?;
        let mut wanted: Vec<&str> = KVM_MODULES.to_vec();
        wanted.extend(self.modules.iter().map(String::as_str));
        if self.files.iter().any(|f| f.on_disk) {
            wanted.push("virtio_blk");
            archive.bytes("stratus/.has-disk", "", 0o644);
        }
        let mut order = String::new();
        for module in kernel.modules_with_deps(&wanted)? {
            archive.file(&format!("stratus/modules/{}.ko", module.name), &module.file)?;
            order.push_str(&module.name);
            order.push('\n');
        }
        archive.bytes("stratus/modules.order", order, 0o644);
        if self.guests_on_one_cpu {
            // The affinity mask of the last CPU, for /init's `taskset`.
            let mask = format!("{:x}\n", 1u64 << (self.cpus.clamp(1, 64) - 1));
            archive.bytes("stratus/scenario-cpu-mask", mask, 0o644);
        }
        for (name, path) in self
            .binaries
            .iter()
            .chain([&("stratus-case".to_owned(), self.case_bin()?)])
        {
            payload::add_binary(&mut archive, &format!("stratus/bin/{name}"), path)?;
        }
        for file in &self.files {
            let dest = format!("stratus/{}", file.rel);
            if file.on_disk {
                archive.symlink(&dest, &format!("{DISK_MOUNT}/{}", file.rel));
            } else {
                archive.file(&dest, &file.source)?;
            }
        }
        for (path, source) in &self.system_files {
            archive.file(path, source)?;
        }
        archive.bytes("stratus/scenario.sh", self.scenario.as_str(), 0o755);
        Ok(archive)
    }

    /// Direct mode: the same layout as symlinks in a temporary
    /// `$STRATUS_ROOT`, and the scenario run by this machine's `sh`.
    fn run_direct(&self) -> Result<Outcome> {
        crate::note(&format!(
            "{}: running scenario `{}` directly on this machine",
            hostcaps::detect(),
            self.name
        ));
        let tmp = TempDir::new("stratus-direct")?;
        let root = tmp.path();
        let link = |rel: &str, source: &Path| -> Result<()> {
            let dest = root.join(rel);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(Error::io("create", parent))?;
            }
            let source = fs::canonicalize(source).map_err(Error::io("resolve", source))?;
            symlink(&source, &dest).map_err(Error::io("link", &dest))
        };
        for (name, path) in self
            .binaries
            .iter()
            .chain([&("stratus-case".to_owned(), self.case_bin()?)])
        {
            link(&format!("bin/{name}"), path)?;
        }
        for file in &self.files {
            link(&file.rel, &file.source)?;
        }
        let script = root.join("scenario.sh");
        fs::write(&script, &self.scenario).map_err(Error::io("write", &script))?;
        let path = format!(
            "{}:{}",
            root.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        // The same wrapper as the host's init, so the outcome parses alike;
        // modules come from this machine's own kernel.
        let modprobe: String = self
            .modules
            .iter()
            .map(|m| format!("modprobe {m}; "))
            .collect();
        let wrapper = format!(
            "{modprobe}echo '{READY_MARKER} kvm=yes'; sh scenario.sh; echo \"{EXIT_MARKER}$?\""
        );
        let sh = || {
            let mut sh = Command::new("sh");
            sh.args(["-c", &wrapper])
                .current_dir(root)
                .env("STRATUS_ROOT", root)
                .env("PATH", &path);
            sh
        };
        self.finish(Mode::Direct, sh, "direct")
    }

    /// Runs the machine (`command` builds a fresh one per attempt) and
    /// parses the outcome. A virtual host that crashes or hangs before it
    /// is ready is booted again: the scenario has not started, so nothing
    /// under test is retried. (Under multi-threaded TCG the host kernel
    /// occasionally dies patching its own code while booting; seen as an
    /// `int3` oops in `sched_clock_cpu`.)
    fn finish(&self, mode: Mode, command: impl Fn() -> Command, tag: &str) -> Result<Outcome> {
        let log = self.log_path();
        if let Some(logs) = log.parent() {
            fs::create_dir_all(logs).map_err(Error::io("create", logs))?;
        }
        let attempts = if mode == Mode::Virtual {
            HOST_BOOT_ATTEMPTS
        } else {
            1
        };
        let limits = console::Limits {
            total: self.timeout,
            ready: Some((READY_MARKER, HOST_READY_WITHIN)),
        };
        let mut host_deaths_mid_scenario = 0;
        for attempt in 1..=attempts {
            let start = Instant::now();
            let retry = match console::run(command(), tag, limits, &log, self.echo) {
                Ok(transcript)
                    if transcript
                        .lines
                        .iter()
                        .any(|l| l.text.contains(READY_MARKER)) =>
                {
                    let finished = transcript
                        .lines
                        .iter()
                        .any(|l| l.text.contains(EXIT_MARKER));
                    // The machine itself died while the scenario ran: no
                    // exit line, yet QEMU ended on its own (not our time
                    // limit). A VMM under test that crashes cannot do that
                    // (its case records the crash and the scenario goes
                    // on), so this is the virtual host's kernel dying under
                    // TCG. Run the whole scenario once more, keeping the log.
                    if finished
                        || mode != Mode::Virtual
                        || host_deaths_mid_scenario >= MAX_HOST_DEATHS_MID_SCENARIO
                        || attempt == attempts
                    {
                        return self.outcome(mode, transcript, start, log);
                    }
                    host_deaths_mid_scenario += 1;
                    Error::NoScenarioResult {
                        status: transcript.status.to_string(),
                        log: log.clone(),
                    }
                }
                Ok(transcript) => Error::NoScenarioResult {
                    status: transcript.status.to_string(),
                    log: log.clone(),
                },
                Err(err @ Error::NotReady { .. }) => err,
                Err(err) => return Err(err),
            };
            if attempt == attempts {
                return Err(retry);
            }
            let kept = log.with_extension(format!("failed-boot-{attempt}.log"));
            let _ = fs::rename(&log, &kept);
            crate::note(&format!(
                "virtual host died ({retry}); booting it again (log kept as {})",
                kept.display()
            ));
        }
        unreachable!("the last attempt returns")
    }

    fn outcome(
        &self,
        mode: Mode,
        transcript: console::Transcript,
        start: Instant,
        log: PathBuf,
    ) -> Result<Outcome> {
        let elapsed = start.elapsed();
        let mut host_ready = None;
        let mut kvm = None;
        let mut exit_code = None;
        for line in &transcript.lines {
            if let Some(rest) = line.text.split(READY_MARKER).nth(1) {
                host_ready = Some(line.at.duration_since(start));
                kvm = Some(rest.contains("kvm=yes"));
            }
            if let Some(code) = line.text.split(EXIT_MARKER).nth(1) {
                exit_code = code.trim().parse().ok();
            }
        }
        let exit_code = exit_code.ok_or_else(|| Error::NoScenarioResult {
            status: transcript.status.to_string(),
            log: log.clone(),
        })?;
        crate::note(&format!(
            "scenario `{}` exited {exit_code}; host ready after {}, total {:.1} s; log {}",
            self.name,
            host_ready.map_or("-".to_owned(), |d| format!("{:.1} s", d.as_secs_f64())),
            elapsed.as_secs_f64(),
            log.display()
        ));
        Ok(Outcome {
            mode,
            exit_code,
            lines: transcript.lines.into_iter().map(|l| l.text).collect(),
            log,
            host_ready,
            kvm,
            elapsed,
        })
    }
}

/// The `stratus-case` runner: `$STRATUS_CASE_BIN`, else built with cargo.
pub fn case_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("STRATUS_CASE_BIN") {
        return Ok(PathBuf::from(path));
    }
    crate::workspace::workspace_binary("stratus-tests", "stratus-case", false)
}

/// Finds `program` on this machine's `PATH` (to put it into the host).
pub fn which(program: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| Error::Spawn {
            program: program.to_owned(),
            source: std::io::ErrorKind::NotFound.into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn missing() -> Result<()> {
        Err(Error::MissingPackages {
            packages: vec!["qemu-system-x86".into()],
            reason: "not root".into(),
        })
    }

    #[test]
    fn a_host_that_dies_before_ready_is_booted_again() {
        let attempts = std::cell::Cell::new(0);
        let machine = || {
            attempts.set(attempts.get() + 1);
            let script = if attempts.get() == 1 {
                "echo 'Kernel panic - not syncing'".to_owned()
            } else {
                format!("echo '{READY_MARKER} kvm=yes'; echo '{EXIT_MARKER}7'")
            };
            let mut sh = Command::new("sh");
            sh.args(["-c", &script]);
            sh
        };
        let mut host = VirtualHost::new("unit-test-retry");
        host.echo = false;
        let outcome = host.finish(Mode::Virtual, machine, "t").unwrap();
        assert_eq!(attempts.get(), 2);
        assert_eq!(outcome.exit_code, 7);
        assert_eq!(outcome.kvm, Some(true));
        let _ = fs::remove_file(host.log_path());
        let _ = fs::remove_file(host.log_path().with_extension("failed-boot-1.log"));
    }

    #[test]
    fn a_host_that_dies_mid_scenario_is_run_again_only_once() {
        let attempts = std::cell::Cell::new(0);
        let machine = || {
            attempts.set(attempts.get() + 1);
            let mut sh = Command::new("sh");
            sh.args([
                "-c",
                &format!("echo '{READY_MARKER} kvm=yes'; echo crashed"),
            ]);
            sh
        };
        let mut host = VirtualHost::new("unit-test-no-retry");
        host.echo = false;
        let err = host.finish(Mode::Virtual, machine, "t").unwrap_err();
        assert!(matches!(err, Error::NoScenarioResult { .. }), "{err}");
        assert_eq!(attempts.get(), 1 + MAX_HOST_DEATHS_MID_SCENARIO);
        let _ = fs::remove_file(host.log_path());
        for n in 1..=MAX_HOST_DEATHS_MID_SCENARIO {
            let _ = fs::remove_file(
                host.log_path()
                    .with_extension(format!("failed-boot-{n}.log")),
            );
        }
    }

    #[test]
    fn a_scenario_that_finished_is_never_retried() {
        let attempts = std::cell::Cell::new(0);
        let machine = || {
            attempts.set(attempts.get() + 1);
            let mut sh = Command::new("sh");
            sh.args([
                "-c",
                &format!("echo '{READY_MARKER} kvm=yes'; echo '{EXIT_MARKER}1'"),
            ]);
            sh
        };
        let mut host = VirtualHost::new("unit-test-finished");
        host.echo = false;
        let outcome = host.finish(Mode::Virtual, machine, "t").unwrap();
        assert_eq!(outcome.exit_code, 1);
        assert_eq!(attempts.get(), 1);
        let _ = fs::remove_file(host.log_path());
    }

    #[test]
    fn missing_qemu_skips_outside_ci_and_fails_in_ci() {
        assert!(matches!(decide_tools(missing(), false, false), Ok(false)));
        assert!(decide_tools(missing(), false, true).is_err());
        assert!(matches!(decide_tools(Ok(()), true, true), Ok(true)));
        // QEMU is there but another tool is missing: never a silent skip.
        assert!(decide_tools(missing(), true, false).is_err());
    }
}
