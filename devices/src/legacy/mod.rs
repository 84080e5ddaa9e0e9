//! Legacy PC devices: what a stock x86 kernel expects to find at fixed
//! addresses without any discovery.

pub mod acpi_pm;
pub mod boot_timer;
pub mod i8042;
pub mod serial;
