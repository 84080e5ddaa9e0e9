//! ACPI tables: RSDP → XSDT → {FADT → DSDT, MADT}.
//!
//! The platform is "hardware-reduced" ACPI: no PM1 blocks, SCI or PM timer,
//! which a VMM would otherwise have to emulate. Power-off goes through the
//! FADT sleep-control register and reset through the FADT reset register
//! (both served by `stratus_devices::legacy::acpi_pm`). The DSDT describes
//! COM1, the `_S5_` sleep state and every virtio-mmio device as `LNRO0005`,
//! so a stock distro kernel finds its devices without command-line help.
//!
//! Opt-in ([`PlatformDevices`]): the i8042 keyboard as `PNP0303`, so a
//! kernel with `i8042` as a module autoloads it, and a power button. With
//! no fixed-feature button on a hardware-reduced platform, the button is a
//! Generic Event Device (`ACPI0013`) whose interrupt runs `_EVT`, which
//! notifies the `PNP0C0C` button device.

use acpi_tables::aml::{
    self, Arg, Device, EISAName, Equal, If, Interrupt, Memory32Fixed, Method, Name, Notify,
    Package, Path, ResourceTemplate, Scope, IO,
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
use stratus_devices::legacy::i8042::{COMMAND_OFFSET, I8042_KBD_IRQ, I8042_PORT_BASE};
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
const I8042_DATA_PORT: u16 = {
    assert!(I8042_PORT_BASE + COMMAND_OFFSET <= u16::MAX as u64);
    I8042_PORT_BASE as u16
};
#[allow(clippy::cast_possible_truncation)] // range asserted above
const I8042_COMMAND_PORT: u16 = (I8042_PORT_BASE + COMMAND_OFFSET) as u16;
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
/// "The motherboard contains an 8042": set with the keyboard. Linux only
/// falls back to probing ports 0x60/0x64 directly (when it finds no
/// `PNP0303`) if this is set.
const IAPC_8042: u16 = 1 << 1;

/// The IOAPIC's pins, which are GSIs 0..24 (MADT: one IOAPIC at GSI base 0).
const IOAPIC_PINS: u32 = 24;
/// GSIs 0–4 are the legacy ISA lines (PIT, keyboard, cascade, COM2, COM1).
const LAST_LEGACY_GSI: u32 = 4;
/// `Notify` value for a button press (ACPI: "button pressed").
const NOTIFY_BUTTON_PRESSED: u8 = 0x80;

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

/// Platform devices the DSDT describes only when asked, because describing
/// a device makes the guest drive it: the VMM must wire its interrupt first.
/// The default describes neither (the tables are then exactly those of
/// [`write_tables`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlatformDevices {
    /// Describe the i8042 keyboard (`PNP0303`: ports 0x60 and 0x64, IRQ 1)
    /// and set the FADT's 8042 flag. Set it when the i8042 was built with
    /// its IRQ-1 irqfd (`I8042::with_interrupt`). Default `false`.
    pub keyboard: bool,
    /// Describe the power button (GED `ACPI0013` + `PNP0C0C`) on this GSI —
    /// normally `stratus_devices::legacy::power_button::POWER_BUTTON_GSI`,
    /// with the `PowerButton`'s `EventFd` registered as an irqfd on it.
    /// Must be above the legacy lines, below 24 and unused by virtio
    /// devices. Default `None`.
    pub power_button_gsi: Option<u32>,
}

/// Errors building or placing the tables.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// The tables do not fit between `ACPI_START` and `ACPI_END` (SMBIOS follows).
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
    /// The power button's GSI is legacy, beyond the IOAPIC, or taken.
    #[error(
        "GSI {0} cannot be the power button's: it must be 5..=23 and not used by a virtio device"
    )]
    PowerButtonGsi(u32),
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
pub fn dsdt_body(platform: &AcpiPlatform, devices: &PlatformDevices) -> Result<Vec<u8>, AcpiError> {
    if let Some(gsi) = devices.power_button_gsi {
        let taken = platform.mmio_devices.iter().any(|dev| dev.irq == gsi);
        if gsi <= LAST_LEGACY_GSI || gsi >= IOAPIC_PINS || taken {
            return Err(AcpiError::PowerButtonGsi(gsi));
        }
    }
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
    let keyboard = devices.keyboard.then(keyboard_aml);
    let power_button = devices.power_button_gsi.map(power_button_aml);

    let mut children: Vec<&dyn Aml> = vec![&com1];
    let keyboard_raw = keyboard.as_deref().map(RawAml);
    children.extend(keyboard_raw.as_ref().map(|r| r as &dyn Aml));
    children.extend(virtio_raw.iter().map(|r| r as &dyn Aml));
    let power_button_raw = power_button.as_deref().map(RawAml);
    children.extend(power_button_raw.as_ref().map(|r| r as &dyn Aml));
    Scope::new(Path::new("\\_SB_"), children).to_aml_bytes(&mut body);
    Ok(body)
}

/// `\_SB_.PS2K`: the i8042's keyboard port, which Linux's i8042 driver
/// binds to by `PNP0303` (and udev autoloads it by the same id). The data
/// and command ports must each be described with length 1, data first.
fn keyboard_aml() -> Vec<u8> {
    let hid = Name::new(Path::new("_HID"), &EISAName::new("PNP0303"));
    let data = IO::new(I8042_DATA_PORT, I8042_DATA_PORT, 1, 1);
    let command = IO::new(I8042_COMMAND_PORT, I8042_COMMAND_PORT, 1, 1);
    // Edge, active high: the ISA default, and how the i8042 model raises it.
    let irq = Interrupt::new(true, true, false, false, I8042_KBD_IRQ);
    let crs_template = ResourceTemplate::new(vec![&data, &command, &irq]);
    let crs = Name::new(Path::new("_CRS"), &crs_template);
    to_bytes(&Device::new(Path::new("PS2K"), vec![&hid, &crs]))
}

/// `\_SB_.GED0` and `\_SB_.PWRB`: the power button of a hardware-reduced
/// platform.
///
/// The GED's one interrupt is edge-triggered, active high. The VMM presses
/// the button by writing an irqfd once, which KVM delivers as a single edge
/// (assert, then deassert). Linux's GED driver (evged) requests the
/// interrupt as a threaded one-shot handler that evaluates `_EVT(gsi)`
/// once per interrupt; as an edge, each write is exactly one `_EVT` run,
/// and nothing has to lower the line afterwards. Level-triggered, the line
/// would have no device register to acknowledge, and the pulse would rely on
/// KVM's line state rather than mean "one press".
///
/// `_EVT` checks that the interrupt is the button's, then notifies `PWRB`
/// with 0x80; the guest's ACPI button driver turns that into a power-key
/// press, which systemd-logind (or acpid) handles as a clean shutdown.
fn power_button_aml(gsi: u32) -> Vec<u8> {
    let hid = Name::new(Path::new("_HID"), &"ACPI0013");
    let uid = Name::new(Path::new("_UID"), &aml::ZERO);
    let irq = Interrupt::new(true, true, false, false, gsi);
    let crs_template = ResourceTemplate::new(vec![&irq]);
    let crs = Name::new(Path::new("_CRS"), &crs_template);
    let button = Path::new("\\_SB_.PWRB");
    let notify = Notify::new(&button, &NOTIFY_BUTTON_PRESSED);
    let is_button = Equal::new(&Arg(0), &gsi);
    let if_button = If::new(&is_button, vec![&notify]);
    let evt = Method::new(Path::new("_EVT"), 1, false, vec![&if_button]);
    let mut bytes = to_bytes(&Device::new(
        Path::new("GED0"),
        vec![&hid, &uid, &crs, &evt],
    ));

    let pwrb_hid = Name::new(Path::new("_HID"), &EISAName::new("PNP0C0C"));
    let pwrb_uid = Name::new(Path::new("_UID"), &aml::ZERO);
    Device::new(Path::new("PWRB"), vec![&pwrb_hid, &pwrb_uid]).to_aml_bytes(&mut bytes);
    bytes
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

fn dsdt(platform: &AcpiPlatform, devices: &PlatformDevices) -> Result<Vec<u8>, AcpiError> {
    let mut table = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    table.append_slice(&dsdt_body(platform, devices)?);
    Ok(table.as_slice().to_vec())
}

fn fadt(dsdt_addr: u64, devices: &PlatformDevices) -> Vec<u8> {
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
    let mut iapc_boot_arch =
        IAPC_VGA_NOT_PRESENT | IAPC_MSI_NOT_SUPPORTED | IAPC_CMOS_RTC_NOT_PRESENT;
    if devices.keyboard {
        iapc_boot_arch |= IAPC_8042;
    }
    builder.iapc_boot_arch = iapc_boot_arch.into();
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
/// address, for the PVH start info and the zero page. Describes no
/// [`PlatformDevices`]; see [`write_tables_with`].
pub fn write_tables(
    mem: &GuestMemoryMmap,
    platform: &AcpiPlatform,
) -> Result<GuestAddress, AcpiError> {
    write_tables_with(mem, platform, &PlatformDevices::default())
}

/// [`write_tables`], also describing the opt-in `devices`.
pub fn write_tables_with(
    mem: &GuestMemoryMmap,
    platform: &AcpiPlatform,
    devices: &PlatformDevices,
) -> Result<GuestAddress, AcpiError> {
    let align = |addr: u64| addr.next_multiple_of(16);
    let rsdp_addr = ACPI_START;
    let dsdt_addr = align(rsdp_addr + Rsdp::len() as u64);
    let dsdt = dsdt(platform, devices)?;
    let fadt_addr = align(dsdt_addr + dsdt.len() as u64);
    let fadt = fadt(dsdt_addr, devices);
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
        let body = dsdt_body(&platform(1, 3), &PlatformDevices::default()).unwrap();
        let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"_S5_"));
        assert!(has(b"COM1"));
        assert!(has(b"LNRO0005"));
        for name in [b"V000", b"V001", b"V002"] {
            assert!(has(name));
        }
        assert!(!has(b"V003"));
        // Opt-in devices stay out by default.
        for absent in [&b"PS2K"[..], b"GED0", b"PWRB", b"ACPI0013"] {
            assert!(!has(absent));
        }
    }

    const BOTH: PlatformDevices = PlatformDevices {
        keyboard: true,
        power_button_gsi: Some(23),
    };

    /// Whether `body` contains `needle` as one contiguous run.
    fn contains(body: &[u8], needle: &[u8]) -> bool {
        body.windows(needle.len()).any(|w| w == needle)
    }

    // The expected encodings below are derived by hand from the ACPI spec
    // (ch. 6.4 resource descriptors, ch. 20 AML grammar), not from the
    // builder, so they check what the guest will parse.

    /// EISA id compression: three 5-bit letters (A = 1) and four hex
    /// digits, stored big-endian. "PNP" = 10000 01110 10000 → 0x41D0.
    const PNP0303: [u8; 5] = [0x0c, 0x41, 0xd0, 0x03, 0x03];
    const PNP0C0C: [u8; 5] = [0x0c, 0x41, 0xd0, 0x0c, 0x0c];

    #[test]
    fn keyboard_is_pnp0303_on_ports_60_64_irq_1() {
        let body = dsdt_body(&platform(1, 1), &BOTH).unwrap();
        let mut expected = vec![0x5b, 0x82, 0x33]; // Device, PkgLength 51
        expected.extend(b"PS2K");
        expected.extend([0x08]); // Name
        expected.extend(b"_HID");
        expected.extend(PNP0303);
        expected.extend([0x08]);
        expected.extend(b"_CRS");
        // Buffer, PkgLength 30, BufferSize 27.
        expected.extend([0x11, 0x1e, 0x0a, 0x1b]);
        // IO(Decode16, 0x60, 0x60, align 1, len 1), then 0x64.
        expected.extend([0x47, 0x01, 0x60, 0x00, 0x60, 0x00, 0x01, 0x01]);
        expected.extend([0x47, 0x01, 0x64, 0x00, 0x64, 0x00, 0x01, 0x01]);
        // Extended IRQ: consumer, edge, active high, exclusive; one: GSI 1.
        expected.extend([0x89, 0x06, 0x00, 0x03, 0x01, 0x01, 0x00, 0x00, 0x00]);
        expected.extend([0x79, 0x00]); // End tag
        assert_eq!(expected.len(), 3 + 50);
        assert!(contains(&body, &expected));
    }

    #[test]
    fn power_button_is_a_ged_notifying_pnp0c0c() {
        let body = dsdt_body(&platform(1, 1), &BOTH).unwrap();
        // Device, PkgLength 73 in two bytes (0x40 | low nibble, high bits).
        let mut ged = vec![0x5b, 0x82, 0x49, 0x04];
        ged.extend(b"GED0");
        ged.extend([0x08]);
        ged.extend(b"_HID");
        ged.extend([0x0d]); // String
        ged.extend(b"ACPI0013\0");
        ged.extend([0x08]);
        ged.extend(b"_UID");
        ged.extend([0x00]); // Zero
        ged.extend([0x08]);
        ged.extend(b"_CRS");
        ged.extend([0x11, 0x0e, 0x0a, 0x0b]); // Buffer, PkgLength 14, size 11
                                              // Extended IRQ: consumer, edge, active high, exclusive; GSI 23.
        ged.extend([0x89, 0x06, 0x00, 0x03, 0x01, 0x17, 0x00, 0x00, 0x00]);
        ged.extend([0x79, 0x00]);
        // Method(_EVT, 1 arg, not serialized), PkgLength 25.
        ged.extend([0x14, 0x19]);
        ged.extend(b"_EVT");
        ged.extend([0x01]);
        // If (PkgLength 18) (LEqual(Arg0, 23)) ...
        ged.extend([0xa0, 0x12, 0x93, 0x68, 0x0a, 0x17]);
        // ... Notify(\_SB_.PWRB, 0x80): root, dual name, byte 0x80.
        ged.extend([0x86, b'\\', 0x2e]);
        ged.extend(b"_SB_PWRB");
        ged.extend([0x0a, 0x80]);
        assert_eq!(ged.len(), 4 + 71);
        assert!(contains(&body, &ged));

        let mut pwrb = vec![0x5b, 0x82, 0x15]; // Device, PkgLength 21
        pwrb.extend(b"PWRB");
        pwrb.extend([0x08]);
        pwrb.extend(b"_HID");
        pwrb.extend(PNP0C0C);
        pwrb.extend([0x08]);
        pwrb.extend(b"_UID");
        pwrb.extend([0x00]);
        assert!(contains(&body, &pwrb));
    }

    #[test]
    fn power_button_gsi_must_be_free() {
        let with_gsi = |gsi| PlatformDevices {
            keyboard: false,
            power_button_gsi: Some(gsi),
        };
        let three_virtio = platform(1, 3); // GSIs 5, 6, 7
        for bad in [0, 1, 4, 6, 24, u32::MAX] {
            assert!(
                matches!(
                    dsdt_body(&three_virtio, &with_gsi(bad)),
                    Err(AcpiError::PowerButtonGsi(gsi)) if gsi == bad
                ),
                "GSI {bad}"
            );
        }
        for good in [8, 23] {
            assert!(dsdt_body(&three_virtio, &with_gsi(good)).is_ok());
        }
    }

    #[test]
    fn tables_with_devices_stay_valid_and_flag_the_8042() {
        for (devices, flag) in [(PlatformDevices::default(), 0), (BOTH, IAPC_8042)] {
            let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
            let rsdp = write_tables_with(&mem, &platform(2, 4), &devices).unwrap();
            let mut raw = [0u8; 36];
            mem.read_slice(&mut raw, rsdp).unwrap();
            let xsdt_addr = u64::from_le_bytes(raw[24..32].try_into().unwrap());
            let xsdt = read_table(&mem, xsdt_addr);
            assert!(checksum_ok(&xsdt));
            let fadt_addr = u64::from_le_bytes(xsdt[36..44].try_into().unwrap());
            let fadt = read_table(&mem, fadt_addr);
            assert!(checksum_ok(&fadt));
            // IAPC_BOOT_ARCH at offset 109: VGA, MSI and RTC absent as before.
            let iapc = u16::from_le_bytes(fadt[109..111].try_into().unwrap());
            assert_eq!(iapc, 0b10_1100 | flag);
            let x_dsdt = u64::from_le_bytes(fadt[140..148].try_into().unwrap());
            let dsdt = read_table(&mem, x_dsdt);
            assert!(checksum_ok(&dsdt));
            assert_eq!(contains(&dsdt, &PNP0303), devices.keyboard);
            assert_eq!(
                contains(&dsdt, &PNP0C0C),
                devices.power_button_gsi.is_some()
            );
        }
    }

    #[test]
    fn too_many_devices_is_an_error_not_an_overflow() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let err = write_tables(&mem, &platform(32, 2000)).unwrap_err();
        assert!(matches!(err, AcpiError::TooLarge { .. }));
    }
}
