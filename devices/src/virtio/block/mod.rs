//! virtio-blk: a block device over a [`crate::disk::DiskBackend`].
//!
//! # Design: disk I/O off the event loop
//!
//! Each request is parsed and checked on the device thread, then its data
//! moves straight between guest memory and the image file: the device
//! builds iovecs that point into guest memory (split where a buffer
//! crosses a memory region) and hands one `readv`/`writev` per host extent
//! to an io_uring. One drain of the queue queues every request it finds
//! and starts them with a single `io_uring_enter`; the ring signals an
//! eventfd the device's event handler watches, and each batch of
//! completions writes the status bytes, fills the used ring and raises at
//! most one interrupt (EVENT_IDX permitting). Up to one request per queue
//! entry is in flight, in a table allocated with the device.
//!
//! Why io_uring rather than a pool of worker threads (QEMU's
//! `aio=threads`): the work to overlap is the kernel's, not ours. A pool
//! would need a thread per concurrent request, a queue and a lock or
//! channel per hand-off, and a wake-up of the device thread per completion
//! — on a small host those threads compete with the vCPUs. With io_uring
//! the kernel overlaps the requests itself (completing much page-cache I/O
//! inline during the submit, and using its own workers only when it must
//! block), the device thread stays the only thread that touches the queue,
//! and a batch costs one system call. Where io_uring cannot be set up
//! (old kernel, seccomp, `kernel.io_uring_disabled`), a synchronous engine
//! with the same interface runs `preadv`/`pwritev` into guest memory on
//! the device thread: today's behaviour without the bounce buffer. The
//! engine in use is logged at info level and reported as the `io_uring`
//! metric.
//!
//! The backend decides what may go direct ([`crate::disk::Route`]): all of
//! a raw image; for qcow2 the ranges that lie in allocated data clusters
//! (for writes, clusters it owns alone). Anything needing allocation,
//! copy-on-write, a backing file, compressed or zero clusters, and
//! discard / write-zeroes, takes the synchronous path: the backend serves
//! it on the device thread through a bounce buffer, keeping qcow2 metadata
//! updates ordered and crash-consistent exactly as before (counted in
//! `sync_path_requests`).
//!
//! Ordering (argued in `io.rs`):
//! - a flush is started (fdatasync through the ring, or the backend's
//!   flush) only after every write started before it has completed;
//! - a request on the synchronous path first completes everything in
//!   flight if a request in flight covers the same guest bytes, or if it
//!   may free clusters (discard, write-zeroes, copy-on-write of a shared
//!   or compressed cluster), since a direct route is only valid while its
//!   clusters stay allocated; writes that merely allocate run alongside
//!   direct I/O, and qcow2 metadata is still only changed on the device
//!   thread, in the same order and with the same crash consistency as
//!   before;
//! - reset and drop wait until the kernel has finished every operation,
//!   without answering them, so neither the old queue nor guest memory is
//!   touched afterwards.
//!
//! # Layout
//!
//! - `request.rs` parses a descriptor chain into a typed [`Request`],
//!   validating its shape against guest memory;
//! - `device.rs` holds [`Block`] and its [`crate::virtio::VirtioDevice`]
//!   side: construction, config, activation, reset;
//! - `queue.rs` drains the queue and sends each request its way;
//! - `io.rs` starts direct I/O and keeps the ordering rules;
//! - `completion.rs` answers finished requests and interrupts the guest;
//! - `inflight.rs` is the fixed table of requests in flight;
//! - `iovec.rs` turns guest buffers into iovecs and finishes short I/O;
//! - `engine/` runs the operations: io_uring, or synchronously;
//! - `sync_path.rs` serves what the backend must do itself, and GET_ID;
//! - `throttle.rs` applies the rate limiter;
//! - `config.rs` builds the config space;
//! - `metrics.rs` counts what happened, including every rejected request;
//! - `event_handler.rs` plugs the device into an `event-manager` loop.

mod completion;
mod config;
mod device;
mod engine;
mod event_handler;
mod inflight;
mod io;
mod iovec;
mod metrics;
mod queue;
mod request;
mod sync_path;
#[cfg(test)]
mod tests;
mod throttle;

pub use device::{Block, BlockError, BlockOptions, QUEUE_SIZE, SEG_MAX};
pub use engine::IoEngine;
pub use metrics::BlockMetrics;
pub use request::{Request, RequestError, RequestType, Segment};

/// Sector size of the virtio-blk protocol; offsets and capacity use it.
pub const SECTOR_SIZE: u64 = 512;
/// Length of the GET_ID answer.
pub const DEVICE_ID_LEN: usize = 20;

/// Request status values written in the last byte of a chain.
pub mod status {
    /// Success.
    pub const OK: u8 = 0;
    /// The request failed or was malformed.
    pub const IOERR: u8 = 1;
    /// The request type or flags are not supported.
    pub const UNSUPP: u8 = 2;
}
