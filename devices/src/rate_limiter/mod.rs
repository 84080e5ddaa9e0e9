//! Per-disk I/O limits: a bandwidth and an operations token bucket, and a
//! timer the owner's event loop polls to resume when tokens are back.
//!
//! Use from a device's queue handler:
//!
//! 1. `consume(1, Ops)`, then `consume(len, Bytes)`; if the second fails,
//!    `manual_replenish(1, Ops)` so the request costs nothing, and stop
//!    processing the queue (the request stays on it).
//! 2. A failed consume arms the timer for when enough tokens will be back
//!    and marks the limiter blocked; every consume fails while blocked, so
//!    requests are served in order rather than small ones overtaking.
//! 3. When the timer fd is readable, call [`RateLimiter::event_handler`]
//!    and process the queue again.
//!
//! Consuming never allocates and never blocks.

mod bucket;
mod config;

use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::time::{Duration, Instant};

use vmm_sys_util::timerfd::TimerFd;

pub use bucket::TokenBucket;
pub use config::{
    ConfigError, RateLimiterConfig, TokenBucketConfig, CLI_REFILL_TIME_MS, MAX_REFILL_TIME_MS,
};

/// Shortest timer the limiter arms. A nearly full bucket would otherwise
/// ask for wake-ups microseconds apart; tokens keep accruing while the
/// limiter sleeps, so waiting a little longer loses no throughput.
pub const MIN_TIMER_DELAY: Duration = Duration::from_millis(1);

/// What a token stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    /// One byte transferred (the bandwidth bucket).
    Bytes,
    /// One request (the ops bucket).
    Ops,
}

impl std::fmt::Display for TokenType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenType::Bytes => "bandwidth",
            TokenType::Ops => "ops",
        })
    }
}

/// Errors from building, updating or servicing a limiter.
#[derive(Debug, thiserror::Error)]
pub enum RateLimiterError {
    /// The configuration was rejected; nothing changed.
    #[error("invalid rate limiter config: {0}")]
    Config(#[from] ConfigError),
    /// The timer could not be created, armed or read.
    #[error("rate limiter timer: {0}")]
    Timer(#[source] std::io::Error),
    /// The timer fd was reported readable but had not expired (for
    /// example, an [`RateLimiter::update`] disarmed it in between).
    /// Harmless: the limiter is no longer blocked by that timer.
    #[error("rate limiter timer event without an expiry")]
    SpuriousEvent,
}

/// The source of "now" for a limiter; injectable so tests control time.
pub trait Clock: std::fmt::Debug + Send {
    /// The current instant; must never go backwards.
    fn now(&self) -> Instant;
}

/// The real monotonic clock (`Instant::now`, `CLOCK_MONOTONIC` on Linux,
/// the same clock the timerfd counts in).
#[derive(Debug, Clone, Copy, Default)]
pub struct MonotonicClock;

impl Clock for MonotonicClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Bandwidth and ops limits for one device.
#[derive(Debug)]
pub struct RateLimiter<C: Clock = MonotonicClock> {
    bandwidth: Option<TokenBucket>,
    ops: Option<TokenBucket>,
    timer: TimerFd,
    blocked: bool,
    /// How long the timer was last armed for (kept for tests and logs).
    last_delay: Duration,
    clock: C,
}

impl RateLimiter {
    /// A limiter on the monotonic clock, with full buckets.
    pub fn new(config: &RateLimiterConfig) -> Result<Self, RateLimiterError> {
        Self::with_clock(config, MonotonicClock)
    }
}

impl<C: Clock> RateLimiter<C> {
    /// A limiter reading time from `clock`, with full buckets.
    pub fn with_clock(config: &RateLimiterConfig, clock: C) -> Result<Self, RateLimiterError> {
        let now = clock.now();
        let bucket = |cfg: &Option<TokenBucketConfig>, kind| match cfg {
            Some(cfg) => TokenBucket::new(cfg, kind, now),
            None => Ok(None),
        };
        Ok(Self {
            bandwidth: bucket(&config.bandwidth, TokenType::Bytes)?,
            ops: bucket(&config.ops, TokenType::Ops)?,
            timer: nonblocking_timer().map_err(RateLimiterError::Timer)?,
            blocked: false,
            last_delay: Duration::ZERO,
            clock,
        })
    }

    /// The bucket for `kind`, if that dimension is limited.
    pub fn bucket(&self, kind: TokenType) -> Option<&TokenBucket> {
        match kind {
            TokenType::Bytes => self.bandwidth.as_ref(),
            TokenType::Ops => self.ops.as_ref(),
        }
    }

    fn bucket_mut(&mut self, kind: TokenType) -> Option<&mut TokenBucket> {
        match kind {
            TokenType::Bytes => self.bandwidth.as_mut(),
            TokenType::Ops => self.ops.as_mut(),
        }
    }

    /// Takes `tokens` of `kind`, all or nothing. Returns `false` while
    /// blocked, or when the tokens are not there — in which case the timer
    /// is armed for when they will be and the limiter becomes blocked.
    /// An unlimited dimension always succeeds.
    pub fn consume(&mut self, tokens: u64, kind: TokenType) -> bool {
        if self.blocked {
            return false;
        }
        let now = self.clock.now();
        let Some(bucket) = self.bucket_mut(kind) else {
            return true;
        };
        if bucket.consume(tokens, now) {
            return true;
        }
        let delay = bucket.time_until_available(tokens).max(MIN_TIMER_DELAY);
        self.block_for(delay);
        false
    }

    fn block_for(&mut self, delay: Duration) {
        match self.timer.reset(delay, None) {
            Ok(()) => {
                self.blocked = true;
                self.last_delay = delay;
            }
            // Not blocking is the lesser evil: the device retries on its
            // next queue notification instead of never being woken.
            Err(e) => log::error!("rate limiter: cannot arm timer for {delay:?}: {e}"),
        }
    }

    /// Gives back `tokens` of `kind` from a successful consume whose request
    /// was abandoned (typically: ops passed, bandwidth refused).
    pub fn manual_replenish(&mut self, tokens: u64, kind: TokenType) {
        if let Some(bucket) = self.bucket_mut(kind) {
            bucket.replenish(tokens);
        }
    }

    /// Whether the limiter is waiting for its timer.
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// Call when the timer fd is readable: consumes the expiry and unblocks.
    /// The owner should then process its queue again.
    pub fn event_handler(&mut self) -> Result<(), RateLimiterError> {
        match self.timer.wait() {
            Ok(_expirations) => {
                self.blocked = false;
                Ok(())
            }
            Err(e) if e.errno() == libc::EAGAIN => Err(RateLimiterError::SpuriousEvent),
            Err(e) => Err(RateLimiterError::Timer(e.into())),
        }
    }

    /// Applies a live change (`PATCH /drives/{id}`): an absent bucket stays
    /// as it is; a zero-size bucket removes that limit; any other bucket is
    /// reconfigured keeping its current tokens (clipped to the new size) or,
    /// if that dimension was unlimited, starts full. The whole update is
    /// validated first, so an error changes nothing.
    ///
    /// The limiter is unblocked, since the wait it was blocked on was
    /// computed for the old limits: the owner should process its queue
    /// again afterwards.
    pub fn update(&mut self, config: &RateLimiterConfig) -> Result<(), RateLimiterError> {
        config.validate()?;
        let now = self.clock.now();
        for (kind, cfg) in [
            (TokenType::Bytes, &config.bandwidth),
            (TokenType::Ops, &config.ops),
        ] {
            let Some(cfg) = cfg else { continue };
            let slot = match kind {
                TokenType::Bytes => &mut self.bandwidth,
                TokenType::Ops => &mut self.ops,
            };
            match slot {
                _ if !cfg.is_limiting() => *slot = None,
                Some(bucket) => bucket.reconfigure(cfg, now),
                None => *slot = TokenBucket::new(cfg, kind, now)?,
            }
        }
        self.timer
            .clear()
            .map_err(|e| RateLimiterError::Timer(e.into()))?;
        self.blocked = false;
        Ok(())
    }
}

impl<C: Clock> AsRawFd for RateLimiter<C> {
    /// The timer fd to poll for readability in the owner's event loop.
    fn as_raw_fd(&self) -> RawFd {
        self.timer.as_raw_fd()
    }
}

/// A `CLOCK_MONOTONIC` timerfd that reads `EAGAIN` instead of blocking, so a
/// stray readiness report can never stall the event loop.
/// (`TimerFd::new` makes a blocking one.)
fn nonblocking_timer() -> std::io::Result<TimerFd> {
    // SAFETY: timerfd_create takes no pointers; the result is checked.
    let fd = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_CLOEXEC | libc::TFD_NONBLOCK,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh timerfd that nothing else owns; TimerFd takes
    // sole ownership and closes it on drop.
    Ok(unsafe { TimerFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests;
