//! Profiling loop for import (not shipped): `valgrind --tool=callgrind target/release/examples/importloop FILE`.
fn main() {
    let file = std::env::args().nth(1).expect("an NDJSON file");
    let dir = tempfile::tempdir().expect("tmp");
    let mut store = izrelay::store::Store::open(&dir.path().join("p.db")).expect("open");
    let profiles = izrelay::hl7::Profiles::default();
    let now = chrono::Local::now().fixed_offset();
    let r = izrelay::pull::import::import_file(
        &mut store,
        std::path::Path::new(&file),
        &profiles,
        now,
        &|_| {},
    )
    .expect("import");
    println!("{:?}", r.counts);
}
