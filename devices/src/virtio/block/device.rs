//! The virtio-blk device: feature/config answers and the request loop.
//!
//! Processing model: the device never spawns threads; the VMM runs its
//! event handler (`event_handler.rs`) on a thread of the device's own. Its
//! one queue `EventFd` (see [`VirtioDevice::events`]) is registered by the
//! VMM as an ioeventfd and, once the driver activated the device, in that
//! thread's event loop; when it fires, [`Block::handle_queue_event`] drains
//! the queue synchronously against the disk and raises one interrupt for
//! the batch.
//! Requests are parsed into a typed [`Request`] first and then executed;
//! data moves through one bounce buffer allocated with the device, so a
//! request allocates nothing.

use std::path::Path;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
    VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes};

use super::config::{self, ConfigValues, CONFIG_LEN};
use super::metrics::BlockMetrics;
use super::request::{self, Request, RequestType, Segment, DISCARD_SEGMENT_LEN};
use super::{status, DEVICE_ID_LEN, SECTOR_SIZE};
use crate::disk::{open_disk, DiskBackend, DiskError, ImageFormat, OpenError};
use crate::guest_warn;
use crate::virtio::features::{
    VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
};
use crate::virtio::{
    device_type, ActivateError, DeviceEvents, GuestMemoryMmap, IrqTrigger, VirtioDevice,
    VIRTIO_MMIO_INT_VRING,
};

/// Size of the single request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Most data descriptors per request (advertised as `seg_max`).
pub const SEG_MAX: u32 = 126;
/// Data moves between guest and disk in pieces of this size.
const BOUNCE_LEN: usize = 128 * 1024;
/// Largest discard / write-zeroes range accepted (1 GiB), so one request
/// cannot keep the event loop busy for long.
const MAX_ZEROING_SECTORS: u32 = 1 << 21;
/// Discard granularity advertised (4 KiB).
const DISCARD_ALIGNMENT_SECTORS: u32 = 8;
/// Queue-draining passes per notification before yielding to other
/// devices on the event loop (the device re-signals itself to resume).
const MAX_PASSES: usize = 4;

/// How to build a block device.
#[derive(Debug, Clone, Default)]
pub struct BlockOptions {
    /// Refuse writes (advertised as `VIRTIO_BLK_F_RO`). A disk opened
    /// read-only makes the device read-only anyway.
    pub read_only: bool,
    /// Answer to GET_ID; at most 20 bytes are used.
    pub serial: String,
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
}

#[derive(Debug)]
struct Active {
    mem: GuestMemoryMmap,
    queue: Queue,
    interrupt: IrqTrigger,
    /// The driver broke the queue protocol; nothing more is processed
    /// until it resets the device.
    broken: bool,
}

/// A virtio-blk device over one disk.
#[derive(Debug)]
pub struct Block {
    disk: Box<dyn DiskBackend>,
    read_only: bool,
    capacity_sectors: u64,
    serial: [u8; DEVICE_ID_LEN],
    avail_features: u64,
    acked_features: u64,
    config: [u8; CONFIG_LEN],
    events: DeviceEvents,
    active: Option<Active>,
    /// Whether the event handler watches the queue eventfd (only while
    /// the device is active).
    pub(super) queue_registered: bool,
    bounce: Vec<u8>,
    segments: Vec<Segment>,
    metrics: BlockMetrics,
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
            queue_registered: false,
            bounce: vec![0; BOUNCE_LEN],
            segments: Vec::with_capacity(SEG_MAX as usize),
            metrics: BlockMetrics::default(),
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

    /// Call when the queue `EventFd` is readable: clears it and processes
    /// the queue (a no-op until the driver has activated the device).
    pub fn handle_queue_event(&mut self) {
        // Always consume the event, even when inactive, so a level-
        // triggered event loop does not spin.
        let _ = self.events.queues[0].read();
        self.metrics.queue_events += 1;
        self.process_queue();
    }

    /// Executes every available request and signals the guest once.
    pub fn process_queue(&mut self) {
        let Some(mut active) = self.active.take() else {
            return;
        };
        if !active.broken {
            self.drain(&mut active);
        }
        self.active = Some(active);
    }

    fn drain(&mut self, a: &mut Active) {
        let mut used_any = false;
        for pass in 0.. {
            if pass == MAX_PASSES {
                // Still busy: let other devices run, then come back.
                let _ = self.events.queues[0].write(1);
                break;
            }
            if a.queue.disable_notification(&a.mem).is_err() {
                return self.queue_broken(a);
            }
            for _ in 0..a.queue.size() {
                let chain = match a.queue.iter(&a.mem) {
                    Ok(mut iter) => iter.next(),
                    Err(_) => return self.queue_broken(a),
                };
                let Some(chain) = chain else { break };
                let head = chain.head_index();
                let len = self.handle_chain(&a.mem, chain);
                if a.queue.add_used(&a.mem, head, len).is_err() {
                    return self.queue_broken(a);
                }
                used_any = true;
            }
            match a.queue.enable_notification(&a.mem) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(_) => return self.queue_broken(a),
            }
        }
        if used_any && a.queue.needs_notification(&a.mem).unwrap_or(true) {
            a.interrupt.trigger(VIRTIO_MMIO_INT_VRING);
            self.metrics.interrupts += 1;
        }
    }

    fn queue_broken(&mut self, a: &mut Active) {
        guest_warn!("virtio-blk: queue protocol violation, device needs reset");
        self.metrics.queue_errors += 1;
        a.broken = true;
        a.interrupt.set_needs_reset();
    }

    /// Parses and executes one chain; returns the used length.
    fn handle_chain(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: DescriptorChain<&GuestMemoryMmap>,
    ) -> u32 {
        let parsed = request::parse(
            chain,
            mem,
            &mut self.segments,
            SEG_MAX as usize,
            self.capacity_sectors,
        );
        let (status, written, status_addr) = match parsed {
            Ok(req) => {
                let (status, written) = self.execute(mem, &req);
                (status, written, req.status_addr)
            }
            Err((e, Some(addr))) => {
                log::debug!("virtio-blk: malformed request: {e}");
                self.metrics.invalid_requests += 1;
                (status::IOERR, 0, addr)
            }
            Err((e, None)) => {
                log::debug!("virtio-blk: dropped chain: {e}");
                self.metrics.dropped_chains += 1;
                return 0;
            }
        };
        if mem.write_obj(status, status_addr).is_err() {
            self.metrics.dropped_chains += 1;
            return 0;
        }
        written + 1
    }

    /// Runs a parsed request; returns (status, bytes written to the guest).
    fn execute(&mut self, mem: &GuestMemoryMmap, req: &Request) -> (u8, u32) {
        let writes_disk = matches!(
            req.request_type,
            RequestType::Out | RequestType::Discard | RequestType::WriteZeroes
        );
        if writes_disk && self.read_only {
            self.metrics.read_only_rejections += 1;
            return (status::IOERR, 0);
        }
        let result = match req.request_type {
            RequestType::In => self.read(mem, req).map(|()| {
                self.metrics.reads += 1;
                self.metrics.read_bytes += req.data_len;
                // parse() caps data_len at u32::MAX.
                u32::try_from(req.data_len).unwrap_or(u32::MAX)
            }),
            RequestType::Out => self.write(mem, req).map(|()| {
                self.metrics.writes += 1;
                self.metrics.write_bytes += req.data_len;
                0
            }),
            RequestType::Flush => self.disk.flush().map(|()| {
                self.metrics.flushes += 1;
                0
            }),
            RequestType::GetDeviceId => {
                self.metrics.get_ids += 1;
                return (status::OK, self.write_serial(mem));
            }
            RequestType::Discard | RequestType::WriteZeroes => {
                return self.zero_ranges(mem, req);
            }
            RequestType::Unsupported(t) => {
                log::debug!("virtio-blk: unsupported request type {t}");
                self.metrics.unsupported += 1;
                return (status::UNSUPP, 0);
            }
        };
        match result {
            Ok(written) => (status::OK, written),
            Err(e) => {
                guest_warn!("virtio-blk: {:?} failed: {e}", req.request_type);
                self.metrics.io_errors += 1;
                (status::IOERR, 0)
            }
        }
    }

    fn read(&mut self, mem: &GuestMemoryMmap, req: &Request) -> Result<(), DiskError> {
        let mut offset = req.sector * SECTOR_SIZE;
        for seg in &self.segments {
            let mut done = 0usize;
            while done < seg.len as usize {
                let n = (seg.len as usize - done).min(self.bounce.len());
                self.disk.read_at(&mut self.bounce[..n], offset)?;
                mem.write_slice(&self.bounce[..n], seg.addr.unchecked_add(done as u64))
                    .map_err(|_| DiskError::Corrupt {
                        what: "guest buffer",
                        offset: seg.addr.0,
                    })?;
                done += n;
                offset += n as u64;
            }
        }
        Ok(())
    }

    fn write(&mut self, mem: &GuestMemoryMmap, req: &Request) -> Result<(), DiskError> {
        let mut offset = req.sector * SECTOR_SIZE;
        for seg in &self.segments {
            let mut done = 0usize;
            while done < seg.len as usize {
                let n = (seg.len as usize - done).min(self.bounce.len());
                mem.read_slice(&mut self.bounce[..n], seg.addr.unchecked_add(done as u64))
                    .map_err(|_| DiskError::Corrupt {
                        what: "guest buffer",
                        offset: seg.addr.0,
                    })?;
                self.disk.write_at(&self.bounce[..n], offset)?;
                done += n;
                offset += n as u64;
            }
        }
        Ok(())
    }

    /// Copies the serial into the data buffers (as much as fits).
    fn write_serial(&mut self, mem: &GuestMemoryMmap) -> u32 {
        let mut rest = &self.serial[..];
        let mut written = 0;
        for seg in &self.segments {
            let n = rest.len().min(seg.len as usize);
            if mem.write_slice(&rest[..n], seg.addr).is_err() {
                break;
            }
            rest = &rest[n..];
            written += u32::try_from(n).unwrap_or(0);
        }
        written
    }

    /// Reads `buf.len()` bytes at `offset` into the request's data.
    fn read_data(&self, mem: &GuestMemoryMmap, mut offset: u64, buf: &mut [u8]) -> bool {
        let mut filled = 0;
        for seg in &self.segments {
            let len = u64::from(seg.len);
            if offset >= len {
                offset -= len;
                continue;
            }
            let n = usize::try_from(len - offset)
                .unwrap_or(usize::MAX)
                .min(buf.len() - filled);
            if mem
                .read_slice(&mut buf[filled..filled + n], seg.addr.unchecked_add(offset))
                .is_err()
            {
                return false;
            }
            filled += n;
            offset = 0;
            if filled == buf.len() {
                return true;
            }
        }
        false
    }

    fn zero_ranges(&mut self, mem: &GuestMemoryMmap, req: &Request) -> (u8, u32) {
        let discard = req.request_type == RequestType::Discard;
        let (feature, allowed_flags) = if discard {
            (VIRTIO_BLK_F_DISCARD, 0)
        } else {
            (
                VIRTIO_BLK_F_WRITE_ZEROES,
                VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
            )
        };
        if self.acked_features & (1 << feature) == 0 {
            self.metrics.unsupported += 1;
            return (status::UNSUPP, 0);
        }
        // Only one range per request is advertised (max_*_seg = 1).
        if req.data_len != DISCARD_SEGMENT_LEN {
            self.metrics.invalid_requests += 1;
            return (status::IOERR, 0);
        }
        let mut raw = [0u8; 16];
        if !self.read_data(mem, 0, &mut raw) {
            self.metrics.invalid_requests += 1;
            return (status::IOERR, 0);
        }
        let sector = u64::from_le_bytes(raw[0..8].try_into().expect("8"));
        let sectors = u32::from_le_bytes(raw[8..12].try_into().expect("4"));
        let flags = u32::from_le_bytes(raw[12..16].try_into().expect("4"));
        if flags & !allowed_flags != 0 {
            self.metrics.unsupported += 1;
            return (status::UNSUPP, 0);
        }
        let in_range = sector
            .checked_add(u64::from(sectors))
            .is_some_and(|end| end <= self.capacity_sectors);
        if !in_range || sectors > MAX_ZEROING_SECTORS {
            self.metrics.invalid_requests += 1;
            return (status::IOERR, 0);
        }
        let (offset, len) = (sector * SECTOR_SIZE, u64::from(sectors) * SECTOR_SIZE);
        let result = if discard {
            self.disk.discard(offset, len)
        } else {
            self.disk.write_zeroes(offset, len)
        };
        match result {
            Ok(()) if discard => self.metrics.discards += 1,
            Ok(()) => self.metrics.write_zeroes += 1,
            Err(e) => {
                guest_warn!("virtio-blk: zeroing failed: {e}");
                self.metrics.io_errors += 1;
                return (status::IOERR, 0);
            }
        }
        (status::OK, 0)
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
        config::read(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Nothing is writable without VIRTIO_BLK_F_CONFIG_WCE.
        log::debug!(
            "virtio-blk: ignored {}-byte config write at {offset:#x}",
            data.len()
        );
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        mut queues: Vec<Queue>,
    ) -> Result<(), ActivateError> {
        if self.active.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        if queues.len() != 1 {
            return Err(ActivateError::QueueCount {
                expected: 1,
                got: queues.len(),
            });
        }
        let queue = queues.remove(0);
        if !queue.is_valid(&mem) {
            return Err(ActivateError::InvalidQueue(0));
        }
        self.active = Some(Active {
            mem,
            queue,
            interrupt: self.events.interrupt.clone(),
            broken: false,
        });
        Ok(())
    }

    fn reset(&mut self) {
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
