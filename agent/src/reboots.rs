//! Guest reboots in a loop. A guest reboot ends its VMM with the reboot
//! status and the supervisor starts a new VMM on the same disk, as EC2
//! keeps a rebooted instance running. A guest that reboots again right
//! after it started (a kernel that panics on boot with `panic=-1`, a
//! broken init) would make that a tight loop of VMM starts, each one
//! costing the host a process, a boot and a log line; so a reboot soon
//! after the last restart waits before the next, twice as long each time
//! it happens again in a row (1 s, 2 s, 4 s … up to [`MAX_WAIT`]), and
//! the instance says so in its state reason while it waits.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A reboot this soon after the last restart counts as a loop.
pub const QUICK: Duration = Duration::from_secs(30);
/// The longest wait between restarts.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

/// The restarts of every instance whose guest rebooted since the agent
/// started (how many quick reboots came before a restart of the agent is
/// not known, so a loop starts counting again then; a wait it was in the
/// middle of is kept in the instance's record and goes on).
#[derive(Debug, Default)]
pub struct RebootBackoff {
    /// Per instance: when its last restart began, and how many quick
    /// reboots in a row led to it.
    restarts: Mutex<HashMap<String, (Instant, u32)>>,
}

/// What to do about one guest reboot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restart {
    /// How long to wait before the new VMM starts.
    pub wait: Duration,
    /// Quick reboots in a row, this one included (0: not a loop).
    pub in_a_row: u32,
}

impl RebootBackoff {
    /// Instance `id`'s guest rebooted at `now`: how long its next VMM
    /// waits. Records the restart as beginning once that wait is over.
    pub fn rebooted(&self, id: &str, now: Instant) -> Restart {
        let mut restarts = self
            .restarts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let in_a_row = match restarts.get(id) {
            Some(&(last, n)) if now.saturating_duration_since(last) < QUICK => n + 1,
            _ => 0,
        };
        let wait = match in_a_row {
            0 => Duration::ZERO,
            n => Duration::from_secs(1u64 << (n - 1).min(16)).min(MAX_WAIT),
        };
        restarts.insert(id.to_string(), (now + wait, in_a_row));
        Restart { wait, in_a_row }
    }

    /// Forgets instance `id` (stopped or terminated: a later start is a
    /// fresh beginning).
    pub fn forget(&self, id: &str) {
        self.restarts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reboot_after_a_while_restarts_at_once_and_a_loop_backs_off() {
        let b = RebootBackoff::default();
        let t0 = Instant::now();
        let first = b.rebooted("i-1", t0);
        assert_eq!(
            first,
            Restart {
                wait: Duration::ZERO,
                in_a_row: 0
            }
        );
        // Again 2 s after that restart: a loop, waits 1 s, then 2, 4, 8.
        let mut now = t0;
        for (n, wait) in [(1, 1), (2, 2), (3, 4), (4, 8)] {
            let last_wait = b.restarts.lock().unwrap()["i-1"].0 - now;
            now += last_wait + Duration::from_secs(2);
            assert_eq!(
                b.rebooted("i-1", now),
                Restart {
                    wait: Duration::from_secs(wait),
                    in_a_row: n
                }
            );
        }
        // Another instance is not affected.
        assert_eq!(b.rebooted("i-2", now).wait, Duration::ZERO);
        // A guest that ran longer than QUICK since its restart began is
        // not in a loop any more.
        let later = now + Duration::from_secs(8) + QUICK;
        assert_eq!(b.rebooted("i-1", later).in_a_row, 0);
    }

    #[test]
    fn the_wait_stops_growing_at_the_maximum() {
        let b = RebootBackoff::default();
        let mut now = Instant::now();
        let mut last = Duration::ZERO;
        for _ in 0..40 {
            now += last + Duration::from_secs(1);
            last = b.rebooted("i-1", now).wait;
        }
        assert_eq!(last, MAX_WAIT);
    }

    #[test]
    fn forgetting_starts_afresh() {
        let b = RebootBackoff::default();
        let t0 = Instant::now();
        b.rebooted("i-1", t0);
        assert_eq!(b.rebooted("i-1", t0 + Duration::from_secs(1)).in_a_row, 1);
        b.forget("i-1");
        assert_eq!(b.rebooted("i-1", t0 + Duration::from_secs(3)).in_a_row, 0);
    }
}
