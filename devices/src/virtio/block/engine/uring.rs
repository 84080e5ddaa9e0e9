//! The io_uring engine.
//!
//! Default ring setup on purpose: no SQPOLL (no extra kernel thread per
//! disk spinning on a 2-core host), no SINGLE_ISSUER/DEFER_TASKRUN (a
//! reset drains the ring from a vCPU thread, not the device thread).
//! Completions raise an eventfd registered with IORING_REGISTER_EVENTFD,
//! which the device's event handler watches while the device is active.

use std::io;
use std::os::unix::io::AsRawFd;

use io_uring::{opcode, squeue, types, IoUring};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{Completion, Op};

/// Tag of the setup probe; the device never uses it (slot tags are small).
const PROBE_TAG: u64 = u64::MAX;

/// An io_uring with a completion eventfd.
pub(in crate::virtio::block) struct UringEngine {
    ring: IoUring,
    eventfd: EventFd,
    /// Whether the kernel has the CQ-ring flags word (Linux 5.8+) that
    /// turns eventfd signalling off and on.
    can_quiet: bool,
}

impl std::fmt::Debug for UringEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringEngine")
            .field("sq_entries", &self.ring.params().sq_entries())
            .field("cq_entries", &self.ring.params().cq_entries())
            .finish_non_exhaustive()
    }
}

impl UringEngine {
    /// A ring with `batch` submission entries and room for `max_in_flight`
    /// completions, so the completion ring never overflows. Fails when the host refuses io_uring in any way, including after
    /// setup: a round trip of a no-op proves that submitting works too
    /// (seccomp filters may allow `io_uring_setup` but not `io_uring_enter`).
    pub fn new(batch: u32, max_in_flight: u32) -> io::Result<Self> {
        let mut ring: IoUring = IoUring::builder()
            .setup_cqsize(max_in_flight.max(batch))
            .build(batch)?;
        let eventfd = EventFd::new(EFD_NONBLOCK)?;
        ring.submitter().register_eventfd(eventfd.as_raw_fd())?;
        let nop = opcode::Nop::new().build().user_data(PROBE_TAG);
        // SAFETY: a no-op references no memory.
        unsafe { ring.submission().push(&nop) }.map_err(|_| io::Error::other("ring full"))?;
        ring.submit_and_wait(1)?;
        let cqe = ring
            .completion()
            .next()
            .ok_or_else(|| io::Error::other("no completion for a no-op"))?;
        if cqe.result() < 0 {
            return Err(io::Error::from_raw_os_error(-cqe.result()));
        }
        // The probe's completion signalled the eventfd; start clean.
        let _ = eventfd.read();
        // No feature bit names the CQ flags word; EXT_ARG came later (5.11),
        // so where it exists the flags do too. On older kernels writing
        // them would hit the ring head.
        let can_quiet = ring.params().is_feature_ext_arg();
        Ok(Self {
            ring,
            eventfd,
            can_quiet,
        })
    }

    pub fn eventfd(&self) -> &EventFd {
        &self.eventfd
    }

    /// # Safety
    ///
    /// As [`super::Engine::push`].
    pub unsafe fn push(&mut self, op: Op, user_data: u64) -> io::Result<()> {
        let entry: squeue::Entry = match op {
            Op::Read {
                fd,
                iov,
                iovcnt,
                offset,
            } => opcode::Readv::new(types::Fd(fd), iov, iovcnt)
                .offset(offset)
                .build(),
            Op::Write {
                fd,
                iov,
                iovcnt,
                offset,
            } => opcode::Writev::new(types::Fd(fd), iov, iovcnt)
                .offset(offset)
                .build()
                // A buffered write is a copy into the page cache that the
                // kernel would otherwise do inside `io_uring_enter`, on
                // this thread, one request after another. The io-wq
                // workers copy several at once while this thread goes on
                // taking requests (measured: README, Performance).
                .flags(squeue::Flags::ASYNC),
            Op::Fdatasync { fd } => opcode::Fsync::new(types::Fd(fd))
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
        }
        .user_data(user_data);
        for _ in 0..2 {
            // SAFETY: the caller keeps the iovecs and buffers valid until
            // the completion is reaped, as io_uring requires.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return Ok(());
            }
            // The submission ring is full: start what is there first.
            self.submit()?;
        }
        Err(io::Error::other("io_uring submission ring stays full"))
    }

    /// Starts what is queued, if anything. The kernel completes much
    /// page-cache I/O during the call itself; the caller reaps right after
    /// (see [`super::Engine::submit`]), so the eventfd is kept quiet for
    /// those completions instead of waking the event loop for nothing.
    /// Anything posted meanwhile is still in the ring for that reap.
    pub fn submit(&mut self) -> io::Result<()> {
        if self.ring.submission().is_empty() {
            return Ok(());
        }
        if self.can_quiet {
            self.ring.completion().disable_eventfd();
        }
        let result = loop {
            match self.ring.submit() {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r.map(drop),
            }
        };
        if self.can_quiet {
            self.ring.completion().enable_eventfd();
        }
        result
    }

    pub fn wait(&mut self) -> io::Result<()> {
        loop {
            match self.ring.submit_and_wait(1) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r.map(drop),
            }
        }
    }

    pub fn reap(&mut self, out: &mut Vec<Completion>) {
        let room = out.capacity() - out.len();
        out.extend(self.ring.completion().take(room).map(|cqe| Completion {
            user_data: cqe.user_data(),
            result: cqe.result(),
        }));
    }
}
