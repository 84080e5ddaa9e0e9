//! virtio-net over a Linux tap, with the NIC's datapath
//! ([`crate::net::Datapath`]) between the two.
//!
//! Two queues, RX (0) and TX (1). Every frame is copied once through a
//! buffer of the device's own, in both directions: the datapath must judge
//! a frame before the guest (RX) or the host (TX) can see any of it, and a
//! guest must not be able to change a frame after it was judged. Buffers
//! are allocated once, at construction; the established path allocates
//! nothing.
//!
//! - TX: each chain is gathered into the TX buffer, judged, and written to
//!   the tap with its virtio-net header (offloads pass through to the host
//!   kernel), or answered by the datapath, or dropped.
//! - RX: frames of the datapath's own go first, then frames read from the
//!   tap. A frame is placed only once enough guest buffers are available
//!   (one chain, or several with `VIRTIO_NET_F_MRG_RXBUF`); chains taken
//!   while waiting for more are held, not returned. While the guest has no
//!   room the tap is not watched at all (no busy loop; frames wait in the
//!   tap's queue), and the RX queue notification resumes it; EVENT_IDX
//!   asks the driver for that notification before the device sleeps, so no
//!   wake-up is lost.
//!
//! The device runs on its own thread (see the VMM's `device_thread`), so
//! disk I/O never delays packets.

mod device;
mod event_handler;
mod metrics;
mod rx;
pub mod tap;
mod tx;

pub use device::{Net, NetError, QUEUE_SIZE};
pub use metrics::NetMetrics;
pub use tap::{Tap, TapError};

/// Index of the receive queue.
pub const RX_QUEUE: usize = 0;
/// Index of the transmit queue.
pub const TX_QUEUE: usize = 1;

/// Largest frame (virtio-net header included) either direction carries:
/// a 64 KiB GSO frame plus its Ethernet and VLAN headers.
pub const MAX_BUFFER: usize = tap::VNET_HDR_LEN + 65_535 + 14 + 4;

#[cfg(test)]
mod tests;
