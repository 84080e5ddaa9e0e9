//! virtio-blk: a block device over a [`crate::disk::DiskBackend`].
//!
//! - `request.rs` parses a descriptor chain into a typed [`Request`],
//!   validating its shape against guest memory;
//! - `device.rs` holds [`Block`], its [`crate::virtio::VirtioDevice`] side
//!   and the queue loop that executes requests;
//! - `config.rs` builds the config space;
//! - `metrics.rs` counts what happened, including every rejected request;
//! - `event_handler.rs` plugs the device into an `event-manager` loop.

mod config;
mod device;
mod event_handler;
mod metrics;
mod request;
#[cfg(test)]
mod tests;

pub use device::{Block, BlockError, BlockOptions, QUEUE_SIZE, SEG_MAX};
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
