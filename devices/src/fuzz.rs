//! Entry points for fuzzers: each takes arbitrary bytes and must return
//! without panicking, hanging or allocating without bound. A cargo-fuzz
//! target only needs to call one of these.

use crate::disk::{DiskBackend, ImageFormat, MemStorage, Qcow2Disk};

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

/// Guest memory size for [`block_requests`].
const FUZZ_MEM_LEN: usize = 64 * 1024;
/// Disk size for [`block_requests`].
const FUZZ_DISK_LEN: usize = 64 * 1024;

/// Runs the virtio-blk request path on a guest memory image built from
/// `data`. Byte 0 picks options (bit 0 read-only, bit 1 EVENT_IDX, bits
/// 2..5 the queue size exponent, bit 5 the io_uring engine instead of the
/// synchronous one); the rest is guest memory, in which the descriptor
/// table sits at 0, the avail ring at 0x1000 and the used ring at 0x2000,
/// so the fuzzer controls every descriptor and ring entry. The disk is a
/// raw image in a temporary file, so requests take the direct path: the
/// iovecs into guest memory are built from fuzzed descriptors.
pub fn block_requests(data: &[u8]) {
    use crate::virtio::block::{Block, BlockOptions, IoEngine};
    use crate::virtio::{GuestMemoryMmap, VirtioDevice};
    use virtio_queue::{Queue, QueueT};
    use vm_memory::{Bytes, GuestAddress};

    let Some((&opts, image)) = data.split_first() else {
        return;
    };
    let Ok(mem) = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), FUZZ_MEM_LEN)]) else {
        return;
    };
    let n = image.len().min(FUZZ_MEM_LEN);
    if mem.write_slice(&image[..n], GuestAddress(0)).is_err() {
        return;
    }
    let Ok(file) = vmm_sys_util::tempfile::TempFile::new() else {
        return;
    };
    if file.as_file().set_len(FUZZ_DISK_LEN as u64).is_err() {
        return;
    }
    let options = BlockOptions {
        read_only: opts & 1 != 0,
        serial: "fuzz".into(),
        io_engine: if opts & 0x20 != 0 {
            IoEngine::Auto
        } else {
            IoEngine::Sync
        },
        rate_limiter: None,
    };
    let Ok(mut block) = Block::open(file.as_path(), Some(ImageFormat::Raw), options) else {
        return;
    };
    block.ack_features(block.avail_features());
    let Ok(mut queue) = Queue::new(256) else {
        return;
    };
    queue.set_size(1 << ((opts >> 2) & 7).min(8));
    queue.set_event_idx(opts & 2 != 0);
    queue.set_desc_table_address(Some(0), Some(0));
    queue.set_avail_ring_address(Some(0x1000), Some(0));
    queue.set_used_ring_address(Some(0x2000), Some(0));
    queue.set_ready(true);
    if block.activate(mem, vec![queue]).is_ok() {
        // Twice: the second pass sees the used ring the first one wrote.
        for _ in 0..2 {
            block.process_queue();
            block.complete_pending();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_requests_survive_noise() {
        block_requests(&[]);
        block_requests(&[0xff]);
        let mut x = 0x1234_5678_9abc_def0u64;
        for round in 0..64u8 {
            let mut data = vec![0u8; 0x3000];
            for b in data.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x.to_le_bytes()[0];
            }
            data[0] = round | if round % 2 == 0 { 0x20 } else { 0 };
            // Plausible ring indices so chains are actually walked.
            data[1 + 0x1002] = round % 5;
            data[1 + 0x1003] = 0;
            block_requests(&data);
        }
    }
}
