//! Golden VXUs: each record in tests/fixtures/records becomes exactly the checked-in message.
//!
//! `IZRELAY_BLESS=1 cargo test golden` rewrites the expected files after an intended change;
//! review the diff before committing it.

use chrono::DateTime;
use izrelay::hl7::{self, MessageProfile, Severity};
use izrelay::record::Record;

use crate::util::{fixture_records, root};

fn profile_for(path: &std::path::Path) -> MessageProfile {
    let p = path.with_extension("profile.json");
    match std::fs::read_to_string(&p) {
        Ok(text) => serde_json::from_str(&text).expect("valid profile fixture"),
        Err(_) => MessageProfile::default(),
    }
}

#[test]
fn golden_vxus_match_and_validate() {
    let now = DateTime::parse_from_rfc3339("2026-11-24T09:00:00-08:00").expect("time");
    let bless = std::env::var_os("IZRELAY_BLESS").is_some();
    let records = fixture_records();
    assert!(records.len() >= 12, "at least 12 golden records, found {}", records.len());
    let mut mismatches = Vec::new();
    for (i, (name, path)) in records.iter().enumerate() {
        let rec: Record =
            serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("record");
        let control_id = format!("GOLDEN-{:02}", i + 1);
        let msg = hl7::generate_vxu(&rec, &profile_for(path), &control_id, now)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // Wire format: CR-terminated segments, no LF anywhere.
        assert!(msg.ends_with('\r') && !msg.contains('\n'), "{name}: not CR-terminated");
        let errors: Vec<_> = hl7::validate_message(&msg)
            .into_iter()
            .filter(|f| f.severity == Severity::Error)
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:#?}");
        let readable = msg.replace('\r', "\n");
        let golden = root().join("tests/fixtures/golden").join(format!("{name}.hl7"));
        if bless {
            std::fs::write(&golden, &readable).expect("write golden");
            continue;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_default();
        if expected != readable {
            mismatches.push(format!("{name}:\n--- expected\n{expected}\n--- got\n{readable}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn hostile_text_is_escaped_never_structure() {
    let path =
        root().join("tests/fixtures/records/05-name-with-every-delimiter-novavax-vis-by-type.json");
    let rec: Record =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("record");
    let now = DateTime::parse_from_rfc3339("2026-11-24T09:00:00-08:00").expect("time");
    let msg = hl7::generate_vxu(&rec, &MessageProfile::default(), "X1", now).expect("valid");
    let parsed = hl7::Message::parse(&msg).expect("parses");
    let pid = parsed.segment("PID").expect("PID");
    assert_eq!(pid.text(5, 1), "O'Brien|Smith^&~\\");
    assert_eq!(pid.text(5, 2), "Mary&Jo");
    assert_eq!(pid.text(5, 3), "Line\nBreak");
    assert_eq!(pid.field(5).repetitions().count(), 1);
    assert_eq!(pid.raw(5, 1), "O'Brien\\F\\Smith\\S\\\\T\\\\R\\\\E\\");
    let orc = parsed.segment("ORC").expect("ORC");
    assert_eq!(orc.text(17, 2), "Harbor & Main Pharmacy");
}

#[test]
fn every_record_field_with_delimiters_stays_inside_its_field() {
    // Put every delimiter and a segment break into every free-text field of a valid record:
    // the message must keep the same segments and the same field counts as the clean one.
    let path = root().join("tests/fixtures/records/06-infant-hepb-birth-dose-vfc-medicaid.json");
    let clean: Record =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("record");
    let evil = "|^~\\&\rMSH|";
    let mut rec = clean.clone();
    rec.patient.family_name = format!("A{evil}");
    rec.patient.middle_name = Some(evil.into());
    rec.patient.mother_maiden_name = Some(evil.into());
    if let Some(a) = rec.patient.address.as_mut() {
        a.street = Some(evil.into());
        a.city = Some(evil.into());
    }
    if let Some(r) = rec.responsible_party.as_mut() {
        r.family_name = format!("B{evil}");
    }
    if let Some(f) = rec.facility.as_mut() {
        f.name = Some(evil.into());
    }
    if let Some(v) = rec.vaccinator.as_mut() {
        v.family_name = Some(evil.into());
        v.credential = Some(evil.into());
    }
    rec.vaccine.lot = Some("L|^~\\&\rX".into());
    let now = DateTime::parse_from_rfc3339("2026-11-24T09:00:00-08:00").expect("time");
    let profile = MessageProfile::default();
    let a = hl7::generate_vxu(&clean, &profile, "X", now).expect("clean is valid");
    let b = hl7::generate_vxu(&rec, &profile, "X", now).expect("hostile text is still valid");
    let (a, b) = (hl7::Message::parse(&a).expect("a"), hl7::Message::parse(&b).expect("b"));
    let shape = |m: &hl7::Message<'_>| -> Vec<(String, usize)> {
        m.segments().map(|s| (s.id().to_owned(), s.field_count())).collect()
    };
    assert_eq!(shape(&a), shape(&b), "\n{a:?}\n{b:?}");
    assert_eq!(b.segment("RXA").expect("RXA").text(15, 1), "L|^~\\&\rX");
}
