#![no_main]
// The target is corekv::fuzzing::grpc_request (its doc says what the input is and what is checked).
libfuzzer_sys::fuzz_target!(|data: &[u8]| corekv::fuzzing::grpc_request(data));
