//! Direct I/O on raw image files, through every engine the host allows:
//! data moves between guest memory and the file through iovecs, several
//! requests are in flight at once, buffers sit at memory region edges,
//! and hostile chains are answered IOERR without touching the disk.

use std::sync::{Arc, Mutex};

use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::virtio::VIRTIO_MMIO_INT_VRING;

/// Guest bytes for request `i`.
fn fill(i: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| (k as u64 * 13 + i * 101 + 7) as u8)
        .collect()
}

fn file_bytes(tmp: &TempFile) -> Vec<u8> {
    std::fs::read(tmp.as_path()).unwrap()
}

#[test]
fn multi_segment_reads_and_writes_move_data_directly() {
    for engine in engines() {
        let tmp = image_file();
        let mem = memory();
        let dev = file_device(tmp.as_path(), engine);
        assert_eq!(dev.io_engine(), engine);
        let mut h = Harness::with_device(&mem, dev, QSIZE, false, true);
        let a = fill(1, 512);
        let b = fill(2, 3584);
        mem.write_slice(&a, GuestAddress(DATA)).unwrap();
        mem.write_slice(&b, GuestAddress(DATA + 0x3000)).unwrap();
        let (status, len) = h.request(T_OUT, 9, &[(DATA, 512, R), (DATA + 0x3000, 3584, R)]);
        assert_eq!((status, len), (status::OK, 1), "{engine}");
        let mut want = disk_bytes();
        want[9 * 512..10 * 512].copy_from_slice(&a);
        want[10 * 512..17 * 512].copy_from_slice(&b);
        assert!(file_bytes(&tmp) == want, "{engine}: file differs");

        // Read it back split differently.
        let (status, len) = h.request(
            T_IN,
            8,
            &[
                (DATA + 0x8000, 1024, W),
                (DATA + 0x9000, 1536, W),
                (DATA + 0xa000, 2048, W),
            ],
        );
        assert_eq!((status, len), (status::OK, 4608 + 1), "{engine}");
        let mut back = h.read_mem(DATA + 0x8000, 1024);
        back.extend(h.read_mem(DATA + 0x9000, 1536));
        back.extend(h.read_mem(DATA + 0xa000, 2048));
        assert!(
            back == want[8 * 512..17 * 512],
            "{engine}: read back differs"
        );

        let (status, _) = h.request(T_FLUSH, 0, &[]);
        assert_eq!(status, status::OK);
        let m = h.dev.metrics();
        assert_eq!((m.reads, m.writes, m.flushes), (1, 1, 1), "{engine}");
        assert_eq!((m.read_bytes, m.write_bytes), (4608, 4096), "{engine}");
        assert_eq!(m.sync_path_requests, 0, "{engine}");
        assert_eq!(m.io_uring, u64::from(engine == IoEngine::IoUring));
        assert!(h.irq.status() & VIRTIO_MMIO_INT_VRING != 0);
    }
}

#[test]
fn many_requests_in_flight_complete_with_their_own_status_and_length() {
    const N: u64 = 48;
    for engine in engines() {
        let tmp = image_file();
        let mem = memory();
        let dev = file_device(tmp.as_path(), engine);
        let mut h = Harness::with_device(&mem, dev, 256, false, true);
        let mut heads = Vec::new();
        let mut want = disk_bytes();
        for i in 0..N {
            let buf = 0x10_0000 + i * 0x2000;
            let sector = i * 16;
            if i % 2 == 0 {
                let data = fill(i, 4096);
                mem.write_slice(&data, GuestAddress(buf)).unwrap();
                let at = sector as usize * 512;
                want[at..at + 4096].copy_from_slice(&data);
                heads.push((h.post(i, T_OUT, sector, &[(buf, 4096, R)]), 1));
            } else {
                heads.push((h.post(i, T_IN, sector, &[(buf, 8192, W)]), 8193));
            }
        }
        h.dev.process_queue();
        h.dev.complete_pending();
        assert_eq!(u64::from(h.used_idx()), N, "{engine}");
        // Every chain is answered once, with its own length.
        let mut seen = std::collections::HashMap::new();
        for n in 0..N as u16 {
            let (id, len) = h.used(n);
            assert!(
                seen.insert(id, len).is_none(),
                "{engine}: chain {id} used twice"
            );
        }
        for (i, &(head, len)) in heads.iter().enumerate() {
            assert_eq!(
                seen.get(&u32::from(head)),
                Some(&len),
                "{engine}: request {i}"
            );
            assert_eq!(
                h.read_mem(STATUS + i as u64, 1),
                [status::OK],
                "{engine}: request {i}"
            );
        }
        for i in (1..N).step_by(2) {
            // Reads overlap the next request's write: either version of
            // those bytes is right, the rest must be the old disk.
            let got = h.read_mem(0x10_0000 + i * 0x2000, 4096);
            let at = i as usize * 16 * 512;
            assert!(got == disk_bytes()[at..at + 4096], "{engine}: read {i}");
        }
        assert!(file_bytes(&tmp) == want, "{engine}: file differs");
        let m = h.dev.metrics();
        assert_eq!((m.reads, m.writes), (N / 2, N / 2), "{engine}");
        if engine == IoEngine::IoUring {
            // All were queued before one submit.
            assert_eq!(m.inflight_high_water, N, "{engine}");
        }
        assert!(m.interrupts >= 1);
    }
}

/// Two adjacent regions (separate host mappings) and a hole after them.
fn split_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), 0x20_0000),
        (GuestAddress(0x20_0000), 0x20_0000),
        (GuestAddress(0x60_0000), 0x10_0000),
    ])
    .unwrap()
}

#[test]
fn buffers_at_and_across_region_edges() {
    let edge = 0x20_0000u64;
    for engine in engines() {
        let tmp = image_file();
        let mem = split_memory();
        let dev = file_device(tmp.as_path(), engine);
        let mut h = Harness::with_device(&mem, dev, QSIZE, false, true);
        // Ends at the edge, straddles it, starts at it.
        let bufs = [(edge - 1024, 1024u32), (edge - 512, 2048), (edge, 1536)];
        let data = fill(7, 1024 + 2048 + 1536);
        let mut at = 0;
        for &(addr, len) in &bufs {
            mem.write_slice(&data[at..at + len as usize], GuestAddress(addr))
                .unwrap();
            at += len as usize;
        }
        // Written in three requests (the buffers overlap in memory).
        let mut sector = 100;
        for &(addr, len) in &bufs {
            let (status, _) = h.request(T_OUT, sector, &[(addr, len, R)]);
            assert_eq!(status, status::OK, "{engine}");
            sector += u64::from(len) / 512;
        }
        // The buffers overlap in memory: each write took them as they are.
        let mut want = disk_bytes();
        let mut at = 100 * 512;
        for &(addr, len) in &bufs {
            let now = h.read_mem(addr, len as usize);
            want[at..at + len as usize].copy_from_slice(&now);
            at += len as usize;
        }
        assert!(file_bytes(&tmp) == want, "{engine}: file differs");
        // One read straddling the edge fills both mappings.
        mem.write_slice(&[0u8; 4608], GuestAddress(edge - 2048))
            .unwrap();
        let (status, len) = h.request(T_IN, 100, &[(edge - 2048, 4608, W)]);
        assert_eq!((status, len), (status::OK, 4609), "{engine}");
        assert!(h.read_mem(edge - 2048, 4608) == want[100 * 512..109 * 512]);
        // Into the hole: refused before any I/O.
        let (status, len) = h.request(T_IN, 0, &[(0x40_0000 - 512, 1024, W)]);
        assert_eq!((status, len), (status::IOERR, 1), "{engine}");
        assert_eq!(h.dev.metrics().invalid_requests, 1);
        assert_eq!(h.dev.metrics().sync_path_requests, 0);
    }
}

#[test]
fn requests_needing_too_many_iovecs_take_the_sync_path() {
    // 64 one-page regions: a 256 KiB buffer over them needs 64 iovecs, so
    // three such buffers need more than a slot holds.
    let page = 0x1000u64;
    let mut ranges = vec![(GuestAddress(0), 0x10_0000usize)];
    ranges.extend((0..64).map(|i| (GuestAddress(0x10_0000 + i * page), page as usize)));
    let mem = GuestMemoryMmap::from_ranges(&ranges).unwrap();
    for engine in engines() {
        let tmp = image_file();
        let dev = file_device(tmp.as_path(), engine);
        let mut h = Harness::with_device(&mem, dev, QSIZE, false, true);
        let data = fill(3, 64 * page as usize);
        mem.write_slice(&data, GuestAddress(0x10_0000)).unwrap();
        let seg = (0x10_0000, 64 * page as u32, R);
        let (status, _) = h.request(T_OUT, 0, &[seg, seg, seg]);
        assert_eq!(status, status::OK, "{engine}");
        assert_eq!(h.dev.metrics().sync_path_requests, 1, "{engine}");
        let file = file_bytes(&tmp);
        for k in 0..3 {
            let at = k * data.len();
            assert!(file[at..at + data.len()] == data, "{engine}: copy {k}");
        }
        // One such buffer fits: direct.
        let (status, _) = h.request(T_IN, 0, &[(0x10_0000, 64 * page as u32, W)]);
        assert_eq!(status, status::OK, "{engine}");
        assert_eq!(h.dev.metrics().sync_path_requests, 1, "{engine}");
    }
}

#[test]
fn hostile_chains_get_ioerr_and_are_counted() {
    for engine in engines() {
        let tmp = image_file();
        let mem = memory();
        let dev = file_device(tmp.as_path(), engine);
        let mut h = Harness::with_device(&mem, dev, QSIZE, false, true);
        let last = (DISK_LEN / 512) as u64;
        type Case = (&'static str, u32, u64, Vec<(u64, u32, Dir)>);
        let cases: Vec<Case> = vec![
            (
                "outside memory",
                T_IN,
                0,
                vec![(MEM_LEN as u64 - 512, 1024, W)],
            ),
            ("address wraps", T_OUT, 0, vec![(u64::MAX - 511, 1024, R)]),
            ("past the end", T_IN, last, vec![(DATA, 512, W)]),
            ("crossing the end", T_OUT, last - 1, vec![(DATA, 1024, R)]),
            (
                "sector overflow",
                T_OUT,
                u64::MAX / 512 + 1,
                vec![(DATA, 512, R)],
            ),
            ("huge length", T_OUT, 0, vec![(0, 0xffff_fe00, R)]),
            ("odd length", T_OUT, 0, vec![(DATA, 513, R)]),
        ];
        for (i, (what, kind, sector, data)) in cases.iter().enumerate() {
            let (status, len) = h.request(*kind, *sector, data);
            assert_eq!((status, len), (status::IOERR, 1), "{engine}: {what}");
            let m = h.dev.metrics();
            assert_eq!(m.invalid_requests, i as u64 + 1, "{engine}: {what}");
        }
        // A chain over 4 GiB ends (virtio-queue stops walking it) before
        // its status descriptor: nowhere to answer, so it is dropped.
        let (status, len) = h.request(T_IN, 0, &[(0, 0xffff_fe00, W), (0, 0xffff_fe00, W)]);
        assert_eq!((status, len), (0xff, 0), "{engine}");
        assert_eq!(h.dev.metrics().dropped_chains, 1);
        assert!(file_bytes(&tmp) == disk_bytes(), "{engine}: disk touched");
        assert_eq!(h.dev.metrics().reads + h.dev.metrics().writes, 0);
        // Still serving.
        let (status, _) = h.request(T_IN, last - 1, &[(DATA, 512, W)]);
        assert_eq!(status, status::OK);
    }
}

#[test]
fn reads_past_the_end_of_a_file_that_shrank_give_zeros() {
    for engine in engines() {
        let tmp = image_file();
        let mem = memory();
        let dev = file_device(tmp.as_path(), engine);
        let mut h = Harness::with_device(&mem, dev, QSIZE, false, true);
        tmp.as_file().set_len(4096 + 1000).unwrap();
        mem.write_slice(&[0xee; 8192], GuestAddress(DATA)).unwrap();
        let (status, len) = h.request(T_IN, 6, &[(DATA, 4096, W), (DATA + 4096, 4096, W)]);
        assert_eq!((status, len), (status::OK, 8193), "{engine}");
        let got = h.read_mem(DATA, 8192);
        let want = &disk_bytes()[3072..5096];
        assert!(got[..2024] == *want, "{engine}");
        assert!(got[2024..].iter().all(|&b| b == 0), "{engine}");
    }
}

#[test]
fn the_sync_engine_has_no_completion_fd_and_says_so() {
    let tmp = image_file();
    let dev = file_device(tmp.as_path(), IoEngine::Sync);
    assert_eq!(dev.io_engine(), IoEngine::Sync);
    assert!(dev.io.engine.completion_fd().is_none());
    let mut names = Vec::new();
    dev.write_metrics(&mut |name, value| names.push((name, value)));
    assert!(names.contains(&("io_uring", 0)));
    assert!(names.contains(&("sync_path_requests", 0)));
    assert!(names.contains(&("inflight_high_water", 0)));
}

/// The whole path with io_uring: MMIO registers, a notify write, the event
/// loop watching the queue and then the completion eventfd, the interrupt.
#[test]
fn through_the_event_manager_with_io_uring() {
    use crate::bus::BusDevice;
    use crate::virtio::mmio::MmioTransport;
    use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};

    if !engines().contains(&IoEngine::IoUring) {
        return;
    }
    let tmp = image_file();
    let mem = memory();
    let block = Arc::new(Mutex::new(file_device(tmp.as_path(), IoEngine::IoUring)));
    let mut t = MmioTransport::new(mem.clone(), block.clone()).unwrap();
    let mut em = EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new().unwrap();
    em.add_subscriber(block.clone());

    let vq = MockSplitQueue::new(&mem, QSIZE);
    // Not EVENT_IDX: the mock's used_event shares memory with its used ring.
    let features = block.lock().unwrap().avail_features() & !(1 << 29);
    drive_to_driver_ok(&mut t, &vq, features);
    let w = |t: &mut MmioTransport, off: u64, v: u32| t.write(0, off, &v.to_le_bytes());
    // The activation event registers the queue and completion eventfds.
    for _ in 0..10 {
        em.run_with_timeout(10).unwrap();
    }

    let mut h = Harness::driver(&mem, vq, t.interrupt().clone());
    for i in 0..8u64 {
        h.post(i, T_IN, i * 8, &[(DATA + i * 0x1000, 4096, W)]);
    }
    w(&mut t, 0x50, 0); // QueueNotify reaching the bus
    for _ in 0..100 {
        if h.used_idx() == 8 {
            break;
        }
        em.run_with_timeout(100).unwrap();
    }
    assert_eq!(h.used_idx(), 8);
    for i in 0..8u64 {
        assert_eq!(h.read_mem(STATUS + i, 1), [status::OK]);
        let at = i as usize * 4096;
        assert!(h.read_mem(DATA + i * 0x1000, 4096) == disk_bytes()[at..at + 4096]);
    }
    assert_ne!(h.irq.status() & VIRTIO_MMIO_INT_VRING, 0);
    // A reset through the transport drains and unregisters.
    w(&mut t, 0x70, 0);
    em.run_with_timeout(10).unwrap();
    assert!(!block.lock().unwrap().is_activated());
}

/// Many reads in flight at once, each split into segments with gaps
/// between them: every segment gets exactly its bytes of the disk, and
/// not one byte of guest memory outside the segments changes (the kernel
/// writes straight into guest memory here, so a wrong iovec would show).
#[test]
fn concurrent_reads_write_only_inside_their_buffers() {
    const N: u64 = 48;
    const AREA: u64 = 0x10_0000;
    const AREA_LEN: usize = 0x20_0000;
    const CANARY: u8 = 0xa5;
    for engine in engines() {
        let tmp = image_file();
        let mem = memory();
        mem.write_slice(&vec![CANARY; AREA_LEN], GuestAddress(AREA))
            .unwrap();
        let dev = file_device(tmp.as_path(), engine);
        let mut h = Harness::with_device(&mem, dev, 256, false, true);
        let disk = disk_bytes();
        let mut expected: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut next = AREA;
        for i in 0..N {
            // 1 to 3 segments of 512..=3584 bytes, 64-byte gaps between.
            let segments = 1 + i % 3;
            let sector = (i * 37) % (DISK_LEN as u64 / 512 - 32);
            let mut disk_at = sector as usize * 512;
            let mut bufs = Vec::new();
            for s in 0..segments {
                let len = 512 * (1 + ((i + s) % 7)) as usize;
                bufs.push((next, len as u32, W));
                expected.push((next, disk[disk_at..disk_at + len].to_vec()));
                disk_at += len;
                next += len as u64 + 64;
            }
            h.post(i, T_IN, sector, &bufs);
        }
        assert!(next < AREA + AREA_LEN as u64);
        h.dev.process_queue();
        h.dev.complete_pending();
        assert_eq!(u64::from(h.used_idx()), N, "{engine}");
        for i in 0..N {
            assert_eq!(h.read_mem(STATUS + i, 1), [status::OK], "{engine}: {i}");
        }
        let mut area = vec![0u8; AREA_LEN];
        mem.read_slice(&mut area, GuestAddress(AREA)).unwrap();
        let mut inside = vec![false; AREA_LEN];
        for (addr, bytes) in &expected {
            let at = (addr - AREA) as usize;
            assert!(
                area[at..at + bytes.len()] == bytes[..],
                "{engine}: segment at {addr:#x}"
            );
            inside[at..at + bytes.len()].fill(true);
        }
        let stray = (0..AREA_LEN).find(|&k| !inside[k] && area[k] != CANARY);
        assert_eq!(
            stray, None,
            "{engine}: a byte outside every segment changed"
        );
    }
}
