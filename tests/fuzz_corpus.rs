//! Replays the fuzz corpus under plain `cargo test` (no libFuzzer, no
//! nightly): every file under `fuzz/corpus/<target>/` goes through the same
//! property function the libFuzzer target calls (`fuzz/src/lib.rs`, included
//! here), so CI re-checks every input the fuzzers ever kept — seeds, and any
//! crash reproducer added after a fix.

#[path = "../fuzz/src/lib.rs"]
mod checks;

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    files
}

fn replay(target: &str, check: fn(&[u8])) {
    for path in corpus(target) {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(
            outcome.is_ok(),
            "{target}: {} breaks a property (reproduce with `cargo fuzz run {target} {}`)",
            path.display(),
            path.display()
        );
    }
}

#[test]
fn signature_header_corpus() {
    replay("signature_header", checks::signature_header);
}

#[test]
fn payload_corpus() {
    replay("payload", checks::payload);
}

#[test]
fn pipeline_corpus() {
    replay("pipeline", checks::pipeline);
}

#[test]
fn upstream_answer_corpus() {
    replay("upstream_answer", checks::upstream_answer);
}
