//! The qcow2 write path: in-place writes, copy-on-write allocation, zeroing.

use super::entry::{self, Mapping, COPIED, ZERO};
use super::{pieces, Qcow2Disk};
use crate::disk::{check_range, DiskBackend, DiskError};

const ZEROS: [u8; 4096] = [0; 4096];

impl Qcow2Disk {
    /// Allocates a host cluster (refcount 1).
    fn alloc_cluster(&mut self) -> Result<u64, DiskError> {
        let file = self.file.as_mut();
        let refcounts = self.refcounts.as_mut().ok_or(DiskError::ReadOnly)?;
        refcounts.alloc(file)
    }

    fn decrement(&mut self, cluster: u64) -> Result<(), DiskError> {
        let file = self.file.as_mut();
        let refcounts = self.refcounts.as_mut().ok_or(DiskError::ReadOnly)?;
        refcounts.decrement(file, cluster)
    }

    /// Writes one piece that lies within a single cluster.
    pub(super) fn write_piece(&mut self, data: &[u8], pos: u64) -> Result<(), DiskError> {
        let cs = self.cluster_size();
        let in_cluster = (pos & (cs - 1)) as usize;
        let mapping = self.lookup(pos)?;
        if let Mapping::Data { host, copied: true } = mapping {
            self.file.write_all_at(data, host + in_cluster as u64)?;
            return Ok(());
        }

        // Copy-on-write: build the whole new cluster, then point to it.
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.resize(cs as usize, 0);
        let result = self.fill_old_contents(&mut scratch, mapping, pos, data.len() == cs as usize);
        let result = result.and_then(|()| {
            scratch[in_cluster..in_cluster + data.len()].copy_from_slice(data);
            let host = match mapping {
                // A preallocated zero cluster we own is reused in place.
                Mapping::Zero { host, copied: true } if host != 0 => host,
                _ => self.alloc_cluster()?,
            };
            self.file.write_all_at(&scratch, host)?;
            self.set_l2_entry(pos, host | COPIED)?;
            if !matches!(mapping, Mapping::Zero { copied: true, .. }) {
                self.release(mapping)?;
            }
            Ok(())
        });
        self.scratch = scratch;
        result
    }

    /// Fills `buf` (one cluster) with what the guest currently sees there,
    /// unless the write covers the whole cluster anyway.
    fn fill_old_contents(
        &mut self,
        buf: &mut [u8],
        mapping: Mapping,
        pos: u64,
        whole: bool,
    ) -> Result<(), DiskError> {
        if whole {
            return Ok(());
        }
        let start = pos & !(self.cluster_size() - 1);
        match mapping {
            Mapping::Unallocated => self.read_backing(buf, start),
            Mapping::Zero { .. } => {
                buf.fill(0);
                Ok(())
            }
            Mapping::Data { host, .. } => Ok(self.file.read_zero_filled(buf, host)?),
            Mapping::Compressed { host, sectors_len } => {
                self.inflate(host, sectors_len)?;
                buf.copy_from_slice(&self.inflate_out);
                Ok(())
            }
        }
    }

    /// Drops the references an L2 entry that was just replaced held.
    fn release(&mut self, old: Mapping) -> Result<(), DiskError> {
        match old {
            Mapping::Unallocated => {}
            Mapping::Zero { host, .. } | Mapping::Data { host, .. } => {
                if host != 0 {
                    self.decrement(host >> self.cluster_bits())?;
                }
            }
            Mapping::Compressed { host, sectors_len } => {
                // Every host cluster the compressed sectors touch holds one
                // reference for this entry (as QEMU counts them).
                self.inflated = None;
                let start = host & !511;
                let first = start >> self.cluster_bits();
                let last = (start + sectors_len - 1) >> self.cluster_bits();
                for cluster in first..=last {
                    self.decrement(cluster)?;
                }
            }
        }
        Ok(())
    }

    /// The L2 table for `l1_index`, allocating an empty one if needed.
    fn ensure_l2(&mut self, l1_index: usize) -> Result<u64, DiskError> {
        let l1_entry = self.l1[l1_index];
        let offset = entry::l2_offset(l1_entry, self.cluster_bits(), l1_index)?;
        if offset != 0 {
            if l1_entry & COPIED == 0 {
                // Shared with a snapshot (we refuse those) or a tool that
                // does not set COPIED: only write a table we own alone.
                let cluster = offset >> self.cluster_bits();
                let refcounts = self.refcounts.as_mut().ok_or(DiskError::ReadOnly)?;
                if refcounts.get(self.file.as_ref(), cluster)? != 1 {
                    return Err(DiskError::Unsupported("shared L2 table"));
                }
            }
            return Ok(offset);
        }
        let offset = self.alloc_cluster()?;
        let cs = self.cluster_size() as usize;
        self.file.write_all_at(&vec![0u8; cs], offset)?;
        self.l2_cache.insert(offset, vec![0u64; cs / 8]);
        let l1_entry = offset | COPIED;
        self.l1[l1_index] = l1_entry;
        let at = self.header.l1_table_offset + l1_index as u64 * 8;
        self.file.write_all_at(&l1_entry.to_be_bytes(), at)?;
        Ok(offset)
    }

    fn set_l2_entry(&mut self, pos: u64, value: u64) -> Result<(), DiskError> {
        let (l1_index, l2_index) = self.indices(pos);
        let l2 = self.ensure_l2(l1_index)?;
        self.load_l2(l2)?[l2_index] = value;
        self.file
            .write_all_at(&value.to_be_bytes(), l2 + l2_index as u64 * 8)?;
        Ok(())
    }

    /// Makes a range read as zeros. Whole clusters get the v3 zero flag
    /// (keeping their allocation for `write_zeroes`, freeing it for
    /// `discard`); partial clusters are written with zeros, except for a
    /// discard, which may leave them as they are.
    pub(super) fn zero_range(
        &mut self,
        offset: u64,
        len: u64,
        unmap: bool,
    ) -> Result<(), DiskError> {
        check_range(offset, len, self.size())?;
        if self.read_only {
            return Err(DiskError::ReadOnly);
        }
        let cs = self.cluster_size();
        let len = usize::try_from(len).map_err(|_| DiskError::OutOfRange {
            offset,
            len,
            size: self.size(),
        })?;
        for (pos, _, n) in pieces(cs, offset, len) {
            if n as u64 == cs && self.header.version >= 3 {
                self.zero_cluster(pos, unmap)?;
            } else if unmap {
                // A discard is a hint; partial clusters stay as they are.
            } else {
                for (p, _, m) in pieces(ZEROS.len() as u64, pos, n) {
                    self.write_piece(&ZEROS[..m], p)?;
                }
            }
        }
        Ok(())
    }

    fn zero_cluster(&mut self, pos: u64, unmap: bool) -> Result<(), DiskError> {
        let mapping = self.lookup(pos)?;
        match mapping {
            Mapping::Zero { .. } => {}
            Mapping::Unallocated if self.backing.is_none() => {}
            Mapping::Data { host, copied: true } if !unmap => {
                self.set_l2_entry(pos, host | COPIED | ZERO)?;
            }
            _ => {
                self.set_l2_entry(pos, ZERO)?;
                self.release(mapping)?;
            }
        }
        Ok(())
    }
}
