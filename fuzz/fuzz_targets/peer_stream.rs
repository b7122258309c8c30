#![no_main]
// The target is corekv::fuzzing::peer_stream (its doc says what the input is and what is checked).
libfuzzer_sys::fuzz_target!(|data: &[u8]| corekv::fuzzing::peer_stream(data));
