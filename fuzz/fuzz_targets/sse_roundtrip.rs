//! Fuzz target `sse_roundtrip`: the body and its properties are `ssehub::fuzzing::sse_roundtrip`, shared with the
//! regression test (`tests/it/fuzz_regressions.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ssehub::fuzzing::sse_roundtrip(data));
