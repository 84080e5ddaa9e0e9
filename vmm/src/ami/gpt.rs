//! Finding the root filesystem on a disk: a GPT's root partition, or a
//! filesystem written straight onto the whole disk.
//!
//! The disk comes from whoever built the AMI, so every field is checked
//! before it is used, and memory use does not grow with what the header
//! claims: the partition array is streamed through a fixed buffer, its
//! CRC computed on the way, and only in-use entries (at most
//! [`MAX_ENTRIES`]) are kept.
//!
//! Only the primary header is read. A disk whose primary GPT is damaged is
//! refused rather than repaired from the backup: an AMI is built by a tool,
//! and a damaged one should be rebuilt, not guessed at.

use std::fmt;
use std::io;

use super::disk::ReadAt;

/// Most partition entries a header may declare. The UEFI minimum array is
/// 128 entries; 1024 leaves room for odd tools and bounds the work.
pub const MAX_ENTRIES: u32 = 1024;
/// Smallest partition entry (the UEFI layout).
const MIN_ENTRY_SIZE: u32 = 128;
/// Largest partition entry we accept.
const MAX_ENTRY_SIZE: u32 = 4096;
/// Logical block sizes probed for the header, in order.
const SECTOR_SIZES: [u64; 2] = [512, 4096];
/// Smallest header: every field up to the partition-array CRC.
const MIN_HEADER_SIZE: usize = 92;
/// Where an ext2/3/4 superblock's magic number sits, from the filesystem's
/// first byte (superblock at 1024, `s_magic` at 56 within it).
const EXT4_MAGIC_OFFSET: u64 = 1024 + 56;
const EXT4_MAGIC: u16 = 0xEF53;
/// Bytes read at a time from the partition array.
const ARRAY_CHUNK: usize = 16 * 1024;

/// A GUID as GPT stores it (first three fields little-endian).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Guid([u8; 16]);

impl Guid {
    /// The GUID written `a-b-c-d[0..2]-d[2..8]`.
    pub const fn new(a: u32, b: u16, c: u16, d: [u8; 8]) -> Self {
        let a = a.to_le_bytes();
        let b = b.to_le_bytes();
        let c = c.to_le_bytes();
        Self([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5],
            d[6], d[7],
        ])
    }

    fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-",
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
            b[8],
            b[9]
        )?;
        b[10..].iter().try_for_each(|x| write!(f, "{x:02x}"))
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Discoverable Partitions Specification: root partition, x86-64.
pub const LINUX_ROOT_X86_64: Guid = Guid::new(
    0x4f68_bce3,
    0xe8cd,
    0x4db1,
    [0x96, 0xe7, 0xfb, 0xca, 0xf9, 0x84, 0xb7, 0x09],
);
/// Linux filesystem data (what most installers label every partition).
pub const LINUX_FS_DATA: Guid = Guid::new(
    0x0fc6_3daf,
    0x8483,
    0x4772,
    [0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4],
);

/// Where the root filesystem lies on the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootLocation {
    /// First byte.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// How it was found.
    pub source: RootSource,
}

/// How the root filesystem was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootSource {
    /// A GPT partition (1-based number, as Linux names it) of this type.
    Partition {
        /// 1-based partition number.
        number: u32,
        /// Its type GUID.
        type_guid: Guid,
    },
    /// No partition table; the filesystem starts at byte 0.
    WholeDisk,
}

/// Why no root filesystem could be located.
#[derive(Debug, thiserror::Error)]
pub enum GptError {
    /// Reading the disk failed.
    #[error("cannot read the {what} from the disk: {source}")]
    Read {
        /// What was being read.
        what: &'static str,
        /// The I/O error.
        source: io::Error,
    },
    /// Neither a GPT nor a filesystem at the start of the disk.
    #[error("the disk has neither a GPT partition table nor an ext4 filesystem at its start")]
    Unrecognized,
    /// An MBR partition table without a GPT.
    #[error("the disk has an MBR partition table; only GPT disks (or a bare ext4 filesystem) are supported")]
    MbrOnly,
    /// A GPT header without the protective MBR that must precede it.
    #[error("the disk has a GPT header but no protective MBR (type 0xEE) in sector 0")]
    NoProtectiveMbr,
    /// The header's size field is out of range.
    #[error("GPT header size {0} is outside {MIN_HEADER_SIZE}..=sector size")]
    HeaderSize(u32),
    /// The header's CRC does not match its bytes.
    #[error("GPT header CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    HeaderCrc {
        /// The CRC in the header.
        stored: u32,
        /// The CRC of the header's bytes.
        computed: u32,
    },
    /// The header does not say it lives where it was found.
    #[error("GPT header says it lives at LBA {0}, but it was read from LBA 1")]
    MyLba(u64),
    /// The usable range is inverted or extends past the disk.
    #[error("GPT usable LBAs {first}..={last} do not fit a disk of {sectors} sectors")]
    UsableRange {
        /// First usable LBA.
        first: u64,
        /// Last usable LBA.
        last: u64,
        /// Sectors on the disk.
        sectors: u64,
    },
    /// The partition entry size is out of range or misaligned.
    #[error("GPT partition entry size {0} is not a multiple of 8 in {MIN_ENTRY_SIZE}..={MAX_ENTRY_SIZE}")]
    EntrySize(u32),
    /// More partition entries than we are willing to read.
    #[error("GPT declares {0} partition entries; at most {MAX_ENTRIES} are accepted")]
    TooManyEntries(u32),
    /// The partition array extends past the disk or into the header or the
    /// usable area.
    #[error(
        "GPT partition array at LBA {lba} ({bytes} bytes) lies outside the area reserved for it"
    )]
    ArrayOutOfBounds {
        /// Where the array starts.
        lba: u64,
        /// Its length in bytes.
        bytes: u64,
    },
    /// The partition array's CRC does not match its bytes.
    #[error("GPT partition array CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    ArrayCrc {
        /// The CRC in the header.
        stored: u32,
        /// The CRC of the array's bytes.
        computed: u32,
    },
    /// A partition ends before it starts.
    #[error("GPT partition {number} is empty or inverted (LBAs {first}..={last})")]
    EmptyPartition {
        /// 1-based partition number.
        number: u32,
        /// First LBA.
        first: u64,
        /// Last LBA.
        last: u64,
    },
    /// A partition lies outside the usable area.
    #[error("GPT partition {number} (LBAs {first}..={last}) lies outside the usable area")]
    PartitionOutOfBounds {
        /// 1-based partition number.
        number: u32,
        /// First LBA.
        first: u64,
        /// Last LBA.
        last: u64,
    },
    /// Two partitions share sectors.
    #[error("GPT partitions {a} and {b} overlap")]
    Overlap {
        /// 1-based number of one.
        a: u32,
        /// 1-based number of the other.
        b: u32,
    },
    /// No partition has a root or Linux-data type.
    #[error("no GPT partition is a Linux x86-64 root ({LINUX_ROOT_X86_64}) or Linux filesystem ({LINUX_FS_DATA})")]
    NoRootPartition,
}

fn read<'b>(
    disk: &dyn ReadAt,
    buf: &'b mut [u8],
    offset: u64,
    what: &'static str,
) -> Result<&'b [u8], GptError> {
    disk.read_exact_at(buf, offset)
        .map_err(|source| GptError::Read { what, source })?;
    Ok(buf)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Locates the root filesystem: the GPT's x86-64 root partition, else its
/// first Linux-data partition, else (no partition table at all) an ext4
/// filesystem spanning the whole disk.
pub fn find_root(disk: &dyn ReadAt) -> Result<RootLocation, GptError> {
    for sector in SECTOR_SIZES {
        let mut sig = [0u8; 8];
        if disk.read_exact_at(&mut sig, sector).is_ok() && &sig == b"EFI PART" {
            check_protective_mbr(disk)?;
            return find_root_in_gpt(disk, sector);
        }
    }
    let mut magic = [0u8; 2];
    if disk.read_exact_at(&mut magic, EXT4_MAGIC_OFFSET).is_ok()
        && u16::from_le_bytes(magic) == EXT4_MAGIC
    {
        return Ok(RootLocation {
            start: 0,
            len: disk.len(),
            source: RootSource::WholeDisk,
        });
    }
    let mut mbr = [0u8; 512];
    match disk.read_exact_at(&mut mbr, 0) {
        Ok(()) if mbr[510..] == [0x55, 0xAA] => Err(GptError::MbrOnly),
        _ => Err(GptError::Unrecognized),
    }
}

fn check_protective_mbr(disk: &dyn ReadAt) -> Result<(), GptError> {
    let mut mbr = [0u8; 512];
    let mbr = read(disk, &mut mbr, 0, "protective MBR")?;
    // Four 16-byte entries from 446, type byte at +4. Hybrid MBRs put the
    // 0xEE entry anywhere, so any slot counts.
    let protective = (0..4).any(|i| mbr[446 + 16 * i + 4] == 0xEE);
    if mbr[510..] == [0x55, 0xAA] && protective {
        Ok(())
    } else {
        Err(GptError::NoProtectiveMbr)
    }
}

/// The header fields the rest of the parse relies on, already checked.
struct Header {
    first_usable: u64,
    last_usable: u64,
    array_offset: u64,
    entries: u32,
    entry_size: u32,
    array_crc: u32,
}

fn parse_header(disk: &dyn ReadAt, sector: u64) -> Result<Header, GptError> {
    let mut buf = [0u8; 4096];
    // `sector` is one of SECTOR_SIZES, both of which fit the buffer.
    let len = usize::try_from(sector).map_or(buf.len(), |s| s.min(buf.len()));
    let h = read(disk, &mut buf[..len], sector, "GPT header")?;

    let header_size = u32_at(h, 12);
    let size = usize::try_from(header_size)
        .ok()
        .filter(|&s| s >= MIN_HEADER_SIZE && s <= h.len())
        .ok_or(GptError::HeaderSize(header_size))?;
    let stored = u32_at(h, 16);
    let mut c = crc32fast::Hasher::new();
    c.update(&h[..16]);
    c.update(&[0; 4]); // the CRC field reads as zero while summing
    c.update(&h[20..size]);
    let computed = c.finalize();
    if stored != computed {
        return Err(GptError::HeaderCrc { stored, computed });
    }

    let my_lba = u64_at(h, 24);
    if my_lba != 1 {
        return Err(GptError::MyLba(my_lba));
    }
    let sectors = disk.len() / sector;
    let (first, last) = (u64_at(h, 40), u64_at(h, 48));
    if first > last || last >= sectors || first < 2 {
        return Err(GptError::UsableRange {
            first,
            last,
            sectors,
        });
    }
    let entry_size = u32_at(h, 84);
    if !(MIN_ENTRY_SIZE..=MAX_ENTRY_SIZE).contains(&entry_size) || entry_size & 7 != 0 {
        return Err(GptError::EntrySize(entry_size));
    }
    let entries = u32_at(h, 80);
    if entries > MAX_ENTRIES {
        return Err(GptError::TooManyEntries(entries));
    }

    // The array must sit after the header and end before the first usable
    // sector, so it can be neither past the disk nor inside a partition.
    let lba = u64_at(h, 72);
    let bytes = u64::from(entries) * u64::from(entry_size);
    let array_offset = lba.checked_mul(sector).filter(|_| lba >= 2);
    let in_bounds = array_offset
        .and_then(|o| o.checked_add(bytes))
        .is_some_and(|end| end <= first * sector && end <= disk.len());
    let array_offset = match array_offset {
        Some(o) if in_bounds => o,
        _ => return Err(GptError::ArrayOutOfBounds { lba, bytes }),
    };

    Ok(Header {
        first_usable: first,
        last_usable: last,
        array_offset,
        entries,
        entry_size,
        array_crc: u32_at(h, 88),
    })
}

/// One in-use partition entry.
#[derive(Clone, Copy)]
struct Entry {
    number: u32,
    type_guid: Guid,
    first: u64,
    last: u64,
}

/// Streams the partition array, checking its CRC and every in-use entry.
fn read_entries(disk: &dyn ReadAt, h: &Header) -> Result<Vec<Entry>, GptError> {
    let entry_size =
        usize::try_from(h.entry_size).map_err(|_| GptError::EntrySize(h.entry_size))?;
    let per_chunk = ARRAY_CHUNK / entry_size; // at least 4: entry_size <= 4096
    let mut buf = vec![0u8; per_chunk * entry_size];
    let mut crc = crc32fast::Hasher::new();
    let mut used = Vec::new();
    let mut offset = h.array_offset;
    let mut number: u32 = 1;
    while number <= h.entries {
        let left = usize::try_from(h.entries - number + 1).unwrap_or(per_chunk);
        let n = left.min(per_chunk);
        let chunk = read(
            disk,
            &mut buf[..n * entry_size],
            offset,
            "GPT partition array",
        )?;
        crc.update(chunk);
        for raw in chunk.chunks_exact(entry_size) {
            let mut type_guid = [0u8; 16];
            type_guid.copy_from_slice(&raw[..16]);
            let type_guid = Guid(type_guid);
            if !type_guid.is_zero() {
                used.push(Entry {
                    number,
                    type_guid,
                    first: u64_at(raw, 32),
                    last: u64_at(raw, 40),
                });
            }
            number += 1;
        }
        offset += u64::try_from(chunk.len()).unwrap_or(u64::MAX);
    }
    let computed = crc.finalize();
    if computed != h.array_crc {
        return Err(GptError::ArrayCrc {
            stored: h.array_crc,
            computed,
        });
    }
    Ok(used)
}

/// Rejects empty, out-of-range and overlapping partitions. A disk with any
/// of these is damaged or hostile, even if the root partition itself looks
/// fine, so none is ignored.
fn check_entries(entries: &mut [Entry], h: &Header) -> Result<(), GptError> {
    for e in entries.iter() {
        let (number, first, last) = (e.number, e.first, e.last);
        if first > last {
            return Err(GptError::EmptyPartition {
                number,
                first,
                last,
            });
        }
        if first < h.first_usable || last > h.last_usable {
            return Err(GptError::PartitionOutOfBounds {
                number,
                first,
                last,
            });
        }
    }
    entries.sort_unstable_by_key(|e| e.first);
    for pair in entries.windows(2) {
        if pair[1].first <= pair[0].last {
            return Err(GptError::Overlap {
                a: pair[0].number,
                b: pair[1].number,
            });
        }
    }
    entries.sort_unstable_by_key(|e| e.number);
    Ok(())
}

fn find_root_in_gpt(disk: &dyn ReadAt, sector: u64) -> Result<RootLocation, GptError> {
    let header = parse_header(disk, sector)?;
    let mut entries = read_entries(disk, &header)?;
    check_entries(&mut entries, &header)?;
    let root = entries
        .iter()
        .find(|e| e.type_guid == LINUX_ROOT_X86_64)
        .or_else(|| entries.iter().find(|e| e.type_guid == LINUX_FS_DATA))
        .ok_or(GptError::NoRootPartition)?;
    // Checked above: first <= last <= last_usable < sectors, so neither
    // product overflows a disk whose length fits in u64.
    Ok(RootLocation {
        start: root.first * sector,
        len: (root.last - root.first + 1) * sector,
        source: RootSource::Partition {
            number: root.number,
            type_guid: root.type_guid,
        },
    })
}

/// Test-only builders of synthetic GPT disks, for the hostile cases that
/// `sfdisk` will not write.
#[cfg(test)]
pub(super) mod synth {
    use super::*;
    use crc32fast::hash as crc32;

    /// One partition: type, first and last LBA.
    pub type Part = (Guid, u64, u64);

    /// A 512-byte-sector disk of `sectors` sectors with a valid protective
    /// MBR and primary GPT (128 entries at LBA 2) holding `parts`, and a
    /// hook to damage the header before its CRC is computed.
    pub fn disk(sectors: u64, parts: &[Part], patch: impl FnOnce(&mut [u8])) -> Vec<u8> {
        let mut d = vec![0u8; usize::try_from(sectors * 512).unwrap()];
        d[446 + 4] = 0xEE;
        d[510] = 0x55;
        d[511] = 0xAA;
        let mut array = vec![0u8; 128 * 128];
        for (i, (ty, first, last)) in parts.iter().enumerate() {
            let e = &mut array[i * 128..(i + 1) * 128];
            e[..16].copy_from_slice(&ty.0);
            e[16] = 1; // any non-zero unique GUID
            e[32..40].copy_from_slice(&first.to_le_bytes());
            e[40..48].copy_from_slice(&last.to_le_bytes());
        }
        d[1024..1024 + array.len()].copy_from_slice(&array);
        let h = &mut d[512..1024];
        h[..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&1u64.to_le_bytes());
        h[32..40].copy_from_slice(&(sectors - 1).to_le_bytes());
        h[40..48].copy_from_slice(&34u64.to_le_bytes());
        h[48..56].copy_from_slice(&(sectors - 34).to_le_bytes());
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&crc32(&array).to_le_bytes());
        patch(h);
        let c = crc32(&h[..92]);
        h[16..20].copy_from_slice(&c.to_le_bytes());
        d
    }
}

#[cfg(test)]
mod tests {
    use super::synth::disk;
    use super::*;

    fn find(d: &[u8]) -> Result<RootLocation, GptError> {
        find_root(&d.to_vec())
    }

    #[test]
    fn the_crc_is_the_one_gpt_specifies() {
        // UEFI's GPT CRC is CRC-32/ISO-HDLC; this is its catalogue check
        // value, so the synthetic disks below (sealed with the same crate)
        // cannot agree with the reader on a wrong algorithm.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn guid_constants_print_as_specified() {
        assert_eq!(
            LINUX_ROOT_X86_64.to_string(),
            "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"
        );
        assert_eq!(
            LINUX_FS_DATA.to_string(),
            "0fc63daf-8483-4772-8e79-3d69d8477de4"
        );
    }

    #[test]
    fn prefers_the_root_type_over_linux_data() {
        let d = disk(
            4096,
            &[(LINUX_FS_DATA, 100, 199), (LINUX_ROOT_X86_64, 200, 299)],
            |_| {},
        );
        let root = find(&d).unwrap();
        assert_eq!((root.start, root.len), (200 * 512, 100 * 512));
        assert!(matches!(
            root.source,
            RootSource::Partition { number: 2, .. }
        ));
    }

    #[test]
    fn falls_back_to_the_first_linux_data_partition() {
        let esp = Guid::new(
            0xc12a_7328,
            0xf81f,
            0x11d2,
            [0xba, 0x4b, 0, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b],
        );
        let d = disk(
            4096,
            &[
                (esp, 40, 99),
                (LINUX_FS_DATA, 100, 199),
                (LINUX_FS_DATA, 300, 399),
            ],
            |_| {},
        );
        assert_eq!(find(&d).unwrap().start, 100 * 512);
    }

    #[test]
    fn no_linux_partition_is_an_error() {
        let esp = Guid::new(1, 2, 3, [4; 8]);
        let d = disk(4096, &[(esp, 40, 99)], |_| {});
        assert!(matches!(find(&d), Err(GptError::NoRootPartition)));
    }

    #[test]
    fn corrupt_header_crc_is_refused() {
        let mut d = disk(4096, &[(LINUX_FS_DATA, 100, 199)], |_| {});
        d[512 + 40] ^= 1; // first usable LBA, after the CRC was computed
        assert!(matches!(find(&d), Err(GptError::HeaderCrc { .. })));
    }

    #[test]
    fn corrupt_array_crc_is_refused() {
        let mut d = disk(4096, &[(LINUX_FS_DATA, 100, 199)], |_| {});
        d[1024 + 33] ^= 1;
        assert!(matches!(find(&d), Err(GptError::ArrayCrc { .. })));
    }

    #[test]
    fn array_past_the_end_is_refused() {
        let d = disk(4096, &[], |h| {
            h[72..80].copy_from_slice(&4090u64.to_le_bytes())
        });
        assert!(matches!(find(&d), Err(GptError::ArrayOutOfBounds { .. })));
        let d = disk(4096, &[], |h| {
            h[72..80].copy_from_slice(&u64::MAX.to_le_bytes())
        });
        assert!(matches!(find(&d), Err(GptError::ArrayOutOfBounds { .. })));
    }

    #[test]
    fn huge_counts_and_sizes_are_refused() {
        let d = disk(4096, &[], |h| {
            h[80..84].copy_from_slice(&u32::MAX.to_le_bytes())
        });
        assert!(matches!(find(&d), Err(GptError::TooManyEntries(u32::MAX))));
        for size in [0u32, 127, 132, 8192, u32::MAX] {
            let d = disk(4096, &[], |h| {
                h[84..88].copy_from_slice(&size.to_le_bytes())
            });
            assert!(
                matches!(find(&d), Err(GptError::EntrySize(s)) if s == size),
                "{size}"
            );
        }
        let d = disk(4096, &[], |h| {
            h[12..16].copy_from_slice(&u32::MAX.to_le_bytes())
        });
        assert!(matches!(find(&d), Err(GptError::HeaderSize(_))));
        let d = disk(4096, &[], |h| {
            h[48..56].copy_from_slice(&u64::MAX.to_le_bytes())
        });
        assert!(matches!(find(&d), Err(GptError::UsableRange { .. })));
    }

    #[test]
    fn bad_partitions_are_refused() {
        let d = disk(4096, &[(LINUX_FS_DATA, 200, 199)], |_| {});
        assert!(matches!(
            find(&d),
            Err(GptError::EmptyPartition { number: 1, .. })
        ));
        let d = disk(4096, &[(LINUX_FS_DATA, 100, 5000)], |_| {});
        assert!(matches!(
            find(&d),
            Err(GptError::PartitionOutOfBounds { .. })
        ));
        let d = disk(
            4096,
            &[(LINUX_FS_DATA, 100, 199), (LINUX_FS_DATA, 150, 250)],
            |_| {},
        );
        assert!(matches!(find(&d), Err(GptError::Overlap { a: 1, b: 2 })));
    }

    #[test]
    fn gpt_without_protective_mbr_is_refused() {
        let mut d = disk(4096, &[(LINUX_FS_DATA, 100, 199)], |_| {});
        d[446 + 4] = 0x83;
        assert!(matches!(find(&d), Err(GptError::NoProtectiveMbr)));
    }

    #[test]
    fn unrecognized_disks() {
        assert!(matches!(find(&[]), Err(GptError::Unrecognized)));
        assert!(matches!(find(&[0; 4096]), Err(GptError::Unrecognized)));
        let mut mbr = vec![0u8; 4096];
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        assert!(matches!(find(&mbr), Err(GptError::MbrOnly)));
        let mut fs = vec![0u8; 8192];
        fs[1080..1082].copy_from_slice(&EXT4_MAGIC.to_le_bytes());
        assert_eq!(find(&fs).unwrap().source, RootSource::WholeDisk);
    }

    #[test]
    fn truncated_gpt_disks_never_panic() {
        let d = disk(4096, &[(LINUX_FS_DATA, 100, 199)], |_| {});
        for len in [0, 511, 512, 600, 1024, 1100, 17 * 1024, 34 * 512] {
            let _ = find(&d[..len]);
        }
    }
}
