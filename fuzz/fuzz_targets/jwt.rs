//! Fuzz target `jwt`: the body and its properties are `ssehub::fuzzing::jwt`, shared with the
//! regression test (`tests/it/fuzz_regressions.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ssehub::fuzzing::jwt(data));
