#![no_main]
// See imbang::fuzzing::chunked for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| imbang::fuzzing::chunked(data));
