//! CDC code tables: CVX, MVX, NDC and VIS, and the route table.
//!
//! `tables.rs` is generated from CDC's published code files by `tools/gen_cdc_tables.py`
//! (see `tools/CDC_TABLES.md`); the NIST 2018 value sets predate every COVID-19 code, so they
//! are not enough on their own. Smaller HL7 / CDC value sets (sites, NIP001, CDCREC …) come
//! from the NIST value-set library in [`super::profile`].

mod tables;

use tables::{
    CVX_KEYS, CVX_TABLE, MVX_KEYS, MVX_TABLE, NDC_KEYS, NDC_TABLE, VIS_KEYS, VIS_TABLE,
    VIS_VACCINES,
};

/// CDC status of a CVX code.
#[allow(dead_code)] // `Pending` appears only when CDC publishes pending codes
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CvxStatus {
    /// In use in the US.
    Active,
    /// No longer used for new administrations; valid for history.
    Inactive,
    /// Given outside the US only.
    NonUs,
    /// Never licensed or used.
    NeverActive,
    /// Not yet active.
    Pending,
}

/// One CVX code.
#[derive(Debug)]
pub(crate) struct CvxEntry {
    pub code: &'static str,
    pub short_description: &'static str,
    pub status: CvxStatus,
    /// The short description says "unspecified" (in any ASCII case): a code for a vaccine whose
    /// formulation is not known, which the record check refuses for a dose given here. Worked
    /// out by the generator so that the check does not scan the description per record.
    pub unspecified: bool,
    /// `code^short_description^CVX`, escaped and joined as RXA-5 sends it.
    pub hl7: &'static str,
}

/// One MVX manufacturer code.
#[derive(Debug)]
pub(crate) struct MvxEntry {
    pub code: &'static str,
    pub name: &'static str,
    #[allow(dead_code)]
    pub active: bool,
    /// `code^name^MVX`, escaped and joined as RXA-17 sends it.
    pub hl7: &'static str,
}

/// Whether an NDC is a unit of sale (carton) or a unit of use (vial, syringe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NdcKind {
    /// The package sold.
    UnitOfSale,
    /// The unit administered.
    UnitOfUse,
}

/// One NDC with the CVX and MVX it stands for.
#[derive(Debug)]
#[allow(dead_code)]
pub(crate) struct NdcEntry {
    pub ndc: &'static str,
    pub kind: NdcKind,
    pub cvx: &'static str,
    pub mvx: &'static str,
    pub name: &'static str,
    /// `ndc^name^NDC`, escaped and joined as RXA-5 sends it.
    pub hl7: &'static str,
}

/// One VIS / EUA fact sheet edition.
#[derive(Debug)]
#[allow(dead_code)]
pub(crate) struct VisEntry {
    pub gdti: &'static str,
    pub document: &'static str,
    pub edition: &'static str,
    pub current: bool,
    /// `gdti^document^cdcgs1vis`, escaped and joined as the 69764-9 OBX-5 sends it.
    pub hl7: &'static str,
}

/// Compares two table keys in byte order, as `str::cmp` does, but inline: the keys are short
/// codes that mostly differ in their first bytes, where the `memcmp` call of `str::cmp` costs
/// more than the comparison (value sets, the VIS vaccine list).
#[inline]
pub(crate) fn key_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

// The CVX, MVX, NDC and VIS tables are searched through their keys packed as integers (the
// generated `*_KEYS`, in table order): the record check makes about twenty lookups, and a binary
// search over integers costs a fraction of one over strings (NDC: 10 steps of string compares).

/// A code of up to 7 bytes (CVX, MVX) as one integer that orders as the code's bytes do: the
/// bytes left-aligned, then the length (so that `A` and `A\0` differ). `None` for longer codes,
/// which those tables do not hold. `short_key` in tools/gen_cdc_tables.py packs the same way.
pub(crate) fn short_key(code: &str) -> Option<u64> {
    let b = code.as_bytes();
    let free = 7usize.checked_sub(b.len())?;
    let packed = b.iter().fold(0u64, |k, &x| (k << 8) | u64::from(x));
    Some((packed << (8 * free) << 8) | b.len() as u64)
}

/// A dashed 5-4-2 NDC as the number its eleven digits spell (orders as the text does, the dashes
/// being in the same places); `None` for any other shape.
pub(crate) fn ndc_key(ndc: &str) -> Option<u64> {
    let b: &[u8; 13] = ndc.as_bytes().try_into().ok()?;
    let mut key = 0;
    for (i, &x) in b.iter().enumerate() {
        match (i, x) {
            (5 | 10, b'-') => {}
            (5 | 10, _) => return None,
            (_, b'0'..=b'9') => key = key * 10 + u64::from(x - b'0'),
            _ => return None,
        }
    }
    Some(key)
}

/// A 24-digit VIS string as its two 12-digit halves, as numbers; `None` for any other shape.
/// The record check also uses it as the string's shape check (the first half is CDC's prefix).
pub(crate) fn vis_key(gdti: &str) -> Option<(u64, u64)> {
    let b = gdti.as_bytes();
    if b.len() != 24 {
        return None;
    }
    let eight = |i: usize| <[u8; 8]>::try_from(&b[i..i + 8]).ok().and_then(eight_digits);
    let (head, middle, tail) = (eight(0)?, eight(8)?, eight(16)?);
    Some((head * 10_000 + middle / 10_000, middle % 10_000 * 100_000_000 + tail))
}

/// Eight ASCII digits as the number they spell, `None` when one is not a digit. One word at a
/// time (SWAR): every byte is `0x30..=0x39` when its high nibble is 3 and adding 6 does not
/// change that; then pairs, quads and the two halves are combined in three multiply-adds (the
/// first digit is the lowest byte of the little-endian word).
fn eight_digits(bytes: [u8; 8]) -> Option<u64> {
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    let w = u64::from_le_bytes(bytes);
    if w & HIGH != ZEROS || w.wrapping_add(0x0606_0606_0606_0606) & HIGH != ZEROS {
        return None;
    }
    let mut v = w - ZEROS;
    v = (v * 10 + (v >> 8)) & 0x00FF_00FF_00FF_00FF;
    v = (v * 100 + (v >> 16)) & 0x0000_FFFF_0000_FFFF;
    Some((v * 10_000 + (v >> 32)) & 0xFFFF_FFFF)
}

/// The CVX entry for `code` (leading zeros as CDC writes them: `03`, not `3`).
pub(crate) fn cvx(code: &str) -> Option<&'static CvxEntry> {
    CVX_TABLE.get(CVX_KEYS.binary_search(&short_key(code)?).ok()?)
}

/// The MVX entry for `code`.
pub(crate) fn mvx(code: &str) -> Option<&'static MvxEntry> {
    MVX_TABLE.get(MVX_KEYS.binary_search(&short_key(code)?).ok()?)
}

/// The NDC entry for a dashed 5-4-2 NDC.
pub(crate) fn ndc(code: &str) -> Option<&'static NdcEntry> {
    NDC_TABLE.get(NDC_KEYS.binary_search(&ndc_key(code)?).ok()?)
}

/// The VIS entry for a 24-digit fully encoded string.
pub(crate) fn vis(gdti: &str) -> Option<&'static VisEntry> {
    vis_by_key(vis_key(gdti)?)
}

/// The VIS entry whose string packs to `key` (see [`vis_key`]).
pub(crate) fn vis_by_key(key: (u64, u64)) -> Option<&'static VisEntry> {
    VIS_TABLE.get(VIS_KEYS.binary_search(&key).ok()?)
}

/// True when a VIS must be documented for vaccine `cvx` (IZ-24, PHVS_VISVaccines_IIS).
pub(crate) fn needs_vis(cvx: &str) -> bool {
    VIS_VACCINES.binary_search_by(|e| key_cmp(e, cvx)).is_ok()
}

/// True when `cvx` is a CDC code for a COVID-19 vaccine.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn is_covid(code: &str) -> bool {
    cvx(code).is_some_and(|e| {
        let d = e.short_description.to_ascii_uppercase();
        d.contains("COVID") || d.contains("SARS-COV-2")
    })
}

/// A route of administration: its NCIT code, and the RXR-1 components pre-encoded (no route
/// text holds a delimiter: they are the literals below).
#[derive(Debug)]
pub(crate) struct Route {
    pub ncit: &'static str,
    /// `ncit^text^NCIT`, RXR-1.1-3.
    pub hl7: &'static str,
    /// `hl70162^text^HL70162`, RXR-1.4-6, the HL7 table 0162 alternate; empty when there is none.
    pub hl7_alternate: &'static str,
}

/// A [`Route`] from its NCIT code, text and HL7 0162 code.
macro_rules! route {
    ($ncit:literal, $text:literal, "") => {
        Route { ncit: $ncit, hl7: concat!($ncit, "^", $text, "^NCIT"), hl7_alternate: "" }
    };
    ($ncit:literal, $text:literal, $hl70162:literal) => {
        Route {
            ncit: $ncit,
            hl7: concat!($ncit, "^", $text, "^NCIT"),
            hl7_alternate: concat!($hl70162, "^", $text, "^HL70162"),
        }
    };
}

/// The NCIT routes of the CDC guide, with their HL7 0162 equivalents (the IG example sends
/// `C28161^IM^NCIT^IM^^HL70162`). Sorted by NCIT code.
const ROUTES: &[Route] = &[
    route!("C28161", "Intramuscular", "IM"),
    route!("C38238", "Intradermal", "ID"),
    route!("C38276", "Intravenous", "IV"),
    route!("C38284", "Nasal", "NS"),
    route!("C38288", "Oral", "PO"),
    route!("C38299", "Subcutaneous", "SC"),
    route!("C38305", "Transdermal", "TD"),
    route!("C38676", "Percutaneous", ""),
];

/// The route with NCIT code `ncit`.
pub(crate) fn route(ncit: &str) -> Option<&'static Route> {
    ROUTES.binary_search_by(|r| key_cmp(r.ncit, ncit)).ok().map(|i| &ROUTES[i])
}

/// True when `ndc` has the 11-digit 5-4-2 dashed shape CDC publishes (`59267-1000-02`).
pub(crate) fn is_ndc_shape(ndc: &str) -> bool {
    let b = ndc.as_bytes();
    b.len() == 13
        && b.iter()
            .enumerate()
            .all(|(i, &x)| if i == 5 || i == 10 { x == b'-' } else { x.is_ascii_digit() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted<T>(items: &[T], key: impl Fn(&T) -> &str) -> bool {
        items.windows(2).all(|w| key(&w[0]) < key(&w[1]))
    }

    #[test]
    fn tables_are_sorted_for_binary_search() {
        assert!(sorted(CVX_TABLE, |e| e.code));
        assert!(sorted(MVX_TABLE, |e| e.code));
        assert!(sorted(NDC_TABLE, |e| e.ndc));
        assert!(sorted(VIS_TABLE, |e| e.gdti));
        assert!(sorted(VIS_VACCINES, |e| e));
        assert!(sorted(ROUTES, |r| r.ncit));
    }

    /// What the writer sends for `code^text^system` escaped part by part (`comps`).
    fn written(code: &str, text: &str, system: &str) -> String {
        let mut w = crate::hl7::Writer::new();
        w.segment("X").comps(1, &[code, text, system]);
        w.finish()
    }

    /// What the VXU builder's writer sends for a pre-encoded triplet.
    fn copied(hl7: &'static str) -> String {
        let mut w = crate::hl7::encode::SeqWriter::new();
        w.segment("X").run("|").text(hl7);
        w.finish()
    }

    #[test]
    fn packed_keys_are_the_tables_keys_in_order() {
        let same = |keys: &[u64], codes: Vec<Option<u64>>| {
            keys.len() == codes.len() && keys.iter().zip(&codes).all(|(k, c)| Some(*k) == *c)
        };
        assert!(same(CVX_KEYS, CVX_TABLE.iter().map(|e| short_key(e.code)).collect()));
        assert!(same(MVX_KEYS, MVX_TABLE.iter().map(|e| short_key(e.code)).collect()));
        assert!(same(NDC_KEYS, NDC_TABLE.iter().map(|e| ndc_key(e.ndc)).collect()));
        assert_eq!(VIS_KEYS.len(), VIS_TABLE.len());
        assert!(VIS_TABLE.iter().zip(VIS_KEYS).all(|(e, k)| vis_key(e.gdti) == Some(*k)));
        // Packed keys order as the text does, and tell apart what the text tells apart.
        let words =
            ["", "0", "03", "030", "03\0", "1", "10", "100", "A", "A\0", "AB", "B", "ZZZZZZZ"];
        for a in words {
            for b in words {
                assert_eq!(short_key(a).cmp(&short_key(b)), a.cmp(b), "{a:?} {b:?}");
            }
        }
        assert_eq!(short_key("ABCDEFGH"), None);
        assert_eq!(ndc_key("00069-2432-01"), Some(69_243_201));
        assert_eq!(
            (ndc_key("00069-2432-0x"), ndc_key("00069-24320-1"), ndc_key("0069-2432-01")),
            (None, None, None)
        );
        assert_eq!(vis_key("25308869830006391125013x"), None);
        assert_eq!(vis_key("253088698300063911250131"), Some((253_088_698_300, 63_911_250_131)));
        let eight = |text: &str| eight_digits(*text.as_bytes().first_chunk().expect("8 bytes"));
        assert_eq!(eight("00000000"), Some(0));
        assert_eq!(eight("12345678"), Some(12_345_678));
        assert_eq!(eight("99999999"), Some(99_999_999));
        for bad in ["1234567/", "1234567:", "/2345678", ":2345678", "1234 678", "123456\u{7f}8"] {
            assert_eq!(eight(bad), None, "{bad}");
        }
        for b in 0..=255u8 {
            assert_eq!(
                eight_digits([b'1', b'2', b'3', b, b'5', b'6', b'7', b'8']).is_some(),
                b.is_ascii_digit()
            );
            assert_eq!(eight_digits([b; 8]).is_some(), b.is_ascii_digit(), "{b:#x}");
        }
        for (e, other) in NDC_TABLE.iter().zip(NDC_TABLE.iter().skip(1)) {
            assert_eq!(ndc(e.ndc).map(|f| f.ndc), Some(e.ndc));
            assert!(ndc_key(e.ndc) < ndc_key(other.ndc));
        }
        for e in VIS_TABLE {
            assert_eq!(vis(e.gdti).map(|f| f.gdti), Some(e.gdti));
        }
        assert!(CVX_TABLE.iter().all(|e| cvx(e.code).is_some_and(|f| f.code == e.code)));
        assert!(MVX_TABLE.iter().all(|e| mvx(e.code).is_some_and(|f| f.code == e.code)));
        assert!(cvx("3").is_none() && cvx("0003").is_none() && mvx("").is_none());
    }

    #[test]
    fn pre_encoded_triplets_are_what_the_writer_would_send() {
        let mut n = 0;
        let mut check = |code: &str, text: &str, system: &str, hl7: &'static str| {
            if code.is_empty() || system.is_empty() {
                assert_eq!(hl7, "", "{code} {system}");
            } else {
                assert_eq!(copied(hl7), written(code, text, system), "{hl7}");
                n += 1;
            }
        };
        CVX_TABLE.iter().for_each(|e| check(e.code, e.short_description, "CVX", e.hl7));
        MVX_TABLE.iter().for_each(|e| check(e.code, e.name, "MVX", e.hl7));
        NDC_TABLE.iter().for_each(|e| check(e.ndc, e.name, "NDC", e.hl7));
        VIS_TABLE.iter().for_each(|e| check(e.gdti, e.document, "cdcgs1vis", e.hl7));
        for vs in crate::hl7::nist::VALUE_SETS {
            vs.codes.iter().for_each(|&(code, text, system, hl7)| check(code, text, system, hl7));
        }
        assert!(n > 3000, "{n}");
        // An escaped text (MVX VET: `GmbH & Co. KG`) is copied escaped.
        assert!(mvx("VET").is_some_and(|e| e.hl7.contains("GmbH \\T\\ Co.")));
        for r in ROUTES {
            let (ncit, text) = r.hl7.split_once('^').unwrap_or_default();
            let text = text.trim_end_matches("^NCIT");
            assert_eq!(copied(r.hl7), written(ncit, text, "NCIT"));
            if let Some((code, _)) = r.hl7_alternate.split_once('^') {
                assert_eq!(copied(r.hl7_alternate), written(code, text, "HL70162"));
            }
        }
    }

    #[test]
    fn unspecified_flags_follow_the_descriptions() {
        for e in CVX_TABLE {
            let said = e.short_description.to_ascii_lowercase().contains("unspecified");
            assert_eq!(e.unspecified, said, "CVX {}", e.code);
        }
        assert!(cvx("213").is_some_and(|e| e.unspecified));
    }

    #[test]
    fn key_cmp_is_byte_order() {
        for (a, b) in [("03", "3"), ("1", "10"), ("10", "1"), ("", "a"), ("208", "208"), ("é", "z")]
        {
            assert_eq!(key_cmp(a, b), a.cmp(b), "{a:?} {b:?}");
        }
    }

    #[test]
    fn table_keys_have_the_shapes_the_record_check_relies_on() {
        // validate.rs skips the NDC lookup for a misshapen NDC and copies editions as YYYYMMDD.
        assert!(NDC_TABLE.iter().all(|e| is_ndc_shape(e.ndc)));
        assert!(VIS_TABLE.iter().all(|e| {
            let b = e.edition.as_bytes();
            b.len() == 10 && b[4] == b'-' && b[7] == b'-'
        }));
    }

    #[test]
    fn covid_codes_are_present() {
        for code in [
            "207", "208", "210", "211", "212", "213", "217", "218", "219", "221", "228", "229",
            "230", "300", "301", "302", "308", "309", "310", "311", "312", "313",
        ] {
            assert!(cvx(code).is_some(), "CVX {code} missing");
            assert!(is_covid(code), "CVX {code} not recognised as COVID-19");
        }
        assert_eq!(cvx("309").map(|e| e.status), Some(CvxStatus::Active));
        assert!(mvx("MOD").is_some() && mvx("PFR").is_some() && mvx("NVX").is_some());
        assert_eq!(ndc("59267-1000-02").map(|e| e.cvx), Some("208"));
        assert_eq!(ndc("80777-0273-99").map(|e| e.mvx), Some("MOD"));
        assert!(!is_covid("141"));
    }

    #[test]
    fn ndc_shape() {
        assert!(is_ndc_shape("59267-1000-02"));
        assert!(!is_ndc_shape("5926710000"));
        assert!(!is_ndc_shape("5926-1000-02"));
        assert!(!is_ndc_shape("59267-1000-0a"));
        assert!(!is_ndc_shape("59267-10000-2"));
        assert!(!is_ndc_shape("59267-1000-021"));
    }
}
