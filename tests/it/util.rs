//! Shared helpers: fixture paths, `../shared`, the built binary.

use std::path::{Path, PathBuf};

/// The crate root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared`, or `None` with a printed notice (a clone alone must still pass).
pub fn shared(what: &str) -> Option<PathBuf> {
    let dir = root().join("../shared");
    if dir.join("corpus").is_dir() {
        Some(dir)
    } else {
        eprintln!("NOTICE: ../shared is absent; skipping {what}");
        None
    }
}

/// The `.hl7` files in `dir`, sorted.
pub fn hl7_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("readable corpus dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "hl7"))
        .collect();
    files.sort();
    files
}

/// The `izrelay` binary built for this test run.
pub fn izrelay() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_izrelay"))
}

/// The fixture records: (name, path), sorted, profiles excluded.
pub fn fixture_records() -> Vec<(String, PathBuf)> {
    let dir = root().join("tests/fixtures/records");
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            p.to_string_lossy().ends_with(".json")
                && !p.to_string_lossy().ends_with(".profile.json")
        })
        .map(|p| (p.file_stem().expect("stem").to_string_lossy().into_owned(), p))
        .collect();
    out.sort();
    out
}
