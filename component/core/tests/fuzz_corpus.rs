//! Replays the fuzzers' seed inputs and saved corpora (`fuzz/seeds`,
//! `fuzz/corpus`) through the same entry points the fuzz targets call, so a
//! regression shows up in a plain `cargo test` on stable.

use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut files = Vec::new();
    for dir in ["seeds", "corpus"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else {
            continue;
        };
        files.extend(
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_file()),
        );
    }
    files.sort();
    files
}

fn replay(target: &str, run: fn(&[u8])) {
    let files = inputs(target);
    assert!(
        !files.is_empty(),
        "no inputs for {target}: fuzz/seeds/{target} is missing"
    );
    for path in files {
        let data = std::fs::read(&path).expect("readable input");
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{target} panicked on {}", path.display());
    }
}

#[test]
fn line_decoder_corpus_replays_cleanly() {
    replay("line_decoder", relay_core::fuzzing::line_decoder);
}

#[test]
fn frames_corpus_replays_cleanly() {
    replay("frames", relay_core::fuzzing::frames);
}
