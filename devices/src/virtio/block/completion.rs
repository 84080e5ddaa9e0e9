//! Completing requests: reaping the engine, answering each request with
//! its status byte and used length, and interrupting the guest once per
//! batch.

use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress};

use super::device::Active;
use super::engine::Completion;
use super::inflight::{untag, Kind};
use super::io::wait;
use super::iovec;
use super::{status, Block};
use crate::guest_warn;
use crate::virtio::VIRTIO_MMIO_INT_VRING;

impl Block {
    /// Takes every completion the engine has and finishes the requests
    /// they end; flushes that became ready are started.
    pub(super) fn reap(&mut self, a: &mut Active) {
        loop {
            self.io.completions.clear();
            self.io.engine.reap(&mut self.io.completions);
            let reaped = self.io.completions.len();
            for k in 0..reaped {
                let c = self.io.completions[k];
                self.on_completion(a, c);
            }
            let pushed = self.push_ready_flushes(a);
            if pushed > 0 {
                self.submit();
            }
            if reaped == 0 && pushed == 0 {
                break;
            }
        }
    }

    fn on_completion(&mut self, a: &mut Active, c: Completion) {
        let (i, p) = untag(c.user_data);
        let Some((slot, iovecs)) = self.io.table.with_iovecs(i) else {
            log::error!("virtio-blk: completion for an idle slot {:#x}", c.user_data);
            return;
        };
        slot.pending = slot.pending.saturating_sub(1);
        if c.result < 0 {
            let e = std::io::Error::from_raw_os_error(-c.result);
            guest_warn!("virtio-blk: {:?} failed: {e}", slot.kind);
            slot.failed = true;
        } else if slot.kind != Kind::Flush && p < slot.nparts {
            let part = slot.parts[p];
            let done = c.result.unsigned_abs().into();
            if done < part.len {
                let own = &mut iovecs[part.iov_start..part.iov_start + part.iov_count];
                let write = slot.kind == Kind::Write;
                if let Err(e) = iovec::finish_short(write, slot.fd, own, part.file_offset, done) {
                    guest_warn!("virtio-blk: {:?} failed: {e}", slot.kind);
                    slot.failed = true;
                }
            }
        }
        if slot.pending == 0 {
            self.finish(a, i);
        }
    }

    /// Answers the request in slot `i` and frees the slot.
    pub(super) fn finish(&mut self, a: &mut Active, i: usize) {
        let Some(slot) = self.io.table.get_mut(i).map(|s| *s) else {
            return;
        };
        self.io.table.release(i);
        let m = &mut self.metrics;
        let (status, written) = match (slot.kind, slot.failed) {
            (_, true) => {
                m.io_errors += 1;
                (status::IOERR, 0)
            }
            (Kind::Read, false) => {
                m.reads += 1;
                m.read_bytes += slot.data_len;
                // parse() caps data_len below u32::MAX.
                (status::OK, u32::try_from(slot.data_len).unwrap_or(0))
            }
            (Kind::Write, false) => {
                m.writes += 1;
                m.write_bytes += slot.data_len;
                (status::OK, 0)
            }
            (Kind::Flush, false) => {
                m.flushes += 1;
                (status::OK, 0)
            }
        };
        self.complete(a, slot.head, slot.status_addr, status, written);
    }

    /// Completes every request in flight, blocking until the engine is
    /// done with them (see the module comment for when).
    pub(super) fn complete_in_flight(&mut self, a: &mut Active) {
        loop {
            self.reap(a);
            if self.io.table.in_use() == 0 {
                return;
            }
            wait(&mut self.io.engine);
        }
    }

    /// Writes the status byte and returns the chain to the driver; the
    /// used length counts the bytes written into its buffers, status
    /// included.
    pub(super) fn complete(
        &mut self,
        a: &mut Active,
        head: u16,
        status_addr: GuestAddress,
        status: u8,
        written: u32,
    ) {
        if a.broken {
            return;
        }
        let len = if a.mem.write_obj(status, status_addr).is_ok() {
            written.saturating_add(1)
        } else {
            self.metrics.dropped_chains += 1;
            0
        };
        self.add_used(a, head, len);
    }

    /// Returns a chain to the driver.
    pub(super) fn add_used(&mut self, a: &mut Active, head: u16, len: u32) {
        if a.broken {
            return;
        }
        if a.queue.add_used(&a.mem, head, len).is_err() {
            return self.queue_broken(a);
        }
        a.used = true;
    }

    /// Interrupts the driver for the chains used since the last call, if
    /// it wants to be (EVENT_IDX): one interrupt per batch.
    pub(super) fn signal_used(&mut self, a: &mut Active) {
        if !std::mem::take(&mut a.used) {
            return;
        }
        if a.queue.needs_notification(&a.mem).unwrap_or(true) {
            a.interrupt.trigger(VIRTIO_MMIO_INT_VRING);
            self.metrics.interrupts += 1;
        }
    }

    pub(super) fn queue_broken(&mut self, a: &mut Active) {
        guest_warn!("virtio-blk: queue protocol violation, device needs reset");
        self.metrics.queue_errors += 1;
        a.broken = true;
        a.interrupt.set_needs_reset();
    }
}
