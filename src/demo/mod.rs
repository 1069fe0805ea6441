//! `izrelay demo`: the embedded default, grown issue by issue.
//!
//! At this stage the cycle that exists is *generate and validate*: the built-in sample records
//! (adult COVID-19 by CVX + NDC, a child's flu dose with a parent as NK1, a refusal, a
//! historical dose, a name full of HL7 delimiters, and one record that cannot be sent) become
//! VXU messages, each message is checked by the Z22 validator, and the invalid record's reasons
//! are listed. [`run`] reports whether everything behaved as expected.

use std::io::Write;

use chrono::{DateTime, FixedOffset};

use crate::hl7::{self, MessageProfile, ProcessingId, Severity};
use crate::record::Record;

/// The sample records, as a clinic's feed would send them.
pub const SAMPLES: &str = include_str!("samples.json");

/// The one sample that is invalid on purpose.
pub const INVALID_SAMPLE: &str = "deadbeef-0000-4000-8000-000000000001";

/// What the demo saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Records read.
    pub records: usize,
    /// VXU messages generated.
    pub generated: usize,
    /// Records that could not become a VXU.
    pub invalid: Vec<String>,
    /// Generated messages the validator found an error in (must be none).
    pub messages_with_errors: usize,
}

impl Summary {
    /// True when exactly the intended sample is invalid and every message validates.
    pub fn as_expected(&self) -> bool {
        self.invalid == [INVALID_SAMPLE]
            && self.messages_with_errors == 0
            && self.generated + 1 == self.records
    }
}

/// Runs the demo, writing a human-readable report to `out`.
///
/// # Errors
/// Only I/O errors on `out`, or a broken embedded sample file.
pub fn run(
    out: &mut dyn Write,
    now: DateTime<FixedOffset>,
    show_messages: bool,
) -> std::io::Result<Summary> {
    let records: Vec<Record> = serde_json::from_str(SAMPLES).map_err(std::io::Error::other)?;
    let profile = MessageProfile {
        processing_id: ProcessingId::Training,
        receiving_application: hl7::Hd::named("DEMO-IIS"),
        receiving_facility: hl7::Hd::named("DEMO-IIS"),
        ..MessageProfile::default()
    };
    let mut summary = Summary { records: records.len(), ..Summary::default() };
    writeln!(
        out,
        "izrelay demo — {} sample records → CDC VXU^V04 (Z22), validated\n",
        records.len()
    )?;
    let mut invalid_reasons = Vec::new();
    for rec in &records {
        let id = hl7::new_control_id();
        match hl7::generate_vxu(rec, &profile, &id, now) {
            Ok(msg) => {
                summary.generated += 1;
                let findings = hl7::validate_message(&msg);
                let errors = findings.iter().filter(|f| f.severity == Severity::Error).count();
                if errors > 0 {
                    summary.messages_with_errors += 1;
                }
                writeln!(
                    out,
                    "== record {}  MSH-10 {id}  {} segments, {} bytes, {} errors, {} warnings",
                    rec.vaccination_id,
                    msg.matches('\r').count(),
                    msg.len(),
                    errors,
                    findings.len() - errors
                )?;
                if show_messages {
                    for seg in msg.split('\r').filter(|s| !s.is_empty()) {
                        writeln!(out, "   {seg}")?;
                    }
                }
                for f in &findings {
                    writeln!(out, "   {f}")?;
                }
            }
            Err(invalid) => {
                writeln!(
                    out,
                    "== record {}  INVALID ({} reasons)",
                    rec.vaccination_id,
                    invalid.violations.len()
                )?;
                summary.invalid.push(invalid.record_id.clone());
                invalid_reasons.push(invalid);
            }
        }
    }
    writeln!(out, "\n== audit")?;
    writeln!(
        out,
        "   records {}  generated {}  invalid {}",
        summary.records,
        summary.generated,
        summary.invalid.len()
    )?;
    for invalid in &invalid_reasons {
        writeln!(out, "   record {} is invalid:", invalid.record_id)?;
        for v in &invalid.violations {
            writeln!(out, "     - {}: {}", v.field, v.rule)?;
        }
    }
    let verdict = if summary.as_expected() { "as expected" } else { "NOT as expected" };
    writeln!(out, "   result: {verdict}")?;
    Ok(summary)
}
