//! x86_64 specifics: CPUID, MSRs, boot registers and ACPI tables.

pub mod acpi;
pub mod cpuid;
pub mod msr;
pub mod regs;
