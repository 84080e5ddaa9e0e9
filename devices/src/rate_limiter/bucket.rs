//! One token bucket, refilled continuously with exact integer arithmetic.
//!
//! Time is always passed in, never read here, so the math is deterministic
//! under test.

use std::time::{Duration, Instant};

use super::config::{ConfigError, TokenBucketConfig};
use super::TokenType;

const NANOS_PER_MILLI: u128 = 1_000_000;

/// A bucket of `size` tokens that refills from empty to full in
/// `refill_time`, plus a one-time burst that is spent first and never
/// refills.
///
/// Refill is continuous: after `t` ns the bucket has earned
/// `t * size / refill_ns` tokens. The fractional token left over is kept
/// (`carry`), so many small refills add up to exactly the same as one large
/// one and the long-term rate is exact.
///
/// A request larger than `size` could never fit. It is let through when the
/// bucket is full: the bucket empties and the excess becomes a debt that
/// refill pays off before the bucket starts filling again. The request is
/// thus not starved, and the sustained rate still never exceeds
/// `size / refill_time` (an oversized request just costs the time its size
/// is worth).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBucket {
    size: u64,
    refill_time_ms: u64,
    /// Tokens available now; at most `size`.
    budget: u64,
    /// Burst tokens left; spent before `budget`.
    one_time_burst: u64,
    /// Tokens an oversized request took beyond a full bucket. Non-zero only
    /// while `budget` is zero.
    debt: u64,
    /// Refill earned but not yet a whole token, in token·ns (< `refill_ns`).
    carry: u128,
    last_refill: Instant,
}

impl TokenBucket {
    /// A full bucket for `config`, or `None` when the config limits nothing
    /// (size zero). `kind` only names the bucket in errors.
    pub fn new(
        config: &TokenBucketConfig,
        kind: TokenType,
        now: Instant,
    ) -> Result<Option<Self>, ConfigError> {
        config.validate(kind)?;
        if !config.is_limiting() {
            return Ok(None);
        }
        Ok(Some(Self {
            size: config.size,
            refill_time_ms: config.refill_time,
            budget: config.size,
            one_time_burst: config.burst(),
            debt: 0,
            carry: 0,
            last_refill: now,
        }))
    }

    /// Capacity in tokens.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Milliseconds to refill from empty to full.
    pub fn refill_time_ms(&self) -> u64 {
        self.refill_time_ms
    }

    /// Tokens in the bucket as of the last consume or refill (the one-time
    /// burst not included).
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Burst tokens left.
    pub fn one_time_burst(&self) -> u64 {
        self.one_time_burst
    }

    /// Validation caps `refill_time_ms` at 2^32 − 1, so this is < 2^52 and
    /// products with a `u64` token count (< 2^65 with debt) fit in `u128`.
    fn refill_ns(&self) -> u128 {
        u128::from(self.refill_time_ms) * NANOS_PER_MILLI
    }

    /// Credits the tokens earned since the last refill: debt first, then
    /// the budget, up to `size`.
    fn refill(&mut self, now: Instant) {
        // Callers use a monotonic clock; an instant older than the last
        // refill (two racing readers) simply earns nothing.
        let Some(elapsed) = now.checked_duration_since(self.last_refill) else {
            return;
        };
        self.last_refill = now;
        let missing = u128::from(self.debt) + u128::from(self.size - self.budget);
        if missing == 0 {
            self.carry = 0;
            return;
        }
        let refill_ns = self.refill_ns();
        // Overflow means more than 2^128 token·ns, i.e. > 2^76 tokens: far
        // beyond any deficit, so the bucket is simply full.
        let earned_units = elapsed
            .as_nanos()
            .checked_mul(u128::from(self.size))
            .and_then(|units| units.checked_add(self.carry));
        let Some(units) = earned_units.filter(|units| units / refill_ns < missing) else {
            self.debt = 0;
            self.budget = self.size;
            self.carry = 0;
            return;
        };
        let earned = units / refill_ns;
        self.carry = units % refill_ns;
        let to_debt = earned.min(u128::from(self.debt));
        // Both parts are below `missing`'s components, so they fit in u64.
        self.debt -= u64::try_from(to_debt).unwrap_or(self.debt);
        let to_budget = u64::try_from(earned - to_debt).unwrap_or(u64::MAX);
        self.budget = self.budget.saturating_add(to_budget).min(self.size);
    }

    /// Takes `tokens` if they are all available (burst first, then the
    /// bucket); takes nothing otherwise. An oversized request (more than
    /// burst + `size`) passes only when the bucket is full, leaving a debt.
    pub fn consume(&mut self, tokens: u64, now: Instant) -> bool {
        self.refill(now);
        let from_burst = tokens.min(self.one_time_burst);
        let rest = tokens - from_burst;
        let fits = rest <= self.budget && self.debt == 0;
        let oversized_on_full = rest > self.size && self.budget == self.size;
        if !fits && !oversized_on_full {
            return false;
        }
        self.one_time_burst -= from_burst;
        if fits {
            self.budget -= rest;
        } else {
            self.debt = rest - self.size;
            self.budget = 0;
        }
        true
    }

    /// Gives back `tokens` taken by an earlier [`consume`](Self::consume)
    /// (when a request is abandoned): they pay off debt, then refill the
    /// bucket, and whatever does not fit goes back to the one-time burst,
    /// where it most likely came from.
    pub fn replenish(&mut self, tokens: u64) {
        let to_debt = tokens.min(self.debt);
        self.debt -= to_debt;
        let tokens = tokens - to_debt;
        let to_budget = tokens.min(self.size - self.budget);
        self.budget += to_budget;
        self.one_time_burst = self.one_time_burst.saturating_add(tokens - to_budget);
    }

    /// How long after the last refill until `consume(tokens)` can succeed,
    /// assuming nothing else is taken meanwhile. Zero if it can now.
    pub fn time_until_available(&self, tokens: u64) -> Duration {
        let rest = tokens.saturating_sub(self.one_time_burst);
        // An oversized request waits for a full bucket.
        let target = rest.min(self.size);
        let deficit = u128::from(self.debt) + u128::from(target.saturating_sub(self.budget));
        if deficit == 0 {
            return Duration::ZERO;
        }
        // Need t with floor((t * size + carry) / refill_ns) >= deficit.
        // deficit < 2^65 and refill_ns < 2^52, so the product fits; carry
        // < refill_ns <= the product, so the subtraction cannot underflow.
        let units = deficit * self.refill_ns() - self.carry;
        let nanos = units.div_ceil(u128::from(self.size));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Switches to `config` (validated, limiting) at `now`, keeping what the
    /// bucket holds: the refill due so far is credited at the old rate, the
    /// budget is clipped to the new size, a debt stays owed, and the burst
    /// becomes the new config's (an update is a fresh one-time grant).
    pub(super) fn reconfigure(&mut self, config: &TokenBucketConfig, now: Instant) {
        self.refill(now);
        self.size = config.size;
        self.refill_time_ms = config.refill_time;
        self.budget = self.budget.min(self.size);
        self.one_time_burst = config.burst();
        // The carry is in units of the old period; dropping it loses less
        // than one token.
        self.carry = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::MAX_REFILL_TIME_MS;
    use super::*;

    fn bucket(size: u64, burst: u64, refill_ms: u64, now: Instant) -> TokenBucket {
        let config = TokenBucketConfig {
            size,
            one_time_burst: Some(burst),
            refill_time: refill_ms,
        };
        TokenBucket::new(&config, TokenType::Bytes, now)
            .unwrap()
            .unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn zero_size_is_no_bucket_and_invalid_configs_fail() {
        let now = Instant::now();
        let off = TokenBucketConfig {
            size: 0,
            one_time_burst: None,
            refill_time: 0,
        };
        assert_eq!(TokenBucket::new(&off, TokenType::Ops, now), Ok(None));
        let bad = TokenBucketConfig { size: 1, ..off };
        assert!(TokenBucket::new(&bad, TokenType::Ops, now).is_err());
    }

    #[test]
    fn refills_continuously_and_caps_at_size() {
        let t0 = Instant::now();
        let mut b = bucket(1000, 0, 1000, t0);
        assert!(b.consume(1000, t0));
        assert!(!b.consume(1, t0));
        // 1 token per ms.
        assert!(!b.consume(251, t0 + ms(250)));
        assert!(b.consume(250, t0 + ms(250)));
        assert_eq!(b.budget(), 0);
        // Long idle: full, not more.
        assert!(b.consume(0, t0 + ms(100_000)));
        assert_eq!(b.budget(), 1000);
    }

    #[test]
    fn fractional_refill_is_carried_not_lost() {
        let t0 = Instant::now();
        // 3 tokens per 1000 ms: one token every 333.33 ms.
        let mut b = bucket(3, 0, 1000, t0);
        assert!(b.consume(3, t0));
        // Ten refills of 100 ms each earn exactly 3 tokens, as one 1000 ms
        // refill would; truncating each step would earn nothing.
        for step in 1..=10 {
            assert!(b.consume(0, t0 + ms(100 * step)));
            if step == 4 {
                assert_eq!(b.budget(), 1, "1.2 tokens earned");
            }
        }
        assert_eq!(b.budget(), 3);
    }

    #[test]
    fn burst_is_spent_first_and_never_refills() {
        let t0 = Instant::now();
        let mut b = bucket(100, 50, 1000, t0);
        assert!(b.consume(120, t0));
        assert_eq!((b.one_time_burst(), b.budget()), (0, 30));
        assert!(b.consume(30, t0));
        assert!(b.consume(100, t0 + ms(1000)));
        assert_eq!(b.one_time_burst(), 0);
        assert!(!b.consume(1, t0 + ms(1000)));
    }

    #[test]
    fn consume_is_all_or_nothing() {
        let t0 = Instant::now();
        let mut b = bucket(100, 10, 1000, t0);
        assert!(b.consume(60, t0));
        assert!(!b.consume(51, t0), "burst spent, 50 left in the bucket");
        assert_eq!((b.one_time_burst(), b.budget()), (0, 50));
        assert!(b.consume(50, t0));
    }

    #[test]
    fn oversized_request_passes_on_a_full_bucket_and_is_paid_for() {
        let t0 = Instant::now();
        let mut b = bucket(100, 0, 1000, t0);
        assert!(b.consume(1, t0));
        assert!(!b.consume(250, t0), "only on a full bucket");
        assert!(b.consume(250, t0 + ms(10)));
        assert_eq!(b.budget(), 0);
        // 150 tokens of debt: 1.5 s before the bucket holds anything.
        assert_eq!(b.time_until_available(1), ms(1510));
        assert!(!b.consume(1, t0 + ms(1519)));
        assert!(b.consume(1, t0 + ms(1520)));
        // Another oversized request must wait for a full bucket.
        assert_eq!(b.time_until_available(1000), ms(1000));
    }

    #[test]
    fn time_until_available_is_exact_and_accounts_for_carry() {
        let t0 = Instant::now();
        let mut b = bucket(1000, 0, 1000, t0);
        assert!(b.consume(1000, t0));
        assert_eq!(b.time_until_available(400), ms(400));
        assert_eq!(b.time_until_available(0), Duration::ZERO);
        // 0.5 ms in: half a token carried, so 400 tokens are 399.5 ms away.
        assert!(!b.consume(400, t0 + Duration::from_micros(500)));
        assert_eq!(b.time_until_available(400), Duration::from_micros(399_500));
        assert!(b.consume(400, t0 + ms(400)));
    }

    #[test]
    fn replenish_restores_what_consume_took() {
        let t0 = Instant::now();
        let mut b = bucket(100, 10, 1000, t0);
        let before = b.clone();
        assert!(b.consume(50, t0));
        b.replenish(50);
        assert_eq!(b, before);
        assert!(b.consume(300, t0));
        b.replenish(300);
        assert_eq!(b, before);
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let t0 = Instant::now();
        let mut b = bucket(u64::MAX, u64::MAX, MAX_REFILL_TIME_MS, t0);
        assert!(b.consume(u64::MAX, t0));
        assert!(b.consume(u64::MAX, t0));
        assert!(!b.consume(u64::MAX, t0));
        let full = Duration::from_millis(MAX_REFILL_TIME_MS);
        assert_eq!(b.time_until_available(u64::MAX), full);
        let later = t0 + full / 2;
        assert!(b.consume(u64::MAX / 2, later));
        assert!(!b.consume(2, later));
        // Centuries of idle time.
        let far = t0 + Duration::from_secs(1 << 40);
        assert!(b.consume(u64::MAX, far));

        // An oversized request on a tiny, slow bucket: a debt of ~2^64
        // tokens at 1 token per 2^32 ms still yields a finite wait.
        let mut slow = bucket(1, 0, MAX_REFILL_TIME_MS, t0);
        assert!(slow.consume(u64::MAX, t0));
        assert_eq!(slow.time_until_available(1), Duration::from_nanos(u64::MAX));
        slow.replenish(u64::MAX);
        assert_eq!(slow.budget(), 1);
        // An instant older than the last refill earns nothing, no panic.
        assert!(slow.consume(1, t0 + ms(5)));
        assert!(!slow.consume(1, t0));
    }

    #[test]
    fn reconfigure_keeps_state() {
        let t0 = Instant::now();
        let mut b = bucket(1000, 0, 1000, t0);
        assert!(b.consume(900, t0));
        let smaller = TokenBucketConfig {
            size: 50,
            one_time_burst: Some(7),
            refill_time: 100,
        };
        // 100 ms at the old rate earns 100 tokens: 200, clipped to 50.
        b.reconfigure(&smaller, t0 + ms(100));
        assert_eq!((b.size(), b.budget(), b.one_time_burst()), (50, 50, 7));
        assert!(b.consume(57, t0 + ms(100)));
        // New rate: 0.5 token per ms.
        assert_eq!(b.time_until_available(10), ms(20));
        assert_eq!(b.refill_time_ms(), 100);
    }
}
