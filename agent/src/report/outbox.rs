//! What the pusher keeps between attempts: the reports not yet delivered
//! (a bounded queue, oldest first) and the delay before the next try. No
//! I/O and no clock here, so the rules are tested on their own.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;

/// Why a report was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The interval came round.
    Periodic,
    /// An instance's state changed (one report for a burst of them).
    StateChange,
}

impl Reason {
    /// The word in the report's `reason` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Periodic => "periodic",
            Reason::StateChange => "state-change",
        }
    }
}

/// One report, serialized once when it is made: a retry sends the same
/// bytes, so the receiver can tell a repeat by its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub sequence: u64,
    pub reason: Reason,
    pub body: Bytes,
}

/// The undelivered reports in sequence order. At most `capacity` wait in
/// the queue (plus the one being sent); when it is full the oldest is
/// dropped and counted: a receiver that was away long wants the newest
/// state more than the whole history.
#[derive(Debug)]
pub struct Outbox {
    queue: VecDeque<Report>,
    capacity: usize,
    /// Whether a report taken by [`Outbox::take`] has not been settled
    /// yet (delivered or put back).
    in_flight: bool,
    dropped: u64,
}

impl Outbox {
    /// An empty outbox holding up to `capacity` (at least 1) reports.
    pub fn new(capacity: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            capacity: capacity.max(1),
            in_flight: false,
            dropped: 0,
        }
    }

    /// Queues a new report (the newest), dropping the oldest if full.
    pub fn push(&mut self, report: Report) {
        if self.queue.len() >= self.capacity {
            self.queue.pop_front();
            self.dropped += 1;
        }
        self.queue.push_back(report);
    }

    /// The oldest report, to send next; it counts as in the backlog
    /// until [`Outbox::delivered`] or [`Outbox::put_back`].
    pub fn take(&mut self) -> Option<Report> {
        let report = self.queue.pop_front()?;
        self.in_flight = true;
        Some(report)
    }

    /// The report taken last was delivered.
    pub fn delivered(&mut self) {
        self.in_flight = false;
    }

    /// The report taken last was not delivered: it goes back to the
    /// front, ahead of newer ones, unless the queue filled up meanwhile;
    /// then it is the oldest, so it is the one dropped.
    pub fn put_back(&mut self, report: Report) {
        self.in_flight = false;
        if self.queue.len() >= self.capacity {
            self.dropped += 1;
        } else {
            self.queue.push_front(report);
        }
    }

    /// Reports not yet delivered, the one being sent included.
    pub fn backlog(&self) -> usize {
        self.queue.len() + usize::from(self.in_flight)
    }

    /// Reports dropped unsent since the agent started.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// Exponential backoff between failed attempts: `first`, doubling up to
/// `cap`, back to `first` after a success. Keeps a receiver that is down
/// from being hammered, and one that is back from waiting long.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, cap: Duration) -> Self {
        Self {
            first,
            cap,
            next: first.min(cap),
        }
    }

    /// An attempt failed: how long to wait before the next one.
    pub fn failed(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.cap);
        delay
    }

    /// An attempt succeeded: the next failure waits `first` again.
    pub fn succeeded(&mut self) {
        self.next = self.first.min(self.cap);
    }
}

/// `delay` shortened by up to a tenth, `random` choosing how much: agents
/// restarted together (a host reboot, a receiver outage) do not retry in
/// step, and the delay never passes the backoff's cap.
pub fn jittered(delay: Duration, random: u32) -> Duration {
    let tenth = delay / 10;
    let fraction = f64::from(random) / f64::from(u32::MAX);
    delay.saturating_sub(tenth.mul_f64(fraction))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(sequence: u64) -> Report {
        Report {
            sequence,
            reason: Reason::Periodic,
            body: Bytes::from(sequence.to_string()),
        }
    }

    fn sequences(outbox: &mut Outbox) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(r) = outbox.take() {
            out.push(r.sequence);
            outbox.delivered();
        }
        out
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets_on_success() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let delays: Vec<u64> = (0..9).map(|_| b.failed().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        b.succeeded();
        assert_eq!(b.failed(), Duration::from_secs(1));
        assert_eq!(b.failed(), Duration::from_secs(2));
        // A first delay above the cap is the cap.
        let mut b = Backoff::new(Duration::from_secs(90), Duration::from_secs(60));
        assert_eq!(b.failed(), Duration::from_secs(60));
    }

    #[test]
    fn jitter_only_shortens_and_by_a_tenth_at_most() {
        let d = Duration::from_secs(60);
        assert_eq!(jittered(d, 0), d);
        assert_eq!(jittered(d, u32::MAX), Duration::from_secs(54));
        let mid = jittered(d, u32::MAX / 2);
        assert!(mid > Duration::from_secs(54) && mid < d, "{mid:?}");
        assert_eq!(jittered(Duration::ZERO, 7), Duration::ZERO);
    }

    #[test]
    fn delivers_in_order_and_a_failed_report_goes_first_again() {
        let mut o = Outbox::new(8);
        for s in 1..=3 {
            o.push(report(s));
        }
        let first = o.take().unwrap();
        assert_eq!(first.sequence, 1);
        assert_eq!(o.backlog(), 3, "the report being sent is still owed");
        o.push(report(4));
        o.put_back(first);
        assert_eq!(o.backlog(), 4);
        assert_eq!(sequences(&mut o), [1, 2, 3, 4]);
        assert_eq!(o.backlog(), 0);
        assert_eq!(o.dropped(), 0);
    }

    #[test]
    fn a_full_backlog_drops_the_oldest_and_counts_it() {
        let mut o = Outbox::new(3);
        for s in 1..=5 {
            o.push(report(s));
        }
        assert_eq!(o.backlog(), 3);
        assert_eq!(o.dropped(), 2);
        assert_eq!(sequences(&mut o), [3, 4, 5]);
    }

    #[test]
    fn a_report_failing_while_the_queue_filled_is_the_one_dropped() {
        let mut o = Outbox::new(2);
        o.push(report(1));
        let sending = o.take().unwrap();
        o.push(report(2));
        o.push(report(3));
        assert_eq!(o.backlog(), 3, "two queued and one in flight");
        o.put_back(sending);
        assert_eq!(o.dropped(), 1);
        assert_eq!(sequences(&mut o), [2, 3]);
        // A zero capacity still holds one.
        let mut o = Outbox::new(0);
        o.push(report(1));
        o.push(report(2));
        assert_eq!((o.backlog(), o.dropped()), (1, 1));
    }
}
