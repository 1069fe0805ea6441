//! The HL7 v2 writer: one `String`, values escaped, trailing empties never written.
//!
//! A [`Writer`] appends segments to one buffer. Within a segment, values are placed by position
//! (field, repetition, component, sub-component) in increasing order; separators are written
//! only in front of a value, so empty trailing fields, components and repetitions are trimmed
//! by construction, while empty positions *before* a value are kept (`^^^NIST-Clinic-1`), as
//! the CDC guide's encoding rules require. Every value goes through
//! [`escape_into`](super::escape::escape_into), so data can never add structure.

use super::escape::{Delimiters, escape_default_into};

/// Builds a message of CR-terminated segments.
#[derive(Debug)]
pub struct Writer {
    out: String,
    delims: Delimiters,
    /// Position of the last value written: (field, repetition, component, sub-component).
    pos: (u16, u16, u16, u16),
}

/// A position in a segment: field, repetition, component, sub-component (all 1-based).
pub type Pos = (u16, u16, u16, u16);

impl Writer {
    /// A writer with the CDC delimiters `|^~\&` and room for a typical VXU.
    pub fn new() -> Self {
        Self { out: String::with_capacity(2048), delims: Delimiters::default(), pos: (0, 1, 1, 1) }
    }

    /// Starts segment `id`, ending the previous one. `MSH` also writes MSH-1 and MSH-2.
    pub fn segment(&mut self, id: &str) -> &mut Self {
        if !self.out.is_empty() {
            self.out.push('\r');
        }
        self.out.push_str(id);
        self.pos = (0, 1, 1, 1);
        if id == "MSH" {
            let d = self.delims;
            for b in [d.field, d.component, d.repetition, d.escape, d.subcomponent] {
                self.out.push(b as char);
            }
            self.pos = (2, 1, 1, 1);
        }
        self
    }

    /// Writes `value` at `pos`; empty values write nothing. Positions must increase.
    #[inline]
    pub fn put(&mut self, pos: Pos, value: &str) -> &mut Self {
        if value.is_empty() {
            return self;
        }
        let (f, r, c, s) = pos;
        let (cf, cr, cc, cs) = self.pos;
        let d = self.delims;
        let (fields, reps, comps, subs) = if f > cf {
            (f - cf, r - 1, c - 1, s - 1)
        } else if f == cf && r > cr {
            (0, r - cr, c - 1, s - 1)
        } else if f == cf && r == cr && c > cc {
            (0, 0, c - cc, s - 1)
        } else if f == cf && r == cr && c == cc && s > cs {
            (0, 0, 0, s - cs)
        } else {
            debug_assert!(false, "hl7 writer: position {pos:?} written after {:?}", self.pos);
            return self;
        };
        if fields + reps + comps + subs == 1 {
            // The common case: one separator.
            let b = if fields == 1 {
                d.field
            } else if reps == 1 {
                d.repetition
            } else if comps == 1 {
                d.component
            } else {
                d.subcomponent
            };
            self.out.push(char::from(b));
        } else {
            push_n(&mut self.out, d.field, fields);
            push_n(&mut self.out, d.repetition, reps);
            push_n(&mut self.out, d.component, comps);
            push_n(&mut self.out, d.subcomponent, subs);
        }
        // The writer always uses the CDC delimiters (IZ-12, IZ-13).
        escape_default_into(&mut self.out, value);
        self.pos = pos;
        self
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
        push_n(&mut self.out, self.delims.field, f - self.pos.0);
        self.out.push_str(encoded);
        self.pos = (f, u16::MAX, u16::MAX, u16::MAX);
        self
    }

    /// Writes a small unsigned number at field `f` without allocating.
    #[inline]
    pub fn number(&mut self, f: u16, n: u32) -> &mut Self {
        const SMALL: [&str; 21] = [
            "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
            "16", "17", "18", "19", "20",
        ];
        match SMALL.get(n as usize) {
            Some(s) => self.field(f, s),
            None => self.field(f, &n.to_string()),
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
    #[inline]
    pub fn comps_in(&mut self, f: u16, r: u16, values: &[&str]) -> &mut Self {
        // The first valued component is placed by `put`; the rest follow in one run, each
        // preceded by one component separator per step (empty ones in between are kept,
        // trailing ones never written), which is what `put` would do, without its bookkeeping.
        let Some(first) = values.iter().position(|v| !v.is_empty()) else { return self };
        let c0 = u16::try_from(first + 1).unwrap_or(u16::MAX);
        self.put((f, r, c0, 1), values[first]);
        let mut last = c0;
        let mut gap: u16 = 0;
        for (v, c) in values[first + 1..].iter().zip(c0 + 1..) {
            gap += 1;
            if v.is_empty() {
                continue;
            }
            push_n(&mut self.out, self.delims.component, gap);
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
            self.out.push('\r');
        }
        self.out
    }
}

impl Default for Writer {
    fn default() -> Self {
        Self::new()
    }
}

/// A short ASCII value built without allocating: a `YYYYMMDD` date, a TS_Z time, a phone
/// number part, a dose volume. Holds at most `N` bytes; pushing past that is ignored (callers
/// size `N` for the longest value they build).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Ascii<const N: usize> {
    buf: [u8; N],
    len: u8,
}

impl<const N: usize> Ascii<N> {
    /// An empty value.
    pub const fn new() -> Self {
        Self { buf: [0; N], len: 0 }
    }

    /// Appends an ASCII byte (a non-ASCII byte or a byte past `N` is dropped).
    #[inline]
    pub fn push(&mut self, b: u8) {
        if let (true, Some(slot)) = (b.is_ascii(), self.buf.get_mut(usize::from(self.len))) {
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

    /// The text.
    #[inline]
    pub fn as_str(&self) -> &str {
        // Only ASCII bytes are ever stored, so this never falls back.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("")
    }
}

impl<const N: usize> Default for Ascii<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> std::fmt::Debug for Ascii<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> PartialEq<&str> for Ascii<N> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[inline(always)]
fn push_n(out: &mut String, b: u8, n: u16) {
    /// Runs of each CDC delimiter, so a gap of empty positions is one `push_str`.
    const RUNS: [(u8, &str); 4] = [
        (b'|', "||||||||||||||||||||||||||||||||"),
        (b'^', "^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^"),
        (b'~', "~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~"),
        (b'&', "&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&"),
    ];
    let n = usize::from(n);
    match n {
        0 => {}
        1 => out.push(char::from(b)),
        _ => match RUNS.iter().find(|(c, run)| *c == b && n <= run.len()) {
            Some((_, run)) => out.push_str(&run[..n]),
            None => (0..n).for_each(|_| out.push(char::from(b))),
        },
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
