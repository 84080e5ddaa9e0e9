//! Legacy PC devices: what a stock x86 kernel expects to find at fixed
//! addresses without any discovery, plus the ACPI power button's interrupt
//! line.

pub mod acpi_pm;
pub mod boot_timer;
pub mod i8042;
pub mod power_button;
pub mod serial;
