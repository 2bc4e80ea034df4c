//! Fuzz target `validate`: see `fn validate` in `fuzz/bodies.rs` (shared with the corpus replay test).
#![no_main]
#[path = "../bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::validate(data));
