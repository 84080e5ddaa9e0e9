//! Malformed and hostile images, built in memory: every one must give a
//! typed error (or read as something), never a panic or a huge allocation.

use super::pattern;
use crate::disk::qcow2::create::write_image;
use crate::disk::qcow2::{Qcow2Disk, Qcow2Error};
use crate::disk::{DiskBackend, DiskError, ImageFormat, MemStorage, Storage};

const CS: u64 = 65_536;

/// A fresh, valid 4 MiB image with 64 KiB clusters.
fn image() -> MemStorage {
    let mut s = MemStorage::new(Vec::new(), 64 << 20);
    write_image(&mut s, 4 << 20, None).unwrap();
    s
}

fn put_u32(s: &mut MemStorage, off: u64, v: u32) {
    s.write_all_at(&v.to_be_bytes(), off).unwrap();
}

fn put_u64(s: &mut MemStorage, off: u64, v: u64) {
    s.write_all_at(&v.to_be_bytes(), off).unwrap();
}

fn open(s: MemStorage, read_only: bool) -> Result<Qcow2Disk, Qcow2Error> {
    Qcow2Disk::from_storage(Box::new(s), read_only)
}

#[test]
fn valid_image_round_trips_in_memory() {
    let mut d = open(image(), false).unwrap();
    let data = pattern(9, 200_000);
    d.write_at(&data, 12_345).unwrap();
    let mut back = vec![0u8; data.len()];
    d.read_at(&mut back, 12_345).unwrap();
    assert_eq!(back, data);
    let mut end = [1u8; 2];
    assert!(matches!(
        d.read_at(&mut end, (4 << 20) - 1),
        Err(DiskError::OutOfRange { .. })
    ));
}

#[test]
fn header_fields_are_checked() {
    type Case = (fn(&mut MemStorage), fn(&Qcow2Error) -> bool);
    let cases: Vec<Case> = vec![
        (
            |s| put_u32(s, 0, 0x1234_5678),
            |e| matches!(e, Qcow2Error::BadMagic),
        ),
        (
            |s| put_u32(s, 4, 4),
            |e| matches!(e, Qcow2Error::UnsupportedVersion(4)),
        ),
        (
            |s| put_u32(s, 4, 1),
            |e| matches!(e, Qcow2Error::UnsupportedVersion(1)),
        ),
        (
            |s| put_u32(s, 20, 8),
            |e| matches!(e, Qcow2Error::InvalidClusterBits(8)),
        ),
        (
            |s| put_u32(s, 20, 40),
            |e| matches!(e, Qcow2Error::InvalidClusterBits(40)),
        ),
        (
            |s| put_u32(s, 32, 1),
            |e| matches!(e, Qcow2Error::Encrypted),
        ),
        (
            |s| put_u64(s, 72, 1 << 5),
            |e| matches!(e, Qcow2Error::UnknownIncompatibleFeatures(32)),
        ),
        (
            |s| put_u64(s, 72, 1 << 2),
            |e| matches!(e, Qcow2Error::ExternalDataFile),
        ),
        (
            |s| put_u64(s, 72, 1 << 4),
            |e| matches!(e, Qcow2Error::ExtendedL2),
        ),
        (
            |s| put_u32(s, 96, 7),
            |e| matches!(e, Qcow2Error::InvalidRefcountOrder(7)),
        ),
        (
            |s| put_u32(s, 100, 50),
            |e| matches!(e, Qcow2Error::InvalidHeader(_)),
        ),
        (
            |s| put_u32(s, 100, 1 << 30),
            |e| matches!(e, Qcow2Error::InvalidHeader(_)),
        ),
        (
            |s| {
                put_u64(s, 72, 1 << 3);
                put_u32(s, 100, 112);
                s.write_all_at(&[1], 104).unwrap();
            },
            |e| matches!(e, Qcow2Error::UnsupportedCompression(1)),
        ),
        // Virtual size needing more L1 entries than the table has.
        (
            |s| put_u64(s, 24, 1 << 62),
            |e| matches!(e, Qcow2Error::InvalidHeader(_)),
        ),
        (
            |s| put_u32(s, 36, u32::MAX),
            |e| matches!(e, Qcow2Error::TooLarge { .. }),
        ),
        (
            |s| put_u64(s, 40, 1 << 40),
            |e| matches!(e, Qcow2Error::BadOffset { .. }),
        ),
        (
            |s| put_u64(s, 40, CS + 8),
            |e| matches!(e, Qcow2Error::BadOffset { .. }),
        ),
        (
            |s| put_u64(s, 40, u64::MAX - 7),
            |e| matches!(e, Qcow2Error::BadOffset { .. }),
        ),
        // Backing file name outside the first cluster or too long.
        (
            |s| {
                put_u64(s, 8, CS - 4);
                put_u32(s, 16, 100);
            },
            |e| matches!(e, Qcow2Error::InvalidHeader(_)),
        ),
        (
            |s| {
                put_u64(s, 8, 512);
                put_u32(s, 16, 5000);
            },
            |e| matches!(e, Qcow2Error::InvalidHeader(_)),
        ),
        // A header extension longer than the cluster.
        (
            |s| {
                put_u32(s, 104, 0x1234);
                put_u32(s, 108, 0xffff_fff0);
            },
            |e| matches!(e, Qcow2Error::InvalidHeader(_)),
        ),
        (
            |s| {
                put_u32(s, 104, 0x0537_be77);
                put_u32(s, 108, 0);
            },
            |e| matches!(e, Qcow2Error::Encrypted),
        ),
    ];
    for (i, (corrupt, expect)) in cases.into_iter().enumerate() {
        let mut s = image();
        corrupt(&mut s);
        for read_only in [true, false] {
            match open(s.clone(), read_only) {
                Err(e) => assert!(expect(&e), "case {i}: unexpected error {e}"),
                Ok(_) => panic!("case {i} opened (read_only={read_only})"),
            }
        }
    }
}

#[test]
fn short_files_and_empty_files() {
    assert!(open(MemStorage::new(Vec::new(), 0), true).is_err());
    let s = image();
    for len in [3, 24, 50, 103, 1000, CS as usize + 5] {
        let cut = MemStorage::new(s.data()[..len].to_vec(), 1 << 20);
        assert!(open(cut, true).is_err(), "len {len}");
    }
}

#[test]
fn writable_opens_refuse_dirty_corrupt_and_snapshots() {
    for (field, value, check) in [
        (
            72,
            1u64,
            (|e| matches!(e, Qcow2Error::Dirty)) as fn(&Qcow2Error) -> bool,
        ),
        (72, 2, |e| matches!(e, Qcow2Error::MarkedCorrupt)),
    ] {
        let mut s = image();
        put_u64(&mut s, field, value);
        assert!(check(&open(s.clone(), false).unwrap_err()));
        open(s, true).unwrap();
    }
    let mut s = image();
    put_u32(&mut s, 60, 1);
    assert!(matches!(
        open(s.clone(), false).unwrap_err(),
        Qcow2Error::Snapshots
    ));
    open(s, true).unwrap();
}

#[test]
fn refcount_table_is_checked_for_writable_opens() {
    let mut s = image();
    put_u64(&mut s, 48, 1 << 40);
    assert!(matches!(
        open(s.clone(), false).unwrap_err(),
        Qcow2Error::BadOffset { .. }
    ));
    open(s, true).unwrap();
    let mut s = image();
    put_u32(&mut s, 56, 1 << 20);
    assert!(matches!(
        open(s, false).unwrap_err(),
        Qcow2Error::TooLarge { .. }
    ));
    let mut s = image();
    put_u32(&mut s, 56, 0);
    assert!(matches!(
        open(s, false).unwrap_err(),
        Qcow2Error::BadOffset { .. }
    ));
}

#[test]
fn autoclear_bits_are_cleared_by_writers() {
    let mut s = image();
    put_u64(&mut s, 88, 3);
    let d = open(s, false).unwrap();
    let mut buf = [0u8; 8];
    d.file.read_exact_at(&mut buf, 88).unwrap();
    assert_eq!(u64::from_be_bytes(buf), 0);
}

#[test]
fn bad_table_entries_fail_the_access_only() {
    let l1 = 3 * CS;
    // L1 entry pointing past the end of the file.
    let mut s = image();
    put_u64(&mut s, l1, (1 << 63) | (1 << 40));
    let mut d = open(s, false).unwrap();
    let mut buf = [0u8; 512];
    assert!(matches!(
        d.read_at(&mut buf, 0),
        Err(DiskError::Corrupt { .. })
    ));
    assert!(matches!(
        d.write_at(&buf, 0),
        Err(DiskError::Corrupt { .. })
    ));
    // Reserved bits in an L1 entry.
    let mut s = image();
    put_u64(&mut s, l1, (4 * CS) | 0x100);
    let mut d = open(s, true).unwrap();
    assert!(matches!(
        d.read_at(&mut buf, 0),
        Err(DiskError::Corrupt { .. })
    ));

    // An L2 entry with a misaligned data offset, and one past the file.
    let mut s = image();
    put_u64(&mut s, l1, (1 << 63) | (4 * CS));
    s.write_all_at(&vec![0u8; CS as usize], 4 * CS).unwrap();
    put_u64(&mut s, 4 * CS, (1 << 63) | (CS + 512));
    put_u64(&mut s, 4 * CS + 8, (1 << 63) | (1 << 45));
    // A compressed entry whose stream is garbage.
    put_u64(&mut s, 4 * CS + 16, (1 << 62) | 100);
    let mut d = open(s, true).unwrap();
    assert!(matches!(
        d.read_at(&mut buf, 0),
        Err(DiskError::Corrupt { .. })
    ));
    d.read_at(&mut buf, CS).unwrap(); // past EOF reads as zeros, like QEMU
    assert_eq!(buf, [0; 512]);
    assert!(matches!(
        d.read_at(&mut buf, 2 * CS),
        Err(DiskError::Corrupt { .. })
    ));
}

#[test]
fn refcount_block_outside_the_file_fails_writes() {
    let mut s = image();
    put_u64(&mut s, CS, 1 << 40); // refcount table entry 0
    let mut d = open(s, false).unwrap();
    assert!(d.write_at(&[1; 512], 0).is_err());
    let mut s = image();
    put_u64(&mut s, CS, 2 * CS + 1); // reserved bits
    let mut d = open(s, false).unwrap();
    assert!(matches!(
        d.write_at(&[1; 512], 0),
        Err(DiskError::Corrupt { .. })
    ));
}

#[test]
fn backing_files_need_a_path_and_loops_stop() {
    let mut s = MemStorage::new(Vec::new(), 1 << 30);
    write_image(&mut s, 1 << 20, Some(("base.raw", ImageFormat::Raw))).unwrap();
    assert!(matches!(
        open(s, true).unwrap_err(),
        Qcow2Error::BackingWithoutPath
    ));

    let dir = vmm_sys_util::tempdir::TempDir::new_with_prefix("/tmp/stratus-loop-").unwrap();
    let a = dir.as_path().join("a.qcow2");
    let b = dir.as_path().join("b.qcow2");
    crate::disk::qcow2::create(&a, 1 << 20, Some(("b.qcow2", ImageFormat::Qcow2))).unwrap();
    crate::disk::qcow2::create(&b, 1 << 20, Some(("a.qcow2", ImageFormat::Qcow2))).unwrap();
    assert!(matches!(
        Qcow2Disk::open(&a, false).unwrap_err(),
        Qcow2Error::BackingChainTooDeep(_)
    ));
    // A missing backing file is a clear error too.
    let c = dir.as_path().join("c.qcow2");
    crate::disk::qcow2::create(&c, 1 << 20, Some(("missing.raw", ImageFormat::Raw))).unwrap();
    assert!(matches!(
        Qcow2Disk::open(&c, true).unwrap_err(),
        Qcow2Error::Backing { .. }
    ));
}

#[test]
fn overlay_reads_backing_and_never_writes_it() {
    let dir = vmm_sys_util::tempdir::TempDir::new_with_prefix("/tmp/stratus-ovl-").unwrap();
    let base = dir.as_path().join("base.raw");
    // A base that is shorter than the overlay and not cluster-aligned.
    let data = pattern(11, 100_000);
    std::fs::write(&base, &data).unwrap();
    let top = dir.as_path().join("top.qcow2");
    crate::disk::qcow2::create(
        &top,
        300_000,
        Some((base.to_str().unwrap(), ImageFormat::Raw)),
    )
    .unwrap();
    let mut d = Qcow2Disk::open(&top, false).unwrap();
    assert_eq!(d.backing_file(), base.to_str());
    let mut buf = vec![0u8; 300_000];
    d.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..100_000], &data[..]);
    assert!(buf[100_000..].iter().all(|&b| b == 0));
    d.write_at(&[0xab; 10], 99_995).unwrap();
    d.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..99_995], &data[..99_995]);
    assert_eq!(&buf[99_995..100_005], &[0xab; 10]);
    assert!(buf[100_005..].iter().all(|&b| b == 0));
    assert_eq!(std::fs::read(&base).unwrap(), data);
}

#[test]
fn fuzz_entry_survives_mutations() {
    // Flip bytes all over the metadata of a real image and run the fuzz
    // entry point on each result.
    let mut s = image();
    let mut d = open(s.clone(), false).unwrap();
    d.write_at(&pattern(1, 300_000), 10_000).unwrap();
    drop(d);
    s = image();
    let base = s.data()[..4 * CS as usize].to_vec();
    for i in 0..400usize {
        let mut bytes = base.clone();
        let pos = (i * 7919) % bytes.len().min(4 * CS as usize);
        bytes[pos] ^= 0xff;
        bytes[(pos * 31) % 200] = (i as u8).wrapping_mul(37);
        crate::fuzz::qcow2_image(&bytes);
    }
}
