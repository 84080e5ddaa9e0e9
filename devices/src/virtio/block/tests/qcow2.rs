//! qcow2 overlays through the block device: writes that allocate take the
//! synchronous path, writes and reads on allocated clusters go direct, and
//! the image stays one `qemu-img check` accepts.

use std::process::Command;

use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::tempdir::TempDir;

use super::*;
use crate::disk::{ImageFormat, Qcow2Disk};
use crate::test_utils::have_qemu_img;

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "qemu-img {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

const CLUSTER: u64 = 64 * 1024;

/// A qcow2 overlay in `dir` over a raw base holding `disk_bytes()`, and a
/// device over it with `engine`; returns the overlay's path too.
fn overlay_device(dir: &TempDir, engine: IoEngine) -> (std::path::PathBuf, Block) {
    let base = dir.as_path().join("base.raw");
    let overlay = dir.as_path().join("overlay.qcow2");
    std::fs::write(&base, disk_bytes()).unwrap();
    Qcow2Disk::create_overlay(&overlay, &base, ImageFormat::Raw).unwrap();
    let dev = Block::open(&overlay, Some(ImageFormat::Qcow2), options(false, engine)).unwrap();
    (overlay, dev)
}

/// Writes `data` at `sector` through the device and into `want`.
fn write(h: &mut Harness, want: &mut [u8], sector: u64, data: &[u8]) {
    h.mem.write_slice(data, GuestAddress(0x10_0000)).unwrap();
    let (status, _) = h.request(T_OUT, sector, &[(0x10_0000, data.len() as u32, R)]);
    assert_eq!(status, status::OK, "write at sector {sector}");
    let at = sector as usize * 512;
    want[at..at + data.len()].copy_from_slice(data);
}

#[test]
fn overlay_writes_take_the_right_path_and_keep_the_image_valid() {
    if !have_qemu_img() {
        return;
    }
    for engine in engines() {
        let dir = TempDir::new_with_prefix("/tmp/stratus-blk-qcow2-").unwrap();
        let (overlay, dev) = overlay_device(&dir, engine);
        let mut want = disk_bytes();
        let mem = memory();
        let mut h = Harness::with_device(&mem, dev, 256, false, true);
        let sync_path = |h: &Harness| h.dev.metrics().sync_path_requests;

        // A first write into cluster 0 allocates it (copy-on-write from
        // the base): synchronous.
        write(&mut h, &mut want, 8, &[0x11; 4096]);
        assert_eq!(sync_path(&h), 1, "{engine}");

        // Eight writes into the now allocated cluster, all at once: direct.
        for i in 0..8u64 {
            let buf = 0x20_0000 + i * 0x1000;
            let data = vec![0x20 + i as u8; 512];
            mem.write_slice(&data, GuestAddress(buf)).unwrap();
            let at = (16 + i as usize) * 512;
            want[at..at + 512].copy_from_slice(&data);
            h.post(i, T_OUT, 16 + i, &[(buf, 512, R)]);
        }
        h.dev.process_queue();
        h.dev.complete_pending();
        assert_eq!(h.read_mem(STATUS, 8), [status::OK; 8], "{engine}");
        assert_eq!(sync_path(&h), 1, "{engine}");
        if engine == IoEngine::IoUring {
            assert_eq!(h.dev.metrics().inflight_high_water, 8);
        }

        // Reads inside the allocated cluster are direct; reads reaching
        // the unallocated next cluster come from the base, synchronously.
        let (status, _) = h.request(T_IN, 0, &[(0x30_0000, 16 * 1024, W)]);
        assert_eq!(status, status::OK);
        assert!(
            h.read_mem(0x30_0000, 16 * 1024) == want[..16 * 1024],
            "{engine}"
        );
        assert_eq!(sync_path(&h), 1, "{engine}");
        let (status, _) = h.request(T_IN, 100, &[(0x30_0000, 64 * 1024, W)]);
        assert_eq!(status, status::OK);
        assert!(
            h.read_mem(0x30_0000, 64 * 1024) == want[51_200..51_200 + 65_536],
            "{engine}"
        );
        assert_eq!(sync_path(&h), 2, "{engine}");

        // A write spanning an allocated and an unallocated cluster is one
        // synchronous request; afterwards both are direct.
        let span = CLUSTER / 512 - 4;
        write(&mut h, &mut want, span, &[0x33; 4096]);
        assert_eq!(sync_path(&h), 3, "{engine}");
        write(&mut h, &mut want, span, &[0x34; 4096]);
        assert_eq!(sync_path(&h), 3, "{engine}");

        // Write-zeroes over a whole allocated cluster, then a write into
        // it: both synchronous (zero flag, then allocation).
        mem.write_obj(0u64.to_le(), GuestAddress(DATA)).unwrap();
        mem.write_obj(((CLUSTER / 512) as u32).to_le(), GuestAddress(DATA + 8))
            .unwrap();
        mem.write_obj(0u32, GuestAddress(DATA + 12)).unwrap();
        assert_eq!(h.request(T_WRITE_ZEROES, 0, &[(DATA, 16, R)]).0, status::OK);
        want[..CLUSTER as usize].fill(0);
        write(&mut h, &mut want, 1, &[0x44; 1024]);
        assert_eq!(sync_path(&h), 5, "{engine}");

        // Flush: fdatasync of the overlay, off the sync path.
        assert_eq!(h.request(T_FLUSH, 0, &[]).0, status::OK);
        assert_eq!(sync_path(&h), 5, "{engine}");
        assert!(h.read_disk(DISK_LEN) == want, "{engine}: read back differs");
        drop(h);

        qemu_img(&["check", overlay.to_str().unwrap()]);
        let expected = dir.as_path().join("expected.raw");
        std::fs::write(&expected, &want).unwrap();
        qemu_img(&[
            "compare",
            "-f",
            "raw",
            "-F",
            "qcow2",
            expected.to_str().unwrap(),
            overlay.to_str().unwrap(),
        ]);
        let mut disk = Qcow2Disk::open(&overlay, true).unwrap();
        assert!(
            backend_bytes(&mut disk) == want,
            "{engine}: reopened image differs"
        );
        assert!(
            std::fs::read(dir.as_path().join("base.raw")).unwrap() == disk_bytes(),
            "{engine}: base changed"
        );
    }
}

/// An overlay over `disk_bytes()` on the sync engine holding completions
/// back, with cluster 0 already allocated.
fn held_overlay(dir: &TempDir) -> Block {
    let base = dir.as_path().join("base.raw");
    let overlay = dir.as_path().join("overlay.qcow2");
    std::fs::write(&base, disk_bytes()).unwrap();
    Qcow2Disk::create_overlay(&overlay, &base, ImageFormat::Raw).unwrap();
    let mut disk = Qcow2Disk::open(&overlay, false).unwrap();
    disk.write_at(&[0x77; 512], 0).unwrap();
    drop(disk);
    let mut dev = Block::open(
        &overlay,
        Some(ImageFormat::Qcow2),
        options(false, IoEngine::Sync),
    )
    .unwrap();
    hold(&mut dev, true);
    dev
}

#[test]
fn allocating_writes_run_alongside_direct_io_unless_they_overlap() {
    let dir = TempDir::new_with_prefix("/tmp/stratus-blk-qcow2-").unwrap();
    let mem = memory();
    let mut h = Harness::with_device(&mem, held_overlay(&dir), QSIZE, false, true);
    let c = CLUSTER / 512;
    // Direct, into the end of the allocated cluster 0; its completion is
    // held.
    let w1 = h.post(0, T_OUT, c - 8, &[(DATA, 4096, R)]);
    // Allocates cluster 2: no overlap, frees nothing, so it does not wait.
    let w2 = h.post(1, T_OUT, 2 * c, &[(DATA, 4096, R)]);
    h.dev.process_queue();
    assert_eq!(held(&h.dev), 1);
    assert_eq!(h.used_idx(), 1);
    assert_eq!(h.used(0).0, u32::from(w2));
    assert_eq!(h.dev.metrics().sync_path_requests, 1);
    // Spans cluster 0 and the unallocated cluster 1, overlapping w1: the
    // synchronous write waits for w1.
    let w3 = h.post(2, T_OUT, c - 16, &[(DATA, 16 * 1024, R)]);
    h.dev.process_queue();
    assert_eq!(h.used_idx(), 3);
    assert_eq!(h.used(1).0, u32::from(w1));
    assert_eq!(h.used(2).0, u32::from(w3));
    assert_eq!(h.read_mem(STATUS, 3), [status::OK; 3]);
    // The same for a read from the backing file that overlaps a direct
    // write in flight.
    // (cluster 2 was allocated by w2, cluster 3 is not).
    let w4 = h.post(3, T_OUT, 3 * c - 8, &[(DATA, 4096, R)]);
    let r = h.post(4, T_IN, 3 * c - 8, &[(DATA + 0x10_0000, 8192, W)]);
    h.dev.process_queue();
    assert_eq!(h.used_idx(), 5);
    assert_eq!(h.used(3).0, u32::from(w4));
    assert_eq!(h.used(4).0, u32::from(r));
    assert_eq!(h.dev.metrics().sync_path_requests, 3);
}

#[test]
fn writes_that_free_clusters_wait_for_all_direct_io() {
    if !have_qemu_img() {
        return;
    }
    // Every cluster of this image is compressed: overwriting one frees it.
    let dir = TempDir::new_with_prefix("/tmp/stratus-blk-qcow2-").unwrap();
    let raw = dir.as_path().join("src.raw");
    let img = dir.as_path().join("compressed.qcow2");
    std::fs::write(&raw, disk_bytes()).unwrap();
    qemu_img(&[
        "convert",
        "-c",
        "-f",
        "raw",
        "-O",
        "qcow2",
        raw.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    let mut dev = Block::open(
        &img,
        Some(ImageFormat::Qcow2),
        options(false, IoEngine::Sync),
    )
    .unwrap();
    hold(&mut dev, true);
    let mem = memory();
    let mut h = Harness::with_device(&mem, dev, QSIZE, false, true);
    let c = CLUSTER / 512;
    let mut want = disk_bytes();
    // Copy-on-write of compressed cluster 0: synchronous.
    write(&mut h, &mut want, 0, &[0x55; 4096]);
    // Now direct (held), far from what comes next.
    mem.write_slice(&[0x66; 4096], GuestAddress(DATA)).unwrap();
    want[8192..12_288].fill(0x66);
    let direct = h.post(0, T_OUT, 16, &[(DATA, 4096, R)]);
    // Replaces compressed cluster 3: frees, so the direct write finishes
    // first even though the ranges are apart.
    mem.write_slice(&[0x77; 512], GuestAddress(DATA + 0x1000))
        .unwrap();
    want[(3 * c * 512) as usize..(3 * c * 512) as usize + 512].fill(0x77);
    let freeing = h.post(1, T_OUT, 3 * c, &[(DATA + 0x1000, 512, R)]);
    let used = h.used_idx();
    h.dev.process_queue();
    assert_eq!(h.used_idx(), used + 2);
    assert_eq!(h.used(used).0, u32::from(direct));
    assert_eq!(h.used(used + 1).0, u32::from(freeing));
    hold(&mut h.dev, false);
    assert!(h.read_disk(DISK_LEN) == want);
    drop(h);
    qemu_img(&["check", img.to_str().unwrap()]);
}

/// Reads that span clusters laid out in reverse in the image file (so each
/// read is several extents, one iovec run each), many in flight at once:
/// each segment gets exactly its guest-visible bytes and nothing outside
/// the segments changes.
#[test]
fn concurrent_multi_extent_reads_stay_inside_their_buffers() {
    if !have_qemu_img() {
        return;
    }
    const AREA: u64 = 0x10_0000;
    const AREA_LEN: usize = 0x28_0000;
    const CANARY: u8 = 0x5a;
    for engine in engines() {
        let dir = TempDir::new_with_prefix("/tmp/stratus-blk-qcow2-").unwrap();
        let (_, dev) = overlay_device(&dir, engine);
        let mut want = disk_bytes();
        let mem = memory();
        let mut h = Harness::with_device(&mem, dev, 256, false, true);
        // Allocate every cluster, last first: guest-adjacent clusters end
        // up in descending file order.
        let clusters = DISK_LEN as u64 / CLUSTER;
        for c in (0..clusters).rev() {
            let sector = c * CLUSTER / 512 + 3;
            write(&mut h, &mut want, sector, &[c as u8 ^ 0xc3; 512]);
        }
        let before = h.dev.metrics().sync_path_requests;
        mem.write_slice(&vec![CANARY; AREA_LEN], GuestAddress(AREA))
            .unwrap();
        let mut expected: Vec<(u64, std::ops::Range<usize>)> = Vec::new();
        let mut next = AREA;
        const N: u64 = 12;
        for i in 0..N {
            // 40 to 120 KiB from an odd sector: two or three clusters.
            let sector = (i * 211 + 17) % (DISK_LEN as u64 / 512 - 256);
            let mut disk_at = sector as usize * 512;
            let mut bufs = Vec::new();
            for s in 0..(1 + i % 3) {
                let len = 40 * 1024 + 512 * ((i * 7 + s * 13) % 64) as usize;
                bufs.push((next, len as u32, W));
                expected.push((next, disk_at..disk_at + len));
                disk_at += len;
                next += len as u64 + 4096 + 64;
            }
            h.post(i, T_IN, sector, &bufs);
        }
        assert!(next < AREA + AREA_LEN as u64, "{next:#x}");
        h.dev.process_queue();
        h.dev.complete_pending();
        for i in 0..N {
            assert_eq!(h.read_mem(STATUS + i, 1), [status::OK], "{engine}: {i}");
        }
        assert_eq!(
            h.dev.metrics().sync_path_requests,
            before,
            "{engine}: reads of allocated clusters go direct"
        );
        let mut area = vec![0u8; AREA_LEN];
        mem.read_slice(&mut area, GuestAddress(AREA)).unwrap();
        let mut inside = vec![false; AREA_LEN];
        for (addr, range) in &expected {
            let at = (addr - AREA) as usize;
            assert!(
                area[at..at + range.len()] == want[range.clone()],
                "{engine}: segment at {addr:#x}"
            );
            inside[at..at + range.len()].fill(true);
        }
        let stray = (0..AREA_LEN).find(|&k| !inside[k] && area[k] != CANARY);
        assert_eq!(
            stray, None,
            "{engine}: a byte outside every segment changed"
        );
    }
}
