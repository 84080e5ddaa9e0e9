use std::sync::Arc;

use vmm_sys_util::eventfd::EFD_NONBLOCK;

use super::*;
use crate::power::{PowerRequest, PowerSignal};

const OBF: u8 = STATUS_OUTPUT_FULL;

/// The device plus the host ends of its interrupt and reset lines.
struct Harness {
    dev: I8042,
    irq: EventFd,
    signal: Arc<PowerSignal>,
}

impl Harness {
    fn new() -> Self {
        let signal = PowerSignal::new().unwrap();
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let dev = I8042::with_interrupt(
            PowerTrigger::new(signal.clone(), PowerRequest::Reset),
            irq.try_clone().unwrap(),
        );
        Self { dev, irq, signal }
    }

    fn status(&mut self) -> u8 {
        let mut buf = [0xff];
        self.dev.read(I8042_PORT_BASE, COMMAND_OFFSET, &mut buf);
        buf[0]
    }

    fn data(&mut self) -> u8 {
        let mut buf = [0xff];
        self.dev.read(I8042_PORT_BASE, DATA_OFFSET, &mut buf);
        buf[0]
    }

    fn command(&mut self, command: u8) {
        self.dev.write(I8042_PORT_BASE, COMMAND_OFFSET, &[command]);
    }

    fn write_data(&mut self, value: u8) {
        self.dev.write(I8042_PORT_BASE, DATA_OFFSET, &[value]);
    }

    /// Interrupts raised since the last call.
    fn interrupts(&self) -> u64 {
        self.irq.read().unwrap_or(0)
    }

    /// Linux's `i8042_flush`: read while the output buffer is full.
    fn flush(&mut self) -> usize {
        let mut n = 0;
        while self.status() & OBF != 0 {
            assert!(n < 16, "Linux gives up after 16 bytes");
            self.data();
            n += 1;
        }
        n
    }

    /// Linux's `i8042_command` with polling: command, optional argument,
    /// then `replies` bytes, each announced by OBF.
    fn controller(&mut self, command: u8, arg: Option<u8>, replies: usize) -> Vec<u8> {
        self.command(command);
        if let Some(arg) = arg {
            assert_eq!(
                self.status() & STATUS_LAST_WAS_COMMAND,
                STATUS_LAST_WAS_COMMAND
            );
            self.write_data(arg);
        }
        (0..replies)
            .map(|_| {
                let status = self.status();
                assert_eq!(status & OBF, OBF, "reply to {command:#x} is ready");
                assert_eq!(status & 0x02, 0, "input buffer never full");
                self.data()
            })
            .collect()
    }

    /// Bytes delivered by interrupt: each must come with exactly one
    /// interrupt and OBF, as Linux's handler reads one byte per interrupt.
    fn receive(&mut self, count: usize) -> Vec<u8> {
        (0..count)
            .map(|i| {
                assert_eq!(self.interrupts(), 1, "one interrupt for byte {i}");
                assert_eq!(self.status() & (OBF | STATUS_AUX_DATA), OBF);
                self.data()
            })
            .collect()
    }

    /// A PS/2 command to the keyboard, as atkbd's `ps2_command` sends it.
    fn keyboard(&mut self, bytes: &[u8], replies: usize) -> Vec<u8> {
        for &b in bytes {
            self.write_data(b);
        }
        let got = self.receive(replies);
        assert_eq!(self.interrupts(), 0, "nothing more");
        assert_eq!(self.status() & OBF, 0);
        got
    }
}

#[test]
fn linux_probe_then_ctrl_alt_del() {
    let mut h = Harness::new();
    // i8042_controller_check / selftest.
    assert_eq!(h.flush(), 0);
    assert_eq!(h.controller(CMD_SELF_TEST, None, 1), [SELF_TEST_OK]);
    // i8042_controller_init: a stable CTR read, keylock check, disable the
    // keyboard and its interrupt, keep translation as found.
    let ctr = h.controller(CMD_READ_CTR, None, 1)[0];
    assert_eq!(h.controller(CMD_READ_CTR, None, 1), [ctr]);
    assert_ne!(ctr & CTR_TRANSLATE, 0, "BIOS-style: translation on");
    assert_ne!(h.status() & STATUS_UNLOCKED, 0);
    let init_ctr = (ctr | CTR_KBD_DISABLE) & !CTR_KBD_INT;
    h.controller(CMD_WRITE_CTR, Some(init_ctr), 0);
    assert_eq!(h.flush(), 0);
    // Replies so far raised IRQ 1 (the BIOS left it enabled), as on a PC;
    // Linux has not requested the IRQ yet.
    assert_eq!(h.interrupts(), 3);
    // i8042_platform_init: A20 via the output port, then the null command.
    h.controller(CMD_WRITE_OUTPUT_PORT, Some(0xdf), 0);
    h.controller(0xff, None, 0);
    assert_eq!(h.controller(CMD_TEST_KBD, None, 1), [INTERFACE_OK]);
    assert_eq!(h.controller(CMD_READ_OUTPUT_PORT, None, 1), [0xdf]);
    assert_eq!(h.interrupts(), 0, "keyboard interrupt was off");
    assert_eq!(h.signal.pending(), None, "no reset along the way");
    // i8042_enable_kbd_port.
    let run_ctr = (init_ctr & !CTR_KBD_DISABLE) | CTR_KBD_INT;
    h.controller(CMD_WRITE_CTR, Some(run_ctr), 0);
    assert_eq!(h.controller(CMD_READ_CTR, None, 1), [run_ctr]);
    h.interrupts();

    // atkbd_probe: GET ID, answered through the translator (83 -> 41).
    assert_eq!(h.keyboard(&[0xf2], 3), [0xfa, 0xab, 0x41]);
    // Deactivate, LEDs off, repeat rate, enable.
    assert_eq!(h.keyboard(&[0xf5], 1), [0xfa]);
    assert_eq!(h.keyboard(&[0xed, 0x00], 2), [0xfa, 0xfa]);
    assert_eq!(h.keyboard(&[0xf3, 0x2b], 2), [0xfa, 0xfa]);
    assert_eq!(h.keyboard(&[0xf4], 1), [0xfa]);

    h.dev.trigger_ctrl_alt_del().unwrap();
    assert_eq!(
        h.receive(8),
        [0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d]
    );
    assert_eq!(h.interrupts(), 0);
    assert_eq!(h.status() & OBF, 0);
    // An empty data port repeats the last byte, like the chip.
    assert_eq!(h.data(), 0x9d);
}

#[test]
fn untranslated_keyboard_gets_set_2() {
    let mut h = Harness::new();
    let ctr = h.controller(CMD_READ_CTR, None, 1)[0];
    h.controller(CMD_WRITE_CTR, Some(ctr & !CTR_TRANSLATE), 0);
    h.interrupts();
    assert_eq!(h.keyboard(&[0xf2], 3), [0xfa, 0xab, 0x83]);
    h.dev.trigger_ctrl_alt_del().unwrap();
    assert_eq!(
        h.receive(11),
        [0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0, 0x14]
    );
    // In set 1 (only sensible untranslated) the keyboard sends set 1.
    assert_eq!(h.keyboard(&[0xf0, 0x01], 2), [0xfa, 0xfa]);
    h.dev.trigger_ctrl_alt_del().unwrap();
    assert_eq!(
        h.receive(8),
        [0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d]
    );
}

#[test]
fn keyboard_reset_answers_ack_and_bat() {
    let mut h = Harness::new();
    assert_eq!(h.keyboard(&[0xff], 2), [0xfa, 0xaa]);
}

#[test]
fn reset_lines() {
    let reset_after = |steps: &[(u64, u8)]| {
        let mut h = Harness::new();
        for &(offset, value) in steps {
            h.dev.write(I8042_PORT_BASE, offset, &[value]);
        }
        h.signal.pending()
    };
    assert_eq!(
        reset_after(&[(COMMAND_OFFSET, 0xfe)]),
        Some(PowerRequest::Reset)
    );
    assert_eq!(
        reset_after(&[(COMMAND_OFFSET, 0xf0)]),
        Some(PowerRequest::Reset)
    );
    assert_eq!(reset_after(&[(DATA_OFFSET, 0xfe)]), None, "data port");
    assert_eq!(reset_after(&[(COMMAND_OFFSET, 0xff)]), None);
    assert_eq!(reset_after(&[(COMMAND_OFFSET, 0x20)]), None);
    assert_eq!(reset_after(&[(2, 0xfe)]), None);
    // The output port's reset bit is active low.
    assert_eq!(
        reset_after(&[(COMMAND_OFFSET, 0xd1), (DATA_OFFSET, 0xde)]),
        Some(PowerRequest::Reset)
    );
    assert_eq!(
        reset_after(&[(COMMAND_OFFSET, 0xd1), (DATA_OFFSET, 0xdf)]),
        None
    );
    // A command abandons the argument of the previous one.
    assert_eq!(
        reset_after(&[
            (COMMAND_OFFSET, 0xd1),
            (COMMAND_OFFSET, 0xae),
            (DATA_OFFSET, 0)
        ]),
        None
    );
}

#[test]
fn reset_works_without_an_interrupt_line() {
    let signal = PowerSignal::new().unwrap();
    let mut dev = I8042::new(PowerTrigger::new(signal.clone(), PowerRequest::Reset));
    assert_eq!(dev.trigger_ctrl_alt_del(), Err(I8042Error::NoInterrupt));
    dev.write(I8042_PORT_BASE, COMMAND_OFFSET, &[0xfe]);
    assert_eq!(signal.pending(), Some(PowerRequest::Reset));
}

#[test]
fn interrupt_waits_for_the_enable_bit_and_keys_for_the_interface() {
    let mut h = Harness::new();
    h.controller(CMD_WRITE_CTR, Some(INITIAL_CTR & !CTR_KBD_INT), 0);
    h.dev.trigger_ctrl_alt_del().unwrap();
    assert_eq!(h.status() & OBF, OBF);
    assert_eq!(h.interrupts(), 0);
    h.controller(CMD_WRITE_CTR, Some(INITIAL_CTR), 0);
    assert_eq!(h.receive(1), [0x1d]);

    // Interface disabled: keys wait in the keyboard, replies still come.
    h.command(CMD_DISABLE_KBD);
    assert_eq!(h.receive(1), [0x38], "already in the output buffer");
    assert_eq!(h.status() & OBF, 0);
    assert_eq!(h.controller(CMD_SELF_TEST, None, 1), [SELF_TEST_OK]);
    h.interrupts();
    h.command(CMD_ENABLE_KBD);
    assert_eq!(h.receive(6), [0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d]);
}

#[test]
fn injection_errors() {
    let mut h = Harness::new();
    h.dev.trigger_ctrl_alt_del().unwrap();
    assert_eq!(h.dev.trigger_ctrl_alt_del(), Err(I8042Error::BufferFull));
    let mut h = Harness::new();
    h.keyboard(&[0xf5], 1);
    assert_eq!(
        h.dev.trigger_ctrl_alt_del(),
        Err(I8042Error::ScanningDisabled)
    );
}

#[test]
fn aux_loopback_sets_the_aux_bit_without_irq_1() {
    let mut h = Harness::new();
    h.command(CMD_WRITE_AUX_BUFFER);
    h.write_data(0x5a);
    assert_eq!(h.status() & (OBF | STATUS_AUX_DATA), OBF | STATUS_AUX_DATA);
    assert_eq!(h.interrupts(), 0);
    assert_eq!(h.data(), 0x5a);
    // Bytes for the (absent) mouse vanish; aux enable/disable show in CTR.
    h.controller(CMD_WRITE_AUX, Some(0xf4), 0);
    assert_eq!(h.status() & OBF, 0);
    h.command(CMD_ENABLE_AUX);
    assert_eq!(h.controller(CMD_READ_CTR, None, 1)[0] & CTR_AUX_DISABLE, 0);
    h.command(CMD_DISABLE_AUX);
    assert_ne!(h.controller(CMD_READ_CTR, None, 1)[0] & CTR_AUX_DISABLE, 0);
    assert_eq!(h.controller(CMD_TEST_AUX, None, 1), [INTERFACE_OK]);
    // D2 puts a byte in as if from the keyboard, untranslated.
    h.interrupts();
    h.controller(CMD_WRITE_KBD_BUFFER, Some(0x83), 0);
    assert_eq!(h.receive(1), [0x83]);
}

#[test]
fn odd_accesses_are_harmless() {
    let mut h = Harness::new();
    h.dev.read(I8042_PORT_BASE, DATA_OFFSET, &mut []);
    h.dev.write(I8042_PORT_BASE, COMMAND_OFFSET, &[]);
    let mut wide = [0xffu8; 4];
    h.controller(CMD_READ_CTR, None, 0);
    h.dev.read(I8042_PORT_BASE, DATA_OFFSET, &mut wide);
    assert_eq!(wide, [INITIAL_CTR, 0, 0, 0]);
    h.dev.read(I8042_PORT_BASE, 2, &mut wide);
    assert_eq!(wide, [0; 4]);
    h.dev.read(I8042_PORT_BASE, u64::MAX, &mut wide);
}

#[test]
fn random_guest_traffic_never_panics_or_grows() {
    let mut h = Harness::new();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..200_000 {
        let r = next().to_le_bytes();
        let offset = [DATA_OFFSET, COMMAND_OFFSET, 1, 3][usize::from(r[0] & 3)];
        let value = r[1];
        match (r[0] >> 4) & 7 {
            0..=2 => h.dev.write(I8042_PORT_BASE, offset, &[value]),
            3..=5 => {
                let mut buf = [0u8; 2];
                h.dev.read(I8042_PORT_BASE, offset, &mut buf);
            }
            6 => {
                let _ = h.dev.trigger_ctrl_alt_del();
            }
            _ => {
                h.interrupts();
            }
        }
        assert_eq!(h.status() & 0x02, 0);
    }
    // However it was left, queues drain in bounded time, and a fresh CTR
    // plus a keyboard reset (twice, in case the first was taken as the
    // argument of a pending keyboard command) bring it back.
    let drain = |h: &mut Harness| {
        let mut n = 0;
        while h.status() & OBF != 0 {
            h.data();
            n += 1;
            assert!(n <= 40, "bounded queues");
        }
    };
    h.command(CMD_WRITE_CTR);
    h.write_data(INITIAL_CTR);
    for _ in 0..2 {
        drain(&mut h);
        h.write_data(0xff);
    }
    drain(&mut h);
    h.interrupts();
    assert_eq!(h.keyboard(&[0xf2], 3), [0xfa, 0xab, 0x41]);
}
