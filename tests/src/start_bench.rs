//! `cargo xtask bench start`: how long stratus-vmm takes from process
//! start to its API socket and to the boot vCPU's first `KVM_RUN`, in wall
//! and CPU time, on this machine's own `/dev/kvm` (no virtual host: the
//! guest never needs to boot, only to be entered).
//!
//! The VMM reports both moments itself at `STRATUS_LOG=info`; each run is
//! killed as soon as the second line arrives. Firecracker's published bar
//! is "starts (up to API socket availability) within 8 CPU ms".

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::error::{Error, Result};

/// How long one run may take to reach its first `KVM_RUN`.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// One guest kernel to start.
#[derive(Debug, Clone)]
pub struct StartKernel {
    /// Label in the report.
    pub label: String,
    /// The kernel image.
    pub kernel: PathBuf,
    /// Its initrd.
    pub initrd: PathBuf,
}

/// A copy of `path` in a memfd sealed against any change, as a host agent
/// would hand a VMM an image it keeps in memory: the VMM maps such an
/// image instead of copying it (`stratus_vmm::image_mapping`). Returns the
/// memfd (keep it open: children inherit it) and the path a child process
/// opens it by.
pub fn sealed_copy(path: &Path) -> Result<(std::fs::File, PathBuf)> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let name = c"stratus-start-bench-image";
    // SAFETY: memfd_create with a valid C string; no MFD_CLOEXEC, so the
    // VMMs this process starts inherit it.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(Error::io("memfd_create", path)(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: `fd` was just created and nothing else owns it.
    let mut memfd = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut source = std::fs::File::open(path).map_err(Error::io("open", path))?;
    std::io::copy(&mut source, &mut memfd).map_err(Error::io("copy", path))?;
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: F_ADD_SEALS on a memfd this function owns.
    if unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(Error::io("seal", path)(std::io::Error::last_os_error()));
    }
    let child_path = PathBuf::from(format!("/proc/self/fd/{}", memfd.as_raw_fd()));
    Ok((memfd, child_path))
}

/// One run's figures, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StartRun {
    /// Process start to the API socket, wall.
    pub api_wall_ms: f64,
    /// … and the process's CPU time by then.
    pub api_cpu_ms: f64,
    /// Process start to the first `KVM_RUN`, wall.
    pub run_wall_ms: f64,
    /// … and the process's CPU time by then.
    pub run_cpu_ms: f64,
}

/// Parses `… after 12.345 ms (6.789 CPU-ms)` after `marker`.
fn parse_times(line: &str, marker: &str) -> Option<(f64, f64)> {
    let rest = line.split(marker).nth(1)?;
    let mut words = rest.split_whitespace();
    let wall = words.next()?.parse().ok()?;
    let cpu = words.nth(1)?.trim_start_matches('(').parse().ok()?;
    Some((wall, cpu))
}

/// Starts the VMM once and returns its figures.
pub fn run_once(vmm: &Path, kernel: &StartKernel, socket: &Path) -> Result<StartRun> {
    let _ = std::fs::remove_file(socket);
    let mut child = Command::new(vmm)
        .arg("--kernel")
        .arg(&kernel.kernel)
        .arg("--initrd")
        .arg(&kernel.initrd)
        .args(["--memory", "128", "--vcpus", "1", "--serial", "off"])
        .arg("--api-sock")
        .arg(socket)
        .env("STRATUS_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Error::io("spawn", vmm))?;
    let stderr = child.stderr.take().ok_or_else(|| Error::BadInput {
        path: vmm.to_path_buf(),
        problem: "no stderr pipe".into(),
    })?;
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut api = None;
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            if let Some(t) = parse_times(&line, "API socket ready after ") {
                api = Some(t);
            }
            if let Some(t) = parse_times(&line, "first KVM_RUN after ") {
                let _ = tx.send((api, Some(t)));
                return;
            }
        }
        let _ = tx.send((api, None));
    });
    let result = rx.recv_timeout(RUN_TIMEOUT);
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    let _ = std::fs::remove_file(socket);
    match result {
        Ok((Some((api_wall_ms, api_cpu_ms)), Some((run_wall_ms, run_cpu_ms)))) => Ok(StartRun {
            api_wall_ms,
            api_cpu_ms,
            run_wall_ms,
            run_cpu_ms,
        }),
        _ => Err(Error::BadInput {
            path: vmm.to_path_buf(),
            problem: format!(
                "{}: no 'API socket ready' and 'first KVM_RUN' lines within {RUN_TIMEOUT:?}",
                kernel.label
            ),
        }),
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The report: per-run figures and medians per kernel.
pub fn render(results: &[(StartKernel, Vec<StartRun>)]) -> String {
    let mut out = String::new();
    for (kernel, runs) in results {
        out.push_str(&format!(
            "{} ({}), {} runs, 1 vCPU, 128 MiB, --api-sock, --serial off\n",
            kernel.label,
            kernel.kernel.display(),
            runs.len()
        ));
        out.push_str("  run  api_wall_ms  api_cpu_ms  first_run_wall_ms  first_run_cpu_ms\n");
        for (i, r) in runs.iter().enumerate() {
            out.push_str(&format!(
                "  {:>3}  {:>11.3}  {:>10.3}  {:>17.3}  {:>16.3}\n",
                i + 1,
                r.api_wall_ms,
                r.api_cpu_ms,
                r.run_wall_ms,
                r.run_cpu_ms
            ));
        }
        let col = |f: fn(&StartRun) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
        out.push_str(&format!(
            "  median: API socket {:.3} ms wall / {:.3} CPU-ms; first KVM_RUN {:.3} ms wall / {:.3} CPU-ms\n\n",
            col(|r| r.api_wall_ms),
            col(|r| r.api_cpu_ms),
            col(|r| r.run_wall_ms),
            col(|r| r.run_cpu_ms)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_vmm_lines() {
        assert_eq!(
            parse_times(
                "stratus-vmm: info: first KVM_RUN after 12.500 ms (6.250 CPU-ms)",
                "first KVM_RUN after "
            ),
            Some((12.5, 6.25))
        );
        assert_eq!(parse_times("nothing", "first KVM_RUN after "), None);
    }

    #[test]
    fn report_has_runs_and_medians() {
        let run = |w| StartRun {
            api_wall_ms: 1.0,
            api_cpu_ms: 0.5,
            run_wall_ms: w,
            run_cpu_ms: w / 2.0,
        };
        let kernel = StartKernel {
            label: "tiny".into(),
            kernel: "/k".into(),
            initrd: "/i".into(),
        };
        let text = render(&[(kernel, vec![run(10.0), run(30.0), run(20.0)])]);
        assert!(
            text.contains("first KVM_RUN 20.000 ms wall / 10.000 CPU-ms"),
            "{text}"
        );
        assert!(text.contains("    3"), "{text}");
    }
}
