//! The HL7 v2 writer: one `String`, values escaped, trailing empties never written.
//!
//! A [`Writer`] appends segments to one buffer. Within a segment, values are placed by position
//! (field, repetition, component, sub-component) in increasing order; separators are written
//! only in front of a value, so empty trailing fields, components and repetitions are trimmed
//! by construction, while empty positions *before* a value are kept (`^^^NIST-Clinic-1`), as
//! the CDC guide's encoding rules require. Every value goes through
//! [`escape_into`](super::escape::escape_into), so data can never add structure.
//!
//! The VXU builder uses the crate's [`SeqWriter`] instead: the same text, written front to back
//! with the separators given by the call site, which is cheaper when the layout is known.

use super::escape::escape_default_into;

/// Builds a message of CR-terminated segments with the CDC delimiters `|^~\\&` (IZ-12, IZ-13).
#[derive(Debug)]
pub struct Writer {
    /// The message so far. Bytes rather than a `String` so that separators and digits are
    /// plain byte pushes; only `&str` values and ASCII are ever appended, and [`Writer::finish`]
    /// checks that once.
    out: Vec<u8>,
    /// Position of the last value written: (field, repetition, component, sub-component).
    pos: Pos,
}

/// A position in a segment: field, repetition, component, sub-component (all 1-based).
pub type Pos = (u16, u16, u16, u16);

/// MSH-1 and MSH-2 with the CDC delimiters.
const MSH_PREFIX: &str = "MSH|^~\\&";

/// Room for a typical VXU (1.5 KB) without growing.
const INITIAL_CAPACITY: usize = 2048;

impl Writer {
    /// A writer with room for a typical VXU.
    pub fn new() -> Self {
        Self { out: Vec::with_capacity(INITIAL_CAPACITY), pos: (0, 1, 1, 1) }
    }

    /// Starts segment `id`, ending the previous one. `MSH` also writes MSH-1 and MSH-2.
    #[inline]
    pub fn segment(&mut self, id: &str) -> &mut Self {
        if !self.out.is_empty() {
            self.out.push(b'\r');
        }
        if id == "MSH" {
            self.out.extend_from_slice(MSH_PREFIX.as_bytes());
            self.pos = (2, 1, 1, 1);
        } else {
            self.out.extend_from_slice(id.as_bytes());
            self.pos = (0, 1, 1, 1);
        }
        self
    }

    /// Writes the separators that lead from the last position to `pos`; false (and nothing
    /// written) when `pos` does not come after it.
    #[inline(always)]
    fn advance(&mut self, pos: Pos) -> bool {
        // The common steps inline: the next field, or the next component of this one.
        let (f, r, c, s) = pos;
        let (cf, cr, cc, cs) = self.pos;
        if (r, c, s) == (1, 1, 1) && f == cf + 1 {
            self.out.push(b'|');
            true
        } else if (f, r, s) == (cf, cr, 1) && cs == 1 && c == cc + 1 {
            self.out.push(b'^');
            true
        } else {
            self.advance_far(pos)
        }
    }

    /// [`Writer::advance`] over more than one separator.
    #[inline(never)]
    fn advance_far(&mut self, pos: Pos) -> bool {
        let (f, r, c, s) = pos;
        let (cf, cr, cc, cs) = self.pos;
        if f > cf {
            push_n(&mut self.out, b'|', f - cf);
            if (r, c, s) != (1, 1, 1) {
                push_n(&mut self.out, b'~', r - 1);
                push_n(&mut self.out, b'^', c - 1);
                push_n(&mut self.out, b'&', s - 1);
            }
        } else if f == cf && r > cr {
            push_n(&mut self.out, b'~', r - cr);
            push_n(&mut self.out, b'^', c - 1);
            push_n(&mut self.out, b'&', s - 1);
        } else if f == cf && r == cr && c > cc {
            push_n(&mut self.out, b'^', c - cc);
            push_n(&mut self.out, b'&', s - 1);
        } else if f == cf && r == cr && c == cc && s > cs {
            push_n(&mut self.out, b'&', s - cs);
        } else {
            debug_assert!(false, "hl7 writer: position {pos:?} written after {:?}", self.pos);
            return false;
        }
        true
    }

    /// Writes `value` at `pos`; empty values write nothing. Positions must increase.
    pub fn put(&mut self, pos: Pos, value: &str) -> &mut Self {
        if !value.is_empty() && self.advance(pos) {
            escape_default_into(&mut self.out, value);
            self.pos = pos;
        }
        self
    }

    /// Writes `digits` at `pos` (nothing when empty): no escaping needed, see [`Digits`].
    pub(crate) fn put_digits<const N: usize>(&mut self, pos: Pos, digits: &Digits<N>) -> &mut Self {
        let bytes = digits.as_bytes();
        if !bytes.is_empty() && self.advance(pos) {
            self.out.extend_from_slice(bytes);
            self.pos = pos;
        }
        self
    }

    /// Writes `digits` as field `f`.
    #[inline]
    pub(crate) fn field_digits<const N: usize>(&mut self, f: u16, digits: &Digits<N>) -> &mut Self {
        self.put_digits((f, 1, 1, 1), digits)
    }

    /// Writes a pre-encoded constant as the whole of field `f`: no escaping, so only for text
    /// written in this crate (`VXU^V04^VXU_V04`, `00^New immunization record^NIP001`). Only
    /// later fields can follow it in the segment.
    #[inline]
    pub fn fixed(&mut self, f: u16, encoded: &'static str) -> &mut Self {
        debug_assert!(
            !encoded.contains(['|', '\r', '\n']),
            "fixed text {encoded:?} is not one field"
        );
        if encoded.is_empty() || f <= self.pos.0 {
            debug_assert!(encoded.is_empty(), "hl7 writer: fixed field {f} after {:?}", self.pos);
            return self;
        }
        push_n(&mut self.out, b'|', f - self.pos.0);
        self.out.extend_from_slice(encoded.as_bytes());
        self.pos = (f, u16::MAX, u16::MAX, u16::MAX);
        self
    }

    /// Writes an unsigned number at field `f` without allocating.
    pub fn number(&mut self, f: u16, n: u32) -> &mut Self {
        const SMALL: [&str; 21] = [
            "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
            "16", "17", "18", "19", "20",
        ];
        match SMALL.get(n as usize) {
            // Digits need no escaping.
            Some(s) if self.advance((f, 1, 1, 1)) => {
                self.out.extend_from_slice(s.as_bytes());
                self.pos = (f, 1, 1, 1);
                self
            }
            Some(_) => self,
            None => {
                let mut digits = Digits::<10>::new();
                digits.push_u32(n);
                self.field_digits(f, &digits)
            }
        }
    }

    /// Writes `value` as field `f` (first repetition, first component).
    #[inline]
    pub fn field(&mut self, f: u16, value: &str) -> &mut Self {
        self.put((f, 1, 1, 1), value)
    }

    /// Writes component `c` of field `f`.
    #[inline]
    pub fn comp(&mut self, f: u16, c: u16, value: &str) -> &mut Self {
        self.put((f, 1, c, 1), value)
    }

    /// Writes the components of field `f` starting at component 1; empty ones are skipped.
    #[inline]
    pub fn comps(&mut self, f: u16, values: &[&str]) -> &mut Self {
        self.comps_in(f, 1, values)
    }

    /// Writes the components of repetition `r` of field `f` starting at component 1.
    pub fn comps_in(&mut self, f: u16, r: u16, values: &[&str]) -> &mut Self {
        // The separators up to the first valued component are placed once; the rest follow in
        // one run, each preceded by one component separator per step (empty ones in between
        // are kept, trailing ones never written).
        let Some(first) = values.iter().position(|v| !v.is_empty()) else { return self };
        let c0 = u16::try_from(first + 1).unwrap_or(u16::MAX);
        if !self.advance((f, r, c0, 1)) {
            return self;
        }
        escape_default_into(&mut self.out, values[first]);
        let mut last = c0;
        let mut gap: u16 = 0;
        for (v, c) in values[first + 1..].iter().zip(c0 + 1..) {
            gap += 1;
            if v.is_empty() {
                continue;
            }
            push_n(&mut self.out, b'^', gap);
            escape_default_into(&mut self.out, v);
            gap = 0;
            last = c;
        }
        self.pos = (f, r, last, 1);
        self
    }

    /// Writes the sub-components of component `c` of field `f`.
    #[inline]
    pub fn subs(&mut self, f: u16, c: u16, values: &[&str]) -> &mut Self {
        for (i, v) in values.iter().enumerate() {
            let s = u16::try_from(i + 1).unwrap_or(u16::MAX);
            self.put((f, 1, c, s), v);
        }
        self
    }

    /// Ends the last segment and returns the message text (segments terminated by CR).
    pub fn finish(mut self) -> String {
        if !self.out.is_empty() {
            self.out.push(b'\r');
        }
        // Every append was a `&str` or ASCII, so this always succeeds; a lossy copy stands in
        // for a panic should that ever break.
        String::from_utf8(self.out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
}

impl Default for Writer {
    fn default() -> Self {
        Self::new()
    }
}

/// Writes a message front to back, separators included, for a builder that knows its segments'
/// layout: the VXU builder. Where [`Writer`] works out the separators between two positions on
/// every value, here the call site writes them, usually merged with constant text into one
/// pre-encoded run (`^^^^^^CMS^L^^^NPI^^^^^^^^`, `||||||F|||`), and values follow as they come.
///
/// Empty positions are trimmed the way [`Writer`] trims them, after the fact: a separator run
/// first drops the finer separators that end the output (`a^^` + `|` → `a|`: the components of a
/// field left empty at its end), and a segment's end drops every trailing separator. That is the
/// same text as writing separators only in front of values, because only a run can leave
/// separators at the end of the output (values are escaped, other constants end in data), and
/// those stand for positions still empty. Leading empty positions (`^^^FAC-17`) stay, as the CDC
/// guide requires.
#[derive(Debug)]
pub(crate) struct SeqWriter {
    /// The message so far (bytes, for the reasons given on [`Writer`]'s buffer).
    out: Vec<u8>,
}

impl SeqWriter {
    /// A writer with room for a typical VXU.
    pub fn new() -> Self {
        Self { out: Vec::with_capacity(INITIAL_CAPACITY) }
    }

    /// Starts the message: `MSH|^~\&|`, MSH-1 and MSH-2 and the separator in front of MSH-3
    /// (written with them, so that no run can mistake MSH-2's `&` for an empty sub-component).
    #[inline]
    pub fn msh(&mut self) -> &mut Self {
        debug_assert!(self.out.is_empty(), "MSH starts the message");
        self.out.extend_from_slice(b"MSH|^~\\&|");
        self
    }

    /// Ends the previous segment and starts segment `id` (not MSH: see [`SeqWriter::msh`]).
    #[inline]
    pub fn segment(&mut self, id: &'static str) -> &mut Self {
        self.end_segment();
        self.out.extend_from_slice(id.as_bytes());
        self
    }

    /// Drops the separators that end the segment (its empty trailing positions), then ends it.
    #[inline]
    fn end_segment(&mut self) {
        if !self.out.is_empty() {
            self.trim(|b| matches!(b, b'|' | b'~' | b'^' | b'&'));
            self.out.push(b'\r');
        }
    }

    #[inline(always)]
    fn trim(&mut self, drop: impl Fn(u8) -> bool) {
        while let Some(&b) = self.out.last()
            && drop(b)
        {
            self.out.pop();
        }
    }

    /// Appends `run`, pre-encoded text that starts with a separator (`|`, `~`, `^` or `&`) and
    /// may go on with more separators and constant text (`||||||F|||`, `^^^^^^CMS^L`). The
    /// finer separators that end the output are dropped first: `|` ends the field, so its empty
    /// trailing repetitions, components and sub-components go; `~` drops `^` and `&`; `^` `&`.
    #[inline(always)]
    pub fn run(&mut self, run: &'static str) -> &mut Self {
        debug_assert!(canonical_run(run), "separator run {run:?}");
        match run.as_bytes().first() {
            Some(b'|') => self.trim(|b| matches!(b, b'~' | b'^' | b'&')),
            Some(b'~') => self.trim(|b| matches!(b, b'^' | b'&')),
            Some(b'^') => self.trim(|b| b == b'&'),
            _ => {}
        }
        self.out.extend_from_slice(run.as_bytes());
        self
    }

    /// Appends pre-encoded text that starts with data, not a separator: a constant of this
    /// crate (`00^New immunization record^NIP001`) or a generated table's `code^text^system`.
    #[inline(always)]
    pub fn text(&mut self, encoded: &str) -> &mut Self {
        debug_assert!(
            canonical_run(encoded) && !encoded.starts_with(is_separator),
            "pre-encoded text {encoded:?}"
        );
        self.out.extend_from_slice(encoded.as_bytes());
        self
    }

    /// Appends a value, escaped (nothing when it is empty).
    #[inline(always)]
    pub fn value(&mut self, value: &str) -> &mut Self {
        escape_default_into(&mut self.out, value);
        self
    }

    /// Appends `digits` (no escaping needed, see [`Digits`]): all `N` bytes as one fixed-size
    /// copy, cut back to the length, instead of a `memcpy` call of a variable length.
    #[inline(always)]
    pub fn digits<const N: usize>(&mut self, digits: &Digits<N>) -> &mut Self {
        let start = self.out.len();
        self.out.extend_from_slice(&digits.buf);
        self.out.truncate(start + usize::from(digits.len));
        self
    }

    /// Appends an unsigned number without allocating: the usual one or two digits (OBX-1 and
    /// OBX-4 counters, dose numbers) as bytes, inline (as a call it cost more than the digits).
    #[inline(always)]
    pub fn number(&mut self, n: u32) -> &mut Self {
        match n {
            0..=9 => self.out.push(b'0' + n as u8),
            10..=99 => self.out.extend_from_slice(&[b'0' + (n / 10) as u8, b'0' + (n % 10) as u8]),
            _ => {
                let mut digits = Digits::<10>::new();
                digits.push_u32(n);
                self.digits(&digits);
            }
        }
        self
    }

    /// Ends the last segment and returns the message text (segments terminated by CR).
    pub fn finish(mut self) -> String {
        self.end_segment();
        // Every append was a `&str` or ASCII, so this always succeeds; a lossy copy stands in
        // for a panic should that ever break.
        String::from_utf8(self.out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
}

fn is_separator(c: char) -> bool {
    matches!(c, '|' | '~' | '^' | '&')
}

/// True when pre-encoded text keeps [`SeqWriter`]'s trimming rule: no separator is followed by a
/// coarser one (`^|` would leave an empty component at the end of a field). Separators at its
/// end are fine: they are empty positions in front of whatever comes next, or trimmed.
fn canonical_run(text: &str) -> bool {
    let level = |b: u8| match b {
        b'|' => 4,
        b'~' => 3,
        b'^' => 2,
        b'&' => 1,
        _ => 0,
    };
    text.as_bytes().windows(2).all(|w| level(w[0]) == 0 || level(w[1]) <= level(w[0]))
}

/// A short number built without allocating: a `YYYYMMDD` date, a TS_Z time, a phone number
/// part, a dose volume. Holds only digits, `.`, `+` and `-`, none of which needs escaping, so
/// [`Writer::put_digits`] copies it as it is. Holds at most `N` bytes; pushing past that, or
/// any other byte, is ignored (callers size `N` for the longest value they build).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Digits<const N: usize> {
    buf: [u8; N],
    len: u8,
}

impl<const N: usize> Digits<N> {
    /// An empty value.
    pub const fn new() -> Self {
        Self { buf: [0; N], len: 0 }
    }

    /// A value of exactly the bytes of `buf`, when each is an ASCII digit.
    pub fn from_digits(buf: [u8; N]) -> Option<Self> {
        let digits = buf.iter().all(u8::is_ascii_digit);
        Some(Self { buf, len: u8::try_from(N).ok()? }).filter(|_| digits)
    }

    /// Appends a digit, `.`, `+` or `-` (any other byte, or a byte past `N`, is dropped).
    #[inline]
    pub fn push(&mut self, b: u8) {
        let allowed = b.is_ascii_digit() || matches!(b, b'.' | b'+' | b'-');
        if let (true, Some(slot)) = (allowed, self.buf.get_mut(usize::from(self.len))) {
            *slot = b;
            self.len += 1;
        }
    }

    /// Appends `value` as exactly `width` decimal digits (zero-padded, high digits dropped).
    #[inline]
    pub fn push_digits(&mut self, value: u32, width: u32) {
        for p in (0..width).rev() {
            let digit = (value / 10u32.pow(p)) % 10;
            self.push(b'0' + u8::try_from(digit).unwrap_or(0));
        }
    }

    /// Appends `value` in decimal without leading zeros.
    pub fn push_u32(&mut self, value: u32) {
        let width = value.checked_ilog10().map_or(1, |n| n + 1);
        self.push_digits(value, width);
    }

    /// Keeps only the first `len` bytes.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(u8::try_from(len).unwrap_or(u8::MAX));
    }

    /// The bytes (ASCII).
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only ASCII bytes are ever stored, so this never falls back.
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

impl<const N: usize> Default for Digits<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> std::fmt::Debug for Digits<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> PartialEq<&str> for Digits<N> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Appends `n` copies of delimiter `b`. Runs of empty positions are short: up to eight are one
/// fixed 8-byte append cut back to `n` (no `memset` call, no length dispatch).
#[inline(always)]
fn push_n(out: &mut Vec<u8>, b: u8, n: u16) {
    const RUN: usize = 8;
    let n = usize::from(n);
    if n <= RUN {
        let start = out.len();
        out.extend_from_slice(&[b; RUN]);
        out.truncate(start + n);
    } else {
        out.resize(out.len() + n, b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_trailing_and_keeps_leading_empties() {
        let mut w = Writer::new();
        w.segment("MSH").field(3, "APP").field(9, "").comps(9, &["VXU", "V04", "VXU_V04"]);
        w.segment("RXA").field(1, "0").comp(11, 4, "Clinic").comps(15, &["", "", ""]);
        w.segment("OBX").put((5, 2, 1, 1), "b").put((5, 2, 3, 2), "x");
        assert_eq!(
            w.finish(),
            "MSH|^~\\&|APP||||||VXU^V04^VXU_V04\rRXA|0||||||||||^^^Clinic\rOBX|||||~b^^&x\r"
        );
    }

    #[test]
    fn fixed_fields_are_written_verbatim() {
        let mut w = Writer::new();
        w.segment("OBX").number(1, 2).fixed(3, "30963-3^Vaccine funding source^LN").field(5, "a&b");
        assert_eq!(w.finish(), "OBX|2||30963-3^Vaccine funding source^LN||a\\T\\b\r");
    }

    #[test]
    fn escapes_values() {
        let mut w = Writer::new();
        w.segment("PID").comps(5, &["O'Brien|Smith^&~\\", "Mary"]);
        assert_eq!(w.finish(), "PID|||||O'Brien\\F\\Smith\\S\\\\T\\\\R\\\\E\\^Mary\r");
    }
}
