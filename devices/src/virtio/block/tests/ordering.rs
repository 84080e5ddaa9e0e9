//! Completion order, flushes, reset and drop with requests in flight.
//!
//! The sync engine can hold completions back and release them latest
//! first, which plays out deterministically what a real disk does at
//! random: requests finishing out of order, a flush arriving while writes
//! are unfinished, a reset in the middle of it all.

use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::virtio::block::engine::Engine;

/// A raw file device on the sync engine, holding completions back.
fn held_device(tmp: &TempFile) -> Block {
    let mut dev = file_device(tmp.as_path(), IoEngine::Sync);
    hold(&mut dev, true);
    dev
}

#[test]
fn requests_completing_out_of_order_are_answered_correctly() {
    let tmp = image_file();
    let mem = memory();
    let mut h = Harness::with_device(&mem, held_device(&tmp), QSIZE, false, true);
    let mut heads = Vec::new();
    for i in 0..6u64 {
        let (kind, dir, len) = if i % 3 == 2 {
            (T_OUT, R, 512)
        } else {
            (T_IN, W, 1024 * (i as u32 + 1))
        };
        heads.push(h.post(i, kind, i * 8, &[(DATA + i * 0x2000, len, dir)]));
    }
    h.dev.process_queue();
    assert_eq!(h.used_idx(), 0);
    assert_eq!(held(&h.dev), 6);
    assert_eq!(h.dev.io.table.in_use(), 6);
    assert_eq!(h.dev.metrics().inflight_high_water, 6);
    release(&mut h.dev);
    assert_eq!(h.used_idx(), 6);
    assert_eq!(h.dev.io.table.in_use(), 0);
    for n in 0..6u16 {
        // Latest first.
        let i = 5 - usize::from(n);
        let want_len = if i % 3 == 2 {
            1
        } else {
            1024 * (i as u32 + 1) + 1
        };
        assert_eq!(h.used(n), (u32::from(heads[i]), want_len), "used entry {n}");
        assert_eq!(h.read_mem(STATUS + i as u64, 1), [status::OK]);
    }
    for i in [0u64, 1, 3, 4] {
        let len = 1024 * (i as usize + 1);
        let at = i as usize * 8 * 512;
        assert!(h.read_mem(DATA + i * 0x2000, len) == disk_bytes()[at..at + len]);
    }
    // One interrupt for the whole batch of completions.
    assert_eq!(h.dev.metrics().interrupts, 1);
}

#[test]
fn a_flush_waits_for_every_earlier_write() {
    let tmp = image_file();
    let mem = memory();
    let mut h = Harness::with_device(&mem, held_device(&tmp), QSIZE, false, true);
    let w1 = h.post(0, T_OUT, 0, &[(DATA, 512, R)]);
    let f = h.post(1, T_FLUSH, 0, &[]);
    let w2 = h.post(2, T_OUT, 8, &[(DATA, 512, R)]);
    let r = h.post(3, T_IN, 16, &[(DATA + 0x1000, 512, W)]);
    h.dev.process_queue();
    // The flush is not started while w1 runs; the later write and read are.
    assert_eq!(held(&h.dev), 3);
    release(&mut h.dev);
    // Released latest first: the read, w2, w1, and only then the flush
    // was started (and is held again).
    let order: Vec<u32> = (0..h.used_idx()).map(|n| h.used(n).0).collect();
    assert_eq!(
        order,
        vec![r, w2, w1]
            .into_iter()
            .map(u32::from)
            .collect::<Vec<_>>()
    );
    assert_eq!(held(&h.dev), 1);
    assert_eq!(h.read_mem(STATUS + 1, 1), [0xff]);
    release(&mut h.dev);
    assert_eq!(h.used_idx(), 4);
    assert_eq!(h.used(3), (u32::from(f), 1));
    assert_eq!(h.read_mem(STATUS + 1, 1), [status::OK]);
    assert_eq!(h.dev.metrics().flushes, 1);
}

#[test]
fn a_flush_after_completed_writes_starts_at_once() {
    let tmp = image_file();
    let mem = memory();
    let mut h = Harness::with_device(&mem, held_device(&tmp), QSIZE, false, true);
    h.post(0, T_OUT, 0, &[(DATA, 512, R)]);
    h.dev.process_queue();
    release(&mut h.dev);
    h.post(1, T_FLUSH, 0, &[]);
    h.post(2, T_OUT, 8, &[(DATA, 512, R)]);
    h.dev.process_queue();
    // Both started: the flush waits for nothing, and a later write does
    // not hold it up.
    assert_eq!(held(&h.dev), 2);
    release(&mut h.dev);
    assert_eq!(h.used_idx(), 3);
}

#[test]
fn discard_waits_for_direct_io_in_flight() {
    let tmp = image_file();
    let mem = memory();
    let mut h = Harness::with_device(&mem, held_device(&tmp), QSIZE, false, true);
    let w = h.post(0, T_OUT, 0, &[(DATA, 4096, R)]);
    mem.write_obj(0u64, GuestAddress(DATA + 0x8000)).unwrap();
    mem.write_obj(8u32, GuestAddress(DATA + 0x8008)).unwrap();
    mem.write_obj(0u32, GuestAddress(DATA + 0x800c)).unwrap();
    let d = h.post(1, T_DISCARD, 0, &[(DATA + 0x8000, 16, R)]);
    h.dev.process_queue();
    // The discard completed the write first, then ran.
    assert_eq!(h.used_idx(), 2);
    assert_eq!(h.used(0).0, u32::from(w));
    assert_eq!(h.used(1).0, u32::from(d));
    assert_eq!(h.read_mem(STATUS, 2), [status::OK, status::OK]);
    assert_eq!(h.dev.metrics().sync_path_requests, 1);
}

#[test]
fn reset_with_io_in_flight_waits_and_touches_nothing() {
    let tmp = image_file();
    let mem = memory();
    let mut h = Harness::with_device(&mem, held_device(&tmp), QSIZE, false, true);
    for i in 0..4u64 {
        h.post(i, T_IN, i, &[(DATA + i * 0x1000, 512, W)]);
    }
    h.post(4, T_FLUSH, 0, &[]);
    h.dev.process_queue();
    assert_eq!(h.dev.io.table.in_use(), 5);
    h.dev.reset();
    assert!(!h.dev.is_activated());
    assert_eq!(h.dev.io.table.in_use(), 0);
    assert_eq!(held(&h.dev), 0);
    assert_eq!(h.used_idx(), 0);
    assert_eq!(h.read_mem(STATUS, 5), [0xff; 5]);
    // The device works again after the driver sets it up anew.
    hold(&mut h.dev, false);
    h.vq.avail().idx().store(0);
    h.vq.used().idx().store(0);
    let q: virtio_queue::Queue = h.vq.create_queue().unwrap();
    h.dev.activate(mem.clone(), vec![q]).unwrap();
    h.next_desc = 0;
    assert_eq!(h.request(T_FLUSH, 0, &[]).0, status::OK);
}

#[test]
fn reset_and_drop_with_real_io_in_flight() {
    for engine in engines() {
        let tmp = image_file();
        let mem = memory();
        let dev = file_device(tmp.as_path(), engine);
        let mut h = Harness::with_device(&mem, dev, 256, false, true);
        for i in 0..32u64 {
            h.post(
                i,
                T_IN,
                (i * 128) % 2048,
                &[(0x10_0000 + i * 0x1_0000, 0x1_0000, W)],
            );
        }
        h.dev.process_queue();
        h.dev.reset();
        assert_eq!(h.dev.io.table.in_use(), 0, "{engine}");
        let used = h.used_idx();
        // Nothing is answered after the reset returned.
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(h.used_idx(), used, "{engine}");

        let mut h =
            Harness::with_device(&mem, file_device(tmp.as_path(), engine), 256, false, true);
        for i in 0..32u64 {
            h.post(
                i,
                T_OUT,
                (i * 128) % 2048,
                &[(0x10_0000 + i * 0x1_0000, 0x1_0000, R)],
            );
        }
        h.dev.process_queue();
        drop(h); // waits for the kernel before the memory may go
    }
}

#[test]
fn a_full_table_stalls_the_queue_until_completions_free_slots() {
    use crate::virtio::block::io::Io;

    let tmp = image_file();
    let mem = memory();
    let mut dev = file_device(tmp.as_path(), IoEngine::Sync);
    // Four slots instead of one per queue entry.
    dev.io = Io::new(Engine::new(IoEngine::Sync, 16, 64).unwrap(), 4);
    hold(&mut dev, true);
    let mut h = Harness::with_device(&mem, dev, QSIZE, false, true);
    for i in 0..10u64 {
        h.post(i, T_IN, i, &[(DATA + i * 0x1000, 512, W)]);
    }
    h.dev.process_queue();
    assert_eq!(held(&h.dev), 4);
    assert_eq!(h.dev.metrics().queue_full_stalls, 1);
    // Each completion event answers what finished and starts more.
    release(&mut h.dev);
    assert_eq!(h.used_idx(), 4);
    assert_eq!(held(&h.dev), 4);
    release(&mut h.dev);
    release(&mut h.dev);
    assert_eq!(h.used_idx(), 10);
    assert_eq!(h.read_mem(STATUS, 10), [status::OK; 10]);
    assert_eq!(h.dev.metrics().inflight_high_water, 4);
}
