//! Frames through a NIC's whole datapath, both directions: the source and
//! destination checks, DHCP, the metadata service and the security groups
//! with connection tracking must never panic, hang or grow without bound.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    stratus_devices::fuzz::net_datapath(data);
});
