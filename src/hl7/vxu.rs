//! The VXU^V04^VXU_V04 builder (CDC IG 1.5 + 2018 addendum, NIST profile Z22).
//!
//! [`generate_vxu`] turns one canonical [`Record`] into one message: `MSH PID [PD1] [NK1]
//! ORC RXA [RXR] [OBX…]`. The record is first checked by `validate::resolve` (every violation at
//! once); what passes it makes a message the message validator finds no error in. That is not
//! re-checked per message (it cost more than generating): the golden tests and the property
//! tests (`tests/it/golden.rs`, `props.rs`) run the validator over generated messages, and the
//! simulated IIS validates every message it receives. Per-IIS choices come from the
//! [`MessageProfile`]; MSH-7 and MSH-10 are parameters, so output is reproducible in tests.

use chrono::{DateTime, FixedOffset};

use super::encode::{Digits, SeqWriter};
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
    /// The assigning authority of NPIs.
    const CMS: HdRef<'static> = HdRef { namespace: "CMS", oid: "" };

    /// An HD from a record value: an OID goes to HD.2 (with `ISO`), anything else to HD.1.
    fn from_value(value: &'a str) -> Self {
        let is_oid = value.contains('.') && value.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        if is_oid { Self { namespace: "", oid: value } } else { Self { namespace: value, oid: "" } }
    }

    fn iso(&self) -> &'static str {
        if self.oid.is_empty() { "" } else { "ISO" }
    }
}

// An HD without an OID is its namespace alone: the two separators in front of the empty OID
// and `ISO` would only be trimmed again by the separator that ends the component or field.

/// Writes an HD as the sub-components of one component (`NS&OID&ISO`).
fn hd_sub(w: &mut SeqWriter, hd: HdRef<'_>) {
    w.value(hd.namespace);
    if !hd.oid.is_empty() {
        w.run("&").value(hd.oid).run("&").text(hd.iso());
    }
}

/// Writes an HD as the components of one field (`NS^OID^ISO`).
fn hd_comps(w: &mut SeqWriter, hd: HdRef<'_>) {
    w.value(hd.namespace);
    if !hd.oid.is_empty() {
        w.run("^").value(hd.oid).run("^").text(hd.iso());
    }
}

/// Trimmed text of an optional record value.
fn opt(v: &Option<String>) -> &str {
    v.as_deref().map_or("", str::trim_ascii)
}

/// A coded value as three components: the table's pre-encoded form when it has one, else each
/// part escaped.
fn coded(w: &mut SeqWriter, value: &Coded<'_>) {
    if value.hl7.is_empty() {
        w.value(value.code).run("^").value(value.text).run("^").value(value.system);
    } else {
        w.text(value.hl7);
    }
}

/// A pre-encoded `code^text^system` triplet; an empty one still spans its three components.
fn triplet(w: &mut SeqWriter, encoded: &'static str) {
    if encoded.is_empty() {
        w.run("^^");
    } else {
        w.text(encoded);
    }
}

fn xad(w: &mut SeqWriter, a: &Address) {
    w.value(opt(&a.street)).run("^").value(opt(&a.other)).run("^").value(opt(&a.city));
    w.run("^").value(opt(&a.state)).run("^").value(opt(&a.zip)).run("^").value(opt(&a.country));
    w.run("^L^^").value(opt(&a.county));
}

fn xtn_phone(w: &mut SeqWriter, phone: &Phone) {
    w.run("^PRN^PH^^^").digits(&phone.0).run("^").digits(&phone.1);
}

/// XCN: id, family, given, assigning authority + id type when an id is sent, credential.
fn xcn(w: &mut SeqWriter, who: &Clinician, profile: &MessageProfile) {
    let id = opt(&who.id);
    w.value(id).run("^").value(opt(&who.family_name)).run("^").value(opt(&who.given_name));
    // A 10-digit id is an NPI (assigned by CMS); anything else is a local provider number.
    let npi = id.len() == 10 && id.bytes().all(|b| b.is_ascii_digit());
    let named = who.family_name.is_some() || who.given_name.is_some();
    if npi && named {
        // The usual clinician: XCN.4-20 as one constant.
        w.run("^^^^^^CMS^L^^^NPI^^^^^^^^");
    } else {
        w.run("^^^^^^");
        if !id.is_empty() {
            hd_sub(w, if npi { HdRef::CMS } else { (&profile.provider_id_authority).into() });
        }
        w.run("^").text(if named { "L" } else { "" }).run("^^^");
        w.text(match (id.is_empty(), npi) {
            (true, _) => "",
            (false, true) => "NPI",
            (false, false) => "PRN",
        });
        w.run("^^^^^^^^");
    }
    w.value(opt(&who.credential));
}

/// Writes the message. Each segment is written front to back with every separator (see
/// [`SeqWriter`]); the comments name the fields a run of separators skips.
fn encode(
    r: &Resolved<'_>,
    profile: &MessageProfile,
    control_id: &str,
    now: DateTime<FixedOffset>,
) -> String {
    let rec = r.rec;
    let mut w = SeqWriter::new();
    let facility_id = rec.facility.as_ref().map_or("", |f| f.id.trim_ascii());

    // MSH ---------------------------------------------------------------------------------
    let sending_facility = if profile.sending_facility.is_empty() {
        HdRef { namespace: facility_id, oid: "" }
    } else {
        (&profile.sending_facility).into()
    };
    w.msh();
    hd_comps(&mut w, (&profile.sending_application).into());
    w.run("|");
    hd_comps(&mut w, sending_facility);
    w.run("|");
    hd_comps(&mut w, (&profile.receiving_application).into());
    w.run("|");
    hd_comps(&mut w, (&profile.receiving_facility).into());
    w.run("|").digits(&ts_z(&now)).run("||VXU^V04^VXU_V04|").value(control_id);
    // MSH-11, then MSH-12, 15, 16 and 21 as one constant.
    w.run("|").text(profile.processing_id.code()).run("|2.5.1|||ER|AL|||||Z22^CDCPHINVS");
    if profile.send_responsible_organizations {
        let (org22, org23) = (&profile.sending_organization, &profile.receiving_organization);
        w.run("|").value(if org22.is_empty() { sending_facility.namespace } else { org22 });
        w.run("|");
        w.value(if org23.is_empty() { &profile.receiving_facility.namespace } else { org23 });
    }

    // PID ---------------------------------------------------------------------------------
    let p = &rec.patient;
    w.segment("PID").run("|1||").value(p.id.trim_ascii()).run("^^^");
    let authority = p.id_authority.as_deref().map_or_else(
        || (&profile.patient_id_authority).into(),
        |a| HdRef::from_value(a.trim_ascii()),
    );
    hd_sub(&mut w, authority);
    w.run("^MR||");
    // PID-5: family, given, middle, suffix, name type.
    w.value(p.family_name.trim_ascii()).run("^").value(p.given_name.trim_ascii()).run("^");
    w.value(opt(&p.middle_name)).run("^").value(opt(&p.suffix)).run("^^^L|");
    if let Some(m) = p.mother_maiden_name.as_deref().map(str::trim_ascii).filter(|m| !m.is_empty())
    {
        w.value(m).run("^^^^^^M");
    }
    w.run("|").digits(&r.birth_date).run("|").value(p.sex.trim_ascii()).run("||");
    for (i, race) in r.race.iter().enumerate() {
        if i > 0 {
            w.run("~");
        }
        coded(&mut w, race);
    }
    w.run("|");
    if let Some(a) = &p.address {
        xad(&mut w, a);
    }
    w.run("||");
    if let Some(phone) = &r.phone {
        xtn_phone(&mut w, phone);
    }
    if let Some(email) = p.email.as_deref().map(str::trim_ascii) {
        if r.phone.is_some() {
            w.run("~");
        }
        w.run("^NET^Internet^").value(email);
    }
    w.run("||");
    if let Some(l) = &r.language {
        coded(&mut w, l);
    }
    w.run("|||||||"); // PID-16 to 22
    if let Some(e) = &r.ethnicity {
        coded(&mut w, e);
    }

    // PD1 ---------------------------------------------------------------------------------
    let pd1_data = r.publicity.is_some() || p.protection.is_some() || p.registry_status.is_some();
    if profile.send_pd1 && pd1_data {
        let dated = |d: &Option<_>| d.unwrap_or(r.admin_date);
        w.segment("PD1").run("|||||||||||"); // PD1-1 to 11
        if let Some(pc) = &r.publicity {
            coded(&mut w, pc);
        }
        w.run("|");
        if let Some(pi) = p.protection.as_deref().map(str::trim_ascii) {
            w.value(pi).run("|").digits(&dated(&r.protection_date));
        } else {
            w.run("|");
        }
        w.run("|||"); // PD1-14 to 16
        if let Some(rs) = p.registry_status.as_deref().map(str::trim_ascii) {
            w.value(rs).run("|").digits(&dated(&r.registry_status_date));
        } else {
            w.run("|");
        }
        w.run("|");
        if r.publicity.is_some() {
            w.digits(&dated(&r.publicity_date));
        }
    }

    // NK1 ---------------------------------------------------------------------------------
    if let (true, Some(party), Some(rel)) =
        (profile.send_nk1, &rec.responsible_party, &r.relationship)
    {
        w.segment("NK1").run("|1|");
        w.value(party.family_name.trim_ascii()).run("^").value(party.given_name.trim_ascii());
        w.run("^").value(opt(&party.middle_name)).run("^^^^L|");
        coded(&mut w, rel);
        w.run("|");
        if let Some(a) = &party.address {
            xad(&mut w, a);
        }
        w.run("|");
        if let Some(phone) = &r.responsible_phone {
            xtn_phone(&mut w, phone);
        }
    }

    // ORC ---------------------------------------------------------------------------------
    let filler_ns = if profile.filler_namespace.is_empty() {
        profile.sending_application.namespace.as_str()
    } else {
        profile.filler_namespace.as_str()
    };
    let refused = matches!(r.kind, DoseKind::Refused(_));
    w.segment("ORC").run("|RE||");
    // IZ-45: a refusal's filler order number is 9999.
    w.value(if refused { "9999" } else { rec.vaccination_id.trim_ascii() });
    w.run("^").value(filler_ns).run("|||||||||"); // ORC-4 to 12
    if let Some(op) = &rec.ordering_provider {
        xcn(&mut w, op, profile);
    }
    w.run("|||||"); // ORC-13 to 17
    if let Some(f) = &rec.facility {
        w.value(f.id.trim_ascii()).run("^").value(opt(&f.name)).run("^HL70362");
    }

    // RXA ---------------------------------------------------------------------------------
    let new_dose = r.kind == DoseKind::Administered;
    let admin_date = &r.admin_date;
    w.segment("RXA").run("|0|1|").digits(admin_date);
    w.run("|");
    if profile.send_rxa4 {
        w.digits(admin_date);
    }
    let (primary, alternate) = match (profile.ndc, &r.ndc) {
        (NdcPlacement::Alternate, Some(ndc)) => (&r.cvx, Some(ndc)),
        (NdcPlacement::Primary, Some(ndc)) => (ndc, Some(&r.cvx)),
        _ => (&r.cvx, None),
    };
    w.run("|");
    coded(&mut w, primary);
    if let Some(alt) = alternate {
        w.run("^");
        coded(&mut w, alt);
    }
    w.run("|");
    match (&r.kind, &r.dose_ml) {
        (DoseKind::Refused(_), _) | (_, None) => {
            w.text("999").run("|");
        }
        (_, Some(ml)) => {
            w.digits(ml).run("|mL^milliliter^UCUM");
        }
    }
    w.run("||"); // RXA-8, 9
    match r.kind {
        DoseKind::Administered => {
            w.text("00^New immunization record^NIP001");
        }
        DoseKind::Historical(code) => {
            let text = super::nist::display("NIP001", code).unwrap_or("");
            w.value(code).run("^").value(text).run("^NIP001");
        }
        DoseKind::Refused(_) => {}
    }
    w.run("|");
    if let (true, Some(v)) = (new_dose, &rec.vaccinator) {
        xcn(&mut w, v, profile);
    }
    w.run("|");
    if new_dose && !facility_id.is_empty() {
        w.run("^^^").value(facility_id);
    }
    w.run("||||"); // RXA-12 to 15
    if !refused {
        w.value(opt(&rec.vaccine.lot)).run("|");
        if let Some(exp) = &r.expiration {
            w.digits(exp);
        }
        w.run("|");
        if let Some(m) = &r.mvx {
            coded(&mut w, m);
        }
    } else {
        w.run("||");
    }
    w.run("|");
    if let DoseKind::Refused(code) = r.kind {
        let text = super::nist::display("NIP002", code).unwrap_or("");
        w.value(code).run("^").value(text).run("^NIP002");
    }
    w.run(if refused { "||RE|" } else { "||CP|" }).value(r.action); // RXA-20, 21

    // RXR ---------------------------------------------------------------------------------
    if let (false, Some(route)) = (refused, r.route) {
        w.segment("RXR").run("|");
        triplet(&mut w, route.hl7);
        if profile.route_alternate {
            w.run("^");
            triplet(&mut w, route.hl7_alternate);
        }
        w.run("|");
        if let Some(site) = &r.site {
            coded(&mut w, site);
        }
    }

    // OBX groups: OBX-1 runs 1..n through the message, OBX-4 groups one observation's parts.
    if new_dose {
        let mut obx = Obx { set_id: 0, sub_id: 0, date: admin_date };
        if let (true, Some(f)) = (profile.send_funding_source, &r.funding) {
            obx.next_group();
            obx.coded(&mut w, "|CE|30963-3^Vaccine funding source^LN|", f, None);
        }
        if let Some(e) = &r.eligibility {
            obx.next_group();
            obx.coded(
                &mut w,
                "|CE|64994-7^Vaccine funding program eligibility category^LN|",
                e,
                Some("VXC40^Eligibility captured at the immunization level^CDCPHINVS"),
            );
        }
        for v in &r.vis {
            obx.next_group();
            match v {
                ResolvedVis::Barcode { document, presented } => {
                    obx.coded(&mut w, "|CE|69764-9^Document type^LN|", document, None);
                    obx.date(
                        &mut w,
                        "|DT|29769-7^Date vaccine information statement presented^LN|",
                        presented,
                    );
                }
                ResolvedVis::VaccineType { vaccine, published, presented } => {
                    obx.coded(&mut w, "|CE|30956-7^Vaccine type^LN|", vaccine, None);
                    obx.date(
                        &mut w,
                        "|DT|29768-9^Date vaccine information statement published^LN|",
                        published,
                    );
                    obx.date(
                        &mut w,
                        "|DT|29769-7^Date vaccine information statement presented^LN|",
                        presented,
                    );
                }
            }
        }
        if let (true, Some(n)) = (profile.send_dose_number, rec.dose_number) {
            obx.next_group();
            obx.head(&mut w, "|ST|30973-2^Dose number in series^LN|");
            w.number(n);
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

    /// OBX-1 to OBX-4 and the separator in front of OBX-5, the value. `observation` is OBX-2
    /// (value type) and OBX-3 (LOINC) with their separators, `|CE|30963-3^…^LN|`: one constant.
    /// Inline, so that each call site copies its constant without a `memcpy` call.
    #[inline(always)]
    fn head(&mut self, w: &mut SeqWriter, observation: &'static str) {
        self.set_id += 1;
        w.segment("OBX").run("|").number(self.set_id).run(observation).number(self.sub_id);
        w.run("|");
    }

    /// OBX-11 (result status) and OBX-14 (observation date).
    #[inline(always)]
    fn tail(&self, w: &mut SeqWriter) {
        w.run("||||||F|||").digits(self.date);
    }

    fn coded(
        &mut self,
        w: &mut SeqWriter,
        observation: &'static str,
        value: &Coded<'_>,
        method: Option<&'static str>,
    ) {
        self.head(w, observation);
        coded(w, value);
        self.tail(w);
        if let Some(m) = method {
            w.run("|||").text(m); // OBX-17
        }
    }

    /// An observation whose value is a date (value type DT).
    fn date(&mut self, w: &mut SeqWriter, observation: &'static str, value: &Date) {
        self.head(w, observation);
        w.digits(value);
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
