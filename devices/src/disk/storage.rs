//! Byte storage under a disk image: a host file or a buffer in memory.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::{AsRawFd, RawFd};

/// Positioned I/O on the bytes of an image file.
pub trait Storage: Send + std::fmt::Debug {
    /// Reads up to `buf.len()` bytes at `offset`; short only at end of file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Writes all of `buf` at `offset`, growing the file if needed.
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;

    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;

    /// Whether the storage holds no bytes.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Makes written data durable.
    fn sync_data(&mut self) -> io::Result<()>;

    /// Makes `[offset, offset + len)` read as zeros, freeing the space when
    /// `unmap` and the host allow it. Returns `false` if the host cannot
    /// do it without writing zeros, in which case nothing changed.
    fn zero_range(&mut self, offset: u64, len: u64, unmap: bool) -> io::Result<bool>;

    /// The host file descriptor, when the bytes live in a file that I/O
    /// may reach directly (see [`crate::disk::Route`]).
    fn raw_fd(&self) -> Option<RawFd> {
        None
    }

    /// Fills `buf` at `offset`; reading past the end of the storage is an
    /// `UnexpectedEof` error.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset)? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
            }
        }
        Ok(())
    }

    /// Fills `buf` at `offset`, with zeros for any part past the end.
    fn read_zero_filled(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset)? {
                0 => {
                    buf.fill(0);
                    break;
                }
                n => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
            }
        }
        Ok(())
    }
}

impl Storage for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        loop {
            match FileExt::read_at(self, buf, offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.as_raw_fd())
    }

    fn zero_range(&mut self, offset: u64, len: u64, unmap: bool) -> io::Result<bool> {
        let (Ok(off), Ok(n)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        let mode = if unmap {
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
        } else {
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE
        };
        // SAFETY: fallocate only reads its integer arguments; the fd is
        // owned by `self` and stays open for the call.
        let ret = unsafe { libc::fallocate(self.as_raw_fd(), mode, off, n) };
        if ret == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL) => Ok(false),
            _ => Err(err),
        }
    }
}

/// Image bytes held in memory, for tests and fuzzing. Growth is capped so a
/// hostile image cannot make the process allocate without bound.
#[derive(Debug, Default, Clone)]
pub struct MemStorage {
    data: Vec<u8>,
    max_len: u64,
}

impl MemStorage {
    /// Storage holding `data`, allowed to grow up to `max_len` bytes.
    pub fn new(data: Vec<u8>, max_len: u64) -> Self {
        Self { data, max_len }
    }

    /// The bytes stored.
    pub fn data(&self) -> &[u8] {
        &self.data
    }
}

impl Storage for MemStorage {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let Ok(start) = usize::try_from(offset) else {
            return Ok(0);
        };
        let Some(avail) = self.data.get(start..) else {
            return Ok(0);
        };
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        Ok(n)
    }

    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.max_len)
            .ok_or_else(|| io::Error::from(io::ErrorKind::StorageFull))?;
        let (start, end) = (offset as usize, end as usize);
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[start..end].copy_from_slice(buf);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.data.len() as u64)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn zero_range(&mut self, offset: u64, len: u64, _unmap: bool) -> io::Result<bool> {
        let size = self.data.len() as u64;
        let start = offset.min(size) as usize;
        let end = offset.saturating_add(len).min(size) as usize;
        self.data[start..end].fill(0);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_storage_reads_short_at_end_and_caps_growth() {
        let mut s = MemStorage::new(vec![1, 2, 3], 8);
        let mut buf = [9u8; 4];
        assert_eq!(s.read_at(&mut buf, 1).unwrap(), 2);
        assert!(s.read_exact_at(&mut buf, 1).is_err());
        s.read_zero_filled(&mut buf, 1).unwrap();
        assert_eq!(buf, [2, 3, 0, 0]);
        s.write_all_at(&[7; 4], 4).unwrap();
        assert_eq!(s.data(), &[1, 2, 3, 0, 7, 7, 7, 7]);
        assert!(s.write_all_at(&[1], 8).is_err());
        assert!(s.write_all_at(&[1], u64::MAX).is_err());
        s.zero_range(3, 100, true).unwrap();
        assert_eq!(s.data(), &[1, 2, 3, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn file_zero_range() {
        let mut f = vmm_sys_util::tempfile::TempFile::new().unwrap().into_file();
        Storage::write_all_at(&mut f, &[0xaa; 8192], 0).unwrap();
        let _ = Storage::zero_range(&mut f, 4096, 4096, true).unwrap();
        let mut buf = [1u8; 8192];
        Storage::read_exact_at(&f, &mut buf, 0).unwrap();
        assert!(buf[..4096].iter().all(|&b| b == 0xaa));
        assert!(buf[4096..].iter().all(|&b| b == 0) || buf[4096..].iter().all(|&b| b == 0xaa));
    }
}
