//! The synchronous engine: each operation runs as it is pushed.

use std::collections::VecDeque;
use std::io;

use super::{Completion, Op};

/// Runs `preadv`/`pwritev`/`fdatasync` on the calling thread and keeps
/// their results until reaped.
#[derive(Debug)]
pub(in crate::virtio::block) struct SyncEngine {
    done: VecDeque<Completion>,
    /// Tests only: keep completions back until `release_held`, to play
    /// out completion orders a real disk may produce.
    hold: bool,
    held: Vec<Completion>,
}

impl SyncEngine {
    /// An engine for up to `max_in_flight` unreaped completions.
    pub fn new(max_in_flight: u32) -> Self {
        Self {
            done: VecDeque::with_capacity(max_in_flight as usize),
            hold: false,
            held: Vec::new(),
        }
    }

    /// # Safety
    ///
    /// As [`super::Engine::push`]; here the buffers are only used before
    /// this returns.
    pub unsafe fn push(&mut self, op: Op, user_data: u64) -> io::Result<()> {
        // SAFETY: the caller guarantees the iovecs and buffers are valid.
        let result = unsafe { run(op) };
        let c = Completion { user_data, result };
        if self.hold {
            self.held.push(c);
        } else {
            self.done.push_back(c);
        }
        Ok(())
    }

    pub fn reap(&mut self, out: &mut Vec<Completion>) {
        while out.len() < out.capacity() {
            match self.done.pop_front() {
                Some(c) => out.push(c),
                None => break,
            }
        }
    }

    /// Makes every held completion reapable (latest first, the order a
    /// real disk is least likely to use).
    pub fn release_held(&mut self) {
        self.done.extend(self.held.drain(..).rev());
    }

    /// Tests: whether to hold completions back.
    #[cfg(test)]
    pub fn set_hold(&mut self, hold: bool) {
        self.hold = hold;
    }

    /// Tests: completions held back so far.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

/// Runs one operation, retrying when a signal interrupts it.
///
/// # Safety
///
/// The iovecs of a read or write must describe valid buffers.
unsafe fn run(op: Op) -> i32 {
    let offset_of = |offset: u64| libc::off_t::try_from(offset).ok();
    loop {
        let ret: isize = match op {
            Op::Read {
                fd,
                iov,
                iovcnt,
                offset,
            } => {
                let Some(off) = offset_of(offset) else {
                    return -libc::EINVAL;
                };
                // SAFETY: the caller guarantees `iov[..iovcnt]` describes
                // writable memory; preadv writes nowhere else.
                unsafe { libc::preadv(fd, iov, iovcnt as libc::c_int, off) }
            }
            Op::Write {
                fd,
                iov,
                iovcnt,
                offset,
            } => {
                let Some(off) = offset_of(offset) else {
                    return -libc::EINVAL;
                };
                // SAFETY: the caller guarantees `iov[..iovcnt]` describes
                // readable memory; pwritev only reads it.
                unsafe { libc::pwritev(fd, iov, iovcnt as libc::c_int, off) }
            }
            // SAFETY: fdatasync takes only a descriptor.
            Op::Fdatasync { fd } => (unsafe { libc::fdatasync(fd) }) as isize,
        };
        if ret >= 0 {
            // The kernel caps one transfer below 2 GiB (MAX_RW_COUNT).
            return i32::try_from(ret).unwrap_or(i32::MAX);
        }
        let errno = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        if errno != libc::EINTR {
            return -errno;
        }
    }
}
