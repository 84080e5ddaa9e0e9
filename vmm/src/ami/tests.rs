//! End-to-end tests of the reader on real images (see [`super::testimg`]).

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use crc32fast::hash as crc32;

use super::bootloader::BootLoaderError;
use super::gpt::{GptError, RootSource, LINUX_FS_DATA, LINUX_ROOT_X86_64};
use super::resolve::ResolveError;
use super::rootfs::RootFsError;
use super::testimg::{qemu_img, to_qcow2, tools, Scratch, Tools, FS_UUID};
use super::*;

const ROOT_X86_64: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
const FS_DATA: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
const MIB: u64 = 8;

fn open(path: &Path) -> Arc<dyn ReadAt> {
    Arc::new(File::open(path).unwrap())
}

/// Runs the reader over `disk`, staging into `scratch`.
fn boot(disk: &Path, scratch: &Scratch, limits: &Limits) -> Result<DiskBoot, AmiError> {
    find_boot_files_in(open(disk), scratch.path(), limits)
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// A whole-disk ext4 image of `scratch`'s tree, with its tools.
fn whole_disk(scratch: &Scratch) -> Option<(Tools, std::path::PathBuf)> {
    let t = tools()?;
    let img = t.mkfs(scratch, MIB);
    Some((t, img))
}

fn debian_tree(s: &Scratch) {
    s.file("boot/vmlinuz-6.1.0-27-amd64", b"kernel 6.1.0-27")
        .file("boot/initrd.img-6.1.0-27-amd64", b"initrd 6.1.0-27")
        .file("boot/vmlinuz-6.1.0-9-amd64", b"kernel 6.1.0-9")
        .link("vmlinuz", "boot/vmlinuz-6.1.0-27-amd64")
        .link("initrd.img", "boot/initrd.img-6.1.0-27-amd64")
        .link("vmlinuz.old", "boot/vmlinuz-6.1.0-9-amd64")
        .file("etc/hostname", b"debian\n");
}

#[test]
fn debian_links_on_a_gpt_disk_at_1mib() {
    let s = Scratch::new("debian");
    debian_tree(&s);
    let Some(t) = tools() else { return };
    let disk = t.gpt_disk(&s, &t.mkfs(&s, MIB), FS_DATA);
    let b = boot(&disk, &s, &Limits::default()).unwrap();
    assert_eq!(b.found_by, FoundBy::RootLinks);
    assert_eq!(b.root.start, 1 << 20);
    assert!(
        matches!(b.root.source, RootSource::Partition { number: 1, type_guid } if type_guid == LINUX_FS_DATA)
    );
    assert_eq!(read(&b.kernel), b"kernel 6.1.0-27");
    assert_eq!(read(b.initrd.as_ref().unwrap()), b"initrd 6.1.0-27");
    assert_eq!(b.root_uuid, FS_UUID);
    assert_eq!(b.cmdline(), format!("root=UUID={FS_UUID} rw"));
    let dir = b.staging_dir().to_owned();
    assert!(dir.starts_with(s.path()));
    drop(b);
    assert!(!dir.exists(), "staged files are removed on drop");
}

#[test]
fn a_qcow2_image_reads_through_the_block_backend() {
    let s = Scratch::new("qcow2");
    debian_tree(&s);
    let Some(t) = tools() else { return };
    let Some(qemu_img) = qemu_img() else { return };
    let raw = t.gpt_disk(&s, &t.mkfs(&s, MIB), FS_DATA);
    let qcow2 = to_qcow2(&qemu_img, &raw);
    let backend = stratus_devices::disk::Qcow2Disk::open(&qcow2, true).unwrap();
    let disk: Arc<dyn ReadAt> = Arc::new(std::sync::Mutex::new(backend));
    let b = find_boot_files_in(disk, s.path(), &Limits::default()).unwrap();
    assert_eq!(b.found_by, FoundBy::RootLinks);
    assert_eq!(read(&b.kernel), b"kernel 6.1.0-27");
}

#[test]
fn bls_entries_pick_the_highest_version() {
    let s = Scratch::new("bls");
    let id = "0123456789abcdef0123456789abcdef";
    let entry = |ver: &str| {
        format!(
            "title Fedora Linux ({ver})\nversion {ver}\nlinux /vmlinuz-{ver}\n\
             initrd /intel-ucode.img\ninitrd /initramfs-{ver}.img\n\
             options root=/dev/mapper/fedora-root ro rhgb quiet\n"
        )
    };
    for ver in [
        "6.5.6-300.fc39.x86_64",
        "6.10.2-200.fc40.x86_64",
        "6.9.0-1.fc40.x86_64",
    ] {
        s.file(
            &format!("boot/loader/entries/{id}-{ver}.conf"),
            entry(ver).as_bytes(),
        )
        .file(
            &format!("boot/vmlinuz-{ver}"),
            format!("kernel {ver}").as_bytes(),
        )
        .file(&format!("boot/initramfs-{ver}.img"), b"main");
    }
    s.file(
        &format!("boot/loader/entries/{id}-0-rescue.conf"),
        b"linux /vmlinuz-0-rescue\noptions single\n",
    )
    .file("boot/intel-ucode.img", b"ucode")
    // A Debian-style link too: BLS must win over it.
    .link("vmlinuz", "boot/vmlinuz-6.5.6-300.fc39.x86_64");
    let Some(t) = tools() else { return };
    let disk = t.gpt_disk(&s, &t.mkfs(&s, MIB), ROOT_X86_64);
    let b = boot(&disk, &s, &Limits::default()).unwrap();
    assert_eq!(
        b.found_by,
        FoundBy::Bls(format!("{id}-6.10.2-200.fc40.x86_64"))
    );
    assert!(
        matches!(b.root.source, RootSource::Partition { type_guid, .. } if type_guid == LINUX_ROOT_X86_64)
    );
    assert_eq!(read(&b.kernel), b"kernel 6.10.2-200.fc40.x86_64");
    // Each initrd padded to 4 bytes, microcode first, as GRUB lays them out.
    assert_eq!(read(b.initrd.as_ref().unwrap()), b"ucode\0\0\0main");
    assert_eq!(b.cmdline_extra, "ro rhgb quiet");
    assert_eq!(b.cmdline(), format!("root=UUID={FS_UUID} rw ro rhgb quiet"));
}

#[test]
fn newest_vmlinuz_on_a_whole_disk_filesystem() {
    let s = Scratch::new("newest");
    s.file("boot/vmlinuz-5.10.0-9-amd64", b"old")
        .file("boot/vmlinuz-5.10.0-10-amd64", b"new")
        .file("boot/initrd.img-5.10.0-10-amd64", b"new initrd")
        .file("boot/initrd.img-5.10.0-9-amd64", b"old initrd")
        .file("boot/config-5.10.0-10-amd64", b"config");
    let Some((_, img)) = whole_disk(&s) else {
        return;
    };
    let b = boot(&img, &s, &Limits::default()).unwrap();
    assert_eq!(b.found_by, FoundBy::NewestInBoot("5.10.0-10-amd64".into()));
    assert_eq!(b.root.source, RootSource::WholeDisk);
    assert_eq!(read(&b.kernel), b"new");
    assert_eq!(read(b.initrd.as_ref().unwrap()), b"new initrd");
}

#[test]
fn a_kernel_without_an_initrd_stages_none() {
    let s = Scratch::new("noinitrd");
    s.file("boot/vmlinuz-6.1", b"k");
    let Some((_, img)) = whole_disk(&s) else {
        return;
    };
    let b = boot(&img, &s, &Limits::default()).unwrap();
    assert_eq!(b.initrd, None);
}

/// The boot error for an image built from `tree`.
fn boot_error(tag: &str, tree: impl FnOnce(&Scratch)) -> Option<AmiError> {
    let s = Scratch::new(tag);
    tree(&s);
    let (_, img) = whole_disk(&s)?;
    Some(boot(&img, &s, &Limits::default()).unwrap_err())
}

fn resolve_error(e: Option<AmiError>) -> Option<ResolveError> {
    match e? {
        AmiError::Boot(BootLoaderError::Resolve { source, .. }) => Some(source),
        other => panic!("expected a resolve error, got {other:?}"),
    }
}

#[test]
fn a_missing_kernel_is_reported() {
    let Some(e) = boot_error("nokernel", |s| {
        s.file("etc/hostname", b"x").file("boot/grub/grub.cfg", b"");
    }) else {
        return;
    };
    assert!(
        matches!(e, AmiError::Boot(BootLoaderError::NoKernel)),
        "{e:?}"
    );
}

#[test]
fn a_symlink_loop_is_refused() {
    let e = resolve_error(boot_error("loop", |s| {
        s.link("vmlinuz", "boot/a")
            .link("boot/a", "b")
            .link("boot/b", "/vmlinuz");
    }));
    assert!(
        matches!(e, None | Some(ResolveError::TooManyLinks { .. })),
        "{e:?}"
    );
}

#[test]
fn links_out_of_the_boot_directories_are_refused() {
    let e = resolve_error(boot_error("shadow", |s| {
        s.file("etc/shadow", b"root:secret")
            .link("vmlinuz", "/etc/shadow");
    }));
    assert!(
        matches!(e, None | Some(ResolveError::OutsideBootDirs { .. })),
        "{e:?}"
    );
    // Via a directory link, too.
    let e = resolve_error(boot_error("dirlink", |s| {
        s.file("etc/shadow", b"root:secret")
            .link("boot", "etc")
            .link("vmlinuz", "boot/shadow");
    }));
    assert!(
        matches!(e, None | Some(ResolveError::OutsideBootDirs { .. })),
        "{e:?}"
    );
}

#[test]
fn links_climbing_above_the_root_are_refused() {
    let e = resolve_error(boot_error("climb", |s| {
        s.file("etc/shadow", b"root:secret")
            .file("boot/vmlinuz-6.1", b"k")
            .link("vmlinuz", "boot/../../../../etc/shadow");
    }));
    assert!(
        matches!(e, None | Some(ResolveError::EscapesRoot { .. })),
        "{e:?}"
    );
}

#[test]
fn bls_paths_cannot_leave_boot() {
    let e = resolve_error(boot_error("blsescape", |s| {
        s.file("etc/shadow", b"root:secret")
            .file("boot/loader/entries/a.conf", b"linux /../etc/shadow\n");
    }));
    assert!(
        matches!(e, None | Some(ResolveError::OutsideBootDirs { .. })),
        "{e:?}"
    );
}

#[test]
fn dangling_links_and_directories_are_refused() {
    let e = resolve_error(boot_error("dangling", |s| {
        s.link("vmlinuz", "boot/vmlinuz-gone").file("boot/x", b"");
    }));
    assert!(
        matches!(e, None | Some(ResolveError::NotFound { .. })),
        "{e:?}"
    );
    let e = resolve_error(boot_error("dir", |s| {
        s.file("boot/x", b"").link("vmlinuz", "boot");
    }));
    assert!(
        matches!(
            e,
            None | Some(ResolveError::OutsideBootDirs { .. } | ResolveError::NotAFile { .. })
        ),
        "{e:?}"
    );
    let e = resolve_error(boot_error("subdir", |s| {
        s.file("boot/efi/x", b"").link("vmlinuz", "boot/efi");
    }));
    assert!(
        matches!(e, None | Some(ResolveError::NotAFile { .. })),
        "{e:?}"
    );
}

#[test]
fn kernels_over_the_cap_are_refused_before_copying() {
    let s = Scratch::new("cap");
    s.file("boot/vmlinuz-6.1", &[0u8; 8192]);
    let Some((_, img)) = whole_disk(&s) else {
        return;
    };
    let limits = Limits {
        max_kernel: 4096,
        max_initrd: 4096,
    };
    let e = boot(&img, &s, &limits).unwrap_err();
    assert!(
        matches!(
            e,
            AmiError::Boot(BootLoaderError::TooLarge { len: 8192, .. })
        ),
        "{e:?}"
    );
    assert_eq!(
        std::fs::read_dir(s.path()).unwrap().count(),
        2,
        "nothing staged"
    );
}

/// A GPT disk image, as bytes, for patching.
fn gpt_bytes(tag: &str) -> Option<(Scratch, Vec<u8>)> {
    let s = Scratch::new(tag);
    debian_tree(&s);
    let t = tools()?;
    let disk = t.gpt_disk(&s, &t.mkfs(&s, MIB), FS_DATA);
    let bytes = read(&disk);
    Some((s, bytes))
}

fn inspect_bytes(bytes: Vec<u8>) -> Result<(), AmiError> {
    inspect(Arc::new(bytes), &Limits::default()).map(|_| ())
}

/// Rewrites the primary header's CRC after a patch.
fn reseal(bytes: &mut [u8]) {
    bytes[512 + 16..512 + 20].fill(0);
    let c = crc32(&bytes[512..512 + 92]);
    bytes[512 + 16..512 + 20].copy_from_slice(&c.to_le_bytes());
}

#[test]
fn a_corrupt_gpt_header_crc_is_refused() {
    let Some((_s, mut bytes)) = gpt_bytes("gptcrc") else {
        return;
    };
    inspect_bytes(bytes.clone()).unwrap();
    bytes[512 + 56] ^= 0xff; // the disk GUID
    let e = inspect_bytes(bytes).unwrap_err();
    assert!(
        matches!(e, AmiError::Locate(GptError::HeaderCrc { .. })),
        "{e:?}"
    );
}

#[test]
fn a_partition_array_past_the_end_is_refused() {
    let Some((_s, mut bytes)) = gpt_bytes("gptarray") else {
        return;
    };
    let past = u64::try_from(bytes.len()).unwrap() / 512 - 1;
    bytes[512 + 72..512 + 80].copy_from_slice(&past.to_le_bytes());
    reseal(&mut bytes);
    let e = inspect_bytes(bytes).unwrap_err();
    assert!(
        matches!(e, AmiError::Locate(GptError::ArrayOutOfBounds { .. })),
        "{e:?}"
    );
}

#[test]
fn huge_entry_counts_in_a_real_header_are_refused() {
    let Some((_s, mut bytes)) = gpt_bytes("gptcount") else {
        return;
    };
    bytes[512 + 80..512 + 84].copy_from_slice(&0x0100_0000u32.to_le_bytes());
    reseal(&mut bytes);
    let e = inspect_bytes(bytes).unwrap_err();
    assert!(
        matches!(e, AmiError::Locate(GptError::TooManyEntries(_))),
        "{e:?}"
    );
}

#[test]
fn a_huge_block_count_in_the_superblock_is_refused() {
    let s = Scratch::new("sbcount");
    debian_tree(&s);
    let Some((_, img)) = whole_disk(&s) else {
        return;
    };
    let mut bytes = read(&img);
    // s_blocks_count_hi: a filesystem of 2^44 blocks on an 8 MiB disk.
    bytes[1024 + 0x150..1024 + 0x154].copy_from_slice(&0x1000u32.to_le_bytes());
    let e = inspect_bytes(bytes).unwrap_err();
    assert!(
        matches!(e, AmiError::RootFs(RootFsError::BadGeometry(_))),
        "{e:?}"
    );
}

/// Deterministic byte flips over a real image's metadata: every outcome
/// but a panic is fine. A cheap stand-in until the cargo-fuzz target runs.
#[test]
fn mutated_images_never_panic() {
    let s = Scratch::new("mutate");
    debian_tree(&s);
    let Some((_, img)) = whole_disk(&s) else {
        return;
    };
    let clean = read(&img);
    fuzz_boot_reader(&clean);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // Metadata (superblock, descriptors, bitmaps, inode tables, the
    // directories and links) sits in the first few hundred KiB.
    let span = clean.len().min(512 * 1024);
    for _ in 0..150 {
        let mut bytes = clean.clone();
        for _ in 0..1 + next() % 8 {
            let at = usize::try_from(next()).unwrap() % span;
            bytes[at] ^= u8::try_from(next() & 0xff).unwrap() | 1;
        }
        fuzz_boot_reader(&bytes);
    }
    for len in [0, 1024, 2048, 4096, 65536, span] {
        fuzz_boot_reader(&clean[..len]);
    }
}

#[test]
fn root_cmdline_replaces_root_and_keeps_order() {
    assert_eq!(root_cmdline("u", ""), "root=UUID=u rw");
    assert_eq!(
        root_cmdline(
            "u",
            " root=/dev/sda1  ro quiet root=LABEL=x rootflags=noatime "
        ),
        "root=UUID=u rw ro quiet rootflags=noatime"
    );
}
