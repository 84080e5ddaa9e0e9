//! The qcow2 header and its extensions (QEMU docs/interop/qcow2.txt),
//! parsed and checked before any table is trusted.

use super::error::Qcow2Error;
use crate::disk::ImageFormat;

/// `QFI\xfb`.
pub const MAGIC: u32 = 0x5146_49fb;
/// Length of a version 2 header; extensions follow it.
pub const V2_HEADER_LEN: u32 = 72;
/// Length of the version 3 header this crate writes.
pub const V3_HEADER_LEN: u32 = 104;

/// Incompatible feature bits.
pub mod incompat {
    /// Refcounts may be inconsistent (lazy refcounts in use).
    pub const DIRTY: u64 = 1 << 0;
    /// The image is known to be corrupt.
    pub const CORRUPT: u64 = 1 << 1;
    /// Data lives in an external file.
    pub const EXTERNAL_DATA: u64 = 1 << 2;
    /// `compression_type` field is meaningful.
    pub const COMPRESSION_TYPE: u64 = 1 << 3;
    /// L2 entries are 128 bits with subcluster bitmaps.
    pub const EXTENDED_L2: u64 = 1 << 4;
    /// Every bit this implementation knows.
    pub const KNOWN: u64 = DIRTY | CORRUPT | EXTERNAL_DATA | COMPRESSION_TYPE | EXTENDED_L2;
}

// Header extension types.
const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_FULL_DISK_ENCRYPTION: u32 = 0x0537_be77;
const EXT_EXTERNAL_DATA_FILE: u32 = 0x4441_5441;

/// Field offsets written after creation.
pub const OFF_REFCOUNT_TABLE_OFFSET: u64 = 48;
/// Autoclear feature bits (v3 only).
pub const OFF_AUTOCLEAR_FEATURES: u64 = 88;

/// QEMU refuses backing file names longer than this.
const MAX_BACKING_NAME: u32 = 1023;

/// A parsed header. Offsets are checked for alignment here and against the
/// file size by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub backing_file: Option<String>,
    pub backing_format: Option<ImageFormat>,
    pub cluster_bits: u32,
    pub size: u64,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    pub incompatible_features: u64,
    pub autoclear_features: u64,
    pub refcount_order: u32,
    pub header_length: u32,
}

/// Big-endian field reader over the first cluster.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn u32(&self, off: usize) -> Result<u32, Qcow2Error> {
        self.0
            .get(off..off + 4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
            .ok_or(Qcow2Error::InvalidHeader("truncated header"))
    }
    fn u64(&self, off: usize) -> Result<u64, Qcow2Error> {
        self.0
            .get(off..off + 8)
            .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
            .ok_or(Qcow2Error::InvalidHeader("truncated header"))
    }
}

impl Header {
    /// Reads `cluster_bits` from the fixed header so the caller knows how
    /// much to read for [`Header::parse`].
    pub fn peek_cluster_bits(start: &[u8]) -> Result<u32, Qcow2Error> {
        let f = Fields(start);
        if f.u32(0)? != MAGIC {
            return Err(Qcow2Error::BadMagic);
        }
        let bits = f.u32(20)?;
        if !(9..=21).contains(&bits) {
            return Err(Qcow2Error::InvalidClusterBits(bits));
        }
        Ok(bits)
    }

    /// Parses the header from the image's first cluster (or less if the
    /// file is shorter).
    pub fn parse(cluster0: &[u8]) -> Result<Self, Qcow2Error> {
        let f = Fields(cluster0);
        let cluster_bits = Self::peek_cluster_bits(cluster0)?;
        let version = f.u32(4)?;
        if version != 2 && version != 3 {
            return Err(Qcow2Error::UnsupportedVersion(version));
        }
        if f.u32(32)? != 0 {
            return Err(Qcow2Error::Encrypted);
        }
        let mut h = Header {
            version,
            backing_file: None,
            backing_format: None,
            cluster_bits,
            size: f.u64(24)?,
            l1_size: f.u32(36)?,
            l1_table_offset: f.u64(40)?,
            refcount_table_offset: f.u64(48)?,
            refcount_table_clusters: f.u32(56)?,
            nb_snapshots: f.u32(60)?,
            incompatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
            header_length: V2_HEADER_LEN,
        };
        let mut compression_type = 0;
        if version == 3 {
            h.incompatible_features = f.u64(72)?;
            h.autoclear_features = f.u64(88)?;
            h.refcount_order = f.u32(96)?;
            h.header_length = f.u32(100)?;
            if h.header_length < V3_HEADER_LEN || h.header_length as usize > cluster0.len() {
                return Err(Qcow2Error::InvalidHeader("header_length"));
            }
            if h.header_length > V3_HEADER_LEN {
                compression_type = cluster0[104];
            }
        }
        if h.refcount_order > 6 {
            return Err(Qcow2Error::InvalidRefcountOrder(h.refcount_order));
        }
        h.check_features(compression_type)?;
        h.parse_extensions(cluster0)?;
        h.parse_backing_name(&f, cluster0)?;
        Ok(h)
    }

    fn check_features(&self, compression_type: u8) -> Result<(), Qcow2Error> {
        let incompat = self.incompatible_features;
        if incompat & !incompat::KNOWN != 0 {
            return Err(Qcow2Error::UnknownIncompatibleFeatures(
                incompat & !incompat::KNOWN,
            ));
        }
        if incompat & incompat::EXTERNAL_DATA != 0 {
            return Err(Qcow2Error::ExternalDataFile);
        }
        if incompat & incompat::EXTENDED_L2 != 0 {
            return Err(Qcow2Error::ExtendedL2);
        }
        match (incompat & incompat::COMPRESSION_TYPE != 0, compression_type) {
            (_, 0) => Ok(()),
            (true, t) => Err(Qcow2Error::UnsupportedCompression(t)),
            (false, _) => Err(Qcow2Error::InvalidHeader(
                "compression_type without feature bit",
            )),
        }
    }

    fn parse_extensions(&mut self, cluster0: &[u8]) -> Result<(), Qcow2Error> {
        let f = Fields(cluster0);
        let mut off = self.header_length as usize;
        // Each extension is at least 8 bytes, so this terminates; the
        // bound guards against a missing end marker.
        while off + 8 <= cluster0.len() {
            let kind = f.u32(off)?;
            let len = f.u32(off + 4)? as usize;
            let data = cluster0
                .get(off + 8..)
                .and_then(|d| d.get(..len))
                .ok_or(Qcow2Error::InvalidHeader("header extension length"))?;
            match kind {
                EXT_END => return Ok(()),
                EXT_BACKING_FORMAT => {
                    self.backing_format = Some(
                        std::str::from_utf8(data)
                            .ok()
                            .and_then(|name| name.parse::<ImageFormat>().ok())
                            .ok_or(Qcow2Error::UnsupportedBackingFormat)?,
                    )
                }
                EXT_FULL_DISK_ENCRYPTION => return Err(Qcow2Error::Encrypted),
                EXT_EXTERNAL_DATA_FILE => return Err(Qcow2Error::ExternalDataFile),
                _ => {} // feature names, bitmaps, ...: not needed to read or write
            }
            off += 8 + len.next_multiple_of(8);
        }
        Ok(())
    }

    fn parse_backing_name(&mut self, f: &Fields, cluster0: &[u8]) -> Result<(), Qcow2Error> {
        let offset = f.u64(8)?;
        let len = f.u32(16)?;
        if offset == 0 {
            return Ok(());
        }
        if len == 0 || len > MAX_BACKING_NAME {
            return Err(Qcow2Error::InvalidHeader("backing file name length"));
        }
        let name = usize::try_from(offset)
            .ok()
            .and_then(|o| cluster0.get(o..)?.get(..len as usize))
            .ok_or(Qcow2Error::InvalidHeader(
                "backing file name outside the first cluster",
            ))?;
        let name = std::str::from_utf8(name)
            .map_err(|_| Qcow2Error::InvalidHeader("backing file name is not UTF-8"))?;
        if name.contains('\0') {
            return Err(Qcow2Error::InvalidHeader("backing file name contains NUL"));
        }
        self.backing_file = Some(name.to_owned());
        Ok(())
    }

    /// Serializes a fresh version 3 header with an optional backing file,
    /// for [`super::create`]. Returns the bytes for the start of cluster 0.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut ext = Vec::new();
        if let Some(fmt) = self.backing_format {
            let name = fmt.as_str().as_bytes();
            ext.extend_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
            ext.extend_from_slice(&(name.len() as u32).to_be_bytes());
            ext.extend_from_slice(name);
            ext.resize(ext.len().next_multiple_of(8), 0);
        }
        ext.extend_from_slice(&[0; 8]); // end of extensions
        let backing = self.backing_file.as_deref().unwrap_or("").as_bytes();
        let backing_offset = V3_HEADER_LEN as usize + ext.len();

        let mut b = Vec::with_capacity(backing_offset + backing.len());
        b.extend_from_slice(&MAGIC.to_be_bytes());
        b.extend_from_slice(&3u32.to_be_bytes());
        let (boff, blen) = if backing.is_empty() {
            (0u64, 0u32)
        } else {
            (backing_offset as u64, backing.len() as u32)
        };
        b.extend_from_slice(&boff.to_be_bytes());
        b.extend_from_slice(&blen.to_be_bytes());
        b.extend_from_slice(&self.cluster_bits.to_be_bytes());
        b.extend_from_slice(&self.size.to_be_bytes());
        b.extend_from_slice(&0u32.to_be_bytes()); // crypt_method
        b.extend_from_slice(&self.l1_size.to_be_bytes());
        b.extend_from_slice(&self.l1_table_offset.to_be_bytes());
        b.extend_from_slice(&self.refcount_table_offset.to_be_bytes());
        b.extend_from_slice(&self.refcount_table_clusters.to_be_bytes());
        b.extend_from_slice(&0u32.to_be_bytes()); // nb_snapshots
        b.extend_from_slice(&0u64.to_be_bytes()); // snapshots_offset
        b.extend_from_slice(&0u64.to_be_bytes()); // incompatible
        b.extend_from_slice(&0u64.to_be_bytes()); // compatible
        b.extend_from_slice(&0u64.to_be_bytes()); // autoclear
        b.extend_from_slice(&self.refcount_order.to_be_bytes());
        b.extend_from_slice(&V3_HEADER_LEN.to_be_bytes());
        debug_assert_eq!(b.len(), V3_HEADER_LEN as usize);
        b.extend_from_slice(&ext);
        b.extend_from_slice(backing);
        b
    }
}
