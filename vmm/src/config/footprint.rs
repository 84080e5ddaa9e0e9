//! How much guest memory a kernel image really occupies, read from its
//! headers, so [`super::VmConfig::validate`] can refuse a VM that is too
//! small before any KVM object exists, without refusing ones that would
//! boot.
//!
//! The file size says little: an ELF `vmlinux` carries symbols and debug
//! sections that are never loaded (Debian's is 40+ MB for a kernel that
//! occupies far less), and a bzImage is compressed. What counts is where
//! the loader puts the image and what the kernel itself claims:
//!
//! - ELF: linux-loader copies each `PT_LOAD` segment to its `p_paddr`
//!   (we pass no load offset), and the kernel zeroes up to `p_memsz`
//!   (`.bss`). Everything up to the highest segment end is taken.
//! - bzImage: the 64-bit entry decompresses the kernel into a buffer of the
//!   header's `init_size` bytes starting at the load address rounded up to
//!   `kernel_alignment`, but never below `pref_address` (the kernel's
//!   `LOAD_PHYSICAL_ADDR`, usually 16 MiB): that is what `startup_64` in
//!   `arch/x86/boot/compressed/head_64.S` computes.
//!
//! An image that neither form describes is [`KernelFootprint::Unrecognised`]
//! and needs no room here: the acceptance checks below are the loaders'
//! own, so the loader refuses such an image anyway, with the precise reason
//! (and the same exit code), which beats a guessed "memory too small".

use std::io::{self, Read, Seek, SeekFrom};

use crate::layout::HIMEM_START;

/// Room the kernel needs beyond its image and the initrd before it can run
/// init: the `struct page` array (1/64 of RAM: 2 MiB at 128 MiB), direct-map
/// page tables, per-CPU areas, early slab caches, and the page cache the
/// initramfs is unpacked into. 16 MiB covers a small guest; a large one
/// passes the check with plenty to spare anyway. RAM below a kernel loaded
/// at 16 MiB is usable too but deliberately not counted: the estimate errs
/// towards refusing a VM that would die early.
pub const EARLY_ALLOCATION_MARGIN: u64 = 16 << 20;

/// Page size the initrd is aligned to when placed.
const PAGE_SIZE: u64 = 4096;

/// Size of `Elf64_Ehdr`.
const ELF_HEADER_LEN: usize = 64;
/// Size of `Elf64_Phdr`, the only program-header size the ELF loader takes.
const ELF_PHDR_LEN: usize = 56;
/// `p_type` of a loadable segment.
const PT_LOAD: u32 = 1;
/// `EI_CLASS` value of a 64-bit ELF.
const ELFCLASS64: u8 = 2;
/// `EI_DATA` value of a little-endian ELF.
const ELFDATA2LSB: u8 = 1;

/// Offset of the setup header's fields in a bzImage (the x86 boot
/// protocol, `Documentation/arch/x86/boot.rst`).
mod hdr {
    pub const SETUP_SECTS: usize = 0x1f1;
    pub const HEADER: usize = 0x202;
    pub const VERSION: usize = 0x206;
    pub const LOADFLAGS: usize = 0x211;
    pub const CODE32_START: usize = 0x214;
    pub const KERNEL_ALIGNMENT: usize = 0x230;
    pub const RELOCATABLE_KERNEL: usize = 0x234;
    pub const PREF_ADDRESS: usize = 0x258;
    pub const INIT_SIZE: usize = 0x260;
    /// First byte past the fields read here.
    pub const END: usize = 0x264;
}
/// "HdrS", the setup header's magic.
const BZIMAGE_MAGIC: u32 = 0x5372_6448;
/// Oldest protocol the bzImage loader accepts.
const PROTOCOL_MIN: u16 = 0x0200;
/// First protocol with `pref_address` and `init_size`.
const PROTOCOL_INIT_SIZE: u16 = 0x020a;
/// `loadflags` bit: the protected-mode code is loaded at 1 MiB.
const LOADED_HIGH: u8 = 0x1;
/// The kernel alignment boot.rs passes when the header gives none.
const DEFAULT_KERNEL_ALIGNMENT: u64 = 16 << 20;
/// For protocols before 2.10 (kernels before 2.6.31), which do not state
/// `init_size`: assume the kernel expands to this many times its compressed
/// payload, the old gzip-era rule of thumb, erring high.
const LEGACY_EXPANSION: u64 = 4;

/// What a kernel image occupies in guest memory once loaded and started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFootprint {
    /// An ELF `vmlinux`.
    Elf {
        /// First guest-physical byte past the highest `PT_LOAD` segment.
        end: u64,
    },
    /// A bzImage.
    BzImage {
        /// First guest-physical byte past the decompression buffer (or past
        /// the compressed image, if that ends higher).
        end: u64,
    },
    /// Neither loader would accept it; the loader reports why.
    Unrecognised,
}

impl KernelFootprint {
    /// First guest-physical byte past everything the kernel occupies, if
    /// known.
    pub fn end(self) -> Option<u64> {
        match self {
            KernelFootprint::Elf { end } | KernelFootprint::BzImage { end } => Some(end),
            KernelFootprint::Unrecognised => None,
        }
    }
}

/// Guest memory, in bytes, needed for a kernel with this footprint plus an
/// initrd of `initrd_len` bytes and the kernel's early allocations.
///
/// Memory is counted from guest address 0 (the boot structures below
/// 1 MiB are part of it); the initrd is placed page-aligned above the
/// kernel by the loader.
pub fn memory_needed(kernel: KernelFootprint, initrd_len: u64) -> u64 {
    // An unrecognised image is left to the loader to refuse (see the module
    // documentation); counting it as ending at the load address keeps the
    // initrd and margin in the sum.
    let kernel_end = kernel.end().unwrap_or(HIMEM_START);
    kernel_end
        .saturating_add(initrd_len.saturating_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1))
        .saturating_add(EARLY_ALLOCATION_MARGIN)
}

/// Reads the footprint from a kernel image's headers. Only I/O failures
/// are errors; a short, garbled or foreign file is
/// [`KernelFootprint::Unrecognised`].
pub fn kernel_footprint<R: Read + Seek>(image: &mut R) -> io::Result<KernelFootprint> {
    let mut head = [0u8; hdr::END];
    let got = read_up_to(image, 0, &mut head)?;
    let head = &head[..got];
    if head.starts_with(b"\x7fELF") {
        return elf_footprint(image, head);
    }
    let file_len = image.seek(SeekFrom::End(0))?;
    Ok(bzimage_footprint(head, file_len))
}

/// The ELF loader's own checks (magic, little-endian, 56-byte program
/// headers after the ELF header), plus 64-bit class, then the highest end
/// of a `PT_LOAD` segment. Segments with no file bytes count too: the
/// loader skips them but the kernel still owns that memory.
fn elf_footprint<R: Read + Seek>(image: &mut R, head: &[u8]) -> io::Result<KernelFootprint> {
    if head.len() < ELF_HEADER_LEN || head[4] != ELFCLASS64 || head[5] != ELFDATA2LSB {
        return Ok(KernelFootprint::Unrecognised);
    }
    let phoff = le_u64(head, 32);
    let phentsize = usize::from(le_u16(head, 54));
    let phnum = usize::from(le_u16(head, 56));
    if phentsize != ELF_PHDR_LEN || phoff < ELF_HEADER_LEN as u64 {
        return Ok(KernelFootprint::Unrecognised);
    }
    // At most 65535 headers of 56 bytes: a bounded read.
    let mut table = vec![0u8; phnum * ELF_PHDR_LEN];
    if read_up_to(image, phoff, &mut table)? < table.len() {
        return Ok(KernelFootprint::Unrecognised);
    }
    let mut end = None;
    for ph in table.chunks_exact(ELF_PHDR_LEN) {
        let (p_type, p_paddr, p_memsz) = (le_u32(ph, 0), le_u64(ph, 24), le_u64(ph, 40));
        if p_type != PT_LOAD || p_memsz == 0 {
            continue;
        }
        // A segment past the end of the address space cannot be loaded;
        // the loader says so.
        let Some(seg_end) = p_paddr.checked_add(p_memsz) else {
            return Ok(KernelFootprint::Unrecognised);
        };
        end = end.max(Some(seg_end));
    }
    Ok(match end {
        Some(end) => KernelFootprint::Elf { end },
        None => KernelFootprint::Unrecognised,
    })
}

/// The bzImage loader's own checks ("HdrS", protocol 2.00 or later, loaded
/// high, file longer than its setup code), then the decompression buffer.
fn bzimage_footprint(head: &[u8], file_len: u64) -> KernelFootprint {
    if head.len() < hdr::END || le_u32(head, hdr::HEADER) != BZIMAGE_MAGIC {
        return KernelFootprint::Unrecognised;
    }
    let version = le_u16(head, hdr::VERSION);
    if version < PROTOCOL_MIN || head[hdr::LOADFLAGS] & LOADED_HIGH == 0 {
        return KernelFootprint::Unrecognised;
    }
    // The setup code is `setup_sects` sectors (4 when zero) plus the boot
    // sector; the rest of the file is the protected-mode payload.
    let setup_sects = match head[hdr::SETUP_SECTS] {
        0 => 4,
        n => u64::from(n),
    };
    let Some(payload) = file_len.checked_sub((setup_sects + 1) * 512) else {
        return KernelFootprint::Unrecognised;
    };
    // The loader copies the payload to `code32_start`.
    let load = u64::from(le_u32(head, hdr::CODE32_START));
    let loaded_end = load.saturating_add(payload);
    let end = if version >= PROTOCOL_INIT_SIZE {
        let init_size = u64::from(le_u32(head, hdr::INIT_SIZE));
        let pref = le_u64(head, hdr::PREF_ADDRESS);
        let start = if head[hdr::RELOCATABLE_KERNEL] != 0 {
            let align = match u64::from(le_u32(head, hdr::KERNEL_ALIGNMENT)) {
                0 => DEFAULT_KERNEL_ALIGNMENT,
                a => a,
            };
            align_up(load, align).max(pref)
        } else {
            pref
        };
        start.saturating_add(init_size)
    } else {
        load.saturating_add(payload.saturating_mul(LEGACY_EXPANSION))
    };
    KernelFootprint::BzImage {
        end: end.max(loaded_end),
    }
}

/// `value` rounded up to a multiple of `align` (any non-zero value, not
/// only powers of two, since a header is free to say anything);
/// saturates instead of overflowing.
fn align_up(value: u64, align: u64) -> u64 {
    value.div_ceil(align).saturating_mul(align)
}

/// Reads from `offset` until `buf` is full or the file ends; returns how
/// many bytes were read.
fn read_up_to<R: Read + Seek>(image: &mut R, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    image.seek(SeekFrom::Start(offset))?;
    let mut got = 0;
    while got < buf.len() {
        match image.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

// Callers check lengths first; these index within them.
fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // small test constants
pub(super) mod tests {
    use super::*;
    use std::io::Cursor;

    const MIB: u64 = 1 << 20;

    /// An ELF64 x86_64 header followed by one program header per
    /// `(p_type, p_paddr, p_memsz)`, padded to `len` bytes.
    pub fn synthetic_elf(segments: &[(u32, u64, u64)], len: usize) -> Vec<u8> {
        let phoff = ELF_HEADER_LEN;
        let mut elf = vec![0u8; len.max(phoff + segments.len() * ELF_PHDR_LEN)];
        elf[0..4].copy_from_slice(b"\x7fELF");
        elf[4] = ELFCLASS64;
        elf[5] = ELFDATA2LSB;
        elf[6] = 1; // EV_CURRENT
        elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        elf[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        elf[24..32].copy_from_slice(&0x100_0000u64.to_le_bytes()); // e_entry
        elf[32..40].copy_from_slice(&(phoff as u64).to_le_bytes());
        elf[52..54].copy_from_slice(&(ELF_HEADER_LEN as u16).to_le_bytes());
        elf[54..56].copy_from_slice(&(ELF_PHDR_LEN as u16).to_le_bytes());
        elf[56..58].copy_from_slice(&(segments.len() as u16).to_le_bytes());
        for (i, &(p_type, paddr, memsz)) in segments.iter().enumerate() {
            let ph = phoff + i * ELF_PHDR_LEN;
            elf[ph..ph + 4].copy_from_slice(&p_type.to_le_bytes());
            elf[ph + 8..ph + 16].copy_from_slice(&0x1000u64.to_le_bytes()); // p_offset
            elf[ph + 24..ph + 32].copy_from_slice(&paddr.to_le_bytes());
            elf[ph + 32..ph + 40].copy_from_slice(&0x10u64.to_le_bytes()); // p_filesz
            elf[ph + 40..ph + 48].copy_from_slice(&memsz.to_le_bytes());
        }
        elf
    }

    /// A bzImage of `len` bytes with 27 setup sectors and the given
    /// protocol version, relocatability, alignment and `init_size`.
    fn synthetic_bzimage(
        version: u16,
        relocatable: bool,
        alignment: u32,
        init_size: u32,
        len: usize,
    ) -> Vec<u8> {
        let mut b = vec![0u8; len];
        b[hdr::SETUP_SECTS] = 27;
        b[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        b[hdr::HEADER..hdr::HEADER + 4].copy_from_slice(&BZIMAGE_MAGIC.to_le_bytes());
        b[hdr::VERSION..hdr::VERSION + 2].copy_from_slice(&version.to_le_bytes());
        b[hdr::LOADFLAGS] = LOADED_HIGH;
        b[hdr::CODE32_START..hdr::CODE32_START + 4].copy_from_slice(&0x10_0000u32.to_le_bytes());
        b[hdr::KERNEL_ALIGNMENT..hdr::KERNEL_ALIGNMENT + 4]
            .copy_from_slice(&alignment.to_le_bytes());
        b[hdr::RELOCATABLE_KERNEL] = u8::from(relocatable);
        b[hdr::PREF_ADDRESS..hdr::PREF_ADDRESS + 8].copy_from_slice(&0x100_0000u64.to_le_bytes());
        b[hdr::INIT_SIZE..hdr::INIT_SIZE + 4].copy_from_slice(&init_size.to_le_bytes());
        b
    }

    fn footprint(bytes: &[u8]) -> KernelFootprint {
        kernel_footprint(&mut Cursor::new(bytes)).unwrap()
    }

    #[test]
    fn elf_spans_its_highest_load_segment() {
        // Shaped like a distribution vmlinux: text, data, per-CPU and init
        // segments from 16 MiB, a note that is not loaded, and a last
        // segment whose .bss makes it the highest.
        let elf = synthetic_elf(
            &[
                (PT_LOAD, 0x100_0000, 0xe0_0000),
                (PT_LOAD, 0x1e0_0000, 0x40_0000),
                (4, 0x9000_0000, 0x1000), // PT_NOTE, ignored
                (PT_LOAD, 0x220_0000, 0x3_0000),
                (PT_LOAD, 0x223_0000, 0x8d_0000),
                (PT_LOAD, 0x7000_0000, 0), // empty, ignored
            ],
            8192,
        );
        assert_eq!(footprint(&elf), KernelFootprint::Elf { end: 0x2b0_0000 });
    }

    #[test]
    fn bzimage_needs_init_size_from_its_decompression_address() {
        let payload = 8 * MIB as usize;
        let len = 28 * 512 + payload;
        // Relocatable, loaded at 1 MiB with 2 MiB alignment: 2 MiB is
        // below pref_address, so the buffer starts at 16 MiB.
        let b = synthetic_bzimage(0x020f, true, 2 << 20, 40 << 20, len);
        assert_eq!(footprint(&b), KernelFootprint::BzImage { end: 56 * MIB });
        // Not relocatable: always pref_address.
        let b = synthetic_bzimage(0x020f, false, 2 << 20, 40 << 20, len);
        assert_eq!(footprint(&b), KernelFootprint::BzImage { end: 56 * MIB });
        // The compressed payload copied to 1 MiB counts if it ends higher
        // than the buffer (a header with a bogus init_size).
        let big = 28 * 512 + 20 * MIB as usize;
        let b = synthetic_bzimage(0x020f, false, 2 << 20, 0, big);
        assert_eq!(footprint(&b), KernelFootprint::BzImage { end: 21 * MIB });
        // Before 2.10 there is no init_size: the legacy estimate.
        let b = synthetic_bzimage(0x0209, true, 2 << 20, 40 << 20, len);
        assert_eq!(footprint(&b), KernelFootprint::BzImage { end: 33 * MIB });
    }

    #[test]
    fn what_the_loaders_refuse_is_unrecognised() {
        let len = 28 * 512 + 4096;
        let mut cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            vec![0x5a; 8192],
            b"\x7fELF".to_vec(),
            // Too old a protocol, not loaded high, shorter than its setup.
            synthetic_bzimage(0x01ff, true, 0, 0, len),
            synthetic_bzimage(0x020f, true, 0, 0, 1024),
        ];
        let mut not_high = synthetic_bzimage(0x020f, true, 0, 0, len);
        not_high[hdr::LOADFLAGS] = 0;
        cases.push(not_high);
        // ELF: truncated program headers, wrong entry size, 32-bit,
        // big-endian, no loadable segment, a segment that wraps.
        let elf = synthetic_elf(&[(PT_LOAD, 0x100_0000, MIB)], 0);
        cases.push(elf[..ELF_HEADER_LEN + 20].to_vec());
        let mut bad = elf.clone();
        bad[54] = 32;
        cases.push(bad);
        let mut bad = elf.clone();
        bad[4] = 1;
        cases.push(bad);
        let mut bad = elf.clone();
        bad[5] = 2;
        cases.push(bad);
        cases.push(synthetic_elf(&[(4, 0x100_0000, MIB)], 0));
        cases.push(synthetic_elf(&[(PT_LOAD, u64::MAX - 5, MIB)], 0));
        for (i, bytes) in cases.iter().enumerate() {
            assert_eq!(footprint(bytes), KernelFootprint::Unrecognised, "case {i}");
        }
    }

    #[test]
    fn truncated_and_hostile_headers_never_panic() {
        let elf = synthetic_elf(&[(PT_LOAD, 0x100_0000, MIB), (PT_LOAD, 0, u64::MAX)], 0);
        let bz = synthetic_bzimage(0x020f, true, u32::MAX, u32::MAX, 28 * 512 + 4096);
        for image in [&elf, &bz] {
            for cut in 0..image.len() {
                let _ = footprint(&image[..cut]);
            }
        }
        // Every header field at its extreme.
        let mut bz = synthetic_bzimage(0x020f, true, 3, u32::MAX, 28 * 512);
        bz[hdr::CODE32_START..hdr::CODE32_START + 4].fill(0xff);
        bz[hdr::PREF_ADDRESS..hdr::PREF_ADDRESS + 8].fill(0xff);
        assert_eq!(footprint(&bz), KernelFootprint::BzImage { end: u64::MAX });
        let mut elf = synthetic_elf(&[(PT_LOAD, 0, MIB)], 0);
        elf[56..58].fill(0xff); // 65535 program headers, none present
        assert_eq!(footprint(&elf), KernelFootprint::Unrecognised);
    }

    #[test]
    fn memory_needed_adds_the_page_aligned_initrd_and_the_margin() {
        let elf = KernelFootprint::Elf { end: 31 * MIB };
        assert_eq!(
            memory_needed(elf, MIB + 1),
            32 * MIB + PAGE_SIZE + EARLY_ALLOCATION_MARGIN
        );
        assert_eq!(
            memory_needed(KernelFootprint::Unrecognised, 0),
            HIMEM_START + EARLY_ALLOCATION_MARGIN
        );
        assert_eq!(
            memory_needed(KernelFootprint::BzImage { end: u64::MAX }, u64::MAX),
            u64::MAX
        );
    }
}
