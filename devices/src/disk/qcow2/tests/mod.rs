//! qcow2 tests. Those in `qemu.rs` check our images with QEMU's own tools;
//! those in `hostile.rs` feed malformed images from memory.

#![allow(clippy::cast_possible_truncation)]

mod hostile;
mod qemu;

/// Deterministic, position-dependent test data.
pub(super) fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
