//! Logging of guest-triggered events without letting a guest flood the
//! VMM's stderr.
//!
//! Anything a guest can cause at will (a bad register write, a malformed
//! descriptor chain) is counted in the device's metrics, where an operator
//! sees every occurrence, and logged at most [`LINES_PER_SECOND`] times per
//! second per call site. A line printed after a quiet spell says how many
//! were suppressed before it, so the log stays honest about volume.
//!
//! ```
//! use stratus_devices::guest_warn;
//! for i in 0..1000 {
//!     // Prints a handful of lines, not a thousand.
//!     guest_warn!("virtio-mmio: bad write {i}");
//! }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// Lines each call site may print per one-second window.
pub const LINES_PER_SECOND: u64 = 5;

/// The state of one call site: its current window and what it printed or
/// suppressed in it. Lock-free: it sits on vCPU and device threads.
#[derive(Debug)]
pub struct LogLimit {
    /// The second (since the process's first guest-triggered log) that
    /// `printed` counts lines for.
    window: AtomicU64,
    /// Lines printed in `window`.
    printed: AtomicU64,
    /// Lines suppressed since the last printed one.
    suppressed: AtomicU64,
}

impl Default for LogLimit {
    fn default() -> Self {
        Self::new()
    }
}

fn seconds_since_start() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs()
}

impl LogLimit {
    /// A call site that has printed nothing yet.
    pub const fn new() -> Self {
        Self {
            window: AtomicU64::new(0),
            printed: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether a line may be printed now. `Some(n)` allows it, `n` being
    /// how many lines were suppressed before it; `None` suppresses it.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(seconds_since_start())
    }

    fn admit_at(&self, now: u64) -> Option<u64> {
        let window = self.window.load(Ordering::Relaxed);
        if now != window
            && self
                .window
                .compare_exchange(window, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.printed.store(0, Ordering::Relaxed);
        }
        // Racing threads may let a line or two more through in a window;
        // the bound only has to stop floods, not be exact.
        if self.printed.fetch_add(1, Ordering::Relaxed) < LINES_PER_SECOND {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// `log::warn!` for events a guest can trigger, limited per call site to
/// [`LINES_PER_SECOND`] lines per second.
#[macro_export]
macro_rules! guest_warn {
    ($($arg:tt)+) => {{
        static LIMIT: $crate::guest_log::LogLimit = $crate::guest_log::LogLimit::new();
        if ::log::log_enabled!(::log::Level::Warn) {
            match LIMIT.admit() {
                Some(0) => ::log::warn!($($arg)+),
                Some(suppressed) => ::log::warn!(
                    "{} ({} similar lines suppressed)",
                    format_args!($($arg)+),
                    suppressed
                ),
                None => {}
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_a_few_lines_per_second_and_counts_the_rest() {
        let limit = LogLimit::new();
        let admitted = (0..100).filter(|_| limit.admit_at(7).is_some()).count();
        assert_eq!(admitted as u64, LINES_PER_SECOND);
        // The next window's first line reports what was held back.
        assert_eq!(limit.admit_at(8), Some(100 - LINES_PER_SECOND));
        assert_eq!(limit.admit_at(8), Some(0));
    }
}
