//! The block device driven from the driver side: virtio-queue's mock
//! split queue on plain guest memory.
//!
//! - `basic.rs`: the protocol, on a raw disk in memory (synchronous path);
//! - `direct.rs`: direct I/O on image files, through both engines;
//! - `ordering.rs`: completion order, flushes, reset and drop with I/O in
//!   flight, played out with held completions;
//! - `qcow2.rs`: qcow2 overlays, whose writes mix both paths;
//! - `throttle.rs`: the rate limiter holding requests back.

#![allow(clippy::cast_possible_truncation)]

mod basic;
mod direct;
mod ordering;
mod qcow2;
mod throttle;

use std::path::Path;

use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::tempfile::TempFile;

use super::*;
use crate::disk::{DiskBackend, MemStorage, RawDisk};
use crate::virtio::block::engine::Engine;
use crate::virtio::{GuestMemoryMmap, IrqTrigger, VirtioDevice};

const DISK_LEN: usize = 1 << 20;
/// The mock places the used ring right after `len` *bytes* of avail ring
/// (not `2 * len`), so avail entries from `len / 2` on share memory with
/// the used ring. A 64-entry queue keeps every test below 32 requests per
/// harness clear of that overlap.
const QSIZE: u16 = 64;
const HDR: u64 = 0x1_0000;
const DATA: u64 = 0x2_0000;
const STATUS: u64 = 0x3_0000;
const MEM_LEN: usize = 0x40_0000;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const T_DISCARD: u32 = 11;
const T_WRITE_ZEROES: u32 = 13;

/// Readable (`R`) or device-writable (`W`) buffer.
#[derive(Clone, Copy, Debug)]
enum Dir {
    R,
    W,
    /// An indirect descriptor table.
    I,
}
use Dir::{I, R, W};

fn disk_bytes() -> Vec<u8> {
    (0..DISK_LEN).map(|i| (i * 7 % 251) as u8).collect()
}

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_LEN)]).unwrap()
}

fn options(read_only: bool, io_engine: IoEngine) -> BlockOptions {
    BlockOptions {
        read_only,
        serial: "vol-0123".into(),
        io_engine,
        rate_limiter: None,
    }
}

/// A device over `disk_bytes()` in memory: every request takes the
/// synchronous path.
fn mem_device(read_only: bool) -> Block {
    let storage = MemStorage::new(disk_bytes(), DISK_LEN as u64);
    let disk = RawDisk::new(Box::new(storage), false).unwrap();
    Block::new(Box::new(disk), options(read_only, IoEngine::Sync)).unwrap()
}

/// A raw image file holding `disk_bytes()`.
fn image_file() -> TempFile {
    let tmp = TempFile::new_with_prefix("/tmp/stratus-blk-").unwrap();
    std::fs::write(tmp.as_path(), disk_bytes()).unwrap();
    tmp
}

/// A device over the raw image at `path`.
fn file_device(path: &Path, io_engine: IoEngine) -> Block {
    Block::open(
        path,
        Some(crate::disk::ImageFormat::Raw),
        options(false, io_engine),
    )
    .unwrap()
}

/// The engines this host can run (io_uring may be refused, e.g. by a
/// sysctl or seccomp; then only the fallback is tested).
fn engines() -> Vec<IoEngine> {
    let tmp = image_file();
    let dev = file_device(tmp.as_path(), IoEngine::Auto);
    match dev.io_engine() {
        IoEngine::IoUring => vec![IoEngine::IoUring, IoEngine::Sync],
        _ => {
            eprintln!("io_uring unavailable here: testing the sync engine only");
            vec![IoEngine::Sync]
        }
    }
}

struct Harness<'a> {
    mem: &'a GuestMemoryMmap,
    vq: MockSplitQueue<'a, GuestMemoryMmap>,
    dev: Block,
    irq: IrqTrigger,
    next_desc: u16,
    qsize: u16,
}

impl<'a> Harness<'a> {
    fn new(mem: &'a GuestMemoryMmap, read_only: bool) -> Self {
        Self::with(mem, read_only, false, true)
    }

    fn with(mem: &'a GuestMemoryMmap, read_only: bool, event_idx: bool, ack_all: bool) -> Self {
        Self::with_device(mem, mem_device(read_only), QSIZE, event_idx, ack_all)
    }

    /// Activates `dev` on a fresh queue of `qsize` entries.
    fn with_device(
        mem: &'a GuestMemoryMmap,
        mut dev: Block,
        qsize: u16,
        event_idx: bool,
        ack_all: bool,
    ) -> Self {
        if ack_all {
            dev.ack_features(dev.avail_features());
        }
        let vq = MockSplitQueue::new(mem, qsize);
        let mut q: Queue = vq.create_queue().unwrap();
        q.set_event_idx(event_idx);
        let irq = dev.events().interrupt.clone();
        dev.activate(mem.clone(), vec![q]).unwrap();
        Self {
            mem,
            vq,
            dev,
            irq,
            next_desc: 0,
            qsize,
        }
    }

    /// The driver side only, for a device that something else (a
    /// transport, an event loop) drives; `dev` is a stand-in never used.
    fn driver(
        mem: &'a GuestMemoryMmap,
        vq: MockSplitQueue<'a, GuestMemoryMmap>,
        irq: IrqTrigger,
    ) -> Self {
        Self {
            mem,
            vq,
            dev: mem_device(false),
            irq,
            next_desc: 0,
            qsize: QSIZE,
        }
    }

    /// Puts a chain of buffers on the avail ring; returns its head.
    fn submit(&mut self, bufs: &[(u64, u32, Dir)]) -> u16 {
        let start = self.next_desc;
        let descs: Vec<RawDescriptor> = bufs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, dir))| {
                let mut flags = 0;
                if i + 1 < bufs.len() {
                    flags |= VRING_DESC_F_NEXT as u16;
                }
                match dir {
                    R => {}
                    W => flags |= VRING_DESC_F_WRITE as u16,
                    I => flags |= VRING_DESC_F_INDIRECT as u16,
                }
                let next = (start + i as u16 + 1) % self.qsize;
                RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
            })
            .collect();
        self.vq.add_desc_chains(&descs, start).unwrap();
        self.next_desc = (start + bufs.len() as u16) % self.qsize;
        start
    }

    /// Writes a request header at `at` and 0xff at `status`.
    fn header_at(&self, at: u64, kind: u32, sector: u64, status: u64) {
        self.mem.write_obj(kind.to_le(), GuestAddress(at)).unwrap();
        self.mem.write_obj(0u32, GuestAddress(at + 4)).unwrap();
        self.mem
            .write_obj(sector.to_le(), GuestAddress(at + 8))
            .unwrap();
        self.mem.write_obj(0xffu8, GuestAddress(status)).unwrap();
    }

    fn header(&self, kind: u32, sector: u64) {
        self.header_at(HDR, kind, sector, STATUS);
    }

    /// Queues request `i` of a batch: its header at `HDR + 16 i`, its
    /// status at `STATUS + i`. Returns the head.
    fn post(&mut self, i: u64, kind: u32, sector: u64, data: &[(u64, u32, Dir)]) -> u16 {
        self.header_at(HDR + 16 * i, kind, sector, STATUS + i);
        let mut bufs = vec![(HDR + 16 * i, 16, R)];
        bufs.extend_from_slice(data);
        bufs.push((STATUS + i, 1, W));
        self.submit(&bufs)
    }

    /// Submits header + data + status, processes the queue and waits for
    /// the answer; returns (status byte, used length).
    fn request(&mut self, kind: u32, sector: u64, data: &[(u64, u32, Dir)]) -> (u8, u32) {
        self.header(kind, sector);
        let mut bufs = vec![(HDR, 16, R)];
        bufs.extend_from_slice(data);
        bufs.push((STATUS, 1, W));
        self.run(&bufs)
    }

    fn run(&mut self, bufs: &[(u64, u32, Dir)]) -> (u8, u32) {
        let head = self.submit(bufs);
        let used_before = self.used_idx();
        self.dev.process_queue();
        self.dev.complete_pending();
        assert_eq!(
            self.used_idx(),
            used_before.wrapping_add(1),
            "request not completed"
        );
        let (id, len) = self.used(used_before);
        assert_eq!(id, u32::from(head));
        (self.mem.read_obj(GuestAddress(STATUS)).unwrap(), len)
    }

    fn used_idx(&self) -> u16 {
        self.vq.used().idx().load()
    }

    /// (id, len) of used ring entry number `n`.
    fn used(&self, n: u16) -> (u32, u32) {
        let elem = self
            .vq
            .used()
            .ring()
            .ref_at(usize::from(n % self.qsize))
            .unwrap()
            .load();
        (elem.id(), elem.len())
    }

    fn read_mem(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    /// Reads the whole disk back through the device.
    fn read_disk(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let chunk = 64 * 1024;
        for (i, start) in (0..len).step_by(chunk).enumerate() {
            let n = chunk.min(len - start);
            let at = 0x20_0000;
            let (status, _) = self.request(T_IN, (start / 512) as u64, &[(at, n as u32, W)]);
            assert_eq!(status, status::OK, "chunk {i}");
            out.extend(self.read_mem(at, n));
        }
        out
    }
}

/// Makes the sync engine hold completions back (see `ordering.rs`).
pub(super) fn hold(dev: &mut Block, on: bool) {
    match &mut dev.io.engine {
        Engine::Sync(s) => s.set_hold(on),
        Engine::Uring(_) => panic!("not the sync engine"),
    }
}

pub(super) fn held(dev: &Block) -> usize {
    match &dev.io.engine {
        Engine::Sync(s) => s.held(),
        Engine::Uring(_) => 0,
    }
}

/// Lets every held completion through and handles them as the event loop
/// would.
pub(super) fn release(dev: &mut Block) {
    match &mut dev.io.engine {
        Engine::Sync(s) => s.release_held(),
        Engine::Uring(_) => {}
    }
    dev.handle_completion_event();
}

/// The disk's bytes as the backend has them now.
fn backend_bytes(disk: &mut dyn DiskBackend) -> Vec<u8> {
    let mut v = vec![0u8; disk.size() as usize];
    disk.read_at(&mut v, 0).unwrap();
    v
}

/// What a guest driver writes to bring the device behind `t` up: status
/// ACKNOWLEDGE, DRIVER, `features`, FEATURES_OK, queue 0 on `vq`'s rings,
/// then DRIVER_OK.
#[allow(clippy::cast_possible_truncation)] // the registers take halves
fn drive_to_driver_ok(
    t: &mut crate::virtio::mmio::MmioTransport,
    vq: &MockSplitQueue<'_, GuestMemoryMmap>,
    features: u64,
) {
    use crate::bus::BusDevice;
    let mut w = |off: u64, v: u32| t.write(0, off, &v.to_le_bytes());
    w(0x70, 1);
    w(0x70, 3);
    w(0x24, 0);
    w(0x20, features as u32);
    w(0x24, 1);
    w(0x20, (features >> 32) as u32);
    w(0x70, 11);
    w(0x30, 0);
    w(0x38, u32::from(QSIZE));
    w(0x80, vq.desc_table_addr().0 as u32);
    w(0x90, vq.avail_addr().0 as u32);
    w(0xa0, vq.used_addr().0 as u32);
    w(0x44, 1);
    w(0x70, 15);
}
