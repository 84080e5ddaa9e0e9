//! The synchronous path: requests the backend itself serves on the device
//! thread, through one bounce buffer allocated with the device — qcow2
//! allocation and copy-on-write, backing-file and compressed reads,
//! storage without a file, discard and write-zeroes — plus GET_ID.

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
};
use vm_memory::{Address, Bytes};

use super::device::{Active, MAX_ZEROING_SECTORS};
use super::request::{Request, RequestType, DISCARD_SEGMENT_LEN};
use super::{status, Block, SECTOR_SIZE};
use crate::disk::DiskError;
use crate::guest_warn;
use crate::virtio::GuestMemoryMmap;

impl Block {
    /// Reads or writes `req` through the backend; returns (status, bytes
    /// written to the guest).
    pub(super) fn rw_sync(&mut self, mem: &GuestMemoryMmap, req: &Request) -> (u8, u32) {
        let result = match req.request_type {
            RequestType::In => self.read_sync(mem, req).map(|()| {
                self.metrics.reads += 1;
                self.metrics.read_bytes += req.data_len;
                // parse() caps data_len below u32::MAX.
                u32::try_from(req.data_len).unwrap_or(0)
            }),
            _ => self.write_sync(mem, req).map(|()| {
                self.metrics.writes += 1;
                self.metrics.write_bytes += req.data_len;
                0
            }),
        };
        match result {
            Ok(written) => (status::OK, written),
            Err(e) => {
                guest_warn!("virtio-blk: {:?} failed: {e}", req.request_type);
                self.metrics.io_errors += 1;
                (status::IOERR, 0)
            }
        }
    }

    fn read_sync(&mut self, mem: &GuestMemoryMmap, req: &Request) -> Result<(), DiskError> {
        let mut offset = req.sector * SECTOR_SIZE;
        for seg in &self.segments {
            let mut done = 0usize;
            while done < seg.len as usize {
                let n = (seg.len as usize - done).min(self.bounce.len());
                self.disk.read_at(&mut self.bounce[..n], offset)?;
                mem.write_slice(&self.bounce[..n], seg.addr.unchecked_add(done as u64))
                    .map_err(|_| DiskError::Corrupt {
                        what: "guest buffer",
                        offset: seg.addr.0,
                    })?;
                done += n;
                offset += n as u64;
            }
        }
        Ok(())
    }

    fn write_sync(&mut self, mem: &GuestMemoryMmap, req: &Request) -> Result<(), DiskError> {
        let mut offset = req.sector * SECTOR_SIZE;
        for seg in &self.segments {
            let mut done = 0usize;
            while done < seg.len as usize {
                let n = (seg.len as usize - done).min(self.bounce.len());
                mem.read_slice(&mut self.bounce[..n], seg.addr.unchecked_add(done as u64))
                    .map_err(|_| DiskError::Corrupt {
                        what: "guest buffer",
                        offset: seg.addr.0,
                    })?;
                self.disk.write_at(&self.bounce[..n], offset)?;
                done += n;
                offset += n as u64;
            }
        }
        Ok(())
    }

    /// Copies the serial into the data buffers (as much as fits).
    pub(super) fn write_serial(&mut self, mem: &GuestMemoryMmap) -> u32 {
        let mut rest = &self.serial[..];
        let mut written = 0;
        for seg in &self.segments {
            let n = rest.len().min(seg.len as usize);
            if mem.write_slice(&rest[..n], seg.addr).is_err() {
                break;
            }
            rest = &rest[n..];
            written += u32::try_from(n).unwrap_or(0);
        }
        written
    }

    /// Reads `buf.len()` bytes at `offset` into the request's data.
    fn read_data(&self, mem: &GuestMemoryMmap, mut offset: u64, buf: &mut [u8]) -> bool {
        let mut filled = 0;
        for seg in &self.segments {
            let len = u64::from(seg.len);
            if offset >= len {
                offset -= len;
                continue;
            }
            let n = usize::try_from(len - offset)
                .unwrap_or(usize::MAX)
                .min(buf.len() - filled);
            if mem
                .read_slice(&mut buf[filled..filled + n], seg.addr.unchecked_add(offset))
                .is_err()
            {
                return false;
            }
            filled += n;
            offset = 0;
            if filled == buf.len() {
                return true;
            }
        }
        false
    }

    /// Discard or write-zeroes: validated here, done by the backend once
    /// no direct I/O is in flight (it may free or move clusters).
    pub(super) fn zero_ranges(&mut self, a: &mut Active, req: &Request) -> (u8, u32) {
        let discard = req.request_type == RequestType::Discard;
        let (feature, allowed_flags) = if discard {
            (VIRTIO_BLK_F_DISCARD, 0)
        } else {
            (
                VIRTIO_BLK_F_WRITE_ZEROES,
                VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
            )
        };
        if self.acked_features & (1 << feature) == 0 {
            self.metrics.unsupported += 1;
            return (status::UNSUPP, 0);
        }
        // Only one range per request is advertised (max_*_seg = 1).
        if req.data_len != DISCARD_SEGMENT_LEN {
            self.metrics.invalid_requests += 1;
            return (status::IOERR, 0);
        }
        let mut raw = [0u8; 16];
        if !self.read_data(&a.mem, 0, &mut raw) {
            self.metrics.invalid_requests += 1;
            return (status::IOERR, 0);
        }
        let sector = u64::from_le_bytes(raw[0..8].try_into().expect("8"));
        let sectors = u32::from_le_bytes(raw[8..12].try_into().expect("4"));
        let flags = u32::from_le_bytes(raw[12..16].try_into().expect("4"));
        if flags & !allowed_flags != 0 {
            self.metrics.unsupported += 1;
            return (status::UNSUPP, 0);
        }
        let in_range = sector
            .checked_add(u64::from(sectors))
            .is_some_and(|end| end <= self.capacity_sectors);
        if !in_range || sectors > MAX_ZEROING_SECTORS {
            self.metrics.invalid_requests += 1;
            return (status::IOERR, 0);
        }
        self.complete_in_flight(a);
        self.metrics.sync_path_requests += 1;
        let (offset, len) = (sector * SECTOR_SIZE, u64::from(sectors) * SECTOR_SIZE);
        let result = if discard {
            self.disk.discard(offset, len)
        } else {
            self.disk.write_zeroes(offset, len)
        };
        match result {
            Ok(()) if discard => self.metrics.discards += 1,
            Ok(()) => self.metrics.write_zeroes += 1,
            Err(e) => {
                guest_warn!("virtio-blk: zeroing failed: {e}");
                self.metrics.io_errors += 1;
                return (status::IOERR, 0);
            }
        }
        (status::OK, 0)
    }
}
