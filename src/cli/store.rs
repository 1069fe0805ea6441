//! The store commands: `import`, `history`, `log`, `show`, `status`, `regenerate`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use super::Ctx;
use std::process::ExitCode;

use anyhow::Context;
use izrelay::hl7;
use izrelay::store::audit::{LogFilter, LogRow};
use izrelay::store::outbox::Status;
use izrelay::store::{Store, format_ms};

/// The database file inside the data directory.
pub(crate) const DB_FILE: &str = "izrelay.db";

/// Opens the database in `data_dir`.
///
/// Rows left in `sending` are not touched here: only the process that sends (the forwarder,
/// at its start) may put them back to `queued`, or an audit command run beside a running
/// daemon would re-queue messages that are in flight.
pub(crate) fn open(data_dir: &Path) -> anyhow::Result<Store> {
    if !data_dir.exists() {
        // The data directory holds PHI and the key: only its owner may enter it.
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
    }
    let path = data_dir.join(DB_FILE);
    Store::open(&path).with_context(|| format!("cannot open the database {}", path.display()))
}

/// [`open`], then `PRAGMA quick_check`: a damaged file is reported, naming it, before anything
/// reads a wrong answer from it or writes into it. Costs a read of the whole file, so only for
/// `import` (a long write), `status` (what staff run when something looks wrong) and `run`.
pub(crate) fn open_checked(data_dir: &Path) -> anyhow::Result<Store> {
    let store = open(data_dir)?;
    store.quick_check()?;
    Ok(store)
}

#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    /// A JSON array or NDJSON file of canonical vaccination records.
    file: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn import(ctx: &Ctx, args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let mut store = open_checked(&ctx.data_dir)?;
    let size = std::fs::metadata(&args.file).map(|m| m.len()).unwrap_or(0);
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(size);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {eta}")
        {
            bar.set_style(style);
        }
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let now = chrono::Local::now().fixed_offset();
    let report = izrelay::pull::import::import_file(
        &mut store,
        &args.file,
        &ctx.config.profiles,
        now,
        &|n| bar.set_position(n),
    )
    .with_context(|| format!("import of {} stopped", args.file.display()))?;
    bar.finish_and_clear();
    let detail = serde_json::to_string(&report.counts)?;
    store.audit_event("import", Some(&args.file.display().to_string()), Some(&detail))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        let c = &report.counts;
        writeln!(
            out,
            "{}: {} records: {} new, {} changed, {} unchanged, {} stale, {} not completed",
            args.file.display(),
            c.received,
            c.new,
            c.changed,
            c.unchanged,
            c.stale,
            c.not_completed
        )?;
        writeln!(
            out,
            "  messages: {} queued, {} invalid (see `izrelay log --status invalid`)",
            c.queued, c.invalid
        )?;
    }
    if report.bad_total > 0 {
        for bad in &report.bad {
            eprintln!("{}: {bad}", args.file.display());
        }
        if report.bad_total > report.bad.len() as u64 {
            eprintln!("… and {} more", report.bad_total - report.bad.len() as u64);
        }
        eprintln!(
            "error: {} inputs in {} are not records and were skipped",
            report.bad_total,
            args.file.display()
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub(crate) struct HistoryArgs {
    /// The vaccination id.
    vaccination_id: String,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn history(ctx: &Ctx, args: &HistoryArgs) -> anyhow::Result<ExitCode> {
    let store = open(&ctx.data_dir)?;
    let h = store.history(&args.vaccination_id)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &h)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "vaccination {}: {} messages ({} replays)",
        h.vaccination_id,
        h.messages.len(),
        h.replays
    )?;
    for (row, attempts) in &h.messages {
        writeln!(
            out,
            "  log {}  {}  {:<10}  MSH-10 {}  attempts {}{}",
            row.id,
            format_ms(row.created_at),
            row.status,
            row.control_id.as_deref().unwrap_or("-"),
            row.attempts,
            row.ack_code.as_deref().map(|a| format!("  ACK {a}")).unwrap_or_default()
        )?;
        for r in row.reason_lines() {
            writeln!(out, "      - {r}")?;
        }
        for a in attempts {
            writeln!(
                out,
                "      attempt {}  {}{}{}",
                format_ms(a.started_at),
                a.outcome,
                a.http_status.map(|s| format!("  HTTP {s}")).unwrap_or_default(),
                a.error.as_deref().map(|e| format!("  {e}")).unwrap_or_default()
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub(crate) struct LogArgs {
    /// Only this state (invalid, queued, sending, accepted, rejected, failed, superseded).
    #[arg(long, value_parser = parse_status)]
    status: Option<Status>,
    /// Only this provider id.
    #[arg(long)]
    provider: Option<String>,
    /// Only this patient MRN.
    #[arg(long)]
    patient: Option<String>,
    /// Created at or after (RFC 3339 or YYYY-MM-DD).
    #[arg(long, value_parser = parse_when)]
    since: Option<i64>,
    /// Created before (RFC 3339 or YYYY-MM-DD).
    #[arg(long, value_parser = parse_when)]
    until: Option<i64>,
    /// At most this many rows.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// JSON output.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// CSV output.
    #[arg(long)]
    csv: bool,
}

fn parse_status(s: &str) -> Result<Status, String> {
    Status::parse(s).ok_or_else(|| format!("{s:?} is not a state (invalid, queued, sending, accepted, rejected, failed, superseded)"))
}

fn parse_when(s: &str) -> Result<i64, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
        .ok_or_else(|| format!("{s:?} is not an RFC 3339 time or a YYYY-MM-DD date"))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

pub(crate) fn log(ctx: &Ctx, args: &LogArgs) -> anyhow::Result<ExitCode> {
    let store = open(&ctx.data_dir)?;
    let filter = LogFilter {
        status: args.status,
        provider: args.provider.clone(),
        patient: args.patient.clone(),
        since: args.since,
        until: args.until,
        limit: args.limit,
    };
    let rows = store.log(&filter)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
    } else if args.csv {
        writeln!(
            out,
            "id,created_at,status,vaccination_id,patient_id,provider_id,control_id,attempts,ack_code"
        )?;
        for r in &rows {
            let fields = [
                r.id.to_string(),
                format_ms(r.created_at),
                r.status.to_string(),
                r.vaccination_id.clone(),
                r.patient_id.clone(),
                r.provider_id.clone().unwrap_or_default(),
                r.control_id.clone().unwrap_or_default(),
                r.attempts.to_string(),
                r.ack_code.clone().unwrap_or_default(),
            ];
            writeln!(out, "{}", fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","))?;
        }
    } else {
        for r in &rows {
            print_row(&mut out, r)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_row(out: &mut impl Write, r: &LogRow) -> std::io::Result<()> {
    writeln!(
        out,
        "{:>6}  {}  {:<10}  {}  patient {}  provider {}  MSH-10 {}",
        r.id,
        format_ms(r.created_at),
        r.status,
        r.vaccination_id,
        r.patient_id,
        r.provider_id.as_deref().unwrap_or("-"),
        r.control_id.as_deref().unwrap_or("-")
    )
}

#[derive(Debug, clap::Args)]
pub(crate) struct ShowArgs {
    /// The notification log id (from `log` or `history`).
    log_id: i64,
}

pub(crate) fn show(ctx: &Ctx, args: &ShowArgs) -> anyhow::Result<ExitCode> {
    let store = open(&ctx.data_dir)?;
    let d = store.show(args.log_id)?;
    let mut out = std::io::stdout().lock();
    print_row(&mut out, &d.row)?;
    for r in d.row.reason_lines() {
        writeln!(out, "  - {r}")?;
    }
    if let Some(msg) = &d.message {
        writeln!(out, "\nmessage:")?;
        print_segments(&mut out, msg, false)?;
    }
    if let Some(ack) = &d.ack {
        writeln!(out, "\nACK:")?;
        print_segments(&mut out, ack, true)?;
        if let Ok(parsed) = hl7::parse_ack(ack, d.row.control_id.as_deref()) {
            writeln!(out, "\n  outcome: {:?}", parsed.outcome)?;
            for e in &parsed.errors {
                let meaning = |table: &str, code: &Option<String>| {
                    code.as_deref()
                        .and_then(|c| hl7::table_meaning(table, c))
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                };
                let severity = e.severity.map(|s| match s {
                    hl7::ErrorSeverity::Error => "E",
                    hl7::ErrorSeverity::Warning => "W",
                    hl7::ErrorSeverity::Information => "I",
                });
                writeln!(
                    out,
                    "  error at {}: HL7 {}{}; severity {}{}; application {}{}; {}",
                    e.location.as_deref().unwrap_or("?"),
                    e.code.as_deref().unwrap_or("-"),
                    meaning("0357", &e.code),
                    severity.unwrap_or("-"),
                    meaning("0516", &severity.map(str::to_owned)),
                    e.application_code.as_deref().unwrap_or("-"),
                    meaning("0533", &e.application_code),
                    e.message.as_deref().unwrap_or("")
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints each segment, then each valued field with its profile name.
fn print_segments(out: &mut impl Write, text: &str, ack: bool) -> std::io::Result<()> {
    let Ok(msg) = hl7::Message::parse(text) else {
        return writeln!(out, "  {}", text.replace('\r', "\n  "));
    };
    for seg in msg.segments() {
        // MSH-1 is the separator itself, so MSH's text restarts at MSH-2.
        let from = if seg.id() == "MSH" { 2 } else { 1 };
        let line: Vec<&str> = (from..=seg.field_count()).map(|n| seg.field(n).as_str()).collect();
        writeln!(out, "  {}|{}", seg.id(), line.join("|"))?;
        for n in 1..=seg.field_count() {
            let f = seg.field(n);
            if f.is_empty() {
                continue;
            }
            let name = hl7::field_name(seg.id(), n, ack).unwrap_or("");
            writeln!(out, "      {}-{n:<3} {:<40} {}", seg.id(), name, f.as_str())?;
        }
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    /// JSON output.
    #[arg(long)]
    json: bool,
}

pub(crate) fn status(ctx: &Ctx, args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let store = open_checked(&ctx.data_dir)?;
    let rows = store.status()?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        writeln!(out, "no messages yet")?;
    }
    for p in rows {
        let counts: Vec<String> = Status::ALL
            .iter()
            .filter_map(|s| p.counts.get(s.as_str()).map(|n| format!("{s} {n}")))
            .collect();
        writeln!(
            out,
            "provider {}{}: {}; oldest queued {}; last accepted {}",
            p.provider_id,
            if p.paused { " (PAUSED)" } else { "" },
            counts.join(", "),
            p.oldest_queued.map_or_else(|| "-".to_owned(), format_ms),
            p.last_accepted.map_or_else(|| "-".to_owned(), format_ms),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub(crate) struct RegenerateArgs {
    /// The vaccination id.
    vaccination_id: String,
}

pub(crate) fn regenerate(ctx: &Ctx, args: &RegenerateArgs) -> anyhow::Result<ExitCode> {
    let mut store = open(&ctx.data_dir)?;
    let g = store.regenerate(
        &args.vaccination_id,
        &ctx.config.profiles,
        chrono::Local::now().fixed_offset(),
    )?;
    println!("log {}: {} {}", g.log_id, g.status, g.control_id.as_deref().unwrap_or(""));
    Ok(if g.status == Status::Invalid { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

#[derive(Debug, clap::Args)]
pub(crate) struct PurgeArgs {
    /// Only rows that reached `accepted` more than this many days ago.
    #[arg(long, value_name = "DAYS")]
    older_than: u32,
}

pub(crate) fn purge(ctx: &Ctx, args: &PurgeArgs) -> anyhow::Result<ExitCode> {
    let mut store = open(&ctx.data_dir)?;
    let cutoff = izrelay::store::now_ms() - i64::from(args.older_than) * 86_400_000;
    let n = store.purge(cutoff)?;
    println!(
        "purged the message bodies of {n} accepted and synced messages older than {} days",
        args.older_than
    );
    Ok(ExitCode::SUCCESS)
}
