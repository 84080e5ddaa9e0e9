//! Raw disk images: virtual offset = file offset.

use std::fs::OpenOptions;
use std::os::unix::io::RawFd;
use std::path::Path;

use super::{check_range, Access, DiskBackend, DiskError, Extents, Route, Storage};

/// A raw image file (or any [`Storage`]) used as a disk as-is.
#[derive(Debug)]
pub struct RawDisk {
    storage: Box<dyn Storage>,
    size: u64,
    read_only: bool,
}

impl RawDisk {
    /// Opens the image at `path`; read-only images are opened `O_RDONLY`
    /// so not even a bug here can change them.
    pub fn open(path: &Path, read_only: bool) -> std::io::Result<Self> {
        let file = OpenOptions::new().read(true).write(!read_only).open(path)?;
        Self::new(Box::new(file), read_only)
    }

    /// A disk over `storage`; its current length is the disk size.
    pub fn new(storage: Box<dyn Storage>, read_only: bool) -> std::io::Result<Self> {
        let size = storage.len()?;
        Ok(Self {
            storage,
            size,
            read_only,
        })
    }
}

impl DiskBackend for RawDisk {
    fn size(&self) -> u64 {
        self.size
    }

    fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
        check_range(offset, buf.len() as u64, self.size)?;
        // The file may shrink under us; reading zeros is the safe answer.
        self.storage.read_zero_filled(buf, offset)?;
        Ok(())
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<(), DiskError> {
        check_range(offset, buf.len() as u64, self.size)?;
        if self.read_only {
            return Err(DiskError::ReadOnly);
        }
        self.storage.write_all_at(buf, offset)?;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DiskError> {
        if !self.read_only {
            self.storage.sync_data()?;
        }
        Ok(())
    }

    /// Virtual offset = file offset: one extent, whenever the bytes are
    /// in a real file.
    fn route(
        &mut self,
        offset: u64,
        len: u64,
        access: Access,
        extents: &mut Extents,
    ) -> Result<Route, DiskError> {
        check_range(offset, len, self.size)?;
        if access == Access::Write && self.read_only {
            return Err(DiskError::ReadOnly);
        }
        extents.clear();
        match self.storage.raw_fd() {
            Some(fd) if extents.push(offset, len) => Ok(Route::Direct(fd)),
            // No file (memory storage): written in place, nothing freed.
            _ => Ok(Route::SYNC),
        }
    }

    fn flush_fd(&self) -> Option<RawFd> {
        // Nothing to make durable on a read-only disk: let flush() say so.
        if self.read_only {
            None
        } else {
            self.storage.raw_fd()
        }
    }

    fn discard(&mut self, offset: u64, len: u64) -> Result<(), DiskError> {
        check_range(offset, len, self.size)?;
        if self.read_only {
            return Err(DiskError::ReadOnly);
        }
        // A hole reads as zeros; if the host cannot punch one, discard is
        // only a hint and doing nothing is correct.
        self.storage.zero_range(offset, len, true)?;
        Ok(())
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), DiskError> {
        check_range(offset, len, self.size)?;
        if self.read_only {
            return Err(DiskError::ReadOnly);
        }
        if self.storage.zero_range(offset, len, false)? {
            return Ok(());
        }
        const CHUNK: u64 = 64 * 1024;
        let zeros = [0u8; CHUNK as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK);
            self.storage
                .write_all_at(&zeros[..n as usize], offset + done)?;
            done += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemStorage;

    #[test]
    fn reads_writes_and_bounds() {
        let mut d = RawDisk::new(Box::new(MemStorage::new(vec![0; 4096], 4096)), false).unwrap();
        assert_eq!(d.size(), 4096);
        d.write_at(&[1, 2, 3], 10).unwrap();
        let mut buf = [0u8; 4];
        d.read_at(&mut buf, 9).unwrap();
        assert_eq!(buf, [0, 1, 2, 3]);
        assert!(matches!(
            d.read_at(&mut buf, 4094),
            Err(DiskError::OutOfRange { .. })
        ));
        assert!(matches!(
            d.write_at(&buf, u64::MAX),
            Err(DiskError::OutOfRange { .. })
        ));
        d.write_zeroes(10, 2).unwrap();
        d.read_at(&mut buf, 9).unwrap();
        assert_eq!(buf, [0, 0, 0, 3]);
        d.flush().unwrap();
    }

    #[test]
    fn read_only_refuses_writes() {
        let mut d = RawDisk::new(Box::new(MemStorage::new(vec![5; 512], 512)), true).unwrap();
        assert!(matches!(d.write_at(&[1], 0), Err(DiskError::ReadOnly)));
        assert!(matches!(d.write_zeroes(0, 1), Err(DiskError::ReadOnly)));
        assert!(matches!(d.discard(0, 1), Err(DiskError::ReadOnly)));
        let mut b = [0u8; 1];
        d.read_at(&mut b, 0).unwrap();
        assert_eq!(b, [5]);
    }

    #[test]
    fn opens_files_read_only() {
        let tmp = vmm_sys_util::tempfile::TempFile::new().unwrap();
        tmp.as_file().set_len(1024).unwrap();
        let mut d = RawDisk::open(tmp.as_path(), true).unwrap();
        assert_eq!(d.size(), 1024);
        assert!(matches!(d.write_at(&[1], 0), Err(DiskError::ReadOnly)));
        let mut d = RawDisk::open(tmp.as_path(), false).unwrap();
        d.write_at(&[1], 0).unwrap();
        d.flush().unwrap();
    }

    #[test]
    fn routes_files_directly_and_memory_through_the_backend() {
        let tmp = vmm_sys_util::tempfile::TempFile::new().unwrap();
        tmp.as_file().set_len(8192).unwrap();
        let mut e = Extents::default();
        let mut d = RawDisk::open(tmp.as_path(), false).unwrap();
        assert!(matches!(
            d.route(4096, 512, Access::Write, &mut e),
            Ok(Route::Direct(_))
        ));
        assert_eq!(
            e.as_slice(),
            &[crate::disk::Extent {
                file_offset: 4096,
                len: 512
            }]
        );
        assert!(d.flush_fd().is_some());
        assert!(matches!(
            d.route(8000, 512, Access::Read, &mut e),
            Err(DiskError::OutOfRange { .. })
        ));
        let mut ro = RawDisk::open(tmp.as_path(), true).unwrap();
        assert!(matches!(
            ro.route(0, 512, Access::Write, &mut e),
            Err(DiskError::ReadOnly)
        ));
        assert!(ro.flush_fd().is_none());
        let mut mem = RawDisk::new(Box::new(MemStorage::new(vec![0; 512], 512)), false).unwrap();
        assert_eq!(
            mem.route(0, 512, Access::Read, &mut e).unwrap(),
            Route::SYNC
        );
    }
}
