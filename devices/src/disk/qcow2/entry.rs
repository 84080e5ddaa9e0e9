//! L1 and L2 table entries: bit layouts and decoding into a [`Mapping`].

use crate::disk::DiskError;

/// The cluster is used by exactly one table entry (refcount 1), so it may
/// be written in place.
pub const COPIED: u64 = 1 << 63;
/// L2: the cluster is compressed.
pub const COMPRESSED: u64 = 1 << 62;
/// L2 (v3): the cluster reads as zeros.
pub const ZERO: u64 = 1;

const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L1_RESERVED: u64 = 0x7f00_0000_0000_01ff;
const L2_RESERVED: u64 = 0x3f00_0000_0000_01fe;

/// Where the data of one guest cluster lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Not allocated: read from the backing file, or zeros without one.
    Unallocated,
    /// Reads as zeros. `host` is a preallocated cluster (0 if none).
    Zero {
        /// Preallocated host cluster, 0 if none.
        host: u64,
        /// Whether the preallocated cluster is exclusively ours.
        copied: bool,
    },
    /// A normal data cluster at host offset `host`.
    Data {
        /// Host offset of the cluster.
        host: u64,
        /// Whether it may be written in place.
        copied: bool,
    },
    /// Compressed data starting at byte `host`, spanning the 512-byte
    /// sectors `[host & !511, host & !511 + sectors_len)`.
    Compressed {
        /// Byte offset of the compressed stream.
        host: u64,
        /// Bytes of whole sectors holding it.
        sectors_len: u64,
    },
}

/// The L2 table offset an L1 entry points to (0 = none).
pub fn l2_offset(l1_entry: u64, cluster_bits: u32, l1_index: usize) -> Result<u64, DiskError> {
    let offset = l1_entry & OFFSET_MASK;
    if l1_entry & L1_RESERVED != 0 || offset & ((1 << cluster_bits) - 1) != 0 {
        return Err(DiskError::Corrupt {
            what: "L1 entry",
            offset: l1_index as u64,
        });
    }
    Ok(offset)
}

/// Decodes a standard (not extended) L2 entry.
pub fn decode_l2(entry: u64, cluster_bits: u32) -> Result<Mapping, DiskError> {
    let corrupt = Err(DiskError::Corrupt {
        what: "L2 entry",
        offset: entry,
    });
    if entry & COMPRESSED != 0 {
        // Bits 0..x-1 are the byte offset, x..61 the extra sector count.
        let x = 62 - (cluster_bits - 8);
        let host = entry & ((1 << x) - 1);
        let extra = (entry >> x) & ((1 << (cluster_bits - 8)) - 1);
        return Ok(Mapping::Compressed {
            host,
            sectors_len: (extra + 1) * 512,
        });
    }
    if entry & L2_RESERVED != 0 {
        return corrupt;
    }
    let host = entry & OFFSET_MASK;
    if host & ((1 << cluster_bits) - 1) != 0 {
        return corrupt;
    }
    let copied = entry & COPIED != 0;
    Ok(if entry & ZERO != 0 {
        Mapping::Zero { host, copied }
    } else if host == 0 {
        Mapping::Unallocated
    } else {
        Mapping::Data { host, copied }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_l2_entries() {
        assert_eq!(decode_l2(0, 16).unwrap(), Mapping::Unallocated);
        assert_eq!(
            decode_l2(COPIED | 0x3_0000, 16).unwrap(),
            Mapping::Data {
                host: 0x3_0000,
                copied: true
            }
        );
        assert_eq!(
            decode_l2(ZERO, 16).unwrap(),
            Mapping::Zero {
                host: 0,
                copied: false
            }
        );
        assert!(decode_l2(0x3_0200, 16).is_err()); // not cluster aligned
        assert!(decode_l2(0x3_0000 | 1 << 57, 16).is_err()); // reserved bit
                                                             // Compressed, 64 KiB clusters: x = 54; 2 extra sectors at byte 0x1234.
        let e = COMPRESSED | 2 << 54 | 0x1234;
        assert_eq!(
            decode_l2(e, 16).unwrap(),
            Mapping::Compressed {
                host: 0x1234,
                sectors_len: 3 * 512
            }
        );
    }

    #[test]
    fn checks_l1_entries() {
        assert_eq!(l2_offset(COPIED | 0x5_0000, 16, 0).unwrap(), 0x5_0000);
        assert_eq!(l2_offset(0, 16, 0).unwrap(), 0);
        assert!(l2_offset(0x5_0200, 16, 0).is_err());
        assert!(l2_offset(1, 16, 0).is_err());
    }
}
