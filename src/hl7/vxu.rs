//! The VXU^V04^VXU_V04 builder (CDC IG 1.5 + 2018 addendum, NIST profile Z22).
//!
//! [`generate_vxu`] turns one canonical [`Record`] into one message: `MSH PID [PD1] [NK1]
//! ORC RXA [RXR] [OBX…]`. The record is first checked by `validate::resolve` (every violation at
//! once) and the finished message is checked again by the message validator, so nothing that
//! leaves here can break a Z22 rule we know how to check. Per-IIS choices come from the
//! [`MessageProfile`]; MSH-7 and MSH-10 are parameters, so output is reproducible in tests.

use chrono::{DateTime, FixedOffset};

use super::encode::{Digits, Writer};
use super::message_profile::{Hd, MessageProfile, NdcPlacement};
use super::validate::{Coded, Date, DoseKind, Phone, Resolved, ResolvedVis, Violation, resolve};
use crate::record::{Address, Clinician, Record};

/// A record that cannot become a valid VXU, with every reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {record_id} cannot be sent: {}", summary(.violations))]
pub struct Invalid {
    /// The record's `vaccination_id`.
    pub record_id: String,
    /// Every violation found.
    pub violations: Vec<Violation>,
}

fn summary(v: &[Violation]) -> String {
    v.iter().map(|v| format!("{}: {}", v.field, v.rule)).collect::<Vec<_>>().join("; ")
}

/// Builds the VXU for `rec` with control id `control_id` (MSH-10) and time `now` (MSH-7).
///
/// The record is checked first (every violation at once). The builder's output is not
/// re-validated here, to keep generation cheap on a backlog: the golden tests and the
/// property tests in `tests/it` run every generated message through [`validate_message`]
/// and require zero errors.
///
/// [`validate_message`]: super::validate_message
///
/// # Errors
/// [`Invalid`] listing every problem when the record cannot become a conformant VXU.
pub fn generate_vxu(
    rec: &Record,
    profile: &MessageProfile,
    control_id: &str,
    now: DateTime<FixedOffset>,
) -> Result<String, Invalid> {
    let r = resolve(rec, profile, now.date_naive())
        .map_err(|violations| Invalid { record_id: rec.vaccination_id.clone(), violations })?;
    Ok(encode(&r, profile, control_id, now))
}

/// Formats `t` as TS_Z, `YYYYMMDDHHMMSS±ZZZZ`, digit by digit (this runs per message).
fn ts_z(t: &DateTime<FixedOffset>) -> Digits<19> {
    use chrono::{Datelike, Timelike};
    let offset = t.offset().local_minus_utc() / 60;
    let mut out = Digits::new();
    out.push_digits(u32::try_from(t.year()).unwrap_or(0), 4);
    for part in [t.month(), t.day(), t.hour(), t.minute(), t.second()] {
        out.push_digits(part, 2);
    }
    out.push(if offset < 0 { b'-' } else { b'+' });
    out.push_digits(offset.unsigned_abs() / 60, 2);
    out.push_digits(offset.unsigned_abs() % 60, 2);
    out
}

/// A borrowed hierarchic designator: namespace id and ISO OID.
#[derive(Clone, Copy)]
struct HdRef<'a> {
    namespace: &'a str,
    oid: &'a str,
}

impl<'a> From<&'a Hd> for HdRef<'a> {
    fn from(hd: &'a Hd) -> Self {
        Self { namespace: &hd.namespace, oid: &hd.oid }
    }
}

impl<'a> HdRef<'a> {
    /// An HD from a record value: an OID goes to HD.2 (with `ISO`), anything else to HD.1.
    fn from_value(value: &'a str) -> Self {
        let is_oid = value.contains('.') && value.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        if is_oid { Self { namespace: "", oid: value } } else { Self { namespace: value, oid: "" } }
    }

    fn iso(&self) -> &'static str {
        if self.oid.is_empty() { "" } else { "ISO" }
    }
}

/// Writes an HD into component `c` of field `f` as sub-components (`NS&OID&ISO`).
fn hd_in_component(w: &mut Writer, f: u16, c: u16, hd: HdRef<'_>) {
    w.subs(f, c, &[hd.namespace, hd.oid, hd.iso()]);
}

/// Writes an HD as a whole field (`NS^OID^ISO`).
fn hd_field(w: &mut Writer, f: u16, hd: HdRef<'_>) {
    w.comps(f, &[hd.namespace, hd.oid, hd.iso()]);
}

/// Trimmed text of an optional record value.
fn opt(v: &Option<String>) -> &str {
    v.as_deref().map_or("", str::trim_ascii)
}

fn coded(w: &mut Writer, f: u16, c: &Coded<'_>) {
    coded_at(w, f, 1, 1, c);
}

/// A coded value as components `c`..`c + 2` of repetition `rep` of field `f`: the table's
/// pre-encoded form when it has one, else each part escaped.
fn coded_at(w: &mut Writer, f: u16, rep: u16, c: u16, value: &Coded<'_>) {
    if value.hl7.is_empty() {
        w.put((f, rep, c, 1), value.code).put((f, rep, c + 1, 1), value.text);
        w.put((f, rep, c + 2, 1), value.system);
    } else {
        w.triplet(f, rep, c, value.hl7);
    }
}

fn xad(w: &mut Writer, f: u16, a: &Address) {
    let (street, other, city) = (opt(&a.street), opt(&a.other), opt(&a.city));
    let (state, zip, country) = (opt(&a.state), opt(&a.zip), opt(&a.country));
    w.comps(f, &[street, other, city, state, zip, country, "L"]);
    w.comp(f, 9, a.county.as_deref().unwrap_or("").trim_ascii());
}

fn xtn_phone(w: &mut Writer, f: u16, rep: u16, phone: &Phone) {
    w.comps_in(f, rep, &["", "PRN", "PH"]);
    w.put_digits((f, rep, 6, 1), &phone.0).put_digits((f, rep, 7, 1), &phone.1);
}

/// XCN: id, family, given, assigning authority + id type when an id is sent, credential.
fn xcn(w: &mut Writer, f: u16, who: &Clinician, profile: &MessageProfile) {
    let id = opt(&who.id);
    w.comps(f, &[id, opt(&who.family_name), opt(&who.given_name)]);
    if !id.is_empty() {
        // A 10-digit id is an NPI (assigned by CMS); anything else is a local provider number.
        let npi = id.len() == 10 && id.bytes().all(|b| b.is_ascii_digit());
        let cms = HdRef { namespace: "CMS", oid: "" };
        hd_in_component(w, f, 9, if npi { cms } else { (&profile.provider_id_authority).into() });
    }
    if who.family_name.is_some() || who.given_name.is_some() {
        w.comp(f, 10, "L");
    }
    if !id.is_empty() {
        let npi = id.len() == 10 && id.bytes().all(|b| b.is_ascii_digit());
        w.comp(f, 13, if npi { "NPI" } else { "PRN" });
    }
    w.comp(f, 21, who.credential.as_deref().unwrap_or("").trim_ascii());
}

fn encode(
    r: &Resolved<'_>,
    profile: &MessageProfile,
    control_id: &str,
    now: DateTime<FixedOffset>,
) -> String {
    let rec = r.rec;
    let mut w = Writer::new();
    let facility_id = rec.facility.as_ref().map_or("", |f| f.id.trim_ascii());

    // MSH ---------------------------------------------------------------------------------
    let sending_facility = if profile.sending_facility.is_empty() {
        HdRef { namespace: facility_id, oid: "" }
    } else {
        (&profile.sending_facility).into()
    };
    w.segment("MSH");
    hd_field(&mut w, 3, (&profile.sending_application).into());
    hd_field(&mut w, 4, sending_facility);
    hd_field(&mut w, 5, (&profile.receiving_application).into());
    hd_field(&mut w, 6, (&profile.receiving_facility).into());
    w.field_digits(7, &ts_z(&now));
    w.fixed(9, "VXU^V04^VXU_V04");
    w.field(10, control_id);
    w.field(11, profile.processing_id.code());
    w.fixed(12, "2.5.1");
    w.fixed(15, "ER").fixed(16, "AL");
    w.fixed(21, "Z22^CDCPHINVS");
    if profile.send_responsible_organizations {
        let (org22, org23) = (&profile.sending_organization, &profile.receiving_organization);
        w.field(22, if org22.is_empty() { sending_facility.namespace } else { org22 });
        w.field(23, if org23.is_empty() { &profile.receiving_facility.namespace } else { org23 });
    }

    // PID ---------------------------------------------------------------------------------
    let p = &rec.patient;
    w.segment("PID").fixed(1, "1");
    w.field(3, p.id.trim_ascii());
    let authority = p.id_authority.as_deref().map_or_else(
        || (&profile.patient_id_authority).into(),
        |a| HdRef::from_value(a.trim_ascii()),
    );
    hd_in_component(&mut w, 3, 4, authority);
    w.comp(3, 5, "MR");
    let middle = p.middle_name.as_deref().unwrap_or("").trim_ascii();
    let suffix = p.suffix.as_deref().unwrap_or("").trim_ascii();
    w.comps(5, &[p.family_name.trim_ascii(), p.given_name.trim_ascii(), middle, suffix])
        .comp(5, 7, "L");
    if let Some(m) = p.mother_maiden_name.as_deref().map(str::trim_ascii).filter(|m| !m.is_empty())
    {
        w.comp(6, 1, m).comp(6, 7, "M");
    }
    w.field_digits(7, &r.birth_date);
    w.field(8, p.sex.trim_ascii());
    for (i, race) in r.race.iter().enumerate() {
        let rep = u16::try_from(i + 1).unwrap_or(u16::MAX);
        coded_at(&mut w, 10, rep, 1, race);
    }
    if let Some(a) = &p.address {
        xad(&mut w, 11, a);
    }
    let mut rep = 1;
    if let Some(phone) = &r.phone {
        xtn_phone(&mut w, 13, rep, phone);
        rep += 1;
    }
    if let Some(email) = p.email.as_deref().map(str::trim_ascii) {
        w.comps_in(13, rep, &["", "NET", "Internet", email]);
    }
    if let Some(l) = &r.language {
        coded(&mut w, 15, l);
    }
    if let Some(e) = &r.ethnicity {
        coded(&mut w, 22, e);
    }

    // PD1 ---------------------------------------------------------------------------------
    let pd1_data = r.publicity.is_some() || p.protection.is_some() || p.registry_status.is_some();
    if profile.send_pd1 && pd1_data {
        let dated = |d: &Option<_>| d.unwrap_or(r.admin_date);
        w.segment("PD1");
        if let Some(pc) = &r.publicity {
            coded(&mut w, 11, pc);
        }
        if let Some(pi) = p.protection.as_deref().map(str::trim_ascii) {
            w.field(12, pi).field_digits(13, &dated(&r.protection_date));
        }
        if let Some(rs) = p.registry_status.as_deref().map(str::trim_ascii) {
            w.field(16, rs).field_digits(17, &dated(&r.registry_status_date));
        }
        if r.publicity.is_some() {
            w.field_digits(18, &dated(&r.publicity_date));
        }
    }

    // NK1 ---------------------------------------------------------------------------------
    if let (true, Some(party), Some(rel)) =
        (profile.send_nk1, &rec.responsible_party, &r.relationship)
    {
        w.segment("NK1").field(1, "1");
        let middle = party.middle_name.as_deref().unwrap_or("").trim_ascii();
        w.comps(2, &[party.family_name.trim_ascii(), party.given_name.trim_ascii(), middle])
            .comp(2, 7, "L");
        coded(&mut w, 3, rel);
        if let Some(a) = &party.address {
            xad(&mut w, 4, a);
        }
        if let Some(phone) = &r.responsible_phone {
            xtn_phone(&mut w, 5, 1, phone);
        }
    }

    // ORC ---------------------------------------------------------------------------------
    let filler_ns = if profile.filler_namespace.is_empty() {
        profile.sending_application.namespace.as_str()
    } else {
        profile.filler_namespace.as_str()
    };
    let refused = matches!(r.kind, DoseKind::Refused(_));
    w.segment("ORC").fixed(1, "RE");
    // IZ-45: a refusal's filler order number is 9999.
    w.comps(3, &[if refused { "9999" } else { rec.vaccination_id.trim_ascii() }, filler_ns]);
    if let Some(op) = &rec.ordering_provider {
        xcn(&mut w, 12, op, profile);
    }
    if let Some(f) = &rec.facility {
        w.comps(17, &[f.id.trim_ascii(), f.name.as_deref().unwrap_or("").trim_ascii(), "HL70362"]);
    }

    // RXA ---------------------------------------------------------------------------------
    let new_dose = r.kind == DoseKind::Administered;
    let admin_date = &r.admin_date;
    w.segment("RXA").fixed(1, "0").fixed(2, "1").field_digits(3, admin_date);
    if profile.send_rxa4 {
        w.field_digits(4, admin_date);
    }
    let (primary, alternate) = match (profile.ndc, &r.ndc) {
        (NdcPlacement::Alternate, Some(ndc)) => (&r.cvx, Some(ndc)),
        (NdcPlacement::Primary, Some(ndc)) => (ndc, Some(&r.cvx)),
        _ => (&r.cvx, None),
    };
    coded(&mut w, 5, primary);
    if let Some(alt) = alternate {
        coded_at(&mut w, 5, 1, 4, alt);
    }
    match (&r.kind, &r.dose_ml) {
        (DoseKind::Refused(_), _) | (_, None) => {
            w.field(6, "999");
        }
        (_, Some(ml)) => {
            w.field_digits(6, ml).fixed(7, "mL^milliliter^UCUM");
        }
    }
    match r.kind {
        DoseKind::Administered => {
            w.fixed(9, "00^New immunization record^NIP001");
        }
        DoseKind::Historical(code) => {
            let text = super::nist::display("NIP001", code).unwrap_or("");
            w.comps(9, &[code, text, "NIP001"]);
        }
        DoseKind::Refused(_) => {}
    }
    if new_dose {
        if let Some(v) = &rec.vaccinator {
            xcn(&mut w, 10, v, profile);
        }
        if !facility_id.is_empty() {
            w.comp(11, 4, facility_id);
        }
    }
    if !refused {
        w.field(15, rec.vaccine.lot.as_deref().unwrap_or("").trim_ascii());
        if let Some(exp) = &r.expiration {
            w.field_digits(16, exp);
        }
        if let Some(m) = &r.mvx {
            coded(&mut w, 17, m);
        }
    }
    if let DoseKind::Refused(code) = r.kind {
        let text = super::nist::display("NIP002", code).unwrap_or("");
        w.comps(18, &[code, text, "NIP002"]);
    }
    w.field(20, if refused { "RE" } else { "CP" });
    w.field(21, r.action);

    // RXR ---------------------------------------------------------------------------------
    if let (false, Some(route)) = (refused, r.route) {
        w.segment("RXR").triplet(1, 1, 1, route.hl7);
        if profile.route_alternate {
            w.triplet(1, 1, 4, route.hl7_alternate);
        }
        if let Some(site) = &r.site {
            coded(&mut w, 2, site);
        }
    }

    // OBX groups: OBX-1 runs 1..n through the message, OBX-4 groups one observation's parts.
    if new_dose {
        let mut obx = Obx { set_id: 0, sub_id: 0, date: admin_date };
        if let (true, Some(f)) = (profile.send_funding_source, &r.funding) {
            obx.next_group();
            obx.coded(&mut w, "30963-3^Vaccine funding source^LN", f, None);
        }
        if let Some(e) = &r.eligibility {
            obx.next_group();
            obx.coded(
                &mut w,
                "64994-7^Vaccine funding program eligibility category^LN",
                e,
                Some("VXC40^Eligibility captured at the immunization level^CDCPHINVS"),
            );
        }
        for v in &r.vis {
            obx.next_group();
            match v {
                ResolvedVis::Barcode { document, presented } => {
                    obx.coded(&mut w, "69764-9^Document type^LN", document, None);
                    obx.date(
                        &mut w,
                        "29769-7^Date vaccine information statement presented^LN",
                        presented,
                    );
                }
                ResolvedVis::VaccineType { vaccine, published, presented } => {
                    obx.coded(&mut w, "30956-7^Vaccine type^LN", vaccine, None);
                    obx.date(
                        &mut w,
                        "29768-9^Date vaccine information statement published^LN",
                        published,
                    );
                    obx.date(
                        &mut w,
                        "29769-7^Date vaccine information statement presented^LN",
                        presented,
                    );
                }
            }
        }
        if let (true, Some(n)) = (profile.send_dose_number, rec.dose_number) {
            obx.next_group();
            obx.head(&mut w, "ST", "30973-2^Dose number in series^LN");
            w.number(5, n);
            obx.tail(&mut w);
        }
    }
    w.finish()
}

/// Numbering state of the OBX segments of one order group.
struct Obx<'d> {
    set_id: u32,
    sub_id: u32,
    date: &'d Date,
}

impl Obx<'_> {
    fn next_group(&mut self) {
        self.sub_id += 1;
    }

    fn head(&mut self, w: &mut Writer, value_type: &'static str, loinc: &'static str) {
        self.set_id += 1;
        w.segment("OBX").number(1, self.set_id).fixed(2, value_type);
        w.fixed(3, loinc).number(4, self.sub_id);
    }

    fn tail(&self, w: &mut Writer) {
        w.fixed(11, "F").field_digits(14, self.date);
    }

    fn coded(
        &mut self,
        w: &mut Writer,
        loinc: &'static str,
        value: &Coded<'_>,
        method: Option<&'static str>,
    ) {
        self.head(w, "CE", loinc);
        coded(w, 5, value);
        self.tail(w);
        if let Some(m) = method {
            w.fixed(17, m);
        }
    }

    /// An observation whose value is a date (value type DT).
    fn date(&mut self, w: &mut Writer, loinc: &'static str, value: &Date) {
        self.head(w, "DT", loinc);
        w.field_digits(5, value);
        self.tail(w);
    }
}

/// A new message control id (MSH-10): 20 characters, time-ordered, unique across processes.
///
/// Crockford base-32 of 48 bits of milliseconds since 1970, then 52 bits that start at a random
/// value per process (from the system RNG, once) and count up, so two ids from one process never
/// collide and two processes collide only if their random starts do (2^-52). The 2.5.1 length
/// limit of MSH-10 is 20.
pub fn new_control_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    use ring::rand::{SecureRandom, SystemRandom};
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    const LOW: u64 = (1 << 52) - 1;
    static START: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let start = *START.get_or_init(|| {
        let mut random = [0u8; 8];
        // The system RNG does not fail on supported platforms; fall back to the clock's
        // nanoseconds rather than panic if it ever does.
        if SystemRandom::new().fill(&mut random).is_err() {
            random = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0).to_le_bytes();
        }
        u64::from_le_bytes(random)
    });
    let low = start.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed)) & LOW;
    let millis =
        u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0) & ((1 << 48) - 1);
    let value: u128 = (u128::from(millis) << 52) | u128::from(low);
    (0..20).rev().map(|i| ALPHABET[((value >> (i * 5)) & 31) as usize] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_ids_are_unique_ordered_and_20_chars() {
        let a = new_control_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_control_id();
        assert_eq!(a.len(), 20);
        let many: std::collections::HashSet<String> =
            (0..10_000).map(|_| new_control_id()).collect();
        assert_eq!(many.len(), 10_000);
        assert_ne!(a, b);
        assert!(a[..10] <= b[..10], "{a} then {b}");
    }
}
