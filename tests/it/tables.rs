//! The generated NIST tables are current: regenerate from ../shared/nist and compare.

use crate::util::{root, shared};

#[test]
fn nist_profile_tables_match_the_shared_nist_files() {
    let Some(shared) = shared("the NIST table freshness check") else { return };
    let status = std::process::Command::new("python3")
        .arg(root().join("tools/gen_profile_tables.py"))
        .arg("--nist-dir")
        .arg(shared.join("nist"))
        .arg("-o")
        .arg(root().join("src/hl7/nist/tables.rs"))
        .arg("--check")
        .status();
    match status {
        Ok(s) => {
            assert!(s.success(), "src/hl7/nist/tables.rs is stale: run tools/gen_profile_tables.py")
        }
        Err(e) => {
            eprintln!("NOTICE: python3 unavailable ({e}); skipping the NIST table freshness check")
        }
    }
}
