//! One vCPU: its KVM file descriptor, its initial state, and the loop that
//! runs `KVM_RUN` and sends port-I/O and MMIO exits to the buses.
//!
//! - `mod.rs` (here): [`Vcpu`], its setup and one `KVM_RUN` at a time;
//! - `stats.rs`: exit counters by reason;
//! - `thread.rs`: the vCPU's thread, and the handle that kicks it out of
//!   `KVM_RUN` to pause, resume or end it.
//!
//! Each vCPU runs on its own thread. The buses are shared read-only maps;
//! the only lock on this path is the per-device one taken for slow-path
//! register accesses (see `stratus_devices::bus`).

mod stats;
mod thread;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use kvm_bindings::CpuId;
use kvm_ioctls::{VcpuExit, VcpuFd};
use stratus_devices::bus::Bus;
use vm_memory::GuestMemoryMmap;

use crate::arch::regs::{self, EntryMode};
use crate::arch::{cpuid, msr};
use crate::coalesced::CoalescedRing;

pub use stats::VcpuStats;
pub use thread::{process_cpu_time, FirstRun, VcpuControlError, VcpuHandle, VcpuThreadConfig};

/// Errors setting up a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// A KVM ioctl failed while setting initial state.
    #[error("vCPU {index}: {what} failed: {source}")]
    Setup {
        /// Which vCPU.
        index: u8,
        /// Which step.
        what: &'static str,
        /// The KVM error.
        source: kvm_ioctls::Error,
    },
    /// Boot structures could not be written.
    #[error("vCPU {index}: {source}")]
    BootStructures {
        /// Which vCPU.
        index: u8,
        /// What went wrong.
        source: regs::RegsError,
    },
}

/// Why a vCPU stopped running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuStop {
    /// `HLT` reached userspace: only possible without an in-kernel LAPIC.
    Halted,
    /// `KVM_EXIT_SHUTDOWN`: the guest triple-faulted.
    TripleFault,
    /// The CPU refused to enter the guest (invalid state).
    FailEntry {
        /// Hardware reason code.
        reason: u64,
    },
    /// KVM could not emulate something the guest did.
    InternalError,
    /// A platform event KVM reported (shutdown/reset on some hosts).
    SystemEvent {
        /// `KVM_SYSTEM_EVENT_*` type.
        kind: u32,
    },
    /// An exit this VMM does not handle.
    UnexpectedExit(String),
    /// `KVM_RUN` itself failed.
    RunFailed(String),
}

impl std::fmt::Display for VcpuStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VcpuStop::Halted => write!(f, "halted with no in-kernel interrupt controller"),
            VcpuStop::TripleFault => write!(f, "guest triple fault (KVM_EXIT_SHUTDOWN)"),
            VcpuStop::FailEntry { reason } => {
                write!(
                    f,
                    "KVM failed to enter the guest (hardware reason {reason:#x})"
                )
            }
            VcpuStop::InternalError => write!(f, "KVM internal error (emulation failure)"),
            VcpuStop::SystemEvent { kind } => write!(f, "KVM system event {kind}"),
            VcpuStop::UnexpectedExit(what) => write!(f, "unhandled VM exit: {what}"),
            VcpuStop::RunFailed(e) => write!(f, "KVM_RUN failed: {e}"),
        }
    }
}

impl VcpuStop {
    /// Whether the guest (not the host) ended this vCPU abnormally, so its
    /// registers are worth logging.
    pub fn is_guest_crash(&self) -> bool {
        matches!(
            self,
            VcpuStop::TripleFault | VcpuStop::FailEntry { .. } | VcpuStop::InternalError
        )
    }
}

/// A vCPU and the buses its exits go to.
#[derive(Debug)]
pub struct Vcpu {
    index: u8,
    fd: VcpuFd,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    coalesced: Option<Arc<CoalescedRing>>,
    stats: Arc<VcpuStats>,
}

impl Vcpu {
    /// Wraps a created vCPU.
    pub fn new(index: u8, fd: VcpuFd, pio: Arc<Bus>, mmio: Arc<Bus>) -> Self {
        Self {
            index,
            fd,
            pio,
            mmio,
            coalesced: None,
            stats: Arc::default(),
        }
    }

    /// This vCPU's exit counters.
    pub fn stats(&self) -> Arc<VcpuStats> {
        self.stats.clone()
    }

    /// Applies the VM's queued (coalesced) writes before handling each exit,
    /// so exits observe every earlier write.
    pub fn set_coalesced_ring(&mut self, ring: Arc<CoalescedRing>) {
        self.coalesced = Some(ring);
    }

    /// The underlying KVM vCPU, for state a caller sets up itself.
    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    fn fd_mut(&mut self) -> &mut VcpuFd {
        &mut self.fd
    }

    fn setup_err(&self, what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VcpuError + '_ {
        move |source| VcpuError::Setup {
            index: self.index,
            what,
            source,
        }
    }

    /// Gives the vCPU its CPUID, MSRs, FPU, LAPIC and entry registers.
    /// Application processors get the same state but wait for the boot
    /// CPU's INIT/SIPI, which resets their registers.
    pub fn configure(
        &self,
        supported_cpuid: &CpuId,
        vcpu_count: u8,
        mem: &GuestMemoryMmap,
        entry: EntryMode,
    ) -> Result<(), VcpuError> {
        let cpuid = cpuid::for_vcpu(supported_cpuid, self.index, vcpu_count);
        self.fd
            .set_cpuid2(&cpuid)
            .map_err(self.setup_err("KVM_SET_CPUID2"))?;
        self.fd
            .set_msrs(&msr::boot_msrs())
            .map_err(self.setup_err("KVM_SET_MSRS"))?;
        self.fd
            .set_fpu(&regs::boot_fpu())
            .map_err(self.setup_err("KVM_SET_FPU"))?;
        let sregs = self
            .fd
            .get_sregs()
            .map_err(self.setup_err("KVM_GET_SREGS"))?;
        let sregs =
            regs::setup_sregs(mem, entry, sregs).map_err(|source| VcpuError::BootStructures {
                index: self.index,
                source,
            })?;
        self.fd
            .set_sregs(&sregs)
            .map_err(self.setup_err("KVM_SET_SREGS"))?;
        self.fd
            .set_regs(&regs::boot_regs(entry))
            .map_err(self.setup_err("KVM_SET_REGS"))?;
        let mut lapic = self
            .fd
            .get_lapic()
            .map_err(self.setup_err("KVM_GET_LAPIC"))?;
        regs::set_lint(&mut lapic.regs);
        self.fd
            .set_lapic(&lapic)
            .map_err(self.setup_err("KVM_SET_LAPIC"))?;
        Ok(())
    }

    /// Runs the guest until something stops this vCPU for good, ignoring
    /// interruptions (for callers that never kick it).
    pub fn run_until_stop(&mut self) -> VcpuStop {
        loop {
            if let VcpuRun::Stop(stop) = self.run_once() {
                return stop;
            }
        }
    }

    /// The registers that say where a crashed guest was: one line for the
    /// log. A failed read is reported in the line instead.
    pub fn crash_state(&self) -> String {
        let regs = match self.fd.get_regs() {
            Ok(r) => format!(
                "rip={:#x} rsp={:#x} rflags={:#x} rax={:#x}",
                r.rip, r.rsp, r.rflags, r.rax
            ),
            Err(e) => format!("KVM_GET_REGS failed: {e}"),
        };
        let sregs = match self.fd.get_sregs() {
            Ok(s) => format!(
                "cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x} cs={:#x}/dpl{} \
                 idt={:#x}+{:#x} gdt={:#x}+{:#x} tr={:#x} interrupt_bitmap={:x?}",
                s.cr0,
                s.cr2,
                s.cr3,
                s.cr4,
                s.efer,
                s.cs.selector,
                s.cs.dpl,
                s.idt.base,
                s.idt.limit,
                s.gdt.base,
                s.gdt.limit,
                s.tr.base,
                s.interrupt_bitmap
            ),
            Err(e) => format!("KVM_GET_SREGS failed: {e}"),
        };
        let events = match self.fd.get_vcpu_events() {
            Ok(ev) => format!(
                "exception={}/{} nr={} error_code={:#x} nmi_pending={}",
                ev.exception.injected,
                ev.exception.pending,
                ev.exception.nr,
                ev.exception.error_code,
                ev.nmi.pending
            ),
            Err(e) => format!("KVM_GET_VCPU_EVENTS failed: {e}"),
        };
        format!("{regs} {sregs} {events}")
    }

    /// One `KVM_RUN` and the handling of its exit.
    pub fn run_once(&mut self) -> VcpuRun {
        let result = self.fd.run();
        if let Some(ring) = &self.coalesced {
            let applied = ring.drain();
            if applied > 0 {
                self.stats
                    .coalesced_writes
                    .fetch_add(applied, Ordering::Relaxed);
            }
        }
        let stop = match result {
            Ok(exit) => match exit {
                VcpuExit::IoIn(port, data) => {
                    self.stats.bump(&self.stats.pio_reads);
                    if !self.pio.read(u64::from(port), data) {
                        // Nothing there: an ISA bus floats high.
                        data.fill(0xff);
                    }
                    return VcpuRun::Continue;
                }
                VcpuExit::IoOut(port, data) => {
                    self.stats.bump(&self.stats.pio_writes);
                    self.pio.write(u64::from(port), data);
                    return VcpuRun::Continue;
                }
                VcpuExit::MmioRead(addr, data) => {
                    self.stats.bump(&self.stats.mmio_reads);
                    if !self.mmio.read(addr, data) {
                        data.fill(0xff);
                    }
                    return VcpuRun::Continue;
                }
                VcpuExit::MmioWrite(addr, data) => {
                    self.stats.bump(&self.stats.mmio_writes);
                    self.mmio.write(addr, data);
                    return VcpuRun::Continue;
                }
                // A signal (our kick, or `immediate_exit`) ended KVM_RUN.
                VcpuExit::Intr => {
                    self.stats.bump(&self.stats.interrupted);
                    return VcpuRun::Interrupted;
                }
                VcpuExit::Hlt => VcpuStop::Halted,
                VcpuExit::Shutdown => VcpuStop::TripleFault,
                VcpuExit::FailEntry(reason, _cpu) => VcpuStop::FailEntry { reason },
                VcpuExit::InternalError => VcpuStop::InternalError,
                VcpuExit::SystemEvent(kind, _) => VcpuStop::SystemEvent { kind },
                other => VcpuStop::UnexpectedExit(format!("{other:?}")),
            },
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.stats.bump(&self.stats.interrupted);
                return VcpuRun::Interrupted;
            }
            Err(e) => VcpuStop::RunFailed(e.to_string()),
        };
        self.stats.bump(&self.stats.other);
        VcpuRun::Stop(stop)
    }
}

/// What one [`Vcpu::run_once`] came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuRun {
    /// An exit was handled; enter the guest again.
    Continue,
    /// A signal interrupted `KVM_RUN`: look for a command, then go on.
    Interrupted,
    /// The vCPU cannot go on.
    Stop(VcpuStop),
}

impl Vcpu {
    /// This vCPU's index (and APIC id).
    pub fn index(&self) -> u8 {
        self.index
    }
}
