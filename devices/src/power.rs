//! Guest power requests (power-off, reset) travelling from a device model to
//! the VMM's main loop.
//!
//! A device running on a vCPU thread records what the guest asked for and
//! wakes the event loop through an `EventFd`; the first request wins, so a
//! guest that writes "reset" and then "power off" in a race gets one
//! well-defined outcome.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// What the guest asked the platform to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerRequest {
    /// ACPI S5 (soft off).
    PowerOff,
    /// Platform reset: keyboard-controller pulse or the ACPI reset register.
    Reset,
}

impl PowerRequest {
    fn encode(self) -> u8 {
        match self {
            PowerRequest::PowerOff => 1,
            PowerRequest::Reset => 2,
        }
    }

    fn decode(raw: u8) -> Option<Self> {
        match raw {
            1 => Some(PowerRequest::PowerOff),
            2 => Some(PowerRequest::Reset),
            _ => None,
        }
    }
}

/// Shared latch for the first power request of this VM's life.
#[derive(Debug)]
pub struct PowerSignal {
    requested: AtomicU8,
    event: EventFd,
}

impl PowerSignal {
    /// A new latch with its own non-blocking `EventFd`.
    pub fn new() -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            requested: AtomicU8::new(0),
            event: EventFd::new(EFD_NONBLOCK)?,
        }))
    }

    /// Records `request` unless an earlier one is already latched, and wakes
    /// the event loop either way.
    pub fn request(&self, request: PowerRequest) -> std::io::Result<()> {
        let _ = self.requested.compare_exchange(
            0,
            request.encode(),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.event.write(1)
    }

    /// The latched request, if any.
    pub fn pending(&self) -> Option<PowerRequest> {
        PowerRequest::decode(self.requested.load(Ordering::Acquire))
    }

    /// The `EventFd` that becomes readable when a request is made.
    pub fn event(&self) -> &EventFd {
        &self.event
    }
}

/// A `vm_superio::Trigger` that files one fixed power request, so vm-superio
/// devices (the i8042 reset line) can drive a [`PowerSignal`].
#[derive(Debug, Clone)]
pub struct PowerTrigger {
    signal: Arc<PowerSignal>,
    request: PowerRequest,
}

impl PowerTrigger {
    /// A trigger that files `request` on `signal`.
    pub fn new(signal: Arc<PowerSignal>, request: PowerRequest) -> Self {
        Self { signal, request }
    }
}

impl vm_superio::Trigger for PowerTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.signal.request(self.request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_request_wins_and_event_fires() {
        let signal = PowerSignal::new().unwrap();
        assert_eq!(signal.pending(), None);
        signal.request(PowerRequest::Reset).unwrap();
        signal.request(PowerRequest::PowerOff).unwrap();
        assert_eq!(signal.pending(), Some(PowerRequest::Reset));
        assert_eq!(signal.event().read().unwrap(), 2);
    }
}
