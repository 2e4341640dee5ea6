//! Fuzz target `sse_parser`: the body and its properties are `ssehub::fuzzing::sse_parser`, shared with the
//! regression test (`tests/it/fuzz_regressions.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ssehub::fuzzing::sse_parser(data));
