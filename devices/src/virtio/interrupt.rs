//! Raising virtio interrupts: the status bits the driver reads plus an
//! `EventFd` the VMM registers as an irqfd.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// InterruptStatus bit: a device used buffers in one of its queues.
pub const VIRTIO_MMIO_INT_VRING: u32 = 1;
/// InterruptStatus bit: the device configuration changed (also raised when
/// the device sets DEVICE_NEEDS_RESET).
pub const VIRTIO_MMIO_INT_CONFIG: u32 = 2;

/// Shared by the transport (vCPU threads read and acknowledge the status)
/// and the device (its event-handling thread raises it); cloning is cheap.
/// Everything is atomic, so the transport reads it without the device lock.
#[derive(Debug, Clone)]
pub struct IrqTrigger {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    status: AtomicU32,
    evt: EventFd,
    /// Set by a device that hit an error only a reset can clear; the
    /// transport shows it as DEVICE_NEEDS_RESET in the Status register.
    needs_reset: AtomicBool,
    /// ConfigGeneration: bumped on every device config change, so a driver
    /// reading a multi-word config field can tell it read a torn value.
    config_generation: AtomicU32,
}

impl IrqTrigger {
    /// A trigger with a fresh non-blocking `EventFd`.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                status: AtomicU32::new(0),
                evt: EventFd::new(EFD_NONBLOCK)?,
                needs_reset: AtomicBool::new(false),
                config_generation: AtomicU32::new(0),
            }),
        })
    }

    /// The `EventFd` to register as the device's irqfd.
    pub fn irq_evt(&self) -> &EventFd {
        &self.inner.evt
    }

    /// The InterruptStatus register value.
    pub fn status(&self) -> u32 {
        self.inner.status.load(Ordering::SeqCst)
    }

    /// InterruptACK: clears the acknowledged bits.
    pub fn ack(&self, bits: u32) {
        self.inner.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Clears all bits and the needs-reset flag (device reset).
    pub fn clear(&self) {
        self.inner.status.store(0, Ordering::SeqCst);
        self.inner.needs_reset.store(false, Ordering::SeqCst);
    }

    /// The device cannot go on until the driver resets it: flag it and
    /// raise a configuration-change interrupt (virtio 1.x, 2.1.2).
    pub fn set_needs_reset(&self) {
        if !self.inner.needs_reset.swap(true, Ordering::SeqCst) {
            self.trigger(VIRTIO_MMIO_INT_CONFIG);
        }
    }

    /// Whether [`Self::set_needs_reset`] was called since the last clear.
    pub fn needs_reset(&self) -> bool {
        self.inner.needs_reset.load(Ordering::SeqCst)
    }

    /// The ConfigGeneration register value.
    pub fn config_generation(&self) -> u32 {
        self.inner.config_generation.load(Ordering::SeqCst)
    }

    /// The device's config space changed (link status, capacity): bumps
    /// ConfigGeneration and, if the driver is running the device, raises
    /// a configuration-change interrupt. Callable from any thread.
    pub fn notify_config_change(&self, driver_running: bool) {
        self.inner.config_generation.fetch_add(1, Ordering::SeqCst);
        if driver_running {
            self.trigger(VIRTIO_MMIO_INT_CONFIG);
        }
    }

    /// Sets `bits` in InterruptStatus and signals the irqfd.
    pub fn trigger(&self, bits: u32) {
        // The status must be visible before the guest takes the interrupt.
        self.inner.status.fetch_or(bits, Ordering::SeqCst);
        if let Err(e) = self.inner.evt.write(1) {
            // Only fails if the counter would overflow, which means the
            // interrupt is pending anyway.
            log::warn!("failed to signal virtio interrupt: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_sets_bits_and_signals() {
        let irq = IrqTrigger::new().unwrap();
        irq.trigger(VIRTIO_MMIO_INT_VRING);
        irq.trigger(VIRTIO_MMIO_INT_CONFIG);
        assert_eq!(irq.status(), 3);
        assert_eq!(irq.irq_evt().read().unwrap(), 2);
        irq.ack(VIRTIO_MMIO_INT_VRING);
        assert_eq!(irq.status(), VIRTIO_MMIO_INT_CONFIG);
        irq.clear();
        assert_eq!(irq.status(), 0);
        irq.set_needs_reset();
        irq.set_needs_reset();
        assert!(irq.needs_reset());
        assert_eq!(irq.status(), VIRTIO_MMIO_INT_CONFIG);
        assert_eq!(irq.irq_evt().read().unwrap(), 1);
        irq.clear();
        assert!(!irq.needs_reset());
    }

    #[test]
    fn config_change_bumps_generation_and_interrupts_only_a_running_driver() {
        let irq = IrqTrigger::new().unwrap();
        irq.notify_config_change(false);
        assert_eq!(irq.config_generation(), 1);
        assert_eq!(irq.status(), 0);
        irq.notify_config_change(true);
        assert_eq!(irq.config_generation(), 2);
        assert_eq!(irq.status(), VIRTIO_MMIO_INT_CONFIG);
    }
}
