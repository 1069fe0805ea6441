//! NIST's Z22 (VXU) and Z23 (ACK) conformance profiles as data.
//!
//! `tables.rs` is generated from NIST's machine-readable profiles and value-set libraries by
//! `tools/gen_profile_tables.py` (a test re-runs it with `--check` when `../shared` is present).
//! The validator reads usage, cardinality, lengths and bindings from here, and `show` reads the
//! field names, so the rules live in one place and are NIST's, not retyped by hand.

mod tables;

pub(crate) use tables::{
    VALUE_SETS, Z22_DATATYPES, Z22_SEGMENTS, Z22_STRUCTURE, Z23_DATATYPES, Z23_SEGMENTS,
    Z23_STRUCTURE,
};

/// Usage of a segment, field or component (HL7 v2.7.1 ch. 2B, as the IG pre-adopts).
#[allow(dead_code)] // `W` does not occur in the 2018 profiles
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Usage {
    /// Required.
    R,
    /// Required but may be empty.
    RE,
    /// Conditional.
    C,
    /// Optional.
    O,
    /// Not supported.
    X,
    /// Backward compatible.
    B,
    /// Withdrawn.
    W,
}

/// A field of a segment definition.
#[derive(Debug)]
pub(crate) struct FieldDef {
    pub name: &'static str,
    pub usage: Usage,
    #[allow(dead_code)]
    pub min: u16,
    pub max: u16,
    pub datatype: &'static str,
    #[allow(dead_code)]
    pub min_len: u16,
    pub max_len: u16,
    pub binding: &'static str,
}

/// A component of a datatype definition.
#[derive(Debug)]
#[allow(dead_code)]
pub(crate) struct ComponentDef {
    pub name: &'static str,
    pub usage: Usage,
    pub datatype: &'static str,
    pub min_len: u16,
    pub max_len: u16,
    pub binding: &'static str,
}

/// A segment definition of a profile.
#[derive(Debug)]
#[allow(dead_code)]
pub(crate) struct SegmentDef {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub fields: &'static [FieldDef],
}

/// A datatype definition of a profile.
#[derive(Debug)]
#[allow(dead_code)]
pub(crate) struct DatatypeDef {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub components: &'static [ComponentDef],
}

/// One element of a message structure.
#[derive(Debug)]
#[allow(dead_code)]
pub(crate) enum GroupItem {
    /// A segment reference.
    Segment { id: &'static str, name: &'static str, usage: Usage, min: u16, max: u16 },
    /// A group of segments.
    Group { name: &'static str, usage: Usage, min: u16, max: u16, children: &'static [GroupItem] },
}

/// One code of a value set: `(code, display, code system, hl7)`, where `hl7` is
/// `code^display^system` escaped and joined as the VXU writer sends it (empty when the code or
/// the system is empty).
pub(crate) type CodeDef = (&'static str, &'static str, &'static str, &'static str);

/// A value set: [`CodeDef`]s sorted by code.
#[derive(Debug)]
#[allow(dead_code)]
pub(crate) struct ValueSetDef {
    pub id: &'static str,
    pub name: &'static str,
    pub codes: &'static [CodeDef],
}

/// The value set with binding id `id` (e.g. `HL70163_IZ`).
pub(crate) fn value_set(id: &str) -> Option<&'static ValueSetDef> {
    VALUE_SETS.binary_search_by(|v| v.id.cmp(id)).ok().map(|i| &VALUE_SETS[i])
}

/// The `(code, display, code system, hl7)` entry of `code` in value set `vs`. Always inline: the
/// record check makes about ten lookups, and as a call each paid a 7-register prologue.
#[inline(always)]
pub(crate) fn code_in(vs: &'static ValueSetDef, code: &str) -> Option<&'static CodeDef> {
    // Most bound value sets are small (sex, eligibility, sites …): a scan with a cheap equality
    // test beats the ordered compares of a binary search there.
    if vs.codes.len() <= SCAN_MAX {
        return vs.codes.iter().find(|c| short_eq(c.0, code));
    }
    let i = vs.codes.binary_search_by(|c| super::codes::key_cmp(c.0, code)).ok()?;
    vs.codes.get(i)
}

/// Value sets up to this many codes are scanned rather than searched.
const SCAN_MAX: usize = 32;

/// `a == b`, without a `memcmp` call for the short codes of value sets: same length, then the
/// first and last four bytes, which together cover every byte of a code of 4 to 8 bytes; a code
/// of up to 3 bytes is its first, middle and last byte.
#[inline(always)]
fn short_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0 => true,
        1..=3 => [a[0], a[n / 2], a[n - 1]] == [b[0], b[n / 2], b[n - 1]],
        4..=8 => {
            a.first_chunk::<4>() == b.first_chunk::<4>()
                && a.last_chunk::<4>() == b.last_chunk::<4>()
        }
        _ => a == b,
    }
}

/// The display text of `code` in value set `id`, when the code is in it.
pub(crate) fn display(id: &str, code: &str) -> Option<&'static str> {
    code_in(value_set(id)?, code).map(|c| c.1)
}

/// True when `code` is in value set `id`.
pub(crate) fn contains(id: &str, code: &str) -> bool {
    display(id, code).is_some()
}

/// Which profile a segment definition is looked up in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Profile {
    /// VXU^V04 (send immunization history).
    Z22,
    /// ACK (acknowledgement).
    Z23,
}

/// The definition of segment `name` (e.g. `RXA`) in `profile`.
pub(crate) fn segment_def(profile: Profile, name: &str) -> Option<&'static SegmentDef> {
    let (defs, structure) = match profile {
        Profile::Z22 => (Z22_SEGMENTS, Z22_STRUCTURE),
        Profile::Z23 => (Z23_SEGMENTS, Z23_STRUCTURE),
    };
    let id = find_segment_id(structure, name)?;
    defs.binary_search_by(|d| d.id.cmp(id)).ok().map(|i| &defs[i])
}

fn find_segment_id(items: &'static [GroupItem], name: &str) -> Option<&'static str> {
    items.iter().find_map(|item| match item {
        GroupItem::Segment { id, name: n, .. } if *n == name => Some(*id),
        GroupItem::Segment { .. } => None,
        GroupItem::Group { children, .. } => find_segment_id(children, name),
    })
}

/// The name of field `n` (1-based) of segment `name`, e.g. `RXA-5 Administered Code`.
pub(crate) fn field_name(profile: Profile, name: &str, n: usize) -> Option<&'static str> {
    segment_def(profile, name)?.fields.get(n.checked_sub(1)?).map(|f| f.name)
}

/// The datatype definition `id` (e.g. `CE_IZ`) in `profile`.
pub(crate) fn datatype_def(profile: Profile, id: &str) -> Option<&'static DatatypeDef> {
    let defs = match profile {
        Profile::Z22 => Z22_DATATYPES,
        Profile::Z23 => Z23_DATATYPES,
    };
    defs.binary_search_by(|d| d.id.cmp(id)).ok().map(|i| &defs[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_eq_is_equality() {
        let words = ["", "F", "FM", "V01", "V02", "V0", "2106-3", "2106-4", "3106-3", "PHC70"];
        let more = ["VXC40", "VXC4", "CDCPHINVS", "CDCPHINVT", "é", "aé", "éa", "2106-3 "];
        for a in words.iter().chain(&more) {
            for b in words.iter().chain(&more) {
                assert_eq!(short_eq(a, b), a == b, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn code_in_finds_every_code_of_every_set() {
        for vs in VALUE_SETS {
            for c in vs.codes {
                assert_eq!(code_in(vs, c.0).map(|f| f.0), Some(c.0), "{} {}", vs.id, c.0);
            }
            assert!(code_in(vs, "no such code").is_none(), "{}", vs.id);
        }
    }
}
