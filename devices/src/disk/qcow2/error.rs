//! Errors opening or creating qcow2 images.

use crate::disk::{DiskError, OpenError};

/// Why a qcow2 image could not be opened or created.
#[derive(Debug, thiserror::Error)]
pub enum Qcow2Error {
    /// Reading or writing the image file failed.
    #[error("qcow2 I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The file does not start with `QFI\xfb`.
    #[error("not a qcow2 image (bad magic)")]
    BadMagic,
    /// Only versions 2 and 3 exist.
    #[error("unsupported qcow2 version {0}")]
    UnsupportedVersion(u32),
    /// The header is malformed; the text names the field.
    #[error("invalid qcow2 header: {0}")]
    InvalidHeader(&'static str),
    /// Cluster size outside 512 B ..= 2 MiB.
    #[error("invalid cluster_bits {0} (must be 9..=21)")]
    InvalidClusterBits(u32),
    /// Refcount width outside 1 ..= 64 bits.
    #[error("invalid refcount_order {0} (must be 0..=6)")]
    InvalidRefcountOrder(u32),
    /// The image is encrypted (old AES or LUKS); not supported.
    #[error("encrypted qcow2 images are not supported")]
    Encrypted,
    /// The guest data lives in an external data file; not supported.
    #[error("qcow2 images with an external data file are not supported")]
    ExternalDataFile,
    /// Extended L2 entries (subclusters); not supported.
    #[error("qcow2 images with extended L2 entries are not supported")]
    ExtendedL2,
    /// Compressed clusters use a method other than zlib (1 = zstd).
    #[error("qcow2 compression type {0} is not supported (only zlib)")]
    UnsupportedCompression(u8),
    /// Incompatible feature bits this implementation does not know.
    #[error("unknown qcow2 incompatible features {0:#x}")]
    UnknownIncompatibleFeatures(u64),
    /// The dirty bit is set: refcounts may be wrong, so writing could
    /// corrupt the image. Repair with `qemu-img check -r all` first.
    #[error("qcow2 image is dirty; run `qemu-img check -r all` before opening it writable")]
    Dirty,
    /// The corrupt bit is set; only read-only opens are allowed.
    #[error("qcow2 image is marked corrupt; it can only be opened read-only")]
    MarkedCorrupt,
    /// Internal snapshots share clusters; writing them is not implemented.
    #[error("qcow2 images with internal snapshots can only be opened read-only")]
    Snapshots,
    /// A table or size is larger than this implementation allows; the
    /// limits keep hostile images from exhausting memory.
    #[error("qcow2 {what} too large: {value:#x}")]
    TooLarge {
        /// Which value.
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// A table lies outside the file or is not cluster-aligned.
    #[error("qcow2 {what} at {offset:#x} is misaligned or outside the file")]
    BadOffset {
        /// Which table.
        what: &'static str,
        /// Its offset.
        offset: u64,
    },
    /// The backing file format named in the header is not raw or qcow2.
    #[error("unsupported backing file format")]
    UnsupportedBackingFormat,
    /// The image has a backing file but was opened without a path to
    /// resolve it against.
    #[error("image has a backing file but no path to resolve it from")]
    BackingWithoutPath,
    /// The backing chain is longer than the limit (or loops).
    #[error("backing chain deeper than {0} images (or a loop)")]
    BackingChainTooDeep(usize),
    /// The backing file could not be opened.
    #[error("cannot open backing file {path}: {source}")]
    Backing {
        /// The backing file path as resolved.
        path: String,
        /// Why.
        source: Box<OpenError>,
    },
    /// An operation on the image failed after it was parsed.
    #[error(transparent)]
    Disk(#[from] DiskError),
}
