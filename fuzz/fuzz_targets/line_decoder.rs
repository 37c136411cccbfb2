#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| relay_core::fuzzing::line_decoder(data));
