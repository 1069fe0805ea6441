//! Record validation: why a canonical record cannot become a CDC-conformant VXU.
//!
//! [`resolve`] checks a [`Record`] against the CDC value sets and the IG's rules and, when it
//! passes, returns the normalised values the builder encodes (dates as `YYYYMMDD`, codes with
//! their display text). Every violation is reported at once, each naming the record, the record
//! field (`vaccine.cvx`) and the rule broken, so staff can fix everything in one pass.

use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate};

use super::codes::{self, CvxStatus, Route};
use super::encode::Digits;
use super::message_profile::{MessageProfile, VisMethod};
use super::nist::{self, ValueSetDef};
use crate::record::{Address, Record};

/// One reason a record cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Violation {
    /// The record's `vaccination_id`.
    pub record_id: String,
    /// The record field, e.g. `vaccine.cvx` or `vis[1].presented`.
    pub field: String,
    /// The rule that was broken, e.g. `CVX 999 is not an administrable vaccine code`.
    pub rule: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "record {}: {}: {}", self.record_id, self.field, self.rule)
    }
}

/// What kind of RXA this record becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DoseKind {
    /// Given by the reporting provider: RXA-9 `00`, RXA-20 `CP`.
    Administered,
    /// Reported from another source: RXA-9 `01`…`08`.
    Historical(&'static str),
    /// Refused: RXA-20 `RE`, RXA-18 the reason.
    Refused(&'static str),
}

/// A code with its display text and coding system.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Coded<'a> {
    pub code: &'a str,
    pub text: &'a str,
    pub system: &'a str,
    /// `code^text^system` escaped and joined, as a generated table stores it, so the writer
    /// copies it once; empty for codes not from a table (the writer then escapes each part).
    pub hl7: &'static str,
}

impl<'a> Coded<'a> {
    /// A code that is not from a generated table (no pre-encoded form).
    fn plain(code: &'a str, text: &'a str, system: &'a str) -> Self {
        Self { code, text, system, hl7: "" }
    }
}

/// One VIS, resolved to the method it is sent with.
#[derive(Debug, Clone)]
pub(crate) enum ResolvedVis<'a> {
    /// 69764-9 barcode (`gdti^document^cdcgs1vis`) + 29769-7 presentation date.
    Barcode { document: Coded<'a>, presented: Date },
    /// 30956-7 vaccine type (`cvx^text^CVX`) + 29768-9 publication + 29769-7 presentation date.
    VaccineType { vaccine: Coded<'a>, published: Date, presented: Date },
}

/// A date as `YYYYMMDD` (or `YYYYMM` for a month-only expiration), held inline.
pub(crate) type Date = Digits<8>;

/// A US phone number: area code and local number, held inline.
pub(crate) type Phone = (Digits<3>, Digits<7>);

/// A record checked and normalised for the builder.
#[derive(Debug)]
pub(crate) struct Resolved<'a> {
    pub rec: &'a Record,
    pub kind: DoseKind,
    pub admin_date: Date,
    pub birth_date: Date,
    pub cvx: Coded<'a>,
    pub ndc: Option<Coded<'a>>,
    pub mvx: Option<Coded<'a>>,
    pub expiration: Option<Date>,
    pub dose_ml: Option<Digits<8>>,
    pub route: Option<&'static Route>,
    pub site: Option<Coded<'a>>,
    pub eligibility: Option<Coded<'a>>,
    pub funding: Option<Coded<'a>>,
    pub vis: Vec<ResolvedVis<'a>>,
    pub race: Vec<Coded<'a>>,
    pub ethnicity: Option<Coded<'a>>,
    pub phone: Option<Phone>,
    pub responsible_phone: Option<Phone>,
    pub relationship: Option<Coded<'a>>,
    pub language: Option<Coded<'a>>,
    pub publicity: Option<Coded<'a>>,
    pub publicity_date: Option<Date>,
    pub protection_date: Option<Date>,
    pub registry_status_date: Option<Date>,
    pub action: &'a str,
}

/// Collects violations for one record.
struct Check<'a> {
    id: &'a str,
    found: Vec<Violation>,
}

impl Check<'_> {
    fn fail(&mut self, field: impl Into<String>, rule: impl Into<String>) {
        self.found.push(Violation {
            record_id: self.id.to_owned(),
            field: field.into(),
            rule: rule.into(),
        });
    }

    fn max_len(&mut self, field: &str, value: &str, max: usize) {
        // A value has no more characters than bytes: count them only when it could be too long.
        if value.len() <= max {
            return;
        }
        let n = value.chars().count();
        if n > max {
            self.fail(field, format!("is {n} characters long; the CDC profile allows {max}"));
        }
    }

    /// [`Check::max_len`] with the field name built only on failure.
    fn max_len_at(&mut self, field: impl FnOnce() -> String, value: &str, max: usize) {
        if value.len() > max {
            self.max_len(&field(), value, max);
        }
    }

    /// [`Check::date`] with the field name built only on failure.
    fn date_at(&mut self, field: impl FnOnce() -> String, value: &str) -> Option<Day> {
        ymd(value.trim_ascii()).or_else(|| self.date(&field(), value))
    }

    /// [`Check::coded`] with the field name built only on failure.
    fn coded_at<'v>(
        &mut self,
        field: impl FnOnce() -> String,
        code: &'v str,
        set: Option<&'static ValueSetDef>,
        what: &str,
    ) -> Option<Coded<'v>> {
        let code = code.trim_ascii();
        match nist::code_in(set?, code) {
            Some(&(_, text, system, hl7)) => Some(Coded { code, text, system, hl7 }),
            None => self.coded(&field(), code, set, what),
        }
    }

    /// A required, non-blank text.
    fn required(&mut self, field: &str, value: &str) -> bool {
        if value.trim_ascii().is_empty() {
            self.fail(field, "is required");
            return false;
        }
        true
    }

    /// A `YYYY-MM-DD` date.
    fn date(&mut self, field: &str, value: &str) -> Option<Day> {
        match ymd(value.trim_ascii()) {
            Some(d) => Some(d),
            None => {
                self.fail(field, format!("{value:?} is not a date (expected YYYY-MM-DD)"));
                None
            }
        }
    }

    /// A code from NIST value set `set` (none: not checked); returns it with its display text.
    fn coded<'v>(
        &mut self,
        field: &str,
        code: &'v str,
        set: Option<&'static ValueSetDef>,
        what: &str,
    ) -> Option<Coded<'v>> {
        let code = code.trim_ascii();
        let vs = set?;
        match nist::code_in(vs, code) {
            Some(&(_, text, system, hl7)) => Some(Coded { code, text, system, hl7 }),
            None => {
                self.not_in_set(field, code, vs, what);
                None
            }
        }
    }

    /// [`Check::coded`]'s failure, out of line: the message formatting would otherwise weigh on
    /// every successful lookup (registers saved, a larger frame).
    #[cold]
    #[inline(never)]
    fn not_in_set(&mut self, field: &str, code: &str, vs: &ValueSetDef, what: &str) {
        self.fail(field, format!("{code:?} is not a {what} code ({})", vs.id));
    }
}

/// The NIST value sets the record check binds to, found once per process rather than by a
/// search over every set id per record.
struct Sets {
    sex: Option<&'static ValueSetDef>,
    race: Option<&'static ValueSetDef>,
    ethnicity: Option<&'static ValueSetDef>,
    publicity: Option<&'static ValueSetDef>,
    protection: Option<&'static ValueSetDef>,
    registry_status: Option<&'static ValueSetDef>,
    relationship: Option<&'static ValueSetDef>,
    site: Option<&'static ValueSetDef>,
    eligibility: Option<&'static ValueSetDef>,
    funding: Option<&'static ValueSetDef>,
    source: Option<&'static ValueSetDef>,
    refusal: Option<&'static ValueSetDef>,
}

fn sets() -> &'static Sets {
    static SETS: std::sync::OnceLock<Sets> = std::sync::OnceLock::new();
    SETS.get_or_init(|| Sets {
        sex: nist::value_set("HL70001_IZ"),
        race: nist::value_set("CDCREC_R_IZ"),
        ethnicity: nist::value_set("CDCREC_E_IZ"),
        publicity: nist::value_set("HL70215_IZ"),
        protection: nist::value_set("HL70136_IZ"),
        registry_status: nist::value_set("HL70441_IZ"),
        relationship: nist::value_set("HL70063_IZ"),
        site: nist::value_set("HL70163_IZ"),
        eligibility: nist::value_set("HL70064_IZ"),
        funding: nist::value_set("PHVS_ImmunizationFundingSource_IIS"),
        source: nist::value_set("NIP001"),
        refusal: nist::value_set("NIP002"),
    })
}

/// A valid calendar date read from `YYYY-MM-DD` text: compared by `key` (`yyyymmdd` as a
/// number, which orders as the dates do), sent as `digits`, the text's own digits (copied, not
/// re-formatted from a `NaiveDate`).
#[derive(Debug, Clone, Copy)]
struct Day {
    key: i64,
    digits: Date,
}

impl Day {
    /// The key of a chrono date (`today`), comparable with [`Day::key`].
    fn key_of(d: NaiveDate) -> i64 {
        i64::from(d.year()) * 10_000 + i64::from(d.month() * 100 + d.day())
    }
}

impl fmt::Display for Day {
    /// `YYYY-MM-DD`, as chrono displays a `NaiveDate` of a four-digit year (error messages).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.digits.as_str();
        write!(f, "{}-{}-{}", &d[..4], &d[4..6], &d[6..])
    }
}

/// Parses a `YYYY-MM-DD` date (a hand parser: chrono's format strings, and even its
/// `from_ymd_opt`, cost more than the rest of a date's check).
fn ymd(s: &str) -> Option<Day> {
    ymd_bytes(s.as_bytes().try_into().ok()?)
}

/// [`ymd`] on the ten bytes of the text.
fn ymd_bytes(b: &[u8; 10]) -> Option<Day> {
    if b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let raw = [b[0], b[1], b[2], b[3], b[5], b[6], b[8], b[9]];
    let digits = Date::from_digits(raw)?;
    let n = |i: usize| u32::from(raw[i] - b'0');
    let year = n(0) * 1000 + n(1) * 100 + n(2) * 10 + n(3);
    let (month, day) = (n(4) * 10 + n(5), n(6) * 10 + n(7));
    let days = match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    if !(1..=days).contains(&day) {
        return None;
    }
    Some(Day { key: i64::from(year * 10_000 + month * 100 + day), digits })
}

/// Parses `administered_at`: RFC 3339 (the clinic's local date is kept) or `YYYY-MM-DD`.
///
/// The usual shape, `YYYY-MM-DDTHH:MM:SS` then `Z` or `±HH:MM` with every number in range, is
/// read by hand: chrono accepts all of it, and its local date is its first ten characters.
/// Anything else (fractions of a second, leap seconds, a lower-case `t`) goes to chrono.
fn admin_date(value: &str) -> Option<Day> {
    let v = value.trim_ascii();
    if let Some((date, time)) = v.as_bytes().split_first_chunk::<10>()
        && plain_rfc3339_time(time)
        && let Some(day) = ymd_bytes(date)
    {
        return Some(day);
    }
    DateTime::parse_from_rfc3339(v)
        .ok()
        .and_then(|t| ymd(&t.date_naive().to_string()))
        .or_else(|| ymd(v))
}

/// `THH:MM:SS` then `Z` or `±HH:MM`: hours (of the time and of the offset) below 24, minutes
/// and seconds below 60.
fn plain_rfc3339_time(t: &[u8]) -> bool {
    let two = |i: usize, max: u8| match t.get(i..i + 2) {
        Some(&[a, b]) if a.is_ascii_digit() && b.is_ascii_digit() => {
            (a - b'0') * 10 + (b - b'0') <= max
        }
        _ => false,
    };
    let clock = t.len() >= 9
        && t[0] == b'T'
        && two(1, 23)
        && t[3] == b':'
        && two(4, 59)
        && t[6] == b':'
        && two(7, 59);
    clock
        && match &t[9..] {
            [b'Z'] => true,
            [b'+' | b'-', _, _, b':', _, _] => two(10, 23) && two(13, 59),
            _ => false,
        }
}

/// US phone: 10 digits (a leading country code 1 is dropped); returns (area, local).
fn us_phone(value: &str) -> Option<Phone> {
    // Only ASCII digits and punctuation are allowed, so bytes are characters here. One pass:
    // the first 11 digits are kept, the rest only counted.
    let mut digits = [0u8; 11];
    let mut count = 0;
    for b in value.bytes() {
        if b.is_ascii_digit() {
            if let Some(slot) = digits.get_mut(count) {
                *slot = b;
            }
            count += 1;
        } else if !b" ()-.+".contains(&b) {
            return None;
        }
    }
    let national = match count {
        11 if digits[0] == b'1' => &digits[1..],
        10 => &digits[..10],
        _ => return None,
    };
    let (mut area, mut local) = (Digits::new(), Digits::new());
    national[..3].iter().for_each(|&d| area.push(d));
    national[3..].iter().for_each(|&d| local.push(d));
    Some((area, local))
}

/// Formats a dose volume: at most 3 decimals, no trailing zeros (`0.3`, `0.25`, `1`).
fn format_ml(ml: f64) -> Digits<8> {
    // Callers pass 0 < ml <= 10, so thousandths fit easily in a u32 and the text in 6 bytes.
    let thousandths = (ml * 1000.0).round() as u32;
    let (whole, mut frac) = (thousandths / 1000, thousandths % 1000);
    let mut out = Digits::new();
    out.push_u32(whole);
    if frac > 0 {
        out.push(b'.');
        let mut div = 100;
        while frac > 0 {
            out.push(b'0' + (frac / div) as u8);
            frac %= div;
            div /= 10;
        }
    }
    out
}

/// Common ISO 639-2 languages (PID-15): code, name, and `code^name^ISO639` as PID-15 sends it;
/// other three-letter codes are sent without text.
const LANGUAGES: &[(&str, &str, &str)] = &[
    ("ara", "Arabic", "ara^Arabic^ISO639"),
    ("chi", "Chinese", "chi^Chinese^ISO639"),
    ("eng", "English", "eng^English^ISO639"),
    ("fre", "French", "fre^French^ISO639"),
    ("ger", "German", "ger^German^ISO639"),
    ("hin", "Hindi", "hin^Hindi^ISO639"),
    ("hmn", "Hmong", "hmn^Hmong^ISO639"),
    ("jpn", "Japanese", "jpn^Japanese^ISO639"),
    ("kor", "Korean", "kor^Korean^ISO639"),
    ("por", "Portuguese", "por^Portuguese^ISO639"),
    ("rus", "Russian", "rus^Russian^ISO639"),
    ("som", "Somali", "som^Somali^ISO639"),
    ("spa", "Spanish", "spa^Spanish^ISO639"),
    ("tgl", "Tagalog", "tgl^Tagalog^ISO639"),
    ("vie", "Vietnamese", "vie^Vietnamese^ISO639"),
];

/// Checks `rec` against the CDC rules and `profile`; on success returns the normalised values.
///
/// `today` bounds dates that cannot lie in the future (birth, administration).
///
/// # Errors
/// Every [`Violation`] found, at once.
pub(crate) fn resolve<'a>(
    rec: &'a Record,
    profile: &'a MessageProfile,
    today: NaiveDate,
) -> Result<Resolved<'a>, Vec<Violation>> {
    let (today_key, tomorrow_key) =
        (Day::key_of(today), Day::key_of(today.succ_opt().unwrap_or(today)));
    let mut c = Check { id: &rec.vaccination_id, found: Vec::new() };
    let sets = sets();
    if c.required("vaccination_id", &rec.vaccination_id) {
        c.max_len("vaccination_id", &rec.vaccination_id, 199);
    }

    // --- What kind of dose this is ---------------------------------------------------------
    let kind = dose_kind(&mut c, rec);

    // --- Patient ---------------------------------------------------------------------------
    let p = &rec.patient;
    if c.required("patient.id", &p.id) {
        c.max_len("patient.id", &p.id, 15);
    }
    if let Some(a) = &p.id_authority {
        // HD.1 namespace ids are IS(20); an OID goes to HD.2 (ST 199).
        let is_oid = a.contains('.') && a.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        c.max_len("patient.id_authority", a, if is_oid { 199 } else { 20 });
    }
    if c.required("patient.family_name", &p.family_name) {
        c.max_len("patient.family_name", &p.family_name, 194);
    }
    if c.required("patient.given_name", &p.given_name) {
        c.max_len("patient.given_name", &p.given_name, 30);
    }
    if let Some(m) = &p.middle_name {
        c.max_len("patient.middle_name", m, 30);
    }
    if let Some(s) = &p.suffix {
        c.max_len("patient.suffix", s, 20);
    }
    if let Some(m) = &p.mother_maiden_name {
        c.max_len("patient.mother_maiden_name", m, 194);
    }
    let birth = if c.required("patient.birth_date", &p.birth_date) {
        c.date("patient.birth_date", &p.birth_date)
    } else {
        None
    };
    if let Some(b) = birth
        && b.key > today_key
    {
        c.fail("patient.birth_date", format!("{b} is in the future"));
    }
    if c.required("patient.sex", &p.sex) {
        c.coded("patient.sex", &p.sex, sets.sex, "sex (F, M or U)");
    }
    let race: Vec<Coded<'_>> = p
        .race
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            c.coded_at(|| format!("patient.race[{i}]"), r, sets.race, "CDCREC race")
        })
        .collect();
    let ethnicity = p
        .ethnicity
        .as_deref()
        .and_then(|e| c.coded("patient.ethnicity", e, sets.ethnicity, "CDCREC ethnicity"));
    if let Some(a) = &p.address {
        check_address(&mut c, "patient.address", a);
    }
    let phone = p.phone.as_deref().and_then(|ph| {
        let r = us_phone(ph);
        if r.is_none() {
            c.fail("patient.phone", format!("{ph:?} is not a 10-digit US phone number"));
        }
        r
    });
    if let Some(e) = &p.email {
        let ok = e.split_once('@').is_some_and(|(u, d)| !u.is_empty() && d.contains('.'));
        if !ok {
            c.fail("patient.email", format!("{e:?} is not an e-mail address"));
        }
        c.max_len("patient.email", e, 199);
    }
    let language = p.language.as_deref().and_then(|l| {
        let l = l.trim_ascii();
        if l.len() != 3 || !l.bytes().all(|b| b.is_ascii_lowercase()) {
            c.fail("patient.language", format!("{l:?} is not an ISO 639-2 code (e.g. eng, spa)"));
            return None;
        }
        Some(match LANGUAGES.iter().find(|(k, ..)| *k == l) {
            Some(&(_, text, hl7)) => Coded { code: l, text, system: "ISO639", hl7 },
            None => Coded::plain(l, "", "ISO639"),
        })
    });
    let publicity = p
        .publicity
        .as_deref()
        .and_then(|v| c.coded("patient.publicity", v, sets.publicity, "publicity"));
    if let Some(v) = &p.protection {
        c.coded("patient.protection", v, sets.protection, "protection indicator (Y or N)");
    }
    if let Some(v) = &p.registry_status {
        c.coded("patient.registry_status", v, sets.registry_status, "registry status");
    }
    let mut opt_date = |field: &str, v: &Option<String>| {
        v.as_deref().and_then(|d| c.date(field, d)).map(|d| d.digits)
    };
    let publicity_date = opt_date("patient.publicity_date", &p.publicity_date);
    let protection_date = opt_date("patient.protection_date", &p.protection_date);
    let registry_status_date = opt_date("patient.registry_status_date", &p.registry_status_date);

    // --- Responsible party -----------------------------------------------------------------
    let mut relationship = None;
    let mut responsible_phone = None;
    if let Some(r) = &rec.responsible_party {
        if c.required("responsible_party.family_name", &r.family_name) {
            c.max_len("responsible_party.family_name", &r.family_name, 194);
        }
        if c.required("responsible_party.given_name", &r.given_name) {
            c.max_len("responsible_party.given_name", &r.given_name, 30);
        }
        if c.required("responsible_party.relationship", &r.relationship) {
            relationship = c.coded(
                "responsible_party.relationship",
                &r.relationship,
                sets.relationship,
                "relationship",
            );
        }
        if let Some(a) = &r.address {
            check_address(&mut c, "responsible_party.address", a);
        }
        if let Some(ph) = &r.phone {
            responsible_phone = us_phone(ph);
            if responsible_phone.is_none() {
                c.fail(
                    "responsible_party.phone",
                    format!("{ph:?} is not a 10-digit US phone number"),
                );
            }
        }
    }

    // --- Who and where ---------------------------------------------------------------------
    if let Some(f) = &rec.facility {
        if c.required("facility.id", &f.id) {
            c.max_len("facility.id", &f.id, 20);
        }
    }
    for (field, who) in
        [("vaccinator", &rec.vaccinator), ("ordering_provider", &rec.ordering_provider)]
    {
        if let Some(w) = who {
            if let Some(id) = &w.id {
                c.max_len_at(|| format!("{field}.id"), id, 15);
            }
            let named = w.family_name.as_deref().is_some_and(|s| !s.trim_ascii().is_empty())
                || w.given_name.as_deref().is_some_and(|s| !s.trim_ascii().is_empty());
            if w.id.as_deref().is_none_or(|s| s.trim_ascii().is_empty()) && !named {
                c.fail(field, "needs an id or a name");
            }
        }
    }

    // --- When ------------------------------------------------------------------------------
    let admin = match rec.administered_at.as_deref() {
        None => {
            c.fail("administered_at", "is required");
            None
        }
        Some(v) => {
            let d = admin_date(v);
            if d.is_none() {
                c.fail("administered_at", format!("{v:?} is not a date or RFC 3339 time"));
            }
            d
        }
    };
    if let Some(a) = admin {
        if a.key > tomorrow_key {
            c.fail("administered_at", format!("{a} is in the future"));
        }
        if let Some(b) = birth
            && a.key < b.key
        {
            c.fail("administered_at", format!("{a} is before the birth date {b}"));
        }
    }

    // --- What ------------------------------------------------------------------------------
    let v = &rec.vaccine;
    let new_dose = kind == DoseKind::Administered;
    let cvx = if c.required("vaccine.cvx", &v.cvx) {
        check_cvx(&mut c, v.cvx.trim_ascii(), kind)
    } else {
        None
    };
    // The NDC's table entry, found once: the MVX check below needs it too.
    let mut ndc_entry = None;
    let ndc = v.ndc.as_deref().and_then(|n| {
        let n = n.trim_ascii();
        if !codes::is_ndc_shape(n) {
            c.fail(
                "vaccine.ndc",
                format!("{n:?} is not an NDC in 11-digit 5-4-2 form (e.g. 59267-1000-02)"),
            );
            return None;
        }
        ndc_entry = codes::ndc(n);
        match ndc_entry {
            Some(e) => {
                if let Some(x) = cvx
                    && e.cvx != x.code
                {
                    c.fail("vaccine.ndc", format!("NDC {n} is CVX {}, not CVX {}", e.cvx, x.code));
                }
                Some(Coded { code: n, text: e.name, system: "NDC", hl7: e.hl7 })
            }
            None => Some(Coded::plain(n, "", "NDC")),
        }
    });
    let mvx = match v.mvx.as_deref().map(str::trim_ascii) {
        Some(m) => match codes::mvx(m) {
            Some(e) => {
                // Every NDC in the table has the 5-4-2 shape, so a misshapen one has no entry.
                if let Some(n) = ndc_entry
                    && !n.mvx.is_empty()
                    && n.mvx != e.code
                {
                    c.fail(
                        "vaccine.mvx",
                        format!("NDC {} is made by {}, not {}", n.ndc, n.mvx, e.code),
                    );
                }
                Some(Coded { code: m, text: e.name, system: "MVX", hl7: e.hl7 })
            }
            None => {
                c.fail("vaccine.mvx", format!("{m:?} is not an MVX manufacturer code"));
                None
            }
        },
        None => {
            if new_dose {
                c.fail("vaccine.mvx", "is required for a dose given here (RXA-17)");
            }
            None
        }
    };
    match v.lot.as_deref().map(str::trim_ascii) {
        Some(l) if !l.is_empty() => c.max_len("vaccine.lot", l, 20),
        _ if new_dose => c.fail("vaccine.lot", "is required for a dose given here (RXA-15)"),
        _ => {}
    }
    let expiration = v.expiration_date.as_deref().and_then(|e| {
        let e = e.trim_ascii();
        if let Some(d) = ymd(e) {
            return Some(d.digits);
        }
        // `YYYY-MM`: checked as the first of the month, sent as `YYYYMM`.
        if let Ok(month) = <[u8; 7]>::try_from(e.as_bytes()) {
            let mut first = *b"0000-00-01";
            first[..7].copy_from_slice(&month);
            if let Some(d) = ymd_bytes(&first) {
                let mut digits = d.digits;
                digits.truncate(6);
                return Some(digits);
            }
        }
        c.fail("vaccine.expiration_date", format!("{e:?} is not a date (YYYY-MM-DD or YYYY-MM)"));
        None
    });
    let dose_ml = match v.dose_ml {
        Some(ml) if ml.is_finite() && ml > 0.0 && ml <= 10.0 => Some(format_ml(ml)),
        Some(ml) => {
            c.fail(
                "vaccine.dose_ml",
                format!("{ml} mL is not a plausible dose volume (0 < mL <= 10)"),
            );
            None
        }
        None => {
            if new_dose {
                c.fail("vaccine.dose_ml", "is required for a dose given here (RXA-6)");
            }
            None
        }
    };

    // --- How -------------------------------------------------------------------------------
    let route = rec.route.as_deref().map(str::trim_ascii).and_then(|r| {
        let found = codes::route(r);
        if found.is_none() {
            c.fail("route", format!("{r:?} is not an NCIT route code (e.g. C28161 intramuscular)"));
        }
        found
    });
    let site =
        rec.site.as_deref().and_then(|s| c.coded("site", s, sets.site, "body site (HL7 0163)"));
    if rec.site.is_some() && rec.route.is_none() {
        c.fail("site", "a site needs a route (RXR-1 is required when RXR is sent)");
    }
    if let Some(n) = rec.dose_number
        && !(1..=99).contains(&n)
    {
        c.fail("dose_number", format!("{n} is not a dose number between 1 and 99"));
    }

    // --- Eligibility, funding, VIS ----------------------------------------------------------
    let eligibility = match rec.vfc_eligibility.as_deref().map(str::trim_ascii) {
        Some(code) => match profile.local_eligibility(code) {
            Some(l) => Some(Coded::plain(code, &l.text, &l.system)),
            None => c.coded("vfc_eligibility", code, sets.eligibility, "VFC eligibility"),
        },
        None => {
            if new_dose {
                c.fail("vfc_eligibility", "is required for a dose given here (IZ-23: OBX 64994-7)");
            }
            None
        }
    };
    let funding = rec.funding_source.as_deref().map(str::trim_ascii).and_then(|code| match profile
        .local_funding(code)
    {
        Some(l) => Some(Coded::plain(code, &l.text, &l.system)),
        None => c.coded("funding_source", code, sets.funding, "funding source"),
    });
    let vis = resolve_vis(&mut c, rec, profile, cvx);

    let action = match rec.action.as_deref().map(str::trim_ascii) {
        None | Some("A") => "A",
        Some("U") => "U",
        Some("D") => "D",
        Some(other) => {
            c.fail("action", format!("{other:?} is not an RXA-21 action (A, U or D)"));
            "A"
        }
    };

    match (c.found.is_empty(), admin, birth, cvx) {
        (true, Some(admin), Some(birth), Some(cvx)) => Ok(Resolved {
            rec,
            kind,
            admin_date: admin.digits,
            birth_date: birth.digits,
            cvx,
            ndc,
            mvx,
            expiration,
            dose_ml,
            route,
            site,
            eligibility,
            funding,
            vis,
            race,
            ethnicity,
            phone,
            responsible_phone,
            relationship,
            language,
            publicity,
            publicity_date,
            protection_date,
            registry_status_date,
            action,
        }),
        _ => Err(c.found),
    }
}

fn dose_kind(c: &mut Check<'_>, rec: &Record) -> DoseKind {
    let refusal = rec.refusal_reason.as_deref().map(str::trim_ascii);
    let source = rec.information_source.as_deref().map(str::trim_ascii);
    if let Some(r) = refusal {
        if rec.historical {
            c.fail("refusal_reason", "a refusal cannot also be a historical dose");
        }
        if source.is_some() {
            c.fail("information_source", "a refusal has no information source (IZ-47)");
        }
        return match sets().refusal.and_then(|vs| vs.codes.iter().find(|x| x.0 == r)) {
            Some(x) => DoseKind::Refused(x.0),
            None => {
                c.fail("refusal_reason", format!("{r:?} is not a NIP002 refusal reason (00-03)"));
                DoseKind::Refused("00")
            }
        };
    }
    if rec.historical {
        let code = source.unwrap_or("01");
        return match sets().source.and_then(|vs| vs.codes.iter().find(|x| x.0 == code)) {
            Some(x) if x.0 != "00" => DoseKind::Historical(x.0),
            _ => {
                c.fail(
                    "information_source",
                    format!("{code:?} is not a NIP001 historical source (01-08)"),
                );
                DoseKind::Historical("01")
            }
        };
    }
    if let Some(s) = source
        && s != "00"
    {
        c.fail(
            "information_source",
            format!("{s:?} needs \"historical\": true (00 means given here)"),
        );
    }
    DoseKind::Administered
}

fn check_cvx<'a>(c: &mut Check<'_>, code: &'a str, kind: DoseKind) -> Option<Coded<'a>> {
    let Some(e) = codes::cvx(code) else {
        c.fail("vaccine.cvx", format!("CVX {code} is not a CDC vaccine code"));
        return None;
    };
    let not_administrable = match e.code {
        "998" | "999" => true,
        _ => matches!(e.status, CvxStatus::NeverActive | CvxStatus::Pending) || e.unspecified,
    };
    match kind {
        DoseKind::Administered if not_administrable => {
            c.fail(
                "vaccine.cvx",
                format!(
                    "CVX {code} is not an administrable vaccine code ({})",
                    e.short_description
                ),
            );
        }
        DoseKind::Administered if e.status == CvxStatus::NonUs => {
            c.fail(
                "vaccine.cvx",
                format!("CVX {code} is a non-US vaccine; report it as a historical dose"),
            );
        }
        DoseKind::Refused(_) | DoseKind::Historical(_) if code == "998" => {
            c.fail(
                "vaccine.cvx",
                "CVX 998 (no vaccine administered) is not a vaccine to refuse or record",
            );
        }
        _ => {}
    }
    Some(Coded { code, text: e.short_description, system: "CVX", hl7: e.hl7 })
}

fn check_address(c: &mut Check<'_>, field: &str, a: &Address) {
    if let Some(s) = &a.state {
        let s = s.trim_ascii();
        if s.len() != 2 || !s.bytes().all(|b| b.is_ascii_uppercase()) {
            c.fail(format!("{field}.state"), format!("{s:?} is not a two-letter state code"));
        }
    }
    if let Some(z) = &a.zip {
        let z = z.trim_ascii();
        let digits = z.bytes().filter(u8::is_ascii_digit).count();
        let shape = (z.len() == 5 && digits == 5)
            || (z.len() == 10 && digits == 9 && z.as_bytes()[5] == b'-')
            || (z.len() == 9 && digits == 9);
        if !shape {
            c.fail(format!("{field}.zip"), format!("{z:?} is not a 5- or 9-digit ZIP code"));
        }
    }
    if let Some(k) = &a.country {
        let k = k.trim_ascii();
        if k.len() != 3 || !k.bytes().all(|b| b.is_ascii_uppercase()) {
            c.fail(
                format!("{field}.country"),
                format!("{k:?} is not an ISO 3166 alpha-3 country (e.g. USA)"),
            );
        }
    }
    for (name, value, max) in
        [("street", &a.street, 120), ("other", &a.other, 120), ("city", &a.city, 50)]
    {
        if let Some(v) = value {
            c.max_len_at(|| format!("{field}.{name}"), v, max);
        }
    }
    if let Some(k) = &a.county {
        let k = k.trim_ascii();
        if !(k.len() == 5 && k.bytes().all(|b| b.is_ascii_digit())) {
            c.fail(format!("{field}.county"), format!("{k:?} is not a 5-digit county FIPS code"));
        }
    }
}

fn resolve_vis<'a>(
    c: &mut Check<'_>,
    rec: &'a Record,
    profile: &MessageProfile,
    cvx: Option<Coded<'a>>,
) -> Vec<ResolvedVis<'a>> {
    let mut out = Vec::new();
    if rec.refusal_reason.is_some() || rec.historical {
        if !rec.vis.is_empty() {
            c.fail("vis", "VIS documents are only sent for doses given here");
        }
        return out;
    }
    for (i, v) in rec.vis.iter().enumerate() {
        let field = |name: &str| format!("vis[{i}].{name}");
        let presented = match v.presented.as_deref() {
            Some(p) => c.date_at(|| field("presented"), p),
            None => {
                c.fail(field("presented"), "is required (29769-7, the date the VIS was given)");
                None
            }
        };
        let published = v.published.as_deref().and_then(|p| c.date_at(|| field("published"), p));
        let Some(presented) = presented.map(|d| d.digits) else { continue };
        let barcode = v.document.as_deref().map(str::trim_ascii);
        let mut known = None;
        if let Some(g) = barcode {
            // The packed key is the shape check too: 24 digits, the first 12 CDC's prefix.
            match codes::vis_key(g).filter(|&(prefix, _)| prefix == 253_088_698_300) {
                Some(key) => known = codes::vis_by_key(key),
                None => {
                    c.fail(
                        field("document"),
                        format!("{g:?} is not a 24-digit VIS barcode string (253088698300…)"),
                    );
                    continue;
                }
            }
        }
        let use_barcode = barcode.is_some() && profile.vis_method == VisMethod::Barcode;
        if use_barcode {
            let gdti = barcode.unwrap_or_default();
            let document = match known {
                Some(k) => Coded { code: gdti, text: k.document, system: "cdcgs1vis", hl7: k.hl7 },
                None => Coded::plain(gdti, "", "cdcgs1vis"),
            };
            out.push(ResolvedVis::Barcode { document, presented });
            continue;
        }
        // Vaccine-type method: the VIS's vaccine (or the dose's), and a publication date.
        let vt = v.vaccine_type.as_deref().map(str::trim_ascii);
        let vt_coded = match vt {
            Some(code) => match codes::cvx(code) {
                Some(e) => {
                    Some(Coded { code, text: e.short_description, system: "CVX", hl7: e.hl7 })
                }
                None => {
                    c.fail(field("vaccine_type"), format!("CVX {code} is not a CDC vaccine code"));
                    continue;
                }
            },
            None => cvx,
        };
        let published = published.map(|d| d.digits).or_else(|| {
            known.map(|k| {
                // Editions are `YYYY-MM-DD` (a unit test in `codes` holds the table to that).
                let mut d = Date::new();
                k.edition.bytes().filter(|&b| b != b'-').for_each(|b| d.push(b));
                d
            })
        });
        match (vt_coded, published) {
            (Some(vaccine), Some(published)) => {
                out.push(ResolvedVis::VaccineType { vaccine, published, presented })
            }
            (_, None) => {
                c.fail(field("published"), "is required when the VIS has no barcode string")
            }
            (None, _) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Record {
        serde_json::from_str(
            r#"{"vaccination_id":"v1","patient":{"id":"MRN1","family_name":"Doe","given_name":"Jo",
            "birth_date":"2000-01-02","sex":"F"},"vaccine":{"cvx":"208","mvx":"PFR","lot":"L1","dose_ml":0.3},
            "administered_at":"2026-11-20T14:30:00-08:00","vfc_eligibility":"V01"}"#,
        )
        .expect("test record parses")
    }

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 24).expect("valid date")
    }

    #[test]
    fn a_minimal_new_dose_passes() {
        let rec = base();
        let profile = MessageProfile::default();
        let r = resolve(&rec, &profile, today()).map_err(|v| format!("{v:?}"));
        assert_eq!(r.map(|r| r.admin_date.as_str().to_owned()), Ok("20261120".to_owned()));
    }

    #[test]
    fn reports_every_violation_with_record_and_field() {
        let mut rec = base();
        rec.vaccine.cvx = "999".into();
        rec.vaccine.lot = None;
        rec.patient.sex = "X".into();
        rec.patient.birth_date = "2000-02-30".into();
        rec.vaccine.ndc = Some("59267-1000-02".into());
        let profile = MessageProfile::default();
        let errs = resolve(&rec, &profile, today()).err().unwrap_or_default();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(text.contains(&"record v1: vaccine.cvx: CVX 999 is not an administrable vaccine code (unknown vaccine or immune globulin)".to_owned())
            || text.iter().any(|t| t.starts_with("record v1: vaccine.cvx: CVX 999 is not an administrable vaccine code")), "{text:?}");
        assert!(
            text.iter().any(|t| t.starts_with("record v1: vaccine.lot: is required")),
            "{text:?}"
        );
        assert!(text.iter().any(|t| t.starts_with("record v1: patient.sex:")), "{text:?}");
        assert!(text.iter().any(|t| t.starts_with("record v1: patient.birth_date:")), "{text:?}");
        assert!(
            text.iter().any(|t| t.contains("NDC 59267-1000-02 is CVX 208, not CVX 999")),
            "{text:?}"
        );
    }

    #[test]
    fn pre_encoded_languages_are_what_the_writer_would_send() {
        for &(code, text, hl7) in LANGUAGES {
            assert_eq!(hl7, format!("{code}^{text}^ISO639"));
            let d = crate::hl7::Delimiters::default();
            assert_eq!(
                (crate::hl7::escape(code, &d), crate::hl7::escape(text, &d)),
                (code.into(), text.into())
            );
        }
    }

    #[test]
    fn hand_parsed_dates_agree_with_chrono() {
        for year in [0, 1, 4, 100, 1900, 1980, 2000, 2023, 2024, 2100, 2400, 9999] {
            for month in 0..=13 {
                for day in 0..=32 {
                    let text = format!("{year:04}-{month:02}-{day:02}");
                    let chrono = NaiveDate::from_ymd_opt(year, month, day);
                    let ours = ymd(&text);
                    assert_eq!(ours.map(|d| d.key), chrono.map(Day::key_of), "{text}");
                    assert_eq!(ours.map(|d| d.to_string()), chrono.map(|d| d.to_string()));
                    for time in [
                        "T14:30:00-08:00",
                        "T00:00:00Z",
                        "T23:59:59+23:59",
                        "T24:00:00Z",
                        "T12:60:00Z",
                        "T12:00:60Z",
                        "T12:00:00+24:00",
                        "T12:00:00-00:60",
                        "T12:00:00.5Z",
                        "t12:00:00z",
                        " 12:00:00Z",
                        "T12:00:00",
                        "T12:00:00+0800",
                    ] {
                        let v = format!("{text}{time}");
                        let chrono = DateTime::parse_from_rfc3339(&v).ok().map(|t| t.date_naive());
                        assert_eq!(admin_date(&v).map(|d| d.key), chrono.map(Day::key_of), "{v}");
                    }
                }
            }
        }
        assert_eq!(
            admin_date(" 2026-11-20 ").map(|d| d.digits.as_str().to_owned()),
            Some("20261120".into())
        );
    }

    #[test]
    fn phone_and_volume_formats() {
        let text = |p: Option<Phone>| p.map(|(a, l)| format!("{}/{}", a.as_str(), l.as_str()));
        assert_eq!(text(us_phone("(206) 555-1234")).as_deref(), Some("206/5551234"));
        assert_eq!(text(us_phone("1-206-555-1234")).as_deref(), Some("206/5551234"));
        assert_eq!(text(us_phone("555-1234")), None);
        assert_eq!(text(us_phone("206555123x4")), None);
        assert_eq!(text(us_phone("2-206-555-1234")), None);
        assert_eq!(format_ml(0.3), "0.3");
        assert_eq!(format_ml(0.25), "0.25");
        assert_eq!(format_ml(1.0), "1");
    }
}
