//! The image's ext4 root filesystem, opened read-only with `ext4-view`.
//!
//! ext4-view checks what it reads, but it sizes one allocation from the
//! superblock before it can know the superblock lies (a vector of block
//! group descriptors). The few superblock fields that drive that are
//! checked here first against the partition's real size.

use std::io;
use std::sync::Arc;

use ext4_view::{Ext4, Ext4Error, Ext4Read};

use super::disk::ReadAt;

/// Most block groups accepted: 2^17 groups of 128 MiB (4 KiB blocks) is a
/// 16 TiB root, far beyond any AMI, and bounds the descriptor table
/// ext4-view allocates up front to a few MiB.
const MAX_BLOCK_GROUPS: u64 = 1 << 17;
/// mke2fs refuses fewer blocks per group than this.
const MIN_BLOCKS_PER_GROUP: u32 = 256;
/// ext4's largest block size is 64 KiB (1024 << 6).
const MAX_LOG_BLOCK_SIZE: u32 = 6;
const SUPERBLOCK_OFFSET: u64 = 1024;

/// Why the root filesystem could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum RootFsError {
    /// The superblock could not be read.
    #[error("cannot read the ext4 superblock: {0}")]
    Read(io::Error),
    /// No ext4 magic where the superblock should be.
    #[error("the root partition does not hold an ext2/3/4 filesystem (no superblock magic)")]
    NotExt4,
    /// The superblock's geometry is impossible for this partition.
    #[error("the ext4 superblock is implausible: {0}")]
    BadGeometry(&'static str),
    /// ext4-view refused the filesystem (corrupt or unsupported).
    #[error("cannot open the ext4 filesystem: {0}")]
    Open(Ext4Error),
}

/// Adapts a [`ReadAt`] to the reader ext4-view wants.
struct Reader(Arc<dyn ReadAt>);

impl Ext4Read for Reader {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        Ok(self.0.read_exact_at(dst, start_byte)?)
    }
}

/// An opened root filesystem.
pub struct RootFs {
    fs: Ext4,
    uuid: String,
}

impl std::fmt::Debug for RootFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootFs").field("uuid", &self.uuid).finish()
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Checks the superblock fields that size ext4-view's first allocations.
fn check_geometry(part: &dyn ReadAt) -> Result<(), RootFsError> {
    let mut sb = [0u8; 1024];
    part.read_exact_at(&mut sb, SUPERBLOCK_OFFSET)
        .map_err(RootFsError::Read)?;
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xEF53 {
        return Err(RootFsError::NotExt4);
    }
    let log_block_size = u32_at(&sb, 0x18);
    if log_block_size > MAX_LOG_BLOCK_SIZE {
        return Err(RootFsError::BadGeometry("block size above 64 KiB"));
    }
    let block_size = 1024u64 << log_block_size;
    // ext4-view combines the high word unconditionally, so do the same.
    let blocks = u64::from(u32_at(&sb, 0x150)) << 32 | u64::from(u32_at(&sb, 0x4));
    let fits = blocks
        .checked_mul(block_size)
        .is_some_and(|bytes| bytes <= part.len());
    if !fits {
        return Err(RootFsError::BadGeometry(
            "more blocks than the partition holds",
        ));
    }
    let per_group = u32_at(&sb, 0x20);
    if per_group < MIN_BLOCKS_PER_GROUP {
        return Err(RootFsError::BadGeometry("too few blocks per group"));
    }
    if blocks.div_ceil(u64::from(per_group)) > MAX_BLOCK_GROUPS {
        return Err(RootFsError::BadGeometry("too many block groups"));
    }
    Ok(())
}

impl RootFs {
    /// Opens the ext4 filesystem that fills `part`.
    pub fn open(part: Arc<dyn ReadAt>) -> Result<Self, RootFsError> {
        check_geometry(&*part)?;
        let fs = Ext4::load(Box::new(Reader(part))).map_err(RootFsError::Open)?;
        let uuid = fs.uuid().to_string();
        Ok(Self { fs, uuid })
    }

    /// The filesystem UUID, lower-case and hyphenated, as `root=UUID=`
    /// expects it.
    pub fn uuid(&self) -> &str {
        &self.uuid
    }

    /// The filesystem, for lookups.
    pub fn ext4(&self) -> &Ext4 {
        &self.fs
    }

    /// Opens the regular file at `path` (already resolved, no symlinks) for
    /// streaming.
    pub fn open_file(&self, path: &str) -> Result<ext4_view::File, Ext4Error> {
        self.fs.open(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal superblock on an otherwise empty 1 MiB partition.
    fn image(patch: impl FnOnce(&mut [u8])) -> Arc<dyn ReadAt> {
        let mut d = vec![0u8; 1 << 20];
        let sb = &mut d[1024..2048];
        sb[0x38..0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        sb[0x18..0x1c].copy_from_slice(&2u32.to_le_bytes()); // 4 KiB
        sb[0x4..0x8].copy_from_slice(&256u32.to_le_bytes()); // 1 MiB
        sb[0x20..0x24].copy_from_slice(&32768u32.to_le_bytes());
        patch(sb);
        Arc::new(d)
    }

    fn geometry(patch: impl FnOnce(&mut [u8])) -> Result<(), RootFsError> {
        check_geometry(&*image(patch))
    }

    #[test]
    fn plausible_geometry_passes_the_precheck() {
        geometry(|_| {}).unwrap();
    }

    #[test]
    fn huge_block_counts_are_refused_before_allocation() {
        let e = geometry(|sb| sb[0x150..0x154].copy_from_slice(&u32::MAX.to_le_bytes()));
        assert!(matches!(e, Err(RootFsError::BadGeometry(_))), "{e:?}");
        // The same lie, reaching ext4-view, must also fail cleanly.
        assert!(RootFs::open(image(
            |sb| sb[0x4..0x8].copy_from_slice(&u32::MAX.to_le_bytes())
        ))
        .is_err());
    }

    #[test]
    fn tiny_groups_and_giant_blocks_are_refused() {
        let e = geometry(|sb| sb[0x20..0x24].copy_from_slice(&1u32.to_le_bytes()));
        assert!(matches!(e, Err(RootFsError::BadGeometry(_))));
        let e = geometry(|sb| sb[0x18..0x1c].copy_from_slice(&40u32.to_le_bytes()));
        assert!(matches!(e, Err(RootFsError::BadGeometry(_))));
    }

    #[test]
    fn missing_magic_is_not_ext4() {
        let e = geometry(|sb| sb[0x38] = 0);
        assert!(matches!(e, Err(RootFsError::NotExt4)));
        let empty: Arc<dyn ReadAt> = Arc::new(Vec::new());
        assert!(matches!(RootFs::open(empty), Err(RootFsError::Read(_))));
    }

    #[test]
    fn a_garbage_filesystem_fails_cleanly() {
        assert!(matches!(
            RootFs::open(image(|_| {})),
            Err(RootFsError::Open(_))
        ));
    }
}
