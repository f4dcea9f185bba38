#![no_main]
// See imbang::fuzzing::request for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| imbang::fuzzing::request(data));
