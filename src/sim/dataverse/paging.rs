//! The opaque tokens the simulated Dataverse hands out: the `$skiptoken` paging cookie of an
//! `@odata.nextLink` and the `$deltatoken` of an `@odata.deltaLink`.
//!
//! Both copy the published shapes (`research/dataverse.md` §2.4 and §2.6):
//!
//! - `$skiptoken` is `<cookie pagenumber="2" pagingcookie="…" istracking="False" />`, URL-encoded
//!   once in the link (upper-case hex, `=` and `/` left alone); `pagingcookie` is the inner
//!   `<cookie page="1"><contactid last="{GUID}" first="{GUID}" /></cookie>`, URL-encoded once
//!   more (lower-case hex). For the default order (primary key only) the simulator produces
//!   exactly the documented string. What it adds is ours: one element per `$orderby` column
//!   (the value as JSON) and, for change tracking, `upto`/`since`/`deleted` attributes.
//! - `$deltatoken` is `<version>!<MM/dd/yyyy HH:mm:ss>` (the documented
//!   `919042!08/22/2017 08:10:44`), URL-encoded in lower-case hex.
//!
//! Everything that decodes is tolerant: a malformed token is `None`, never a panic.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value;

/// Percent-encodes every byte outside `keep`, in upper- or lower-case hex.
fn encode(s: &str, keep: impl Fn(u8) -> bool, upper: bool) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        if keep(b) {
            out.push(char::from(b));
        } else if upper {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// Encodes a value placed inside the skiptoken or the deltatoken (lower-case hex, as Dataverse).
pub(crate) fn encode_inner(s: &str) -> String {
    encode(s, |b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'), false)
}

/// Encodes a query-string value the way Dataverse writes the `$skiptoken` into a nextLink.
pub(crate) fn encode_query(s: &str) -> String {
    encode(
        s,
        |b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'=' | b'/'),
        true,
    )
}

/// Decodes `%XX` escapes (not `+`); `None` for a bad escape or bytes that are not UTF-8.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;")
}

fn xml_unescape(s: &str) -> String {
    s.replace("&quot;", "\"").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

/// One XML element: its name and attributes, in order.
type Element = (String, Vec<(String, String)>);

/// Reads the start (or empty) elements of a small, attribute-only XML text.
fn elements(xml: &str) -> Option<Vec<Element>> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find('<') {
        rest = &rest[start + 1..];
        if rest.starts_with('/') {
            let end = rest.find('>')?;
            rest = &rest[end + 1..];
            continue;
        }
        let name_end = rest.find(|c: char| c.is_whitespace() || c == '/' || c == '>')?;
        let name = rest[..name_end].to_owned();
        rest = &rest[name_end..];
        let mut attrs = Vec::new();
        loop {
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix("/>").or_else(|| rest.strip_prefix('>')) {
                rest = r;
                break;
            }
            let eq = rest.find('=')?;
            let key = rest[..eq].trim().to_owned();
            let after = rest[eq + 1..].trim_start().strip_prefix('"')?;
            let close = after.find('"')?;
            attrs.push((key, xml_unescape(&after[..close])));
            rest = &after[close + 1..];
        }
        if name.is_empty() {
            return None;
        }
        out.push((name, attrs));
    }
    Some(out)
}

fn attr<'a>(attrs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Whether `s` is a GUID in the 8-4-4-4-12 form.
pub(crate) fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) { *c == b'-' } else { c.is_ascii_hexdigit() }
        })
}

/// A sort value as a cookie attribute: a GUID as Dataverse writes it (`{UPPER}`), else JSON.
fn value_to_attr(v: &Value) -> String {
    match v {
        Value::String(s) if is_guid(s) => format!("{{{}}}", s.to_ascii_uppercase()),
        other => other.to_string(),
    }
}

fn attr_to_value(s: &str) -> Option<Value> {
    if let Some(inner) = s.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
        if is_guid(inner) {
            return Some(Value::String(inner.to_ascii_lowercase()));
        }
    }
    serde_json::from_str(s).ok()
}

/// Where a change-tracking listing stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Track {
    /// The initial full read: rows at or below version `upto`.
    Snapshot {
        /// The version the read started at (the deltaLink's version).
        upto: u64,
    },
    /// A delta read: rows and deletes in `(since, upto]`.
    Delta {
        /// The delta token's version.
        since: u64,
        /// The version the delta read started at.
        upto: u64,
        /// Whether the rows are done and the deletes are being paged.
        deleted: bool,
    },
}

/// The decoded `$skiptoken`: what the next page starts after.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cookie {
    /// The page the link leads to (1-based; the first link is page 2).
    pub pagenumber: u64,
    /// Sort columns and the last row's values, primary key last.
    pub last: Vec<(String, Value)>,
    /// The first row's values of the page just served (informative, as in Dataverse).
    pub first: Vec<Value>,
    /// Change-tracking state, if any.
    pub track: Option<Track>,
}

impl Cookie {
    /// The `$skiptoken` value, not yet URL-encoded for the query string.
    pub(crate) fn to_skiptoken(&self) -> String {
        let mut inner = format!("<cookie page=\"{}\"", self.pagenumber.saturating_sub(1));
        match self.track {
            None => {}
            Some(Track::Snapshot { upto }) => inner.push_str(&format!(" upto=\"{upto}\"")),
            Some(Track::Delta { since, upto, deleted }) => inner.push_str(&format!(
                " since=\"{since}\" upto=\"{upto}\" deleted=\"{}\"",
                u8::from(deleted)
            )),
        }
        inner.push('>');
        for (i, (col, v)) in self.last.iter().enumerate() {
            inner.push_str(&format!("<{col} last=\"{}\"", xml_escape(&value_to_attr(v))));
            if let Some(f) = self.first.get(i) {
                inner.push_str(&format!(" first=\"{}\"", xml_escape(&value_to_attr(f))));
            }
            inner.push_str(" />");
        }
        inner.push_str("</cookie>");
        format!(
            "<cookie pagenumber=\"{}\" pagingcookie=\"{}\" istracking=\"{}\" />",
            self.pagenumber,
            encode_inner(&inner),
            if self.track.is_some() { "True" } else { "False" }
        )
    }

    /// Decodes a `$skiptoken` value (already URL-decoded once, as a query parser does).
    pub(crate) fn from_skiptoken(token: &str) -> Option<Self> {
        let outer = elements(token)?;
        let (name, attrs) = outer.first()?;
        if name != "cookie" {
            return None;
        }
        let pagenumber = attr(attrs, "pagenumber")?.parse().ok()?;
        let tracking = attr(attrs, "istracking").is_some_and(|t| t.eq_ignore_ascii_case("true"));
        let inner = percent_decode(attr(attrs, "pagingcookie")?)?;
        let mut els = elements(&inner)?.into_iter();
        let (root, root_attrs) = els.next()?;
        if root != "cookie" {
            return None;
        }
        let num = |k: &str| attr(&root_attrs, k).and_then(|v| v.parse::<u64>().ok());
        let track = match (tracking, num("since"), num("upto")) {
            (false, _, _) => None,
            (true, None, Some(upto)) => Some(Track::Snapshot { upto }),
            (true, Some(since), Some(upto)) => {
                Some(Track::Delta { since, upto, deleted: num("deleted") == Some(1) })
            }
            (true, _, None) => return None,
        };
        let mut last = Vec::new();
        let mut first = Vec::new();
        for (col, a) in els {
            last.push((col, attr_to_value(attr(&a, "last")?)?));
            if let Some(f) = attr(&a, "first").and_then(attr_to_value) {
                first.push(f);
            }
        }
        if last.is_empty() {
            return None;
        }
        Some(Self { pagenumber, last, first, track })
    }
}

/// A decoded `$deltatoken`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeltaToken {
    /// Changes after this version are returned.
    pub version: u64,
    /// When the token was issued (UTC, whole seconds).
    pub issued: DateTime<Utc>,
}

const DELTA_TIME: &str = "%m/%d/%Y %H:%M:%S";

impl DeltaToken {
    /// `919042!08/22/2017 08:10:44`, not yet URL-encoded.
    pub(crate) fn to_text(self) -> String {
        format!("{}!{}", self.version, self.issued.format(DELTA_TIME))
    }

    /// The value as it goes into a deltaLink (`919042%2108%2f22%2f2017%2008%3a10%3a44`).
    pub(crate) fn to_query(self) -> String {
        encode_inner(&self.to_text())
    }

    /// Parses the URL-decoded token.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let (v, t) = s.split_once('!')?;
        let version = v.parse().ok()?;
        let issued = NaiveDateTime::parse_from_str(t, DELTA_TIME).ok()?.and_utc();
        Some(Self { version, issued })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verbatim nextLink of `webapi/query/page-results.md`.
    const DOC_SKIPTOKEN: &str = "%3Ccookie%20pagenumber=%222%22%20pagingcookie=%22%253ccookie%2520page%253d%25221%2522%253e%253ccontactid%2520last%253d%2522%257bD5026A4D-D01C-ED11-B83E-000D3A572421%257d%2522%2520first%253d%2522%257b49B0BE2E-D01C-ED11-B83E-000D3A572421%257d%2522%2520%252f%253e%253c%252fcookie%253e%22%20istracking=%22False%22%20/%3E";

    #[test]
    fn skiptoken_matches_the_documented_example() {
        let c = Cookie {
            pagenumber: 2,
            last: vec![("contactid".into(), "d5026a4d-d01c-ed11-b83e-000d3a572421".into())],
            first: vec!["49b0be2e-d01c-ed11-b83e-000d3a572421".into()],
            track: None,
        };
        assert_eq!(encode_query(&c.to_skiptoken()), DOC_SKIPTOKEN);
        // A query parser decodes the link once; the cookie then decodes to what was encoded.
        let once = percent_decode(DOC_SKIPTOKEN).expect("decodes");
        assert_eq!(Cookie::from_skiptoken(&once), Some(c));
    }

    #[test]
    fn skiptoken_round_trips_order_columns_and_tracking() {
        let c = Cookie {
            pagenumber: 7,
            last: vec![
                ("modifiedon".into(), "2024-01-01T00:00:00Z".into()),
                ("x_count".into(), serde_json::json!(12.5)),
                ("name".into(), "O'Bryan <&> \"q\" %25".into()),
                ("x_id".into(), "row-0001".into()),
            ],
            first: vec![],
            track: Some(Track::Delta { since: 10, upto: 99, deleted: true }),
        };
        let link = encode_query(&c.to_skiptoken());
        assert!(!link.contains(['<', '>', '"', ' ', '&']), "{link}");
        let back = Cookie::from_skiptoken(&percent_decode(&link).expect("decodes"));
        assert_eq!(back, Some(c));
        let snap = Cookie {
            pagenumber: 2,
            last: vec![("id".into(), "a".into())],
            first: vec![],
            track: Some(Track::Snapshot { upto: 5 }),
        };
        assert_eq!(Cookie::from_skiptoken(&snap.to_skiptoken()), Some(snap));
    }

    #[test]
    fn garbage_skiptokens_are_refused() {
        for bad in [
            "",
            "<cookie",
            "<cookie pagenumber=\"x\" pagingcookie=\"\" />",
            "<cookie pagenumber=\"2\" pagingcookie=\"%zz\" />",
            "<cookie pagenumber=\"2\" pagingcookie=\"%3ccookie%20page%3d%221%22%3e%3c%2fcookie%3e\" />",
            "<other pagenumber=\"2\" />",
            "<cookie pagenumber=\"2\" pagingcookie=\"%3ccookie%3e%3cid%20last%3d%22%7b%22%20%2f%3e\" istracking=\"True\" />",
        ] {
            assert_eq!(Cookie::from_skiptoken(bad), None, "{bad}");
        }
    }

    #[test]
    fn deltatoken_matches_the_documented_example() {
        let t = DeltaToken::parse("919042!08/22/2017 08:10:44").expect("parses");
        assert_eq!(t.version, 919_042);
        assert_eq!(t.to_query(), "919042%2108%2f22%2f2017%2008%3a10%3a44");
        assert_eq!(DeltaToken::parse(&percent_decode(&t.to_query()).expect("decodes")), Some(t));
        assert_eq!(DeltaToken::parse("919042"), None);
        assert_eq!(DeltaToken::parse("x!08/22/2017 08:10:44"), None);
        assert_eq!(DeltaToken::parse("1!13/45/2017 08:10:44"), None);
    }

    #[test]
    fn percent_decoding_refuses_bad_escapes() {
        assert_eq!(percent_decode("a%20b").as_deref(), Some("a b"));
        assert_eq!(percent_decode("a%2"), None);
        assert_eq!(percent_decode("%ff%fe"), None);
        assert_eq!(percent_decode("%é"), None);
    }
}
