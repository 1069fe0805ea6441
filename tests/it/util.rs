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

/// `izrelay` as a new user runs it: working directory `dir/work`, `HOME` and the XDG
/// directories under `dir/home`, temporary files under `dir/tmp` (all three created empty),
/// and no `IZRELAY_*` variable from the environment of the test run.
pub fn izrelay_new_user(dir: &Path) -> std::process::Command {
    let (home, work, tmp) = (dir.join("home"), dir.join("work"), dir.join("tmp"));
    for d in [&home, &work, &tmp] {
        std::fs::create_dir_all(d).expect("create a directory of the new user");
    }
    let mut cmd = izrelay();
    cmd.current_dir(&work).env("HOME", &home).env("TMPDIR", &tmp);
    for (var, sub) in [
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_DATA_HOME", ".local/share"),
        ("XDG_STATE_HOME", ".local/state"),
        ("XDG_CACHE_HOME", ".cache"),
        ("XDG_RUNTIME_DIR", "run"),
    ] {
        cmd.env(var, home.join(sub));
    }
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("IZRELAY_") {
            cmd.env_remove(var);
        }
    }
    cmd
}

/// The files under `dir`, recursively, as paths relative to it (sorted).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("readable dir") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(dir).expect("under dir").to_path_buf());
            }
        }
    }
    out.sort();
    out
}
