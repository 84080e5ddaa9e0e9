//! The rate limiter holding requests back on the queue, and limits set
//! while the device runs.

use std::os::unix::io::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use virtio_queue::mock::MockSplitQueue;

use super::*;
use crate::rate_limiter::{RateLimiterConfig, TokenBucketConfig};
use crate::virtio::block::throttle::{Limiter, LimiterClock};

fn bucket(size: u64, refill_ms: u64) -> Option<TokenBucketConfig> {
    Some(TokenBucketConfig {
        size,
        one_time_burst: None,
        refill_time: refill_ms,
    })
}

/// Gives `dev` a limiter on a clock that moves only when the returned
/// handle is advanced.
fn manual_limiter(dev: &mut Block, config: &RateLimiterConfig) -> Arc<Mutex<Instant>> {
    let now = Arc::new(Mutex::new(Instant::now()));
    let clock = LimiterClock::Manual(now.clone());
    dev.rate_limiter = Some(Limiter::with_clock(config, clock).unwrap());
    now
}

fn advance(clock: &Mutex<Instant>, by: Duration) {
    *clock.lock().unwrap() += by;
}

/// Waits (at most a second) for the limiter's timerfd to expire.
fn wait_for_timer(dev: &Block) {
    let fd = dev.rate_limiter.as_ref().unwrap().as_raw_fd();
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, 1000) };
    assert_eq!(n, 1, "the limiter's timer never fired");
}

#[test]
fn ops_limit_holds_requests_on_the_queue_until_the_timer() {
    let mem = memory();
    let mut dev = mem_device(false);
    let config = RateLimiterConfig {
        bandwidth: None,
        ops: bucket(2, 20),
    };
    let clock = manual_limiter(&mut dev, &config);
    let mut h = Harness::with_device(&mem, dev, QSIZE, false, true);
    for i in 0..5u64 {
        h.post(i, T_IN, i, &[(DATA + i * 0x1000, 512, W)]);
    }
    h.dev.process_queue();
    assert_eq!(h.used_idx(), 2);
    assert_eq!(h.dev.metrics().rate_limited, 1);
    // A notification meanwhile changes nothing: the limiter is blocked.
    h.dev.handle_queue_event();
    assert_eq!(h.used_idx(), 2);

    advance(&clock, Duration::from_millis(20));
    wait_for_timer(&h.dev);
    h.dev.handle_rate_limiter_event();
    assert_eq!(h.used_idx(), 4);
    advance(&clock, Duration::from_millis(20));
    wait_for_timer(&h.dev);
    h.dev.handle_rate_limiter_event();
    assert_eq!(h.used_idx(), 5);
    assert_eq!(h.read_mem(STATUS, 5), [status::OK; 5]);
    for i in 0..5u64 {
        let at = i as usize * 512;
        assert_eq!(
            h.read_mem(DATA + i * 0x1000, 512),
            &disk_bytes()[at..at + 512]
        );
    }
}

#[test]
fn bandwidth_counts_data_and_flushes_and_get_id_are_free() {
    let mem = memory();
    let mut dev = mem_device(false);
    let config = RateLimiterConfig {
        bandwidth: bucket(8192, 1000),
        ops: None,
    };
    let _clock = manual_limiter(&mut dev, &config);
    let mut h = Harness::with_device(&mem, dev, QSIZE, false, true);
    h.post(0, T_IN, 0, &[(DATA, 4096, W)]);
    h.post(1, T_FLUSH, 0, &[]);
    h.post(2, T_GET_ID, 0, &[(DATA + 0x4000, 20, W)]);
    h.post(3, T_OUT, 8, &[(DATA + 0x1000, 4096, R)]);
    h.post(4, T_IN, 16, &[(DATA + 0x2000, 512, W)]); // over budget
    h.post(5, T_FLUSH, 0, &[]); // queued behind it
    h.dev.process_queue();
    assert_eq!(h.used_idx(), 4);
    assert_eq!(h.read_mem(STATUS, 6), [0, 0, 0, 0, 0xff, 0xff]);
    assert_eq!(h.dev.metrics().rate_limited, 1);

    // Lifting the limit live wakes the device thread, which drains.
    let _ = h.dev.events().activate.read();
    h.dev
        .set_rate_limiter(&RateLimiterConfig::default())
        .unwrap();
    assert_eq!(h.dev.events().activate.read().unwrap(), 1);
    h.dev.process_queue();
    assert_eq!(h.used_idx(), 6);
    assert_eq!(h.read_mem(STATUS, 6), [status::OK; 6]);
}

#[test]
fn invalid_limits_are_refused_and_change_nothing() {
    let bad = RateLimiterConfig {
        bandwidth: bucket(100, 0), // no refill time
        ops: None,
    };
    let mut dev = mem_device(false);
    assert!(dev.set_rate_limiter(&bad).is_err());
    assert!(dev.rate_limiter.is_none());
    let options = BlockOptions {
        rate_limiter: Some(bad),
        ..BlockOptions::default()
    };
    let disk = RawDisk::new(Box::new(MemStorage::new(vec![0; 512], 512)), false).unwrap();
    assert!(matches!(
        Block::new(Box::new(disk), options),
        Err(BlockError::RateLimiter(_))
    ));
}

/// Limits set on a running device, through the event loop with the real
/// clock: the new limiter's timer is watched and paces the requests.
#[test]
fn limits_set_live_pace_the_event_loop() {
    let mem = memory();
    let block = Arc::new(Mutex::new(mem_device(false)));
    let vq = MockSplitQueue::new(&mem, QSIZE);
    let irq = {
        let mut b = block.lock().unwrap();
        let q = vq.create_queue().unwrap();
        b.activate(mem.clone(), vec![q]).unwrap();
        b.events().activate.write(1).unwrap();
        b.events().interrupt.clone()
    };
    let mut em = EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new().unwrap();
    em.add_subscriber(block.clone());
    em.run_with_timeout(10).unwrap();

    // Two requests per 20 ms.
    let config = RateLimiterConfig {
        bandwidth: None,
        ops: bucket(2, 20),
    };
    block.lock().unwrap().set_rate_limiter(&config).unwrap();
    em.run_with_timeout(10).unwrap();

    let mut h = Harness::driver(&mem, vq, irq);
    for i in 0..8u64 {
        h.post(i, T_IN, i, &[(DATA + i * 0x1000, 512, W)]);
    }
    let start = Instant::now();
    block.lock().unwrap().events().queues[0].write(1).unwrap();
    while h.used_idx() < 8 && start.elapsed() < Duration::from_secs(5) {
        em.run_with_timeout(100).unwrap();
    }
    assert_eq!(h.used_idx(), 8);
    // Two go at once, the other six at 100 per second.
    assert!(
        start.elapsed() >= Duration::from_millis(50),
        "{:?}",
        start.elapsed()
    );
    assert!(block.lock().unwrap().metrics().rate_limited >= 3);
}
