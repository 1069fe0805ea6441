//! `izrelay::iis::soap::parse_response` (and `parse_request`) on arbitrary bytes, and the
//! writers' envelopes read back.
//!
//! Checks, beyond "no panic":
//! - an error's text stays short (it quotes at most a clipped snippet of the body), whatever
//!   the body;
//! - bounded work: libFuzzer's `-timeout` catches a super-linear case;
//! - the input read as text, put through every writer (`submit_response`,
//!   `connectivity_response`, `fault_response`, `submit_request`, `connectivity_request`),
//!   reads back as exactly that text, except for the characters XML 1.0 cannot carry, which
//!   the writers document as becoming U+FFFD (Fault texts are also whitespace-folded).
#![no_main]

use izrelay::iis::soap::{
    FaultKind, Request, Response, connectivity_request, connectivity_response, fault_response,
    parse_request, parse_response, submit_request, submit_response,
};
use libfuzzer_sys::fuzz_target;

/// An error message may quote 100 characters of the body, 64 of a name and 96 of a problem.
const MAX_ERROR_CHARS: usize = 400;

fuzz_target!(|data: &[u8]| {
    match parse_response(data) {
        Ok(Response::Submit(_) | Response::Connectivity(_) | Response::Fault(_)) => {}
        Err(e) => {
            let n = e.to_string().chars().count();
            assert!(n <= MAX_ERROR_CHARS, "error of {n} characters: {e}");
        }
    }
    if let Err(e) = parse_request(data) {
        let n = e.to_string().chars().count();
        assert!(n <= MAX_ERROR_CHARS, "error of {n} characters: {e}");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        writers_round_trip(text);
    }
});

/// What the writers make of text: C0 controls other than TAB, CR, LF, and U+FFFE/U+FFFF
/// become U+FFFD.
fn xml_safe(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\t' | '\r' | '\n' => c,
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => '\u{fffd}',
            _ => c,
        })
        .collect()
}

fn fold(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn writers_round_trip(text: &str) {
    let want = xml_safe(text);
    match parse_response(submit_response(text).as_bytes()) {
        Ok(Response::Submit(got)) => assert_eq!(got, want, "submit_response"),
        other => panic!("submit_response read back as {other:?}"),
    }
    match parse_response(connectivity_response(text).as_bytes()) {
        Ok(Response::Connectivity(got)) => assert_eq!(got, want, "connectivity_response"),
        other => panic!("connectivity_response read back as {other:?}"),
    }
    let kinds = [
        FaultKind::Security,
        FaultKind::MessageTooLarge,
        FaultKind::Unknown,
        FaultKind::UnsupportedOperation,
        FaultKind::Other,
    ];
    let kind = kinds[text.len() % kinds.len()];
    let code = i64::try_from(text.len()).unwrap_or(0) - 7;
    // Reason and detail: two halves of the text.
    let half = text.floor_char_boundary(text.len() / 2);
    let (reason, detail) = text.split_at(half);
    match parse_response(fault_response(kind, code, reason, detail).as_bytes()) {
        Ok(Response::Fault(f)) => {
            assert_eq!(f.kind, kind);
            assert_eq!(f.soap_reason, fold(&xml_safe(reason)));
            let sender = matches!(
                kind,
                FaultKind::Security | FaultKind::MessageTooLarge | FaultKind::UnsupportedOperation
            );
            assert_eq!(f.soap_code, if sender { "Sender" } else { "Receiver" });
            assert_eq!(f.detail, fold(&xml_safe(detail)));
            if kind == FaultKind::Other {
                assert_eq!(f.code, None);
            } else {
                assert_eq!(f.code, Some(code));
            }
            if kind == FaultKind::Unknown {
                assert_eq!(f.reason, fold(&xml_safe(reason)));
            }
        }
        other => panic!("fault_response read back as {other:?}"),
    }
    let facility = (text.len() % 2 == 0).then_some(detail);
    match parse_request(submit_request(reason, detail, facility, text).as_bytes()) {
        Ok(Request::Submit { username, password, facility_id, hl7 }) => {
            assert_eq!(username.as_deref(), Some(xml_safe(reason).as_str()));
            assert_eq!(password.as_deref(), Some(xml_safe(detail).as_str()));
            assert_eq!(facility_id, facility.map(xml_safe));
            assert_eq!(hl7, want);
        }
        other => panic!("submit_request read back as {other:?}"),
    }
    match parse_request(connectivity_request(text).as_bytes()) {
        Ok(Request::Connectivity { echo }) => assert_eq!(echo, want),
        other => panic!("connectivity_request read back as {other:?}"),
    }
}
