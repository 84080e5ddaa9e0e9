//! The i8042 keyboard controller, reduced to what a VM needs: the CPU-reset
//! command (0xFE on port 0x64) that Linux uses for `reboot=k` and that a
//! Ctrl-Alt-Del ends in.

use vm_superio::I8042Device;

use crate::bus::BusDevice;
use crate::power::PowerTrigger;

/// First I/O port of the controller (data port); the command port is +4.
pub const I8042_PORT_BASE: u64 = 0x60;
/// Ports 0x60..=0x64.
pub const I8042_PORT_LEN: u64 = 5;

/// The i8042 on the port-I/O bus.
#[derive(Debug)]
pub struct I8042 {
    inner: I8042Device<PowerTrigger>,
}

impl I8042 {
    /// A controller whose reset command files `reset` (a
    /// [`PowerTrigger`] for [`crate::power::PowerRequest::Reset`]).
    pub fn new(reset: PowerTrigger) -> Self {
        Self {
            inner: I8042Device::new(reset),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        let value = u8::try_from(offset).map_or(0, |o| self.inner.read(o));
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        let (Ok(offset), Some(&value)) = (u8::try_from(offset), data.first()) else {
            return;
        };
        if let Err(e) = self.inner.write(offset, value) {
            log::error!("i8042: failed to signal the reset request: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::power::{PowerRequest, PowerSignal};

    #[test]
    fn reset_command_files_a_reset() {
        let signal = PowerSignal::new().unwrap();
        let mut dev = I8042::new(PowerTrigger::new(signal.clone(), PowerRequest::Reset));
        dev.write(I8042_PORT_BASE, 0, &[0xfe]);
        assert_eq!(
            signal.pending(),
            None,
            "the data port is not the command port"
        );
        dev.write(I8042_PORT_BASE, 4, &[0x20]);
        assert_eq!(signal.pending(), None);
        dev.write(I8042_PORT_BASE, 4, &[0xfe]);
        assert_eq!(signal.pending(), Some(PowerRequest::Reset));
    }
}
