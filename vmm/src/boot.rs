//! Loading the kernel, initrd and command line, and writing the boot
//! information the chosen entry protocol expects.
//!
//! An ELF `vmlinux` with a PVH note is entered through PVH (the kernel's
//! 32-bit entry with an `hvm_start_info`); an ELF without the note and a
//! bzImage are entered through the Linux 64-bit boot protocol with a zero
//! page. Both get the same memory map and the RSDP address.

use std::fs::File;
use std::path::Path;

use crate::image_mapping::ImageReader;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::boot_params;
use linux_loader::loader::elf::start_info::{hvm_memmap_table_entry, hvm_start_info};
use linux_loader::loader::elf::PvhBootCapability;
use linux_loader::loader::{load_cmdline, BzImage, Cmdline, Elf, KernelLoader, KernelLoaderResult};
use vm_memory::{
    ByteValued, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};

use crate::arch::regs::EntryMode;
use crate::layout::{
    e820_map, E820Kind, CMDLINE_START, HIMEM_START, INITRD_ADDR_MAX_DEFAULT, MMIO_HOLE_START,
    PVH_INFO_START, PVH_MEMMAP_MAX_ENTRIES, PVH_MEMMAP_START, ZERO_PAGE_START,
};

/// Errors loading the guest's boot images.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The kernel file could not be opened.
    #[error("cannot open kernel {path}: {source}")]
    OpenKernel {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The kernel is neither a loadable ELF nor a bzImage.
    #[error("kernel {path} is not a bootable x86_64 image (tried ELF vmlinux: {elf}; bzImage: {bzimage})")]
    BadKernel {
        /// The file.
        path: String,
        /// Why the ELF loader refused it.
        elf: linux_loader::loader::Error,
        /// Why the bzImage loader refused it.
        bzimage: linux_loader::loader::Error,
    },
    /// The initrd could not be read.
    #[error("cannot read initrd {path}: {source}")]
    ReadInitrd {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No room for the initrd between the kernel and its address limit.
    #[error(
        "initrd of {size} bytes does not fit in guest memory below {limit:#x} above the kernel"
    )]
    InitrdTooLarge {
        /// Initrd size.
        size: u64,
        /// Highest address the kernel accepts.
        limit: u64,
    },
    /// Writing the initrd into guest memory failed.
    #[error("failed to write the initrd into guest memory: {0}")]
    WriteInitrd(vm_memory::GuestMemoryError),
    /// The command line was rejected.
    #[error("invalid kernel command line: {0}")]
    Cmdline(linux_loader::cmdline::Error),
    /// Writing the command line failed.
    #[error("failed to write the kernel command line: {0}")]
    LoadCmdline(linux_loader::loader::Error),
    /// Writing boot parameters failed.
    #[error("failed to write boot parameters: {0}")]
    BootParams(linux_loader::configurator::Error),
    /// The memory map has more entries than the PVH table holds.
    #[error("memory map has {0} entries, more than the boot area holds")]
    MemmapTooLarge(usize),
}

/// What the loader put where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootInfo {
    /// How to enter the kernel.
    pub entry: EntryMode,
    /// First byte past the loaded kernel.
    pub kernel_end: u64,
    /// Where the initrd went, and its size.
    pub initrd: Option<(GuestAddress, u64)>,
}

/// `hvm_start_info` as plain bytes for guest memory.
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct StartInfo(hvm_start_info);
// SAFETY: `hvm_start_info` is a `repr(C)` struct of integers with no
// padding-dependent invariants; every byte pattern is a valid value.
unsafe impl ByteValued for StartInfo {}

/// One PVH memory-map entry as plain bytes.
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct MemmapEntry(hvm_memmap_table_entry);
// SAFETY: `hvm_memmap_table_entry` is a `repr(C)` struct of integers; every
// byte pattern is a valid value.
unsafe impl ByteValued for MemmapEntry {}

/// PVH start-info magic ("xEn3" with the top bit set).
#[allow(clippy::cast_possible_truncation)] // range asserted below
const CMDLINE_START_32: u32 = {
    assert!(CMDLINE_START <= u32::MAX as u64);
    CMDLINE_START as u32
};
const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
const KERNEL_LOADER_OTHER: u8 = 0xff;
/// Alignment the kernel may be relocated to (16 MiB, the x86 default).
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x100_0000;
/// The 64-bit entry of a bzImage is 0x200 past its protected-mode start.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;

fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<KernelLoaderResult, BootError> {
    let open = || {
        File::open(path).map_err(|source| BootError::OpenKernel {
            path: path.display().to_string(),
            source,
        })
    };
    let mut file = ImageReader::new(open()?);
    let elf_err = match Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))) {
        Ok(result) => {
            if file.mapped_bytes > 0 {
                log::info!(
                    "kernel: {} KiB mapped from an image that cannot change, not copied",
                    file.mapped_bytes >> 10
                );
            }
            return Ok(result);
        }
        Err(e) => e,
    };
    let mut file = ImageReader::new(open()?);
    match BzImage::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))) {
        Ok(result) => Ok(result),
        Err(bz_err) => Err(BootError::BadKernel {
            path: path.display().to_string(),
            elf: elf_err,
            bzimage: bz_err,
        }),
    }
}

/// Places the initrd page-aligned as high as allowed below both the MMIO
/// hole and the kernel's `initrd_addr_max`, and above the kernel.
fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel_end: u64,
    addr_max: u64,
) -> Result<(GuestAddress, u64), BootError> {
    let read_err = |source| BootError::ReadInitrd {
        path: path.display().to_string(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    let mut file = ImageReader::new(file);
    let ram_end = mem.last_addr().0.saturating_add(1).min(MMIO_HOLE_START);
    let limit = ram_end.min(addr_max.saturating_add(1));
    let too_large = BootError::InitrdTooLarge { size, limit };
    let start = limit.checked_sub(size).ok_or(too_large)? & !0xfff;
    if start < kernel_end {
        return Err(BootError::InitrdTooLarge { size, limit });
    }
    let len = usize::try_from(size).map_err(|_| BootError::InitrdTooLarge { size, limit })?;
    mem.read_exact_volatile_from(GuestAddress(start), &mut file, len)
        .map_err(BootError::WriteInitrd)?;
    Ok((GuestAddress(start), size))
}

/// Loads everything and writes the boot information. `rsdp` is where the
/// ACPI tables start.
pub fn load(
    mem: &GuestMemoryMmap,
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &str,
    rsdp: GuestAddress,
) -> Result<BootInfo, BootError> {
    let kernel_result = load_kernel(mem, kernel)?;
    let addr_max = kernel_result
        .setup_header
        .map(|h| u64::from(h.initrd_addr_max))
        .filter(|&m| m != 0)
        .unwrap_or(INITRD_ADDR_MAX_DEFAULT);
    let initrd = initrd
        .map(|path| load_initrd(mem, path, kernel_result.kernel_end, addr_max))
        .transpose()?;

    let mut cl = Cmdline::new(crate::config::MAX_CMDLINE_LEN).map_err(BootError::Cmdline)?;
    cl.insert_str(cmdline).map_err(BootError::Cmdline)?;
    load_cmdline(mem, GuestAddress(CMDLINE_START), &cl).map_err(BootError::LoadCmdline)?;
    // Validated to be below MAX_CMDLINE_LEN (4096).
    let cmdline_len = u32::try_from(cmdline.len() + 1)
        .map_err(|_| BootError::Cmdline(linux_loader::cmdline::Error::TooLarge))?;

    let mem_bytes: u64 = mem.iter().map(|r| r.len()).sum();
    let entry = match kernel_result.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(pvh_entry) => {
            write_pvh_info(mem, mem_bytes, initrd, rsdp)?;
            EntryMode::Pvh {
                entry: pvh_entry,
                start_info: GuestAddress(PVH_INFO_START),
            }
        }
        _ => {
            write_zero_page(mem, mem_bytes, &kernel_result, initrd, cmdline_len, rsdp)?;
            let entry = match kernel_result.setup_header {
                // bzImage: enter its 64-bit startup code.
                Some(_) => kernel_result.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET,
                None => kernel_result.kernel_load.0,
            };
            EntryMode::Linux64 {
                entry: GuestAddress(entry),
                zero_page: GuestAddress(ZERO_PAGE_START),
            }
        }
    };
    Ok(BootInfo {
        entry,
        kernel_end: kernel_result.kernel_end,
        initrd,
    })
}

fn write_pvh_info(
    mem: &GuestMemoryMmap,
    mem_bytes: u64,
    initrd: Option<(GuestAddress, u64)>,
    rsdp: GuestAddress,
) -> Result<(), BootError> {
    let map = e820_map(mem_bytes);
    if map.len() as u64 > PVH_MEMMAP_MAX_ENTRIES {
        return Err(BootError::MemmapTooLarge(map.len()));
    }
    let memmap: Vec<MemmapEntry> = map
        .iter()
        .map(|e| {
            MemmapEntry(hvm_memmap_table_entry {
                addr: e.addr,
                size: e.size,
                type_: e.kind as u32,
                reserved: 0,
            })
        })
        .collect();
    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        cmdline_paddr: CMDLINE_START,
        rsdp_paddr: rsdp.0,
        memmap_paddr: PVH_MEMMAP_START,
        // Bounded by PVH_MEMMAP_MAX_ENTRIES above.
        memmap_entries: u32::try_from(memmap.len()).unwrap_or(u32::MAX),
        ..Default::default()
    };
    let module;
    let mut params = BootParams::new(&StartInfo(info), GuestAddress(PVH_INFO_START));
    if let Some((addr, size)) = initrd {
        // The initrd is PVH module 0; its entry goes right after the map.
        let modlist_addr =
            PVH_MEMMAP_START + (memmap.len() * std::mem::size_of::<MemmapEntry>()) as u64;
        info.nr_modules = 1;
        info.modlist_paddr = modlist_addr;
        module = ModuleEntry(linux_loader::loader::elf::start_info::hvm_modlist_entry {
            paddr: addr.0,
            size,
            ..Default::default()
        });
        params = BootParams::new(&StartInfo(info), GuestAddress(PVH_INFO_START));
        params.set_modules(&[module], GuestAddress(modlist_addr));
    }
    params.set_sections(&memmap, GuestAddress(PVH_MEMMAP_START));
    PvhBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, mem)
        .map_err(BootError::BootParams)
}

/// One PVH module-list entry as plain bytes.
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct ModuleEntry(linux_loader::loader::elf::start_info::hvm_modlist_entry);
// SAFETY: `hvm_modlist_entry` is a `repr(C)` struct of integers; every byte
// pattern is a valid value.
unsafe impl ByteValued for ModuleEntry {}

fn write_zero_page(
    mem: &GuestMemoryMmap,
    mem_bytes: u64,
    kernel: &KernelLoaderResult,
    initrd: Option<(GuestAddress, u64)>,
    cmdline_len: u32,
    rsdp: GuestAddress,
) -> Result<(), BootError> {
    let mut params = boot_params::default();
    if let Some(header) = kernel.setup_header {
        params.hdr = header;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.cmd_line_ptr = CMDLINE_START_32;
    params.hdr.cmdline_size = cmdline_len;
    if params.hdr.kernel_alignment == 0 {
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    }
    if let Some((addr, size)) = initrd {
        // Both are below 4 GiB by construction (below the MMIO hole).
        params.hdr.ramdisk_image =
            u32::try_from(addr.0).map_err(|_| BootError::InitrdTooLarge {
                size,
                limit: u64::from(u32::MAX),
            })?;
        params.hdr.ramdisk_size = u32::try_from(size).map_err(|_| BootError::InitrdTooLarge {
            size,
            limit: u64::from(u32::MAX),
        })?;
    }
    params.acpi_rsdp_addr = rsdp.0;
    let map = e820_map(mem_bytes);
    if map.len() > params.e820_table.len() {
        return Err(BootError::MemmapTooLarge(map.len()));
    }
    for (slot, entry) in params.e820_table.iter_mut().zip(&map) {
        slot.addr = entry.addr;
        slot.size = entry.size;
        slot.r#type = match entry.kind {
            E820Kind::Ram => 1,
            E820Kind::Reserved => 2,
        };
    }
    // Bounded by the table length (128) checked above.
    params.e820_entries = u8::try_from(map.len()).unwrap_or(u8::MAX);
    let boot = BootParams::new(&params, GuestAddress(ZERO_PAGE_START));
    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(&boot, mem)
        .map_err(BootError::BootParams)
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use std::io::Write;

    fn mem(size: u64) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size as usize)]).unwrap()
    }

    fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("stratus-boot-{}-{name}", std::process::id()));
        std::fs::File::create(&path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
        path
    }

    /// A minimal ELF64 x86_64 executable with one PT_LOAD segment at 1 MiB.
    fn tiny_elf() -> Vec<u8> {
        let mut elf = vec![0u8; 0x1000];
        elf[0..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2; // 64-bit
        elf[5] = 1; // little endian
        elf[6] = 1; // version
        elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        elf[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        elf[20..24].copy_from_slice(&1u32.to_le_bytes());
        elf[24..32].copy_from_slice(&0x10_0000u64.to_le_bytes()); // entry
        elf[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
        elf[52..54].copy_from_slice(&64u16.to_le_bytes()); // ehsize
        elf[54..56].copy_from_slice(&56u16.to_le_bytes()); // phentsize
        elf[56..58].copy_from_slice(&1u16.to_le_bytes()); // phnum
        let ph = 64;
        elf[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        elf[ph + 8..ph + 16].copy_from_slice(&0x800u64.to_le_bytes()); // offset
        elf[ph + 24..ph + 32].copy_from_slice(&0x10_0000u64.to_le_bytes()); // paddr
        elf[ph + 32..ph + 40].copy_from_slice(&0x10u64.to_le_bytes()); // filesz
        elf[ph + 40..ph + 48].copy_from_slice(&0x10u64.to_le_bytes()); // memsz
        elf[0x800] = 0xf4; // hlt
        elf
    }

    #[test]
    fn elf_without_pvh_uses_the_64bit_protocol_and_a_zero_page() {
        let m = mem(64 << 20);
        let kernel = temp_file("elf", &tiny_elf());
        let initrd = temp_file("initrd", &[7u8; 5000]);
        let info = load(
            &m,
            &kernel,
            Some(&initrd),
            "console=ttyS0",
            GuestAddress(0xe0000),
        )
        .unwrap();
        assert_eq!(
            info.entry,
            EntryMode::Linux64 {
                entry: GuestAddress(0x10_0000),
                zero_page: GuestAddress(ZERO_PAGE_START)
            }
        );
        let (addr, size) = info.initrd.unwrap();
        assert_eq!(size, 5000);
        assert_eq!(addr.0 % 4096, 0);
        assert!(addr.0 + size <= 64 << 20);
        let first: u8 = m.read_obj(addr).unwrap();
        assert_eq!(first, 7);
        let params: boot_params = m.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!({ params.hdr.header }, KERNEL_HDR_MAGIC);
        assert_eq!({ params.hdr.ramdisk_image }, addr.0 as u32);
        assert_eq!({ params.acpi_rsdp_addr }, 0xe0000);
        assert_eq!(params.e820_entries, 3);
        let mut cmd = [0u8; 14];
        m.read_slice(&mut cmd, GuestAddress(CMDLINE_START)).unwrap();
        assert_eq!(&cmd, b"console=ttyS0\0");
        std::fs::remove_file(kernel).unwrap();
        std::fs::remove_file(initrd).unwrap();
    }

    #[test]
    fn garbage_kernel_is_rejected_with_both_reasons() {
        let m = mem(64 << 20);
        let kernel = temp_file("garbage", &[0x5a; 8192]);
        let err = load(&m, &kernel, None, "", GuestAddress(0xe0000)).unwrap_err();
        assert!(matches!(err, BootError::BadKernel { .. }), "{err}");
        assert!(err.to_string().contains("not a bootable"));
        std::fs::remove_file(kernel).unwrap();
    }

    #[test]
    fn initrd_larger_than_memory_is_rejected() {
        let m = mem(32 << 20);
        let kernel = temp_file("elf2", &tiny_elf());
        let initrd = temp_file("big", &vec![0u8; 40 << 20]);
        let err = load(&m, &kernel, Some(&initrd), "", GuestAddress(0xe0000)).unwrap_err();
        assert!(matches!(err, BootError::InitrdTooLarge { .. }), "{err}");
        std::fs::remove_file(kernel).unwrap();
        std::fs::remove_file(initrd).unwrap();
    }
}
