//! COM1: a 16550A UART (vm-superio) on the port-I/O bus, raising its
//! interrupt through an `EventFd` that the VMM registers as an irqfd.

use std::io::Write;

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;

/// COM1's first I/O port.
pub const COM1_PORT_BASE: u64 = 0x3f8;
/// Eight registers.
pub const COM1_PORT_LEN: u64 = 8;
/// COM1's ISA interrupt line.
pub const COM1_IRQ: u32 = 4;

/// An `EventFd` used as the UART's interrupt line.
#[derive(Debug)]
pub struct EventFdTrigger(EventFd);

impl EventFdTrigger {
    /// Wraps `evt`; writing to it raises the interrupt.
    pub fn new(evt: EventFd) -> Self {
        Self(evt)
    }
}

impl Trigger for EventFdTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Where the guest's console output goes.
pub type SerialOutput = Box<dyn Write + Send>;

/// The UART with its output sink.
pub struct SerialDevice {
    uart: Serial<EventFdTrigger, NoEvents, SerialOutput>,
}

impl std::fmt::Debug for SerialDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialDevice").finish_non_exhaustive()
    }
}

impl SerialDevice {
    /// A UART raising `interrupt` and writing transmitted bytes to `out`.
    pub fn new(interrupt: EventFd, out: SerialOutput) -> Self {
        Self {
            uart: Serial::new(EventFdTrigger::new(interrupt), out),
        }
    }

    /// Feeds host input to the guest. Returns how many bytes fit in the
    /// receive FIFO; the caller keeps the rest for later.
    pub fn enqueue_input(&mut self, input: &[u8]) -> usize {
        let room = self.uart.fifo_capacity().min(input.len());
        if room == 0 {
            return 0;
        }
        match self.uart.enqueue_raw_bytes(&input[..room]) {
            Ok(n) => n,
            Err(e) => {
                log::warn!("serial: dropping input: {e:?}");
                0
            }
        }
    }

    /// Room left in the receive FIFO.
    pub fn input_room(&self) -> usize {
        self.uart.fifo_capacity()
    }

    /// Flushes buffered console output.
    pub fn flush(&mut self) {
        let _ = self.uart.writer_mut().flush();
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (Ok(offset), Some(first)) = (u8::try_from(offset), data.first_mut()) {
            *first = self.uart.read(offset);
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        let (Ok(offset), Some(&value)) = (u8::try_from(offset), data.first()) else {
            return;
        };
        if let Err(e) = self.uart.write(offset, value) {
            // A console that cannot be written must not stop the guest.
            log::warn!("serial: write failed: {e:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn transmits_to_output_and_receives_input() {
        let out = SharedBuf::default();
        let irq = EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
        let mut dev = SerialDevice::new(irq.try_clone().unwrap(), Box::new(out.clone()));
        for b in b"hi" {
            dev.write(COM1_PORT_BASE, 0, &[*b]);
        }
        assert_eq!(out.0.lock().unwrap().as_slice(), b"hi");

        // Enable the received-data interrupt (IER bit 0), then feed input.
        dev.write(COM1_PORT_BASE, 1, &[1]);
        assert_eq!(dev.enqueue_input(b"ok"), 2);
        assert!(irq.read().unwrap() >= 1);
        let mut byte = [0u8];
        dev.read(COM1_PORT_BASE, 0, &mut byte);
        assert_eq!(byte, [b'o']);
        // Offsets past the register file are ignored, not a panic.
        dev.write(COM1_PORT_BASE, 1 << 40, &[1]);
    }
}
