//! A vCPU's thread and the handle the event loop drives it with.
//!
//! The event loop never shares a lock with a running vCPU. It sends a
//! [`Command`] on the vCPU's channel and *kicks* the thread with a
//! real-time signal. The signal makes `KVM_RUN` return `EINTR` if the vCPU
//! is in the guest; if it arrives while the thread is in userspace (handling
//! an exit, or about to enter), the handler sets `kvm_run.immediate_exit`,
//! so the next `KVM_RUN` returns at once instead of entering the guest.
//! Either way the thread looks at its channel before going back in, so no
//! command waits for a guest exit that may never come (a halted guest).
//!
//! A paused vCPU blocks on its channel, outside `KVM_RUN`: the guest makes
//! no progress. Before parking it calls `KVM_KVMCLOCK_CTRL`, so the guest's
//! soft-lockup watchdog knows the stall was the host's.

use std::cell::Cell;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::kvm_run;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use super::{Vcpu, VcpuRun, VcpuStats, VcpuStop};

/// How long a vCPU may take to acknowledge a pause or resume. A kicked
/// vCPU answers within microseconds on hardware; under nested emulation a
/// signal can take much longer to land, so the bound is generous.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// What the event loop asks of a vCPU thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Pause,
    Resume,
    Exit,
}

/// A vCPU thread's acknowledgement of [`Command::Pause`] or
/// [`Command::Resume`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    Paused,
    Resumed,
}

/// Errors driving a vCPU thread.
#[derive(Debug, thiserror::Error)]
pub enum VcpuControlError {
    /// The kick signal's handler could not be installed.
    #[error("cannot install the vCPU kick signal handler: {0}")]
    SignalHandler(vmm_sys_util::errno::Error),
    /// The thread could not be started.
    #[error("cannot start the thread of vCPU {index}: {source}")]
    Spawn {
        /// Which vCPU.
        index: u8,
        /// Why.
        source: std::io::Error,
    },
    /// The thread did not acknowledge a command in time, or is gone.
    #[error("vCPU {index} did not acknowledge {what}")]
    NoReply {
        /// Which vCPU.
        index: u8,
        /// The command.
        what: &'static str,
    },
    /// The kick signal could not be sent.
    #[error("cannot kick vCPU {index}: {source}")]
    Kick {
        /// Which vCPU.
        index: u8,
        /// Why.
        source: vmm_sys_util::errno::Error,
    },
}

/// The signal that kicks a vCPU out of `KVM_RUN`.
fn kick_signal() -> i32 {
    SIGRTMIN()
}

thread_local! {
    /// This thread's `kvm_run` page, for the signal handler; null on
    /// threads that are not vCPUs.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn on_kick(_signal: libc::c_int, _info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // Only async-signal-safe work here: a thread-local read (const-
    // initialized, no destructor, so no lazy allocation) and a store.
    let run = KVM_RUN.with(Cell::get);
    if !run.is_null() {
        // SAFETY: the pointer is this thread's own `kvm_run` mapping, set
        // by the vCPU thread before it first enters KVM_RUN and cleared
        // before the mapping can go away; the handler runs on that thread.
        unsafe { (*run).immediate_exit = 1 };
    }
}

/// Where a vCPU thread reports that its vCPU stopped for good.
#[derive(Debug, Clone)]
pub struct VcpuThreadConfig {
    /// Receives `(index, why)` when the vCPU stops by itself.
    pub stopped: Sender<(u8, VcpuStop)>,
    /// Signalled after each such report, to wake the event loop.
    pub wake: Arc<EventFd>,
    /// When the VMM process started.
    pub start: Instant,
    /// Set by the boot vCPU just before its first `KVM_RUN`.
    pub first_run: Arc<OnceLock<FirstRun>>,
}

/// How long the VMM took from process start to the boot vCPU's first
/// `KVM_RUN`: Firecracker's "VMM start" figure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FirstRun {
    /// Wall time.
    pub wall: Duration,
    /// CPU time of the whole process (every thread) until then.
    pub cpu: Duration,
}

/// CPU time this process (all its threads) has used so far.
pub fn process_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let ret = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if ret != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// The event loop's end of one vCPU thread.
#[derive(Debug)]
pub struct VcpuHandle {
    index: u8,
    stats: Arc<VcpuStats>,
    commands: Sender<Command>,
    replies: Receiver<Reply>,
    thread: Option<JoinHandle<()>>,
}

impl VcpuHandle {
    /// Installs the kick handler (once per process; idempotent).
    pub fn install_kick_handler() -> Result<(), VcpuControlError> {
        register_signal_handler(kick_signal(), on_kick).map_err(VcpuControlError::SignalHandler)
    }

    /// Starts `vcpu` running on a thread of its own.
    pub fn spawn(vcpu: Vcpu, config: VcpuThreadConfig) -> Result<Self, VcpuControlError> {
        let index = vcpu.index();
        let stats = vcpu.stats();
        let (commands, command_rx) = mpsc::channel();
        let (reply_tx, replies) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("vcpu{index}"))
            .spawn(move || vcpu_thread(vcpu, &command_rx, &reply_tx, &config))
            .map_err(|source| VcpuControlError::Spawn { index, source })?;
        Ok(Self {
            index,
            stats,
            commands,
            replies,
            thread: Some(thread),
        })
    }

    /// This vCPU's index.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// This vCPU's exit counters.
    pub fn stats(&self) -> &Arc<VcpuStats> {
        &self.stats
    }

    fn send(&self, command: Command) -> Result<(), VcpuControlError> {
        // A thread that has already ended has nothing to be told.
        if self.commands.send(command).is_err() {
            return Ok(());
        }
        match &self.thread {
            Some(thread) if !thread.is_finished() => {
                thread
                    .kill(kick_signal())
                    .map_err(|source| VcpuControlError::Kick {
                        index: self.index,
                        source,
                    })
            }
            _ => Ok(()),
        }
    }

    fn await_reply(&self, want: Reply, what: &'static str) -> Result<(), VcpuControlError> {
        loop {
            match self.replies.recv_timeout(REPLY_TIMEOUT) {
                Ok(reply) if reply == want => return Ok(()),
                // A stale reply to an earlier command.
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    return Err(VcpuControlError::NoReply {
                        index: self.index,
                        what,
                    })
                }
            }
        }
    }

    /// Asks the vCPU to park; call [`Self::wait_paused`] next. Split in
    /// two so every vCPU of a VM is kicked before any is waited for.
    pub fn request_pause(&self) -> Result<(), VcpuControlError> {
        self.send(Command::Pause)
    }

    /// Waits until the vCPU is parked outside `KVM_RUN`.
    pub fn wait_paused(&self) -> Result<(), VcpuControlError> {
        self.await_reply(Reply::Paused, "pause")
    }

    /// Asks a parked vCPU to run again; call [`Self::wait_resumed`] next.
    pub fn request_resume(&self) -> Result<(), VcpuControlError> {
        self.send(Command::Resume)
    }

    /// Waits until the vCPU has left its parking place.
    pub fn wait_resumed(&self) -> Result<(), VcpuControlError> {
        self.await_reply(Reply::Resumed, "resume")
    }

    /// Ends the thread and waits for it.
    pub fn exit_and_join(mut self) {
        if let Err(e) = self.send(Command::Exit) {
            log::warn!("{e}");
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("vCPU {} thread panicked", self.index);
            }
        }
    }
}

/// The body of a vCPU thread.
fn vcpu_thread(
    mut vcpu: Vcpu,
    commands: &Receiver<Command>,
    replies: &Sender<Reply>,
    config: &VcpuThreadConfig,
) {
    let run: *mut kvm_run = vcpu.fd_mut().get_kvm_run();
    KVM_RUN.with(|cell| cell.set(run));
    if vcpu.index() == 0 {
        let first = FirstRun {
            wall: config.start.elapsed(),
            cpu: process_cpu_time(),
        };
        if config.first_run.set(first).is_ok() {
            log::info!(
                "first KVM_RUN after {:.3} ms ({:.3} CPU-ms)",
                first.wall.as_secs_f64() * 1000.0,
                first.cpu.as_secs_f64() * 1000.0
            );
        }
    }
    loop {
        match vcpu.run_once() {
            VcpuRun::Continue => {}
            VcpuRun::Interrupted => {
                vcpu.fd_mut().set_kvm_immediate_exit(0);
                if serve_commands(&vcpu, commands, replies) == Flow::Exit {
                    break;
                }
            }
            VcpuRun::Stop(stop) => {
                if stop.is_guest_crash() {
                    // The registers are the only post-mortem a triple
                    // fault leaves: where the guest was, and which tables.
                    log::error!("vCPU {} at stop: {}", vcpu.index(), vcpu.crash_state());
                }
                let _ = config.stopped.send((vcpu.index(), stop));
                let _ = config.wake.write(1);
                wait_for_exit(commands, replies);
                break;
            }
        }
    }
    KVM_RUN.with(|cell| cell.set(std::ptr::null_mut()));
}

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Run,
    Exit,
}

/// Handles the commands waiting after a kick; parks while paused.
fn serve_commands(vcpu: &Vcpu, commands: &Receiver<Command>, replies: &Sender<Reply>) -> Flow {
    while let Ok(command) = commands.try_recv() {
        match command {
            Command::Exit => return Flow::Exit,
            Command::Resume => {
                let _ = replies.send(Reply::Resumed);
            }
            Command::Pause => {
                // Fails with EINVAL until the guest enables kvmclock; then
                // there is no clock to warn and nothing to do.
                let _ = vcpu.fd().kvmclock_ctrl();
                let _ = replies.send(Reply::Paused);
                if park(commands, replies) == Flow::Exit {
                    return Flow::Exit;
                }
            }
        }
    }
    Flow::Run
}

/// Blocks until told to resume or exit.
fn park(commands: &Receiver<Command>, replies: &Sender<Reply>) -> Flow {
    loop {
        match commands.recv() {
            Ok(Command::Resume) => {
                let _ = replies.send(Reply::Resumed);
                return Flow::Run;
            }
            Ok(Command::Pause) => {
                let _ = replies.send(Reply::Paused);
            }
            Ok(Command::Exit) | Err(_) => return Flow::Exit,
        }
    }
}

/// A stopped vCPU stays joinable and keeps answering pause and resume (as
/// trivially done) so the event loop never waits on it.
fn wait_for_exit(commands: &Receiver<Command>, replies: &Sender<Reply>) {
    loop {
        match commands.recv() {
            Ok(Command::Pause) => {
                let _ = replies.send(Reply::Paused);
            }
            Ok(Command::Resume) => {
                let _ = replies.send(Reply::Resumed);
            }
            Ok(Command::Exit) | Err(_) => return,
        }
    }
}
