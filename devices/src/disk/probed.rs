//! Guarding disks whose format was guessed.
//!
//! A raw image opened without an explicit format was *probed* as raw. If a
//! guest could write a qcow2 header into its first sector, the next probe
//! would open the file as qcow2, and a backing-file name chosen by the guest
//! would let it read any host file the VMM can open. So writes that would
//! put the qcow2 magic at offset 0 of a probed raw disk are refused (the
//! guest sees an I/O error); everything else passes through.

use std::os::unix::io::RawFd;

use super::{Access, DiskBackend, DiskError, Extents, Route};

/// The qcow2 magic, "QFI\xfb".
const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";

/// A raw disk that was probed, not declared, as raw.
#[derive(Debug)]
pub struct ProbedRaw {
    inner: Box<dyn DiskBackend>,
}

impl ProbedRaw {
    /// Guards `inner`.
    pub fn new(inner: Box<dyn DiskBackend>) -> Self {
        Self { inner }
    }
}

/// Whether writing `buf` at `offset` would start the image with the magic.
fn writes_qcow2_magic(buf: &[u8], offset: u64) -> bool {
    let Ok(start) = usize::try_from(offset) else {
        return false;
    };
    if start >= QCOW2_MAGIC.len() {
        return false;
    }
    // Only the bytes of the magic this write covers can be compared; a write
    // that covers part of it is refused if that part matches, so the magic
    // cannot be assembled from several small writes either.
    let covered = (QCOW2_MAGIC.len() - start).min(buf.len());
    covered > 0 && buf[..covered] == QCOW2_MAGIC[start..start + covered]
}

impl DiskBackend for ProbedRaw {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn is_read_only(&self) -> bool {
        self.inner.is_read_only()
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
        self.inner.read_at(buf, offset)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<(), DiskError> {
        if writes_qcow2_magic(buf, offset) {
            log::warn!("refused a guest write of a qcow2 header to a probed raw disk");
            return Err(DiskError::ReadOnly);
        }
        self.inner.write_at(buf, offset)
    }

    fn flush(&mut self) -> Result<(), DiskError> {
        self.inner.flush()
    }

    /// Writes that reach the magic's bytes must be checked by `write_at`,
    /// so they never go direct; everything else is the inner disk's call.
    fn route(
        &mut self,
        offset: u64,
        len: u64,
        access: Access,
        extents: &mut Extents,
    ) -> Result<Route, DiskError> {
        if access == Access::Write && offset < QCOW2_MAGIC.len() as u64 {
            // Written in place: nothing freed.
            return Ok(Route::SYNC);
        }
        self.inner.route(offset, len, access, extents)
    }

    fn flush_fd(&self) -> Option<RawFd> {
        self.inner.flush_fd()
    }

    fn discard(&mut self, offset: u64, len: u64) -> Result<(), DiskError> {
        self.inner.discard(offset, len)
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), DiskError> {
        self.inner.write_zeroes(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_the_magic_whole_or_in_pieces() {
        assert!(writes_qcow2_magic(b"QFI\xfb\0\0\0\x03", 0));
        assert!(writes_qcow2_magic(b"QF", 0));
        assert!(writes_qcow2_magic(b"I\xfb", 2));
        assert!(!writes_qcow2_magic(b"QFI\xfb", 4));
        assert!(!writes_qcow2_magic(b"\x7fELF", 0));
        assert!(!writes_qcow2_magic(b"", 0));
        assert!(!writes_qcow2_magic(b"QFI\xfb", u64::MAX));
    }

    #[test]
    fn writes_over_the_magic_never_go_direct() {
        let tmp = vmm_sys_util::tempfile::TempFile::new().unwrap();
        tmp.as_file().set_len(4096).unwrap();
        let raw = crate::disk::RawDisk::open(tmp.as_path(), false).unwrap();
        let mut d = ProbedRaw::new(Box::new(raw));
        let mut e = Extents::default();
        assert_eq!(d.route(0, 512, Access::Write, &mut e).unwrap(), Route::SYNC);
        assert!(matches!(
            d.route(0, 512, Access::Read, &mut e),
            Ok(Route::Direct(_))
        ));
        assert!(matches!(
            d.route(512, 512, Access::Write, &mut e),
            Ok(Route::Direct(_))
        ));
        assert!(d.flush_fd().is_some());
    }
}
