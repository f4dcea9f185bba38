#![no_main]
// See imbang::fuzzing::proxy_protocol for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| imbang::fuzzing::proxy_protocol(data));
