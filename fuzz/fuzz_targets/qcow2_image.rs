//! Arbitrary bytes as a qcow2 image (a hostile AMI or a tampered overlay):
//! parsing, reads and writes must fail cleanly.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    stratus_devices::fuzz::qcow2_image(data);
});
