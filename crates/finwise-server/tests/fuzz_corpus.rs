//! Replays the kept fuzz corpus (`fuzz/corpus/<target>/`) through the fuzz targets' own bodies
//! (`fuzz/bodies.rs`), so every input that once mattered to the fuzzer is checked in CI in
//! seconds, without libFuzzer or a nightly toolchain. The long runs: `scripts/long-checks fuzz`.

#[path = "../../../fuzz/bodies.rs"]
mod bodies;

use std::path::PathBuf;

fn replay(target: &str, body: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        // the kept seeds only (`seed*`, the files in git): a fuzzer's working corpus in the same checkout
        // is neither CI's nor stable while it runs
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("seed")))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus for {target} in {}", dir.display());
    for f in &files {
        let data = std::fs::read(f).unwrap();
        // a panic follows this line: replay the file with `cargo +nightly fuzz run <target> <file>`
        eprintln!("{target}: {}", f.display());
        body(&data);
    }
    println!("{target}: {} inputs replayed", files.len());
}

#[test]
fn decode_corpus() {
    replay("decode", bodies::decode);
}

#[test]
fn validate_corpus() {
    replay("validate", bodies::validate);
}

#[test]
fn handle_corpus() {
    replay("handle", bodies::handle);
}

#[test]
fn loads_corpus() {
    replay("loads", bodies::loads);
}

#[test]
fn legacy_import_corpus() {
    replay("legacy_import", bodies::legacy_import);
}
