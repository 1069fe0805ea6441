//! `izrelay demo`: the embedded default, grown issue by issue.
//!
//! The cycle that exists so far is *import → generate → queue → audit*: the built-in sample
//! records (adult COVID-19 by CVX + NDC, a child's flu dose with a parent as NK1, a refusal, a
//! historical dose, a name full of HL7 delimiters, and one record that cannot be sent) go into
//! a real SQLite store in a temporary directory, become VXU messages checked by the Z22
//! validator, and the demo ends with the audit staff would run: counts by state, one record's
//! history, the invalid record's reasons. [`run`] reports whether everything behaved as
//! expected.

use std::io::Write;

use chrono::{DateTime, FixedOffset};

use crate::hl7::{self, MessageProfile, ProcessingId, Severity};
use crate::record::Record;
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
}

impl Summary {
    /// True when exactly the intended sample is invalid and every message validates.
    pub fn as_expected(&self) -> bool {
        self.invalid == [INVALID_SAMPLE]
            && self.messages_with_errors == 0
            && self.queued + 1 == self.records
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
    let records: Vec<Record> = serde_json::from_str(SAMPLES).map_err(std::io::Error::other)?;
    writeln!(
        out,
        "izrelay demo: {} sample records → SQLite outbox {}\n",
        records.len(),
        store.path().display()
    )?;

    writeln!(out, "== 1. import and generate (CDC VXU^V04, profile Z22)")?;
    let counts =
        store.intake(&records, &crate::hl7::Profiles::single(profile()), now).map_err(io)?;
    writeln!(
        out,
        "   {} records: {} queued, {} invalid",
        counts.received, counts.queued, counts.invalid
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

    writeln!(out, "\n== 3. audit")?;
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
    for (row, _) in &history.messages {
        writeln!(
            out,
            "     log {}  {}  {}  MSH-10 {}",
            row.id,
            format_ms(row.created_at),
            row.status,
            row.control_id.as_deref().unwrap_or("-")
        )?;
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
        "\n   records {}  queued {}  invalid {}  result: {verdict}",
        summary.records,
        summary.queued,
        summary.invalid.len()
    )?;
    Ok(summary)
}
