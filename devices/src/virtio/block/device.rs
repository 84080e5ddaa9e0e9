//! The virtio-blk device: construction, feature and config answers,
//! activation, reset and teardown. The request loop lives in `queue.rs`,
//! direct I/O in `io.rs`, the synchronous path in `sync_path.rs`.

use std::path::Path;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
    VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_WRITE_ZEROES,
};
use virtio_queue::Queue;

use super::config::{self, ConfigValues, CONFIG_LEN};
use super::engine::{Engine, IoEngine};
use super::io::Io;
use super::metrics::BlockMetrics;
use super::request::Segment;
use super::throttle::{Limiter, LimiterClock};
use super::{DEVICE_ID_LEN, SECTOR_SIZE};
use crate::disk::{open_disk, DiskBackend, Extents, ImageFormat, OpenError, MAX_EXTENTS};
use crate::rate_limiter::{RateLimiterConfig, RateLimiterError};
use crate::virtio::features::{
    VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
};
use crate::virtio::{
    device_type, ActivateError, DeviceEvents, GuestMemoryMmap, IrqTrigger, VirtioDevice,
};

/// Size of the single request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Most data descriptors per request (advertised as `seg_max`).
pub const SEG_MAX: u32 = 126;
/// Data moves between guest and disk on the synchronous path in pieces of
/// this size.
const BOUNCE_LEN: usize = 128 * 1024;
/// Largest discard / write-zeroes range accepted (1 GiB), so one request
/// cannot keep the device thread busy for long.
pub(super) const MAX_ZEROING_SECTORS: u32 = 1 << 21;
/// Discard granularity advertised (4 KiB).
const DISCARD_ALIGNMENT_SECTORS: u32 = 8;

/// How to build a block device.
#[derive(Debug, Clone, Default)]
pub struct BlockOptions {
    /// Refuse writes (advertised as `VIRTIO_BLK_F_RO`). A disk opened
    /// read-only makes the device read-only anyway.
    pub read_only: bool,
    /// Answer to GET_ID; at most 20 bytes are used.
    pub serial: String,
    /// Which engine runs direct I/O; the default tries io_uring first.
    pub io_engine: IoEngine,
    /// Bandwidth and ops limits; `None` for none (they can still be set
    /// later with [`Block::set_rate_limiter`]).
    pub rate_limiter: Option<RateLimiterConfig>,
}

/// Errors building a block device.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The device's eventfds could not be created.
    #[error("cannot create the device's eventfds: {0}")]
    EventFd(std::io::Error),
    /// The disk image could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// [`IoEngine::IoUring`] was asked for and the host refused it.
    #[error("cannot set up io_uring: {0}")]
    IoUring(std::io::Error),
    /// The rate limiter config was invalid or its timer unavailable.
    #[error(transparent)]
    RateLimiter(#[from] RateLimiterError),
}

/// What the device has while the driver runs it.
#[derive(Debug)]
pub(super) struct Active {
    /// Kept for as long as requests may be in flight: the kernel reads and
    /// writes this memory through the iovecs.
    pub mem: GuestMemoryMmap,
    pub queue: Queue,
    pub interrupt: IrqTrigger,
    /// The driver broke the queue protocol; nothing more is processed
    /// until it resets the device.
    pub broken: bool,
    /// Chains were used since the last interrupt decision.
    pub used: bool,
    /// Draining stopped with requests left on the queue because every
    /// in-flight slot was busy; a completion resumes it.
    pub stalled: bool,
    /// Draining stopped because the rate limiter refused a request; its
    /// timer resumes it.
    pub throttled: bool,
}

/// A virtio-blk device over one disk.
#[derive(Debug)]
pub struct Block {
    pub(super) disk: Box<dyn DiskBackend>,
    pub(super) read_only: bool,
    pub(super) capacity_sectors: u64,
    pub(super) serial: [u8; DEVICE_ID_LEN],
    avail_features: u64,
    pub(super) acked_features: u64,
    config: [u8; CONFIG_LEN],
    pub(super) events: DeviceEvents,
    pub(super) active: Option<Active>,
    /// Which fds the event handler watches besides the activation eventfd
    /// (only while the device is active).
    pub(super) watching: super::event_handler::Watching,
    pub(super) io: Io,
    pub(super) bounce: Vec<u8>,
    pub(super) segments: Vec<Segment>,
    pub(super) extents: Extents,
    pub(super) rate_limiter: Option<Limiter>,
    pub(super) metrics: BlockMetrics,
}

impl Block {
    /// A device serving `disk`.
    pub fn new(disk: Box<dyn DiskBackend>, options: BlockOptions) -> Result<Self, BlockError> {
        let read_only = options.read_only || disk.is_read_only();
        let capacity_sectors = disk.size() / SECTOR_SIZE;
        let mut serial = [0u8; DEVICE_ID_LEN];
        let id = options.serial.as_bytes();
        let n = id.len().min(DEVICE_ID_LEN);
        serial[..n].copy_from_slice(&id[..n]);

        let mut avail_features = 1u64 << VIRTIO_F_VERSION_1
            | 1 << VIRTIO_RING_F_EVENT_IDX
            | 1 << VIRTIO_RING_F_INDIRECT_DESC
            | 1 << VIRTIO_BLK_F_SEG_MAX
            | 1 << VIRTIO_BLK_F_BLK_SIZE
            | 1 << VIRTIO_BLK_F_FLUSH;
        if read_only {
            avail_features |= 1 << VIRTIO_BLK_F_RO;
        } else {
            avail_features |= 1 << VIRTIO_BLK_F_DISCARD | 1 << VIRTIO_BLK_F_WRITE_ZEROES;
        }
        let config = config::build(&ConfigValues {
            capacity_sectors,
            seg_max: SEG_MAX,
            blk_size: 512,
            max_discard_sectors: MAX_ZEROING_SECTORS,
            max_discard_seg: 1,
            discard_sector_alignment: DISCARD_ALIGNMENT_SECTORS,
            max_write_zeroes_sectors: MAX_ZEROING_SECTORS,
            max_write_zeroes_seg: 1,
        });

        // One slot per queue entry; each may split into MAX_EXTENTS
        // operations, all of which the engine must be able to hold.
        let slots = usize::from(QUEUE_SIZE);
        let max_ops = u32::try_from(slots * MAX_EXTENTS).unwrap_or(u32::MAX);
        let engine = Engine::new(options.io_engine, u32::from(QUEUE_SIZE), max_ops)
            .map_err(BlockError::IoUring)?;
        log::info!(
            "virtio-blk{}: {} sectors, {} I/O engine",
            if options.serial.is_empty() {
                String::new()
            } else {
                format!(" {}", options.serial)
            },
            capacity_sectors,
            engine.kind()
        );
        let rate_limiter = options
            .rate_limiter
            .as_ref()
            .map(|config| Limiter::with_clock(config, LimiterClock::default()))
            .transpose()?;
        let metrics = BlockMetrics {
            io_uring: u64::from(engine.kind() == IoEngine::IoUring),
            ..BlockMetrics::default()
        };
        Ok(Self {
            disk,
            read_only,
            capacity_sectors,
            serial,
            avail_features,
            acked_features: 0,
            config,
            events: DeviceEvents::new(1).map_err(BlockError::EventFd)?,
            active: None,
            watching: Default::default(),
            io: Io::new(engine, slots),
            bounce: vec![0; BOUNCE_LEN],
            segments: Vec::with_capacity(SEG_MAX as usize),
            extents: Extents::default(),
            rate_limiter,
            metrics,
        })
    }

    /// Opens the image at `path` (format probed when `None`; pass it for
    /// images a guest has written) and builds a device over it.
    pub fn open(
        path: &Path,
        format: Option<ImageFormat>,
        options: BlockOptions,
    ) -> Result<Self, BlockError> {
        let disk = open_disk(path, format, options.read_only)?;
        Self::new(disk, options)
    }

    /// Counters since creation.
    pub fn metrics(&self) -> BlockMetrics {
        self.metrics
    }

    /// Whether the device refuses writes.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The engine running direct I/O: [`IoEngine::IoUring`] or
    /// [`IoEngine::Sync`].
    pub fn io_engine(&self) -> IoEngine {
        self.io.engine.kind()
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // The kernel may still be writing into guest memory for requests in
        // flight; the memory (in `active`) is only released after this.
        self.io.abandon();
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        device_type::BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn events(&self) -> &DeviceEvents {
        &self.events
    }

    fn avail_features(&self) -> u64 {
        self.avail_features
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        crate::virtio::read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Nothing is writable without VIRTIO_BLK_F_CONFIG_WCE.
        log::debug!(
            "virtio-blk: ignored {}-byte config write at {offset:#x}",
            data.len()
        );
    }

    fn activate(&mut self, mem: GuestMemoryMmap, queues: Vec<Queue>) -> Result<(), ActivateError> {
        if self.active.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        let queue = crate::virtio::checked_queues(&mem, queues, 1)?.remove(0);
        self.active = Some(Active {
            mem,
            queue,
            interrupt: self.events.interrupt.clone(),
            broken: false,
            used: false,
            stalled: false,
            throttled: false,
        });
        Ok(())
    }

    /// Waits for every request in flight (their results are dropped: the
    /// driver discarded them) before letting go of the queue and memory.
    fn reset(&mut self) {
        self.io.abandon();
        self.active = None;
        self.acked_features = 0;
    }

    fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    fn write_metrics(&self, out: &mut dyn FnMut(&'static str, u64)) {
        self.metrics.write(out);
    }
}
