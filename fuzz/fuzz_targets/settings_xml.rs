//! `izrelay::config::vault::read_settings` (the `Settings.xml` reader of
//! `izrelay credentials import`) on arbitrary text, and on a well-formed file around arbitrary
//! values.
//!
//! Checks, beyond "no panic":
//! - what it accepts obeys its contract: at least one setting; providerIds non-empty, trimmed,
//!   free of control characters and unique; userName and password not blank; the endpoint
//!   trimmed and an http(s) URL with a host and no user or password; lines within the file
//!   and in file order;
//! - an accepted file, written out again (values escaped or in CDATA), reads back the same;
//! - a value put in a well-formed file, escaped, reads back exactly (CDATA) or trimmed (text);
//! - a password written raw (unescaped) into a file is never echoed in the error text.
#![no_main]

use izrelay::config::vault::{Setting, read_settings};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(settings) = read_settings(text) {
        contract(text, &settings);
        let again = read_settings(&write(&settings))
            .unwrap_or_else(|e| panic!("rewritten file rejected: {e}"));
        let values = |v: Vec<(View, usize)>| v.into_iter().map(|(v, _)| v).collect::<Vec<_>>();
        assert_eq!(values(view(&again)), values(view(&settings)));
    }
    values_in_a_good_file(text);
});

type View = (String, String, String, String, Option<String>);

fn view(s: &[Setting]) -> Vec<(View, usize)> {
    s.iter()
        .map(|s| {
            let v = (
                s.provider_id.clone(),
                s.user_name.clone(),
                s.password.expose().to_owned(),
                s.endpoint.clone(),
                s.facility_id.clone(),
            );
            (v, s.line)
        })
        .collect()
}

fn contract(text: &str, settings: &[Setting]) {
    assert!(!settings.is_empty());
    let lines = text.bytes().filter(|&b| b == b'\n').count() + 1;
    let mut seen = std::collections::BTreeSet::new();
    let mut last_line = 0;
    for s in settings {
        let p = &s.provider_id;
        assert!(!p.is_empty() && p.trim() == p && !p.chars().any(char::is_control), "{p:?}");
        assert!(seen.insert(p.clone()), "providerId {p:?} twice");
        assert!(!s.user_name.trim().is_empty());
        assert!(!s.password.expose().trim().is_empty());
        assert_eq!(s.endpoint.trim(), s.endpoint);
        let url = url_parts(&s.endpoint);
        assert!(url, "accepted endpoint {:?}", s.endpoint);
        assert!(s.line >= 1 && s.line <= lines, "line {} of {lines}", s.line);
        assert!(s.line >= last_line, "settings out of file order");
        last_line = s.line;
    }
}

/// An http(s) URL with a host and no user info, checked without the crate's own code (loosely,
/// as WHATWG parsing is: surrounding controls dropped, tabs and newlines removed, any number of
/// `/` or `\` after the scheme).
fn url_parts(endpoint: &str) -> bool {
    let e: String = endpoint
        .trim_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    let Some((scheme, rest)) = e.split_once(':') else { return false };
    if !scheme.eq_ignore_ascii_case("https") && !scheme.eq_ignore_ascii_case("http") {
        return false;
    }
    let rest = rest.trim_start_matches(['/', '\\']);
    let authority = rest.split(['/', '\\', '?', '#']).next().unwrap_or("");
    let user_info = authority.rsplit_once('@').map_or("", |(u, _)| u);
    !authority.is_empty() && user_info.chars().all(|c| c == ':')
}

fn xml_text(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn xml_attr(s: &str) -> String {
    xml_text(s).replace('"', "&quot;")
}

/// A value in CDATA (keeps surrounding whitespace); a `]]>` in it splits the section.
fn value(name: &str, v: &str) -> String {
    let body = v.replace("]]>", "]]]]><![CDATA[>");
    format!("    <value name=\"{name}\"><![CDATA[{body}]]></value>\n")
}

fn write(settings: &[Setting]) -> String {
    let mut out = String::from("<?xml version=\"1.0\"?>\n<Settings>\n");
    for s in settings {
        out.push_str(&format!("  <setting providerId=\"{}\">\n", xml_attr(&s.provider_id)));
        out.push_str(&value("userName", &s.user_name));
        out.push_str(&value("password", s.password.expose()));
        out.push_str(&value("iisEndpoint", &s.endpoint));
        if let Some(f) = &s.facility_id {
            out.push_str(&value("facilityId", f));
        }
        out.push_str("  </setting>\n");
    }
    out.push_str("</Settings>\n");
    out
}

fn good_file(password_xml: &str) -> String {
    format!(
        "<Settings>\n  <setting providerId=\"PRV-001\">\n    <value name=\"userName\">clinic17</value>\n    <value name=\"password\">{password_xml}</value>\n    <value name=\"iisEndpoint\">https://iis.example.gov/HL7/CDCWS</value>\n  </setting>\n</Settings>\n"
    )
}

fn values_in_a_good_file(v: &str) {
    let v = &v[..v.floor_char_boundary(2048)];
    // Escaped text: read back trimmed, or rejected only when blank.
    match read_settings(&good_file(&xml_text(v))) {
        Ok(s) => {
            assert_eq!(s.len(), 1);
            assert_eq!(s[0].password.expose(), v.trim(), "escaped value read back wrong");
        }
        Err(e) => assert!(v.trim().is_empty(), "escaped value {v:?} rejected: {e}"),
    }
    // CDATA: read back exactly.
    if !v.contains("]]>") {
        match read_settings(&good_file(&format!("<![CDATA[{v}]]>"))) {
            Ok(s) => assert_eq!(s[0].password.expose(), v, "CDATA value read back wrong"),
            Err(e) => assert!(v.trim().is_empty(), "CDATA value {v:?} rejected: {e}"),
        }
    }
    // Raw: whatever the reader makes of it, a distinctive password is never in the errors.
    if v.len() >= 12 && !v.contains("value") && !v.contains("line") {
        if let Err(e) = read_settings(&good_file(v)) {
            assert!(!e.to_string().contains(v), "password echoed in {e}");
        }
    }
}
