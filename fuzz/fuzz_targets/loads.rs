//! Fuzz target `loads`: see `fn loads` in `fuzz/bodies.rs` (shared with the corpus replay test).
#![no_main]
#[path = "../bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::loads(data));
