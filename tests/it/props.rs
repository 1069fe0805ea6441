//! Property tests: escaping round-trips through a whole message, nothing panics on any input,
//! and record text never changes message structure.

use izrelay::hl7::{self, MessageProfile, Writer};
use izrelay::record::Record;
use proptest::prelude::*;

use crate::util::root;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any string written into a field, component and sub-component comes back unchanged, and
    /// the segment and field counts are those of the same message with a plain value.
    #[test]
    fn any_string_survives_escape_encode_parse_unescape(s in any::<String>(), t in "[ -~\\r\\n]{0,40}") {
        for value in [s.as_str(), t.as_str()] {
            let mut w = Writer::new();
            w.segment("MSH").field(9, "VXU");
            w.segment("PID").field(1, "1").put((5, 1, 1, 1), value).put((5, 1, 2, 1), value).put((5, 1, 3, 2), value).field(7, "x");
            w.segment("RXA").field(1, "0");
            let text = w.finish();
            let msg = hl7::Message::parse(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(msg.segment_count(), 3);
            let pid = msg.segment("PID").ok_or_else(|| TestCaseError::fail("no PID"))?;
            prop_assert_eq!(pid.field_count(), 7);
            let rep = pid.field(5).first();
            prop_assert_eq!(pid.field(5).repetitions().count(), 1);
            let d = msg.delimiters();
            prop_assert_eq!(hl7::unescape(rep.component(1), d), value);
            prop_assert_eq!(hl7::unescape(rep.component(2), d), value);
            prop_assert_eq!(hl7::unescape(rep.subcomponent(3, 2), d), value);
        }
    }

    /// Parsing, validating and ACK-reading never panic, whatever the bytes.
    #[test]
    fn nothing_panics_on_arbitrary_input(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = hl7::Message::parse(&text);
        let _ = hl7::validate_message(&text);
        let _ = hl7::parse_ack(&text, Some("X"));
        let with_msh = format!("MSH|^~\\&|{text}");
        let _ = hl7::validate_message(&with_msh);
        let _ = hl7::parse_ack(&with_msh, None);
    }

    /// HL7-ish garbage (segment ids, delimiters, digits) reaches deeper into the validator.
    #[test]
    fn nothing_panics_on_hl7_shaped_input(text in "(MSH\\|\\^~\\\\&\\|)?((MSH|PID|PD1|NK1|ORC|RXA|RXR|OBX|MSA|ERR|ZZZ)(\\|[A-Z0-9^~&\\\\ .-]{0,12}){0,25}\\r){0,12}") {
        let _ = hl7::validate_message(&text);
        let _ = hl7::parse_ack(&text, Some("X"));
    }

    /// Arbitrary text in every free-text field of a valid record: the VXU is still generated,
    /// has the same segments and fields as before, has no validator errors, and the text
    /// reads back unchanged.
    #[test]
    fn record_text_never_changes_structure(s in "[ -~\\r\\n]{1,15}") {
        let path = root().join("tests/fixtures/records/06-infant-hepb-birth-dose-vfc-medicaid.json");
        let clean: Record = serde_json::from_str(&std::fs::read_to_string(path).map_err(|e| TestCaseError::fail(e.to_string()))?)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut rec = clean.clone();
        let text = format!("x{}", s.trim());
        rec.patient.family_name = text.clone();
        rec.patient.mother_maiden_name = Some(text.clone());
        if let Some(a) = rec.patient.address.as_mut() { a.street = Some(text.clone()); }
        if let Some(f) = rec.facility.as_mut() { f.name = Some(text.clone()); }
        rec.vaccine.lot = Some(text.chars().take(20).collect());
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-24T09:00:00-08:00").map_err(|e| TestCaseError::fail(e.to_string()))?;
        let profile = MessageProfile::default();
        let a = hl7::generate_vxu(&clean, &profile, "X", now).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let b = hl7::generate_vxu(&rec, &profile, "X", now).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let errors: Vec<_> = hl7::validate_message(&b).into_iter().filter(|f| f.severity == hl7::Severity::Error).collect();
        prop_assert!(errors.is_empty(), "{:?}", errors);
        let (ma, mb) = (hl7::Message::parse(&a).map_err(|e| TestCaseError::fail(e.to_string()))?, hl7::Message::parse(&b).map_err(|e| TestCaseError::fail(e.to_string()))?);
        let shape = |m: &hl7::Message<'_>| m.segments().map(|s| (s.id().to_owned(), s.field_count())).collect::<Vec<_>>();
        prop_assert_eq!(shape(&ma), shape(&mb));
        let pid = mb.segment("PID").ok_or_else(|| TestCaseError::fail("no PID"))?;
        let family = pid.text(5, 1).into_owned();
        prop_assert_eq!(family.as_str(), text.trim());
    }
}
