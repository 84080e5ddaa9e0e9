//! x86_64 specifics: CPUID, MSRs, boot registers, ACPI and SMBIOS tables.

pub mod acpi;
pub mod cpuid;
pub mod msr;
pub mod regs;
pub mod smbios;
