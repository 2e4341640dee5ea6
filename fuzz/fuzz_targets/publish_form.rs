//! Fuzz target `publish_form`: the body and its properties are `ssehub::fuzzing::publish_form`, shared with the
//! regression test (`tests/it/fuzz_regressions.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ssehub::fuzzing::publish_form(data));
