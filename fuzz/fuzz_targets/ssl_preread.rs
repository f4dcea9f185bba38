#![no_main]
// See imbang::fuzzing::ssl_preread for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| imbang::fuzzing::ssl_preread(data));
