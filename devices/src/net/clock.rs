//! Time for the datapath: a cheap monotonic millisecond clock for
//! timeouts (connection tracking, metadata retransmissions) and the Unix
//! time flow-log records need, derived from it with an offset taken once,
//! so the per-packet path never reads the wall clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds of `CLOCK_MONOTONIC_COARSE` (a few ms of resolution, read
/// from the vDSO without a system call).
pub fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill; the clock id
    // is a constant Linux always has.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs * 1000 + nanos / 1_000_000
}

/// Converts [`monotonic_ms`] readings to Unix milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Unix ms minus monotonic ms, when the clock was made.
    unix_offset_ms: i128,
}

impl Clock {
    /// A clock whose Unix offset is taken now.
    pub fn new() -> Self {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let unix_ms = i128::try_from(unix_ms).unwrap_or(0);
        Self {
            unix_offset_ms: unix_ms - i128::from(monotonic_ms()),
        }
    }

    /// Monotonic milliseconds now.
    pub fn now_ms(&self) -> u64 {
        monotonic_ms()
    }

    /// The Unix time, in ms, of the monotonic reading `mono_ms`.
    pub fn unix_ms(&self, mono_ms: u64) -> u64 {
        u64::try_from(i128::from(mono_ms) + self.unix_offset_ms).unwrap_or(0)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_time_follows_the_monotonic_clock() {
        let clock = Clock::new();
        let mono = clock.now_ms();
        let unix = clock.unix_ms(mono);
        let wall = u64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap();
        assert!(unix.abs_diff(wall) < 1000, "{unix} vs {wall}");
        assert_eq!(clock.unix_ms(mono + 5000), unix + 5000);
    }
}
