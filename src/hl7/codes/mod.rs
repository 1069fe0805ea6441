//! CDC code tables: CVX, MVX, NDC and VIS, and the route table.
//!
//! `tables.rs` is generated from CDC's published code files by `tools/gen_cdc_tables.py`
//! (see `tools/CDC_TABLES.md`); the NIST 2018 value sets predate every COVID-19 code, so they
//! are not enough on their own. Smaller HL7 / CDC value sets (sites, NIP001, CDCREC …) come
//! from the NIST value-set library in [`super::profile`].

mod tables;

use tables::{CVX_TABLE, MVX_TABLE, NDC_TABLE, VIS_TABLE, VIS_VACCINES};

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
}

/// One MVX manufacturer code.
#[derive(Debug)]
pub(crate) struct MvxEntry {
    pub code: &'static str,
    pub name: &'static str,
    #[allow(dead_code)]
    pub active: bool,
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
}

/// One VIS / EUA fact sheet edition.
#[derive(Debug)]
#[allow(dead_code)]
pub(crate) struct VisEntry {
    pub gdti: &'static str,
    pub document: &'static str,
    pub edition: &'static str,
    pub current: bool,
}

/// Compares two table keys in byte order, as `str::cmp` does, but inline: the keys are short
/// codes (2 to 24 bytes) that mostly differ in their first bytes, where the `memcmp` call of
/// `str::cmp` costs more than the comparison. The record check makes about twenty lookups.
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

/// The CVX entry for `code` (leading zeros as CDC writes them: `03`, not `3`).
pub(crate) fn cvx(code: &str) -> Option<&'static CvxEntry> {
    CVX_TABLE.binary_search_by(|e| key_cmp(e.code, code)).ok().map(|i| &CVX_TABLE[i])
}

/// The MVX entry for `code`.
pub(crate) fn mvx(code: &str) -> Option<&'static MvxEntry> {
    MVX_TABLE.binary_search_by(|e| key_cmp(e.code, code)).ok().map(|i| &MVX_TABLE[i])
}

/// The NDC entry for a dashed 5-4-2 NDC.
pub(crate) fn ndc(code: &str) -> Option<&'static NdcEntry> {
    NDC_TABLE.binary_search_by(|e| key_cmp(e.ndc, code)).ok().map(|i| &NDC_TABLE[i])
}

/// The VIS entry for a 24-digit fully encoded string.
pub(crate) fn vis(gdti: &str) -> Option<&'static VisEntry> {
    VIS_TABLE.binary_search_by(|e| key_cmp(e.gdti, gdti)).ok().map(|i| &VIS_TABLE[i])
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

/// A route of administration: NCIT code, text, and the HL7 table 0162 code sent as alternate.
#[derive(Debug)]
pub(crate) struct Route {
    pub ncit: &'static str,
    pub text: &'static str,
    pub hl70162: &'static str,
}

/// The NCIT routes of the CDC guide, with their HL7 0162 equivalents (the IG example sends
/// `C28161^IM^NCIT^IM^^HL70162`). Sorted by NCIT code.
const ROUTES: &[Route] = &[
    Route { ncit: "C28161", text: "Intramuscular", hl70162: "IM" },
    Route { ncit: "C38238", text: "Intradermal", hl70162: "ID" },
    Route { ncit: "C38276", text: "Intravenous", hl70162: "IV" },
    Route { ncit: "C38284", text: "Nasal", hl70162: "NS" },
    Route { ncit: "C38288", text: "Oral", hl70162: "PO" },
    Route { ncit: "C38299", text: "Subcutaneous", hl70162: "SC" },
    Route { ncit: "C38305", text: "Transdermal", hl70162: "TD" },
    Route { ncit: "C38676", text: "Percutaneous", hl70162: "" },
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
