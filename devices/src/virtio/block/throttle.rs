//! The rate limiter: each read or write costs one op token and its data
//! length in bandwidth tokens before it is started.
//!
//! When the limiter refuses, the request goes back on the queue
//! (`go_to_previous_position`) and draining stops, with guest
//! notifications left off; the limiter arms its timerfd, which the event
//! handler watches while the device is active, and draining resumes when
//! it fires. Requests are taken strictly in queue order, so a large
//! request is never starved by small ones behind it.
//!
//! Exempt: flushes and GET_ID (they move no guest data, and a flush held
//! back would only delay durability of writes already paid for), and
//! anything answered without I/O (malformed, unsupported, read-only
//! refusals). Discard and write-zeroes cost one op and no bandwidth:
//! nothing crosses the guest's buffers.

use std::time::Instant;

use virtio_queue::QueueOwnedT;

use super::device::Active;
use super::request::{Request, RequestType};
use super::Block;
use crate::rate_limiter::{
    Clock, RateLimiter, RateLimiterConfig, RateLimiterError, TokenBucketConfig, TokenType,
};

/// The clock a device's limiter reads: the monotonic clock, or in tests
/// one that moves only when told.
#[derive(Debug, Clone, Default)]
pub(super) enum LimiterClock {
    #[default]
    Monotonic,
    #[cfg(test)]
    Manual(std::sync::Arc<std::sync::Mutex<Instant>>),
}

impl Clock for LimiterClock {
    fn now(&self) -> Instant {
        match self {
            LimiterClock::Monotonic => Instant::now(),
            #[cfg(test)]
            LimiterClock::Manual(t) => *t.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }
}

/// A device's limiter.
pub(super) type Limiter = RateLimiter<LimiterClock>;

/// A bucket that limits nothing (size 0), to remove a limit on update.
const UNLIMITED: TokenBucketConfig = TokenBucketConfig {
    size: 0,
    one_time_burst: None,
    refill_time: 0,
};

impl Block {
    /// Replaces the device's limits while it runs (the API's `PATCH
    /// /drives/{id}`): a bucket absent from `config` becomes unlimited.
    /// Tokens already in a bucket that stays are kept (clipped to its new
    /// size), so reapplying the same limits grants no new budget. On
    /// error nothing changed.
    ///
    /// Callable from any thread holding the device lock: the device
    /// thread is told through the activation eventfd, which makes it
    /// watch a new limiter's timer and drain requests the old limits held
    /// back.
    pub fn set_rate_limiter(&mut self, config: &RateLimiterConfig) -> Result<(), RateLimiterError> {
        match &mut self.rate_limiter {
            Some(limiter) => limiter.update(&RateLimiterConfig {
                bandwidth: Some(config.bandwidth.unwrap_or(UNLIMITED)),
                ops: Some(config.ops.unwrap_or(UNLIMITED)),
            })?,
            None => {
                self.rate_limiter = Some(Limiter::with_clock(config, LimiterClock::default())?);
            }
        }
        if let Err(e) = self.events.activate.write(1) {
            log::error!("virtio-blk: cannot wake the device thread for new limits: {e}");
        }
        Ok(())
    }

    /// Takes the tokens `req` costs; `false` (nothing taken) when the
    /// limiter says to wait.
    pub(super) fn admit(&mut self, req: &Request) -> bool {
        let Some(limiter) = &mut self.rate_limiter else {
            return true;
        };
        let bytes = match req.request_type {
            RequestType::In | RequestType::Out => req.data_len,
            RequestType::Discard | RequestType::WriteZeroes => 0,
            RequestType::Flush | RequestType::GetDeviceId | RequestType::Unsupported(_) => {
                return true
            }
        };
        if !limiter.consume(1, TokenType::Ops) {
            return false;
        }
        if bytes > 0 && !limiter.consume(bytes, TokenType::Bytes) {
            limiter.manual_replenish(1, TokenType::Ops);
            return false;
        }
        true
    }

    /// Puts the chain just taken back on the queue: the limiter refused it.
    pub(super) fn hold_back(&mut self, a: &mut Active) {
        a.queue.go_to_previous_position();
        a.throttled = true;
        self.metrics.rate_limited += 1;
    }

    /// Call when the limiter's timerfd is readable: tokens are back, so
    /// drain what the limiter held back.
    pub fn handle_rate_limiter_event(&mut self) {
        let Some(limiter) = &mut self.rate_limiter else {
            return;
        };
        match limiter.event_handler() {
            Ok(()) | Err(RateLimiterError::SpuriousEvent) => {}
            Err(e) => log::error!("virtio-blk: rate limiter: {e}"),
        }
        if self.active.as_ref().is_some_and(|a| a.throttled) {
            self.process_queue();
        }
    }
}
