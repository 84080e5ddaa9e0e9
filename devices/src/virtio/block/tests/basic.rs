//! The virtio-blk protocol on a raw disk in memory: every request takes
//! the synchronous path, so these tests pin down parsing, statuses, used
//! lengths and metrics independently of the engines.

use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Address, Bytes, GuestAddress};

use super::*;
use crate::disk::{MemStorage, RawDisk};
use crate::virtio::{VirtioDevice, VIRTIO_MMIO_INT_VRING};

#[test]
fn features_and_config() {
    let mem = memory();
    let h = Harness::new(&mem, false);
    let f = h.dev.avail_features();
    assert_ne!(f & 1 << 32, 0); // VERSION_1
    assert_ne!(f & 1 << 9, 0); // FLUSH
    assert_ne!(f & 1 << 13, 0); // DISCARD
    assert_ne!(f & 1 << 14, 0); // WRITE_ZEROES
    assert_eq!(f & 1 << 5, 0); // not RO
    let mut cap = [0u8; 8];
    h.dev.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), (DISK_LEN / 512) as u64);
    let mut seg = [0u8; 4];
    h.dev.read_config(12, &mut seg);
    assert_eq!(u32::from_le_bytes(seg), SEG_MAX);
    h.dev.read_config(20, &mut seg);
    assert_eq!(u32::from_le_bytes(seg), 512);
    h.dev.read_config(1000, &mut seg);
    assert_eq!(seg, [0; 4]);
    let ro = Harness::new(&mem, true);
    let f = ro.dev.avail_features();
    assert_ne!(f & 1 << 5, 0);
    assert_eq!(f & (1 << 13 | 1 << 14), 0);
}

#[test]
fn read_into_several_buffers() {
    let mem = memory();
    let mut h = Harness::new(&mem, false);
    let (status, len) = h.request(T_IN, 2, &[(DATA, 512, W), (DATA + 0x1000, 1024, W)]);
    assert_eq!((status, len), (status::OK, 1536 + 1));
    let disk = disk_bytes();
    assert_eq!(h.read_mem(DATA, 512), &disk[1024..1536]);
    assert_eq!(h.read_mem(DATA + 0x1000, 1024), &disk[1536..2560]);
    assert_eq!(
        h.irq.status() & VIRTIO_MMIO_INT_VRING,
        VIRTIO_MMIO_INT_VRING
    );
    assert_eq!(h.irq.irq_evt().read().unwrap(), 1);
    let m = h.dev.metrics();
    assert_eq!((m.reads, m.read_bytes, m.interrupts), (1, 1536, 1));
}

#[test]
fn large_reads_and_writes_go_through_the_bounce_buffer() {
    let mem = memory();
    let mut h = Harness::new(&mem, false);
    let big: Vec<u8> = (0..300 * 1024).map(|i| (i % 253) as u8).collect();
    let at = 0x10_0000;
    mem.write_slice(&big, GuestAddress(at)).unwrap();
    let (status, _) = h.request(T_OUT, 100, &[(at, big.len() as u32, R)]);
    assert_eq!(status, status::OK);
    mem.write_slice(&vec![0u8; big.len()], GuestAddress(at))
        .unwrap();
    let (status, len) = h.request(T_IN, 100, &[(at, big.len() as u32, W)]);
    assert_eq!((status, len), (status::OK, big.len() as u32 + 1));
    assert!(h.read_mem(at, big.len()) == big);
}

#[test]
fn write_then_read_back_and_flush() {
    let mem = memory();
    let mut h = Harness::new(&mem, false);
    mem.write_slice(&[0xab; 512], GuestAddress(DATA)).unwrap();
    mem.write_slice(&[0xcd; 1024], GuestAddress(DATA + 0x800))
        .unwrap();
    let (status, len) = h.request(T_OUT, 7, &[(DATA, 512, R), (DATA + 0x800, 1024, R)]);
    assert_eq!((status, len), (status::OK, 1));
    let (status, _) = h.request(T_IN, 7, &[(DATA + 0x4000, 1536, W)]);
    assert_eq!(status, status::OK);
    let back = h.read_mem(DATA + 0x4000, 1536);
    assert!(back[..512].iter().all(|&b| b == 0xab));
    assert!(back[512..].iter().all(|&b| b == 0xcd));
    let (status, len) = h.request(T_FLUSH, 0, &[]);
    assert_eq!((status, len), (status::OK, 1));
    let m = h.dev.metrics();
    assert_eq!((m.writes, m.write_bytes, m.flushes), (1, 1536, 1));
}

#[test]
fn get_id_returns_the_serial() {
    let mem = memory();
    let mut h = Harness::new(&mem, false);
    let (status, len) = h.request(T_GET_ID, 0, &[(DATA, 20, W)]);
    assert_eq!((status, len), (status::OK, 21));
    let mut want = b"vol-0123".to_vec();
    want.resize(20, 0);
    assert_eq!(h.read_mem(DATA, 20), want);
    // A shorter buffer gets what fits.
    mem.write_slice(&[0xee; 8], GuestAddress(DATA + 0x100))
        .unwrap();
    let (status, len) = h.request(T_GET_ID, 0, &[(DATA + 0x100, 4, W)]);
    assert_eq!((status, len), (status::OK, 5));
    assert_eq!(h.read_mem(DATA + 0x100, 8), b"vol-\xee\xee\xee\xee");
}

#[test]
fn read_only_devices_refuse_writes() {
    let mem = memory();
    let mut h = Harness::new(&mem, true);
    assert!(h.dev.is_read_only());
    for kind in [T_OUT, T_DISCARD, T_WRITE_ZEROES] {
        let (status, _) = h.request(kind, 0, &[(DATA, 512, R)]);
        assert_eq!(status, status::IOERR, "type {kind}");
    }
    assert_eq!(h.dev.metrics().read_only_rejections, 3);
    let (status, _) = h.request(T_IN, 0, &[(DATA, 512, W)]);
    assert_eq!(status, status::OK);
    let (status, _) = h.request(T_FLUSH, 0, &[]);
    assert_eq!(status, status::OK);
    assert_eq!(h.read_mem(DATA, 512), &disk_bytes()[..512]);
}

#[test]
fn unknown_types_are_unsupported() {
    let mem = memory();
    let mut h = Harness::new(&mem, false);
    for kind in [2, 99, u32::MAX] {
        let (status, len) = h.request(kind, 0, &[]);
        assert_eq!((status, len), (status::UNSUPP, 1));
    }
    assert_eq!(h.dev.metrics().unsupported, 3);
}

#[test]
fn malformed_requests_get_ioerr() {
    let mem = memory();
    let mut h = Harness::new(&mem, false);
    type Case = (&'static str, u32, u64, Vec<(u64, u32, Dir)>);
    let cases: Vec<Case> = vec![
        ("read into a readable buffer", T_IN, 0, vec![(DATA, 512, R)]),
        (
            "write from a writable buffer",
            T_OUT,
            0,
            vec![(DATA, 512, W)],
        ),
        (
            "mixed directions",
            T_IN,
            0,
            vec![(DATA, 512, W), (DATA + 512, 512, R)],
        ),
        (
            "length not a sector multiple",
            T_IN,
            0,
            vec![(DATA, 100, W)],
        ),
        (
            "past the last sector",
            T_IN,
            (DISK_LEN / 512) as u64,
            vec![(DATA, 512, W)],
        ),
        (
            "crossing the end",
            T_OUT,
            (DISK_LEN / 512 - 1) as u64,
            vec![(DATA, 1024, R)],
        ),
        ("sector overflow", T_IN, u64::MAX, vec![(DATA, 512, W)]),
        (
            "buffer outside memory",
            T_IN,
            0,
            vec![(MEM_LEN as u64 - 256, 512, W)],
        ),
        (
            "buffer address wraps",
            T_OUT,
            0,
            vec![(u64::MAX - 100, 512, R)],
        ),
        ("get_id without a buffer", T_GET_ID, 0, vec![]),
        (
            "discard of an odd length",
            T_DISCARD,
            0,
            vec![(DATA, 10, R)],
        ),
        ("two discard ranges", T_DISCARD, 0, vec![(DATA, 32, R)]),
    ];
    for (i, (what, kind, sector, data)) in cases.iter().enumerate() {
        let (status, len) = h.request(*kind, *sector, data);
        assert_eq!((status, len), (status::IOERR, 1), "{what}");
        assert_eq!(h.dev.metrics().invalid_requests, i as u64 + 1, "{what}");
    }
    // The disk is untouched.
    let (_, _) = h.request(T_IN, 0, &[(DATA, 4096, W)]);
    assert_eq!(h.read_mem(DATA, 4096), &disk_bytes()[..4096]);
}

#[test]
fn bad_headers_get_ioerr() {
    let mem = memory();
    let mut h = Harness::new(&mem, false);
    h.header(T_IN, 0);
    let (status, len) = h.run(&[(HDR, 16, W), (DATA, 512, W), (STATUS, 1, W)]);
    assert_eq!((status, len), (status::IOERR, 1));
    h.header(T_IN, 0);
    let (status, _) = h.run(&[(HDR, 8, R), (DATA, 512, W), (STATUS, 1, W)]);
    assert_eq!(status, status::IOERR);
    h.header(T_IN, 0);
    let (status, _) = h.run(&[(MEM_LEN as u64 - 8, 16, R), (STATUS, 1, W)]);
    assert_eq!(status, status::IOERR);
    assert_eq!(h.dev.metrics().invalid_requests, 3);
}

#[test]
fn chains_without_a_status_byte_are_dropped() {
    let mem = memory();
    let mut h = Harness::new(&mem, false);
    let cases: Vec<Vec<(u64, u32, Dir)>> = vec![
        vec![(HDR, 16, R)],                                 // header only
        vec![(HDR, 16, R), (DATA, 512, W), (STATUS, 1, R)], // status readable
        vec![(HDR, 16, R), (STATUS, 0, W)],                 // status empty
        vec![(HDR, 16, R), (MEM_LEN as u64, 1, W)],         // status outside memory
    ];
    for (i, bufs) in cases.iter().enumerate() {
        h.header(T_IN, 0);
        let (status, len) = h.run(bufs);
        assert_eq!((status, len), (0xff, 0), "case {i}");
    }
    assert_eq!(h.dev.metrics().dropped_chains, 4);
    // The device keeps working afterwards.
    let (status, _) = h.request(T_FLUSH, 0, &[]);
    assert_eq!(status, status::OK);
}

#[test]
fn a_status_byte_at_the_end_of_a_longer_buffer() {
    let mem = memory();
    let mut h = Harness::new(&mem, false);
    h.header(T_FLUSH, 0);
    mem.write_slice(&[0xff; 8], GuestAddress(STATUS)).unwrap();
    h.submit(&[(HDR, 16, R), (STATUS, 8, W)]);
    h.dev.process_queue();
    assert_eq!(
        h.read_mem(STATUS, 8),
        [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]
    );
}

#[test]
fn too_many_segments_through_an_indirect_table() {
    let mem = memory();
    let mut h = Harness::new(&mem, false);
    let table = 0x5_0000u64;
    let build = |n_data: u16| {
        let n = n_data + 2;
        for i in 0..n {
            let (addr, len, write) = match i {
                0 => (HDR, 16, false),
                i if i == n - 1 => (STATUS, 1, true),
                i => (DATA + u64::from(i) * 512, 512, true),
            };
            let mut flags = if write { VRING_DESC_F_WRITE as u16 } else { 0 };
            if i + 1 < n {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            let d = RawDescriptor::from(SplitDescriptor::new(addr, len, flags, i + 1));
            mem.write_obj(d, GuestAddress(table + u64::from(i) * 16))
                .unwrap();
        }
        u32::from(n) * 16
    };
    // Exactly SEG_MAX data buffers work.
    h.header(T_IN, 0);
    let len = build(SEG_MAX as u16);
    let (status, used) = h.run(&[(table, len, I)]);
    assert_eq!((status, used), (status::OK, SEG_MAX * 512 + 1));
    // One more is refused.
    h.header(T_IN, 0);
    let len = build(SEG_MAX as u16 + 1);
    let (status, used) = h.run(&[(table, len, I)]);
    assert_eq!((status, used), (status::IOERR, 1));
    // A huge indirect table (4095 entries of garbage) is bounded too.
    h.header(T_IN, 0);
    mem.write_slice(&vec![0x41; 4096 * 16], GuestAddress(table))
        .unwrap();
    let (status, used) = h.run(&[(table, 4095 * 16, I)]);
    assert_eq!(used, 0);
    assert_eq!(status, 0xff);
}

#[test]
fn descriptor_loops_terminate() {
    let mem = memory();
    let mut h = Harness::new(&mem, false);
    h.header(T_IN, 0);
    // 0 -> 1 -> 0 -> ...: the chain iterator stops after QSIZE steps.
    let d0 = SplitDescriptor::new(HDR, 16, VRING_DESC_F_NEXT as u16, 1);
    let d1 = SplitDescriptor::new(
        DATA,
        512,
        (VRING_DESC_F_NEXT | VRING_DESC_F_WRITE) as u16,
        0,
    );
    h.vq.desc_table().store(0, RawDescriptor::from(d0)).unwrap();
    h.vq.desc_table().store(1, RawDescriptor::from(d1)).unwrap();
    let avail = h.vq.avail_addr();
    mem.write_obj(0u16, avail.unchecked_add(4)).unwrap();
    mem.write_obj(1u16, avail.unchecked_add(2)).unwrap();
    h.dev.process_queue();
    assert_eq!(h.used_idx(), 1);
    // The last descriptor seen is writable: it takes the IOERR status
    // because the data descriptors are fine but the request is not.
    let m = h.dev.metrics();
    assert_eq!(m.invalid_requests + m.dropped_chains, 1);
}

#[test]
fn discard_and_write_zeroes() {
    let mem = memory();
    let mut h = Harness::new(&mem, false);
    let range = |sector: u64, sectors: u32, flags: u32| {
        mem.write_obj(sector.to_le(), GuestAddress(DATA)).unwrap();
        mem.write_obj(sectors.to_le(), GuestAddress(DATA + 8))
            .unwrap();
        mem.write_obj(flags.to_le(), GuestAddress(DATA + 12))
            .unwrap();
    };
    range(4, 2, 0);
    assert_eq!(h.request(T_WRITE_ZEROES, 0, &[(DATA, 16, R)]).0, status::OK);
    range(10, 1, 0);
    // The 16-byte range may be split over two buffers.
    mem.write_slice(&h.read_mem(DATA, 16), GuestAddress(DATA + 0x100))
        .unwrap();
    assert_eq!(
        h.request(T_DISCARD, 0, &[(DATA + 0x100, 8, R), (DATA + 0x108, 8, R)])
            .0,
        status::OK
    );
    let (status, _) = h.request(T_IN, 0, &[(DATA + 0x1000, 6144, W)]);
    assert_eq!(status, status::OK);
    let back = h.read_mem(DATA + 0x1000, 6144);
    let disk = disk_bytes();
    assert_eq!(&back[..2048], &disk[..2048]);
    assert!(back[2048..3072].iter().all(|&b| b == 0));
    assert_eq!(&back[3072..5120], &disk[3072..5120]);
    assert!(back[5120..5632].iter().all(|&b| b == 0)); // MemStorage discards to zeros
    assert_eq!(&back[5632..], &disk[5632..6144]);
    let m = h.dev.metrics();
    assert_eq!((m.write_zeroes, m.discards), (1, 1));

    range(0, 1, 2); // reserved flag
    assert_eq!(
        h.request(T_WRITE_ZEROES, 0, &[(DATA, 16, R)]).0,
        status::UNSUPP
    );
    range(0, 1, 1); // unmap is not a discard flag
    assert_eq!(h.request(T_DISCARD, 0, &[(DATA, 16, R)]).0, status::UNSUPP);
    range((DISK_LEN / 512) as u64, 1, 0);
    assert_eq!(h.request(T_DISCARD, 0, &[(DATA, 16, R)]).0, status::IOERR);
    range(u64::MAX, 2, 0);
    assert_eq!(
        h.request(T_WRITE_ZEROES, 0, &[(DATA, 16, R)]).0,
        status::IOERR
    );
}

#[test]
fn discard_needs_the_feature_negotiated() {
    let mem = memory();
    let mut h = Harness::with(&mem, false, false, false);
    mem.write_slice(&[0; 16], GuestAddress(DATA)).unwrap();
    assert_eq!(h.request(T_DISCARD, 0, &[(DATA, 16, R)]).0, status::UNSUPP);
}

#[test]
fn broken_avail_ring_asks_for_a_reset_without_hanging() {
    let mem = memory();
    let mut h = Harness::new(&mem, false);
    // avail.idx jumps by more than the queue size.
    mem.write_obj(100u16, h.vq.avail_addr().unchecked_add(2))
        .unwrap();
    h.dev.process_queue();
    assert!(h.irq.needs_reset());
    assert_eq!(h.dev.metrics().queue_errors, 1);
    // Further notifications do nothing until a reset.
    h.dev.process_queue();
    assert_eq!(h.dev.metrics().queue_errors, 1);
    assert_eq!(h.used_idx(), 0);

    // A head index past the queue cannot be returned either.
    let mut h = Harness::new(&mem, false);
    mem.write_obj(99u16, h.vq.avail_addr().unchecked_add(4))
        .unwrap();
    mem.write_obj(1u16, h.vq.avail_addr().unchecked_add(2))
        .unwrap();
    h.dev.process_queue();
    assert!(h.irq.needs_reset());
    assert_eq!(h.dev.metrics().dropped_chains, 1);
}

#[test]
fn event_idx_suppresses_interrupts() {
    let mem = memory();
    let mut h = Harness::with(&mem, false, true, true);
    // used_event (after the avail ring) = 1: interrupt only once used.idx
    // passes 1, i.e. on the second completion.
    let used_event = h.vq.avail_addr().unchecked_add(4 + 2 * u64::from(QSIZE));
    mem.write_obj(1u16, used_event).unwrap();
    h.request(T_FLUSH, 0, &[]);
    assert_eq!(h.dev.metrics().interrupts, 0);
    h.request(T_FLUSH, 0, &[]);
    assert_eq!(h.dev.metrics().interrupts, 1);
}

#[test]
fn many_requests_in_one_notification() {
    let mem = memory();
    let mut h = Harness::new(&mem, false);
    h.header(T_IN, 1);
    for i in 0..5u64 {
        h.submit(&[(HDR, 16, R), (DATA + i * 512, 512, W), (STATUS + i, 1, W)]);
    }
    h.dev.process_queue();
    assert_eq!(h.used_idx(), 5);
    assert_eq!(h.dev.metrics().interrupts, 1);
    for i in 0..5u64 {
        assert_eq!(h.read_mem(STATUS + i, 1), [status::OK]);
        assert_eq!(h.read_mem(DATA + i * 512, 512), &disk_bytes()[512..1024]);
    }
}

#[test]
fn reset_and_reactivate() {
    let mem = memory();
    let mut h = Harness::new(&mem, false);
    assert!(h.dev.is_activated());
    h.dev.reset();
    assert!(!h.dev.is_activated());
    h.dev.process_queue(); // inactive: nothing happens
    let q: Queue = h.vq.create_queue().unwrap();
    h.dev.activate(mem.clone(), vec![q]).unwrap();
    let q: Queue = h.vq.create_queue().unwrap();
    assert!(h.dev.activate(mem.clone(), vec![q]).is_err());
    assert_eq!(h.request(T_FLUSH, 0, &[]).0, status::OK);
}

#[test]
fn queue_event_before_activation_is_consumed() {
    let disk = RawDisk::new(Box::new(MemStorage::new(vec![0; 4096], 4096)), false).unwrap();
    let mut dev = Block::new(Box::new(disk), BlockOptions::default()).unwrap();
    dev.events().queues[0].write(1).unwrap();
    dev.handle_queue_event();
    assert!(dev.events().queues[0].read().is_err()); // EAGAIN: counter cleared

    // Activation refuses queues that are not ready or a wrong count.
    let mem = memory();
    assert!(dev.activate(mem.clone(), vec![]).is_err());
    let q = Queue::new(16).unwrap();
    assert!(dev.activate(mem, vec![q]).is_err());
}

/// The whole path a guest driver takes: MMIO registers, a notify write,
/// the event loop, completion and interrupt.
#[test]
fn through_the_mmio_transport_and_event_manager() {
    use crate::bus::BusDevice;
    use crate::virtio::mmio::MmioTransport;
    use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};

    let mem = memory();
    let disk = RawDisk::new(
        Box::new(MemStorage::new(disk_bytes(), DISK_LEN as u64)),
        false,
    )
    .unwrap();
    let block = Arc::new(Mutex::new(
        Block::new(Box::new(disk), BlockOptions::default()).unwrap(),
    ));
    let mut t = MmioTransport::new(mem.clone(), block.clone()).unwrap();
    let mut em = EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new().unwrap();
    em.add_subscriber(block.clone());

    let vq = MockSplitQueue::new(&mem, QSIZE);
    let features = block.lock().unwrap().avail_features();
    drive_to_driver_ok(&mut t, &vq, features);
    let w = |t: &mut MmioTransport, off: u64, v: u32| t.write(0, off, &v.to_le_bytes());
    assert_eq!(t.status(), 15);
    assert!(block.lock().unwrap().is_activated());

    mem.write_obj(T_IN, GuestAddress(HDR)).unwrap();
    mem.write_obj(3u64, GuestAddress(HDR + 8)).unwrap();
    let descs = [
        SplitDescriptor::new(HDR, 16, VRING_DESC_F_NEXT as u16, 1),
        SplitDescriptor::new(
            DATA,
            512,
            (VRING_DESC_F_NEXT | VRING_DESC_F_WRITE) as u16,
            2,
        ),
        SplitDescriptor::new(STATUS, 1, VRING_DESC_F_WRITE as u16, 0),
    ]
    .map(RawDescriptor::from);
    vq.add_desc_chains(&descs, 0).unwrap();
    w(&mut t, 0x50, 0); // QueueNotify reaching the bus
    assert_eq!(em.run_with_timeout(100).unwrap(), 1);
    assert_eq!(vq.used().idx().load(), 1);
    assert_eq!(
        mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(),
        status::OK
    );
    let mut data = vec![0u8; 512];
    mem.read_slice(&mut data, GuestAddress(DATA)).unwrap();
    assert_eq!(data, &disk_bytes()[1536..2048]);
    let mut isr = [0u8; 4];
    t.read(0, 0x60, &mut isr);
    assert_eq!(u32::from_le_bytes(isr), VIRTIO_MMIO_INT_VRING);
    assert_eq!(t.interrupt().irq_evt().read().unwrap(), 1);
}
