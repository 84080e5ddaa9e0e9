//! Stratus device models.
//!
//! Nothing here depends on KVM: devices see guest memory through vm-memory
//! and raise interrupts through event file descriptors, so every device can be
//! tested on plain memory in a unit test.

pub mod bus;
pub mod disk;
pub mod fuzz;
pub mod guest_log;
pub mod legacy;
pub mod net;
pub mod power;
pub mod rate_limiter;
pub mod virtio;

#[cfg(test)]
mod test_utils;
