//! The i8042 keyboard controller with a PS/2 keyboard and no mouse.
//!
//! Enough of the 8042 for Linux's `i8042` and `atkbd` drivers to probe the
//! keyboard and receive keys, so the VMM can deliver Ctrl-Alt-Del (Firecracker's
//! `SendCtrlAltDel`), plus the CPU-reset line that `reboot=k` and a
//! Ctrl-Alt-Del end in.
//!
//! Ports: 0x60 is data (read: output buffer; write: keyboard, or the
//! argument of a controller command), 0x64 is status (read) and command
//! (write).
//!
//! The output buffer is one byte, as on the real chip; behind it wait the
//! controller's own replies and the keyboard's bytes. When a byte lands in
//! the output buffer and the command byte enables keyboard interrupts, the
//! controller writes its `EventFd`, which the VMM registers as an irqfd on
//! GSI 1. An irqfd makes an edge, and Linux's handler reads one byte per
//! interrupt, so every byte gets its own edge — the next one as soon as the
//! guest has read the previous.
//!
//! Everything the guest writes is untrusted: no input panics, and every
//! queue is bounded.

mod fifo;
mod keyboard;
#[cfg(test)]
mod tests;

use vm_superio::Trigger;
use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;
use crate::power::PowerTrigger;
use fifo::Fifo;
use keyboard::{ctrl_alt_del, translate_to_set1, Keyboard, BREAK_PREFIX};

/// First I/O port of the controller (data port); the command port is +4.
pub const I8042_PORT_BASE: u64 = 0x60;
/// Ports 0x60..=0x64.
pub const I8042_PORT_LEN: u64 = 5;
/// Offset of the data port (0x60).
pub const DATA_OFFSET: u64 = 0;
/// Offset of the status (read) / command (write) port (0x64).
pub const COMMAND_OFFSET: u64 = 4;
/// The keyboard's ISA interrupt line, which is also its GSI.
pub const I8042_KBD_IRQ: u32 = 1;

// Status register.
const STATUS_OUTPUT_FULL: u8 = 1 << 0;
// Bit 1, "input buffer full", is never set: writes are handled before the
// vCPU resumes, so the guest never has to wait for the controller.
const STATUS_SYSTEM_FLAG: u8 = 1 << 2;
const STATUS_LAST_WAS_COMMAND: u8 = 1 << 3;
/// Keyboard not inhibited by the keylock (Linux warns otherwise).
const STATUS_UNLOCKED: u8 = 1 << 4;
const STATUS_AUX_DATA: u8 = 1 << 5;

// Controller command byte ("CTR").
const CTR_KBD_INT: u8 = 1 << 0;
const CTR_SYSTEM_FLAG: u8 = 1 << 2;
const CTR_KBD_DISABLE: u8 = 1 << 4;
const CTR_AUX_DISABLE: u8 = 1 << 5;
const CTR_TRANSLATE: u8 = 1 << 6;

/// The command byte as a PC BIOS leaves it: keyboard interrupt on, POST
/// passed, no mouse, and set-2 → set-1 translation on. Linux keeps
/// translation as it finds it (it only turns it off for `i8042.direct`),
/// so guests run atkbd in set 2 behind the translator, as on real PCs.
const INITIAL_CTR: u8 = CTR_KBD_INT | CTR_SYSTEM_FLAG | CTR_AUX_DISABLE | CTR_TRANSLATE;

// Controller commands (written to 0x64).
const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_DISABLE_AUX: u8 = 0xa7;
const CMD_ENABLE_AUX: u8 = 0xa8;
const CMD_TEST_AUX: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_TEST_KBD: u8 = 0xab;
const CMD_DISABLE_KBD: u8 = 0xad;
const CMD_ENABLE_KBD: u8 = 0xae;
const CMD_READ_OUTPUT_PORT: u8 = 0xd0;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xd1;
const CMD_WRITE_KBD_BUFFER: u8 = 0xd2;
const CMD_WRITE_AUX_BUFFER: u8 = 0xd3;
const CMD_WRITE_AUX: u8 = 0xd4;
/// 0xF0..=0xFF pulse output-port lines low; bit n clear pulses line n.
const CMD_PULSE_FIRST: u8 = 0xf0;

const SELF_TEST_OK: u8 = 0x55;
const INTERFACE_OK: u8 = 0x00;

/// Output port bit 0: the CPU reset line, active low.
const OUTPUT_PORT_NOT_RESET: u8 = 1 << 0;
/// Output port bit 1: A20 gate (always on in a VM; only stored).
const OUTPUT_PORT_A20: u8 = 1 << 1;

/// Controller replies waiting behind the output buffer.
const CONTROLLER_QUEUE_LEN: usize = 8;

/// Errors delivering keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum I8042Error {
    /// Built without an interrupt line: the guest could never be told.
    #[error("the i8042 has no interrupt line wired, so the guest cannot receive keys")]
    NoInterrupt,
    /// The guest told the keyboard to stop scanning (PS/2 command 0xF5).
    #[error("the guest has disabled keyboard scanning")]
    ScanningDisabled,
    /// Earlier keys have not been read yet.
    #[error("the keyboard buffer is full (the guest is not reading keys)")]
    BufferFull,
}

/// Which device a byte in the output buffer is from (the status register's
/// AUX bit tells the guest).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Source {
    /// The keyboard or the controller itself.
    #[default]
    Keyboard,
    /// The mouse port (only ever loop-back bytes here).
    Aux,
}

/// Where the next byte written to port 0x60 goes, when a controller
/// command is waiting for its data byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Ctr,
    OutputPort,
    KbdBuffer,
    AuxBuffer,
    Aux,
}

/// The i8042 on the port-I/O bus.
#[derive(Debug)]
pub struct I8042 {
    reset: PowerTrigger,
    irq: Option<EventFd>,
    ctr: u8,
    output_port: u8,
    /// The output buffer.
    output: Option<(u8, Source)>,
    /// Whether the interrupt for the byte in `output` has been raised.
    output_signalled: bool,
    /// What reading an empty data port returns (the chip keeps the byte).
    last_output: u8,
    controller_replies: Fifo<(u8, Source), CONTROLLER_QUEUE_LEN>,
    keyboard: Keyboard,
    pending: Option<Pending>,
    last_write_was_command: bool,
}

impl I8042 {
    /// A controller with no interrupt line: the reset command works and the
    /// guest can poll, but keys cannot be delivered. For a VMM that does not
    /// describe the keyboard to the guest; prefer
    /// [`with_interrupt`](Self::with_interrupt).
    pub fn new(reset: PowerTrigger) -> Self {
        Self {
            reset,
            irq: None,
            ctr: INITIAL_CTR,
            output_port: OUTPUT_PORT_NOT_RESET | OUTPUT_PORT_A20,
            output: None,
            output_signalled: false,
            last_output: 0,
            controller_replies: Fifo::new(),
            keyboard: Keyboard::new(),
            pending: None,
            last_write_was_command: false,
        }
    }

    /// A controller whose reset command files `reset` (a [`PowerTrigger`]
    /// for [`crate::power::PowerRequest::Reset`]) and which raises IRQ 1 by
    /// writing `irq` (register it as an irqfd on [`I8042_KBD_IRQ`]).
    pub fn with_interrupt(reset: PowerTrigger, irq: EventFd) -> Self {
        Self {
            irq: Some(irq),
            ..Self::new(reset)
        }
    }

    /// Presses and releases Ctrl-Alt-Del: queues Left Ctrl, Left Alt and
    /// Delete down, then up in reverse order, in the scancode set the guest
    /// selected on the keyboard. With translation on (the default, and what
    /// Linux keeps), the keyboard's set-2 codes reach the guest as set 1 —
    /// `1D 38 E0 53 E0 D3 B8 9D` — which is what atkbd expects on a
    /// translated port; with `i8042.direct` they stay set 2 —
    /// `14 11 E0 71 E0 F0 71 F0 11 F0 14`.
    ///
    /// All or nothing: a partial sequence could leave Ctrl held down.
    pub fn trigger_ctrl_alt_del(&mut self) -> Result<(), I8042Error> {
        if self.irq.is_none() {
            return Err(I8042Error::NoInterrupt);
        }
        let codes = ctrl_alt_del(self.keyboard.scancode_set());
        self.keyboard.inject(codes)?;
        self.settle();
        Ok(())
    }

    fn status(&self) -> u8 {
        let mut status = STATUS_UNLOCKED;
        if self.ctr & CTR_SYSTEM_FLAG != 0 {
            status |= STATUS_SYSTEM_FLAG;
        }
        if self.last_write_was_command {
            status |= STATUS_LAST_WAS_COMMAND;
        }
        match self.output {
            Some((_, Source::Keyboard)) => status |= STATUS_OUTPUT_FULL,
            Some((_, Source::Aux)) => status |= STATUS_OUTPUT_FULL | STATUS_AUX_DATA,
            None => {}
        }
        status
    }

    fn read_data(&mut self) -> u8 {
        if let Some((byte, _)) = self.output.take() {
            self.last_output = byte;
            self.output_signalled = false;
            self.settle();
        }
        self.last_output
    }

    fn write_data(&mut self, value: u8) {
        self.last_write_was_command = false;
        match self.pending.take() {
            Some(Pending::Ctr) => self.ctr = value,
            Some(Pending::OutputPort) => {
                self.output_port = value;
                if value & OUTPUT_PORT_NOT_RESET == 0 {
                    self.request_reset();
                }
            }
            Some(Pending::KbdBuffer) => self.controller_reply(value, Source::Keyboard),
            Some(Pending::AuxBuffer) => self.controller_reply(value, Source::Aux),
            // No mouse: bytes sent to it go nowhere.
            Some(Pending::Aux) => {}
            None => {
                // Like the 8042 firmware, sending to the keyboard lifts the
                // "keyboard disabled" bit so the reply can come back.
                self.ctr &= !CTR_KBD_DISABLE;
                self.keyboard.write(value);
            }
        }
        self.settle();
    }

    fn write_command(&mut self, command: u8) {
        self.last_write_was_command = true;
        // A new command abandons one still waiting for its data byte.
        self.pending = None;
        match command {
            CMD_READ_CTR => self.controller_reply(self.ctr, Source::Keyboard),
            CMD_WRITE_CTR => self.pending = Some(Pending::Ctr),
            CMD_DISABLE_AUX => self.ctr |= CTR_AUX_DISABLE,
            CMD_ENABLE_AUX => self.ctr &= !CTR_AUX_DISABLE,
            // Nothing is plugged in, but the lines themselves are fine.
            CMD_TEST_AUX | CMD_TEST_KBD => self.controller_reply(INTERFACE_OK, Source::Keyboard),
            CMD_SELF_TEST => self.controller_reply(SELF_TEST_OK, Source::Keyboard),
            CMD_DISABLE_KBD => self.ctr |= CTR_KBD_DISABLE,
            CMD_ENABLE_KBD => self.ctr &= !CTR_KBD_DISABLE,
            CMD_READ_OUTPUT_PORT => self.controller_reply(self.output_port, Source::Keyboard),
            CMD_WRITE_OUTPUT_PORT => self.pending = Some(Pending::OutputPort),
            CMD_WRITE_KBD_BUFFER => self.pending = Some(Pending::KbdBuffer),
            CMD_WRITE_AUX_BUFFER => self.pending = Some(Pending::AuxBuffer),
            CMD_WRITE_AUX => self.pending = Some(Pending::Aux),
            // 0xFE pulses only the reset line; 0xFF (Linux's "null command")
            // pulses nothing.
            CMD_PULSE_FIRST..=0xff if command & OUTPUT_PORT_NOT_RESET == 0 => {
                self.request_reset();
            }
            _ => log::debug!("i8042: ignoring controller command {command:#04x}"),
        }
        self.settle();
    }

    fn controller_reply(&mut self, byte: u8, source: Source) {
        if !self.controller_replies.push((byte, source)) {
            log::debug!("i8042: controller reply {byte:#04x} dropped, queue full");
        }
    }

    fn request_reset(&self) {
        if let Err(e) = self.reset.trigger() {
            log::error!("i8042: failed to signal the reset request: {e}");
        }
    }

    /// After any change: refill the output buffer, then raise the interrupt
    /// for a byte that has not had one.
    fn settle(&mut self) {
        self.fill_output();
        self.raise_interrupt();
    }

    /// Moves the next byte into an empty output buffer: controller replies
    /// first (the guest is polling for them), then the keyboard's bytes
    /// unless the keyboard interface is disabled, translated if enabled.
    fn fill_output(&mut self) {
        if self.output.is_some() {
            return;
        }
        if let Some(entry) = self.controller_replies.pop() {
            self.output = Some(entry);
            return;
        }
        if self.ctr & CTR_KBD_DISABLE != 0 {
            return;
        }
        // Translation folds the set-2 break prefix into bit 7 of the code
        // that follows it. The keyboard queues whole key sequences and sends
        // a sequence's bytes back to back, so that code is always there; a
        // prefix at the very end of the queue cannot happen and is dropped.
        let mut release = 0;
        while let Some(byte) = self.keyboard.pop() {
            if self.ctr & CTR_TRANSLATE == 0 {
                self.output = Some((byte, Source::Keyboard));
                return;
            }
            if byte == BREAK_PREFIX {
                release = 0x80;
                continue;
            }
            self.output = Some((translate_to_set1(byte) | release, Source::Keyboard));
            return;
        }
    }

    fn raise_interrupt(&mut self) {
        if self.output_signalled {
            return;
        }
        // Only keyboard-side bytes interrupt: the mouse interrupt (IRQ 12)
        // is not wired, as there is no mouse.
        let Some((_, Source::Keyboard)) = self.output else {
            return;
        };
        if self.ctr & CTR_KBD_INT == 0 {
            return;
        }
        let Some(irq) = &self.irq else { return };
        if let Err(e) = irq.write(1) {
            log::error!("i8042: failed to raise IRQ {I8042_KBD_IRQ}: {e}");
            return;
        }
        self.output_signalled = true;
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        let Some(first) = data.first_mut() else {
            return;
        };
        *first = match offset {
            DATA_OFFSET => self.read_data(),
            COMMAND_OFFSET => self.status(),
            // 0x61 (speaker/NMI) is KVM's; 0x62 and 0x63 are nothing.
            _ => 0,
        };
        data[1..].fill(0);
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        match offset {
            DATA_OFFSET => self.write_data(value),
            COMMAND_OFFSET => self.write_command(value),
            _ => {}
        }
    }
}
