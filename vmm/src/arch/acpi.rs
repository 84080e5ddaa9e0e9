//! ACPI tables: RSDP → XSDT → {FADT → DSDT, MADT}.
//!
//! The platform is "hardware-reduced" ACPI: no PM1 blocks, SCI or PM timer,
//! which a VMM would otherwise have to emulate. Power-off goes through the
//! FADT sleep-control register and reset through the FADT reset register
//! (both served by `stratus_devices::legacy::acpi_pm`). The DSDT describes
//! COM1, the `_S5_` sleep state and every virtio-mmio device as `LNRO0005`,
//! so a stock distro kernel finds its devices without command-line help.

use acpi_tables::aml::{
    self, Device, EISAName, Interrupt, Memory32Fixed, Name, Package, Path, ResourceTemplate, Scope,
    IO,
};
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use stratus_devices::legacy::acpi_pm::{
    ACPI_PM_PORT_BASE, RESET_OFFSET, RESET_VALUE, S5_SLEEP_TYPE, SLEEP_CONTROL_OFFSET,
    SLEEP_STATUS_OFFSET,
};
use stratus_devices::legacy::serial::{COM1_IRQ, COM1_PORT_BASE, COM1_PORT_LEN};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout::{ACPI_END, ACPI_START, IOAPIC_ADDR, LAPIC_ADDR};

// Narrowed once, checked at compile time, for the descriptors that take
// 16/32-bit fields.
#[allow(clippy::cast_possible_truncation)] // range asserted below
const COM1_IO_BASE: u16 = {
    assert!(COM1_PORT_BASE <= u16::MAX as u64);
    COM1_PORT_BASE as u16
};
#[allow(clippy::cast_possible_truncation)] // range asserted below
const COM1_IO_LEN: u8 = {
    assert!(COM1_PORT_LEN <= u8::MAX as u64);
    COM1_PORT_LEN as u8
};
#[allow(clippy::cast_possible_truncation)] // range asserted below
const LAPIC_ADDR_32: u32 = {
    assert!(LAPIC_ADDR <= u32::MAX as u64);
    LAPIC_ADDR as u32
};
#[allow(clippy::cast_possible_truncation)] // range asserted below
const IOAPIC_ADDR_32: u32 = {
    assert!(IOAPIC_ADDR <= u32::MAX as u64);
    IOAPIC_ADDR as u32
};

const OEM_ID: [u8; 6] = *b"STRATS";
const OEM_TABLE_ID: [u8; 8] = *b"STRATUSV";
const OEM_REVISION: u32 = 1;

/// IA-PC boot architecture flags (FADT): no VGA, no MSI (no PCI), and no
/// CMOS RTC, so the guest does not poke at hardware that is not there.
const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;
const IAPC_MSI_NOT_SUPPORTED: u16 = 1 << 3;
const IAPC_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;

/// A virtio-mmio device to describe in the DSDT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioDeviceInfo {
    /// Register window base.
    pub addr: u64,
    /// Register window length.
    pub len: u64,
    /// GSI of its (edge-triggered) interrupt.
    pub irq: u32,
}

/// What the tables describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiPlatform {
    /// vCPU count; APIC ids are 0..count.
    pub vcpus: u8,
    /// virtio-mmio devices.
    pub mmio_devices: Vec<MmioDeviceInfo>,
}

/// Errors building or placing the tables.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// The tables do not fit between `ACPI_START` and 1 MiB.
    #[error("ACPI tables need {needed} bytes but only {available} are reserved")]
    TooLarge {
        /// Bytes the tables need.
        needed: u64,
        /// Bytes reserved for them.
        available: u64,
    },
    /// A device field does not fit the ACPI descriptor.
    #[error("virtio-mmio device at {0:#x} is outside the 32-bit address space")]
    DeviceAddress(u64),
    /// Guest memory rejected the write.
    #[error("failed to write ACPI tables to guest memory: {0}")]
    Write(#[from] vm_memory::GuestMemoryError),
}

fn to_bytes(table: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    table.to_aml_bytes(&mut bytes);
    bytes
}

/// Builds the DSDT's AML body.
pub fn dsdt_body(platform: &AcpiPlatform) -> Result<Vec<u8>, AcpiError> {
    let mut body = Vec::new();

    // \_S5_: SLP_TYPa/SLP_TYPb for soft-off. Without it Linux cannot power
    // the VM off through ACPI and halts forever instead.
    Name::new(Path::new("_S5_"), &Package::new(vec![&S5_SLEEP_TYPE])).to_aml_bytes(&mut body);

    let com1_io = IO::new(COM1_IO_BASE, COM1_IO_BASE, 1, COM1_IO_LEN);
    let com1_irq = Interrupt::new(true, true, false, false, COM1_IRQ);
    let com1_crs = ResourceTemplate::new(vec![&com1_io, &com1_irq]);
    let com1_hid = Name::new(Path::new("_HID"), &EISAName::new("PNP0501"));
    let com1_uid = Name::new(Path::new("_UID"), &aml::ZERO);
    let com1_res = Name::new(Path::new("_CRS"), &com1_crs);
    let com1 = Device::new(Path::new("COM1"), vec![&com1_hid, &com1_uid, &com1_res]);

    let mut virtio_devices = Vec::with_capacity(platform.mmio_devices.len());
    for (index, dev) in (0u32..).zip(&platform.mmio_devices) {
        let base = u32::try_from(dev.addr).map_err(|_| AcpiError::DeviceAddress(dev.addr))?;
        let len = u32::try_from(dev.len).map_err(|_| AcpiError::DeviceAddress(dev.addr))?;
        virtio_devices.push(VirtioAml {
            name: format!("V{index:03X}"),
            uid: index,
            base,
            len,
            irq: dev.irq,
        });
    }
    let virtio_aml: Vec<Vec<u8>> = virtio_devices.iter().map(VirtioAml::to_bytes).collect();
    let virtio_raw: Vec<RawAml> = virtio_aml.iter().map(|b| RawAml(b)).collect();

    let mut children: Vec<&dyn Aml> = vec![&com1];
    children.extend(virtio_raw.iter().map(|r| r as &dyn Aml));
    Scope::new(Path::new("\\_SB_"), children).to_aml_bytes(&mut body);
    Ok(body)
}

/// Already-serialized AML, so nested builders can be assembled in a loop.
struct RawAml<'a>(&'a [u8]);

impl Aml for RawAml<'_> {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(self.0);
    }
}

struct VirtioAml {
    name: String,
    uid: u32,
    base: u32,
    len: u32,
    irq: u32,
}

impl VirtioAml {
    fn to_bytes(&self) -> Vec<u8> {
        let hid = Name::new(Path::new("_HID"), &"LNRO0005");
        let uid = Name::new(Path::new("_UID"), &self.uid);
        // Cache-coherent DMA: guest and device share ordinary memory.
        let cca = Name::new(Path::new("_CCA"), &aml::ONE);
        let window = Memory32Fixed::new(true, self.base, self.len);
        let irq = Interrupt::new(true, true, false, false, self.irq);
        let crs_template = ResourceTemplate::new(vec![&window, &irq]);
        let crs = Name::new(Path::new("_CRS"), &crs_template);
        to_bytes(&Device::new(
            Path::new(&self.name),
            vec![&hid, &uid, &cca, &crs],
        ))
    }
}

fn dsdt(platform: &AcpiPlatform) -> Result<Vec<u8>, AcpiError> {
    let mut table = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    table.append_slice(&dsdt_body(platform)?);
    Ok(table.as_slice().to_vec())
}

fn fadt(dsdt_addr: u64) -> Vec<u8> {
    let io_reg = |offset: u64| {
        GAS::new(
            AddressSpace::SystemIo,
            8,
            0,
            AccessSize::ByteAccess,
            ACPI_PM_PORT_BASE + offset,
        )
    };
    let mut builder = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    builder.iapc_boot_arch =
        (IAPC_VGA_NOT_PRESENT | IAPC_MSI_NOT_SUPPORTED | IAPC_CMOS_RTC_NOT_PRESENT).into();
    builder.reset_reg = io_reg(RESET_OFFSET);
    builder.reset_value = RESET_VALUE;
    builder.sleep_control_reg = io_reg(SLEEP_CONTROL_OFFSET);
    builder.sleep_status_reg = io_reg(SLEEP_STATUS_OFFSET);
    builder.hypervisor_vendor_identity = u64::from_le_bytes(*b"STRATUS\0").into();
    to_bytes(&builder.finalize())
}

fn madt(vcpus: u8) -> Vec<u8> {
    let mut table = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
        LocalInterruptController::Address(LAPIC_ADDR_32),
    );
    for id in 0..vcpus {
        table.add_structure(ProcessorLocalApic::new(id, id, EnabledStatus::Enabled));
    }
    table.add_structure(IoApic::new(0, IOAPIC_ADDR_32, 0));
    to_bytes(&table)
}

/// Builds every table and writes them at `ACPI_START`. Returns the RSDP's
/// address, for the PVH start info and the zero page.
pub fn write_tables(
    mem: &GuestMemoryMmap,
    platform: &AcpiPlatform,
) -> Result<GuestAddress, AcpiError> {
    let align = |addr: u64| addr.next_multiple_of(16);
    let rsdp_addr = ACPI_START;
    let dsdt_addr = align(rsdp_addr + Rsdp::len() as u64);
    let dsdt = dsdt(platform)?;
    let fadt_addr = align(dsdt_addr + dsdt.len() as u64);
    let fadt = fadt(dsdt_addr);
    let madt_addr = align(fadt_addr + fadt.len() as u64);
    let madt = madt(platform.vcpus);
    let xsdt_addr = align(madt_addr + madt.len() as u64);
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    let xsdt = to_bytes(&xsdt);
    let end = xsdt_addr + xsdt.len() as u64;
    if end > ACPI_END {
        return Err(AcpiError::TooLarge {
            needed: end - ACPI_START,
            available: ACPI_END - ACPI_START,
        });
    }
    let rsdp = to_bytes(&Rsdp::new(OEM_ID, xsdt_addr));
    for (addr, bytes) in [
        (rsdp_addr, &rsdp),
        (dsdt_addr, &dsdt),
        (fadt_addr, &fadt),
        (madt_addr, &madt),
        (xsdt_addr, &xsdt),
    ] {
        mem.write_slice(bytes, GuestAddress(addr))?;
    }
    Ok(GuestAddress(rsdp_addr))
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    fn checksum_ok(bytes: &[u8]) -> bool {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
    }

    fn read_table(mem: &GuestMemoryMmap, addr: u64) -> Vec<u8> {
        let len: u32 = mem.read_obj(GuestAddress(addr + 4)).unwrap();
        let mut buf = vec![0u8; len as usize];
        mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        buf
    }

    fn platform(vcpus: u8, devices: usize) -> AcpiPlatform {
        AcpiPlatform {
            vcpus,
            mmio_devices: (0..devices)
                .map(|i| MmioDeviceInfo {
                    addr: 0xc000_0000 + 0x1000 * i as u64,
                    len: 0x1000,
                    irq: 5 + i as u32,
                })
                .collect(),
        }
    }

    #[test]
    fn tables_chain_from_rsdp_with_valid_checksums() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let rsdp = write_tables(&mem, &platform(4, 2)).unwrap();
        let mut raw = [0u8; 36];
        mem.read_slice(&mut raw, rsdp).unwrap();
        assert_eq!(&raw[0..8], b"RSD PTR ");
        assert!(checksum_ok(&raw[0..20]));
        assert!(checksum_ok(&raw));
        let xsdt_addr = u64::from_le_bytes(raw[24..32].try_into().unwrap());
        let xsdt = read_table(&mem, xsdt_addr);
        assert_eq!(&xsdt[0..4], b"XSDT");
        assert!(checksum_ok(&xsdt));
        let entries: Vec<u64> = xsdt[36..]
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(entries.len(), 2);

        let fadt = read_table(&mem, entries[0]);
        assert_eq!(&fadt[0..4], b"FACP");
        assert!(checksum_ok(&fadt));
        let flags = u32::from_le_bytes(fadt[112..116].try_into().unwrap());
        assert_ne!(flags & (1 << 20), 0, "hardware-reduced");
        assert_ne!(flags & (1 << 10), 0, "reset register supported");
        let x_dsdt = u64::from_le_bytes(fadt[140..148].try_into().unwrap());
        let dsdt = read_table(&mem, x_dsdt);
        assert_eq!(&dsdt[0..4], b"DSDT");
        assert!(checksum_ok(&dsdt));

        let madt = read_table(&mem, entries[1]);
        assert_eq!(&madt[0..4], b"APIC");
        assert!(checksum_ok(&madt));
        // Local APIC structures (type 0) — one per vCPU — and one IOAPIC (type 1).
        let mut offset = 44;
        let (mut lapics, mut ioapics) = (0, 0);
        while offset < madt.len() {
            match madt[offset] {
                0 => {
                    assert_eq!(madt[offset + 3], lapics, "APIC id equals the vCPU index");
                    lapics += 1;
                }
                1 => ioapics += 1,
                other => panic!("unexpected MADT structure {other}"),
            }
            offset += madt[offset + 1] as usize;
        }
        assert_eq!((lapics, ioapics), (4, 1));
    }

    #[test]
    fn dsdt_lists_com1_s5_and_each_virtio_device() {
        let body = dsdt_body(&platform(1, 3)).unwrap();
        let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"_S5_"));
        assert!(has(b"COM1"));
        assert!(has(b"LNRO0005"));
        for name in [b"V000", b"V001", b"V002"] {
            assert!(has(name));
        }
        assert!(!has(b"V003"));
    }

    #[test]
    fn too_many_devices_is_an_error_not_an_overflow() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let err = write_tables(&mem, &platform(32, 2000)).unwrap_err();
        assert!(matches!(err, AcpiError::TooLarge { .. }));
    }
}
