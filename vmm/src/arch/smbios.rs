//! SMBIOS (DMI) tables that make the guest look like an EC2 instance.
//!
//! Linux reads "what machine is this" from SMBIOS and shows it under
//! `/sys/class/dmi/id/`. cloud-init's `ds-identify` (strict by default)
//! picks its EC2 datasource only from that data, as do `systemd-detect-virt`
//! (`amazon`) and the AWS tools. The tables written here mirror a Nitro
//! instance's:
//!
//! | `/sys/class/dmi/id/` | SMBIOS field              | value                    |
//! |----------------------|---------------------------|--------------------------|
//! | `bios_vendor`        | type 0 vendor             | `Amazon EC2`             |
//! | `bios_version`       | type 0 version            | `1.0`                    |
//! | `bios_date`          | type 0 release date       | `10/16/2017`             |
//! | `sys_vendor`         | type 1 manufacturer       | `Amazon EC2`             |
//! | `product_name`       | type 1 product name       | instance type            |
//! | `product_serial`     | type 1 serial number      | the UUID, as text        |
//! | `product_uuid`       | type 1 UUID               | `ec2xxxxx-xxxx-8xxx-…`   |
//! | `board_vendor`       | type 2 manufacturer       | `Amazon EC2`             |
//! | `chassis_vendor`     | type 3 manufacturer       | `Amazon EC2`             |
//! | `chassis_type`       | type 3 type               | `1` (Other)              |
//! | `chassis_asset_tag`  | type 3 asset tag          | instance id (`--id`)     |
//!
//! Every other string is "Not Specified" (string number 0), as on EC2.
//!
//! **The serial number is the UUID, not the instance id.** `ds-identify`
//! calls the platform AWS only when `product_uuid` and `product_serial` both
//! start with `ec2` *and* are equal ignoring case — which is what EC2 itself
//! reports. The instance id is the chassis asset tag, also as on EC2.
//!
//! **Product name** is `--instance-type NAME` (JSON `instance_type`), or
//! `stratus.custom` ([`crate::config::DEFAULT_INSTANCE_TYPE`]) when absent.
//!
//! **The UUID** is derived from the instance id, so a given instance keeps
//! its UUID across restarts and two instances do not share one:
//! the 128-bit FNV-1a hash of the id's bytes (offset basis
//! `0x6c62272e07bb014262b821756295c58d`, prime `2^88 + 0x13b`), taken as
//! 16 big-endian bytes in text order, then the first three hex digits are
//! forced to `ec2` (what identifies EC2), the version nibble to 8 ("custom",
//! RFC 9562) and the variant bits to `10` (RFC). 110 bits come from the hash.
//! SMBIOS ≥ 2.6 stores the first three fields little-endian; Linux decodes
//! them that way (`%pUl`), so `product_uuid` reads `ec2…` in lowercase.
//!
//! **Placement.** SMBIOS 3.0, 64-bit entry point (`_SM3_`) only — Linux has
//! read it since 3.19, and without EFI it scans 0xF0000–0xFFFFF on 16-byte
//! boundaries for the anchor. The entry point is at
//! [`SMBIOS_START`](crate::layout::SMBIOS_START) (0xF0000), the structure
//! table right after it at 0xF0020; the ACPI tables end below 0xF0000. The
//! whole 0x9FC00–0xFFFFF area is reserved (not RAM) in the e820 map.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout::{SMBIOS_END, SMBIOS_START};

/// What every manufacturer/vendor field says.
pub const VENDOR: &str = "Amazon EC2";
/// BIOS version string (type 0).
pub const BIOS_VERSION: &str = "1.0";
/// BIOS release date (type 0), `mm/dd/yyyy` as the spec asks.
pub const BIOS_RELEASE_DATE: &str = "10/16/2017";

/// SMBIOS version the tables follow: 3.0.0.
const SMBIOS_MAJOR: u8 = 3;
const SMBIOS_MINOR: u8 = 0;
const SMBIOS_DOCREV: u8 = 0;
/// The 64-bit entry point's length and revision (3.0: 24 bytes, rev 1).
const ENTRY_POINT_LEN: u8 = 0x18;
const ENTRY_POINT_REVISION: u8 = 0x01;
/// Where the structure table starts, from the entry point (16-aligned).
const TABLE_OFFSET: u64 = 0x20;

/// Structure types.
const TYPE_BIOS: u8 = 0;
const TYPE_SYSTEM: u8 = 1;
const TYPE_BASEBOARD: u8 = 2;
const TYPE_CHASSIS: u8 = 3;
const TYPE_END: u8 = 127;

/// Structure handles, in table order.
const HANDLE_BIOS: u16 = 0;
const HANDLE_SYSTEM: u16 = 1;
const HANDLE_BASEBOARD: u16 = 2;
const HANDLE_CHASSIS: u16 = 3;
const HANDLE_END: u16 = 4;

/// Type 0 characteristics bit 3: "BIOS Characteristics are not supported".
const BIOS_CHARACTERISTICS_NOT_SUPPORTED: u64 = 1 << 3;
/// Type 0 extension byte 1, bit 0: ACPI is supported.
const BIOS_EXT1_ACPI: u8 = 1 << 0;
/// Type 0 extension byte 2, bit 4: the tables describe a virtual machine.
const BIOS_EXT2_VIRTUAL_MACHINE: u8 = 1 << 4;
/// Type 0 BIOS segment: the 64 KiB ROM at 0xF0000.
const BIOS_SEGMENT: u16 = 0xf000;
/// Type 0 ROM size: 64 KiB × (n + 1).
const BIOS_ROM_SIZE_64K: u8 = 0;
/// Type 0: no embedded controller (both release bytes 0xFF).
const NO_EC_FIRMWARE: u8 = 0xff;
/// Type 1 wake-up type: power switch.
const WAKE_UP_POWER_SWITCH: u8 = 0x06;
/// Type 2 feature flags bit 0: the board is a hosting board.
const BOARD_HOSTING: u8 = 1 << 0;
/// Type 2 board type: motherboard.
const BOARD_TYPE_MOTHERBOARD: u8 = 0x0a;
/// Type 3 chassis type: Other (bit 7, "lock present", clear).
const CHASSIS_TYPE_OTHER: u8 = 0x01;
/// Type 3 boot-up / power-supply / thermal state: safe.
const CHASSIS_STATE_SAFE: u8 = 0x03;
/// Type 3 security status: none.
const CHASSIS_SECURITY_NONE: u8 = 0x03;

/// Errors building or placing the tables.
#[derive(Debug, thiserror::Error)]
pub enum SmbiosError {
    /// The tables do not fit between `SMBIOS_START` and 1 MiB.
    #[error("SMBIOS tables need {needed} bytes but only {available} are reserved")]
    TooLarge {
        /// Bytes the entry point and table need.
        needed: u64,
        /// Bytes reserved for them.
        available: u64,
    },
    /// A string cannot be an SMBIOS string (it contains a NUL byte).
    #[error("SMBIOS string {0:?} contains a NUL byte")]
    BadString(String),
    /// Guest memory rejected the write.
    #[error("failed to write SMBIOS tables to guest memory: {0}")]
    Write(#[from] vm_memory::GuestMemoryError),
}

/// A UUID, held as its 16 bytes in text order (RFC 9562 / "big-endian").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Uuid(pub [u8; 16]);

/// FNV-1a, 128-bit: offset basis and prime (2^88 + 0x13b).
const FNV128_OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
const FNV128_PRIME: u128 = (1 << 88) + 0x13b;

fn fnv1a_128(bytes: &[u8]) -> u128 {
    bytes.iter().fold(FNV128_OFFSET, |hash, &b| {
        (hash ^ u128::from(b)).wrapping_mul(FNV128_PRIME)
    })
}

impl Uuid {
    /// The instance's UUID: stable for a given id, starting with `ec2`
    /// (see the module documentation for the derivation).
    pub fn for_instance(instance_id: &str) -> Self {
        let mut bytes = fnv1a_128(instance_id.as_bytes()).to_be_bytes();
        bytes[0] = 0xec;
        bytes[1] = 0x20 | (bytes[1] & 0x0f);
        // Version 8 (custom) in time_hi_and_version's top nibble.
        bytes[6] = 0x80 | (bytes[6] & 0x0f);
        // Variant 10x (RFC 9562) in clock_seq_hi's top bits.
        bytes[8] = 0x80 | (bytes[8] & 0x3f);
        Uuid(bytes)
    }

    /// The 16 bytes as SMBIOS ≥ 2.6 stores them: time_low, time_mid and
    /// time_hi_and_version little-endian, the rest in order.
    pub fn to_smbios_bytes(self) -> [u8; 16] {
        let mut out = self.0;
        out[0..4].reverse();
        out[4..6].reverse();
        out[6..8].reverse();
        out
    }
}

impl std::fmt::Display for Uuid {
    /// The canonical lowercase text form, `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Who the guest is told it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmbiosIdentity<'a> {
    /// The instance id: the chassis asset tag.
    pub instance_id: &'a str,
    /// The instance type: the system product name.
    pub instance_type: &'a str,
    /// The system UUID (and, as text, the system serial number).
    pub uuid: Uuid,
}

impl<'a> SmbiosIdentity<'a> {
    /// An identity whose UUID is derived from `instance_id`.
    pub fn for_instance(instance_id: &'a str, instance_type: &'a str) -> Self {
        Self {
            instance_id,
            instance_type,
            uuid: Uuid::for_instance(instance_id),
        }
    }
}

/// One structure being built: the formatted area, then its string set.
struct Structure {
    formatted: Vec<u8>,
    strings: Vec<u8>,
    string_count: u8,
}

impl Structure {
    /// Starts a structure of `kind`; its length byte is filled in by
    /// [`Structure::finish`].
    fn new(kind: u8, handle: u16) -> Self {
        let mut formatted = vec![kind, 0];
        formatted.extend(handle.to_le_bytes());
        Self {
            formatted,
            strings: Vec::new(),
            string_count: 0,
        }
    }

    fn byte(&mut self, value: u8) -> &mut Self {
        self.formatted.push(value);
        self
    }

    fn word(&mut self, value: u16) -> &mut Self {
        self.formatted.extend(value.to_le_bytes());
        self
    }

    fn dword(&mut self, value: u32) -> &mut Self {
        self.formatted.extend(value.to_le_bytes());
        self
    }

    fn qword(&mut self, value: u64) -> &mut Self {
        self.formatted.extend(value.to_le_bytes());
        self
    }

    fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.formatted.extend(bytes);
        self
    }

    /// A string field: its 1-based number in the string set, or 0 ("Not
    /// Specified") for `None` or an empty string.
    fn string(&mut self, text: Option<&str>) -> Result<&mut Self, SmbiosError> {
        let number = match text {
            None | Some("") => 0,
            Some(text) if text.contains('\0') => {
                return Err(SmbiosError::BadString(text.to_string()))
            }
            Some(text) => {
                // Five structures with at most five strings each: far from
                // the 255 a string number can address.
                self.string_count += 1;
                self.strings.extend(text.as_bytes());
                self.strings.push(0);
                self.string_count
            }
        };
        self.formatted.push(number);
        Ok(self)
    }

    /// Appends the structure to `table`: the formatted area with its length,
    /// each string NUL-terminated, then one more NUL (two NULs when there
    /// are no strings).
    fn finish(mut self, table: &mut Vec<u8>) {
        self.formatted[1] =
            u8::try_from(self.formatted.len()).expect("formatted areas are under 256 bytes");
        table.extend(&self.formatted);
        if self.strings.is_empty() {
            table.push(0);
        }
        table.extend(&self.strings);
        table.push(0);
    }
}

/// Builds the structure table: types 0, 1, 2, 3 and 127.
pub fn structure_table(identity: &SmbiosIdentity<'_>) -> Result<Vec<u8>, SmbiosError> {
    let mut table = Vec::new();
    let serial = identity.uuid.to_string();

    // Type 0, BIOS information (3.0 layout: 0x18 bytes).
    let mut bios = Structure::new(TYPE_BIOS, HANDLE_BIOS);
    bios.string(Some(VENDOR))?
        .string(Some(BIOS_VERSION))?
        .word(BIOS_SEGMENT)
        .string(Some(BIOS_RELEASE_DATE))?
        .byte(BIOS_ROM_SIZE_64K)
        .qword(BIOS_CHARACTERISTICS_NOT_SUPPORTED)
        .byte(BIOS_EXT1_ACPI)
        .byte(BIOS_EXT2_VIRTUAL_MACHINE)
        .byte(1) // system BIOS major release
        .byte(0) // system BIOS minor release
        .byte(NO_EC_FIRMWARE)
        .byte(NO_EC_FIRMWARE);
    bios.finish(&mut table);

    // Type 1, system information (0x1B bytes).
    let mut system = Structure::new(TYPE_SYSTEM, HANDLE_SYSTEM);
    system
        .string(Some(VENDOR))?
        .string(Some(identity.instance_type))?
        .string(None)? // version
        .string(Some(&serial))?
        .raw(&identity.uuid.to_smbios_bytes())
        .byte(WAKE_UP_POWER_SWITCH)
        .string(None)? // SKU number
        .string(None)?; // family
    system.finish(&mut table);

    // Type 2, baseboard information (0x0F bytes, no contained handles).
    let mut board = Structure::new(TYPE_BASEBOARD, HANDLE_BASEBOARD);
    board
        .string(Some(VENDOR))?
        .string(None)? // product
        .string(None)? // version
        .string(None)? // serial number
        .string(None)? // asset tag
        .byte(BOARD_HOSTING)
        .string(None)? // location in chassis
        .word(HANDLE_CHASSIS)
        .byte(BOARD_TYPE_MOTHERBOARD)
        .byte(0); // contained object handles
    board.finish(&mut table);

    // Type 3, system enclosure (0x16 bytes: no contained elements, SKU).
    let mut chassis = Structure::new(TYPE_CHASSIS, HANDLE_CHASSIS);
    chassis
        .string(Some(VENDOR))?
        .byte(CHASSIS_TYPE_OTHER)
        .string(None)? // version
        .string(None)? // serial number
        .string(Some(identity.instance_id))?
        .byte(CHASSIS_STATE_SAFE) // boot-up state
        .byte(CHASSIS_STATE_SAFE) // power supply state
        .byte(CHASSIS_STATE_SAFE) // thermal state
        .byte(CHASSIS_SECURITY_NONE)
        .dword(0) // OEM-defined
        .byte(0) // height: unspecified
        .byte(1) // power cords
        .byte(0) // contained element count
        .byte(0) // contained element record length
        .string(None)?; // SKU number
    chassis.finish(&mut table);

    Structure::new(TYPE_END, HANDLE_END).finish(&mut table);
    Ok(table)
}

/// The 64-bit (`_SM3_`) entry point for a table of `table_len` bytes at
/// `table_addr`.
fn entry_point(table_addr: u64, table_len: u32) -> [u8; ENTRY_POINT_LEN as usize] {
    let mut ep = [0u8; ENTRY_POINT_LEN as usize];
    ep[0..5].copy_from_slice(b"_SM3_");
    // ep[5]: checksum, below.
    ep[6] = ENTRY_POINT_LEN;
    ep[7] = SMBIOS_MAJOR;
    ep[8] = SMBIOS_MINOR;
    ep[9] = SMBIOS_DOCREV;
    ep[10] = ENTRY_POINT_REVISION;
    // ep[11]: reserved.
    ep[12..16].copy_from_slice(&table_len.to_le_bytes());
    ep[16..24].copy_from_slice(&table_addr.to_le_bytes());
    let sum = ep.iter().fold(0u8, |acc, b| acc.wrapping_add(*b));
    ep[5] = sum.wrapping_neg();
    ep
}

/// Writes the entry point at `SMBIOS_START` and the structure table after
/// it. Returns the entry point's address.
pub fn write_tables(
    mem: &GuestMemoryMmap,
    identity: &SmbiosIdentity<'_>,
) -> Result<GuestAddress, SmbiosError> {
    let table = structure_table(identity)?;
    let table_addr = SMBIOS_START + TABLE_OFFSET;
    let end = table_addr + table.len() as u64;
    let too_large = || SmbiosError::TooLarge {
        needed: end - SMBIOS_START,
        available: SMBIOS_END - SMBIOS_START,
    };
    if end > SMBIOS_END {
        return Err(too_large());
    }
    let table_len = u32::try_from(table.len()).map_err(|_| too_large())?;
    mem.write_slice(
        &entry_point(table_addr, table_len),
        GuestAddress(SMBIOS_START),
    )?;
    mem.write_slice(&table, GuestAddress(table_addr))?;
    log::debug!(
        "SMBIOS 3.0 at {SMBIOS_START:#x}: product {:?}, uuid {}, asset tag {:?}",
        identity.instance_type,
        identity.uuid,
        identity.instance_id
    );
    Ok(GuestAddress(SMBIOS_START))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::acpi::{self, AcpiPlatform, MmioDeviceInfo};
    use crate::layout::{e820_map, E820Kind, HIMEM_START};

    const INSTANCE_ID: &str = "i-0123456789abcdef0";

    fn memory() -> GuestMemoryMmap {
        let size = usize::try_from(HIMEM_START).unwrap();
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap()
    }

    fn checksum_ok(bytes: &[u8]) -> bool {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
    }

    /// One structure as a reader sees it.
    #[derive(Debug)]
    struct Parsed {
        kind: u8,
        handle: u16,
        formatted: Vec<u8>,
        strings: Vec<String>,
    }

    impl Parsed {
        /// The string a string-number field at `offset` names, `None` for
        /// 0 ("Not Specified").
        fn string_at(&self, offset: usize) -> Option<&str> {
            match self.formatted[offset] {
                0 => None,
                n => Some(self.strings[usize::from(n) - 1].as_str()),
            }
        }
        fn word(&self, offset: usize) -> u16 {
            u16::from_le_bytes(self.formatted[offset..offset + 2].try_into().unwrap())
        }
    }

    /// Finds the entry point the way Linux's `dmi_scan_machine` does without
    /// EFI — 0xF0000..0xFFFFF on 16-byte boundaries — checks it and walks
    /// the structure table it points to, per DSP0134.
    fn scan(mem: &GuestMemoryMmap) -> Vec<Parsed> {
        let mut area = vec![0u8; 0x1_0000];
        mem.read_slice(&mut area, GuestAddress(0xf_0000)).unwrap();
        let offset = (0..area.len() - 32)
            .step_by(16)
            .find(|&o| &area[o..o + 5] == b"_SM3_")
            .expect("no _SM3_ anchor");
        let ep = &area[offset..offset + 32];
        let len = usize::from(ep[6]);
        assert_eq!(len, 0x18, "3.0 entry point length");
        assert!(checksum_ok(&ep[..len]), "entry point checksum");
        assert_eq!((ep[7], ep[8], ep[9]), (3, 0, 0), "SMBIOS 3.0.0");
        assert_eq!(ep[10], 1, "entry point revision");
        let max_size = u32::from_le_bytes(ep[12..16].try_into().unwrap()) as usize;
        let table_addr = u64::from_le_bytes(ep[16..24].try_into().unwrap());
        assert!(table_addr >= 0xf_0000 + offset as u64 + len as u64);
        let mut table = vec![0u8; max_size];
        mem.read_slice(&mut table, GuestAddress(table_addr))
            .unwrap();

        let mut structures = Vec::new();
        let mut pos = 0;
        loop {
            assert!(pos + 4 <= table.len(), "table ends without type 127");
            let kind = table[pos];
            let length = usize::from(table[pos + 1]);
            assert!(length >= 4);
            let handle = u16::from_le_bytes([table[pos + 2], table[pos + 3]]);
            let formatted = table[pos..pos + length].to_vec();
            // The string set: NUL-terminated strings, then a second NUL.
            let mut cursor = pos + length;
            let mut strings = Vec::new();
            if table[cursor] == 0 {
                assert_eq!(table[cursor + 1], 0, "empty string set is two NULs");
                cursor += 2;
            } else {
                while table[cursor] != 0 {
                    let end = cursor + table[cursor..].iter().position(|&b| b == 0).unwrap();
                    strings.push(String::from_utf8(table[cursor..end].to_vec()).unwrap());
                    cursor = end + 1;
                }
                cursor += 1;
            }
            structures.push(Parsed {
                kind,
                handle,
                formatted,
                strings,
            });
            pos = cursor;
            if kind == 127 {
                break;
            }
        }
        assert_eq!(pos, max_size, "the table is exactly its advertised size");
        structures
    }

    /// Linux's `%pUl`, which `dmi_save_uuid` uses for SMBIOS ≥ 2.6.
    fn linux_uuid_text(d: &[u8]) -> String {
        const ORDER: [usize; 16] = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
        let mut text = String::new();
        for (i, &index) in ORDER.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                text.push('-');
            }
            text.push_str(&format!("{:02x}", d[index]));
        }
        text
    }

    fn written(instance_id: &str, instance_type: &str) -> Vec<Parsed> {
        let mem = memory();
        let identity = SmbiosIdentity::for_instance(instance_id, instance_type);
        assert_eq!(
            write_tables(&mem, &identity).unwrap(),
            GuestAddress(SMBIOS_START)
        );
        scan(&mem)
    }

    #[test]
    fn anchor_is_found_where_linux_scans_and_the_table_walks_to_type_127() {
        let s = written(INSTANCE_ID, "t3.micro");
        let kinds: Vec<u8> = s.iter().map(|p| p.kind).collect();
        assert_eq!(kinds, [0, 1, 2, 3, 127]);
        let handles: Vec<u16> = s.iter().map(|p| p.handle).collect();
        assert_eq!(handles, [0, 1, 2, 3, 4]);
        // Formatted-area lengths per DSP0134 for a 3.0 table.
        let lengths: Vec<usize> = s.iter().map(|p| p.formatted.len()).collect();
        assert_eq!(lengths, [0x18, 0x1b, 0x0f, 0x16, 0x04]);
        assert!(s[4].strings.is_empty());
    }

    #[test]
    fn fields_match_an_ec2_instance() {
        let s = written(INSTANCE_ID, "t3.micro");
        let uuid = Uuid::for_instance(INSTANCE_ID).to_string();

        let bios = &s[0];
        assert_eq!(bios.string_at(0x04), Some("Amazon EC2"));
        assert_eq!(bios.string_at(0x05), Some("1.0"));
        assert_eq!(bios.word(0x06), 0xf000);
        assert_eq!(bios.string_at(0x08), Some("10/16/2017"));
        assert_eq!(bios.formatted[0x09], 0, "64 KiB ROM");
        let characteristics = u64::from_le_bytes(bios.formatted[0x0a..0x12].try_into().unwrap());
        assert_eq!(characteristics, 1 << 3, "characteristics not supported");
        assert_eq!(bios.formatted[0x13] & (1 << 4), 1 << 4, "virtual machine");
        assert_eq!(&bios.formatted[0x14..0x18], &[1, 0, 0xff, 0xff]);

        let system = &s[1];
        assert_eq!(system.string_at(0x04), Some("Amazon EC2"));
        assert_eq!(system.string_at(0x05), Some("t3.micro"));
        assert_eq!(system.string_at(0x06), None);
        assert_eq!(system.string_at(0x07), Some(uuid.as_str()));
        assert_eq!(system.formatted[0x18], 0x06, "wake-up: power switch");
        assert_eq!(system.string_at(0x19), None);
        assert_eq!(system.string_at(0x1a), None);

        let board = &s[2];
        assert_eq!(board.string_at(0x04), Some("Amazon EC2"));
        assert_eq!(board.formatted[0x09], 1, "hosting board");
        assert_eq!(board.word(0x0b), 3, "chassis handle");
        assert_eq!(board.formatted[0x0d], 0x0a, "motherboard");
        assert_eq!(board.formatted[0x0e], 0);

        let chassis = &s[3];
        assert_eq!(chassis.string_at(0x04), Some("Amazon EC2"));
        assert_eq!(chassis.formatted[0x05], 0x01, "type Other, no lock");
        assert_eq!(chassis.string_at(0x08), Some(INSTANCE_ID));
        assert_eq!((chassis.formatted[0x13], chassis.formatted[0x14]), (0, 0));
        assert_eq!(chassis.string_at(0x15), None);
    }

    /// What `ds-identify` requires to call the platform AWS: `product_uuid`
    /// and `product_serial` start with `ec2` and are equal ignoring case.
    #[test]
    fn linux_reads_an_ec2_uuid_equal_to_the_serial() {
        for id in [
            INSTANCE_ID,
            "anonymous-instance",
            "a",
            "i-ffffffffffffffff0",
        ] {
            let s = written(id, "m5.large");
            let system = &s[1];
            let product_uuid = linux_uuid_text(&system.formatted[0x08..0x18]);
            assert!(product_uuid.starts_with("ec2"), "{product_uuid}");
            let product_serial = system.string_at(0x07).unwrap();
            assert!(product_uuid.eq_ignore_ascii_case(product_serial));
            assert_eq!(product_uuid, Uuid::for_instance(id).to_string());
        }
    }

    #[test]
    fn uuid_is_stable_versioned_and_distinct_per_instance() {
        let uuid = Uuid::for_instance(INSTANCE_ID);
        // Pinned: the derivation must not change under a running fleet.
        // (FNV-1a 128 of the id, checked against an independent
        // implementation, then ec2 / version / variant forced.)
        assert_eq!(uuid.to_string(), PINNED_UUID);
        assert_eq!(uuid, Uuid::for_instance(INSTANCE_ID));
        let text = uuid.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(&text[14..15], "8", "version 8");
        assert!(
            matches!(&text[19..20], "8" | "9" | "a" | "b"),
            "RFC variant"
        );
        let others = ["i-0123456789abcdef1", "i-1123456789abcdef0", "", "x"];
        for other in others {
            assert_ne!(Uuid::for_instance(other), uuid, "{other:?}");
        }
    }

    const PINNED_UUID: &str = "ec2bf181-1b01-8119-8ed3-222fd027f965";

    #[test]
    fn smbios_byte_order_swaps_only_the_first_three_fields() {
        let uuid = Uuid([
            0xec, 0x2e, 0x19, 0x16, 0x90, 0x99, 0x7c, 0xaf, 0xfd, 0x21, 0x01, 0x23, 0x45, 0xab,
            0xcd, 0xef,
        ]);
        assert_eq!(uuid.to_string(), "ec2e1916-9099-7caf-fd21-012345abcdef");
        let stored = uuid.to_smbios_bytes();
        assert_eq!(
            &stored[..8],
            &[0x16, 0x19, 0x2e, 0xec, 0x99, 0x90, 0xaf, 0x7c]
        );
        assert_eq!(&stored[8..], &uuid.0[8..]);
        assert_eq!(linux_uuid_text(&stored), uuid.to_string());
    }

    #[test]
    fn fnv1a_128_matches_the_published_test_vectors() {
        assert_eq!(fnv1a_128(b""), FNV128_OFFSET);
        assert_eq!(fnv1a_128(b"a"), 0xd228_cb69_6f1a_8caf_7891_2b70_4e4a_8964);
        assert_eq!(
            fnv1a_128(b"foobar"),
            0x343e_1662_793c_64bf_6f0d_3597_ba44_6f18
        );
    }

    #[test]
    fn strings_with_nul_are_rejected_and_empty_ones_are_not_specified() {
        let identity = SmbiosIdentity::for_instance("i-1", "bad\0type");
        assert!(matches!(
            structure_table(&identity),
            Err(SmbiosError::BadString(_))
        ));
        let mem = memory();
        write_tables(&mem, &SmbiosIdentity::for_instance("i-1", "")).unwrap();
        let s = scan(&mem);
        assert_eq!(s[1].string_at(0x05), None);
    }

    #[test]
    fn tables_live_in_reserved_memory_clear_of_acpi() {
        // Reserved, never RAM, in the map the guest gets.
        for entry in e820_map(256 << 20) {
            let end = entry.addr + entry.size;
            if entry.addr < SMBIOS_END && end > SMBIOS_START {
                assert_eq!(entry.kind, E820Kind::Reserved, "{entry:?}");
            }
        }
        // ACPI tables written after SMBIOS (with a full device set) leave
        // it intact, and both remain valid.
        let mem = memory();
        write_tables(&mem, &SmbiosIdentity::for_instance(INSTANCE_ID, "t3.micro")).unwrap();
        let platform = AcpiPlatform {
            vcpus: 32,
            mmio_devices: (0u32..18)
                .map(|i| MmioDeviceInfo {
                    addr: 0xc000_0000 + 0x1000 * u64::from(i),
                    len: 0x1000,
                    irq: 5 + i,
                })
                .collect(),
        };
        let rsdp = acpi::write_tables(&mem, &platform).unwrap();
        assert_eq!(scan(&mem).len(), 5);
        let mut raw = [0u8; 36];
        mem.read_slice(&mut raw, rsdp).unwrap();
        assert_eq!(&raw[..8], b"RSD PTR ");
        assert!(checksum_ok(&raw));
    }
}
