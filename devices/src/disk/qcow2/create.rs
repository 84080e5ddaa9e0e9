//! Creating new qcow2 v3 images, optionally as overlays of a backing file.

use std::fs::OpenOptions;
use std::path::Path;

use super::header::Header;
use super::{Qcow2Error, MAX_L1_BYTES};
use crate::disk::{ImageFormat, Storage};

/// Cluster size of created images (QEMU's default).
const CLUSTER_BITS: u32 = 16;

/// Creates a qcow2 v3 image of `size` bytes at `path`; fails if the file
/// exists. With `backing`, unallocated clusters read from that file
/// (name as stored in the header, and its format).
pub fn create(
    path: &Path,
    size: u64,
    backing: Option<(&str, ImageFormat)>,
) -> Result<(), Qcow2Error> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    let result = write_image(&mut file, size, backing);
    if result.is_err() {
        // Do not leave a half-written image behind.
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Writes a new, empty image into `file` (which should be empty).
///
/// Layout: header and backing name in cluster 0, refcount table in
/// cluster 1, the first refcount block in cluster 2, the L1 table after.
pub(super) fn write_image(
    file: &mut dyn Storage,
    size: u64,
    backing: Option<(&str, ImageFormat)>,
) -> Result<(), Qcow2Error> {
    let cs = 1u64 << CLUSTER_BITS;
    let per_l1 = cs * (cs / 8);
    let l1_size = size.div_ceil(per_l1);
    if l1_size * 8 > MAX_L1_BYTES {
        return Err(Qcow2Error::TooLarge {
            what: "virtual size",
            value: size,
        });
    }
    let l1_clusters = (l1_size * 8).div_ceil(cs).max(1);
    let total_clusters = 3 + l1_clusters;
    if let Some((name, _)) = backing {
        if name.is_empty() || name.len() > 1023 || name.contains('\0') {
            return Err(Qcow2Error::InvalidHeader("backing file name"));
        }
    }

    let header = Header {
        version: 3,
        backing_file: backing.map(|(n, _)| n.to_owned()),
        backing_format: backing.map(|(_, f)| f),
        cluster_bits: CLUSTER_BITS,
        size,
        l1_size: u32::try_from(l1_size).map_err(|_| Qcow2Error::InvalidHeader("size"))?,
        l1_table_offset: 3 * cs,
        refcount_table_offset: cs,
        refcount_table_clusters: 1,
        nb_snapshots: 0,
        incompatible_features: 0,
        autoclear_features: 0,
        refcount_order: 4,
        header_length: super::header::V3_HEADER_LEN,
    };
    let mut cluster = header.to_bytes();
    cluster.resize(cs as usize, 0);
    file.write_all_at(&cluster, 0)?;

    cluster.fill(0);
    cluster[..8].copy_from_slice(&(2 * cs).to_be_bytes());
    file.write_all_at(&cluster, cs)?;

    // 16-bit refcounts: every metadata cluster is used once.
    cluster.fill(0);
    for i in 0..total_clusters as usize {
        cluster[i * 2..i * 2 + 2].copy_from_slice(&1u16.to_be_bytes());
    }
    file.write_all_at(&cluster, 2 * cs)?;

    cluster.fill(0);
    for i in 0..l1_clusters {
        file.write_all_at(&cluster, (3 + i) * cs)?;
    }
    file.sync_data()?;
    Ok(())
}
