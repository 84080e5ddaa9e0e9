//! The power-management registers of a hardware-reduced ACPI platform.
//!
//! With `HW_REDUCED_ACPI` set in the FADT there is no PM1 block, SCI or PM
//! timer; the OS powers off by writing `SLP_TYPx | SLP_EN` to the FADT's
//! sleep-control register and resets by writing the reset value to the
//! FADT's reset register. Both live here, on three I/O ports.

use std::sync::Arc;

use crate::bus::BusDevice;
use crate::power::{PowerRequest, PowerSignal};

/// First port: sleep control (1 byte).
pub const ACPI_PM_PORT_BASE: u64 = 0x600;
/// Ports 0x600 (sleep control), 0x601 (sleep status), 0x602 (reset).
pub const ACPI_PM_PORT_LEN: u64 = 3;
/// Offset of the sleep-control register.
pub const SLEEP_CONTROL_OFFSET: u64 = 0;
/// Offset of the sleep-status register.
pub const SLEEP_STATUS_OFFSET: u64 = 1;
/// Offset of the reset register.
pub const RESET_OFFSET: u64 = 2;
/// The value the FADT tells the OS to write to the reset register.
pub const RESET_VALUE: u8 = 0x42;
/// The sleep type the DSDT's `_S5_` package gives for soft-off.
pub const S5_SLEEP_TYPE: u8 = 5;

const SLP_EN: u8 = 1 << 5;
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0b111;

/// Sleep-control, sleep-status and reset registers.
#[derive(Debug)]
pub struct AcpiPowerManagement {
    signal: Arc<PowerSignal>,
}

impl AcpiPowerManagement {
    /// Registers that file power requests on `signal`.
    pub fn new(signal: Arc<PowerSignal>) -> Self {
        Self { signal }
    }

    fn file(&self, request: PowerRequest) {
        if let Err(e) = self.signal.request(request) {
            log::error!("acpi: failed to signal {request:?}: {e}");
        }
    }
}

impl BusDevice for AcpiPowerManagement {
    fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
        // Sleep status never reports a wake: a VM that entered S5 is gone.
        data.fill(0);
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        match offset {
            SLEEP_CONTROL_OFFSET if value & SLP_EN != 0 => {
                let sleep_type = (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK;
                if sleep_type == S5_SLEEP_TYPE {
                    self.file(PowerRequest::PowerOff);
                } else {
                    // Only S5 is offered in the DSDT; other states are ignored.
                    log::warn!("acpi: guest asked for unsupported sleep type {sleep_type}");
                }
            }
            RESET_OFFSET if value == RESET_VALUE => self.file(PowerRequest::Reset),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> (Arc<PowerSignal>, AcpiPowerManagement) {
        let signal = PowerSignal::new().unwrap();
        (signal.clone(), AcpiPowerManagement::new(signal))
    }

    #[test]
    fn s5_with_sleep_enable_powers_off() {
        let (signal, mut dev) = device();
        dev.write(0, SLEEP_CONTROL_OFFSET, &[S5_SLEEP_TYPE << 2]);
        assert_eq!(signal.pending(), None, "SLP_EN is required");
        dev.write(0, SLEEP_CONTROL_OFFSET, &[(3 << 2) | SLP_EN]);
        assert_eq!(signal.pending(), None, "S3 is not offered");
        dev.write(0, SLEEP_CONTROL_OFFSET, &[(S5_SLEEP_TYPE << 2) | SLP_EN]);
        assert_eq!(signal.pending(), Some(PowerRequest::PowerOff));
    }

    #[test]
    fn reset_register_needs_the_reset_value() {
        let (signal, mut dev) = device();
        dev.write(0, RESET_OFFSET, &[1]);
        assert_eq!(signal.pending(), None);
        dev.write(0, RESET_OFFSET, &[RESET_VALUE]);
        assert_eq!(signal.pending(), Some(PowerRequest::Reset));
        let mut buf = [0xff];
        dev.read(0, SLEEP_STATUS_OFFSET, &mut buf);
        assert_eq!(buf, [0]);
        dev.write(0, RESET_OFFSET, &[]);
    }
}
