//! The fixed table of requests in flight.
//!
//! Everything is allocated when the device is built: one slot per queue
//! entry, each with room for its iovecs, so starting a request allocates
//! nothing. A slot is found again from a completion's tag, which packs the
//! slot index and the part (one operation of the request) — see [`tag`].

use std::os::unix::io::RawFd;

use vm_memory::GuestAddress;

use crate::disk::MAX_EXTENTS;

/// Iovecs one request may use: every data descriptor, plus splits where a
/// descriptor crosses a memory region or an extent boundary. A request
/// needing more takes the synchronous path.
pub(super) const MAX_IOVECS: usize = super::SEG_MAX as usize + 2 * MAX_EXTENTS;

/// What a slot is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Read,
    Write,
    Flush,
}

/// One operation of a request: a run of its iovecs at one file offset.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Part {
    pub iov_start: usize,
    pub iov_count: usize,
    pub file_offset: u64,
    pub len: u64,
}

/// A request in flight.
#[derive(Debug, Clone, Copy)]
pub(super) struct Slot {
    pub head: u16,
    pub status_addr: GuestAddress,
    pub kind: Kind,
    pub fd: RawFd,
    pub data_len: u64,
    /// Guest bytes `[start, start + data_len)` a read or write covers.
    pub start: u64,
    /// Operations pushed and not yet completed.
    pub pending: usize,
    /// Some operation failed; answer IOERR.
    pub failed: bool,
    /// A write's sequence number; for a flush, the last write number
    /// handed out before it (it waits for every write up to that one).
    pub seq: u64,
    /// A flush waiting for earlier writes; nothing pushed yet.
    pub deferred: bool,
    pub parts: [Part; MAX_EXTENTS],
    pub nparts: usize,
}

impl Slot {
    fn empty() -> Self {
        Self {
            head: 0,
            status_addr: GuestAddress(0),
            kind: Kind::Flush,
            fd: -1,
            data_len: 0,
            start: 0,
            pending: 0,
            failed: false,
            seq: 0,
            deferred: false,
            parts: [Part::default(); MAX_EXTENTS],
            nparts: 0,
        }
    }
}

/// Tag for part `part` of slot `slot`.
pub(super) fn tag(slot: usize, part: usize) -> u64 {
    ((slot as u64) << 8) | part as u64
}

/// (slot, part) of a tag.
pub(super) fn untag(tag: u64) -> (usize, usize) {
    let slot = usize::try_from(tag >> 8).unwrap_or(usize::MAX);
    (slot, usize::from(tag.to_le_bytes()[0]))
}

const _: () = assert!(MAX_EXTENTS <= 0x100, "parts must fit the tag's low byte");

/// The slots and their iovec storage.
pub(super) struct SlotTable {
    slots: Vec<Slot>,
    busy: Vec<bool>,
    /// `MAX_IOVECS` per slot, slot `i` owning `[i * MAX_IOVECS..]`.
    iovecs: Vec<libc::iovec>,
    free: Vec<usize>,
}

// SAFETY: the iovecs are plain (address, length) pairs into guest memory,
// which is mapped for as long as the device holds its `GuestMemoryMmap`
// and may be accessed from any thread. The table has no thread affinity;
// the device (and so the table) is only used under its mutex.
unsafe impl Send for SlotTable {}

impl std::fmt::Debug for SlotTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotTable")
            .field("slots", &self.slots.len())
            .field("in_use", &self.in_use())
            .finish_non_exhaustive()
    }
}

impl SlotTable {
    pub fn new(n: usize) -> Self {
        let empty = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        Self {
            slots: vec![Slot::empty(); n],
            busy: vec![false; n],
            iovecs: vec![empty; n * MAX_IOVECS],
            // Popped from the end: slot 0 first.
            free: (0..n).rev().collect(),
        }
    }

    /// Takes a free slot.
    pub fn alloc(&mut self) -> Option<usize> {
        let i = self.free.pop()?;
        self.busy[i] = true;
        self.slots[i] = Slot::empty();
        Some(i)
    }

    /// Returns a slot to the free list.
    pub fn release(&mut self, i: usize) {
        if self.busy.get(i).copied().unwrap_or(false) {
            self.busy[i] = false;
            self.free.push(i);
        }
    }

    /// Number of slots, busy or not.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    pub fn has_free(&self) -> bool {
        !self.free.is_empty()
    }

    pub fn in_use(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// A busy slot.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut Slot> {
        match self.busy.get(i) {
            Some(true) => self.slots.get_mut(i),
            _ => None,
        }
    }

    /// A busy slot and its iovec storage.
    pub fn with_iovecs(&mut self, i: usize) -> Option<(&mut Slot, &mut [libc::iovec])> {
        if !self.busy.get(i).copied().unwrap_or(false) {
            return None;
        }
        let iovecs = &mut self.iovecs[i * MAX_IOVECS..(i + 1) * MAX_IOVECS];
        Some((&mut self.slots[i], iovecs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_and_tags_round_trip() {
        let mut t = SlotTable::new(3);
        let a = t.alloc().unwrap();
        let b = t.alloc().unwrap();
        let c = t.alloc().unwrap();
        assert!(t.alloc().is_none());
        t.release(b);
        t.release(b); // twice is harmless
        assert_eq!(t.in_use(), 2);
        assert!(t.get_mut(b).is_none());
        assert_eq!(t.alloc(), Some(b));
        assert!(t.get_mut(a).is_some() && t.get_mut(c).is_some());
        let (_, iovecs) = t.with_iovecs(c).unwrap();
        assert_eq!(iovecs.len(), MAX_IOVECS);
        for i in [a, b, c] {
            t.release(i);
        }
        assert_eq!(t.in_use(), 0);
        assert_eq!(untag(tag(255, 15)), (255, 15));
        assert!(t.get_mut(untag(u64::MAX).0).is_none());
    }
}
