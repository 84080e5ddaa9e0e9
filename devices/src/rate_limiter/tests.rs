use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::*;

/// A clock that only moves when told to.
#[derive(Debug, Clone)]
struct ManualClock {
    base: Instant,
    offset_ns: Arc<AtomicU64>,
}

impl ManualClock {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            offset_ns: Arc::new(AtomicU64::new(0)),
        }
    }

    fn advance(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap();
        self.offset_ns.fetch_add(ns, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + Duration::from_nanos(self.offset_ns.load(Ordering::SeqCst))
    }
}

fn bucket(size: u64, refill_ms: u64) -> Option<TokenBucketConfig> {
    Some(TokenBucketConfig {
        size,
        one_time_burst: None,
        refill_time: refill_ms,
    })
}

fn limiter(bandwidth: u64, ops: u64) -> (ManualClock, RateLimiter<ManualClock>) {
    let clock = ManualClock::new();
    let config = RateLimiterConfig {
        bandwidth: bucket(bandwidth, 1000),
        ops: bucket(ops, 1000),
    };
    let limiter = RateLimiter::with_clock(&config, clock.clone()).unwrap();
    (clock, limiter)
}

#[test]
fn unlimited_dimensions_always_pass() {
    let mut rl = RateLimiter::new(&RateLimiterConfig::default()).unwrap();
    for _ in 0..1000 {
        assert!(rl.consume(u64::MAX, TokenType::Bytes));
        assert!(rl.consume(1, TokenType::Ops));
    }
    assert!(!rl.is_blocked());
    assert!(rl.bucket(TokenType::Bytes).is_none());
    // A zero-size bucket is no limit either.
    let cfg = RateLimiterConfig::from_rates(Some(0), None);
    let mut rl = RateLimiter::new(&cfg).unwrap();
    assert!(rl.consume(u64::MAX, TokenType::Bytes));
}

#[test]
fn refused_request_costs_nothing_blocks_and_arms_the_timer() {
    let (_clock, mut rl) = limiter(1000, 10);
    assert!(rl.consume(1, TokenType::Ops));
    assert!(rl.consume(600, TokenType::Bytes));
    assert!(!rl.timer.is_armed().unwrap());

    assert!(rl.consume(1, TokenType::Ops));
    assert!(!rl.consume(600, TokenType::Bytes));
    rl.manual_replenish(1, TokenType::Ops);
    assert_eq!(rl.bucket(TokenType::Ops).unwrap().budget(), 9);
    assert_eq!(rl.bucket(TokenType::Bytes).unwrap().budget(), 400);

    // 200 more bytes at 1 byte/ms.
    assert!(rl.is_blocked());
    assert!(rl.timer.is_armed().unwrap());
    assert_eq!(rl.last_delay, Duration::from_millis(200));
    // Blocked: even an affordable request waits its turn.
    assert!(!rl.consume(1, TokenType::Ops));
    assert_eq!(rl.bucket(TokenType::Ops).unwrap().budget(), 9);
}

#[test]
fn timer_expiry_unblocks_and_early_events_are_spurious() {
    let (clock, mut rl) = limiter(1000, 10);
    assert!(rl.consume(1000, TokenType::Bytes));
    assert!(!rl.consume(1, TokenType::Bytes));
    // One byte is 1 ms away: the minimum delay.
    assert_eq!(rl.last_delay, MIN_TIMER_DELAY);
    assert!(rl.is_blocked());

    // Let the real timer expire; the manual clock says 1 ms passed.
    std::thread::sleep(Duration::from_millis(20));
    clock.advance(Duration::from_millis(1));
    rl.event_handler().unwrap();
    assert!(!rl.is_blocked());
    assert!(rl.consume(1, TokenType::Bytes));
    assert!(matches!(
        rl.event_handler(),
        Err(RateLimiterError::SpuriousEvent)
    ));
}

#[test]
fn spurious_event_while_armed_keeps_the_limiter_blocked() {
    let (_clock, mut rl) = limiter(1000, 10);
    assert!(rl.consume(1000, TokenType::Bytes));
    assert!(!rl.consume(1000, TokenType::Bytes));
    assert_eq!(rl.last_delay, Duration::from_secs(1));
    assert!(matches!(
        rl.event_handler(),
        Err(RateLimiterError::SpuriousEvent)
    ));
    assert!(rl.is_blocked());
}

#[test]
fn oversized_request_waits_for_a_full_bucket() {
    let (clock, mut rl) = limiter(1000, 10);
    assert!(rl.consume(10, TokenType::Bytes));
    assert!(!rl.consume(5000, TokenType::Bytes));
    assert_eq!(rl.last_delay, Duration::from_millis(10));
    rl.blocked = false; // as if the timer had fired
    clock.advance(Duration::from_millis(10));
    assert!(rl.consume(5000, TokenType::Bytes));
    // It cost 5 s worth of tokens: the next byte is 4 s + 1 ms away.
    assert!(!rl.consume(1, TokenType::Bytes));
    assert_eq!(rl.last_delay, Duration::from_millis(4001));
}

#[test]
fn update_reconfigures_adds_and_removes_buckets() {
    let clock = ManualClock::new();
    let config = RateLimiterConfig {
        bandwidth: bucket(1000, 1000),
        ops: None,
    };
    let mut rl = RateLimiter::with_clock(&config, clock.clone()).unwrap();
    assert!(rl.consume(900, TokenType::Bytes));
    assert!(!rl.consume(500, TokenType::Bytes));
    assert!(rl.is_blocked());

    // Bandwidth: keep the 100 tokens left, now out of 5000; ops: new, full.
    let patch: RateLimiterConfig = serde_json::from_str(
        r#"{"bandwidth": {"size": 5000, "refill_time": 1000}, "ops": {"size": 2, "refill_time": 100}}"#,
    )
    .unwrap();
    rl.update(&patch).unwrap();
    assert!(!rl.is_blocked());
    assert!(!rl.timer.is_armed().unwrap());
    assert_eq!(rl.bucket(TokenType::Bytes).unwrap().budget(), 100);
    assert_eq!(rl.bucket(TokenType::Bytes).unwrap().size(), 5000);
    assert_eq!(rl.bucket(TokenType::Ops).unwrap().budget(), 2);

    // Absent buckets are left alone.
    rl.update(&RateLimiterConfig::default()).unwrap();
    assert_eq!(rl.bucket(TokenType::Ops).unwrap().size(), 2);

    // An invalid update changes nothing, even its valid half.
    let bad = RateLimiterConfig {
        bandwidth: bucket(0, 0),
        ops: bucket(1, 0),
    };
    assert!(matches!(
        rl.update(&bad),
        Err(RateLimiterError::Config(ConfigError::ZeroRefillTime { .. }))
    ));
    assert!(rl.bucket(TokenType::Bytes).is_some());

    // Size zero removes a limit.
    let remove = RateLimiterConfig {
        bandwidth: bucket(0, 0),
        ops: None,
    };
    rl.update(&remove).unwrap();
    assert!(rl.bucket(TokenType::Bytes).is_none());
    assert!(rl.consume(u64::MAX, TokenType::Bytes));
}

#[test]
fn invalid_initial_config_is_a_typed_error() {
    let config = RateLimiterConfig {
        bandwidth: None,
        ops: bucket(10, 0),
    };
    let err = RateLimiter::new(&config).unwrap_err();
    assert!(matches!(
        err,
        RateLimiterError::Config(ConfigError::ZeroRefillTime {
            bucket: TokenType::Ops,
            size: 10
        })
    ));
}
