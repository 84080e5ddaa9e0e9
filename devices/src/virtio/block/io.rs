//! Direct I/O: starting requests on the engine, and the ordering rules
//! around them (completing them is `completion.rs`).
//!
//! Ordering:
//! - A flush waits for every write started before it: it gets the last
//!   write sequence number handed out and is only pushed (as fdatasync)
//!   once no write with a number up to that one is in flight.
//! - A request on the synchronous path waits for every request in flight
//!   when one of them covers the same guest bytes (so overlapping requests
//!   take effect in the order the guest queued them, as they did when
//!   everything was synchronous), and when the backend may free clusters
//!   with it: a write the backend routes `Sync { frees: true }`
//!   (copy-on-write of a shared or compressed cluster), and always before
//!   discard and write-zeroes (and a backend flush, which must follow
//!   earlier writes anyway). A direct route names allocated clusters,
//!   valid until one is freed and perhaps reused for other data; freeing
//!   is rare, so it simply drains everything. Writes that only
//!   allocate (the common case on a fresh overlay) or write in place run
//!   alongside direct I/O: a cluster they allocate had refcount 0, so no
//!   direct I/O was using it, and the metadata they change (L2 tables,
//!   refcounts) is never a direct target. They stay ordered and
//!   crash-consistent among themselves as before, on the device thread.
//! - Reset and drop wait until the kernel is done with every operation,
//!   without touching the queue or guest memory for them.

use std::os::unix::io::RawFd;
use std::time::Duration;

use vm_memory::GuestAddress;

use super::device::Active;
use super::engine::{Completion, Engine, Op};
use super::inflight::{tag, untag, Kind, SlotTable, MAX_IOVECS};
use super::iovec::{self, IovecError};
use super::request::{Request, RequestType};
use super::{Block, SECTOR_SIZE};
use crate::guest_warn;

/// Why a direct read or write was not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StartError {
    /// The buffers need more iovecs or slots than there are: use the
    /// synchronous path.
    Fragmented,
    /// A buffer is outside guest memory (a malformed request).
    BadAddress,
    /// The backend's extents did not fit or the engine refused the
    /// operation (an I/O error).
    Failed,
}

impl From<IovecError> for StartError {
    fn from(e: IovecError) -> Self {
        match e {
            IovecError::TooFragmented => StartError::Fragmented,
            IovecError::BadAddress => StartError::BadAddress,
            IovecError::Mismatch => StartError::Failed,
        }
    }
}

/// The engine and the requests it is working on.
#[derive(Debug)]
pub(super) struct Io {
    pub engine: Engine,
    pub table: SlotTable,
    /// Sequence number of the last write started.
    last_write_seq: u64,
    /// Flushes waiting for earlier writes.
    deferred_flushes: usize,
    /// Reaped completions being processed (fixed capacity).
    pub completions: Vec<Completion>,
}

impl Io {
    pub fn new(engine: Engine, slots: usize) -> Self {
        Self {
            engine,
            table: SlotTable::new(slots),
            last_write_seq: 0,
            deferred_flushes: 0,
            completions: Vec::with_capacity(slots),
        }
    }

    /// Whether a read or write in flight touches guest bytes
    /// `[start, start + len)`.
    pub fn overlaps(&mut self, start: u64, len: u64) -> bool {
        let end = start.saturating_add(len);
        (0..self.table.slots()).any(|i| {
            self.table.get_mut(i).is_some_and(|s| {
                s.kind != Kind::Flush && s.start < end && start < s.start + s.data_len
            })
        })
    }

    /// Waits until the kernel has finished every operation, dropping the
    /// results; requests never started are forgotten.
    pub fn abandon(&mut self) {
        for i in 0..self.table.slots() {
            if self.table.get_mut(i).is_some_and(|s| s.pending == 0) {
                self.table.release(i);
            }
        }
        self.deferred_flushes = 0;
        while self.table.in_use() > 0 {
            self.completions.clear();
            self.engine.reap(&mut self.completions);
            for c in &self.completions {
                let (i, _) = untag(c.user_data);
                if let Some(slot) = self.table.get_mut(i) {
                    slot.pending = slot.pending.saturating_sub(1);
                    if slot.pending == 0 {
                        self.table.release(i);
                    }
                }
            }
            if self.table.in_use() > 0 && self.completions.is_empty() {
                wait(&mut self.engine);
            }
        }
    }
}

/// Blocks until the engine has a completion. Giving up is not an option
/// (the kernel may still write guest memory), so errors are retried.
pub(super) fn wait(engine: &mut Engine) {
    if let Err(e) = engine.wait() {
        guest_warn!("virtio-blk: waiting for I/O failed, retrying: {e}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

impl Block {
    /// Starts a read or write of `req` on the extents the backend gave for
    /// file `fd`. On error nothing was started.
    pub(super) fn start_rw(
        &mut self,
        a: &Active,
        head: u16,
        req: &Request,
        fd: RawFd,
    ) -> Result<(), StartError> {
        let kind = match req.request_type {
            RequestType::In => Kind::Read,
            _ => Kind::Write,
        };
        let Io {
            engine,
            table,
            last_write_seq,
            ..
        } = &mut self.io;
        let i = table.alloc().ok_or(StartError::Fragmented)?;
        let Some((slot, iovecs)) = table.with_iovecs(i) else {
            return Err(StartError::Fragmented);
        };
        let built = iovec::build(
            &a.mem,
            &self.segments,
            self.extents.as_slice(),
            iovecs,
            &mut slot.parts,
        );
        let nparts = match built {
            Ok(n) => n,
            Err(e) => {
                table.release(i);
                return Err(e.into());
            }
        };
        slot.head = head;
        slot.status_addr = req.status_addr;
        slot.kind = kind;
        slot.fd = fd;
        slot.data_len = req.data_len;
        slot.start = req.sector * SECTOR_SIZE;
        slot.nparts = nparts;
        if kind == Kind::Write {
            *last_write_seq += 1;
            slot.seq = *last_write_seq;
        }
        for p in 0..nparts {
            let part = slot.parts[p];
            let iov = iovecs[part.iov_start..].as_ptr();
            // At most MAX_IOVECS.
            let iovcnt = u32::try_from(part.iov_count.min(MAX_IOVECS)).unwrap_or(0);
            let offset = part.file_offset;
            let op = match kind {
                Kind::Read => Op::Read {
                    fd,
                    iov,
                    iovcnt,
                    offset,
                },
                _ => Op::Write {
                    fd,
                    iov,
                    iovcnt,
                    offset,
                },
            };
            // SAFETY: the iovecs live in the slot table, which is neither
            // moved nor reused until this slot's completions are reaped;
            // they point into guest memory that `Active::mem` keeps mapped,
            // and reset and drop wait for every completion before letting
            // go of it.
            match unsafe { engine.push(op, tag(i, p)) } {
                Ok(()) => slot.pending += 1,
                Err(e) => {
                    guest_warn!("virtio-blk: cannot queue I/O: {e}");
                    slot.failed = true;
                    break;
                }
            }
        }
        self.metrics.inflight_high_water = self
            .metrics
            .inflight_high_water
            .max(self.io.table.in_use() as u64);
        if self.io.table.get_mut(i).is_some_and(|s| s.pending == 0) {
            self.io.table.release(i);
            return Err(StartError::Failed);
        }
        Ok(())
    }

    /// Starts a flush answered by fdatasync of `fd`, once earlier writes
    /// are done. Returns `false` if no slot was free (nothing started).
    pub(super) fn start_flush(
        &mut self,
        a: &mut Active,
        head: u16,
        status_addr: GuestAddress,
        fd: RawFd,
    ) -> bool {
        let Some(i) = self.io.table.alloc() else {
            return false;
        };
        let last_write = self.io.last_write_seq;
        if let Some(slot) = self.io.table.get_mut(i) {
            slot.head = head;
            slot.status_addr = status_addr;
            slot.kind = Kind::Flush;
            slot.fd = fd;
            slot.seq = last_write;
            slot.deferred = true;
        }
        self.io.deferred_flushes += 1;
        self.metrics.inflight_high_water = self
            .metrics
            .inflight_high_water
            .max(self.io.table.in_use() as u64);
        self.push_ready_flushes(a);
        true
    }

    /// Pushes every deferred flush whose earlier writes have completed;
    /// returns how many were pushed.
    pub(super) fn push_ready_flushes(&mut self, a: &mut Active) -> usize {
        if self.io.deferred_flushes == 0 {
            return 0;
        }
        let mut oldest_write = u64::MAX;
        for i in 0..self.io.table.slots() {
            if let Some(s) = self.io.table.get_mut(i) {
                if s.kind == Kind::Write {
                    oldest_write = oldest_write.min(s.seq);
                }
            }
        }
        let mut pushed = 0;
        for i in 0..self.io.table.slots() {
            let Some(slot) = self.io.table.get_mut(i) else {
                continue;
            };
            if !slot.deferred || slot.seq >= oldest_write {
                continue;
            }
            slot.deferred = false;
            self.io.deferred_flushes -= 1;
            let op = Op::Fdatasync { fd: slot.fd };
            // SAFETY: fdatasync references no memory.
            match unsafe { self.io.engine.push(op, tag(i, 0)) } {
                Ok(()) => {
                    slot.pending = 1;
                    pushed += 1;
                }
                Err(e) => {
                    guest_warn!("virtio-blk: cannot queue a flush: {e}");
                    slot.failed = true;
                    self.finish(a, i);
                }
            }
        }
        pushed
    }

    /// Starts what the engine has queued. On failure the operations stay
    /// queued; the queue eventfd brings the device back to try again
    /// rather than leave them waiting for the guest's next notification.
    pub(super) fn submit(&mut self) {
        if let Err(e) = self.io.engine.submit() {
            guest_warn!("virtio-blk: io_uring submit failed, retrying: {e}");
            let _ = self.events.queues[0].write(1);
        }
    }
}
