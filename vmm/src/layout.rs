//! Guest-physical memory layout.
//!
//! ```text
//! 0x0000_0000  real-mode IVT/BDA (RAM)
//! 0x0000_0500  GDT                        (boot structures, all below 1 MiB)
//! 0x0000_6000  PVH start info + memory map
//! 0x0000_7000  zero page (boot_params) for the 64-bit boot protocol
//! 0x0000_9000  identity page tables (PML4, PDPT, PD)
//! 0x0002_0000  kernel command line
//! 0x0009_fc00  EBDA start: reserved up to 1 MiB
//! 0x000e_0000  ACPI tables (RSDP first, where a legacy scan finds it)
//! 0x000f_0000  SMBIOS entry point (`_SM3_`) and structure table
//! 0x0010_0000  kernel (and RAM up to the MMIO hole)
//! 0xc000_0000  MMIO hole: virtio-mmio devices, boot timer, IOAPIC, LAPIC
//! 0x1_0000_0000 RAM above 4 GiB when the guest has more than 3 GiB
//! ```

use vm_memory::GuestAddress;

/// Start of the Extended BIOS Data Area; RAM below it is usable.
pub const EBDA_START: u64 = 0x9fc00;
/// First address above the legacy BIOS area.
pub const HIMEM_START: u64 = 0x10_0000;
/// GDT for the boot CPU.
pub const BOOT_GDT_START: u64 = 0x500;
/// Empty IDT (interrupts stay off until the kernel sets its own).
pub const BOOT_IDT_START: u64 = 0x520;
/// PVH `hvm_start_info`.
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH memory map, right after the start info.
pub const PVH_MEMMAP_START: u64 = 0x6040;
/// Most PVH memory-map entries that fit before the zero page.
pub const PVH_MEMMAP_MAX_ENTRIES: u64 = (ZERO_PAGE_START - PVH_MEMMAP_START) / 24;
/// `boot_params` for the Linux 64-bit boot protocol.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Identity-mapping page tables: PML4, PDPT and one PD (first GiB, 2 MiB pages).
pub const PML4_START: u64 = 0x9000;
/// Page-directory-pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// Page directory.
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x2_0000;
/// ACPI tables; the RSDP must be 16-byte aligned in 0xE0000..0xFFFFF.
pub const ACPI_START: u64 = 0xe_0000;
/// End of the area reserved for ACPI tables (they stay below SMBIOS).
pub const ACPI_END: u64 = SMBIOS_START;
/// SMBIOS entry point, then its structure table. Linux finds the anchor
/// by scanning 0xF0000..0xFFFFF on 16-byte boundaries when it boots
/// without EFI; the e820 map reports the area as reserved, not RAM.
pub const SMBIOS_START: u64 = 0xf_0000;
/// End of the area reserved for SMBIOS.
pub const SMBIOS_END: u64 = HIMEM_START;

/// Start of the 32-bit MMIO hole (device registers, IOAPIC, LAPIC).
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// End of the 32-bit MMIO hole.
pub const MMIO_HOLE_END: u64 = 0x1_0000_0000;
/// First virtio-mmio device window.
pub const VIRTIO_MMIO_START: u64 = MMIO_HOLE_START;
/// Size of one virtio-mmio window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// The IOAPIC's register window.
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
/// The local APICs' register window.
pub const LAPIC_ADDR: u64 = 0xfee0_0000;

/// Highest address the kernel may find an initrd at under the boot protocol
/// default (`initrd_addr_max` for kernels that do not say otherwise).
pub const INITRD_ADDR_MAX_DEFAULT: u64 = 0x37ff_ffff;

/// A run of guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamRegion {
    /// First address.
    pub start: GuestAddress,
    /// Length in bytes.
    pub len: u64,
}

/// Splits `mem_bytes` of RAM around the 32-bit MMIO hole.
pub fn ram_regions(mem_bytes: u64) -> Vec<RamRegion> {
    let below_hole = mem_bytes.min(MMIO_HOLE_START);
    let mut regions = vec![RamRegion {
        start: GuestAddress(0),
        len: below_hole,
    }];
    if mem_bytes > MMIO_HOLE_START {
        regions.push(RamRegion {
            start: GuestAddress(MMIO_HOLE_END),
            len: mem_bytes - MMIO_HOLE_START,
        });
    }
    regions
}

/// The kind of an e820 / PVH memory-map entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum E820Kind {
    /// Usable RAM.
    Ram = 1,
    /// Reserved (BIOS area, ACPI tables live here too).
    Reserved = 2,
}

/// One entry of the memory map given to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// First address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// What the range is.
    pub kind: E820Kind,
}

/// The guest's memory map: RAM below the EBDA, the reserved legacy area with
/// the ACPI tables, RAM from 1 MiB up to the hole, and RAM above 4 GiB.
pub fn e820_map(mem_bytes: u64) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            kind: E820Kind::Ram,
        },
        E820Entry {
            addr: EBDA_START,
            size: HIMEM_START - EBDA_START,
            kind: E820Kind::Reserved,
        },
    ];
    for region in ram_regions(mem_bytes) {
        let start = region.start.0.max(HIMEM_START);
        let end = region.start.0 + region.len;
        if end > start {
            map.push(E820Entry {
                addr: start,
                size: end - start,
                kind: E820Kind::Ram,
            });
        }
    }
    map
}

/// Address of the `index`-th virtio-mmio window.
pub fn virtio_mmio_addr(index: u64) -> u64 {
    VIRTIO_MMIO_START + index * VIRTIO_MMIO_SIZE
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn small_memory_is_one_region_below_the_hole() {
        let r = ram_regions(256 * MIB);
        assert_eq!(
            r,
            vec![RamRegion {
                start: GuestAddress(0),
                len: 256 * MIB
            }]
        );
    }

    #[test]
    fn large_memory_skips_the_mmio_hole() {
        let r = ram_regions(4 * GIB);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].len, 3 * GIB);
        assert_eq!(r[1].start, GuestAddress(4 * GIB));
        assert_eq!(r[1].len, GIB);
        let total: u64 = r.iter().map(|x| x.len).sum();
        assert_eq!(total, 4 * GIB);
    }

    #[test]
    fn e820_reserves_the_bios_area_and_never_maps_the_hole_as_ram() {
        let map = e820_map(5 * GIB);
        assert_eq!(map[0].addr, 0);
        assert_eq!(map[0].size, EBDA_START);
        assert_eq!(map[1].kind, E820Kind::Reserved);
        assert_eq!(map[1].addr + map[1].size, HIMEM_START);
        assert_eq!(map[2].addr, HIMEM_START);
        assert_eq!(map[2].addr + map[2].size, MMIO_HOLE_START);
        assert_eq!(map[3].addr, MMIO_HOLE_END);
        assert_eq!(map[3].size, 2 * GIB);
        for e in map.iter().filter(|e| e.kind == E820Kind::Ram) {
            let end = e.addr + e.size;
            assert!(end <= MMIO_HOLE_START || e.addr >= MMIO_HOLE_END);
        }
        // Entries are sorted and do not overlap.
        for pair in map.windows(2) {
            assert!(pair[0].addr + pair[0].size <= pair[1].addr);
        }
    }

    // The fixed boot structures must not overlap: checked when compiling.
    const _: () = {
        assert!(BOOT_IDT_START + 8 <= PVH_INFO_START);
        assert!(PVH_INFO_START + 56 <= PVH_MEMMAP_START);
        assert!(PVH_MEMMAP_MAX_ENTRIES >= 8);
        assert!(ZERO_PAGE_START + 4096 <= PML4_START);
        assert!(PDE_START + 4096 <= CMDLINE_START);
        assert!(CMDLINE_START + 4096 <= EBDA_START);
        assert!(ACPI_START.is_multiple_of(16));
        assert!(ACPI_START < ACPI_END && ACPI_END <= SMBIOS_START);
        assert!(SMBIOS_START >= 0xf_0000 && SMBIOS_START.is_multiple_of(16));
        assert!(SMBIOS_START < SMBIOS_END && SMBIOS_END <= HIMEM_START);
        assert!(EBDA_START <= ACPI_START);
    };

    #[test]
    fn virtio_windows_stay_below_the_boot_timer() {
        assert!(virtio_mmio_addr(31) + VIRTIO_MMIO_SIZE <= 0xd000_0000);
    }
}
