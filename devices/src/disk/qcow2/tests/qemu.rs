//! Round trips against `qemu-img`: images QEMU made are read correctly,
//! and images we wrote pass `qemu-img check` and compare equal to the data
//! we expect. Without qemu-img the tests print why they skip, unless `CI`
//! is set, where a missing qemu-img is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

use vmm_sys_util::tempdir::TempDir;

use super::pattern;
use crate::disk::qcow2::{Qcow2Disk, Qcow2Error};
use crate::disk::{open_disk, DiskBackend, ImageFormat};
use crate::test_utils::have_qemu_img;

fn qemu_img(args: &[&str]) -> String {
    let out = Command::new("qemu-img").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "qemu-img {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Dir(TempDir);

impl Dir {
    fn new() -> Self {
        Self(TempDir::new_with_prefix("/tmp/stratus-qcow2-").unwrap())
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.as_path().join(name)
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `qemu-img check` passes and the image reads back exactly as `expected`.
fn check_and_compare(image: &Path, expected: &[u8], dir: &Dir) {
    qemu_img(&["check", s(image)]);
    let raw = dir.path("expected.raw");
    std::fs::write(&raw, expected).unwrap();
    qemu_img(&["compare", "-f", "raw", "-F", "qcow2", s(&raw), s(image)]);
}

/// Writes `len` bytes of fresh data at each offset through `disk` and into
/// the mirror `expected`.
fn write_all(disk: &mut dyn DiskBackend, expected: &mut [u8], writes: &[(u64, usize)]) {
    for (i, &(offset, len)) in writes.iter().enumerate() {
        let data = pattern(i as u64 + 100, len);
        disk.write_at(&data, offset).unwrap();
        expected[offset as usize..offset as usize + len].copy_from_slice(&data);
    }
}

fn read_all(disk: &mut dyn DiskBackend) -> Vec<u8> {
    let mut buf = vec![0u8; disk.size() as usize];
    // Odd-sized reads cross cluster boundaries.
    for (i, chunk) in buf.chunks_mut(12_345).enumerate() {
        disk.read_at(chunk, i as u64 * 12_345).unwrap();
    }
    buf
}

const MIB: usize = 1 << 20;

/// Writes scattered over a small disk: partial clusters, cluster-crossing
/// writes, rewrites of allocated clusters, the last byte.
fn scattered(size: usize) -> Vec<(u64, usize)> {
    vec![
        (0, 512),
        (4096 - 7, 100),
        (65_536 * 3 + 1000, 200_000),
        (1000, 3000),
        (size as u64 - 1, 1),
        (size as u64 / 2, 70_000),
        (65_536 * 3 + 500, 10),
    ]
}

#[test]
fn reads_images_made_by_qemu_including_compressed() {
    if !have_qemu_img() {
        return;
    }
    let dir = Dir::new();
    let raw = dir.path("src.raw");
    let mut data = pattern(1, 4 * MIB);
    data[MIB..2 * MIB].fill(0); // leave a hole for zero/unallocated clusters
    data[3 * MIB..3 * MIB + 100_000].fill(0x5a); // compresses well
    std::fs::write(&raw, &data).unwrap();
    for (name, extra) in [
        ("plain.qcow2", vec!["-o", "cluster_size=4096"]),
        ("compressed.qcow2", vec!["-c"]),
        ("v2.qcow2", vec!["-o", "compat=0.10"]),
        ("rc1.qcow2", vec!["-o", "refcount_bits=1,cluster_size=512"]),
    ] {
        let img = dir.path(name);
        let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
        args.extend(extra);
        args.extend([s(&raw), s(&img)]);
        qemu_img(&args);
        for read_only in [true, false] {
            let mut disk = Qcow2Disk::open(&img, read_only).unwrap();
            assert_eq!(disk.size(), data.len() as u64);
            assert!(read_all(&mut disk) == data, "{name} read back differently");
        }
    }
}

#[test]
fn writes_keep_qemu_images_valid() {
    if !have_qemu_img() {
        return;
    }
    let dir = Dir::new();
    let size = 8 * MIB;
    for (i, opts) in [
        "cluster_size=65536",
        "cluster_size=4096,refcount_bits=8",
        "cluster_size=512,refcount_bits=1",
        "cluster_size=2097152",
        "compat=0.10",
    ]
    .iter()
    .enumerate()
    {
        let img = dir.path(&format!("w{i}.qcow2"));
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            opts,
            s(&img),
            &size.to_string(),
        ]);
        let mut expected = vec![0u8; size];
        {
            let mut disk = Qcow2Disk::open(&img, false).unwrap();
            write_all(&mut disk, &mut expected, &scattered(size));
            disk.flush().unwrap();
            assert!(read_all(&mut disk) == expected, "{opts}");
        }
        check_and_compare(&img, &expected, &dir);
        // Reopening sees the same data.
        let mut disk = Qcow2Disk::open(&img, true).unwrap();
        assert!(read_all(&mut disk) == expected, "{opts} after reopen");
    }
}

#[test]
fn refcount_table_grows_when_the_image_does() {
    if !have_qemu_img() {
        return;
    }
    // 512-byte clusters with 64-bit refcounts: one refcount block covers
    // 64 clusters and the initial table only a few MiB of file.
    let dir = Dir::new();
    let img = dir.path("grow.qcow2");
    let size = 6 * MIB;
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=512,refcount_bits=64",
        s(&img),
        &size.to_string(),
    ]);
    let mut expected = vec![0u8; size];
    {
        let mut disk = Qcow2Disk::open(&img, false).unwrap();
        let writes: Vec<(u64, usize)> = (0..size / 65_536)
            .map(|i| (i as u64 * 65_536, 65_536))
            .collect();
        write_all(&mut disk, &mut expected, &writes);
        disk.flush().unwrap();
    }
    let info = qemu_img(&["info", "--output=json", s(&img)]);
    assert!(info.contains("\"format\": \"qcow2\""), "{info}");
    check_and_compare(&img, &expected, &dir);
}

#[test]
fn overwriting_compressed_clusters_frees_them() {
    if !have_qemu_img() {
        return;
    }
    let dir = Dir::new();
    let raw = dir.path("src.raw");
    let mut expected = pattern(2, 2 * MIB);
    expected[..MIB].fill(7);
    std::fs::write(&raw, &expected).unwrap();
    let img = dir.path("c.qcow2");
    qemu_img(&[
        "convert",
        "-c",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-o",
        "cluster_size=4096",
        s(&raw),
        s(&img),
    ]);
    {
        let mut disk = Qcow2Disk::open(&img, false).unwrap();
        write_all(
            &mut disk,
            &mut expected,
            &[(100, 10), (4096 * 5, 4096), (MIB as u64 - 3, 9)],
        );
        assert!(read_all(&mut disk) == expected);
    }
    check_and_compare(&img, &expected, &dir);
}

#[test]
fn zeroing_and_discarding() {
    if !have_qemu_img() {
        return;
    }
    let dir = Dir::new();
    let raw = dir.path("src.raw");
    let mut expected = pattern(3, 4 * MIB);
    std::fs::write(&raw, &expected).unwrap();
    let img = dir.path("z.qcow2");
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", s(&raw), s(&img)]);
    {
        let mut disk = Qcow2Disk::open(&img, false).unwrap();
        disk.write_zeroes(1000, 200_000).unwrap();
        expected[1000..201_000].fill(0);
        disk.discard(MIB as u64, 2 * 65_536).unwrap();
        expected[MIB..MIB + 2 * 65_536].fill(0);
        // A discard of part of a cluster is only a hint; it changes nothing.
        disk.discard(3 * MIB as u64 + 10, 100).unwrap();
        // Freed clusters are reused.
        write_all(&mut disk, &mut expected, &[(2 * MIB as u64 + 5, 100_000)]);
        assert!(read_all(&mut disk) == expected);
    }
    check_and_compare(&img, &expected, &dir);
}

#[test]
fn overlays_over_raw_and_qcow2_bases() {
    if !have_qemu_img() {
        return;
    }
    let dir = Dir::new();
    let size = 3 * MIB;
    let base_data = pattern(4, size);
    let raw_base = dir.path("base.raw");
    std::fs::write(&raw_base, &base_data).unwrap();
    let qcow_base = dir.path("base.qcow2");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        s(&raw_base),
        s(&qcow_base),
    ]);
    let base_before = std::fs::read(&qcow_base).unwrap();

    for (name, base, format) in [
        ("over-raw.qcow2", &raw_base, ImageFormat::Raw),
        ("over-qcow2.qcow2", &qcow_base, ImageFormat::Qcow2),
    ] {
        let overlay = dir.path(name);
        Qcow2Disk::create_overlay(&overlay, base, format).unwrap();
        let info = qemu_img(&["info", "--output=json", s(&overlay)]);
        assert!(
            info.contains(&format!("\"backing-filename\": \"{}\"", s(base))),
            "{info}"
        );
        let fmt = format.as_str();
        assert!(
            info.contains(&format!("\"backing-filename-format\": \"{fmt}\"")),
            "{info}"
        );

        let mut expected = base_data.clone();
        {
            let mut disk = open_disk(&overlay, None, false).unwrap();
            assert_eq!(disk.size(), size as u64);
            assert!(read_all(disk.as_mut()) == expected);
            write_all(disk.as_mut(), &mut expected, &scattered(size));
            disk.write_zeroes(2 * MIB as u64, 65_536).unwrap();
            expected[2 * MIB..2 * MIB + 65_536].fill(0);
            assert!(read_all(disk.as_mut()) == expected);
            disk.flush().unwrap();
        }
        check_and_compare(&overlay, &expected, &dir);
        // The base is untouched.
        assert!(std::fs::read(&raw_base).unwrap() == base_data);
        assert!(std::fs::read(&qcow_base).unwrap() == base_before);
    }
    // An overlay refuses to be created over an existing file.
    assert!(matches!(
        Qcow2Disk::create_overlay(&dir.path("over-raw.qcow2"), &raw_base, ImageFormat::Raw),
        Err(Qcow2Error::Io(_))
    ));
}

#[test]
fn overlay_of_an_overlay_and_relative_backing_names() {
    if !have_qemu_img() {
        return;
    }
    let dir = Dir::new();
    let base_data = pattern(5, MIB);
    std::fs::write(dir.path("base.raw"), &base_data).unwrap();
    // Relative names resolve from the overlay's directory.
    crate::disk::qcow2::create(
        &dir.path("mid.qcow2"),
        MIB as u64,
        Some(("base.raw", ImageFormat::Raw)),
    )
    .unwrap();
    let mut expected = base_data.clone();
    {
        let mut mid = Qcow2Disk::open(&dir.path("mid.qcow2"), false).unwrap();
        write_all(&mut mid, &mut expected, &[(70_000, 5000)]);
    }
    Qcow2Disk::create_overlay(
        &dir.path("top.qcow2"),
        &dir.path("mid.qcow2"),
        ImageFormat::Qcow2,
    )
    .unwrap();
    let mut top = Qcow2Disk::open(&dir.path("top.qcow2"), false).unwrap();
    assert!(read_all(&mut top) == expected);
    write_all(&mut top, &mut expected, &[(0, 100)]);
    drop(top);
    check_and_compare(&dir.path("top.qcow2"), &expected, &dir);
    qemu_img(&["check", s(&dir.path("mid.qcow2"))]);
}

#[test]
fn created_images_are_valid() {
    if !have_qemu_img() {
        return;
    }
    let dir = Dir::new();
    let img = dir.path("new.qcow2");
    crate::disk::qcow2::create(&img, 10 * MIB as u64 + 512, None).unwrap();
    let info = qemu_img(&["info", "--output=json", s(&img)]);
    assert!(info.contains("\"virtual-size\": 10486272"), "{info}");
    let mut expected = vec![0u8; 10 * MIB + 512];
    {
        let mut disk = Qcow2Disk::open(&img, false).unwrap();
        let writes = scattered(expected.len());
        write_all(&mut disk, &mut expected, &writes);
    }
    check_and_compare(&img, &expected, &dir);
}
