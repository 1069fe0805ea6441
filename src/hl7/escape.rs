//! HL7 v2 delimiters and escape sequences.
//!
//! Every data value that izrelay writes passes through [`escape_into`], so no value from a
//! record can create a field, component, repetition, sub-component or segment: the five
//! delimiters become `\F\ \S\ \T\ \R\ \E\`, and CR / LF (which would end a segment) become the
//! hexadecimal escapes `\X0D\` / `\X0A\`. [`unescape`] reverses all of these and also decodes
//! any `\Xhh..\` sequence; formatting escapes (`\H\`, `\N\`, `\.br\` …) that only matter for
//! display are turned into plain text or dropped.

use std::borrow::Cow;

/// The delimiters of one message, read from its MSH segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    /// Field separator, `|` in the CDC guide.
    pub field: u8,
    /// Component separator, `^`.
    pub component: u8,
    /// Repetition separator, `~`.
    pub repetition: u8,
    /// Escape character, `\`.
    pub escape: u8,
    /// Sub-component separator, `&`.
    pub subcomponent: u8,
}

impl Default for Delimiters {
    /// The delimiters the CDC guide mandates: `|^~\&` (IZ-12, IZ-13).
    fn default() -> Self {
        DEFAULT
    }
}

impl Delimiters {
    /// True when `b` is one of the five delimiter bytes or a segment terminator.
    #[inline]
    fn is_special(&self, b: u8) -> bool {
        b == self.field
            || b == self.component
            || b == self.repetition
            || b == self.escape
            || b == self.subcomponent
            || b == b'\r'
            || b == b'\n'
    }
}

/// The CDC delimiters, as a constant for the fast path.
const DEFAULT: Delimiters = Delimiters {
    field: b'|',
    component: b'^',
    repetition: b'~',
    escape: b'\\',
    subcomponent: b'&',
};

/// Bytes that need escaping under the CDC delimiters: a lookup instead of seven comparisons.
static DEFAULT_SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let specials = [b'|', b'^', b'~', b'\\', b'&', b'\r', b'\n'];
    let mut i = 0;
    while i < specials.len() {
        t[specials[i] as usize] = true;
        i += 1;
    }
    t
};

/// Appends `value` to `out`, escaping every delimiter and line break.
#[inline]
pub fn escape_into(out: &mut String, value: &str, d: &Delimiters) {
    // Decide the byte test once per value, not once per byte.
    if *d == DEFAULT {
        escape_with(out, value, d, find_default_special);
    } else {
        escape_with(out, value, d, |bytes| bytes.iter().position(|&b| d.is_special(b)));
    }
}

/// The index of the first byte of `bytes` that needs escaping under the CDC delimiters.
///
/// Eight bytes at a time (SWAR): a word holds a special byte when `word ^ splat(s)` has a zero
/// byte for some special `s`. Most values hold none, so this is the whole cost of escaping them.
#[inline]
fn find_default_special(bytes: &[u8]) -> Option<usize> {
    #[inline(always)]
    fn has_byte(word: u64, b: u8) -> bool {
        let v = word ^ (ONES * u64::from(b));
        (v.wrapping_sub(ONES) & !v & HIGHS) != 0
    }
    if bytes.len() < 16 {
        return bytes.iter().position(|&b| DEFAULT_SPECIAL[usize::from(b)]);
    }
    let mut i = 0;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(chunk);
        let w = u64::from_le_bytes(buf);
        let hit = has_byte(w, b'|')
            || has_byte(w, b'^')
            || has_byte(w, b'~')
            || has_byte(w, b'\\')
            || has_byte(w, b'&')
            || has_byte(w, b'\r')
            || has_byte(w, b'\n');
        if hit {
            break;
        }
        i += 8;
    }
    bytes[i..].iter().position(|&b| DEFAULT_SPECIAL[usize::from(b)]).map(|n| i + n)
}

/// [`escape_into`] for the CDC delimiters `|^~\\&`, without comparing delimiters per call.
///
/// Most values need no escaping. A value of up to 16 bytes is checked in one or two words
/// (see [`may_need_default_escape`]) and, when clean, those same words are appended as fixed-size
/// copies that overlap (the first and the last 4 or 8 bytes), so it costs no `memcpy` call and
/// no length dispatch beyond the match below. Longer values are checked word by word and copied
/// whole; values that need escaping take the byte-by-byte path.
#[inline(always)]
pub(crate) fn escape_default_into(out: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    let n = bytes.len();
    let start = out.len();
    match n {
        0 => {}
        1..=3 => {
            // Three bytes cover 1..=3 (some twice), each looked up; appending all three then
            // cutting back to `n` writes the value.
            let three = [bytes[0], bytes[n / 2], bytes[n - 1]];
            let special = |b: u8| DEFAULT_SPECIAL[usize::from(b)];
            if special(three[0]) | special(three[1]) | special(three[2]) {
                escape_default_slow(out, value);
            } else {
                out.extend_from_slice(&three);
                out.truncate(start + n);
            }
        }
        4..=7 => {
            let (head, tail) = (load4(bytes), load4(&bytes[n - 4..]));
            if has_special(word_bits(u64::from(head) | u64::from(tail) << 32)) {
                escape_default_slow(out, value);
            } else {
                out.extend_from_slice(&head.to_le_bytes());
                out.truncate(start + n - 4);
                out.extend_from_slice(&tail.to_le_bytes());
            }
        }
        8..=16 => {
            let (head, tail) = (load8(bytes), load8(&bytes[n - 8..]));
            if has_special(word_bits(head) | word_bits(tail)) {
                escape_default_slow(out, value);
            } else {
                out.extend_from_slice(&head.to_le_bytes());
                out.truncate(start + n - 8);
                out.extend_from_slice(&tail.to_le_bytes());
            }
        }
        _ => {
            if may_need_default_escape(bytes) {
                escape_default_slow(out, value);
            } else {
                out.extend_from_slice(bytes);
            }
        }
    }
}

#[cold]
#[inline(never)]
fn escape_default_slow(out: &mut Vec<u8>, value: &str) {
    let mut escaped = String::with_capacity(value.len() + 8);
    escape_with(&mut escaped, value, &DEFAULT, find_default_special);
    out.extend_from_slice(escaped.as_bytes());
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of the result is set where `w` may need escaping under the CDC
/// delimiters (bytes after a hit may be set too; only "any" matters).
///
/// Three tests per word: `|` `^` `~` `\` are `0x5C` with bits `0x02` and `0x20` free, so one
/// masked compare finds all four; `&` is one compare; CR and LF fall under "byte below 0x20".
#[inline(always)]
fn word_bits(w: u64) -> u64 {
    let delims = (w & (ONES * 0xDD)) ^ (ONES * 0x5C);
    let amp = w ^ (ONES * u64::from(b'&'));
    let zero_in = |v: u64| v.wrapping_sub(ONES) & !v;
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    zero_in(delims) | zero_in(amp) | control
}

#[inline(always)]
fn has_special(bits: u64) -> bool {
    bits & HIGHS != 0
}

#[inline(always)]
fn load8(b: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    buf.copy_from_slice(&b[..8]);
    u64::from_le_bytes(buf)
}

#[inline(always)]
fn load4(b: &[u8]) -> u32 {
    let mut buf = [0u8; 4];
    buf.copy_from_slice(&b[..4]);
    u32::from_le_bytes(buf)
}

/// False only when no byte of `bytes` needs escaping under the CDC delimiters; true when one
/// may (every special byte is caught; other control bytes are also reported, and the exact
/// path then copies them unchanged).
///
/// Eight bytes at a time, with overlapping loads so a short value costs one or two words and
/// no per-byte loop (see [`word_bits`] for the test).
#[inline(always)]
fn may_need_default_escape(bytes: &[u8]) -> bool {
    let n = bytes.len();
    match n {
        0 => false,
        // Three bytes cover 1..=3 (some twice); the word is filled with real bytes, since a
        // zero byte would count as a control byte.
        1..=3 => {
            let (a, b, c) = (bytes[0], bytes[n / 2], bytes[n - 1]);
            has_special(word_bits(u64::from_le_bytes([a, b, c, a, a, a, a, a])))
        }
        4..=7 => has_special(word_bits(
            u64::from(load4(bytes)) | u64::from(load4(&bytes[n - 4..])) << 32,
        )),
        8..=16 => has_special(word_bits(load8(bytes)) | word_bits(load8(&bytes[n - 8..]))),
        _ => {
            // Long values (code texts) rarely hold a delimiter: no early exit per word.
            let mut chunks = bytes.chunks_exact(8);
            let any = (&mut chunks).fold(0, |acc, c| acc | word_bits(load8(c)));
            has_special(any | word_bits(load8(&bytes[n - 8..])))
        }
    }
}

#[inline(always)]
fn escape_with(
    out: &mut String,
    value: &str,
    d: &Delimiters,
    find: impl Fn(&[u8]) -> Option<usize>,
) {
    let bytes = value.as_bytes();
    let mut start = 0;
    while let Some(n) = find(&bytes[start..]) {
        let i = start + n;
        let b = bytes[i];
        // Delimiters are ASCII, so `i` is always a char boundary.
        out.push_str(&value[start..i]);
        let esc = char::from(d.escape);
        out.push(esc);
        match b {
            b'\r' => out.push_str("X0D"),
            b'\n' => out.push_str("X0A"),
            _ if b == d.field => out.push('F'),
            _ if b == d.component => out.push('S'),
            _ if b == d.subcomponent => out.push('T'),
            _ if b == d.repetition => out.push('R'),
            _ => out.push('E'),
        }
        out.push(esc);
        start = i + 1;
    }
    out.push_str(&value[start..]);
}

/// Returns `value` escaped for HL7 (see [`escape_into`]).
pub fn escape<'a>(value: &'a str, d: &Delimiters) -> Cow<'a, str> {
    let needs = if *d == DEFAULT {
        value.bytes().any(|b| DEFAULT_SPECIAL[usize::from(b)])
    } else {
        value.bytes().any(|b| d.is_special(b))
    };
    if !needs {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    escape_into(&mut out, value, d);
    Cow::Owned(out)
}

/// Decodes the escape sequences in one raw value (a component or sub-component).
///
/// Unknown or unterminated sequences are kept literally, so text from another system is never
/// lost; this never fails.
pub fn unescape<'a>(raw: &'a str, d: &Delimiters) -> Cow<'a, str> {
    if !raw.as_bytes().contains(&d.escape) {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let bytes = raw.as_bytes();
    let mut i = 0;
    let mut literal_start = 0;
    while i < bytes.len() {
        if bytes[i] != d.escape {
            i += 1;
            continue;
        }
        // Find the closing escape character.
        let Some(len) = bytes[i + 1..].iter().position(|&b| b == d.escape) else {
            break;
        };
        let body = &raw[i + 1..i + 1 + len];
        let decoded: Option<Cow<'_, str>> = match body {
            "F" => Some(Cow::Owned((d.field as char).to_string())),
            "S" => Some(Cow::Owned((d.component as char).to_string())),
            "T" => Some(Cow::Owned((d.subcomponent as char).to_string())),
            "R" => Some(Cow::Owned((d.repetition as char).to_string())),
            "E" => Some(Cow::Owned((d.escape as char).to_string())),
            "H" | "N" => Some(Cow::Borrowed("")),
            ".br" => Some(Cow::Borrowed("\n")),
            _ if body.len() > 1 && body.starts_with('X') => decode_hex(&body[1..]).map(Cow::Owned),
            _ => None,
        };
        match decoded {
            Some(text) => {
                out.push_str(&raw[literal_start..i]);
                out.push_str(&text);
                i += len + 2;
                literal_start = i;
            }
            None => i += 1,
        }
    }
    out.push_str(&raw[literal_start..]);
    Cow::Owned(out)
}

/// Decodes `\Xhhhh\` data: UTF-8 when the bytes form UTF-8, otherwise ISO 8859-1.
fn decode_hex(hex: &str) -> Option<String> {
    if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Vec<u8> = hex
        .as_bytes()
        .chunks(2)
        .filter_map(|pair| std::str::from_utf8(pair).ok())
        .filter_map(|pair| u8::from_str_radix(pair, 16).ok())
        .collect();
    match String::from_utf8(bytes) {
        Ok(s) => Some(s),
        Err(e) => Some(e.into_bytes().iter().map(|&b| b as char).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes_every_delimiter() {
        let d = Delimiters::default();
        assert_eq!(escape("O'Brien|Smith^&~\\", &d), "O'Brien\\F\\Smith\\S\\\\T\\\\R\\\\E\\");
        assert_eq!(escape("Merck & Co.", &d), "Merck \\T\\ Co.");
        assert_eq!(escape("line1\r\nline2", &d), "line1\\X0D\\\\X0A\\line2");
        assert!(matches!(escape("plain", &d), Cow::Borrowed(_)));
    }

    #[test]
    fn unescape_is_lenient() {
        let d = Delimiters::default();
        assert_eq!(unescape("a\\T\\b", &d), "a&b");
        assert_eq!(unescape("dangling \\ here", &d), "dangling \\ here");
        assert_eq!(unescape("\\Zlocal\\", &d), "\\Zlocal\\");
        assert_eq!(unescape("\\XC3A9\\", &d), "é");
        assert_eq!(unescape("\\XE9\\", &d), "é");
        assert_eq!(unescape("\\H\\bold\\N\\", &d), "bold");
        assert_eq!(unescape("\\X0\\", &d), "\\X0\\");
    }

    #[test]
    fn the_word_test_catches_every_special_byte_at_every_length() {
        for special in [b'|', b'^', b'~', b'\\', b'&', b'\r', b'\n', 0x01, 0x1F] {
            for len in 1..40 {
                for at in 0..len {
                    let mut v = vec![b'a'; len];
                    v[at] = special;
                    assert!(may_need_default_escape(&v), "{special:#x} at {at} of {len}");
                }
            }
        }
        for len in 0..40 {
            let plain: Vec<u8> = (0..len).map(|i| b' ' + (i * 7 % 90) as u8).collect();
            let plain: Vec<u8> = plain.into_iter().filter(|b| !b"|^~\\&".contains(b)).collect();
            assert!(!may_need_default_escape(&plain), "{plain:?}");
        }
        assert!(!may_need_default_escape("é Ω 中 \u{7f} ]}`@".as_bytes()));
    }

    proptest! {
        #[test]
        fn escape_default_into_matches_escape(s in "[a-z \u{e9}\u{4e2d}|^~&\\\\\r\n\x01]{0,40}") {
            let mut out = Vec::new();
            escape_default_into(&mut out, &s);
            let expected = escape(&s, &Delimiters::default());
            prop_assert_eq!(out.as_slice(), expected.as_bytes());
        }

        #[test]
        fn escape_then_unescape_round_trips(s in any::<String>()) {
            let d = Delimiters::default();
            let escaped = escape(&s, &d);
            prop_assert!(!escaped.bytes().any(|b| matches!(b, b'|' | b'^' | b'~' | b'&' | b'\r' | b'\n')));
            prop_assert_eq!(unescape(&escaped, &d), s.as_str());
        }
    }
}
