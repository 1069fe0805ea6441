//! `izrelay demo`: the embedded default, grown issue by issue.
//!
//! The cycle that exists so far is *import → generate → queue → forward → audit*: the built-in
//! sample records (adult COVID-19 by CVX + NDC, a child's flu dose with a parent as NK1, a
//! refusal, a historical dose, a name full of HL7 delimiters, and one record that cannot be
//! sent) go into a real SQLite store in a temporary directory and become VXU messages checked
//! by the Z22 validator; the forwarder then sends them over loopback HTTPS to the simulated IIS
//! (`sim::iis`, a real TLS server on 127.0.0.1 with a generated certificate), which is down
//! for its first moments so the retries show; the demo ends with the audit staff would run:
//! counts by state, one record's history with its attempts and ACK, the invalid record's
//! reasons. [`run`] reports whether everything behaved as expected.

use std::io::Write;

pub mod dataverse;

use chrono::{DateTime, FixedOffset};

use crate::hl7::{self, MessageProfile, ProcessingId, Severity};
use crate::store::outbox::Status;
use crate::store::{Store, format_ms};

/// The sample records, as a clinic's feed would send them.
pub const SAMPLES: &str = include_str!("samples.json");

/// The one sample that is invalid on purpose.
pub const INVALID_SAMPLE: &str = "deadbeef-0000-4000-8000-000000000001";

/// The sample whose history the demo prints.
pub const SHOWN_SAMPLE: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

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
    /// Outcomes written back to the simulated Dataverse.
    pub synced: u64,
}

impl Summary {
    /// True when exactly the intended sample is invalid and every message validates.
    pub fn as_expected(&self) -> bool {
        self.invalid == [INVALID_SAMPLE]
            && self.messages_with_errors == 0
            && self.queued + 1 == self.records
            && self.accepted == self.queued as u64
            && self.retried > 0
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

/// Runs the demo against `store`, writing a human-readable report to `out`.
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
    let other = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    writeln!(
        out,
        "izrelay demo: {} sample records in a simulated Dataverse → SQLite outbox {}\n",
        records.len(),
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
    let queued = store
        .log(&crate::store::audit::LogFilter {
            status: Some(Status::Queued),
            limit: 1000,
            ..Default::default()
        })
        .map_err(io)?;
    for row in queued.iter().rev() {
        summary.queued += 1;
        let detail = store.show(row.id).map_err(io)?;
        let msg = detail.message.unwrap_or_default();
        let findings = hl7::validate_message(&msg);
        let errors = findings.iter().filter(|f| f.severity == Severity::Error).count();
        if errors > 0 {
            summary.messages_with_errors += 1;
        }
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
        if show_messages {
            for seg in msg.split('\r').filter(|s| !s.is_empty()) {
                writeln!(out, "      {seg}")?;
            }
        }
        for f in &findings {
            writeln!(out, "      {f}")?;
        }
    }

    writeln!(
        out,
        "\n== 3. forward over HTTPS to the simulated IIS (down for its first {OUTAGE_MS} ms)"
    )?;
    let (accepted, retried) = forward(out, store, &rt)?;
    summary.accepted = accepted;
    summary.retried = retried;

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

    writeln!(out, "\n== 5. audit")?;
    for p in store.status().map_err(io)? {
        let counts: Vec<String> = p.counts.iter().map(|(s, n)| format!("{s} {n}")).collect();
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
    }
    let invalid = store
        .log(&crate::store::audit::LogFilter {
            status: Some(Status::Invalid),
            limit: 1000,
            ..Default::default()
        })
        .map_err(io)?;
    for row in &invalid {
        summary.invalid.push(row.vaccination_id.clone());
        writeln!(out, "   record {} is invalid:", row.vaccination_id)?;
        for line in row.reason_lines() {
            writeln!(out, "     - {line}")?;
        }
    }
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

/// How long the simulated IIS is down at the start of the forward step.
pub const OUTAGE_MS: u64 = 1_200;

/// Starts the simulated IIS over TLS, imports its credentials, and drains the outbox to it.
/// Returns (accepted, retried attempts).
fn forward(
    out: &mut dyn Write,
    store: &mut Store,
    rt: &tokio::runtime::Runtime,
) -> std::io::Result<(u64, u64)> {
    use crate::config::vault::{Key, read_settings};
    use crate::forwarder::{DrainOptions, ForwardConfig, ForwardSettings, drain};
    use crate::sim::iis::{self, Account, Fault, Scheduled};
    use crate::sim::tls::Identity;

    let other = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
    let dir = store.path().parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    let identity = Identity::self_signed().map_err(|e| other(&e))?;
    let ca = dir.join("demo-iis-ca.pem");
    std::fs::write(&ca, &identity.cert_pem)?;
    let providers = ["PRV-001", "PRV-002"];
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
    let (mut accepted, mut retried) = (0, 0);
    for p in &report.providers {
        writeln!(
            out,
            "   {}: {} accepted ({} with warnings), {} rejected, {} retried",
            p.provider_id, p.accepted, p.warnings, p.rejected, p.retried
        )?;
        accepted += p.accepted;
        retried += p.retried;
    }
    writeln!(
        out,
        "   the IIS saw {} calls: {} during the outage (HTTP 503, retried with backoff)",
        deliveries.len(),
        deliveries.iter().filter(|d| d.fault.is_some()).count()
    )?;
    Ok((accepted, retried))
}
