//! Direct I/O routes: how the block device may move a request's data
//! between guest memory and the host file without going through the
//! backend's own `read_at`/`write_at`.
//!
//! The block device asks [`DiskBackend::route`](super::DiskBackend::route)
//! for each read or write. The backend either answers with the host
//! extents (file offset, length) that hold the range — the device then
//! reads or writes them itself, asynchronously and straight from guest
//! memory — or tells it to take the synchronous path, where the backend
//! does the work (allocation, copy-on-write, compressed or zero clusters,
//! backing files, anything that has no fixed place in one file).
//!
//! A direct route names host clusters that are allocated; it stays true
//! as long as none of them is freed (and so possibly reused for other
//! data). Writes through the backend that only allocate, or write in
//! place, free nothing; the backend says when one might
//! ([`Route::Sync`]'s `frees`), and the device then finishes all direct
//! I/O first, as it does before discard and write-zeroes.

use std::os::unix::io::RawFd;

/// Most extents one request may map to; a range more fragmented than this
/// is sent down the synchronous path instead.
pub const MAX_EXTENTS: usize = 16;

/// Direction of a request, as far as the backend cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The data is read from the disk.
    Read,
    /// The data is written to the disk.
    Write,
}

/// A run of bytes in the host file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Extent {
    /// Offset in the host file.
    pub file_offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// Up to [`MAX_EXTENTS`] extents in guest order, stored inline so that
/// routing a request allocates nothing.
#[derive(Debug, Clone)]
pub struct Extents {
    items: [Extent; MAX_EXTENTS],
    len: usize,
}

impl Default for Extents {
    fn default() -> Self {
        Self {
            items: [Extent::default(); MAX_EXTENTS],
            len: 0,
        }
    }
}

impl Extents {
    /// Forgets every extent.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends `len` bytes at `file_offset`, merged into the previous
    /// extent when they follow it in the file. Returns `false` (and
    /// changes nothing) when that would need more than [`MAX_EXTENTS`].
    pub fn push(&mut self, file_offset: u64, len: u64) -> bool {
        if let Some(last) = self.len.checked_sub(1).map(|i| &mut self.items[i]) {
            if last.file_offset.checked_add(last.len) == Some(file_offset) {
                last.len += len;
                return true;
            }
        }
        let Some(slot) = self.items.get_mut(self.len) else {
            return false;
        };
        *slot = Extent { file_offset, len };
        self.len += 1;
        true
    }

    /// The extents, in guest order.
    pub fn as_slice(&self) -> &[Extent] {
        &self.items[..self.len]
    }

    /// Total bytes covered.
    pub fn total_len(&self) -> u64 {
        self.as_slice().iter().map(|e| e.len).sum()
    }
}

/// The backend's answer to "where does this range live?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The range is exactly the extents filled in, in this file: the
    /// device may read or write them directly. Reading past the end of the
    /// file must give zeros (a short read is not an error).
    Direct(RawFd),
    /// Call the backend's `read_at`/`write_at` on the device thread.
    Sync {
        /// The write may free host clusters (copy-on-write of a shared,
        /// compressed or preallocated-zero cluster): direct I/O handed out
        /// earlier may still be using them, so it must finish first.
        frees: bool,
    },
}

impl Route {
    /// The synchronous path, freeing nothing.
    pub const SYNC: Route = Route::Sync { frees: false };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_merge_and_cap() {
        let mut e = Extents::default();
        assert!(e.push(0x1000, 0x200));
        assert!(e.push(0x1200, 0x200)); // contiguous: merged
        assert_eq!(
            e.as_slice(),
            &[Extent {
                file_offset: 0x1000,
                len: 0x400
            }]
        );
        for i in 1..MAX_EXTENTS as u64 {
            assert!(e.push(i * 0x10_0000, 0x200));
        }
        assert!(!e.push(0x9999_0000, 0x200));
        assert_eq!(e.as_slice().len(), MAX_EXTENTS);
        assert_eq!(e.total_len(), 0x400 + 0x200 * (MAX_EXTENTS as u64 - 1));
        // A push that would overflow the offset is never merged.
        e.clear();
        assert!(e.push(u64::MAX, 1));
        assert!(e.push(0, 1));
        assert_eq!(e.as_slice().len(), 2);
    }
}
