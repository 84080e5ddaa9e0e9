//! The running VMM: the event loop and everything it owns once the VM is
//! built — vCPU threads, device threads, the API inbox — and how the VM's
//! life ends.
//!
//! - `mod.rs` (here): [`Vmm`], the event loop and shutdown;
//! - `control.rs`: API requests (pause/resume, actions, drives, console);
//! - `metrics.rs`: the `GET /metrics` snapshot and its renderings.
//!
//! The event loop runs on the thread that built the VM. It owns the VM
//! exclusively: API requests reach it as messages (see [`crate::api`]), so
//! nothing else ever touches vCPUs or devices' control paths.

mod control;
mod metrics;

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use kvm_bindings::kvm_clock_data;
use kvm_ioctls::VmFd;
use stratus_devices::legacy::i8042::I8042;
use stratus_devices::legacy::power_button::PowerButton;
use stratus_devices::legacy::serial::SerialDevice;
use stratus_devices::power::{PowerRequest, PowerSignal};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::timerfd::TimerFd;

pub use metrics::{DeviceMetrics, MetricsSnapshot, RuleHitMetrics, VcpuMetrics};

use crate::api::{ApiInbox, ApiServer, VmState};
use crate::coalesced::CoalescedRing;
use crate::config::VmConfig;
use crate::console::{ConsoleRing, StdinToSerial};
use crate::device_manager::DeviceManager;
use crate::device_thread::DeviceThread;
use crate::outcome::VmOutcome;
use crate::vcpu::{FirstRun, VcpuHandle, VcpuStop};

/// Errors of the running VMM.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The event loop failed.
    #[error("event loop: {0}")]
    EventLoop(event_manager::Error),
}

/// What the VM was built with, handed to the event loop.
#[derive(Debug)]
pub struct VmParts {
    /// The VM; kept open for the vCPU fds and the clock.
    pub vm_fd: VmFd,
    /// Guest memory; mapped as long as the VM lives.
    pub mem: GuestMemoryMmap,
    /// Running vCPU threads.
    pub vcpus: Vec<VcpuHandle>,
    /// Where vCPU threads report a stop.
    pub vcpu_stops: Receiver<(u8, VcpuStop)>,
    /// Signalled with each such report.
    pub vcpu_stopped: Arc<EventFd>,
    /// The virtio devices.
    pub devices: DeviceManager,
    /// Their running threads.
    pub device_threads: Vec<DeviceThread>,
    /// COM1.
    pub serial: Arc<Mutex<SerialDevice>>,
    /// The last console bytes.
    pub console: Arc<Mutex<ConsoleRing>>,
    /// Whether host stdin feeds COM1.
    pub feed_stdin: bool,
    /// The coalesced-I/O ring, when KVM has one.
    pub coalesced: Option<Arc<CoalescedRing>>,
    /// Guest power requests (ACPI, i8042).
    pub power: Arc<PowerSignal>,
    /// The keyboard controller (Ctrl-Alt-Del).
    pub i8042: Arc<Mutex<I8042>>,
    /// The ACPI power button (Shutdown).
    pub power_button: PowerButton,
    /// The effective configuration.
    pub config: VmConfig,
    /// When the VMM process started.
    pub start: Instant,
    /// Set once by the boot timer.
    pub boot_time: Arc<OnceLock<Duration>>,
    /// Set once by the boot vCPU before its first `KVM_RUN`.
    pub first_run: Arc<OnceLock<FirstRun>>,
}

/// The event loop's state: the VM and its control.
#[derive(Debug)]
pub struct Vmm {
    parts: VmParts,
    state: VmState,
    /// kvmclock when the VM was paused, restored on resume so the guest's
    /// clock does not jump.
    paused_clock: Option<kvm_clock_data>,
    pauses: u64,
    api: Option<ApiInbox>,
    /// How the VM ended, once it has.
    outcome: Option<VmOutcome>,
    finished: Arc<AtomicBool>,
}

impl Vmm {
    /// Takes ownership of a running VM.
    pub fn new(parts: VmParts, api: Option<ApiInbox>) -> Self {
        Self {
            parts,
            state: VmState::Running,
            paused_clock: None,
            pauses: 0,
            api,
            outcome: None,
            finished: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Runs the event loop until the VM ends, then stops every thread
    /// (vCPUs, devices, the API server) and reports how it ended.
    pub fn run(self, api_server: Option<ApiServer>) -> Result<VmOutcome, RuntimeError> {
        let finished = self.finished.clone();
        let coalesced = self.parts.coalesced.clone();
        let stdin = self
            .parts
            .feed_stdin
            .then(|| StdinToSerial::new(self.parts.serial.clone()));
        let vmm = Arc::new(Mutex::new(self));
        let mut manager: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>> =
            EventManager::new().map_err(RuntimeError::EventLoop)?;
        manager.add_subscriber(vmm.clone());
        if let Some(ring) = coalesced {
            match RingDrainer::new(ring) {
                Ok(drainer) => {
                    manager.add_subscriber(Arc::new(Mutex::new(drainer)));
                }
                Err(e) => log::warn!("no periodic drain of the coalesced ring: {e}"),
            }
        }
        if let Some(stdin) = stdin {
            manager.add_subscriber(Arc::new(Mutex::new(stdin)));
        }
        let mut result = Ok(());
        while !finished.load(Ordering::Acquire) {
            if let Err(e) = manager.run() {
                result = Err(RuntimeError::EventLoop(e));
                break;
            }
        }
        drop(manager);
        // The API goes first: no request may arrive at a VM being torn down.
        if let Some(server) = api_server {
            server.stop();
        }
        let outcome = vmm.lock().unwrap_or_else(|p| p.into_inner()).shut_down();
        result.map(|()| outcome)
    }

    /// Joins every thread and decides the outcome.
    fn shut_down(&mut self) -> VmOutcome {
        if log::log_enabled!(log::Level::Info) {
            for device in self.metrics().devices {
                let counters: Vec<String> = device
                    .counters
                    .iter()
                    .filter(|(_, &n)| n > 0)
                    .map(|(name, n)| format!("{name}={n}"))
                    .collect();
                log::info!("device {}: {}", device.name, counters.join(" "));
            }
        }
        let parts = &mut self.parts;
        for vcpu in &parts.vcpus {
            log::info!("vCPU {} {}", vcpu.index(), vcpu.stats());
        }
        for vcpu in std::mem::take(&mut parts.vcpus) {
            vcpu.exit_and_join();
        }
        for thread in std::mem::take(&mut parts.device_threads) {
            thread.stop_and_join();
        }
        // Console bytes still queued in the ring are output too.
        if let Some(ring) = &parts.coalesced {
            ring.drain();
        }
        parts
            .serial
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .flush();
        use std::io::Write;
        let _ = std::io::stdout().flush();

        // A vCPU failure is reported even if a power request raced with it:
        // the failure is what needs explaining.
        if let Ok((index, stop)) = parts.vcpu_stops.try_recv() {
            return VmOutcome::VcpuFailed { index, stop };
        }
        if let Some(outcome) = self.outcome.take() {
            return outcome;
        }
        match parts.power.pending() {
            Some(PowerRequest::PowerOff) => VmOutcome::PowerOff,
            Some(PowerRequest::Reset) | None => VmOutcome::Reboot,
        }
    }

    fn finish(&mut self) {
        self.finished.store(true, Ordering::Release);
    }
}

impl MutEventSubscriber for Vmm {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let fd = events.fd();
        if self
            .api
            .as_ref()
            .is_some_and(|a| a.event().as_raw_fd() == fd)
        {
            self.serve_api();
        } else if events.event_set().contains(EventSet::IN) {
            // A power request or a vCPU stop: the VM's life is over.
            self.finish();
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let mut fds = vec![
            self.parts.power.event().as_raw_fd(),
            self.parts.vcpu_stopped.as_raw_fd(),
        ];
        if let Some(api) = &self.api {
            fds.push(api.event().as_raw_fd());
        }
        for fd in fds {
            if let Err(e) = ops.add(Events::new_raw(fd, EventSet::IN)) {
                // Without these the VMM could never stop: fail loudly.
                log::error!("cannot watch for VM events: {e}");
                self.finish();
            }
        }
    }
}

/// How long a queued console write may wait when the guest makes no
/// exit, while the guest is writing to its console.
const RING_DRAIN_INTERVAL: Duration = Duration::from_millis(10);
/// The same once the console has been quiet for [`RING_QUIET_DRAINS`]
/// drains: an idle VMM wakes 4 times a second, not 100. Each wake-up
/// takes the host CPU from whatever runs there, and on a nested host it
/// also forces the running guest out (a VM exit), which slowed a booting
/// neighbour to half speed with a few idle VMMs beside it. A write
/// found by a slow drain switches back at once, so only the first
/// burst after a quiet spell waits longer.
const RING_IDLE_INTERVAL: Duration = Duration::from_millis(250);
/// Empty drains in a row (half a second at the fast pace) after which
/// the drainer slows down.
const RING_QUIET_DRAINS: u32 = 50;

/// How often the drainer runs: fast while the guest writes, slow when it
/// has been quiet for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DrainPace {
    fast: bool,
    /// Empty drains in a row.
    quiet: u32,
}

impl DrainPace {
    const START: DrainPace = DrainPace {
        fast: true,
        quiet: 0,
    };

    /// Notes a drain that applied `applied` writes; the new interval if
    /// the pace changes.
    fn after_drain(&mut self, applied: u64) -> Option<Duration> {
        if applied > 0 {
            self.quiet = 0;
            if !self.fast {
                self.fast = true;
                return Some(RING_DRAIN_INTERVAL);
            }
            return None;
        }
        self.quiet = self.quiet.saturating_add(1);
        if self.fast && self.quiet >= RING_QUIET_DRAINS {
            self.fast = false;
            return Some(RING_IDLE_INTERVAL);
        }
        None
    }
}

/// Drains the coalesced ring periodically from the event loop, for guests
/// halted while waiting for a transmit interrupt that a queued write raises.
struct RingDrainer {
    ring: Arc<CoalescedRing>,
    timer: TimerFd,
    pace: DrainPace,
}

impl RingDrainer {
    fn new(ring: Arc<CoalescedRing>) -> std::io::Result<Self> {
        let mut timer = TimerFd::new()?;
        timer.reset(RING_DRAIN_INTERVAL, Some(RING_DRAIN_INTERVAL))?;
        Ok(Self {
            ring,
            timer,
            pace: DrainPace::START,
        })
    }
}

impl MutEventSubscriber for RingDrainer {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.timer.wait();
        let applied = self.ring.drain();
        if let Some(interval) = self.pace.after_drain(applied) {
            if let Err(e) = self.timer.reset(interval, Some(interval)) {
                log::warn!("cannot change the coalesced-ring drain interval: {e}");
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.timer, EventSet::IN)) {
            log::warn!("cannot schedule coalesced-ring drains: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drain_slows_down_when_the_console_is_quiet_and_speeds_up_on_a_write() {
        let mut pace = DrainPace::START;
        // Writes keep it fast.
        assert_eq!(pace.after_drain(3), None);
        // Quiet: slow after RING_QUIET_DRAINS empty drains, not before.
        for _ in 1..RING_QUIET_DRAINS {
            assert_eq!(pace.after_drain(0), None);
        }
        assert_eq!(pace.after_drain(0), Some(RING_IDLE_INTERVAL));
        assert_eq!(pace.after_drain(0), None);
        // A write found by a slow drain: fast again at once.
        assert_eq!(pace.after_drain(1), Some(RING_DRAIN_INTERVAL));
        assert_eq!(pace.after_drain(1), None);
        // And a write resets the quiet count.
        for _ in 1..RING_QUIET_DRAINS {
            assert_eq!(pace.after_drain(0), None);
        }
        assert_eq!(pace.after_drain(2), None);
        assert_eq!(pace.after_drain(0), None);
    }
}
