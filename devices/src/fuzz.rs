//! Entry points for fuzzers: each takes arbitrary bytes and must return
//! without panicking, hanging or allocating without bound. A cargo-fuzz
//! target only needs to call one of these.

use crate::disk::{DiskBackend, MemStorage, Qcow2Disk};

/// Most a fuzzed image may grow while being written.
const MAX_GROWTH: u64 = 16 << 20;

/// Parses `data` as a qcow2 image (read-only and writable) and does a few
/// reads, writes and zeroings at offsets derived from its size.
pub fn qcow2_image(data: &[u8]) {
    let storage = MemStorage::new(data.to_vec(), data.len() as u64 + MAX_GROWTH);
    for read_only in [true, false] {
        let Ok(mut disk) = Qcow2Disk::from_storage(Box::new(storage.clone()), read_only) else {
            continue;
        };
        let size = disk.size();
        let mut buf = [0u8; 4096];
        for offset in [0, size / 3, size / 2 + 1000, size.saturating_sub(4096)] {
            let n = usize::try_from((size - offset.min(size)).min(buf.len() as u64)).unwrap_or(0);
            let _ = disk.read_at(&mut buf[..n], offset);
            if !read_only {
                buf[..n].fill(0x5a);
                let _ = disk.write_at(&buf[..n], offset);
                let _ = disk.read_at(&mut buf[..n], offset);
                let _ = disk.write_zeroes(offset, n as u64);
                let _ = disk.discard(offset, n as u64);
            }
        }
        let _ = disk.flush();
    }
}
