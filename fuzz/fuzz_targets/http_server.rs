//! Fuzz target `http_server`: the body and its properties are `ssehub::fuzzing::http_server`, shared with the
//! regression test (`tests/it/fuzz_regressions.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ssehub::fuzzing::http_server(data));
