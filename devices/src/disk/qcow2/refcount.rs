//! Refcounts: how many references each host cluster has, and allocation.
//!
//! Only loaded for writable images. The refcount table is kept in memory
//! (bounded by [`MAX_REFTABLE_BYTES`]); blocks go through a small
//! write-through cache. New clusters are taken from a hint that starts at
//! the end of the file and moves back when a cluster is freed, always
//! checking the refcount is really 0.
//!
//! Ordering: a cluster's refcount is written before anything points to it,
//! so a crash between steps leaks a cluster (harmless, `qemu-img check -r
//! leaks` reclaims it) rather than letting two users share one.

use super::cache::TableCache;
use super::header::{Header, OFF_REFCOUNT_TABLE_OFFSET};
use super::Qcow2Error;
use crate::disk::{DiskError, Storage};

/// Largest refcount table accepted (QEMU uses the same bound).
pub const MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// Host offsets are bits 9..=55 of table entries.
pub const MAX_HOST_OFFSET: u64 = 1 << 56;
/// Bytes of refcount blocks cached.
const BLOCK_CACHE_BYTES: usize = 1 << 20;
/// Allocating a refcount block may need another block for itself; with
/// blocks allocated next to each other this ends after one step.
const MAX_ALLOC_DEPTH: u32 = 4;

#[derive(Debug)]
pub(super) struct Refcounts {
    table: Vec<u64>,
    table_offset: u64,
    table_clusters: u64,
    order: u32,
    cluster_bits: u32,
    blocks: TableCache<Vec<u8>>,
    /// Cluster index where the search for a free cluster starts.
    next_free: u64,
    /// Clusters up to here may be in use; past it every refcount must be
    /// 0, which bounds the free-cluster search even in a hostile image.
    end_clusters: u64,
}

fn corrupt(what: &'static str, offset: u64) -> DiskError {
    DiskError::Corrupt { what, offset }
}

impl Refcounts {
    pub fn load(file: &dyn Storage, h: &Header, file_len: u64) -> Result<Self, Qcow2Error> {
        let cs = 1u64 << h.cluster_bits;
        let offset = h.refcount_table_offset;
        let bytes = u64::from(h.refcount_table_clusters) * cs;
        if bytes > MAX_REFTABLE_BYTES {
            return Err(Qcow2Error::TooLarge {
                what: "refcount table",
                value: bytes,
            });
        }
        let in_file = offset.checked_add(bytes).is_some_and(|end| end <= file_len);
        if bytes == 0 || offset == 0 || !offset.is_multiple_of(cs) || !in_file {
            return Err(Qcow2Error::BadOffset {
                what: "refcount table",
                offset,
            });
        }
        let mut raw = vec![0u8; bytes as usize];
        file.read_exact_at(&mut raw, offset)?;
        let table = raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let cache_slots = BLOCK_CACHE_BYTES >> h.cluster_bits;
        Ok(Self {
            table,
            table_offset: offset,
            table_clusters: u64::from(h.refcount_table_clusters),
            order: h.refcount_order,
            cluster_bits: h.cluster_bits,
            blocks: TableCache::new(cache_slots),
            next_free: file_len.div_ceil(cs),
            end_clusters: file_len.div_ceil(cs),
        })
    }

    fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    fn entries_per_block(&self) -> u64 {
        (self.cluster_size() * 8) >> self.order
    }

    /// The block offset stored in table entry `index` (0 = none).
    fn block_offset(&self, index: u64) -> Result<u64, DiskError> {
        let entry = self.table[index as usize];
        if entry & 0x1ff != 0
            || !entry.is_multiple_of(self.cluster_size())
            || entry >= MAX_HOST_OFFSET
        {
            return Err(corrupt("refcount table entry", index));
        }
        Ok(entry)
    }

    fn load_block<'a>(
        blocks: &'a mut TableCache<Vec<u8>>,
        file: &dyn Storage,
        offset: u64,
        cluster_size: u64,
    ) -> Result<&'a mut Vec<u8>, DiskError> {
        blocks.get_or_load(offset, || {
            let mut b = vec![0u8; cluster_size as usize];
            file.read_exact_at(&mut b, offset)
                .map_err(|_| corrupt("refcount block outside the file", offset))?;
            Ok(b)
        })
    }

    /// The refcount of host cluster `cluster` (an index, not an offset).
    pub fn get(&mut self, file: &dyn Storage, cluster: u64) -> Result<u64, DiskError> {
        let epb = self.entries_per_block();
        let index = cluster / epb;
        if index >= self.table.len() as u64 {
            return Ok(0);
        }
        let offset = self.block_offset(index)?;
        if offset == 0 {
            return Ok(0);
        }
        let cs = self.cluster_size();
        let block = Self::load_block(&mut self.blocks, file, offset, cs)?;
        Ok(read_entry(block, cluster % epb, self.order))
    }

    /// Sets the refcount of host cluster `cluster`, allocating refcount
    /// blocks or a larger table as needed.
    pub fn set(
        &mut self,
        file: &mut dyn Storage,
        cluster: u64,
        value: u64,
    ) -> Result<(), DiskError> {
        self.set_inner(file, cluster, value, 0)
    }

    fn set_inner(
        &mut self,
        file: &mut dyn Storage,
        cluster: u64,
        value: u64,
        depth: u32,
    ) -> Result<(), DiskError> {
        if depth > MAX_ALLOC_DEPTH {
            return Err(corrupt("refcount allocation does not converge", cluster));
        }
        if self.order < 6 && value >> (1u32 << self.order) != 0 {
            return Err(DiskError::Unsupported("refcount overflow"));
        }
        let epb = self.entries_per_block();
        let index = cluster / epb;
        if index >= self.table.len() as u64 {
            self.grow_table(file, cluster)?;
        }
        let mut offset = self.block_offset(index)?;
        if offset == 0 {
            offset = self.alloc_block(file, index, depth)?;
        }
        let cs = self.cluster_size();
        let block = Self::load_block(&mut self.blocks, file, offset, cs)?;
        let (start, len) = write_entry(block, cluster % epb, self.order, value);
        file.write_all_at(&block[start..start + len], offset + start as u64)?;
        Ok(())
    }

    /// Finds a cluster whose refcount is 0, without claiming it.
    fn find_free(&mut self, file: &dyn Storage) -> Result<u64, DiskError> {
        loop {
            let cluster = self.next_free;
            if (cluster + 1) << self.cluster_bits > MAX_HOST_OFFSET {
                return Err(DiskError::NoSpace);
            }
            self.next_free += 1;
            if self.get(file, cluster)? == 0 {
                self.end_clusters = self.end_clusters.max(cluster + 1);
                return Ok(cluster);
            }
            if cluster >= self.end_clusters {
                return Err(corrupt(
                    "refcount of a cluster past the end of the image",
                    cluster,
                ));
            }
        }
    }

    /// Allocates one cluster with refcount 1 and returns its host offset.
    /// Its contents are whatever the file holds; callers overwrite it.
    pub fn alloc(&mut self, file: &mut dyn Storage) -> Result<u64, DiskError> {
        let cluster = self.find_free(file)?;
        self.set(file, cluster, 1)?;
        Ok(cluster << self.cluster_bits)
    }

    /// Drops one reference to `cluster`; at 0 it becomes free for reuse.
    pub fn decrement(&mut self, file: &mut dyn Storage, cluster: u64) -> Result<(), DiskError> {
        let value = self.get(file, cluster)?;
        if value == 0 {
            return Err(corrupt("refcount underflow", cluster << self.cluster_bits));
        }
        self.set(file, cluster, value - 1)?;
        if value == 1 {
            self.next_free = self.next_free.min(cluster);
        }
        Ok(())
    }

    fn write_table_entry(&mut self, file: &mut dyn Storage, index: u64) -> Result<(), DiskError> {
        let entry = self.table[index as usize];
        file.write_all_at(&entry.to_be_bytes(), self.table_offset + index * 8)?;
        Ok(())
    }

    /// Creates the refcount block for table entry `index`.
    fn alloc_block(
        &mut self,
        file: &mut dyn Storage,
        index: u64,
        depth: u32,
    ) -> Result<u64, DiskError> {
        let cluster = self.find_free(file)?;
        let offset = cluster << self.cluster_bits;
        let zeros = vec![0u8; self.cluster_size() as usize];
        file.write_all_at(&zeros, offset)?;
        self.blocks.insert(offset, zeros);
        self.table[index as usize] = offset;
        self.write_table_entry(file, index)?;
        // The block's own refcount usually lands in itself.
        self.set_inner(file, cluster, 1, depth + 1)?;
        Ok(offset)
    }

    /// Replaces the refcount table with a larger one so that `cluster` is
    /// covered. The new table and the blocks describing the new metadata
    /// are placed past everything the old table covers, so none of them
    /// needs the old table; the old table's clusters are freed afterwards.
    fn grow_table(&mut self, file: &mut dyn Storage, cluster: u64) -> Result<(), DiskError> {
        let cs = self.cluster_size();
        let epb = self.entries_per_block();
        let old_len = self.table.len() as u64;
        let start = self.next_free.max(cluster + 1);
        let target_index = cluster / epb;
        let table_clusters_for = |entries: u64| (entries * 8).div_ceil(cs);

        // Fixed point: the table size depends on which blocks exist, and
        // the blocks needed depend on where the table ends.
        let mut n_table = table_clusters_for((old_len * 2).max(target_index + 1));
        let mut n_blocks = 1;
        let mut converged = false;
        for _ in 0..16 {
            let end = start + n_table + n_blocks;
            let last = (end - 1) / epb;
            let blocks = last - target_index + 1;
            let entries = (old_len * 2).max(last + 1);
            let tables = table_clusters_for(entries);
            if tables == n_table && blocks == n_blocks {
                converged = true;
                break;
            }
            n_table = tables;
            n_blocks = blocks;
        }
        let end = start + n_table + n_blocks;
        if !converged
            || n_table * cs > MAX_REFTABLE_BYTES
            || end << self.cluster_bits > MAX_HOST_OFFSET
        {
            return Err(DiskError::NoSpace);
        }

        let mut table = self.table.clone();
        table.resize((n_table * cs / 8) as usize, 0);
        for k in 0..n_blocks {
            let index = target_index + k;
            let offset = (start + n_table + k) << self.cluster_bits;
            let mut block = vec![0u8; cs as usize];
            // Clusters of the new metadata described by this block.
            let first = (index * epb).max(start);
            let last = ((index + 1) * epb).min(end);
            for c in first..last {
                write_entry(&mut block, c % epb, self.order, 1);
            }
            file.write_all_at(&block, offset)?;
            self.blocks.insert(offset, block);
            table[index as usize] = offset;
        }
        let raw: Vec<u8> = table.iter().flat_map(|e| e.to_be_bytes()).collect();
        let new_offset = start << self.cluster_bits;
        file.write_all_at(&raw, new_offset)?;
        // Offset and cluster count are adjacent: one write switches tables.
        let mut hdr = [0u8; 12];
        hdr[..8].copy_from_slice(&new_offset.to_be_bytes());
        let n_table_u32 = u32::try_from(n_table).map_err(|_| DiskError::NoSpace)?;
        hdr[8..].copy_from_slice(&n_table_u32.to_be_bytes());
        file.write_all_at(&hdr, OFF_REFCOUNT_TABLE_OFFSET)?;

        let (old_offset, old_clusters) = (self.table_offset, self.table_clusters);
        self.table = table;
        self.table_offset = new_offset;
        self.table_clusters = n_table;
        self.next_free = end;
        self.end_clusters = self.end_clusters.max(end);
        for i in 0..old_clusters {
            self.decrement(file, (old_offset >> self.cluster_bits) + i)?;
        }
        Ok(())
    }
}

/// Reads refcount `index` from a block of `2^order`-bit entries
/// (big-endian; sub-byte widths packed from the least significant bit).
fn read_entry(block: &[u8], index: u64, order: u32) -> u64 {
    let bits = 1u64 << order;
    if bits >= 8 {
        let bytes = (bits / 8) as usize;
        let start = index as usize * bytes;
        block[start..start + bytes]
            .iter()
            .fold(0, |acc, &b| (acc << 8) | u64::from(b))
    } else {
        let bit = index * bits;
        let byte = block[(bit / 8) as usize];
        (u64::from(byte) >> (bit % 8)) & ((1 << bits) - 1)
    }
}

/// Writes refcount `index`; returns the byte range that changed.
fn write_entry(block: &mut [u8], index: u64, order: u32, value: u64) -> (usize, usize) {
    let bits = 1u64 << order;
    if bits >= 8 {
        let bytes = (bits / 8) as usize;
        let start = index as usize * bytes;
        let be = value.to_be_bytes();
        block[start..start + bytes].copy_from_slice(&be[8 - bytes..]);
        (start, bytes)
    } else {
        let bit = index * bits;
        let pos = (bit / 8) as usize;
        let shift = bit % 8;
        let mask = (((1u16 << bits) - 1) << shift) as u8;
        let v = ((value << shift) & u64::from(mask)) as u8;
        block[pos] = (block[pos] & !mask) | v;
        (pos, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_widths() {
        for order in 0..=6 {
            let mut block = vec![0u8; 512];
            let max = if order == 6 {
                u64::MAX
            } else {
                (1u64 << (1 << order)) - 1
            };
            let entries = (512 * 8) >> order;
            for i in 0..entries {
                write_entry(&mut block, i, order, i & max);
            }
            write_entry(&mut block, 3, order, max);
            for i in 0..entries {
                let want = if i == 3 { max } else { i & max };
                assert_eq!(
                    read_entry(&block, i, order),
                    want,
                    "order {order} index {i}"
                );
            }
        }
        let mut b = [0u8; 4];
        write_entry(&mut b, 1, 4, 0x0102);
        assert_eq!(b, [0, 0, 1, 2]);
        let mut b = [0u8; 1];
        write_entry(&mut b, 1, 0, 1);
        assert_eq!(b, [0b10]);
    }
}
