//! The virtio-blk config space (`struct virtio_blk_config`, little-endian).

/// Bytes of config space exposed (up to `write_zeroes_may_unmap` and its
/// padding); reads past it return zeros.
pub const CONFIG_LEN: usize = 60;

/// Values the device advertises in its config space.
#[derive(Debug, Clone, Copy)]
pub struct ConfigValues {
    pub capacity_sectors: u64,
    pub seg_max: u32,
    pub blk_size: u32,
    pub max_discard_sectors: u32,
    pub max_discard_seg: u32,
    pub discard_sector_alignment: u32,
    pub max_write_zeroes_sectors: u32,
    pub max_write_zeroes_seg: u32,
}

/// Serializes the config space once; it never changes while the device
/// exists, so reads are a copy.
pub fn build(v: &ConfigValues) -> [u8; CONFIG_LEN] {
    let mut c = [0u8; CONFIG_LEN];
    c[0..8].copy_from_slice(&v.capacity_sectors.to_le_bytes());
    // 8: size_max (not advertised), 16: geometry (not advertised)
    c[12..16].copy_from_slice(&v.seg_max.to_le_bytes());
    c[20..24].copy_from_slice(&v.blk_size.to_le_bytes());
    // 24: topology (not advertised), 32: writeback (no CONFIG_WCE)
    c[34..36].copy_from_slice(&1u16.to_le_bytes()); // num_queues
    c[36..40].copy_from_slice(&v.max_discard_sectors.to_le_bytes());
    c[40..44].copy_from_slice(&v.max_discard_seg.to_le_bytes());
    c[44..48].copy_from_slice(&v.discard_sector_alignment.to_le_bytes());
    c[48..52].copy_from_slice(&v.max_write_zeroes_sectors.to_le_bytes());
    c[52..56].copy_from_slice(&v.max_write_zeroes_seg.to_le_bytes());
    // 56: write_zeroes_may_unmap = 0
    c
}
