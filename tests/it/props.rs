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

    /// Arbitrary text in every free-text field of a valid record (`FREE_TEXT`) and the lot:
    /// the VXU is still generated, has the same segments and fields as before, has no
    /// validator errors, and the text reads back unchanged.
    #[test]
    fn record_text_never_changes_structure(s in "[ -~\\r\\n\u{2028}\u{85}\u{e9}]{1,15}") {
        let full = full_record();
        let clean: Record = serde_json::from_value(full.clone()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let text = format!("x{}", s.trim());
        let mut v = full;
        for pointer in FREE_TEXT {
            *v.pointer_mut(pointer).ok_or_else(|| TestCaseError::fail(*pointer))? = text.clone().into();
        }
        v["vaccine"]["lot"] = text.chars().take(20).collect::<String>().into();
        let rec: Record = serde_json::from_value(v).map_err(|e| TestCaseError::fail(e.to_string()))?;
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
        let same = all_values(&mb).iter().filter(|v| **v == text).count();
        prop_assert!(same >= FREE_TEXT.len(), "{} of {} fields read back", same, FREE_TEXT.len());
    }
}

/// Attempts to change a VXU's structure from record text: every delimiter, escape sequences
/// written out, segment breaks (CR, LF, CRLF) followed by a forged segment, MLLP framing
/// bytes, Unicode line and paragraph separators and NEL, XML markup (the VXU travels in XML).
const ATTACKS: &[&str] = &[
    "x|^~\\&y",
    "x\\F\\S\\T\\R\\E\\X0D\\y",
    "x\rMSH|^~\\&|EVIL|EVIL\ry",
    "x\nPID|1||EVIL^^^EVIL^MR\ny",
    "x\r\nOBX|1|CE|EVIL\r\ny",
    "x\u{2028}y\u{2029}z\u{85}w",
    "x\u{b}\u{1c}\ry",
    "x]]><evil/>&amp;y",
];

/// A valid record with every field of `Record` filled (checked below: a field added to
/// `src/record.rs` and not filled here fails the test).
fn full_record() -> serde_json::Value {
    let path = root().join("tests/fixtures/records/06-infant-hepb-birth-dose-vfc-medicaid.json");
    let mut r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
    let extra = serde_json::json!({
        "generate_hl7": true,
        "modified_on": "2026-11-20T10:00:00Z",
        "administered_at": "2026-11-20",
        "refusal_reason": null,
        "historical": false,
        "information_source": "00",
        "action": "A",
    });
    for (k, v) in extra.as_object().expect("object") {
        r[k] = v.clone();
    }
    let p = &mut r["patient"];
    p["id_authority"] = "WAIIS".into();
    p["middle_name"] = "Lina".into();
    p["suffix"] = "Jr".into();
    p["phone"] = "253-555-0142".into();
    p["email"] = "noor@example.org".into();
    p["language"] = "eng".into();
    p["protection"] = "N".into();
    p["publicity_date"] = "2026-11-20".into();
    p["protection_date"] = "2026-11-20".into();
    p["registry_status_date"] = "2026-11-20".into();
    p["address"]["other"] = "Apt 2".into();
    p["address"]["county"] = "53053".into();
    let rp = &mut r["responsible_party"];
    rp["middle_name"] = "M".into();
    rp["address"]["other"] = "Apt 2".into();
    rp["address"]["county"] = "53053".into();
    r["vis"][0]["vaccine_type"] = "253088698300008811150630".into();
    r["vis"][0]["published"] = "2023-05-12".into();
    r
}

/// Every string leaf of `v`, as (JSON pointer, value).
fn string_leaves(v: &serde_json::Value, at: String, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::String(s) => out.push((at, s.clone())),
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                string_leaves(x, format!("{at}/{i}"), out);
            }
        }
        serde_json::Value::Object(o) => {
            for (k, x) in o {
                string_leaves(x, format!("{at}/{k}"), out);
            }
        }
        _ => {}
    }
}

/// Every unescaped component value of `msg` (sub-components split).
fn all_values(msg: &hl7::Message<'_>) -> Vec<String> {
    let d = *msg.delimiters();
    let mut out = Vec::new();
    for seg in msg.segments() {
        for f in 1..=seg.field_count() {
            for rep in seg.field(f).repetitions() {
                for c in 1..=rep.component_count() {
                    // Each value once: the component, or its sub-components when it has some.
                    for sub in rep.component(c).split(char::from(d.subcomponent)) {
                        out.push(hl7::unescape(sub, &d).into_owned());
                    }
                }
            }
        }
    }
    out
}

/// Free-text fields: every attack is accepted, escaped, and reads back unchanged.
const FREE_TEXT: &[&str] = &[
    "/vaccination_id",
    "/facility/name",
    "/patient/family_name",
    "/patient/given_name",
    "/patient/middle_name",
    "/patient/mother_maiden_name",
    "/patient/address/street",
    "/patient/address/other",
    "/patient/address/city",
    "/responsible_party/family_name",
    "/responsible_party/given_name",
    "/responsible_party/middle_name",
    "/responsible_party/address/street",
    "/responsible_party/address/other",
    "/responsible_party/address/city",
    "/vaccinator/family_name",
    "/vaccinator/given_name",
    "/vaccinator/credential",
    "/ordering_provider/family_name",
    "/ordering_provider/given_name",
    "/ordering_provider/credential",
];

/// Text fields that do not reach the VXU: the change-tracking time, the IIS account (it picks
/// the endpoint) and the VIS vaccine type when a VIS document is given.
const NOT_IN_MESSAGE: &[&str] = &["/modified_on", "/provider_id", "/vis/0/vaccine_type"];

/// Every text field of the canonical record (every string of `Record`, enumerated from a record
/// with every field filled), set to each attack: the record is either refused by validation
/// (coded fields: dates, CVX, sex, phone, …, and identifiers with characters they may not
/// hold), or its VXU has exactly the segments and fields of the clean record's, every CR
/// ends a segment, no LF, one MSH, no forged field, and the value reads back unchanged after
/// unescaping. Free-text fields are never refused.
#[test]
fn every_text_field_resists_hl7_injection() {
    let full = full_record();
    let clean: Record = serde_json::from_value(full.clone()).expect("a valid record");
    // Every field is filled: re-serialised, no null, empty string or empty list remains.
    // refusal_reason stays null: it is coded (NIP002) and a refusal changes the message shape.
    let back = serde_json::to_value(&clean).expect("serialise");
    fn holes(v: &serde_json::Value, at: String, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Null => out.push(at),
            serde_json::Value::String(s) if s.is_empty() => out.push(at),
            serde_json::Value::Array(a) if a.is_empty() => out.push(at),
            serde_json::Value::Array(a) => {
                a.iter().enumerate().for_each(|(i, x)| holes(x, format!("{at}/{i}"), out))
            }
            serde_json::Value::Object(o) => {
                o.iter().for_each(|(k, x)| holes(x, format!("{at}/{k}"), out))
            }
            _ => {}
        }
    }
    let mut unfilled = Vec::new();
    holes(&back, String::new(), &mut unfilled);
    assert_eq!(unfilled, ["/refusal_reason"], "fill every field of Record in full_record()");

    let now = chrono::DateTime::parse_from_rfc3339("2026-11-24T09:00:00-08:00").expect("time");
    let profile = MessageProfile::default();
    let clean_vxu = hl7::generate_vxu(&clean, &profile, "X", now).expect("clean VXU");
    let clean_msg = hl7::Message::parse(&clean_vxu).expect("parse");
    let shape = |m: &hl7::Message<'_>| {
        m.segments().map(|s| (s.id().to_owned(), s.field_count())).collect::<Vec<_>>()
    };
    let want = shape(&clean_msg);
    let mut leaves = Vec::new();
    string_leaves(&full, String::new(), &mut leaves);
    assert_eq!(leaves.len(), 68, "text fields enumerated: {leaves:?}");
    let (mut accepted, mut refused) = (0, 0);
    for (pointer, _) in &leaves {
        for attack in ATTACKS {
            let mut v = full.clone();
            *v.pointer_mut(pointer).expect("leaf") = (*attack).into();
            let rec: Record = serde_json::from_value(v).expect("still a record");
            let Ok(vxu) = hl7::generate_vxu(&rec, &profile, "X", now) else {
                assert!(!FREE_TEXT.contains(&pointer.as_str()), "{pointer} = {attack:?} refused");
                refused += 1;
                continue;
            };
            accepted += 1;
            let msg = hl7::Message::parse(&vxu)
                .unwrap_or_else(|e| panic!("{pointer} = {attack:?}: {e}\n{vxu}"));
            assert_eq!(shape(&msg), want, "{pointer} = {attack:?} changed the structure");
            assert_eq!(vxu.matches('\r').count(), want.len(), "{pointer}: a CR inside a field");
            assert!(!vxu.contains('\n'), "{pointer} = {attack:?}: an LF in the message");
            assert_eq!(vxu.matches("MSH|").count(), 1, "{pointer}: a second MSH");
            assert!(!vxu.contains("|EVIL"), "{pointer} = {attack:?}: a forged field\n{vxu}");
            if !NOT_IN_MESSAGE.contains(&pointer.as_str()) {
                assert!(
                    all_values(&msg).iter().any(|s| s == attack),
                    "{pointer} = {attack:?} does not read back unchanged\n{vxu}"
                );
            }
        }
    }
    eprintln!(
        "hl7 injection: {} text fields x {} attacks: {accepted} generated, {refused} refused",
        leaves.len(),
        ATTACKS.len()
    );
}
