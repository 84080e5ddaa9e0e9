//! `stratus-vmm`: one process per instance, a purpose-built VMM on the
//! rust-vmm crates.
//!
//! - [`ami`]: booting from an AMI's disk: partition table, ext4 root,
//!   kernel and initrd found the way the image's bootloader would.
//! - [`config`]: the VM's configuration as one serde type, and validation.
//! - [`layout`]: guest-physical memory layout and the e820 map.
//! - [`arch`]: CPUID, MSRs, boot registers, ACPI tables (x86_64).
//! - [`boot`]: kernel/initrd/command-line loading, PVH and zero page.
//! - [`image_mapping`]: a kernel image that cannot change is mapped into
//!   guest RAM rather than copied.
//! - [`coalesced`]: the coalesced-I/O ring (console writes without exits).
//! - [`vcpu`]: one vCPU and its `KVM_RUN` loop.
//! - [`device_manager`]: placing virtio devices through one path (windows,
//!   GSIs, irqfds, ioeventfds, DSDT entries).
//! - [`device_thread`]: a thread of a device's own for its event handler.
//! - [`nic_services`]: a NIC's security groups, metadata service and flow
//!   log, loaded from the files `--net` names.
//! - [`console`]: the serial console's host side (sink, ring, stdin).
//! - [`vm`]: building a VM, step by step.
//! - [`runtime`]: the event loop that runs it, and its control.
//! - [`api`]: the HTTP/JSON control API on a Unix socket.
//! - [`outcome`]: how a VM ended and the matching exit codes.

pub mod ami;
pub mod api;
pub mod arch;
pub mod boot;
pub mod coalesced;
pub mod config;
pub mod console;
pub mod device_manager;
pub mod device_thread;
pub mod image_mapping;
pub mod layout;
pub mod logger;
pub mod nic_services;
pub mod outcome;
pub mod runtime;
pub mod vcpu;
pub mod vm;
