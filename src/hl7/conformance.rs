//! The message validator: checks any VXU, ours or another system's, against CDC IG 1.5 (Z22).
//!
//! What it checks, in order: that the text is HL7 with the IG's delimiters; MSH identity
//! (IZ-12/13/15/17/41/42/43, TS_Z); segment order and groups against the Z22 structure; for
//! every segment NIST's field usage (R present, X absent), cardinality and length, the
//! required components of each valued field's datatype, and value-set membership; date
//! formats (TS_Z, TS_NZ, DT_D, TS_M); and the IG's conformance statements and predicates that
//! involve more than one field (IZ-22/23/24/25/28–32/35–37/44–49/66/70, NIST-01). Field rules
//! come from the NIST profile tables in [`super::nist`], not from hand-typed lists.
//!
//! Severity follows the IG's processing rules: a broken R rule, a bad code in a required
//! binding or a broken conformance statement is an `error`; things the IG calls "not
//! enforceable" (lengths) or data an IIS ignores (X fields, unknown segments) are `warning`s.

use chrono::NaiveDate;
use serde::Serialize;

use super::codes;
use super::nist::{self, FieldDef, Profile, Usage};
use super::parse::{Message, Segment};

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The message breaks a rule; an IIS may reject the data.
    Error,
    /// Worth fixing; an IIS will usually accept the data.
    Warning,
    /// For information.
    Info,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Info => "info",
        })
    }
}

/// One problem found in a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// HL7 location: `RXA-5.1`, `OBX[3]-4` (third OBX), `PID`, or `line 4`.
    pub location: String,
    /// How serious.
    pub severity: Severity,
    /// The IG conformance statement broken, when there is one (`IZ-45`).
    pub rule: Option<&'static str>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.severity, self.location)?;
        if let Some(r) = self.rule {
            write!(f, " [{r}]")?;
        }
        write!(f, ": {}", self.message)
    }
}

struct Report {
    findings: Vec<Finding>,
}

impl Report {
    fn add(
        &mut self,
        location: String,
        severity: Severity,
        rule: Option<&'static str>,
        message: String,
    ) {
        self.findings.push(Finding { location, severity, rule, message });
    }
    fn error(&mut self, location: String, rule: Option<&'static str>, message: String) {
        self.add(location, Severity::Error, rule, message);
    }
    fn warn(&mut self, location: String, rule: Option<&'static str>, message: String) {
        self.add(location, Severity::Warning, rule, message);
    }
}

/// A segment with its occurrence number among segments of the same id.
struct Seg<'m, 'a> {
    s: Segment<'m, 'a>,
    nth: usize,
}

impl Seg<'_, '_> {
    fn loc(&self) -> String {
        if self.nth > 1 { format!("{}[{}]", self.s.id(), self.nth) } else { self.s.id().to_owned() }
    }
    fn at(&self, field: usize) -> String {
        format!("{}-{field}", self.loc())
    }
    fn at_c(&self, field: usize, comp: usize) -> String {
        format!("{}-{field}.{comp}", self.loc())
    }
}

/// Validates `text` as a Z22 VXU and returns every finding (empty when conformant).
pub fn validate_message(text: &str) -> Vec<Finding> {
    let mut r = Report { findings: Vec::new() };
    let msg = match Message::parse(text) {
        Ok(m) => m,
        Err(e) => {
            r.error("message".into(), None, e.to_string());
            return r.findings;
        }
    };
    let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let segs: Vec<Seg<'_, '_>> = msg
        .segments()
        .map(|s| {
            let n = counts.entry(s.id()).or_insert(0);
            *n += 1;
            Seg { s, nth: *n }
        })
        .collect();

    check_msh(&mut r, &msg);
    if !is_vxu(&msg) {
        return r.findings;
    }
    let groups = check_structure(&mut r, &segs);
    for seg in &segs {
        check_fields(&mut r, seg);
    }
    check_patient(&mut r, &segs);
    for g in &groups {
        check_order_group(&mut r, g);
    }
    r.findings
}

fn is_vxu(msg: &Message<'_>) -> bool {
    msg.msh().code(9, 1) == "VXU"
}

fn check_msh(r: &mut Report, msg: &Message<'_>) {
    let msh = msg.msh();
    let d = msg.delimiters();
    if d.field != b'|' {
        r.error("MSH-1".into(), Some("IZ-12"), "the field separator SHALL be '|'".into());
    }
    let enc = msh.field(2).as_str();
    if enc != "^~\\&" {
        r.error(
            "MSH-2".into(),
            Some("IZ-13"),
            format!("the encoding characters SHALL be '^~\\&', found {enc:?}"),
        );
    }
    let ts = msh.code(7, 1);
    if ts.is_empty() {
        r.error("MSH-7".into(), None, "Date/Time Of Message is required (R)".into());
    } else if !is_ts_z(ts) {
        r.error(
            "MSH-7".into(),
            Some("IZ-TS_Z"),
            format!(
                "{ts:?} SHALL be formatted YYYYMMDDHHMMSS[.S]+/-ZZZZ (seconds and time-zone offset)"
            ),
        );
    }
    let t = (msh.code(9, 1), msh.code(9, 2), msh.code(9, 3));
    if t.0 != "VXU" {
        r.error(
            "MSH-9".into(),
            Some("IZ-17"),
            format!("message type {:?} is not a VXU", msh.field(9).as_str()),
        );
        return;
    }
    if t != ("VXU", "V04", "VXU_V04") {
        r.error(
            "MSH-9".into(),
            Some("IZ-17"),
            format!("message type SHALL be 'VXU^V04^VXU_V04', found {:?}", msh.field(9).as_str()),
        );
    }
    if msh.code(10, 1).is_empty() {
        r.error("MSH-10".into(), None, "Message Control ID is required (R)".into());
    }
    let pid = msh.code(11, 1);
    if !matches!(pid, "P" | "T" | "D") {
        r.error(
            "MSH-11".into(),
            None,
            format!("processing id {pid:?} SHALL be P, T or D (HL70103)"),
        );
    }
    let version = msh.code(12, 1);
    if version != "2.5.1" {
        r.error(
            "MSH-12".into(),
            Some("IZ-15"),
            format!("version SHALL be '2.5.1', found {version:?}"),
        );
    }
    for (n, want, rule) in [(15, "ER", "IZ-42"), (16, "AL", "IZ-41")] {
        let got = msh.code(n, 1);
        if got != want {
            let what = if n == 15 { "Accept" } else { "Application" };
            r.error(
                format!("MSH-{n}"),
                Some(rule),
                format!("{what} Acknowledgment Type SHALL be '{want}', found {got:?}"),
            );
        }
    }
    let profile = msh.field(21).first();
    if (profile.component(1).trim(), profile.component(2).trim()) != ("Z22", "CDCPHINVS") {
        r.error(
            "MSH-21".into(),
            Some("IZ-43"),
            format!(
                "the first Message Profile Identifier SHALL be 'Z22^CDCPHINVS', found {:?}",
                profile.as_str()
            ),
        );
    }
}

/// One ORDER group: ORC, optional TQ1/TQ2, RXA, RXR, OBX/NTE.
struct OrderGroup<'g, 'm, 'a> {
    orc: &'g Seg<'m, 'a>,
    rxa: Option<&'g Seg<'m, 'a>>,
    rxr: Option<&'g Seg<'m, 'a>>,
    obx: Vec<&'g Seg<'m, 'a>>,
}

/// Rank of a segment in the part of the message before the first ORDER group.
fn header_rank(id: &str) -> Option<u8> {
    Some(match id {
        "MSH" => 0,
        "SFT" => 1,
        "PID" => 2,
        "PD1" => 3,
        "NK1" => 4,
        "PV1" => 5,
        "PV2" => 6,
        "GT1" => 7,
        "IN1" => 8,
        "IN2" => 9,
        "IN3" => 10,
        _ => return None,
    })
}

/// Rank of a segment inside an ORDER group.
fn order_rank(id: &str) -> Option<u8> {
    Some(match id {
        "ORC" => 0,
        "TQ1" => 1,
        "TQ2" => 2,
        "RXA" => 3,
        "RXR" => 4,
        "OBX" => 5,
        "NTE" => 6,
        _ => return None,
    })
}

fn check_structure<'g, 'm, 'a>(
    r: &mut Report,
    segs: &'g [Seg<'m, 'a>],
) -> Vec<OrderGroup<'g, 'm, 'a>> {
    let mut groups: Vec<OrderGroup<'g, 'm, 'a>> = Vec::new();
    let mut header = 0u8;
    let mut in_order = 0u8;
    let mut seen_pid = false;
    for seg in segs.iter().skip(1) {
        let id = seg.s.id();
        if id == "MSH" {
            r.error(seg.loc(), None, "a second MSH: one message per submission".into());
            continue;
        }
        if let Some(rank) = header_rank(id) {
            let once = matches!(id, "PID" | "PD1" | "PV1" | "PV2");
            if !groups.is_empty() || rank < header || (once && rank == header && seg.nth > 1) {
                r.error(seg.loc(), None, format!("segment sequence error: {id} is out of order (Z22 order is MSH [SFT] PID [PD1] [NK1] [PV1 [PV2]] [GT1] [IN1 [IN2] [IN3]] {{ORC [TQ1 [TQ2]] RXA [RXR] [OBX [NTE]]}})"));
                continue;
            }
            if id == "PID" {
                seen_pid = true;
            }
            header = rank;
            continue;
        }
        let Some(rank) = order_rank(id) else {
            r.warn(
                seg.loc(),
                None,
                format!("segment {id} is not part of VXU^V04 (Z22); an IIS ignores it"),
            );
            continue;
        };
        if id == "ORC" {
            groups.push(OrderGroup { orc: seg, rxa: None, rxr: None, obx: Vec::new() });
            in_order = 0;
            continue;
        }
        let Some(g) = groups.last_mut() else {
            r.error(seg.loc(), None, format!("segment sequence error: {id} outside an ORDER group (an ORDER group starts with ORC)"));
            continue;
        };
        let repeats =
            matches!(id, "OBX") || (id == "NTE" && in_order == 5) || (id == "TQ1" && in_order <= 2);
        if rank < in_order || (rank == in_order && !repeats) {
            r.error(
                seg.loc(),
                None,
                format!("segment sequence error: {id} is out of order in its ORDER group"),
            );
            continue;
        }
        if rank > 3 && g.rxa.is_none() {
            r.error(
                seg.loc(),
                None,
                format!("segment sequence error: {id} before the group's RXA"),
            );
        }
        in_order = rank;
        match id {
            "RXA" => g.rxa = Some(seg),
            "RXR" => g.rxr = Some(seg),
            "OBX" => g.obx.push(seg),
            _ => {}
        }
    }
    if !seen_pid {
        r.error("PID".into(), None, "the PID segment is required".into());
    }
    for g in &groups {
        if g.rxa.is_none() {
            r.error(
                g.orc.loc(),
                None,
                "the ORDER group has no RXA segment (RXA is required)".into(),
            );
        }
    }
    groups
}

/// Value sets whose codes are open to local / state additions: unknown codes are warnings.
const OPEN_SETS: &[&str] = &["HL70064_IZ", "HL70086_IZ", "HL70203_IZ", "HL70396_IZ"];

fn check_fields(r: &mut Report, seg: &Seg<'_, '_>) {
    let id = seg.s.id();
    let Some(def) = nist::segment_def(Profile::Z22, id) else { return };
    let first = if id == "MSH" { 3 } else { 1 };
    for (i, f) in def.fields.iter().enumerate().skip(first - 1) {
        let n = i + 1;
        let field = seg.s.field(n);
        let valued = !field.is_empty();
        match f.usage {
            Usage::R if !valued => {
                // MSH fields with dedicated checks are reported by check_msh.
                if id != "MSH" {
                    r.error(seg.at(n), None, format!("{} is required (R)", f.name));
                }
                continue;
            }
            Usage::X if valued => {
                r.warn(
                    seg.at(n),
                    None,
                    format!("{} is not supported in Z22 (X); an IIS ignores it", f.name),
                );
                continue;
            }
            _ if !valued => continue,
            _ => {}
        }
        let reps: Vec<_> = field.repetitions().collect();
        if f.max != u16::MAX && reps.len() > usize::from(f.max) {
            r.error(
                seg.at(n),
                None,
                format!("{} repeats {} times; at most {} allowed", f.name, reps.len(), f.max),
            );
        }
        for rep in &reps {
            if f.max_len > 0 && rep.as_str().chars().count() > usize::from(f.max_len) {
                r.warn(
                    seg.at(n),
                    None,
                    format!("{} is longer than {} characters", f.name, f.max_len),
                );
            }
        }
        check_components(r, seg, n, f, &reps);
        check_binding(r, seg, n, f, &reps);
    }
    // Lengths beyond the profile's last field are ignored by receivers (IG Table 3-1).
}

fn check_components(
    r: &mut Report,
    seg: &Seg<'_, '_>,
    n: usize,
    f: &FieldDef,
    reps: &[super::parse::Rep<'_, '_>],
) {
    let Some(dt) = nist::datatype_def(Profile::Z22, f.datatype) else { return };
    if dt.components.is_empty() {
        return;
    }
    for rep in reps.iter().filter(|rep| !rep.is_empty()) {
        for (ci, c) in dt.components.iter().enumerate() {
            if c.usage == Usage::R && rep.component(ci + 1).trim().is_empty() {
                r.error(
                    seg.at_c(n, ci + 1),
                    None,
                    format!(
                        "{} {} is required when {} is sent (R in {})",
                        f.name, c.name, f.name, dt.id
                    ),
                );
            }
        }
    }
}

fn check_binding(
    r: &mut Report,
    seg: &Seg<'_, '_>,
    n: usize,
    f: &FieldDef,
    reps: &[super::parse::Rep<'_, '_>],
) {
    if f.binding.is_empty() {
        return;
    }
    for rep in reps.iter().filter(|rep| !rep.is_empty()) {
        let code = rep.component(1).trim();
        if code.is_empty() {
            continue;
        }
        let system = rep.component(3).trim();
        match f.binding {
            "CVX:NDC_Use:NDC_Sale" => check_administered_code(r, seg, n, code, system),
            "MVX" => {
                if codes::mvx(code).is_none() {
                    r.error(
                        seg.at_c(n, 1),
                        None,
                        format!("{code:?} is not an MVX manufacturer code"),
                    );
                }
            }
            set => {
                let Some(vs) = nist::value_set(set) else { continue };
                // User-defined tables ship empty or with a "..." placeholder: nothing to check.
                let open_table = vs.codes.iter().all(|c| c.0 == "...");
                if open_table || nist::contains(set, code) {
                    continue;
                }
                let msg = format!("{code:?} is not in value set {set} ({})", vs.name);
                if OPEN_SETS.contains(&set) {
                    r.warn(seg.at_c(n, 1), None, msg);
                } else {
                    r.error(seg.at_c(n, 1), None, msg);
                }
            }
        }
    }
}

fn check_administered_code(r: &mut Report, seg: &Seg<'_, '_>, n: usize, code: &str, system: &str) {
    let loc = seg.at_c(n, 1);
    match system {
        "CVX" => {
            if codes::cvx(code).is_none() {
                r.error(loc, None, format!("CVX {code:?} is not a CDC vaccine code"));
            }
        }
        "NDC" => {
            if !codes::is_ndc_shape(code) {
                r.error(loc, None, format!("NDC {code:?} is not in 11-digit 5-4-2 form"));
            } else if codes::ndc(code).is_none() {
                r.warn(
                    loc,
                    None,
                    format!("NDC {code:?} is not in the CDC NDC tables known to izrelay"),
                );
            }
        }
        "" => {
            r.error(seg.at_c(n, 3), None, "Name of Coding System is required (CVX or NDC)".into())
        }
        other => {
            r.error(seg.at_c(n, 3), None, format!("coding system {other:?} is not CVX or NDC"))
        }
    }
}

/// TS_Z: `YYYYMMDDHHMMSS[.S…]±ZZZZ`.
fn is_ts_z(ts: &str) -> bool {
    let b = ts.as_bytes();
    if b.len() < 19 || !b[..14].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let tz = &ts[ts.len() - 5..];
    let tz_ok =
        (tz.starts_with('+') || tz.starts_with('-')) && tz[1..].bytes().all(|c| c.is_ascii_digit());
    let mid = &ts[14..ts.len() - 5];
    let mid_ok = mid.is_empty()
        || (mid.starts_with('.') && mid.len() > 1 && mid[1..].bytes().all(|c| c.is_ascii_digit()));
    tz_ok && mid_ok && valid_datetime(&ts[..14])
}

/// TS_NZ / DT_D: `YYYYMMDD[HH[MM[SS[.S…]]]]` without an offset; returns the date when valid.
fn ts_nz(ts: &str) -> Option<NaiveDate> {
    let (main, frac) = ts.split_once('.').unwrap_or((ts, ""));
    if !matches!(main.len(), 8 | 10 | 12 | 14) || !main.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|c| c.is_ascii_digit())
        || (ts.contains('.') && (main.len() != 14 || frac.is_empty()))
    {
        return None;
    }
    let padded = format!("{main:0<14}");
    valid_datetime(&padded).then(|| NaiveDate::parse_from_str(&main[..8], "%Y%m%d").ok()).flatten()
}

fn valid_datetime(s14: &str) -> bool {
    chrono::NaiveDateTime::parse_from_str(s14, "%Y%m%d%H%M%S").is_ok()
}

fn check_date(r: &mut Report, loc: String, value: &str, kind: &'static str) {
    if value.is_empty() {
        return;
    }
    let ok = match kind {
        "TS_M" => {
            (value.len() == 6 && NaiveDate::parse_from_str(&format!("{value}01"), "%Y%m%d").is_ok())
                || (value.len() == 8 && ts_nz(value).is_some())
        }
        _ => ts_nz(value).is_some(),
    };
    if !ok {
        let want = match kind {
            "TS_M" => "YYYYMM or YYYYMMDD",
            "DT_D" => "YYYYMMDD",
            _ => "YYYYMMDD (no time-zone offset)",
        };
        r.error(
            loc,
            Some(if kind == "TS_NZ" { "IZ-TS_NZ" } else { "IZ-DT_D" }),
            format!("{value:?} SHALL be formatted {want}"),
        );
    }
}

fn check_patient(r: &mut Report, segs: &[Seg<'_, '_>]) {
    for seg in segs {
        let s = &seg.s;
        match s.id() {
            "PID" if seg.nth == 1 => {
                if s.code(1, 1) != "1" && !s.code(1, 1).is_empty() {
                    r.error(
                        seg.at(1),
                        Some("IZ-46"),
                        format!("Set ID SHALL be '1', found {:?}", s.code(1, 1)),
                    );
                }
                check_date(r, seg.at(7), s.code(7, 1), "TS_NZ");
                if !s.code(6, 7).is_empty() && s.code(6, 7) != "M" {
                    r.error(
                        seg.at_c(6, 7),
                        Some("IZ-66"),
                        "Mother's Maiden Name type SHALL be 'M'".into(),
                    );
                }
            }
            "PD1" => {
                for n in [13, 17, 18] {
                    check_date(r, seg.at(n), s.code(n, 1), "DT_D");
                }
                for (value, date, what) in [
                    (12, 13, "Protection Indicator"),
                    (16, 17, "Registry Status"),
                    (11, 18, "Publicity Code"),
                ] {
                    if s.field(value).is_empty() && !s.field(date).is_empty() {
                        r.error(
                            seg.at(date),
                            None,
                            format!(
                                "an effective date without a {what} (X when PD1-{value} is empty)"
                            ),
                        );
                    }
                }
            }
            "NK1" => {
                let want = seg.nth.to_string();
                if s.code(1, 1) != want {
                    r.error(
                        seg.at(1),
                        Some("IZ-70"),
                        format!(
                            "Set ID SHALL be sequential from 1: expected {want}, found {:?}",
                            s.code(1, 1)
                        ),
                    );
                }
            }
            _ => {}
        }
    }
}

/// True when `rxa` is a new administration: RXA-20 CP/PA and RXA-9.1 `00`.
fn is_new_administration(rxa: &Segment<'_, '_>) -> bool {
    matches!(rxa.code(20, 1), "CP" | "PA") && rxa.code(9, 1) == "00"
}

/// The CVX of RXA-5 (primary or alternate triplet).
fn rxa_cvx<'a>(rxa: &Segment<'_, 'a>) -> Option<&'a str> {
    if rxa.code(5, 3) == "CVX" {
        Some(rxa.code(5, 1))
    } else if rxa.code(5, 6) == "CVX" {
        Some(rxa.code(5, 4))
    } else if rxa.code(5, 3) == "NDC" {
        codes::ndc(rxa.code(5, 1)).map(|e| e.cvx)
    } else {
        None
    }
}

fn check_order_group(r: &mut Report, g: &OrderGroup<'_, '_, '_>) {
    let orc = &g.orc.s;
    if orc.code(1, 1) != "RE" {
        r.error(
            g.orc.at(1),
            Some("IZ-25"),
            format!("Order Control SHALL be 'RE', found {:?}", orc.code(1, 1)),
        );
    }
    let Some(rxa_seg) = g.rxa else { return };
    let rxa = &rxa_seg.s;
    let at = |n| rxa_seg.at(n);
    if rxa.code(1, 1) != "0" {
        r.error(
            at(1),
            Some("IZ-28"),
            format!("Give Sub-ID Counter SHALL be '0', found {:?}", rxa.code(1, 1)),
        );
    }
    if rxa.code(2, 1) != "1" {
        r.error(
            at(2),
            Some("IZ-29"),
            format!("Administration Sub-ID Counter SHALL be '1', found {:?}", rxa.code(2, 1)),
        );
    }
    let start = rxa.code(3, 1);
    check_date(r, at(3), start, "TS_NZ");
    let end = rxa.code(4, 1);
    if !end.is_empty() && end != start {
        r.error(at(4), Some("IZ-30"), format!("RXA-4 {end:?} SHALL equal RXA-3 {start:?}"));
    }
    check_date(r, at(16), rxa.code(16, 1), "TS_M");
    let code5 = rxa.code(5, 1);
    let amount = rxa.code(6, 1);
    let status = rxa.code(20, 1);
    if !amount.is_empty() && amount.parse::<f64>().map_or(true, |v| !v.is_finite() || v < 0.0) {
        r.error(at(6), None, format!("Administered Amount {amount:?} is not a number"));
    }
    if code5 == "998" && amount != "999" {
        r.error(
            at(6),
            Some("IZ-49"),
            "when RXA-5 is 998 (no vaccine administered) RXA-6 SHALL be '999'".into(),
        );
    }
    if status == "RE" && amount != "999" {
        r.error(at(6), Some("IZ-48"), "for a refusal (RXA-20 RE) RXA-6 SHALL be '999'".into());
    }
    let units = !rxa.field(7).is_empty();
    if amount != "999" && !amount.is_empty() && !units {
        r.error(at(7), None, "Administered Units are required when RXA-6 is not 999".into());
    }
    if amount == "999" && units {
        r.warn(at(7), None, "Administered Units are not supported when RXA-6 is 999 (X)".into());
    }
    let completed = matches!(status, "CP" | "PA");
    let note = rxa.code(9, 1);
    if completed {
        if note.is_empty() {
            r.error(
                at(9),
                None,
                "Administration Notes (NIP001 source) are required when RXA-20 is CP or PA".into(),
            );
        } else if !nist::contains("NIP001", note) {
            r.error(
                rxa_seg.at_c(9, 1),
                Some("IZ-31"),
                format!("{note:?} SHALL be a NIP001 information source code"),
            );
        }
    } else if !note.is_empty() {
        r.error(
            rxa_seg.at_c(9, 1),
            Some("IZ-47"),
            "RXA-9.1 SHALL NOT be valued when RXA-20 is not CP or PA".into(),
        );
    }
    if !rxa.field(18).is_empty() && status != "RE" {
        r.error(at(20), Some("IZ-32"), "a refusal reason (RXA-18) requires RXA-20 'RE'".into());
    }
    if status == "RE" && rxa.field(18).is_empty() {
        r.error(at(18), None, "a refusal (RXA-20 RE) requires a refusal reason (RXA-18)".into());
    }
    if code5 != "998" && rxa.field(21).is_empty() {
        r.error(at(21), None, "Action Code is required unless RXA-5 is 998".into());
    }
    if matches!(status, "NA" | "RE") && orc.code(3, 1) != "9999" {
        r.error(
            g.orc.at_c(3, 1),
            Some("IZ-45"),
            format!("when RXA-20 is {status} ORC-3.1 SHALL be '9999'"),
        );
    }
    let new_admin = is_new_administration(rxa);
    if new_admin {
        if rxa.field(15).is_empty() {
            r.error(
                at(15),
                None,
                "Substance Lot Number is required for a new administration (RXA-9 00)".into(),
            );
        }
        if rxa.field(17).is_empty() {
            r.error(
                at(17),
                None,
                "Substance Manufacturer Name is required for a new administration (RXA-9 00)"
                    .into(),
            );
        }
        if rxa.field(10).is_empty() {
            r.warn(
                at(10),
                None,
                "Administering Provider is RE for a new administration and is empty".into(),
            );
        }
        if rxa.field(11).is_empty() {
            r.warn(
                at(11),
                None,
                "Administered-at Location is RE for a new administration and is empty".into(),
            );
        }
    }
    if let Some(rxr) = g.rxr
        && rxr.s.field(1).is_empty()
    {
        r.error(rxr.at(1), None, "Route is required when RXR is sent".into());
    }
    check_obx(r, g, new_admin, rxa_cvx(rxa));
}

fn check_obx(r: &mut Report, g: &OrderGroup<'_, '_, '_>, new_admin: bool, cvx: Option<&str>) {
    let mut eligibility = false;
    // OBX-4 sub-id → the observation ids (OBX-3.1) sharing it.
    let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
    let mut sequential = true;
    for (i, seg) in g.obx.iter().enumerate() {
        let s = &seg.s;
        let set_id = s.code(1, 1);
        if set_id.parse::<usize>().ok() != Some(i + 1) {
            sequential = false;
        }
        let obs = s.code(3, 1);
        let value_type = s.code(2, 1);
        let sub = s.code(4, 1);
        if !sub.is_empty() && sub.parse::<u32>().map_or(true, |v| v == 0) {
            r.error(
                seg.at(4),
                Some("IZ-44"),
                format!("Observation Sub-ID {sub:?} SHALL be a positive integer"),
            );
        }
        let result_status = s.code(11, 1);
        if !result_status.is_empty() && result_status != "F" {
            r.error(
                seg.at(11),
                Some("IZ-22"),
                format!("Observation Result Status SHALL be 'F', found {result_status:?}"),
            );
        }
        check_date(r, seg.at(14), s.code(14, 1), "TS_NZ");
        if value_type == "NM" && s.field(6).is_empty() {
            r.error(seg.at(6), None, "Units are required when OBX-2 is NM".into());
        }
        let value = s.code(5, 1);
        if value_type == "CE" {
            let (set, rule, what) = match obs {
                "64994-7" => ("HL70064_IZ", "IZ-35", "a VFC eligibility code (HL70064)"),
                "69764-9" => ("PHVS_VISBarcodes_IIS", "IZ-36", "a VIS barcode string"),
                "30956-7" => ("CVX", "IZ-37", "a CVX vaccine type"),
                _ => ("", "", ""),
            };
            let known = match set {
                "" => true,
                "CVX" => codes::cvx(value).is_some(),
                "PHVS_VISBarcodes_IIS" => codes::vis(value).is_some(),
                _ => nist::contains(set, value),
            };
            if !known {
                // State and local eligibility codes and new VIS editions are common: warn.
                r.warn(
                    seg.at_c(5, 1),
                    Some(rule),
                    format!("{value:?} is not {what} known to izrelay"),
                );
            }
        }
        if obs == "64994-7" {
            eligibility = true;
        }
        match groups.iter_mut().find(|(k, _)| k == sub) {
            Some((_, v)) => v.push(obs),
            None => groups.push((sub.to_owned(), vec![obs])),
        }
    }
    if !sequential {
        // NIST-01 allows numbering per group or across the message; check across the message.
        let across = g.obx.iter().all(|s| s.s.code(1, 1).parse::<usize>().ok() == Some(s.nth));
        if !across {
            r.error(
                g.obx.first().map_or_else(|| g.orc.loc(), |s| s.at(1)),
                Some("NIST-01"),
                "OBX Set IDs SHALL be sequential from 1 within the message or the group".into(),
            );
        }
    }
    let Some(rxa) = g.rxa else { return };
    if new_admin && !eligibility {
        r.error(
            rxa.loc(),
            Some("IZ-23"),
            "a new administration SHALL have an OBX 64994-7 (VFC eligibility)".into(),
        );
    }
    if !new_admin {
        return;
    }
    let needs_vis = cvx.is_some_and(codes::needs_vis);
    let mut vis_groups = 0;
    for (sub, obs) in &groups {
        let has = |id: &str| obs.contains(&id);
        let barcode = has("69764-9");
        let by_type = has("30956-7") || has("29768-9");
        if !(barcode || by_type || has("29769-7")) {
            continue;
        }
        vis_groups += 1;
        let complete =
            (barcode && has("29769-7")) || (has("30956-7") && has("29768-9") && has("29769-7"));
        if !complete && needs_vis {
            r.error(
                format!("{} OBX-4 {sub}", rxa.loc()),
                Some("IZ-24"),
                "a VIS needs 69764-9 + 29769-7, or 30956-7 + 29768-9 + 29769-7, sharing one OBX-4"
                    .into(),
            );
        }
    }
    if needs_vis && vis_groups == 0 {
        r.warn(
            rxa.loc(),
            Some("IZ-24"),
            "no VIS is documented for a vaccine that requires one".into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_formats() {
        assert!(is_ts_z("20201228084727.655-0500"));
        assert!(is_ts_z("20261124120000+0000"));
        assert!(!is_ts_z("201201130000-0500"));
        assert!(!is_ts_z("20261124120000"));
        assert!(!is_ts_z("20261324120000-0500"));
        assert!(ts_nz("20110411").is_some());
        assert!(ts_nz("201104111230").is_some());
        assert!(ts_nz("20110411-0500").is_none());
        assert!(ts_nz("20110231").is_none());
        assert!(ts_nz("2011041").is_none());
    }

    #[test]
    fn flags_broken_conformance_statements() {
        let msg = "MSH|^~\\&|A|B|C|D|20260101120000-0500||VXU^V04^VXU_V04|X|P|2.5.1|||AL|ER|||||Z22^CDCPHINVS\r\
PID|2||1^^^A^MR||Doe^Jo^^^^^L||20000101|F\r\
ORC|RE||v1^A\r\
RXA|0|1|20260101||208^COVID^CVX|999|||00^New^NIP001|||||||||||RE|A\r";
        let f = validate_message(msg);
        let rules: Vec<_> = f.iter().filter_map(|f| f.rule).collect();
        for want in ["IZ-41", "IZ-42", "IZ-46", "IZ-45", "IZ-47"] {
            assert!(rules.contains(&want), "{want} missing from {f:#?}");
        }
        assert!(f.iter().any(|f| f.location == "RXA-18"), "{f:#?}");
    }
}
