//! Positioned reads from a disk image, and windows onto part of one.
//!
//! The image reader never seeks: every read names its offset, so one disk
//! can be shared by the partition-table parser and the filesystem reader
//! (and later by the VMM's own block device) without a cursor to fight
//! over. The trait is deliberately tiny and object-safe so the qcow2
//! backend can implement it too.

use std::fs::File;
use std::io;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// A disk image readable at arbitrary byte offsets.
///
/// `Send + Sync` because one disk is shared (behind an `Arc`) between this
/// reader and the VMM's device threads.
pub trait ReadAt: Send + Sync {
    /// Fills all of `buf` from the bytes starting at `offset`; a read that
    /// would run past [`ReadAt::len`] is an error, not a short read.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// The disk's size in bytes.
    fn len(&self) -> u64;

    /// Whether the disk has no bytes at all.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }

    /// A regular file's size, or a block device's (whose metadata says 0,
    /// so it is measured by seeking to its end). A size that cannot be
    /// learned reads as 0, which makes every later read fail cleanly.
    fn len(&self) -> u64 {
        match self.metadata() {
            Ok(m) if m.is_file() => m.len(),
            // `&File` seeks without `&mut`; reads are positioned, so moving
            // the cursor here disturbs nobody.
            _ => (&mut &*self).seek(SeekFrom::End(0)).unwrap_or(0),
        }
    }
}

/// An in-memory image, for tests and the fuzz entry point.
impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|start| Some(start..start.checked_add(buf.len())?))
            .and_then(|range| self.get(range))
            .ok_or_else(|| past_end(offset, buf.len(), self.len() as u64))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn len(&self) -> u64 {
        // usize is at most 64 bits on every target Stratus builds for.
        u64::try_from(Vec::len(self)).unwrap_or(u64::MAX)
    }
}

fn past_end(offset: u64, len: usize, size: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("read of {len} bytes at offset {offset} runs past the end of a {size}-byte disk"),
    )
}

/// A byte range of a disk (a partition), itself readable as a disk.
#[derive(Clone)]
pub struct Slice {
    disk: Arc<dyn ReadAt>,
    start: u64,
    len: u64,
}

impl std::fmt::Debug for Slice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slice")
            .field("start", &self.start)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Slice {
    /// The `len` bytes of `disk` from `start`, or `None` if that range does
    /// not lie within the disk.
    pub fn new(disk: Arc<dyn ReadAt>, start: u64, len: u64) -> Option<Self> {
        let end = start.checked_add(len)?;
        (end <= disk.len()).then_some(Self { disk, start, len })
    }

    /// Where the slice starts on its disk, in bytes.
    pub fn start(&self) -> u64 {
        self.start
    }
}

impl ReadAt for Slice {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let n = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        // Checked so a read near the end cannot wrap into the next
        // partition's bytes.
        match offset.checked_add(n) {
            Some(end) if end <= self.len => self.disk.read_exact_at(buf, self.start + offset),
            _ => Err(past_end(offset, buf.len(), self.len)),
        }
    }

    fn len(&self) -> u64 {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vec_reads_inside_and_refuses_past_end() {
        let disk = vec![1u8, 2, 3, 4];
        let mut buf = [0u8; 2];
        ReadAt::read_exact_at(&disk, &mut buf, 2).unwrap();
        assert_eq!(buf, [3, 4]);
        assert!(ReadAt::read_exact_at(&disk, &mut buf, 3).is_err());
        assert!(ReadAt::read_exact_at(&disk, &mut buf, u64::MAX).is_err());
    }

    #[test]
    fn slice_is_bounded_by_its_own_length() {
        let disk: Arc<dyn ReadAt> = Arc::new((0u8..16).collect::<Vec<_>>());
        let part = Slice::new(disk.clone(), 4, 4).unwrap();
        let mut buf = [0u8; 4];
        part.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(buf, [4, 5, 6, 7]);
        // The disk has bytes there, but the partition does not.
        assert!(part.read_exact_at(&mut buf, 1).is_err());
        assert!(part.read_exact_at(&mut buf, u64::MAX - 1).is_err());
        assert!(Slice::new(disk.clone(), 12, 5).is_none());
        assert!(Slice::new(disk, u64::MAX, 2).is_none());
    }

    #[test]
    fn file_reads_at_offsets() {
        let path = std::env::temp_dir().join(format!("stratus-ami-disk-{}", std::process::id()));
        std::fs::write(&path, b"abcdef").unwrap();
        let file = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(ReadAt::len(&file), 6);
        let mut buf = [0u8; 3];
        ReadAt::read_exact_at(&file, &mut buf, 3).unwrap();
        assert_eq!(&buf, b"def");
        assert!(ReadAt::read_exact_at(&file, &mut buf, 4).is_err());
    }
}
