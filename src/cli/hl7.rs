//! `izrelay hl7 generate|validate|parse-ack`: the HL7 core on files, no database.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, FixedOffset};
use clap::Subcommand;
use izrelay::hl7::{self, MessageProfile, Severity};
use izrelay::record::Record;

use super::{PathArg, parse_time, read_text};

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print the VXU for a canonical record (JSON); exit 1 with every reason if it is invalid.
    Generate {
        /// The record, one JSON object.
        record: PathArg,
        /// Print the wire format (segments separated by CR) instead of one segment per line.
        #[arg(long)]
        raw: bool,
        /// MSH-10 to use instead of a new unique id (for reproducible output).
        #[arg(long)]
        control_id: Option<String>,
        /// MSH-7 time (RFC 3339) instead of now.
        #[arg(long, value_parser = parse_time)]
        timestamp: Option<DateTime<FixedOffset>>,
    },
    /// Check VXU messages against the CDC rules (Z22); exit 1 when any has an error.
    Validate {
        /// Message files (CR, LF or CRLF between segments).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print the findings as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print an ACK as JSON: code, acknowledged control id, errors, outcome.
    ParseAck {
        /// The ACK file.
        file: PathArg,
        /// The MSH-10 that was sent; a different MSA-2 is flagged.
        #[arg(long)]
        control_id: Option<String>,
    },
}

pub(crate) fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Generate { record, raw, control_id, timestamp } => {
            let text = read_text(&record)?;
            let rec: Record = serde_json::from_str(&text).with_context(|| {
                format!("{} is not a canonical vaccination record", record.display())
            })?;
            let now = timestamp.unwrap_or_else(|| chrono::Local::now().fixed_offset());
            let id = control_id.unwrap_or_else(hl7::new_control_id);
            match hl7::generate_vxu(&rec, &MessageProfile::default(), &id, now) {
                Ok(msg) => {
                    let out = if raw { msg } else { msg.replace('\r', "\n") };
                    std::io::stdout().write_all(out.as_bytes())?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(invalid) => {
                    eprintln!("record {} cannot become a valid VXU:", invalid.record_id);
                    for v in &invalid.violations {
                        eprintln!("  {}: {}", v.field, v.rule);
                    }
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Validate { files, json } => {
            let mut any_error = false;
            let mut report = Vec::new();
            let mut stdout = std::io::stdout().lock();
            for file in &files {
                let text = read_text(file)?;
                let findings = hl7::validate_message(&text);
                any_error |= findings.iter().any(|f| f.severity == Severity::Error);
                if json {
                    report.push(serde_json::json!({ "file": file, "findings": findings }));
                    continue;
                }
                if findings.is_empty() {
                    writeln!(stdout, "{}: ok", file.display())?;
                }
                for f in &findings {
                    writeln!(stdout, "{}: {f}", file.display())?;
                }
            }
            if json {
                serde_json::to_writer_pretty(&mut stdout, &report)?;
                writeln!(stdout)?;
            }
            Ok(if any_error { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        Command::ParseAck { file, control_id } => {
            let text = read_text(&file)?;
            let ack = hl7::parse_ack(&text, control_id.as_deref())
                .with_context(|| format!("{} is not an ACK", file.display()))?;
            let mut stdout = std::io::stdout().lock();
            serde_json::to_writer_pretty(&mut stdout, &ack)?;
            writeln!(stdout)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
