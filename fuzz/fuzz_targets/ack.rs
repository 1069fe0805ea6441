//! `izrelay::hl7::parse_ack` on arbitrary text (and on arbitrary text after a valid MSH).
//!
//! Checks, beyond "no panic":
//! - the outcome is the one the table in `src/hl7/ack.rs` gives for MSA-1 and the ERR
//!   segments, recomputed here independently;
//! - MSA-1 is the worst code among all MSA segments; `NoMsa` only when there is no MSA;
//!   `BadCode` only for a code outside AA/AE/AR/CA/CE/CR;
//! - `control_id_matches` is `None` without a sent id and exactly "MSA-2 == sent id" with one,
//!   and the sent id changes nothing else;
//! - every optional text is trimmed and non-empty when present.
#![no_main]

use izrelay::hl7::{Ack, AckCode, AckParseError, ErrorSeverity, Message, Outcome, parse_ack};
use libfuzzer_sys::fuzz_target;

const MSH: &str = "MSH|^~\\&|IIS|IIS|||20260101||ACK^V04^ACK|A1|P|2.5.1\r";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    check(text);
    if !text.starts_with("MSH") {
        check(&format!("{MSH}{text}"));
    }
});

fn rank(c: AckCode) -> u8 {
    match c {
        AckCode::AA | AckCode::CA => 0,
        AckCode::AE | AckCode::CE => 1,
        AckCode::AR | AckCode::CR => 2,
    }
}

fn code_of(s: &str) -> Option<AckCode> {
    Some(match s {
        "AA" => AckCode::AA,
        "AE" => AckCode::AE,
        "AR" => AckCode::AR,
        "CA" => AckCode::CA,
        "CE" => AckCode::CE,
        "CR" => AckCode::CR,
        _ => return None,
    })
}

/// The module doc's table, written out again.
fn expected_outcome(ack: &Ack) -> Outcome {
    let any_207 = ack.errors.iter().any(|e| e.code.as_deref() == Some("207"));
    let no_real_errors = ack.errors.iter().all(|e| e.code.as_deref() == Some("0"));
    let warnings_only = !ack.errors.is_empty()
        && ack.errors.iter().all(|e| {
            matches!(e.severity, Some(ErrorSeverity::Warning) | Some(ErrorSeverity::Information))
        });
    match ack.code {
        AckCode::AA | AckCode::CA => {
            if no_real_errors {
                Outcome::Accepted
            } else {
                Outcome::AcceptedWithWarnings
            }
        }
        AckCode::CE => Outcome::Retryable,
        AckCode::AE | AckCode::AR if any_207 => Outcome::Retryable,
        AckCode::AE if warnings_only => Outcome::AcceptedWithWarnings,
        AckCode::AE | AckCode::AR | AckCode::CR => Outcome::Rejected,
    }
}

fn trimmed(field: &str, v: &Option<String>) {
    if let Some(s) = v {
        assert!(!s.is_empty() && s.trim() == s, "{field} not trimmed/non-empty: {s:?}");
    }
}

fn check(text: &str) {
    let sent = "X1";
    let with = parse_ack(text, Some(sent));
    let without = parse_ack(text, None);
    let parsed = Message::parse(text);
    match (&with, &without) {
        (Ok(a), Ok(b)) => {
            // The sent id only adds the comparison.
            assert_eq!(b.control_id_matches, None);
            assert_eq!(a.control_id_matches, Some(a.control_id.as_deref() == Some(sent)));
            let mut a2 = a.clone();
            a2.control_id_matches = None;
            assert_eq!(&a2, b);
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("the sent control id changed success: {with:?} vs {without:?}"),
    }
    let msg = match (&parsed, &without) {
        (Err(pe), Err(AckParseError::Parse(e))) => {
            assert_eq!(pe, e);
            return;
        }
        (Err(pe), r) => panic!("Message::parse failed ({pe}) but parse_ack gave {r:?}"),
        (Ok(m), _) => m,
    };
    let msa_codes: Vec<&str> =
        msg.segments().filter(|s| s.id() == "MSA").map(|s| s.code(1, 1)).collect();
    match &without {
        Err(AckParseError::Parse(e)) => panic!("Message::parse succeeded but parse_ack: {e}"),
        Err(AckParseError::NoMsa) => assert!(msa_codes.is_empty()),
        Err(AckParseError::BadCode(c)) => {
            assert!(code_of(c).is_none(), "BadCode for a valid code {c:?}");
            assert!(msa_codes.contains(&c.as_str()));
        }
        Ok(ack) => {
            let codes: Vec<AckCode> = msa_codes.iter().filter_map(|c| code_of(c)).collect();
            assert_eq!(codes.len(), msa_codes.len(), "Ok although an MSA-1 is not a code");
            let worst = codes.iter().map(|&c| rank(c)).max();
            assert_eq!(worst, Some(rank(ack.code)), "MSA-1 is not the worst code");
            assert!(codes.contains(&ack.code));
            assert_eq!(ack.outcome, expected_outcome(ack), "{ack:?}");
            assert_eq!(ack.message_type, msg.msh().field(9).as_str());
            trimmed("control_id", &ack.control_id);
            trimmed("ack_control_id", &ack.ack_control_id);
            for t in &ack.texts {
                assert!(!t.is_empty() && t.trim() == t);
            }
            let errs = msg.segments().filter(|s| s.id() == "ERR").count();
            if errs == 0 {
                assert!(ack.errors.is_empty());
            }
            for e in &ack.errors {
                trimmed("location", &e.location);
                trimmed("code", &e.code);
                trimmed("code_text", &e.code_text);
                trimmed("application_code", &e.application_code);
                trimmed("application_text", &e.application_text);
                trimmed("message", &e.message);
                trimmed("diagnostics", &e.diagnostics);
            }
            // Serialises (the CLI prints ACKs as JSON).
            assert!(serde_json::to_string(ack).is_ok());
        }
    }
}
