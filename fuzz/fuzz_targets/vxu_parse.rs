//! The HL7 parser (`Message::parse`), the message validator (`validate_message`) and
//! `escape`/`unescape`, on arbitrary text.
//!
//! Checks, beyond "no panic":
//! - parsing is lossless: every segment's fields, joined again with the field separator,
//!   give back its line exactly (trailing blanks excepted, which the parser drops), segments
//!   come in line order, and each field's repetitions and components join back to it;
//! - `validate_message` reports a parse failure as exactly one error at `message`, and every
//!   finding has a location and a message;
//! - any text escaped with the message's delimiters (or the defaults) unescapes to itself,
//!   and the escaped form holds no bare delimiter or line break.
#![no_main]

use izrelay::hl7::{Delimiters, Message, Severity, escape, unescape, validate_message};
use libfuzzer_sys::fuzz_target;

const MSH: &str = "MSH|^~\\&|EHR|FAC|IIS|IIS|20260101120000-0500||VXU^V04^VXU_V04|C1|P|2.5.1|||ER|AL|||||Z22^CDCPHINVS\r";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    check(text);
    if !text.starts_with("MSH") {
        check(&format!("{MSH}{text}"));
    }
    let default = Delimiters::default();
    roundtrip(text, &default);
});

/// Non-blank lines as the parser defines them (CR, LF or CRLF; trailing blanks dropped).
fn lines(text: &str) -> Vec<(usize, &str)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let mut n = 0;
    let mut rest = text;
    loop {
        n += 1;
        let (line, next) = match rest.find(['\r', '\n']) {
            Some(i) => {
                let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                (&rest[..i], Some(&rest[i + skip..]))
            }
            None => (rest, None),
        };
        let line = line.trim_end_matches([' ', '\t']);
        if !line.trim_start().is_empty() {
            out.push((n, line));
        }
        match next {
            Some(r) if !r.is_empty() => rest = r,
            _ => break,
        }
    }
    out
}

fn check(text: &str) {
    let findings = validate_message(text);
    for f in &findings {
        assert!(!f.location.is_empty() && !f.message.is_empty(), "{f:?}");
    }
    let msg = match Message::parse(text) {
        Ok(m) => m,
        Err(e) => {
            assert_eq!(findings.len(), 1, "{findings:?}");
            assert_eq!(findings[0].location, "message");
            assert_eq!(findings[0].severity, Severity::Error);
            assert!(findings[0].message.contains(&e.to_string()));
            return;
        }
    };
    let d = *msg.delimiters();
    let sep = char::from(d.field);
    let expected = lines(text);
    assert_eq!(msg.segment_count(), expected.len());
    for (i, (seg, (n, line))) in msg.segments().zip(&expected).enumerate() {
        assert_eq!(seg.line(), *n);
        // Fields after the id (for MSH, MSH-1 onwards): field(1..=count).
        let count = seg.field_count();
        // Only the first segment is read as MSH (a later MSH is an ordinary segment).
        let joined = if i == 0 {
            // field(1) is the separator itself; field(0) the id.
            let rest: Vec<&str> = (2..=count).map(|i| seg.field(i).as_str()).collect();
            format!("MSH{sep}{}", rest.join(&sep.to_string()))
        } else {
            let all: Vec<&str> = (0..=count).map(|i| seg.field(i).as_str()).collect();
            all.join(&sep.to_string())
        };
        assert_eq!(&joined, line, "segment at line {n} does not join back");
        assert_eq!(seg.id(), seg.field(0).as_str());
        for f in 1..=count.min(40) {
            let field = seg.field(f);
            if i == 0 && f <= 2 {
                continue;
            }
            let reps: Vec<&str> = field.repetitions().map(|r| r.as_str()).collect();
            assert_eq!(reps.join(&char::from(d.repetition).to_string()), field.as_str());
            for r in field.repetitions().take(8) {
                let n = r.component_count();
                let comps: Vec<&str> = (1..=n).map(|c| r.component(c)).collect();
                assert_eq!(comps.join(&char::from(d.component).to_string()), r.as_str());
                assert_eq!(r.component(n + 1), "");
                for c in 1..=n.min(8) {
                    let _ = r.text(c);
                    let _ = r.subcomponent(c, 2);
                }
            }
        }
        assert_eq!(seg.field(count + 1).as_str(), "");
    }
    roundtrip(text, &d);
}

fn roundtrip(value: &str, d: &Delimiters) {
    let value = &value[..value.floor_char_boundary(4096)];
    let escaped = escape(value, d);
    for b in [d.field, d.component, d.repetition, d.subcomponent, b'\r', b'\n'] {
        assert!(!escaped.as_bytes().contains(&b), "bare {:?} in {escaped:?}", char::from(b));
    }
    assert_eq!(unescape(&escaped, d), value, "escape then unescape changed the value");
}
