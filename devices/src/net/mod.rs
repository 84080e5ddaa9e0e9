//! The per-NIC network datapath that runs inside the VMM, between the
//! guest's virtio-net queues and the host's tap device.
//!
//! ```text
//! guest TX → source check → DHCP (answered here) → … → tap
//! tap      → destination check → … → guest RX
//! ```
//!
//! Nothing here knows virtio or file descriptors: [`Datapath`] looks at
//! Ethernet frames in caller-owned buffers and decides, so every rule is
//! unit-testable on byte arrays and the virtio-net device
//! (`crate::virtio::net`) stays a plain mover of frames. Frames the
//! datapath itself sends to the guest (DHCP replies, metadata answers,
//! the reachability probes of `reachability.rs`) wait in a bounded queue of preallocated slots until the
//! device has an RX buffer for them.

pub(crate) mod checksum;
pub mod clock;
mod counters;
mod datapath;
mod dhcp;
pub mod filter;
pub mod flow_log;
mod frame;
pub mod identity;
mod local_frames;
mod mac;
pub mod metadata;
mod multicast;
mod reachability;
mod source_check;

#[cfg(test)]
mod tests;

pub use datapath::{Datapath, DropReason, FromGuest, NicIdentity, ToGuest, MAX_LOCAL_FRAME};
pub use dhcp::DHCP_SERVER_MAC;
pub use mac::{MacAddr, ParseMacError};
pub use reachability::Reachability;
