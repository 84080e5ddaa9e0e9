//! Iovecs into guest memory, and finishing transfers the kernel left short.
//!
//! A request's data descriptors were checked against guest memory when it
//! was parsed; here each one is turned into host pointers through
//! vm-memory, one region at a time (`get_slices` splits a range where it
//! crosses from one region into the next, since neighbouring guest regions
//! need not be neighbours in the host). The iovecs are then cut where the
//! backend's extents end, so each extent gets its own run of iovecs.

use std::io;
use std::os::unix::io::RawFd;

use vm_memory::{GuestMemoryBackend, VolatileSlice};

use super::inflight::Part;
use super::request::Segment;
use crate::disk::Extent;
use crate::virtio::GuestMemoryMmap;

/// Why a request's buffers cannot be used directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum IovecError {
    /// A buffer is not (or no longer) inside guest memory.
    #[error("data buffer outside guest memory")]
    BadAddress,
    /// More iovecs or parts than a slot holds: use the synchronous path.
    #[error("request too fragmented for direct I/O")]
    TooFragmented,
    /// The extents do not add up to the data length (a backend bug).
    #[error("extents do not cover the request")]
    Mismatch,
}

/// Fills `iovecs` with the host addresses of `segments` and `parts` with
/// one run of them per extent; returns the number of parts.
pub(super) fn build(
    mem: &GuestMemoryMmap,
    segments: &[Segment],
    extents: &[Extent],
    iovecs: &mut [libc::iovec],
    parts: &mut [Part],
) -> Result<usize, IovecError> {
    if extents.len() > parts.len() {
        return Err(IovecError::TooFragmented);
    }
    for (part, e) in parts.iter_mut().zip(extents) {
        *part = Part {
            iov_start: 0,
            iov_count: 0,
            file_offset: e.file_offset,
            len: e.len,
        };
    }
    let mut n_iov = 0;
    let mut part = 0;
    let mut left_in_extent = extents.first().map_or(0, |e| e.len);
    for seg in segments {
        for slice in GuestMemoryBackend::get_slices(mem, seg.addr, seg.len as usize) {
            let slice = slice.map_err(|_| IovecError::BadAddress)?;
            // The pointer of a plain mmap region stays valid after the
            // guard is gone (guards only matter for Xen mappings).
            let mut ptr = slice.ptr_guard_mut().as_ptr();
            let mut left = slice.len();
            while left > 0 {
                if left_in_extent == 0 {
                    return Err(IovecError::Mismatch);
                }
                let n = left.min(usize::try_from(left_in_extent).unwrap_or(usize::MAX));
                let iov = iovecs.get_mut(n_iov).ok_or(IovecError::TooFragmented)?;
                *iov = libc::iovec {
                    iov_base: ptr.cast(),
                    iov_len: n,
                };
                n_iov += 1;
                parts[part].iov_count += 1;
                // Stays inside the slice: n <= left.
                ptr = ptr.wrapping_add(n);
                left -= n;
                left_in_extent -= n as u64;
                if left_in_extent == 0 {
                    part += 1;
                    left_in_extent = extents.get(part).map_or(0, |e| e.len);
                    if let Some(next) = parts.get_mut(part) {
                        next.iov_start = n_iov;
                    }
                }
            }
        }
    }
    if part != extents.len() {
        return Err(IovecError::Mismatch);
    }
    Ok(part)
}

/// Completes a transfer the kernel did only `done` bytes of: the rest is
/// read or written here, synchronously (rare: a file that shrank, qcow2
/// data clusters past the end of the file, transfers over 2 GiB). Reading
/// past the end of the file gives zeros; a write that makes no progress is
/// an error. `iovecs` are the part's own and are consumed.
pub(super) fn finish_short(
    write: bool,
    fd: RawFd,
    mut iovecs: &mut [libc::iovec],
    mut offset: u64,
    mut done: u64,
) -> io::Result<()> {
    loop {
        advance(&mut iovecs, done);
        offset = offset
            .checked_add(done)
            .ok_or(io::ErrorKind::InvalidInput)?;
        if iovecs.is_empty() {
            return Ok(());
        }
        let off = libc::off_t::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        // At most MAX_IOVECS, far below IOV_MAX.
        let count = libc::c_int::try_from(iovecs.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
        let n = if write {
            // SAFETY: the iovecs point into guest memory that was checked
            // when they were built and is still mapped; pwritev reads it.
            unsafe { libc::pwritev(fd, iovecs.as_ptr(), count, off) }
        } else {
            // SAFETY: as above; preadv writes only inside those iovecs.
            unsafe { libc::preadv(fd, iovecs.as_ptr(), count, off) }
        };
        match n {
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
                done = 0;
            }
            0 if write => return Err(io::ErrorKind::WriteZero.into()),
            0 => {
                zero_fill(iovecs);
                return Ok(());
            }
            n => done = n.unsigned_abs() as u64,
        }
    }
}

/// Drops the first `n` bytes from `iovecs`.
fn advance(iovecs: &mut &mut [libc::iovec], mut n: u64) {
    while let Some(first) = iovecs.first_mut() {
        match usize::try_from(n) {
            Ok(k) if k < first.iov_len => {
                // Stays inside the buffer: k < iov_len.
                first.iov_base = first.iov_base.cast::<u8>().wrapping_add(k).cast();
                first.iov_len -= k;
                return;
            }
            _ => {
                n -= first.iov_len as u64;
                *iovecs = &mut std::mem::take(iovecs)[1..];
            }
        }
    }
}

/// Writes zeros to every buffer.
fn zero_fill(iovecs: &[libc::iovec]) {
    const ZEROS: [u8; 4096] = [0; 4096];
    for iov in iovecs {
        // SAFETY: the iovec describes guest memory checked when it was
        // built and still mapped; VolatileSlice only does volatile writes
        // inside it, which is how guest memory must be written.
        let slice = unsafe { VolatileSlice::new(iov.iov_base.cast(), iov.iov_len) };
        let mut at = 0;
        while at < slice.len() {
            let Ok(rest) = slice.offset(at) else { break };
            rest.copy_from(&ZEROS[..]);
            at += ZEROS.len().min(rest.len());
        }
    }
}
