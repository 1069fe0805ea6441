//! The audit queries: what was sent, when, how often, and what the IIS said.
//!
//! Each query is an index lookup (see the indexes in `schema.sql`); none scans a table.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::outbox::Status;
use super::{Error, Result, Store};

/// One notification log row, as staff see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogRow {
    /// Row id (for `show`).
    pub id: i64,
    /// The vaccination.
    pub vaccination_id: String,
    /// The IIS account.
    pub provider_id: Option<String>,
    /// The patient's MRN.
    pub patient_id: String,
    /// MSH-10.
    pub control_id: Option<String>,
    /// State.
    pub status: Status,
    /// Send attempts.
    pub attempts: u32,
    /// MSA-1 of the ACK.
    pub ack_code: Option<String>,
    /// Generated (ms).
    pub created_at: i64,
    /// Reached a final state (ms).
    pub finished_at: Option<i64>,
    /// Why invalid / failed (JSON).
    pub reasons: Option<String>,
}

impl LogRow {
    /// The reasons as lines: `field: rule` for an invalid record's violations, or the text
    /// stored for a failure.
    pub fn reason_lines(&self) -> Vec<String> {
        let Some(reasons) = self.reasons.as_deref() else { return Vec::new() };
        match serde_json::from_str::<Vec<crate::hl7::Violation>>(reasons) {
            Ok(v) => v.iter().map(|v| format!("{}: {}", v.field, v.rule)).collect(),
            Err(_) => vec![reasons.to_owned()],
        }
    }
}

/// One send attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptRow {
    /// Started (ms).
    pub started_at: i64,
    /// Duration.
    pub duration_ms: Option<i64>,
    /// HTTP status.
    pub http_status: Option<i64>,
    /// Outcome word.
    pub outcome: String,
    /// Error text.
    pub error: Option<String>,
}

/// Everything about one vaccination's reporting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct History {
    /// The vaccination.
    pub vaccination_id: String,
    /// Messages, oldest first, each with its attempts.
    pub messages: Vec<(LogRow, Vec<AttemptRow>)>,
    /// How many times the record was generated again after the first (replays).
    pub replays: usize,
}

/// Filters for `log`.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// Only this state.
    pub status: Option<Status>,
    /// Only this provider.
    pub provider: Option<String>,
    /// Only this patient MRN.
    pub patient: Option<String>,
    /// Created at or after (ms).
    pub since: Option<i64>,
    /// Created before (ms).
    pub until: Option<i64>,
    /// At most this many rows (newest first).
    pub limit: usize,
}

/// Queue state of one provider.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProviderStatus {
    /// The IIS account (`-` for records without one).
    pub provider_id: String,
    /// Rows per state.
    pub counts: BTreeMap<String, u64>,
    /// The oldest queued message (ms).
    pub oldest_queued: Option<i64>,
    /// The last acceptance (ms).
    pub last_accepted: Option<i64>,
    /// The IIS is paused (credentials problem).
    pub paused: bool,
}

/// A row with its message and ACK, for `show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogDetail {
    /// The row.
    pub row: LogRow,
    /// The VXU (CR-separated), unless purged or invalid.
    pub message: Option<String>,
    /// The raw ACK.
    pub ack: Option<String>,
}

/// The SQL and arguments of a `log` query (one place, so the plan test checks what runs).
fn log_sql(filter: &LogFilter) -> (String, Vec<rusqlite::types::Value>) {
    let mut sql = format!(
        "SELECT {ROW_COLUMNS} FROM notification_log n JOIN vaccination v ON v.id = n.vaccination_id WHERE 1 = 1"
    );
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    let mut bind = |sql: &mut String, clause: &str, value: rusqlite::types::Value| {
        args.push(value);
        sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
    };
    if let Some(s) = filter.status {
        bind(&mut sql, " AND n.status = ?", s.as_str().to_owned().into());
    }
    if let Some(p) = &filter.provider {
        bind(&mut sql, " AND n.provider_id = ?", p.clone().into());
    }
    if let Some(p) = &filter.patient {
        bind(&mut sql, " AND v.patient_id = ?", p.clone().into());
    }
    if let Some(t) = filter.since {
        bind(&mut sql, " AND n.created_at >= ?", t.into());
    }
    if let Some(t) = filter.until {
        bind(&mut sql, " AND n.created_at < ?", t.into());
    }
    let limit = i64::try_from(filter.limit.max(1)).unwrap_or(i64::MAX);
    bind(&mut sql, " ORDER BY n.id DESC LIMIT ?", limit.into());
    (sql, args)
}

const ROW_COLUMNS: &str =
    "n.id, n.vaccination_id, n.provider_id, v.patient_id, n.control_id, n.status,
    n.attempts, n.ack_code, n.created_at, n.finished_at, n.reasons";

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LogRow> {
    let status: String = r.get(5)?;
    Ok(LogRow {
        id: r.get(0)?,
        vaccination_id: r.get(1)?,
        provider_id: r.get(2)?,
        patient_id: r.get(3)?,
        control_id: r.get(4)?,
        status: Status::parse(&status).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, status.into())
        })?,
        attempts: r.get(6)?,
        ack_code: r.get(7)?,
        created_at: r.get(8)?,
        finished_at: r.get(9)?,
        reasons: r.get(10)?,
    })
}

impl Store {
    /// Every message for `vaccination_id`, with attempts.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the vaccination is unknown; SQLite errors.
    pub fn history(&self, vaccination_id: &str) -> Result<History> {
        let known: Option<i64> = self
            .conn
            .query_row("SELECT 1 FROM vaccination WHERE id = ?1", params![vaccination_id], |r| {
                r.get(0)
            })
            .optional()?;
        if known.is_none() {
            return Err(Error::NotFound(format!("vaccination {vaccination_id}")));
        }
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} FROM notification_log n JOIN vaccination v ON v.id = n.vaccination_id
             WHERE n.vaccination_id = ?1 ORDER BY n.id"
        ))?;
        let rows = stmt
            .query_map(params![vaccination_id], read_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut attempts_stmt = self.conn.prepare_cached(
            "SELECT started_at, duration_ms, http_status, outcome, error FROM attempt WHERE log_id = ?1 ORDER BY id",
        )?;
        let mut messages = Vec::with_capacity(rows.len());
        for row in rows {
            let attempts = attempts_stmt
                .query_map(params![row.id], |r| {
                    Ok(AttemptRow {
                        started_at: r.get(0)?,
                        duration_ms: r.get(1)?,
                        http_status: r.get(2)?,
                        outcome: r.get(3)?,
                        error: r.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            messages.push((row, attempts));
        }
        let replays = messages.len().saturating_sub(1);
        Ok(History { vaccination_id: vaccination_id.to_owned(), messages, replays })
    }

    /// Notification log rows matching `filter`, newest first.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn log(&self, filter: &LogFilter) -> Result<Vec<LogRow>> {
        let (sql, args) = log_sql(filter);
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), read_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Drops the message and ACK bodies of rows accepted before `older_than_ms` and already
    /// synced to Dataverse; nothing undelivered or unsynced is touched. Returns the rows purged.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn purge(&mut self, older_than_ms: i64) -> Result<usize> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let now = super::now_ms();
        let n = tx.execute(
            "UPDATE notification_log SET message = NULL, ack = NULL, purged_at = ?2, updated_at = ?2
             WHERE status = 'accepted' AND synced_at IS NOT NULL AND purged_at IS NULL
               AND finished_at < ?1",
            params![older_than_ms, now],
        )?;
        tx.execute(
            "INSERT INTO audit_event (at, action, subject, detail) VALUES (?1, 'purge', NULL, ?2)",
            params![
                now,
                format!(
                    "{n} message bodies accepted and synced before {}",
                    super::format_ms(older_than_ms)
                )
            ],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// Per provider: counts by state, oldest queued, last accepted, paused.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn status(&self) -> Result<Vec<ProviderStatus>> {
        let mut out: BTreeMap<String, ProviderStatus> = BTreeMap::new();
        let mut stmt = self.conn.prepare(
            "SELECT coalesce(provider_id, '-'), status, count(*),
                    min(CASE WHEN status = 'queued' THEN created_at END),
                    max(CASE WHEN status = 'accepted' THEN finished_at END)
             FROM notification_log GROUP BY provider_id, status",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u64>(2)?,
                r.get::<_, Option<i64>>(3)?,
                r.get::<_, Option<i64>>(4)?,
            ))
        })?;
        for row in rows {
            let (provider, status, count, oldest, last) = row?;
            let entry = out.entry(provider.clone()).or_insert_with(|| ProviderStatus {
                provider_id: provider,
                ..ProviderStatus::default()
            });
            entry.counts.insert(status, count);
            entry.oldest_queued = entry.oldest_queued.or(oldest);
            entry.last_accepted = entry.last_accepted.max(last);
        }
        let mut paused =
            self.conn.prepare("SELECT provider_id FROM iis_endpoint WHERE paused = 1")?;
        for p in paused.query_map([], |r| r.get::<_, String>(0))? {
            let p = p?;
            out.entry(p.clone())
                .or_insert_with(|| ProviderStatus { provider_id: p, ..ProviderStatus::default() })
                .paused = true;
        }
        Ok(out.into_values().collect())
    }

    /// One row with its message and ACK.
    ///
    /// # Errors
    /// [`Error::NotFound`]; SQLite errors.
    pub fn show(&self, log_id: i64) -> Result<LogDetail> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {ROW_COLUMNS}, n.message, n.ack FROM notification_log n
                     JOIN vaccination v ON v.id = n.vaccination_id WHERE n.id = ?1"
                ),
                params![log_id],
                |r| Ok(LogDetail { row: read_row(r)?, message: r.get(11)?, ack: r.get(12)? }),
            )
            .optional()?
            .ok_or_else(|| Error::NotFound(format!("notification log {log_id}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(store: &Store, sql: &str, args: Vec<rusqlite::types::Value>) -> String {
        let mut stmt = store.conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).expect("explain");
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
            .expect("plan")
            .collect::<rusqlite::Result<Vec<_>>>()
            .expect("rows");
        rows.join(" / ")
    }

    /// Every audit query is an index lookup: no plan step scans a whole table, except the
    /// unfiltered `log`, which walks the primary key backwards and stops at its LIMIT.
    #[test]
    fn audit_queries_use_indexes() {
        let store = Store::open_in_memory().expect("store");
        let filters = [
            (
                "status",
                LogFilter { status: Some(Status::Queued), limit: 10, ..LogFilter::default() },
            ),
            (
                "provider",
                LogFilter { provider: Some("P".into()), limit: 10, ..LogFilter::default() },
            ),
            (
                "patient",
                LogFilter { patient: Some("MRN".into()), limit: 10, ..LogFilter::default() },
            ),
            (
                "since",
                LogFilter { since: Some(1), until: Some(2), limit: 10, ..LogFilter::default() },
            ),
        ];
        for (name, f) in filters {
            let (sql, args) = log_sql(&f);
            let p = plan(&store, &sql, args);
            assert!(!p.contains("SCAN n") && !p.contains("SCAN v"), "log --{name}: {p}");
        }
        let queries = [
            (
                "history",
                "SELECT n.id FROM notification_log n WHERE n.vaccination_id = 'x' ORDER BY n.id",
            ),
            ("msh-10", "SELECT id FROM notification_log WHERE control_id = 'x'"),
            ("cvx", "SELECT id FROM vaccination WHERE cvx = '208'"),
            ("lot", "SELECT id FROM vaccination WHERE lot = 'L1'"),
            ("attempts", "SELECT id FROM attempt WHERE log_id = 1"),
        ];
        for (name, sql) in queries {
            let p = plan(&store, sql, Vec::new());
            assert!(p.contains("USING") && !p.contains("SCAN"), "{name}: {p}");
        }
    }
}
