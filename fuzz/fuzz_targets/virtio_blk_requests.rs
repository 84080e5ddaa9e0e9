//! Guest-built virtio-blk descriptor chains and requests against the
//! device model: must never panic, hang or touch memory out of bounds.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    stratus_devices::fuzz::block_requests(data);
});
