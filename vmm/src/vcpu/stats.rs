//! Exit counters of one vCPU, by reason.

use std::sync::atomic::{AtomicU64, Ordering};

/// Exit counters of one vCPU, shared with the event loop (metrics) and
/// reported when the VM ends. Relaxed atomics: only their totals matter.
#[derive(Debug, Default)]
pub struct VcpuStats {
    /// Port reads that reached userspace.
    pub pio_reads: AtomicU64,
    /// Port writes that reached userspace.
    pub pio_writes: AtomicU64,
    /// MMIO reads that reached userspace.
    pub mmio_reads: AtomicU64,
    /// MMIO writes that reached userspace.
    pub mmio_writes: AtomicU64,
    /// `KVM_RUN` ended by a signal (a kick to pause, resume or exit).
    pub interrupted: AtomicU64,
    /// Exits that stopped the vCPU (halt, shutdown, failures).
    pub other: AtomicU64,
    /// Writes KVM queued instead of exiting, applied by this vCPU.
    pub coalesced_writes: AtomicU64,
}

impl VcpuStats {
    /// Counts one event.
    pub fn bump(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Calls `out` with each exit reason and its count (coalesced writes
    /// are not exits and are reported by [`Self::coalesced`]).
    pub fn write_exits(&self, out: &mut dyn FnMut(&'static str, u64)) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        out("pio_read", get(&self.pio_reads));
        out("pio_write", get(&self.pio_writes));
        out("mmio_read", get(&self.mmio_reads));
        out("mmio_write", get(&self.mmio_writes));
        out("interrupted", get(&self.interrupted));
        out("other", get(&self.other));
    }

    /// Writes applied from the coalesced ring by this vCPU.
    pub fn coalesced(&self) -> u64 {
        self.coalesced_writes.load(Ordering::Relaxed)
    }
}

impl std::fmt::Display for VcpuStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        write!(
            f,
            "exits: {} port reads, {} port writes, {} MMIO reads, {} MMIO writes, {} interrupted; {} coalesced writes",
            get(&self.pio_reads),
            get(&self.pio_writes),
            get(&self.mmio_reads),
            get(&self.mmio_writes),
            get(&self.interrupted),
            get(&self.coalesced_writes)
        )
    }
}
