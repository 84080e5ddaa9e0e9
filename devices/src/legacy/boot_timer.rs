//! The boot-complete signal: the guest writes a magic byte to a fixed MMIO
//! address when it considers itself booted, and the VMM reports how long
//! that took since the VMM process started.
//!
//! From a busybox shell: `devmem 0xd0000000 8 123`.

use std::time::{Duration, Instant};

use crate::bus::BusDevice;

/// Guest-physical address of the signal register (inside the MMIO hole).
pub const BOOT_TIMER_ADDR: u64 = 0xd000_0000;
/// The register window is one page.
pub const BOOT_TIMER_LEN: u64 = 0x1000;
/// The byte that means "boot complete".
pub const BOOT_COMPLETE_MAGIC: u8 = 123;

/// Records the first boot-complete signal and reports it.
pub struct BootTimer {
    start: Instant,
    completed_after: Option<Duration>,
    report: Box<dyn FnMut(Duration) + Send>,
}

impl std::fmt::Debug for BootTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootTimer")
            .field("completed_after", &self.completed_after)
            .finish()
    }
}

impl BootTimer {
    /// A timer counting from `start`, calling `report` once at the first
    /// boot-complete signal.
    pub fn new(start: Instant, report: Box<dyn FnMut(Duration) + Send>) -> Self {
        Self {
            start,
            completed_after: None,
            report,
        }
    }

    /// Time from start to the first signal, once the guest has sent it.
    pub fn completed_after(&self) -> Option<Duration> {
        self.completed_after
    }
}

impl BusDevice for BootTimer {
    fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        if offset != 0 || data.first() != Some(&BOOT_COMPLETE_MAGIC) {
            return;
        }
        // Later signals (a guest that writes again) are not boot time.
        if self.completed_after.is_none() {
            let elapsed = self.start.elapsed();
            self.completed_after = Some(elapsed);
            (self.report)(elapsed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn reports_the_first_magic_write_once() {
        let reports = Arc::new(Mutex::new(Vec::new()));
        let sink = reports.clone();
        let mut timer = BootTimer::new(
            Instant::now(),
            Box::new(move |d| sink.lock().unwrap().push(d)),
        );
        timer.write(BOOT_TIMER_ADDR, 0, &[1]);
        timer.write(BOOT_TIMER_ADDR, 4, &[BOOT_COMPLETE_MAGIC]);
        assert!(timer.completed_after().is_none());
        timer.write(BOOT_TIMER_ADDR, 0, &[BOOT_COMPLETE_MAGIC]);
        timer.write(BOOT_TIMER_ADDR, 0, &[BOOT_COMPLETE_MAGIC]);
        assert!(timer.completed_after().is_some());
        assert_eq!(reports.lock().unwrap().len(), 1);
    }
}
