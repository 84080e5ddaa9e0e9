//! Receive: frames of the datapath's own and frames from the tap, into the
//! guest's RX buffers.

use std::io;

use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::device::Active;
use super::tap::VNET_HDR_LEN;
use super::Net;
use crate::guest_warn;
use crate::net::ToGuest;
use crate::virtio::VIRTIO_MMIO_INT_VRING;

/// Frames moved per call before the device thread looks at its other
/// events (the tap stays readable, so the event loop comes back).
const RX_BUDGET: usize = 256;

/// Offset of `num_buffers` in `virtio_net_hdr_v1`.
const NUM_BUFFERS_OFFSET: usize = 10;

/// Where receiving stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RxStop {
    /// Nothing more to deliver now.
    Idle,
    /// A frame waits for guest buffers; the tap must not be watched until
    /// the driver adds some.
    NoRoom,
    /// The budget ran out with frames perhaps still waiting.
    Budget,
}

/// What became of the waiting frame.
enum Placed {
    Delivered,
    Dropped,
    NoRoom,
    Broken,
}

/// One guest RX chain taken off the queue and not yet returned.
#[derive(Debug, Clone, Copy)]
struct Held {
    head: u16,
    first_segment: usize,
    segments: usize,
}

/// Chains taken for the waiting frame: their writable buffers, copied out
/// of the descriptors once (a guest rewriting its descriptor table later
/// changes nothing), in preallocated vectors.
#[derive(Debug)]
pub(super) struct RxChains {
    held: Vec<Held>,
    segments: Vec<(GuestAddress, usize)>,
    capacity: usize,
}

/// Most buffer segments recorded for one frame: a frame is at most
/// 64 KiB, and a driver that needs more than this many pieces for it is
/// not one we serve.
const MAX_SEGMENTS: usize = 1024;

impl RxChains {
    pub(super) fn new(max_chains: usize) -> Self {
        Self {
            held: Vec::with_capacity(max_chains),
            segments: Vec::with_capacity(MAX_SEGMENTS),
            capacity: 0,
        }
    }

    pub(super) fn clear(&mut self) {
        self.held.clear();
        self.segments.clear();
        self.capacity = 0;
    }
}

impl Net {
    /// Moves frames to the guest: the datapath's own first, then from the
    /// tap when `read_tap`. Interrupts the driver once at the end if it
    /// wants to be.
    pub(super) fn receive(&mut self, read_tap: bool) -> RxStop {
        let Some(mut a) = self.active.take() else {
            return RxStop::Idle;
        };
        let stop = if a.broken {
            RxStop::Idle
        } else {
            self.receive_frames(&mut a, read_tap)
        };
        if std::mem::take(&mut a.rx_used) && a.rx.needs_notification(&a.mem).unwrap_or(true) {
            a.interrupt.trigger(VIRTIO_MMIO_INT_VRING);
            self.metrics.interrupts += 1;
        }
        self.active = Some(a);
        stop
    }

    fn receive_frames(&mut self, a: &mut Active, read_tap: bool) -> RxStop {
        for _ in 0..RX_BUDGET {
            if self.rx_len.is_none() && !self.next_frame(read_tap) {
                return RxStop::Idle;
            }
            match self.place(a) {
                Placed::Delivered | Placed::Dropped => {}
                Placed::NoRoom => {
                    self.metrics.rx_paused += 1;
                    return RxStop::NoRoom;
                }
                Placed::Broken => return RxStop::Idle,
            }
        }
        RxStop::Budget
    }

    /// Loads the next frame into the RX buffer; `false` if there is none.
    fn next_frame(&mut self, read_tap: bool) -> bool {
        if let Some(n) = self
            .datapath
            .pop_local_frame(&mut self.rx_buf[VNET_HDR_LEN..])
        {
            // No offloads: a plain, fully checksummed frame.
            self.rx_buf[..VNET_HDR_LEN].fill(0);
            self.rx_len = Some(VNET_HDR_LEN + n);
            self.rx_local = true;
            return true;
        }
        if !read_tap {
            return false;
        }
        loop {
            let n = match self.tap.read(&mut self.rx_buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    log::warn!("virtio-net: reading tap {}: {e}", self.tap.name());
                    self.metrics.tap_read_errors += 1;
                    return false;
                }
            };
            let frame = self.rx_buf.get(VNET_HDR_LEN..n).unwrap_or(&[]);
            match self.datapath.to_guest(frame) {
                ToGuest::Deliver => {
                    self.rx_len = Some(n);
                    self.rx_local = false;
                    return true;
                }
                ToGuest::Drop(_) => self.metrics.datapath_drops += 1,
            }
        }
    }

    /// Places the waiting frame into guest buffers, taking chains until
    /// they can hold it.
    fn place(&mut self, a: &mut Active) -> Placed {
        let Some(len) = self.rx_len else {
            return Placed::Dropped;
        };
        while self.rx_chains.capacity < len {
            if !a.mergeable && !self.rx_chains.held.is_empty() {
                // One chain per frame, and this one is too small: the frame
                // goes, the chain stays for the next.
                self.metrics.rx_too_big += 1;
                self.rx_len = None;
                return Placed::Dropped;
            }
            let chain = match a.rx.iter(&a.mem) {
                Ok(mut iter) => iter.next(),
                Err(_) => return self.rx_broken(a),
            };
            let Some(chain) = chain else {
                // Out of buffers: ask for a notification when more come,
                // then look once more (they may have come meanwhile).
                match a.rx.enable_notification(&a.mem) {
                    Ok(true) => continue,
                    Ok(false) => return Placed::NoRoom,
                    Err(_) => return self.rx_broken(a),
                }
            };
            let head = chain.head_index();
            let c = &mut self.rx_chains;
            let first_segment = c.segments.len();
            let mut room = 0usize;
            let mut too_many = false;
            for desc in chain {
                if !desc.is_write_only() || desc.len() == 0 {
                    continue;
                }
                if c.segments.len() == MAX_SEGMENTS {
                    too_many = true;
                    break;
                }
                // u32 always fits a usize on the 64-bit hosts we run on.
                let n = desc.len() as usize;
                c.segments.push((desc.addr(), n));
                room += n;
            }
            let segments = c.segments.len() - first_segment;
            if room == 0 || too_many {
                c.segments.truncate(first_segment);
                if too_many {
                    // Cannot hold the frame within bounds: drop it, and
                    // hand every chain back unused.
                    self.metrics.rx_too_big += 1;
                    self.rx_len = None;
                    self.give_back_held(a, head);
                    return Placed::Dropped;
                }
                // Nothing writable in it: back to the driver, unused.
                self.metrics.rx_bad_chains += 1;
                if a.rx.add_used(&a.mem, head, 0).is_err() {
                    return self.rx_broken(a);
                }
                a.rx_used = true;
                continue;
            }
            c.held.push(Held {
                head,
                first_segment,
                segments,
            });
            c.capacity += room;
        }
        self.write_frame(a, len)
    }

    /// Copies the waiting frame of `len` bytes across the held chains and
    /// returns them to the driver.
    fn write_frame(&mut self, a: &mut Active, len: usize) -> Placed {
        let count = u16::try_from(self.rx_chains.held.len()).unwrap_or(u16::MAX);
        self.rx_buf[NUM_BUFFERS_OFFSET..NUM_BUFFERS_OFFSET + 2]
            .copy_from_slice(&count.to_le_bytes());
        let mut off = 0;
        let c = &self.rx_chains;
        for held in &c.held {
            let mut used = 0usize;
            for &(addr, room) in &c.segments[held.first_segment..held.first_segment + held.segments]
            {
                if off == len {
                    break;
                }
                let n = room.min(len - off);
                if a.mem.write_slice(&self.rx_buf[off..off + n], addr).is_err() {
                    guest_warn!("virtio-net: RX buffer outside guest memory, device needs reset");
                    self.metrics.rx_bad_chains += 1;
                    self.rx_len = None;
                    return self.rx_broken(a);
                }
                off += n;
                used += n;
            }
            let used = u32::try_from(used).unwrap_or(u32::MAX);
            if a.rx.add_used(&a.mem, held.head, used).is_err() {
                return self.rx_broken(a);
            }
        }
        a.rx_used = true;
        self.metrics.rx_frames += 1;
        self.metrics.rx_bytes += (len - VNET_HDR_LEN) as u64;
        if self.rx_local {
            self.metrics.rx_local_frames += 1;
        }
        self.rx_chains.clear();
        self.rx_len = None;
        Placed::Delivered
    }

    /// Returns every held chain, and `extra`, unused.
    fn give_back_held(&mut self, a: &mut Active, extra: u16) {
        let heads = self.rx_chains.held.iter().map(|h| h.head).chain([extra]);
        let mut ok = true;
        for head in heads {
            ok &= a.rx.add_used(&a.mem, head, 0).is_ok();
        }
        a.rx_used = true;
        self.rx_chains.clear();
        if !ok {
            self.rx_broken(a);
        }
    }

    fn rx_broken(&mut self, a: &mut Active) -> Placed {
        guest_warn!("virtio-net: RX queue protocol violation, device needs reset");
        self.metrics.queue_errors += 1;
        a.broken = true;
        a.interrupt.set_needs_reset();
        self.rx_chains.clear();
        Placed::Broken
    }
}
