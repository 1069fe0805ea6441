//! Profiling loop for record → VXU (not shipped).
fn main() {
    let rec: izrelay::Record = serde_json::from_str(include_str!(
        "../tests/fixtures/records/01-adult-covid-pfizer-309-ndc.json"
    ))
    .expect("rec");
    let p = izrelay::hl7::MessageProfile::default();
    let now = chrono::DateTime::parse_from_rfc3339("2026-11-24T09:00:00-08:00").expect("t");
    let mut n = 0;
    for _ in 0..20000 {
        n += izrelay::hl7::generate_vxu(&rec, &p, "X", now).map(|m| m.len()).unwrap_or(0);
    }
    println!("{n}");
}
