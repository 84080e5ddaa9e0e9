//! VMM processes: started in a session of their own (so the agent's
//! death, or a signal to its process group, never reaches them), watched
//! through pidfds (an exit is seen at once, with no polling), and found
//! again after an agent restart by pid *and* start time (a recycled pid
//! is not the VMM).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};

use tokio::io::unix::AsyncFd;

/// Where a VMM process is: its pid and its start time in clock ticks
/// since boot (`/proc/PID/stat` field 22), which together name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessId {
    pub pid: i32,
    pub start_ticks: u64,
}

/// The start time of process `pid`, if it exists.
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces:
    // count fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// Starts `command` in a new session with stdin from /dev/null and
/// stdout and stderr to `log`; returns its identity. The agent does not
/// keep a `Child`: it watches the process through a pidfd like any other,
/// and the process is reaped by init (or the agent's subreaper) if the
/// agent is gone when it exits.
pub fn spawn(mut command: Command, log: &Path) -> io::Result<ProcessId> {
    let out = File::options().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    command.stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: setsid is async-signal-safe and touches only the child's
    // own session; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    let pid = i32::try_from(child.id()).map_err(|_| io::Error::other("pid out of range"))?;
    // The child is reaped by `reap` when its pidfd says it exited.
    drop(child);
    let start_ticks = start_ticks(pid).ok_or_else(|| io::Error::other("the VMM exited at once"))?;
    Ok(ProcessId { pid, start_ticks })
}

/// A pidfd for `id`, if that process (that pid with that start time)
/// still runs.
pub fn open(id: ProcessId) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags, no pointers.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, id.pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: a new descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // Checked after opening: if the pid was reused before, the start time
    // differs; if it is reused after, the pidfd still names ours.
    (start_ticks(id.pid) == Some(id.start_ticks)).then_some(fd)
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
    /// Not the agent's child (adopted after a restart): init reaped it
    /// and the agent cannot know how it ended.
    Unknown,
}

/// Waits until the process behind `pidfd` exits, then reaps it if it is
/// the agent's child.
pub async fn exited(pidfd: OwnedFd) -> Exit {
    // SAFETY: an OwnedFd is a valid open descriptor that stays open, and
    // names the same file, until the AsyncFd that owns it is dropped.
    let Ok(fd) = (unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) })
    else {
        return Exit::Unknown;
    };
    // A pidfd becomes readable when the process exits.
    let _ = fd.readable().await;
    let mut info: libc::siginfo_t = unsafe_zeroed_siginfo();
    // SAFETY: waitid writes into `info`, which is valid; P_PIDFD with the
    // pidfd; WNOHANG so it never blocks (the process has exited).
    let r = unsafe {
        libc::waitid(
            libc::P_PIDFD,
            u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX) as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG,
        )
    };
    if r != 0 {
        // ECHILD: not our child; init reaps it.
        return Exit::Unknown;
    }
    // SAFETY: waitid filled a SIGCHLD siginfo: si_status is valid.
    let status = unsafe { info.si_status() };
    match info.si_code {
        libc::CLD_EXITED => Exit::Code(status),
        libc::CLD_KILLED | libc::CLD_DUMPED => Exit::Signal(status),
        _ => Exit::Unknown,
    }
}

/// A zeroed `siginfo_t` (an all-zero bit pattern is valid for it).
fn unsafe_zeroed_siginfo() -> libc::siginfo_t {
    // SAFETY: siginfo_t is a plain C struct of integers and unions of
    // integers; all zeros is a valid value.
    unsafe { std::mem::zeroed() }
}

/// Sends `signal` to the process if it is still the one `id` names.
pub fn signal(id: ProcessId, signal: i32) -> bool {
    let Some(fd) = open(id) else { return false };
    // SAFETY: pidfd_send_signal with a valid pidfd and no siginfo.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    r == 0
}

/// Kills every process started as `program` with `args` among its
/// arguments (in that order, side by side), waiting up to 5 s for each
/// to be gone; returns how many there were. This finds a VMM the agent
/// started but died before recording: only its command line names it.
pub fn kill_strays(program: &Path, args: &[&str]) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let argv: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        // The program is argv[0]; a script run through its `#!` line has
        // its interpreter there and itself next.
        let program = program.as_os_str().as_encoded_bytes();
        let named = argv.iter().take(2).any(|a| *a == program);
        let wanted: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        if !named
            || !argv
                .windows(wanted.len().max(1))
                .any(|w| w == wanted.as_slice())
        {
            continue;
        }
        let Some(id) = start_ticks(pid).map(|start_ticks| ProcessId { pid, start_ticks }) else {
            continue;
        };
        let Some(fd) = open(id) else { continue };
        if signal(id, libc::SIGKILL) {
            killed += 1;
            let mut poll = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, for the length given; a pidfd
            // polls readable when its process has exited.
            unsafe { libc::poll(&mut poll, 1, 5000) };
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spawned_processes_are_watched_and_reaped() {
        let log =
            std::env::temp_dir().join(format!("stratus-agent-proc-{}.log", std::process::id()));
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo hello; exit 7"]);
        let id = spawn(cmd, &log).unwrap();
        let fd = open(id).expect("pidfd of a fresh child");
        assert_eq!(exited(fd).await, Exit::Code(7));
        assert!(open(id).is_none(), "a reaped process is gone");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "hello\n");
        std::fs::remove_file(&log).unwrap();

        let mut cmd = Command::new("sleep");
        cmd.arg("60");
        let id = spawn(cmd, Path::new("/dev/null")).unwrap();
        // Its own session: its pid is its session id.
        // SAFETY: getsid takes a pid and no pointers.
        assert_eq!(unsafe { libc::getsid(id.pid) }, id.pid);
        // A wrong start time does not name it.
        assert!(open(ProcessId {
            start_ticks: id.start_ticks + 1,
            ..id
        })
        .is_none());
        let fd = open(id).unwrap();
        assert!(signal(id, libc::SIGKILL));
        assert_eq!(exited(fd).await, Exit::Signal(libc::SIGKILL));
    }

    #[tokio::test]
    async fn strays_are_found_by_their_arguments_and_killed() {
        let marker = format!("stray-{}", std::process::id());
        // `sh -c CMD A B`: A and B stay on the shell's command line (as
        // its $0 and $1). The loop keeps the shell itself running.
        let spawn_shell = |args: &[&str]| {
            let mut cmd = Command::new("/bin/sh");
            cmd.args(["-c", "while :; do sleep 1; done"]).args(args);
            spawn(cmd, Path::new("/dev/null")).unwrap()
        };
        let stray = spawn_shell(&["--id", &marker]);
        let other = spawn_shell(&["--id", &format!("{marker}-other")]);
        let (stray_fd, other_fd) = (open(stray).unwrap(), open(other).unwrap());
        assert_eq!(kill_strays(Path::new("/bin/sh"), &["--id", &marker]), 1);
        assert_eq!(exited(stray_fd).await, Exit::Signal(libc::SIGKILL));
        // Another id, or the same arguments under another program, is not it.
        assert_eq!(kill_strays(Path::new("/bin/sh"), &["--id", &marker]), 0);
        assert_eq!(
            kill_strays(
                Path::new("/bin/bash"),
                &["--id", &format!("{marker}-other")]
            ),
            0
        );
        assert!(open(other).is_some());
        assert!(signal(other, libc::SIGKILL));
        assert_eq!(exited(other_fd).await, Exit::Signal(libc::SIGKILL));
    }
}
