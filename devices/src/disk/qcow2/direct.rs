//! Direct routes for qcow2: which guest ranges sit in data clusters that
//! I/O may reach without the qcow2 code.
//!
//! Only plain data clusters qualify: for reads any of them (shared ones
//! included, reading never changes them), for writes only clusters marked
//! COPIED (refcount 1, ours alone), which `write_piece` would also write
//! in place. Everything else needs the qcow2 code: unallocated clusters
//! (backing file or allocation), zero clusters, compressed clusters,
//! shared clusters being written (copy-on-write). Looking a range up may
//! load L2 tables into the cache, but never changes the image.
//!
//! A write on the synchronous path frees a cluster only where
//! `write_piece` releases the old mapping: a shared data cluster, a zero
//! cluster with a preallocation that is not ours, a compressed cluster.
//! Allocating into unallocated or zero clusters and writing in place free
//! nothing (the new clusters had refcount 0, so no direct I/O used them).

use std::os::unix::io::RawFd;

use super::entry::Mapping;
use super::{pieces, Qcow2Disk};
use crate::disk::{check_range, Access, DiskBackend, DiskError, Extents, Route};

/// Whether replacing `m` in a write releases a host cluster.
fn write_frees(m: Mapping) -> bool {
    match m {
        Mapping::Unallocated | Mapping::Data { copied: true, .. } => false,
        Mapping::Zero { host, copied } => host != 0 && !copied,
        Mapping::Data { copied: false, .. } | Mapping::Compressed { .. } => true,
    }
}

impl Qcow2Disk {
    pub(super) fn direct_route(
        &mut self,
        offset: u64,
        len: u64,
        access: Access,
        extents: &mut Extents,
    ) -> Result<Route, DiskError> {
        check_range(offset, len, self.size())?;
        if access == Access::Write && self.read_only {
            return Err(DiskError::ReadOnly);
        }
        extents.clear();
        let fd = self.file.raw_fd();
        // Any request length fits a usize (64-bit hosts only).
        let len = usize::try_from(len).map_err(|_| DiskError::OutOfRange {
            offset,
            len,
            size: self.size(),
        })?;
        let cs = self.cluster_size();
        let mut direct = fd.is_some();
        for (pos, _, n) in pieces(cs, offset, len) {
            let mapping = self.lookup(pos)?;
            if access == Access::Write && write_frees(mapping) {
                return Ok(Route::Sync { frees: true });
            }
            if !direct {
                // Only looking for frees now.
                if access == Access::Read {
                    break;
                }
                continue;
            }
            let host = match (mapping, access) {
                (Mapping::Data { host, .. }, Access::Read) => Some(host),
                (Mapping::Data { host, copied: true }, Access::Write) => Some(host),
                _ => None,
            };
            let in_cluster = pos & (cs - 1);
            // Too fragmented for one request's worth of direct I/O, or not
            // a plain data cluster: the rest goes through qcow2.
            direct = host.is_some_and(|h| extents.push(h + in_cluster, n as u64));
        }
        match fd {
            Some(fd) if direct => Ok(Route::Direct(fd)),
            _ => Ok(Route::SYNC),
        }
    }

    pub(super) fn direct_flush_fd(&self) -> Option<RawFd> {
        // Metadata is written through the same file, synchronously, before
        // anything that depends on it: an fdatasync of it is the flush.
        if self.read_only {
            None
        } else {
            self.file.raw_fd()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::qcow2::create;
    use crate::disk::Extent;

    #[test]
    fn routes_allocated_clusters_directly_and_the_rest_through_qcow2() {
        let dir = vmm_sys_util::tempdir::TempDir::new_with_prefix("/tmp/stratus-route-").unwrap();
        let path = dir.as_path().join("d.qcow2");
        create(&path, 1 << 20, None).unwrap();
        let mut disk = Qcow2Disk::open(&path, false).unwrap();
        let cs = disk.cluster_size();
        let mut e = Extents::default();
        // Unallocated: reads (zeros here) and writes (allocation) need qcow2.
        assert_eq!(
            disk.route(0, 512, Access::Read, &mut e).unwrap(),
            Route::SYNC
        );
        assert_eq!(
            disk.route(0, 512, Access::Write, &mut e).unwrap(),
            Route::SYNC
        );
        // Allocate clusters 0, 1 and 3 (qcow2 puts the L2 table between
        // the first two in the file).
        disk.write_at(&vec![1; 2 * cs as usize], 0).unwrap();
        disk.write_at(&[3; 512], 3 * cs).unwrap();
        let host = |disk: &mut Qcow2Disk, pos| match disk.lookup(pos).unwrap() {
            Mapping::Data { host, .. } => host,
            m => panic!("{m:?}"),
        };
        let (h0, h1) = (host(&mut disk, 0), host(&mut disk, cs));
        let Route::Direct(_) = disk.route(100, cs + 200, Access::Write, &mut e).unwrap() else {
            panic!("allocated clusters should route directly");
        };
        let want = [
            Extent {
                file_offset: h0 + 100,
                len: cs - 100,
            },
            Extent {
                file_offset: h1,
                len: 300,
            },
        ];
        let want = if h1 == h0 + cs {
            vec![Extent {
                file_offset: h0 + 100,
                len: cs + 200,
            }]
        } else {
            want.to_vec()
        };
        assert_eq!(e.as_slice(), &want[..]);
        // Cluster 2 is a hole between them.
        assert_eq!(
            disk.route(cs, 2 * cs, Access::Read, &mut e).unwrap(),
            Route::SYNC
        );
        assert!(disk.route(u64::MAX - 10, 20, Access::Read, &mut e).is_err());
        assert!(disk.flush_fd().is_some());
        drop(disk);
        let mut ro = Qcow2Disk::open(&path, true).unwrap();
        assert!(matches!(
            ro.route(0, 512, Access::Read, &mut e),
            Ok(Route::Direct(_))
        ));
        assert!(matches!(
            ro.route(0, 512, Access::Write, &mut e),
            Err(DiskError::ReadOnly)
        ));
        assert!(ro.flush_fd().is_none());
    }

    #[test]
    fn only_writes_replacing_shared_or_compressed_clusters_free_any() {
        let data = |copied| Mapping::Data {
            host: 0x10000,
            copied,
        };
        let zero = |host, copied| Mapping::Zero { host, copied };
        assert!(!write_frees(Mapping::Unallocated));
        assert!(!write_frees(data(true)));
        assert!(write_frees(data(false)));
        assert!(!write_frees(zero(0, false)));
        assert!(!write_frees(zero(0x10000, true)));
        assert!(write_frees(zero(0x10000, false)));
        assert!(write_frees(Mapping::Compressed {
            host: 0x10200,
            sectors_len: 512
        }));
    }
}
