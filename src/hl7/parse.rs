//! A zero-copy HL7 v2 parser for any message: ours, another system's, or an IIS's ACK.
//!
//! [`Message::parse`] reads the delimiters from MSH, splits segments on CR, LF or CRLF (files
//! on disk use all three; the wire uses CR) and fields on the field separator, borrowing from
//! the input. Components, repetitions and sub-components are split on demand by [`Field`].
//! Field numbering follows HL7: `seg.field(1)` is the first field after the segment id, and for
//! MSH `field(1)` is the field separator itself and `field(2)` the encoding characters, so
//! `field(n)` is MSH-n everywhere. Parsing never panics on any input.

use std::borrow::Cow;

use super::escape::{Delimiters, unescape};

/// Why a text could not be read as an HL7 v2 message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// The input held no segment at all.
    #[error("the message is empty")]
    Empty,
    /// The first segment is not MSH.
    #[error("line {line}: a message must start with an MSH segment, found {found:?}")]
    NoMsh {
        /// 1-based line of the first segment.
        line: usize,
        /// The first characters found instead.
        found: String,
    },
    /// MSH-1/MSH-2 are missing or not usable as delimiters.
    #[error("line {line}: MSH-1/MSH-2 do not hold five distinct ASCII delimiters ({found:?})")]
    BadDelimiters {
        /// 1-based line of the MSH segment.
        line: usize,
        /// The start of the MSH segment.
        found: String,
    },
    /// A segment does not start with a three-character segment id.
    #[error("line {line}: {found:?} is not a segment (a segment starts with a 3-character id)")]
    BadSegment {
        /// 1-based line of the segment.
        line: usize,
        /// The start of the segment.
        found: String,
    },
}

/// One parsed message; segments borrow from the input text.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    delims: Delimiters,
    /// All fields of all segments; `fields[seg.start]` is the segment id.
    fields: Vec<&'a str>,
    segments: Vec<SegmentSpan>,
}

#[derive(Debug, Clone, Copy)]
struct SegmentSpan {
    start: u32,
    len: u32,
    line: u32,
}

/// Returns the first characters of `s`, for error messages.
fn preview(s: &str) -> String {
    s.chars().take(24).collect()
}

impl<'a> Message<'a> {
    /// Parses `text` (segments separated by CR, LF or CRLF; blank lines ignored).
    ///
    /// # Errors
    /// [`ParseError`] when the text is empty, does not start with MSH, has unusable delimiters
    /// or holds a line that is not a segment.
    pub fn parse(text: &'a str) -> Result<Self, ParseError> {
        // Skip a UTF-8 byte-order mark.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut lines = Lines { text, pos: 0, line: 0 };
        let Some((first_line, msh)) = lines.next() else {
            return Err(ParseError::Empty);
        };
        if !msh.starts_with("MSH") {
            return Err(ParseError::NoMsh { line: first_line, found: preview(msh) });
        }
        let delims = read_delimiters(msh)
            .ok_or_else(|| ParseError::BadDelimiters { line: first_line, found: preview(msh) })?;
        let sep = delims.field;

        let mut fields = Vec::with_capacity(text.len() / 5);
        let mut segments = Vec::with_capacity(text.len() / 48);
        // MSH: id, MSH-1 (the separator itself), then MSH-2 (encoding characters) onwards.
        fields.push(&msh[..3]);
        fields.push(&msh[3..4]);
        split_fields(&msh[4..], sep, &mut fields);
        segments.push(span(0, fields.len(), first_line));

        for (line, seg) in lines {
            let bytes = seg.as_bytes();
            let id_ok = bytes.len() >= 3
                && bytes[..3].iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
                && (bytes.len() == 3 || bytes[3] == sep);
            if !id_ok {
                return Err(ParseError::BadSegment { line, found: preview(seg) });
            }
            let start = fields.len();
            split_fields(seg, sep, &mut fields);
            segments.push(span(start, fields.len(), line));
        }
        Ok(Self { delims, fields, segments })
    }

    /// The delimiters declared in MSH-1/MSH-2.
    pub fn delimiters(&self) -> &Delimiters {
        &self.delims
    }

    /// Every segment, in order.
    pub fn segments(&self) -> impl Iterator<Item = Segment<'_, 'a>> + '_ {
        self.segments.iter().map(move |s| self.view(s))
    }

    /// The number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The first segment with id `id`.
    pub fn segment(&self, id: &str) -> Option<Segment<'_, 'a>> {
        self.segments().find(|s| s.id() == id)
    }

    /// The MSH segment (always present).
    pub fn msh(&self) -> Segment<'_, 'a> {
        self.view(&self.segments[0])
    }

    fn view(&self, s: &SegmentSpan) -> Segment<'_, 'a> {
        let start = s.start as usize;
        Segment {
            fields: &self.fields[start..start + s.len as usize],
            delims: &self.delims,
            line: s.line as usize,
        }
    }
}

/// Splits `s` on the ASCII byte `sep` into `out` (one byte scan, no allocation per field).
fn split_fields<'a>(s: &'a str, sep: u8, out: &mut Vec<&'a str>) {
    let mut from = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        if b == sep {
            // `sep` is ASCII, so `from..i` are char boundaries.
            out.push(&s[from..i]);
            from = i + 1;
        }
    }
    out.push(&s[from..]);
}

/// Non-blank lines split on CR, LF or CRLF, with trailing blanks trimmed and 1-based numbers.
struct Lines<'a> {
    text: &'a str,
    pos: usize,
    line: usize,
}

impl<'a> Iterator for Lines<'a> {
    type Item = (usize, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let bytes = self.text.as_bytes();
        while self.pos < bytes.len() {
            let start = self.pos;
            let end = bytes[start..]
                .iter()
                .position(|&b| b == b'\r' || b == b'\n')
                .map_or(bytes.len(), |n| start + n);
            // CRLF counts as one line break.
            self.pos = if bytes.get(end) == Some(&b'\r') && bytes.get(end + 1) == Some(&b'\n') {
                end + 2
            } else {
                end + 1
            };
            self.line += 1;
            let line = self.text[start..end].trim_end_matches([' ', '\t']);
            if !line.trim_start().is_empty() {
                return Some((self.line, line));
            }
        }
        None
    }
}

fn span(start: usize, end: usize, line: usize) -> SegmentSpan {
    // Inputs are bounded by the callers far below u32::MAX fields; saturate rather than panic.
    let cap = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    SegmentSpan { start: cap(start), len: cap(end - start), line: cap(line) }
}

/// Reads `MSH|^~\&` style delimiters: MSH-1 plus the four encoding characters of MSH-2.
fn read_delimiters(msh: &str) -> Option<Delimiters> {
    let b = msh.as_bytes();
    if b.len() < 8 {
        return None;
    }
    let d = Delimiters {
        field: b[3],
        component: b[4],
        repetition: b[5],
        escape: b[6],
        subcomponent: b[7],
    };
    let all = [d.field, d.component, d.repetition, d.escape, d.subcomponent];
    let distinct = all.iter().enumerate().all(|(i, x)| !all[..i].contains(x));
    let usable = all.iter().all(|c| c.is_ascii_punctuation());
    // MSH-2 must end right after the four characters (a 5th, the v2.7 truncation char, is
    // tolerated when followed by the field separator).
    let ends = b.len() == 8 || b[8] == d.field || (b.len() > 9 && b[9] == d.field);
    (distinct && usable && ends).then_some(d)
}

/// One segment of a [`Message`].
#[derive(Debug, Clone, Copy)]
pub struct Segment<'m, 'a> {
    fields: &'m [&'a str],
    delims: &'m Delimiters,
    line: usize,
}

impl<'m, 'a> Segment<'m, 'a> {
    /// The segment id, e.g. `RXA`.
    pub fn id(&self) -> &'a str {
        self.fields[0]
    }

    /// The 1-based line of the segment in the input.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The number of fields present after the id (trailing empty fields included).
    pub fn field_count(&self) -> usize {
        self.fields.len() - 1
    }

    /// Field `n` (1-based, HL7 numbering); empty when absent.
    pub fn field(&self, n: usize) -> Field<'m, 'a> {
        Field { raw: self.fields.get(n).copied().unwrap_or(""), delims: self.delims }
    }

    /// The raw text of field `n`, component `c` of its first repetition.
    pub fn raw(&self, n: usize, c: usize) -> &'a str {
        self.field(n).first().component(c)
    }

    /// The unescaped, trimmed text of field `n`, component `c` of its first repetition.
    pub fn text(&self, n: usize, c: usize) -> Cow<'a, str> {
        let raw = self.raw(n, c);
        match unescape(raw, self.delims) {
            Cow::Borrowed(s) => Cow::Borrowed(s.trim()),
            Cow::Owned(s) => Cow::Owned(s.trim().to_owned()),
        }
    }

    /// The trimmed raw code in field `n`, component `c` (codes never carry escapes).
    pub fn code(&self, n: usize, c: usize) -> &'a str {
        self.raw(n, c).trim()
    }
}

/// One field (all its repetitions).
#[derive(Debug, Clone, Copy)]
pub struct Field<'m, 'a> {
    raw: &'a str,
    delims: &'m Delimiters,
}

impl<'m, 'a> Field<'m, 'a> {
    /// The raw field text, escapes and separators included.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }

    /// True when the field has no value in any repetition.
    pub fn is_empty(&self) -> bool {
        self.raw.bytes().all(|b| {
            b == self.delims.component
                || b == self.delims.repetition
                || b == self.delims.subcomponent
                || b == b' '
        })
    }

    /// The repetitions (at least one, possibly empty).
    pub fn repetitions(&self) -> impl Iterator<Item = Rep<'m, 'a>> + '_ {
        let delims = self.delims;
        self.raw.split(self.delims.repetition as char).map(move |raw| Rep { raw, delims })
    }

    /// The first repetition.
    pub fn first(&self) -> Rep<'m, 'a> {
        let raw = self.raw.split(self.delims.repetition as char).next().unwrap_or("");
        Rep { raw, delims: self.delims }
    }
}

/// One repetition of a field.
#[derive(Debug, Clone, Copy)]
pub struct Rep<'m, 'a> {
    raw: &'a str,
    delims: &'m Delimiters,
}

impl<'m, 'a> Rep<'m, 'a> {
    /// The raw repetition text.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }

    /// True when no component has a value.
    pub fn is_empty(&self) -> bool {
        self.raw
            .bytes()
            .all(|b| b == self.delims.component || b == self.delims.subcomponent || b == b' ')
    }

    /// Component `c` (1-based), raw; empty when absent.
    pub fn component(&self, c: usize) -> &'a str {
        nth(self.raw, self.delims.component, c)
    }

    /// Sub-component `s` (1-based) of component `c`, raw.
    pub fn subcomponent(&self, c: usize, s: usize) -> &'a str {
        nth(self.component(c), self.delims.subcomponent, s)
    }

    /// The number of components present (trailing empty ones included).
    pub fn component_count(&self) -> usize {
        self.raw.bytes().filter(|&b| b == self.delims.component).count() + 1
    }

    /// Unescaped, trimmed text of component `c`.
    pub fn text(&self, c: usize) -> Cow<'a, str> {
        match unescape(self.component(c), self.delims) {
            Cow::Borrowed(s) => Cow::Borrowed(s.trim()),
            Cow::Owned(s) => Cow::Owned(s.trim().to_owned()),
        }
    }
}

/// The `n`th (1-based) part of `s` split on `sep`; empty when absent.
fn nth(s: &str, sep: u8, n: usize) -> &str {
    if n == 0 {
        return "";
    }
    s.split(sep as char).nth(n - 1).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    const VXU: &str = "MSH|^~\\&|APP|FAC|||20260101120000-0500||VXU^V04^VXU_V04|X1|P|2.5.1\rPID|1||123^^^AUTH^MR~456^^^SSA^SS||Doe\\T\\Roe^Jane^^^^^L\r";

    #[test]
    fn parses_msh_numbering_and_components() -> Result<(), ParseError> {
        let m = Message::parse(VXU)?;
        let msh = m.msh();
        assert_eq!(msh.field(1).as_str(), "|");
        assert_eq!(msh.field(2).as_str(), "^~\\&");
        assert_eq!(msh.field(3).as_str(), "APP");
        assert_eq!(msh.raw(9, 3), "VXU_V04");
        assert_eq!(msh.field(10).as_str(), "X1");
        let pid = m.segment("PID").ok_or(ParseError::Empty)?;
        assert_eq!(pid.field(3).repetitions().count(), 2);
        assert_eq!(pid.field(3).repetitions().nth(1).map(|r| r.component(5)), Some("SS"));
        assert_eq!(pid.text(5, 1), "Doe&Roe");
        assert_eq!(pid.field(99).as_str(), "");
        Ok(())
    }

    #[test]
    fn accepts_lf_crlf_and_blank_lines() -> Result<(), ParseError> {
        let text = VXU.replace('\r', "\r\n") + "\n\n";
        assert_eq!(Message::parse(&text)?.segment_count(), 2);
        Ok(())
    }

    #[test]
    fn rejects_non_messages() {
        assert_eq!(Message::parse("").err(), Some(ParseError::Empty));
        assert!(matches!(Message::parse("PID|1"), Err(ParseError::NoMsh { line: 1, .. })));
        assert!(matches!(Message::parse("MSH|^^\\&|"), Err(ParseError::BadDelimiters { .. })));
        assert!(matches!(
            Message::parse("MSH|^~\\&|A\rhello"),
            Err(ParseError::BadSegment { line: 2, .. })
        ));
        assert!(matches!(Message::parse("MSH|é~\\&|A"), Err(ParseError::BadDelimiters { .. })));
    }
}
