//! The ACPI power button of a hardware-reduced platform.
//!
//! Without PM1 blocks there is no fixed-feature power button and no SCI.
//! Instead the DSDT describes a Generic Event Device (`ACPI0013`) whose
//! interrupt is [`POWER_BUTTON_GSI`] and whose `_EVT` method notifies the
//! power-button device (`PNP0C0C`). Pressing the button is one write to an
//! `EventFd` that the VMM registers as an irqfd on that GSI: KVM turns it
//! into one edge, the guest's GED driver runs `_EVT`, and the guest's
//! button driver reports a power-key press (systemd-logind then shuts
//! down, as for a real button).

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// The GSI of the Generic Event Device: the last pin of the 24-pin IOAPIC.
///
/// Reserved: GSIs 0–4 are the legacy ISA lines, and virtio devices are
/// given GSIs from 5 upward, so they must stop at 22 to leave this one
/// free.
pub const POWER_BUTTON_GSI: u32 = 23;

/// Errors pressing the button.
#[derive(Debug, thiserror::Error)]
pub enum PowerButtonError {
    /// The `EventFd` could not be created.
    #[error("cannot create the power button eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    /// The `EventFd` write failed.
    #[error("cannot signal the power button interrupt: {0}")]
    Press(#[source] std::io::Error),
}

/// The power button's interrupt line.
#[derive(Debug)]
pub struct PowerButton {
    irq: EventFd,
}

impl PowerButton {
    /// A button with its own non-blocking `EventFd`.
    pub fn new() -> Result<Self, PowerButtonError> {
        let irq = EventFd::new(EFD_NONBLOCK).map_err(PowerButtonError::EventFd)?;
        Ok(Self { irq })
    }

    /// The `EventFd` to register as an irqfd on [`POWER_BUTTON_GSI`].
    pub fn irq_evt(&self) -> &EventFd {
        &self.irq
    }

    /// One press (and release): one interrupt edge.
    pub fn press(&self) -> Result<(), PowerButtonError> {
        self.irq.write(1).map_err(PowerButtonError::Press)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn press_signals_the_interrupt_once() {
        let button = PowerButton::new().unwrap();
        assert!(button.irq_evt().read().is_err(), "nothing pending");
        button.press().unwrap();
        assert_eq!(button.irq_evt().read().unwrap(), 1);
    }
}
