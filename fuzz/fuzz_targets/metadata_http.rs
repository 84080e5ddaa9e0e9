//! HTTP requests to the instance metadata service over a real TCP
//! conversation: the parser and EC2's IMDS rules must never panic, hang or
//! grow without bound.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    stratus_devices::fuzz::metadata_http(data);
});
