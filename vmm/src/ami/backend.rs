//! [`ReadAt`] over the block device's disk backends (raw, qcow2), so the
//! reader sees exactly the bytes the guest will: a qcow2 overlay's
//! changes included.
//!
//! Backends take `&mut self` (qcow2 caches its tables), so they are read
//! behind a mutex. The reader runs once, before the guest starts, so the
//! lock is never contended.

use std::io;
use std::sync::Mutex;

use stratus_devices::disk::{DiskBackend, DiskError};

use super::disk::ReadAt;

impl<B: DiskBackend> ReadAt for Mutex<B> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut disk = self
            .lock()
            .map_err(|_| io::Error::other("disk lock poisoned by a panic elsewhere"))?;
        disk.read_at(buf, offset).map_err(|e| match e {
            DiskError::Io(e) => e,
            DiskError::OutOfRange { .. } => io::Error::new(io::ErrorKind::UnexpectedEof, e),
            e => io::Error::other(e),
        })
    }

    /// The virtual size; 0 (every read fails) if the lock is poisoned.
    fn len(&self) -> u64 {
        self.lock().map_or(0, |disk| disk.size())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use stratus_devices::disk::{MemStorage, RawDisk};

    use super::*;

    #[test]
    fn a_backend_reads_like_a_disk() {
        let data: Vec<u8> = (0u8..=255).collect();
        let raw = RawDisk::new(Box::new(MemStorage::new(data, 256)), true).unwrap();
        let disk: Arc<dyn ReadAt> = Arc::new(Mutex::new(raw));
        assert_eq!(disk.len(), 256);
        let mut buf = [0u8; 4];
        disk.read_exact_at(&mut buf, 252).unwrap();
        assert_eq!(buf, [252, 253, 254, 255]);
        let e = disk.read_exact_at(&mut buf, 253).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
