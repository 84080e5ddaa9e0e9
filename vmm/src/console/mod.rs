//! The guest's serial console on the host side: where its output goes
//! (the configured sink plus a bounded ring the API reads back), and host
//! standard input fed to it.

mod ring;
mod stdin;

pub use ring::{ConsoleRing, TeeOutput, CONSOLE_RING_BYTES};
pub use stdin::StdinToSerial;
