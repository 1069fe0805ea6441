//! The canonical record JSON (`izrelay::Record` through serde_json) into record validation and
//! VXU generation with the default `MessageProfile`, as `store::records::Prepared::new` does.
//!
//! Checks, beyond "no panic":
//! - a record that deserialises serialises back to the same record;
//! - `generate_vxu` succeeds exactly when `validate_record` finds nothing, and fails with
//!   those same violations otherwise;
//! - a generated VXU is one message the parser splits into CR-terminated segments, one per
//!   line, in the Z22 order MSH PID [PD1] [NK1] ORC RXA [RXR] [OBX…], with no LF anywhere;
//! - no data value changes the structure: each free-text value of the record reads back from
//!   its field/component, unescaped, exactly as the record has it (trimmed);
//! - the message validator finds no error in it (the builder's promise);
//! - `Prepared::new` takes the record too.
#![no_main]

use chrono::{DateTime, FixedOffset};
use izrelay::Record;
use izrelay::hl7::{
    Message, MessageProfile, Profiles, Segment, Severity, generate_vxu, unescape, validate_message,
    validate_record,
};
use izrelay::store::records::Prepared;
use libfuzzer_sys::fuzz_target;

const CONTROL_ID: &str = "FUZZ0000000000000001";

fuzz_target!(|data: &[u8]| {
    let Ok(rec) = serde_json::from_slice::<Record>(data) else { return };
    let json = serde_json::to_string(&rec).expect("a record serialises");
    let back: Record = serde_json::from_str(&json).expect("serialised record reads back");
    assert_eq!(back, rec, "JSON round trip changed the record");

    let now = DateTime::parse_from_rfc3339("2026-11-24T09:00:00-08:00").expect("fixed time");
    let profile = MessageProfile::default();
    let violations = validate_record(&rec, &profile, now.date_naive());
    match generate_vxu(&rec, &profile, CONTROL_ID, now) {
        Err(invalid) => {
            assert!(!invalid.violations.is_empty(), "Invalid without a violation");
            assert_eq!(invalid.violations, violations);
            assert_eq!(invalid.record_id, rec.vaccination_id);
        }
        Ok(vxu) => {
            assert!(violations.is_empty(), "generated although invalid: {violations:?}");
            check_message(&rec, &vxu, now);
        }
    }
    let _ = Prepared::new(rec, &Profiles::single(profile), now);
});

fn check_message(rec: &Record, vxu: &str, _now: DateTime<FixedOffset>) {
    assert!(vxu.ends_with('\r'), "no final CR");
    assert!(!vxu.contains('\n'), "LF in a generated message");
    let lines: Vec<&str> = vxu[..vxu.len() - 1].split('\r').collect();
    assert!(lines.iter().all(|l| !l.trim().is_empty()), "blank segment");
    let msg = Message::parse(vxu).unwrap_or_else(|e| panic!("generated VXU unparsable: {e}"));
    assert_eq!(msg.segment_count(), lines.len());
    let ids: String = msg.segments().map(|s| s.id().to_owned() + " ").collect();
    assert!(z22_order(&ids), "segment order {ids}");
    let msh = msg.msh();
    assert_eq!(msh.raw(10, 1), CONTROL_ID);
    assert_eq!(msh.raw(9, 1), "VXU");

    let errors: Vec<_> =
        validate_message(vxu).into_iter().filter(|f| f.severity == Severity::Error).collect();
    assert!(errors.is_empty(), "validator errors in a generated VXU: {errors:?}\n{vxu}");

    let seg = |id: &str| msg.segment(id).unwrap_or_else(|| panic!("no {id}"));
    let pid = seg("PID");
    let p = &rec.patient;
    same(&pid, 3, 1, &p.id, "patient.id");
    same(&pid, 5, 1, &p.family_name, "patient.family_name");
    same(&pid, 5, 2, &p.given_name, "patient.given_name");
    same_opt(&pid, 5, 3, &p.middle_name, "patient.middle_name");
    same_opt(&pid, 5, 4, &p.suffix, "patient.suffix");
    same(&pid, 8, 1, &p.sex, "patient.sex");
    if let Some(a) = &p.address {
        same_opt(&pid, 11, 1, &a.street, "patient.address.street");
        same_opt(&pid, 11, 2, &a.other, "patient.address.other");
        same_opt(&pid, 11, 3, &a.city, "patient.address.city");
        same_opt(&pid, 11, 5, &a.zip, "patient.address.zip");
    }
    let orc = seg("ORC");
    let rxa = seg("RXA");
    let refused = rxa.raw(20, 1) == "RE";
    assert_eq!(refused, rec.refusal_reason.is_some());
    if !refused {
        same(&orc, 3, 1, &rec.vaccination_id, "vaccination_id");
        same_opt(&rxa, 15, 1, &rec.vaccine.lot, "vaccine.lot");
    }
    if let Some(f) = &rec.facility {
        same(&orc, 17, 1, &f.id, "facility.id");
        same_opt(&orc, 17, 2, &f.name, "facility.name");
    }
    if let Some(o) = &rec.ordering_provider {
        same_opt(&orc, 12, 1, &o.id, "ordering_provider.id");
        same_opt(&orc, 12, 2, &o.family_name, "ordering_provider.family_name");
        same_opt(&orc, 12, 3, &o.given_name, "ordering_provider.given_name");
    }
    if let (Some(party), Some(nk1)) = (&rec.responsible_party, msg.segment("NK1")) {
        same(&nk1, 2, 1, &party.family_name, "responsible_party.family_name");
        same(&nk1, 2, 2, &party.given_name, "responsible_party.given_name");
    }
}

/// `MSH PID [PD1] [NK1] ORC RXA [RXR] [OBX…]`.
fn z22_order(ids: &str) -> bool {
    let mut rest = ids;
    for (id, required) in [("MSH ", true), ("PID ", true), ("PD1 ", false), ("NK1 ", false)] {
        match rest.strip_prefix(id) {
            Some(r) => rest = r,
            None if required => return false,
            None => {}
        }
    }
    let Some(r) = rest.strip_prefix("ORC RXA ") else { return false };
    let r = r.strip_prefix("RXR ").unwrap_or(r);
    r.split_terminator(' ').all(|s| s == "OBX")
}

fn same(seg: &Segment<'_, '_>, f: usize, c: usize, want: &str, what: &str) {
    let raw = seg.raw(f, c);
    let got = unescape(raw, &izrelay::hl7::Delimiters::default());
    assert_eq!(got, want.trim_ascii(), "{what} -> {}-{f}.{c} raw {raw:?}", seg.id());
}

fn same_opt(seg: &Segment<'_, '_>, f: usize, c: usize, want: &Option<String>, what: &str) {
    same(seg, f, c, want.as_deref().unwrap_or(""), what);
}
