//! Arbitrary bytes as an AMI root disk: GPT, ext4, boot-loader entries and
//! symlinks must be rejected cleanly, with bounded memory.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    stratus_vmm::ami::fuzz_boot_reader(data);
});
