//! Initial register state of the boot vCPU for each entry protocol, and the
//! descriptor tables and page tables that state points at.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout::{BOOT_GDT_START, BOOT_IDT_START, PDE_START, PDPTE_START, PML4_START};

/// How the kernel is entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
    /// PVH: 32-bit protected mode, paging off, `%ebx` = start-info address.
    Pvh {
        /// PVH entry point from the ELF note.
        entry: GuestAddress,
        /// Address of `hvm_start_info`.
        start_info: GuestAddress,
    },
    /// Linux 64-bit boot protocol: long mode on identity page tables,
    /// `%rsi` = zero-page address.
    Linux64 {
        /// 64-bit entry point.
        entry: GuestAddress,
        /// Address of `boot_params`.
        zero_page: GuestAddress,
    },
}

/// Errors writing boot structures into guest memory.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    /// Guest memory could not hold the GDT, IDT or page tables.
    #[error("failed to write {what} into guest memory: {source}")]
    WriteBootStructure {
        /// Which structure.
        what: &'static str,
        /// The memory error.
        source: vm_memory::GuestMemoryError,
    },
}

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// Packs a GDT entry from flags (in the 0xF0FF layout of the access and
/// flag nibbles), base and limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
        | (((limit as u64 & 0x000f_0000) >> 16) << 48)
        | ((flags as u64 & 0x0000_f0ff) << 40)
}

// Every narrowing below is of a masked bit field that fits its target.
#[allow(clippy::cast_possible_truncation)]
/// Unpacks a GDT entry into the segment KVM loads for selector `index * 8`.
pub fn segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let field = |shift: u32, bits: u32| -> u8 {
        // Each flag field is at most 4 bits wide, so the value fits a u8.
        ((entry >> shift) & ((1u64 << bits) - 1)) as u8
    };
    let base = (((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000)) as u32;
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0x000f_0000)) as u32;
    let granularity = field(55, 1);
    let limit = if granularity == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    let present = field(47, 1);
    kvm_segment {
        base: u64::from(base),
        limit,
        selector: u16::from(index) * 8,
        type_: field(40, 4),
        present,
        dpl: field(45, 2),
        db: field(54, 1),
        s: field(44, 1),
        l: field(53, 1),
        g: granularity,
        avl: field(52, 1),
        padding: 0,
        unusable: u8::from(present == 0),
    }
}

/// GDT for the 64-bit protocol: null, 64-bit code, data, TSS.
const GDT_LONG_MODE: [u64; 4] = [
    gdt_entry(0, 0, 0),
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];

/// GDT for PVH: null, 32-bit code, data, TSS.
const GDT_PROTECTED_MODE: [u64; 4] = [
    gdt_entry(0, 0, 0),
    gdt_entry(0xc09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];

fn write_u64s(
    mem: &GuestMemoryMmap,
    at: u64,
    values: &[u64],
    what: &'static str,
) -> Result<(), RegsError> {
    for (i, value) in values.iter().enumerate() {
        mem.write_obj(*value, GuestAddress(at + 8 * i as u64))
            .map_err(|source| RegsError::WriteBootStructure { what, source })?;
    }
    Ok(())
}

/// Identity-maps the first GiB with 2 MiB pages: enough for the kernel to
/// reach its own page-table setup.
fn write_identity_page_tables(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    const PRESENT_WRITABLE: u64 = 0x3;
    const HUGE: u64 = 0x80;
    write_u64s(mem, PML4_START, &[PDPTE_START | PRESENT_WRITABLE], "PML4")?;
    write_u64s(mem, PDPTE_START, &[PDE_START | PRESENT_WRITABLE], "PDPT")?;
    let pd: Vec<u64> = (0..512u64)
        .map(|i| (i << 21) | PRESENT_WRITABLE | HUGE)
        .collect();
    write_u64s(mem, PDE_START, &pd, "page directory")
}

/// Writes the GDT/IDT (and, for long mode, page tables) for `mode` and
/// returns the special registers that use them.
pub fn setup_sregs(
    mem: &GuestMemoryMmap,
    mode: EntryMode,
    mut sregs: kvm_sregs,
) -> Result<kvm_sregs, RegsError> {
    let gdt: &[u64; 4] = match mode {
        EntryMode::Pvh { .. } => &GDT_PROTECTED_MODE,
        EntryMode::Linux64 { .. } => &GDT_LONG_MODE,
    };
    write_u64s(mem, BOOT_GDT_START, gdt, "GDT")?;
    write_u64s(mem, BOOT_IDT_START, &[0], "IDT")?;

    let code = segment_from_gdt(gdt[1], 1);
    let data = segment_from_gdt(gdt[2], 2);
    let tss = segment_from_gdt(gdt[3], 3);
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = u16::try_from(std::mem::size_of_val(gdt) - 1).unwrap_or(u16::MAX);
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;

    match mode {
        EntryMode::Pvh { .. } => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr3 = 0;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
        EntryMode::Linux64 { .. } => {
            write_identity_page_tables(mem)?;
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
            sregs.cr3 = PML4_START;
            sregs.cr4 = X86_CR4_PAE;
            sregs.efer = EFER_LME | EFER_LMA;
        }
    }
    Ok(sregs)
}

/// General-purpose registers at the entry point.
pub fn boot_regs(mode: EntryMode) -> kvm_regs {
    let mut regs = kvm_regs {
        // Bit 1 of RFLAGS is reserved and must be set; interrupts stay off.
        rflags: 0x2,
        ..Default::default()
    };
    match mode {
        EntryMode::Pvh { entry, start_info } => {
            regs.rip = entry.0;
            regs.rbx = start_info.0;
        }
        EntryMode::Linux64 { entry, zero_page } => {
            regs.rip = entry.0;
            regs.rsi = zero_page.0;
            // Stack and frame pointers just below the zero page (boot
            // protocol: any usable memory will do).
            regs.rsp = zero_page.0 - 0x10;
            regs.rbp = regs.rsp;
        }
    }
    regs
}

/// The FPU as after FNINIT, with SSE exceptions masked.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

/// Local APIC LVT offsets and delivery modes for LINT0/LINT1.
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_EXTINT: u32 = 0x7;
const APIC_MODE_NMI: u32 = 0x4;

fn lvt_with_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

/// Programs LINT0 as ExtINT (the PIC's line) and LINT1 as NMI, as a BIOS
/// would, in a raw `kvm_lapic_state` register page.
pub fn set_lint(regs: &mut [std::os::raw::c_char; 1024]) {
    for (offset, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
        let mut raw = [0u8; 4];
        for (i, b) in raw.iter_mut().enumerate() {
            *b = regs[offset + i].to_le_bytes()[0];
        }
        let value = lvt_with_mode(u32::from_le_bytes(raw), mode);
        for (i, b) in value.to_le_bytes().iter().enumerate() {
            regs[offset + i] = std::os::raw::c_char::from_le_bytes([*b]);
        }
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    #[test]
    fn gdt_entries_round_trip_into_segments() {
        let code = segment_from_gdt(gdt_entry(0xa09b, 0, 0xfffff), 1);
        assert_eq!((code.selector, code.type_, code.l, code.db), (8, 0xb, 1, 0));
        assert_eq!(
            (code.present, code.s, code.g, code.limit),
            (1, 1, 1, 0xffff_ffff)
        );
        let data = segment_from_gdt(gdt_entry(0xc093, 0x1234_5678, 0xfffff), 2);
        assert_eq!((data.base, data.db, data.type_), (0x1234_5678, 1, 3));
        let null = segment_from_gdt(0, 0);
        assert_eq!(null.unusable, 1);
    }

    #[test]
    fn long_mode_sregs_enable_paging_on_identity_tables() {
        let m = mem();
        let mode = EntryMode::Linux64 {
            entry: GuestAddress(0x100_0000),
            zero_page: GuestAddress(0x7000),
        };
        let s = setup_sregs(&m, mode, kvm_sregs::default()).unwrap();
        assert_eq!(s.cr3, PML4_START);
        assert_ne!(s.cr0 & X86_CR0_PG, 0);
        assert_eq!(s.efer, EFER_LME | EFER_LMA);
        assert_eq!(s.cs.l, 1);
        let pml4: u64 = m.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4, PDPTE_START | 3);
        let pde_last: u64 = m.read_obj(GuestAddress(PDE_START + 511 * 8)).unwrap();
        assert_eq!(pde_last, (511 << 21) | 0x83);
        let regs = boot_regs(mode);
        assert_eq!((regs.rip, regs.rsi), (0x100_0000, 0x7000));
    }

    #[test]
    fn pvh_sregs_are_flat_protected_mode_without_paging() {
        let m = mem();
        let mode = EntryMode::Pvh {
            entry: GuestAddress(0x100_0200),
            start_info: GuestAddress(0x6000),
        };
        let s = setup_sregs(&m, mode, kvm_sregs::default()).unwrap();
        assert_eq!(s.cr0, X86_CR0_PE | X86_CR0_ET);
        assert_eq!((s.cr4, s.efer), (0, 0));
        assert_eq!((s.cs.db, s.cs.l, s.cs.limit), (1, 0, 0xffff_ffff));
        let regs = boot_regs(mode);
        assert_eq!((regs.rip, regs.rbx, regs.rflags), (0x100_0200, 0x6000, 2));
    }

    #[test]
    fn lint_pins_get_extint_and_nmi() {
        let mut page = [0 as std::os::raw::c_char; 1024];
        page[APIC_LVT0 + 1] = 0x07; // some other mode bits set
        set_lint(&mut page);
        assert_eq!(page[APIC_LVT0 + 1] as u8 & 0x7, APIC_MODE_EXTINT as u8);
        assert_eq!(page[APIC_LVT1 + 1] as u8 & 0x7, APIC_MODE_NMI as u8);
    }
}
