//! The HL7 v2 writer: one `String`, values escaped, trailing empties never written.
//!
//! A [`Writer`] appends segments to one buffer. Within a segment, values are placed by position
//! (field, repetition, component, sub-component) in increasing order; separators are written
//! only in front of a value, so empty trailing fields, components and repetitions are trimmed
//! by construction, while empty positions *before* a value are kept (`^^^NIST-Clinic-1`), as
//! the CDC guide's encoding rules require. Every value goes through
//! [`escape_into`](super::escape::escape_into), so data can never add structure.

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

    /// Writes a pre-encoded `code^text^system` triplet (escaped and joined by a generated table)
    /// as components `c`..`c + 2` of repetition `r` of field `f`: one copy instead of three
    /// escaped values. The table guarantees that code and system are not empty, so nothing is
    /// left to trim.
    pub(crate) fn triplet(&mut self, f: u16, r: u16, c: u16, encoded: &'static str) -> &mut Self {
        if !encoded.is_empty() && self.advance((f, r, c, 1)) {
            self.out.extend_from_slice(encoded.as_bytes());
            self.pos = (f, r, c + 2, 1);
        }
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
