//! The PS/2 keyboard behind the i8042: answers the commands Linux's atkbd
//! sends and produces scancodes for injected keys, in whichever scancode set
//! the guest selected. Translation to set 1 is the controller's job.

use super::fifo::Fifo;
use super::I8042Error;

/// Acknowledge.
pub(super) const ACK: u8 = 0xfa;
/// Basic assurance test passed (sent after a reset).
pub(super) const BAT_OK: u8 = 0xaa;
/// "Resend": the keyboard's reply to a command it does not understand.
pub(super) const RESEND: u8 = 0xfe;
/// An MF2 keyboard's identity, as the keyboard sends it (untranslated).
pub(super) const KEYBOARD_ID: [u8; 2] = [0xab, 0x83];
/// The set-2 break prefix the controller folds into bit 7 when translating.
pub(super) const BREAK_PREFIX: u8 = 0xf0;

const CMD_SET_LEDS: u8 = 0xed;
const CMD_ECHO: u8 = 0xee;
const CMD_SCANCODE_SET: u8 = 0xf0;
const CMD_GET_ID: u8 = 0xf2;
const CMD_SET_TYPEMATIC: u8 = 0xf3;
const CMD_ENABLE: u8 = 0xf4;
const CMD_DISABLE: u8 = 0xf5;
const CMD_SET_DEFAULTS: u8 = 0xf6;
const CMD_RESEND: u8 = 0xfe;
const CMD_RESET: u8 = 0xff;

/// Replies to one command: at most ACK plus two identity bytes; a few
/// commands' worth, in case the guest writes without reading.
const RESPONSE_QUEUE_LEN: usize = 8;
/// Scancodes waiting to be sent: a real keyboard buffers about 16 bytes,
/// and one Ctrl-Alt-Del (at most 11 bytes) must fit.
const SCANCODE_QUEUE_LEN: usize = 16;

/// The scancode set the keyboard sends in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ScancodeSet {
    /// XT codes.
    One,
    /// AT codes: the power-on default, and what Linux uses.
    Two,
    /// Terminal codes.
    Three,
}

impl ScancodeSet {
    fn number(self) -> u8 {
        match self {
            ScancodeSet::One => 1,
            ScancodeSet::Two => 2,
            ScancodeSet::Three => 3,
        }
    }
}

/// Left Ctrl, Left Alt and Delete pressed in that order, then released in
/// reverse, in each set. Make codes are the keys' codes; breaks are the
/// code with bit 7 set (set 1) or prefixed by F0 (sets 2 and 3); Delete is
/// an E0-extended key in sets 1 and 2.
pub(super) fn ctrl_alt_del(set: ScancodeSet) -> &'static [u8] {
    match set {
        ScancodeSet::One => &[0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d],
        ScancodeSet::Two => &[
            0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0, 0x14,
        ],
        ScancodeSet::Three => &[0x11, 0x19, 0x64, 0xf0, 0x64, 0xf0, 0x19, 0xf0, 0x11],
    }
}

/// The i8042's set-2 → set-1 translation, for the bytes this keyboard can
/// send while the guest runs it in set 2 (the only set Linux combines with
/// translation). The real table has an entry for each of 128 codes; the
/// other codes never come out of this model, so they pass unchanged rather
/// than carrying a table nobody reads. Codes from 0x88 up (replies such as
/// ACK, BAT, echo, resend, and the E0 prefix) are the same in both sets.
pub(super) fn translate_to_set1(code: u8) -> u8 {
    match code {
        0x00 => 0xff, // key-detection error / overrun
        0x01 => 0x43, // "set 1" reply to a get-set query
        0x02 => 0x41, // "set 2"
        0x03 => 0x3f, // "set 3"
        0x11 => 0x38, // Left Alt
        0x14 => 0x1d, // Left Ctrl
        0x71 => 0x53, // Delete (after E0)
        0x83 => 0x41, // second identity byte: a translated MF2 says AB 41
        other => other,
    }
}

/// A command waiting for its argument byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    Leds,
    Typematic,
    ScancodeSet,
}

/// The keyboard's state.
#[derive(Debug, Clone)]
pub(super) struct Keyboard {
    responses: Fifo<u8, RESPONSE_QUEUE_LEN>,
    scancodes: Fifo<u8, SCANCODE_QUEUE_LEN>,
    set: ScancodeSet,
    scanning: bool,
    awaiting: Option<Awaiting>,
    last_sent: u8,
    /// The last byte sent was a prefix (E0, E1, F0): the rest of its key
    /// sequence goes out before any command reply, so a reply never splits
    /// a scancode from its prefix.
    mid_sequence: bool,
}

impl Keyboard {
    /// Power-on state: set 2, scanning enabled, nothing queued.
    pub(super) fn new() -> Self {
        Self {
            responses: Fifo::new(),
            scancodes: Fifo::new(),
            set: ScancodeSet::Two,
            scanning: true,
            awaiting: None,
            last_sent: 0,
            mid_sequence: false,
        }
    }

    /// The set scancodes are sent in.
    pub(super) fn scancode_set(&self) -> ScancodeSet {
        self.set
    }

    /// Queues a reply; a guest that floods commands without reading loses
    /// the replies that do not fit (whole replies, never half of one).
    fn reply(&mut self, bytes: &[u8]) {
        if !self.responses.push_all(bytes) {
            log::debug!("i8042: keyboard reply {bytes:02x?} dropped, queue full");
        }
    }

    /// A byte from the host (the guest wrote it to port 0x60).
    pub(super) fn write(&mut self, byte: u8) {
        if let Some(awaiting) = self.awaiting.take() {
            self.argument(awaiting, byte);
            return;
        }
        match byte {
            CMD_SET_LEDS => self.expect(Awaiting::Leds),
            CMD_SET_TYPEMATIC => self.expect(Awaiting::Typematic),
            CMD_SCANCODE_SET => self.expect(Awaiting::ScancodeSet),
            CMD_ECHO => self.reply(&[CMD_ECHO]),
            CMD_GET_ID => self.reply(&[ACK, KEYBOARD_ID[0], KEYBOARD_ID[1]]),
            CMD_ENABLE => {
                self.clear_scancodes();
                self.scanning = true;
                self.reply(&[ACK]);
            }
            CMD_DISABLE => {
                self.clear_scancodes();
                self.scanning = false;
                self.reply(&[ACK]);
            }
            CMD_SET_DEFAULTS => {
                self.clear_scancodes();
                self.reply(&[ACK]);
            }
            // Set-3 key-type commands (all keys typematic/make/break...):
            // keys here always send make and break codes, which is what
            // Linux asks for.
            0xf7..=0xfd => self.reply(&[ACK]),
            CMD_RESEND => {
                let last = self.last_sent;
                self.reply(&[last]);
            }
            CMD_RESET => {
                self.responses.clear();
                self.clear_scancodes();
                self.set = ScancodeSet::Two;
                self.scanning = true;
                self.reply(&[ACK, BAT_OK]);
            }
            _ => self.reply(&[RESEND]),
        }
    }

    fn expect(&mut self, awaiting: Awaiting) {
        self.awaiting = Some(awaiting);
        self.reply(&[ACK]);
    }

    fn argument(&mut self, awaiting: Awaiting, byte: u8) {
        match (awaiting, byte) {
            // LEDs and repeat rate have no visible effect in a VM.
            (Awaiting::Leds | Awaiting::Typematic, _) => self.reply(&[ACK]),
            (Awaiting::ScancodeSet, 0) => {
                let set = self.set.number();
                self.reply(&[ACK, set]);
            }
            (Awaiting::ScancodeSet, 1..=3) => {
                self.set = match byte {
                    1 => ScancodeSet::One,
                    2 => ScancodeSet::Two,
                    _ => ScancodeSet::Three,
                };
                self.clear_scancodes();
                self.reply(&[ACK]);
            }
            (Awaiting::ScancodeSet, _) => self.reply(&[RESEND]),
        }
    }

    fn clear_scancodes(&mut self) {
        self.scancodes.clear();
        self.mid_sequence = false;
    }

    /// The next byte for the controller: command replies go ahead of
    /// buffered scancodes, as a keyboard answers the host before resuming
    /// its key stream — but only between key sequences.
    pub(super) fn pop(&mut self) -> Option<u8> {
        let continued = if self.mid_sequence {
            self.scancodes.pop()
        } else {
            None
        };
        let (byte, is_scancode) = match continued {
            Some(byte) => (byte, true),
            None => match self.responses.pop() {
                Some(byte) => (byte, false),
                None => (self.scancodes.pop()?, true),
            },
        };
        self.mid_sequence = is_scancode && matches!(byte, 0xe0 | 0xe1 | BREAK_PREFIX);
        self.last_sent = byte;
        Some(byte)
    }

    /// Queues `codes` (a whole key sequence) for sending, or nothing.
    pub(super) fn inject(&mut self, codes: &[u8]) -> Result<(), I8042Error> {
        if !self.scanning {
            return Err(I8042Error::ScanningDisabled);
        }
        if !self.scancodes.push_all(codes) {
            return Err(I8042Error::BufferFull);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(kbd: &mut Keyboard) -> Vec<u8> {
        std::iter::from_fn(|| kbd.pop()).collect()
    }

    #[test]
    fn answers_atkbd_commands() {
        let mut kbd = Keyboard::new();
        kbd.write(CMD_RESET);
        assert_eq!(drain(&mut kbd), [ACK, BAT_OK]);
        kbd.write(CMD_GET_ID);
        assert_eq!(drain(&mut kbd), [ACK, 0xab, 0x83]);
        kbd.write(CMD_SET_LEDS);
        kbd.write(0x07);
        kbd.write(CMD_SET_TYPEMATIC);
        kbd.write(0x20);
        assert_eq!(drain(&mut kbd), [ACK; 4]);
        kbd.write(CMD_SCANCODE_SET);
        kbd.write(0);
        assert_eq!(drain(&mut kbd), [ACK, ACK, 2]);
        kbd.write(CMD_SCANCODE_SET);
        kbd.write(3);
        assert_eq!(kbd.scancode_set(), ScancodeSet::Three);
        kbd.write(CMD_SCANCODE_SET);
        kbd.write(9);
        assert_eq!(drain(&mut kbd), [ACK, ACK, ACK, RESEND]);
        kbd.write(CMD_ECHO);
        kbd.write(0x12);
        assert_eq!(drain(&mut kbd), [CMD_ECHO, RESEND]);
        kbd.write(CMD_RESEND);
        assert_eq!(drain(&mut kbd), [RESEND]);
    }

    #[test]
    fn scanning_gates_injection_and_replies_come_first() {
        let mut kbd = Keyboard::new();
        kbd.write(CMD_DISABLE);
        assert_eq!(
            kbd.inject(ctrl_alt_del(ScancodeSet::Two)),
            Err(I8042Error::ScanningDisabled)
        );
        kbd.write(CMD_ENABLE);
        kbd.inject(&[0x1c]).unwrap();
        kbd.write(CMD_SET_LEDS);
        // Disable, enable, set-LEDs, then the key.
        assert_eq!(drain(&mut kbd), [ACK, ACK, ACK, 0x1c]);
    }

    #[test]
    fn replies_never_split_a_prefix_from_its_code() {
        let mut kbd = Keyboard::new();
        kbd.inject(ctrl_alt_del(ScancodeSet::Two)).unwrap();
        let head: Vec<u8> = (0..3).map(|_| kbd.pop().unwrap()).collect();
        assert_eq!(head, [0x14, 0x11, 0xe0]);
        kbd.write(CMD_SET_LEDS);
        assert_eq!(kbd.pop(), Some(0x71), "Delete's code follows its E0");
        assert_eq!(kbd.pop(), Some(ACK), "then the reply, between keys");
        assert_eq!(drain(&mut kbd), [0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0, 0x14]);
    }

    #[test]
    fn injection_is_bounded_and_all_or_nothing() {
        let mut kbd = Keyboard::new();
        let seq = ctrl_alt_del(ScancodeSet::Two);
        kbd.inject(seq).unwrap();
        assert_eq!(kbd.inject(seq), Err(I8042Error::BufferFull));
        assert_eq!(drain(&mut kbd), seq);
    }

    #[test]
    fn translated_set2_sequence_is_the_set1_sequence() {
        let mut out = Vec::new();
        let mut release = false;
        for &code in ctrl_alt_del(ScancodeSet::Two) {
            if code == BREAK_PREFIX {
                release = true;
                continue;
            }
            let bit7 = if std::mem::take(&mut release) {
                0x80
            } else {
                0
            };
            out.push(translate_to_set1(code) | bit7);
        }
        assert_eq!(out, ctrl_alt_del(ScancodeSet::One));
    }
}
