//! I/O engines: where the block device's direct reads, writes and
//! fdatasyncs run.
//!
//! Both engines take the same operations — vectored reads and writes whose
//! iovecs point into guest memory, and fdatasync — tagged with a `u64`,
//! and hand back `(tag, result)` completions in any order:
//!
//! - [`UringEngine`]: an io_uring; operations queue up in its submission
//!   ring and one `io_uring_enter` per queue drain starts them all; the
//!   kernel signals an eventfd as they complete.
//! - [`SyncEngine`]: `preadv`/`pwritev`/`fdatasync` run right away on the
//!   device thread; completions are ready as soon as `push` returns. Used
//!   when io_uring cannot be set up (old kernel, seccomp, sysctl).
//!
//! Results follow io_uring's convention: bytes transferred, or `-errno`.

mod sync;
mod uring;

use std::io;
use std::os::unix::io::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use vmm_sys_util::eventfd::EventFd;

impl std::str::FromStr for IoEngine {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(IoEngine::Auto),
            "io_uring" => Ok(IoEngine::IoUring),
            "sync" => Ok(IoEngine::Sync),
            other => Err(format!(
                "unknown I/O engine '{other}' (auto, io_uring or sync)"
            )),
        }
    }
}

pub(super) use self::sync::SyncEngine;
pub(super) use self::uring::UringEngine;

/// Which I/O engine a block device uses (`auto`, `io_uring` or `sync` in
/// configurations).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IoEngine {
    /// io_uring when the host allows it, else the synchronous engine (the
    /// fallback is logged once per process).
    #[default]
    Auto,
    /// io_uring, or fail to build the device.
    IoUring,
    /// Synchronous `preadv`/`pwritev` on the device thread.
    Sync,
}

impl std::fmt::Display for IoEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IoEngine::Auto => "auto",
            IoEngine::IoUring => "io_uring",
            IoEngine::Sync => "sync",
        })
    }
}

/// One operation. The iovec arrays and the memory they point to are the
/// caller's, see [`Engine::push`].
#[derive(Debug, Clone, Copy)]
pub(super) enum Op {
    /// `preadv(fd, iov, iovcnt, offset)`.
    Read {
        fd: RawFd,
        iov: *const libc::iovec,
        iovcnt: u32,
        offset: u64,
    },
    /// `pwritev(fd, iov, iovcnt, offset)`.
    Write {
        fd: RawFd,
        iov: *const libc::iovec,
        iovcnt: u32,
        offset: u64,
    },
    /// `fdatasync(fd)`.
    Fdatasync { fd: RawFd },
}

/// A finished operation: its tag and io_uring-style result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Completion {
    pub user_data: u64,
    pub result: i32,
}

/// The engine a device runs on.
#[derive(Debug)]
pub(super) enum Engine {
    /// Boxed: the ring is big and there is one per device.
    Uring(Box<UringEngine>),
    Sync(SyncEngine),
}

/// Set once the io_uring fallback has been logged, so a VM with many
/// disks says it once.
static FALLBACK_LOGGED: AtomicBool = AtomicBool::new(false);

impl Engine {
    /// Builds the engine `choice` asks for. Up to `batch` operations are
    /// queued before they are started anyway; `max_in_flight` is the most
    /// the caller will ever have pushed and not reaped.
    pub fn new(choice: IoEngine, batch: u32, max_in_flight: u32) -> io::Result<Self> {
        let engine = match choice {
            IoEngine::Sync => Engine::Sync(SyncEngine::new(max_in_flight)),
            IoEngine::IoUring => Engine::Uring(Box::new(UringEngine::new(batch, max_in_flight)?)),
            IoEngine::Auto => match UringEngine::new(batch, max_in_flight) {
                Ok(ring) => Engine::Uring(Box::new(ring)),
                Err(e) => {
                    if !FALLBACK_LOGGED.swap(true, Ordering::Relaxed) {
                        log::warn!(
                            "virtio-blk: io_uring unavailable ({e}); disks use synchronous I/O"
                        );
                    }
                    Engine::Sync(SyncEngine::new(max_in_flight))
                }
            },
        };
        Ok(engine)
    }

    /// The engine actually running ([`IoEngine::IoUring`] or [`IoEngine::Sync`]).
    pub fn kind(&self) -> IoEngine {
        match self {
            Engine::Uring(_) => IoEngine::IoUring,
            Engine::Sync(_) => IoEngine::Sync,
        }
    }

    /// Readable when completions are waiting (io_uring only).
    pub fn completion_fd(&self) -> Option<&EventFd> {
        match self {
            Engine::Uring(u) => Some(u.eventfd()),
            Engine::Sync(_) => None,
        }
    }

    /// Queues `op` (the sync engine runs it now).
    ///
    /// # Safety
    ///
    /// The iovec array of a read or write and every buffer it describes
    /// must stay valid, and not be used by anything else, until the
    /// completion tagged `user_data` has been reaped.
    pub unsafe fn push(&mut self, op: Op, user_data: u64) -> io::Result<()> {
        match self {
            // SAFETY: forwarded; the caller upholds the contract above.
            Engine::Uring(u) => unsafe { u.push(op, user_data) },
            // SAFETY: forwarded; the caller upholds the contract above.
            Engine::Sync(s) => unsafe { s.push(op, user_data) },
        }
    }

    /// Starts everything queued (one `io_uring_enter`, none if nothing
    /// is). Completions that happen during the call may not signal the
    /// completion eventfd: reap after every submit.
    pub fn submit(&mut self) -> io::Result<()> {
        match self {
            Engine::Uring(u) => u.submit(),
            Engine::Sync(_) => Ok(()),
        }
    }

    /// Blocks until at least one completion can be reaped, starting
    /// anything still queued. Call only with operations in flight.
    pub fn wait(&mut self) -> io::Result<()> {
        match self {
            Engine::Uring(u) => u.wait(),
            Engine::Sync(s) => {
                s.release_held();
                Ok(())
            }
        }
    }

    /// Moves finished operations into `out`, up to its spare capacity.
    pub fn reap(&mut self, out: &mut Vec<Completion>) {
        match self {
            Engine::Uring(u) => u.reap(out),
            Engine::Sync(s) => s.reap(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_falls_back_to_sync_when_io_uring_setup_fails() {
        // A ring of zero entries is refused by every kernel (EINVAL), the
        // way an old kernel, seccomp or the sysctl would refuse any ring.
        let engine = Engine::new(IoEngine::Auto, 0, 0).unwrap();
        assert_eq!(engine.kind(), IoEngine::Sync);
        assert!(engine.completion_fd().is_none());
        assert!(Engine::new(IoEngine::IoUring, 0, 0).is_err());
        assert_eq!(
            Engine::new(IoEngine::Sync, 16, 16).unwrap().kind(),
            IoEngine::Sync
        );
    }

    #[test]
    fn both_engines_read_write_and_sync_a_file() {
        let tmp = vmm_sys_util::tempfile::TempFile::new().unwrap();
        let fd = std::os::unix::io::AsRawFd::as_raw_fd(tmp.as_file());
        for choice in [IoEngine::Auto, IoEngine::Sync] {
            let mut engine = Engine::new(choice, 8, 16).unwrap();
            let data = *b"0123456789abcdef";
            let mut back = [0u8; 16];
            let wr = libc::iovec {
                iov_base: data.as_ptr() as *mut _,
                iov_len: data.len(),
            };
            let rd = libc::iovec {
                iov_base: back.as_mut_ptr().cast(),
                iov_len: back.len(),
            };
            let write = Op::Write {
                fd,
                iov: &wr,
                iovcnt: 1,
                offset: 100,
            };
            // SAFETY: `data` and `wr` outlive the wait below.
            unsafe { engine.push(write, 1) }.unwrap();
            let mut out = Vec::with_capacity(4);
            while out.is_empty() {
                engine.wait().unwrap();
                engine.reap(&mut out);
            }
            assert_eq!(
                out[0],
                Completion {
                    user_data: 1,
                    result: 16
                }
            );
            let read = Op::Read {
                fd,
                iov: &rd,
                iovcnt: 1,
                offset: 100,
            };
            // SAFETY: `back` and `rd` outlive the wait below.
            unsafe { engine.push(read, 2) }.unwrap();
            // SAFETY: no memory involved.
            unsafe { engine.push(Op::Fdatasync { fd }, 3) }.unwrap();
            engine.submit().unwrap();
            out.clear();
            while out.len() < 2 {
                engine.reap(&mut out);
                if out.len() < 2 {
                    engine.wait().unwrap();
                }
            }
            out.sort_by_key(|c| c.user_data);
            assert_eq!(
                out,
                [
                    Completion {
                        user_data: 2,
                        result: 16
                    },
                    Completion {
                        user_data: 3,
                        result: 0
                    }
                ]
            );
            assert_eq!(back, data);
            // Bad descriptors come back as -errno, not as a failure to push.
            // SAFETY: no memory involved.
            unsafe { engine.push(Op::Fdatasync { fd: -1 }, 4) }.unwrap();
            out.clear();
            while out.is_empty() {
                engine.wait().unwrap();
                engine.reap(&mut out);
            }
            assert_eq!(
                out[0],
                Completion {
                    user_data: 4,
                    result: -libc::EBADF
                }
            );
        }
    }
}
