//! `izrelay demo`: the embedded default, the whole cycle on built-in records with no setup.
//!
//! **What is seeded** ([`SAMPLES`], written by `tools/gen_demo_samples.py`, which checks every
//! code against the crate's CDC tables): 50 vaccination records of three providers (a family
//! clinic `PRV-001`, a pharmacy `PRV-002`, a pediatric practice `PRV-003`) for 23 patients,
//! most of whom have two to four doses, so the forwarder's first-in-first-out per patient
//! is exercised:
//! - COVID-19 vaccines of the 2025–2026 formulas by CVX and NDC: Comirnaty (309, and 310 for
//!   ages 5–11), Spikevax (312, and 311 for children), mNEXSPIKE (334), Nuvaxovid (313);
//! - trivalent influenza vaccines: Fluzone, Fluzone High-Dose, Fluad, Flublok, Flucelvax,
//!   FluMist (nasal, no site);
//! - pediatric doses (hepatitis B birth dose, nirsevimab, Vaxelis, Prevnar 20, Rotarix
//!   (oral), Kinrix, ProQuad, Havrix, Varivax) and adolescent and adult ones (Gardasil 9,
//!   MenQuadfi, Boostrix, Adacel, Abrysvo, Arexvy, Shingrix, Capvaxive, Heplisav-B);
//! - two refusals (RXA-20 `RE`) and three historical doses (RXA-9 `02`, `03`, `05`);
//! - names that need escaping or care: `Smith|Jones^&~\`, O'Brien, D'Souza, N'Diaye,
//!   `Chiamaka & Obinna`, José, and a facility `Harbor & Main Pharmacy`;
//! - exactly one record that cannot be sent, [`INVALID_SAMPLE`], wrong in eleven fields.
//!
//! Every other record becomes a VXU with no validator error (the unit tests below check it).
//!
//! **The cycle**: the records are rows of a simulated Dataverse Web API on loopback; the pull
//! puts them into a real SQLite store (a temporary directory unless `--data-dir` is given)
//! and generates VXU messages; every message goes through the Z22 validator; the forwarder
//! sends them over loopback HTTPS to the simulated IIS (`sim::iis`, a TLS server on 127.0.0.1
//! with a generated certificate, validating like a real one), which is down for its first
//! moments so the retries show; the outcomes are written back to Dataverse; the demo ends
//! with the audit staff would run: counts by state per provider, one record's history with
//! its attempts and ACK, the invalid record's reasons. [`run`] reports whether everything
//! behaved as expected ([`Summary::as_expected`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;

pub mod dataverse;

use chrono::{DateTime, FixedOffset};

use crate::hl7::{self, Message, MessageProfile, ProcessingId, Severity};
use crate::sim::iis::Delivery;
use crate::store::audit::{LogFilter, LogRow};
use crate::store::outbox::Status;
use crate::store::{Store, format_ms};

/// The sample records, as a clinic's feed would send them.
pub const SAMPLES: &str = include_str!("samples.json");

/// The one sample that is invalid on purpose.
pub const INVALID_SAMPLE: &str = "deadbeef-0000-4000-8000-000000000001";

/// The sample whose history the demo prints (an adult's COVID-19 dose, by CVX and NDC).
pub const SHOWN_SAMPLE: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

/// The samples whose VXU the demo prints in full (unless `--brief`): [`SHOWN_SAMPLE`] and a
/// name full of HL7 delimiters, to show the escaping.
pub const PRINTED_SAMPLES: [&str; 2] = [SHOWN_SAMPLE, "9e8d7c6b-5a49-4382-a716-151413121110"];

/// At most this many rows are read back per audit query (far more than the samples).
const AUDIT_LIMIT: usize = 10_000;

/// What the demo saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Records read.
    pub records: usize,
    /// Messages queued.
    pub queued: usize,
    /// Records that could not become a VXU.
    pub invalid: Vec<String>,
    /// Queued messages the validator found an error in (must be none).
    pub messages_with_errors: usize,
    /// Messages the simulated IIS accepted.
    pub accepted: u64,
    /// Attempts that failed during the simulated outage and were retried.
    pub retried: u64,
    /// Patients with two or more messages for one IIS.
    pub patients_with_several: usize,
    /// Of those, patients whose later message reached the IIS before an earlier one was
    /// answered (must be none).
    pub out_of_order: usize,
    /// Outcomes written back to the simulated Dataverse.
    pub synced: u64,
}

impl Summary {
    /// True when exactly the intended sample is invalid, every message validates, every one
    /// was accepted after the outage in order per patient, and every outcome was written back.
    pub fn as_expected(&self) -> bool {
        self.invalid == [INVALID_SAMPLE]
            && self.messages_with_errors == 0
            && self.queued + 1 == self.records
            && self.accepted == self.queued as u64
            && self.retried > 0
            && self.patients_with_several > 0
            && self.out_of_order == 0
            && self.synced == self.accepted
    }
}

/// The message settings the demo uses (a training IIS).
pub fn profile() -> MessageProfile {
    MessageProfile {
        processing_id: ProcessingId::Training,
        receiving_application: hl7::Hd::named("DEMO-IIS"),
        receiving_facility: hl7::Hd::named("DEMO-IIS"),
        ..MessageProfile::default()
    }
}

fn io(e: crate::store::Error) -> std::io::Error {
    std::io::Error::other(e)
}

fn other(e: &dyn std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// The distinct values of a string field (`/provider_id`, `/patient/id`) of `records`.
fn distinct<'a>(records: &'a [serde_json::Value], pointer: &str) -> BTreeSet<&'a str> {
    records.iter().filter_map(|r| r.pointer(pointer).and_then(serde_json::Value::as_str)).collect()
}

/// Runs the demo against `store`, writing a human-readable report to `out`; with
/// `show_messages` the VXUs of [`PRINTED_SAMPLES`] are printed segment by segment.
///
/// # Errors
/// I/O errors on `out`, database errors, or a broken embedded sample file.
pub fn run(
    out: &mut dyn Write,
    store: &mut Store,
    now: DateTime<FixedOffset>,
    show_messages: bool,
) -> std::io::Result<Summary> {
    let records: Vec<serde_json::Value> =
        serde_json::from_str(SAMPLES).map_err(std::io::Error::other)?;
    let providers = distinct(&records, "/provider_id");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    writeln!(
        out,
        "izrelay demo: {} sample records ({} providers, {} patients) in a simulated Dataverse \
         → SQLite outbox {}\n",
        records.len(),
        providers.len(),
        distinct(&records, "/patient/id").len(),
        store.path().display()
    )?;

    writeln!(
        out,
        "== 1. pull from Dataverse (simulated Web API on loopback), generate CDC VXU^V04 (Z22)"
    )?;
    let dv = rt.block_on(dataverse::start(&records)).map_err(|e| other(&e))?;
    writeln!(out, "   Dataverse at {} (OAuth client credentials, change tracking)", dv.sim.url)?;
    let pulled = rt
        .block_on(crate::pull::dataverse::pull::pull(
            &dv.client,
            &dv.config.vaccination,
            store,
            &crate::hl7::Profiles::single(profile()),
            now,
        ))
        .map_err(|e| other(&e))?;
    let counts = &pulled.intake;
    writeln!(
        out,
        "   {} rows ({} pull): {} queued, {} invalid",
        pulled.rows, pulled.mode, counts.queued, counts.invalid
    )?;

    writeln!(out, "\n== 2. every queued message through the Z22 validator")?;
    let mut summary = Summary { records: records.len(), ..Summary::default() };
    validate(out, store, show_messages, &mut summary)?;

    writeln!(
        out,
        "\n== 3. forward over HTTPS to the simulated IIS (down for its first {OUTAGE_MS} ms)"
    )?;
    forward(out, store, &rt, &providers, &mut summary)?;

    writeln!(out, "\n== 4. sync the outcomes back to Dataverse")?;
    let synced = rt
        .block_on(crate::sync::sync_once(&dv.client, &dv.config, store))
        .map_err(|e| other(&e))?;
    summary.synced = synced.synced;
    let cleared = dv
        .sim
        .rows(dataverse::SET)
        .iter()
        .filter(|r| r.get("izr_hl7status").and_then(serde_json::Value::as_str) == Some("accepted"))
        .count();
    writeln!(
        out,
        "   {} outcome(s) written to {} ({} records there), {} vaccination row(s) now show HL7 status accepted",
        synced.synced,
        dataverse::LOG_SET,
        dv.sim.rows(dataverse::LOG_SET).len(),
        cleared
    )?;
    rt.block_on(dv.sim.stop());

    writeln!(
        out,
        "\n== 5. audit (what `izrelay status`, `izrelay history ID` and `izrelay log --status invalid` show)"
    )?;
    audit(out, store, &mut summary)?;
    let verdict = if summary.as_expected() { "as expected" } else { "NOT as expected" };
    writeln!(
        out,
        "\n   records {}  queued {}  accepted {}  retried attempts {}  synced {}  invalid {}  result: {verdict}",
        summary.records,
        summary.queued,
        summary.accepted,
        summary.retried,
        summary.synced,
        summary.invalid.len()
    )?;
    Ok(summary)
}

/// What a message reports: a dose given here, a refusal or a historical dose (from its RXA).
fn kind(msg: &Message<'_>) -> &'static str {
    let Some(rxa) = msg.segment("RXA") else { return "without RXA" };
    if rxa.code(20, 1) == "RE" {
        "refusals (RXA-20 RE)"
    } else if !matches!(rxa.code(9, 1), "" | "00") {
        "historical (RXA-9 01-08)"
    } else {
        "given here"
    }
}

/// Step 2: checks every queued message, prints a summary (and [`PRINTED_SAMPLES`] in full).
fn validate(
    out: &mut dyn Write,
    store: &Store,
    show_messages: bool,
    summary: &mut Summary,
) -> std::io::Result<()> {
    let queued = store
        .log(&LogFilter { status: Some(Status::Queued), limit: AUDIT_LIMIT, ..Default::default() })
        .map_err(io)?;
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    // Finding text → how many messages have it.
    let mut warnings: BTreeMap<String, usize> = BTreeMap::new();
    let (mut warned, mut printed) = (0, Vec::new());
    for row in queued.iter().rev() {
        summary.queued += 1;
        let msg = store.show(row.id).map_err(io)?.message.unwrap_or_default();
        let findings = hl7::validate_message(&msg);
        let errors = findings.iter().filter(|f| f.severity == Severity::Error).count();
        if errors > 0 {
            summary.messages_with_errors += 1;
        }
        if findings.len() > errors {
            warned += 1;
        }
        for f in &findings {
            if f.severity == Severity::Error {
                // Errors are what the demo must never have: name the message.
                writeln!(out, "   log {} record {}: {f}", row.id, row.vaccination_id)?;
            } else {
                *warnings.entry(f.to_string()).or_default() += 1;
            }
        }
        let parsed = Message::parse(&msg).map_err(|e| other(&e))?;
        *kinds.entry(kind(&parsed)).or_default() += 1;
        if show_messages && PRINTED_SAMPLES.contains(&row.vaccination_id.as_str()) {
            printed.push((row, msg, findings, errors));
        }
    }
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    writeln!(out, "   {} messages: {}", summary.queued, kinds.join(", "))?;
    writeln!(
        out,
        "   {} with errors, {warned} with warnings{}",
        summary.messages_with_errors,
        if warnings.is_empty() { "" } else { ":" }
    )?;
    for (text, n) in &warnings {
        writeln!(out, "     {n} × {text}")?;
    }
    if printed.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "   {} of them in full (`--brief` leaves them out; `izrelay --data-dir DIR show LOG-ID` prints any):",
        printed.len()
    )?;
    for (row, msg, findings, errors) in printed {
        writeln!(
            out,
            "   log {}  record {}  MSH-10 {}  {} segments, {} bytes, {} errors, {} warnings",
            row.id,
            row.vaccination_id,
            row.control_id.as_deref().unwrap_or("-"),
            msg.matches('\r').count(),
            msg.len(),
            errors,
            findings.len() - errors
        )?;
        for seg in msg.split('\r').filter(|s| !s.is_empty()) {
            writeln!(out, "      {seg}")?;
        }
    }
    Ok(())
}

/// Step 5: counts by state per provider, [`SHOWN_SAMPLE`]'s history, the invalid records.
fn audit(out: &mut dyn Write, store: &Store, summary: &mut Summary) -> std::io::Result<()> {
    for p in store.status().map_err(io)? {
        // The order and wording of `izrelay status`.
        let counts: Vec<String> = Status::ALL
            .iter()
            .filter_map(|s| p.counts.get(s.as_str()).map(|n| format!("{s} {n}")))
            .collect();
        writeln!(out, "   provider {}: {}", p.provider_id, counts.join(", "))?;
    }
    let history = store.history(SHOWN_SAMPLE).map_err(io)?;
    writeln!(
        out,
        "   history of {}: {} message(s), {} replay(s)",
        history.vaccination_id,
        history.messages.len(),
        history.replays
    )?;
    for (row, attempts) in &history.messages {
        writeln!(
            out,
            "     log {}  {}  {}  MSH-10 {}  ACK {}",
            row.id,
            format_ms(row.created_at),
            row.status,
            row.control_id.as_deref().unwrap_or("-"),
            row.ack_code.as_deref().unwrap_or("-")
        )?;
        for a in attempts {
            writeln!(
                out,
                "       attempt {}  {}  {}{}",
                format_ms(a.started_at),
                a.outcome,
                a.http_status.map(|s| format!("HTTP {s}")).unwrap_or_default(),
                a.error.as_deref().map(|e| format!("  {e}")).unwrap_or_default()
            )?;
        }
        let ack = store.show(row.id).map_err(io)?.ack;
        if let Some(ack) = ack.as_deref().and_then(|a| hl7::parse_ack(a, None).ok()) {
            let outcome = match ack.outcome {
                hl7::Outcome::Accepted => "accepted",
                hl7::Outcome::AcceptedWithWarnings => "accepted with warnings",
                hl7::Outcome::Rejected => "rejected",
                hl7::Outcome::Retryable => "not stored, to be sent again",
            };
            writeln!(out, "       ACK {:?}: {outcome}", ack.code)?;
            for e in &ack.errors {
                let severity = match e.severity {
                    Some(hl7::ErrorSeverity::Warning) => "warning",
                    Some(hl7::ErrorSeverity::Information) => "information",
                    Some(hl7::ErrorSeverity::Error) | None => "error",
                };
                writeln!(
                    out,
                    "         {severity} at {}: {}",
                    e.location.as_deref().unwrap_or("-"),
                    e.message.as_deref().unwrap_or("-")
                )?;
            }
        }
    }
    let invalid = store
        .log(&LogFilter { status: Some(Status::Invalid), limit: AUDIT_LIMIT, ..Default::default() })
        .map_err(io)?;
    for row in &invalid {
        summary.invalid.push(row.vaccination_id.clone());
        writeln!(out, "   record {} is invalid:", row.vaccination_id)?;
        for line in row.reason_lines() {
            writeln!(out, "     - {line}")?;
        }
    }
    Ok(())
}

/// How long the simulated IIS is down at the start of the forward step.
pub const OUTAGE_MS: u64 = 1_200;

/// Starts the simulated IIS over TLS with an account for each of `providers`, imports their
/// credentials, drains the outbox to it, and checks the order per patient.
fn forward(
    out: &mut dyn Write,
    store: &mut Store,
    rt: &tokio::runtime::Runtime,
    providers: &BTreeSet<&str>,
    summary: &mut Summary,
) -> std::io::Result<()> {
    use crate::config::vault::{Key, read_settings};
    use crate::forwarder::{DrainOptions, ForwardConfig, ForwardSettings, drain};
    use crate::sim::iis::{self, Account, Fault, Scheduled};
    use crate::sim::tls::Identity;

    let dir = store.path().parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    let identity = Identity::self_signed().map_err(|e| other(&e))?;
    let ca = dir.join("demo-iis-ca.pem");
    std::fs::write(&ca, &identity.cert_pem)?;
    let accounts = providers
        .iter()
        .map(|p| Account {
            user: format!("demo-{p}"),
            password: format!("demo-password-{p}"),
            facility: Some(format!("FAC-{p}")),
        })
        .collect();
    let config = iis::Config {
        accounts,
        tls: Some(identity),
        schedule: vec![Scheduled { from_ms: 0, until_ms: OUTAGE_MS, fault: Fault::Http503 }],
        ..iis::Config::default()
    };
    let sim = rt.block_on(iis::start(([127, 0, 0, 1], 0).into(), config)).map_err(|e| other(&e))?;
    writeln!(out, "   simulated IIS at {} (certificate {})", sim.url, ca.display())?;
    let mut xml = String::from("<Settings>");
    for p in providers {
        xml.push_str(&format!(
            "<setting providerId=\"{p}\"><value name=\"userName\">demo-{p}</value>\
             <value name=\"password\">demo-password-{p}</value>\
             <value name=\"iisEndpoint\">{}</value><value name=\"facilityId\">FAC-{p}</value></setting>",
            sim.url
        ));
    }
    xml.push_str("</Settings>");
    let key = Key::generate().map_err(|e| other(&e))?;
    let settings = read_settings(&xml).map_err(|e| other(&e))?;
    store.import_credentials(&settings, &key, &[]).map_err(io)?;
    let forward = ForwardConfig {
        default: ForwardSettings {
            ca_file: Some(ca),
            retry_base_ms: 200,
            retry_max_ms: 600,
            circuit_failures: 0,
            ..ForwardSettings::default()
        },
        ..ForwardConfig::default()
    };
    // The drain takes the store and gives it back.
    let taken = Store::open(store.path()).map_err(io)?;
    let options = DrainOptions { once: true, ..DrainOptions::default() };
    let result = rt.block_on(async {
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        drain(taken, &key, &forward, &options, None, stopped).await
    });
    let deliveries = sim.deliveries();
    rt.block_on(sim.stop());
    let (_, report) = result.map_err(|e| other(&e))?;
    for p in &report.providers {
        writeln!(
            out,
            "   {}: {} accepted ({} with warnings), {} rejected, {} retried",
            p.provider_id, p.accepted, p.warnings, p.rejected, p.retried
        )?;
        summary.accepted += p.accepted;
        summary.retried += p.retried;
    }
    writeln!(
        out,
        "   the IIS saw {} calls: {} during the outage (HTTP 503, retried with backoff)",
        deliveries.len(),
        deliveries.iter().filter(|d| d.fault.is_some()).count()
    )?;
    let rows = store.log(&LogFilter { limit: AUDIT_LIMIT, ..Default::default() }).map_err(io)?;
    let (several, out_of_order) = order_per_patient(&rows, &deliveries);
    summary.patients_with_several = several;
    summary.out_of_order = out_of_order;
    writeln!(
        out,
        "   first in, first out per patient: {several} patients with 2 or more messages, \
         {out_of_order} sent out of order (a dose goes only once the one before is answered)"
    )?;
    Ok(())
}

/// Patients with two or more sent messages for one IIS, and how many of them had a message
/// delivered (any attempt) before the IIS had answered every attempt of an earlier one.
fn order_per_patient(rows: &[LogRow], deliveries: &[Delivery]) -> (usize, usize) {
    // MSH-10 → (first, last) arrival at the IIS; MSH-10 stays the same across retries.
    let mut span: HashMap<&str, (u64, u64)> = HashMap::new();
    for d in deliveries {
        if let Some(c) = d.control_id.as_deref() {
            let s = span.entry(c).or_insert((d.seq, d.seq));
            s.0 = s.0.min(d.seq);
            s.1 = s.1.max(d.seq);
        }
    }
    let mut by_patient: BTreeMap<(Option<&str>, &str), Vec<&LogRow>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.status != Status::Invalid) {
        by_patient.entry((r.provider_id.as_deref(), &r.patient_id)).or_default().push(r);
    }
    let (mut several, mut out_of_order) = (0, 0);
    for messages in by_patient.values_mut().filter(|m| m.len() > 1) {
        several += 1;
        messages.sort_by_key(|r| r.id);
        let spans: Vec<Option<&(u64, u64)>> =
            messages.iter().map(|r| r.control_id.as_deref().and_then(|c| span.get(c))).collect();
        let in_order = spans.windows(2).all(|w| match (w[0], w[1]) {
            (Some(a), Some(b)) => a.1 < b.0,
            _ => false,
        });
        if !in_order {
            out_of_order += 1;
        }
    }
    (several, out_of_order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;

    /// The day the samples are checked against (after the last administration date).
    fn today() -> chrono::NaiveDate {
        chrono::NaiveDate::from_ymd_opt(2026, 11, 24).expect("a valid date")
    }

    fn samples() -> Vec<Record> {
        serde_json::from_str(SAMPLES).expect("the embedded samples are records")
    }

    #[test]
    fn demo_samples_are_what_the_module_docs_say() {
        let records = samples();
        assert_eq!(records.len(), 50);
        let providers: BTreeSet<_> = records.iter().filter_map(|r| r.provider_id.clone()).collect();
        assert_eq!(providers.into_iter().collect::<Vec<_>>(), ["PRV-001", "PRV-002", "PRV-003"]);
        let patients: BTreeSet<_> = records.iter().map(|r| r.patient.id.as_str()).collect();
        assert_eq!(patients.len(), 23);
        assert_eq!(records.iter().filter(|r| r.refusal_reason.is_some()).count(), 2);
        assert_eq!(records.iter().filter(|r| r.historical).count(), 3);
        let covid_by_ndc = records
            .iter()
            .filter(|r| {
                ["309", "310", "311", "312", "313", "334"].contains(&r.vaccine.cvx.as_str())
            })
            .filter(|r| r.vaccine.ndc.is_some())
            .count();
        assert!(covid_by_ndc >= 10, "{covid_by_ndc}");
        let mut doses: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &records {
            *doses.entry(r.patient.id.as_str()).or_default() += 1;
        }
        assert!(doses.values().filter(|&&n| n >= 2).count() >= 10, "{doses:?}");
        for id in [SHOWN_SAMPLE, INVALID_SAMPLE].iter().chain(&PRINTED_SAMPLES) {
            assert!(records.iter().any(|r| r.vaccination_id == *id), "{id} is not a sample");
        }
        assert!(records.iter().any(|r| r.patient.family_name.contains("|Jones^&")));
    }

    #[test]
    fn demo_samples_all_validate_but_the_invalid_one() {
        let profile = profile();
        let now = DateTime::parse_from_rfc3339("2026-11-24T09:00:00-08:00").expect("a time");
        assert_eq!(now.date_naive(), today());
        for (i, rec) in samples().iter().enumerate() {
            let id = &rec.vaccination_id;
            let vxu = hl7::generate_vxu(rec, &profile, &format!("DEMO{i}"), now);
            if id == INVALID_SAMPLE {
                let invalid = vxu.expect_err("the invalid sample is invalid");
                assert!(invalid.violations.len() >= 5, "{invalid:?}");
                continue;
            }
            let msg = vxu.unwrap_or_else(|e| panic!("{id}: {e:?}"));
            let findings = hl7::validate_message(&msg);
            let errors: Vec<_> =
                findings.iter().filter(|f| f.severity == Severity::Error).collect();
            assert!(errors.is_empty(), "{id}: {errors:?}");
            // The only warning allowed is the length of ORC-3, a 36-character Dataverse GUID
            // where HL7 2.5.1 gives the field 22 (refusals send 9999 there instead).
            let other: Vec<_> =
                findings.iter().filter(|f| !f.to_string().contains("ORC-3")).collect();
            assert!(other.is_empty(), "{id}: {other:?}");
        }
    }

    #[test]
    fn demo_order_check_flags_a_dose_sent_before_the_earlier_one_was_answered() {
        let row = |id: i64, control: &str| LogRow {
            id,
            vaccination_id: format!("v{id}"),
            provider_id: Some("PRV-001".into()),
            patient_id: "MRN-1".into(),
            control_id: Some(control.into()),
            status: Status::Accepted,
            attempts: 1,
            ack_code: Some("AA".into()),
            created_at: 0,
            finished_at: None,
            reasons: None,
        };
        let delivery = |seq: u64, control: &str| Delivery {
            seq,
            at_ms: 0,
            op: "submit".into(),
            control_id: Some(control.into()),
            vaccination_id: None,
            facility: None,
            outcome: "accepted".into(),
            fault: None,
        };
        let rows = [row(1, "A"), row(2, "B")];
        // A is retried (seq 1 and 3); B goes out only after A's last attempt.
        let ordered = [delivery(1, "A"), delivery(3, "A"), delivery(4, "B")];
        assert_eq!(order_per_patient(&rows, &ordered), (1, 0));
        let overtaken = [delivery(1, "A"), delivery(2, "B"), delivery(3, "A")];
        assert_eq!(order_per_patient(&rows, &overtaken), (1, 1));
    }

    #[test]
    fn demo_runs_the_whole_cycle_as_expected() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut store = Store::open(&dir.path().join("izrelay.db")).map_err(io)?;
        let mut out = Vec::new();
        let now = chrono::Local::now().fixed_offset();
        let summary = run(&mut out, &mut store, now, true)?;
        let text = String::from_utf8_lossy(&out);
        assert!(summary.as_expected(), "{summary:?}\n{text}");
        assert_eq!(summary.records, 50);
        assert_eq!(text.matches("MSH|^~\\&|").count(), PRINTED_SAMPLES.len(), "{text}");
        assert!(text.contains("Smith\\F\\Jones\\S\\\\T\\"), "the delimiters are escaped: {text}");
        Ok(())
    }
}
