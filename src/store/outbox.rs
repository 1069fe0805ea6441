//! The outbox: one `notification_log` row per generated message, and its state machine.
//!
//! | from | event | to | in the same transaction |
//! |---|---|---|---|
//! | — | generation, record valid | `queued` | the row, with its new MSH-10 |
//! | — | generation, record invalid | `invalid` | the row, with every reason |
//! | `queued`, `invalid` | a newer generation of the same vaccination | `superseded` | the new row |
//! | `queued` | forwarder claims it (due) | `sending` | — |
//! | `sending` | ACK accepted (AA, AE with warnings only) | `accepted` | ACK + attempt |
//! | `sending` | ACK rejected (AE with errors, AR) | `rejected` | ACK + attempt |
//! | `sending` | transient failure | `queued` (attempts+1, next_attempt_at) | attempt |
//! | `sending` | permanent failure (message too large …) | `failed` | attempt |
//! | `sending` | process start (a crash mid-send) | `queued`, MSH-10 unchanged | — |
//!
//! `accepted`, `rejected`, `failed`, `superseded` are final; `invalid` is final for its row (a
//! fix makes a new row). MSH-10 never changes within a row, so an IIS can recognise a resend.

use chrono::{DateTime, FixedOffset};
use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};

use super::{Error, Result, Store, now_ms};
use crate::hl7::{self, MessageProfile, Profiles};
use crate::record::Record;

/// The state of a notification log row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The record cannot become a valid VXU; the row holds the reasons.
    Invalid,
    /// Waiting to be sent.
    Queued,
    /// Claimed by the forwarder.
    Sending,
    /// The IIS accepted it.
    Accepted,
    /// The IIS rejected it; fix the data and regenerate.
    Rejected,
    /// Could not be delivered and will not be retried.
    Failed,
    /// Replaced by a newer generation before it was sent.
    Superseded,
}

impl Status {
    /// All states, in lifecycle order.
    pub const ALL: [Status; 7] = [
        Self::Invalid,
        Self::Queued,
        Self::Sending,
        Self::Accepted,
        Self::Rejected,
        Self::Failed,
        Self::Superseded,
    ];

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::Queued => "queued",
            Self::Sending => "sending",
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
            Self::Superseded => "superseded",
        }
    }

    /// Parses a stored or user-given state name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A row just written by a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// The notification log id.
    pub log_id: i64,
    /// `queued` or `invalid`.
    pub status: Status,
    /// MSH-10, when queued.
    pub control_id: Option<String>,
}

/// A generation's result: `(MSH-10, message)` or every reason the record is invalid.
pub type Generated = std::result::Result<(String, String), Vec<hl7::Violation>>;

/// Builds the message for `rec` with a new MSH-10 (no database involved, so it can run on
/// another thread than the store's).
pub fn generate(rec: &Record, profile: &MessageProfile, now: DateTime<FixedOffset>) -> Generated {
    let control_id = hl7::new_control_id();
    match hl7::generate_vxu(rec, profile, &control_id, now) {
        Ok(msg) => Ok((control_id, msg)),
        Err(invalid) => Err(invalid.violations),
    }
}

/// The statement that inserts a notification log row (see [`insert_generation`]).
pub(crate) const INSERT_LOG_SQL: &str = "INSERT INTO notification_log
   (vaccination_id, provider_id, control_id, status, message, reasons, record_hash,
    next_attempt_at, created_at, updated_at)
 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?8)";

/// Inserts a generation of `rec` inside `tx` with `insert` ([`INSERT_LOG_SQL`], prepared by
/// the caller, so an intake of a thousand records prepares it once rather than once per
/// record), superseding the unsent rows of the same vaccination first unless `first` says
/// there can be none.
#[allow(clippy::too_many_arguments)]
pub(crate) fn insert_generation(
    tx: &Transaction<'_>,
    insert: &mut rusqlite::Statement<'_>,
    vaccination_id: &str,
    provider_id: Option<&str>,
    record_hash: &[u8],
    generated: Generated,
    first: bool,
    now: DateTime<FixedOffset>,
) -> Result<Generation> {
    let ms = now.timestamp_millis();
    if !first {
        tx.prepare_cached(
            "UPDATE notification_log SET status = 'superseded', finished_at = ?2, updated_at = ?2
             WHERE vaccination_id = ?1 AND status IN ('queued', 'invalid')",
        )?
        .execute(params![vaccination_id, ms])?;
    }
    let (status, control, message, reasons) = match generated {
        Ok((control_id, msg)) => (Status::Queued, Some(control_id), Some(msg), None),
        Err(violations) => {
            let reasons =
                serde_json::to_string(&violations).map_err(|e| Error::Corrupt(e.to_string()))?;
            (Status::Invalid, None, None, Some(reasons))
        }
    };
    insert.execute(params![
        vaccination_id,
        provider_id,
        control,
        status.as_str(),
        message,
        reasons,
        record_hash,
        ms
    ])?;
    Ok(Generation { log_id: tx.last_insert_rowid(), status, control_id: control })
}

/// A message claimed for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The notification log id.
    pub log_id: i64,
    /// The vaccination.
    pub vaccination_id: String,
    /// The IIS account.
    pub provider_id: Option<String>,
    /// MSH-10.
    pub control_id: String,
    /// The VXU.
    pub message: String,
    /// Attempts so far.
    pub attempts: u32,
}

/// How a send attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// The IIS stored it (AA, or AE with warnings only).
    Accepted {
        /// MSA-1.
        ack_code: String,
        /// The raw ACK.
        ack: String,
        /// The ERR segments as JSON.
        ack_errors: String,
    },
    /// The IIS refused it (AE with errors, AR).
    Rejected {
        /// MSA-1.
        ack_code: String,
        /// The raw ACK.
        ack: String,
        /// The ERR segments as JSON.
        ack_errors: String,
    },
    /// Try again at `next_attempt_at` (ms).
    Retry {
        /// When.
        next_attempt_at: i64,
    },
    /// Give up: `reason`.
    Failed {
        /// Why.
        reason: String,
    },
}

/// One send attempt, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// When it started (ms).
    pub started_at: i64,
    /// How long it took.
    pub duration_ms: i64,
    /// The HTTP status, when there was one.
    pub http_status: Option<u16>,
    /// A short outcome word (`accepted`, `timeout`, `http 503` …).
    pub outcome: String,
    /// The error text, when any.
    pub error: Option<String>,
}

impl Store {
    /// Moves due `queued` rows (oldest first, at most `limit`) to `sending` and returns them.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn claim_due(&mut self, now_ms: i64, limit: usize) -> Result<Vec<Claim>> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let claims = {
            let mut stmt = tx.prepare_cached(
                "SELECT id, vaccination_id, provider_id, control_id, message, attempts
                 FROM notification_log
                 WHERE status = 'queued' AND next_attempt_at <= ?1
                 ORDER BY id LIMIT ?2",
            )?;
            let rows =
                stmt.query_map(params![now_ms, i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                    Ok(Claim {
                        log_id: r.get(0)?,
                        vaccination_id: r.get(1)?,
                        provider_id: r.get(2)?,
                        control_id: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                        message: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                        attempts: r.get(5)?,
                    })
                })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        {
            let mut upd = tx.prepare_cached(
                "UPDATE notification_log SET status = 'sending', updated_at = ?2 WHERE id = ?1",
            )?;
            for c in &claims {
                upd.execute(params![c.log_id, now_ms])?;
            }
        }
        tx.commit()?;
        Ok(claims)
    }

    /// Records the end of a send attempt: the row's new state and the attempt, in one
    /// transaction. Only a row in `sending` moves.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the row is not in `sending`; SQLite errors.
    pub fn finish(&mut self, log_id: i64, finish: &Finish, attempt: &Attempt) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if !finish_in(&tx, log_id, finish, attempt, now_ms())? {
            return Err(Error::NotFound(format!("notification log {log_id} in state sending")));
        }
        tx.commit()?;
        Ok(())
    }

    /// Marks a row as written back to Dataverse at `at_ms`.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown row; SQLite errors.
    pub fn mark_synced(&mut self, log_id: i64, at_ms: i64) -> Result<()> {
        let n = self.conn.execute(
            "UPDATE notification_log SET synced_at = ?2 WHERE id = ?1",
            params![log_id, at_ms],
        )?;
        if n == 1 { Ok(()) } else { Err(Error::NotFound(format!("notification log {log_id}"))) }
    }

    /// Puts rows left in `sending` by a crash back to `queued` (MSH-10 unchanged).
    ///
    /// Only the sending process calls this, once at its start: run from anywhere else it
    /// would re-queue messages another process has in flight.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn recover_sending(&mut self) -> Result<usize> {
        Ok(self.conn.execute(
            "UPDATE notification_log SET status = 'queued', updated_at = ?1 WHERE status = 'sending'",
            params![now_ms()],
        )?)
    }

    /// Generates a new message for a stored record (after a data fix, or on staff request).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown vaccination; SQLite errors.
    pub fn regenerate(
        &mut self,
        vaccination_id: &str,
        profiles: &Profiles,
        now: DateTime<FixedOffset>,
    ) -> Result<Generation> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row: Option<(String, Vec<u8>)> = tx
            .query_row(
                "SELECT record_json, record_hash FROM vaccination WHERE id = ?1",
                params![vaccination_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (json, hash) =
            row.ok_or_else(|| Error::NotFound(format!("vaccination {vaccination_id}")))?;
        if json.starts_with("{\"unmapped\":") {
            return Err(Error::Unmapped(vaccination_id.to_owned()));
        }
        let rec: Record = serde_json::from_str(&json)
            .map_err(|e| Error::Corrupt(format!("vaccination {vaccination_id}: {e}")))?;
        let generated = generate(&rec, profiles.get(rec.provider_id.as_deref()), now);
        let mut insert = tx.prepare_cached(INSERT_LOG_SQL)?;
        let generation = insert_generation(
            &tx,
            &mut insert,
            &rec.vaccination_id,
            rec.provider_id.as_deref(),
            &hash,
            generated,
            false,
            now,
        )?;
        drop(insert);
        tx.execute(
            "INSERT INTO audit_event (at, action, subject, detail) VALUES (?1, 'regenerate', ?2, ?3)",
            params![now.timestamp_millis(), vaccination_id, format!("log {}", generation.log_id)],
        )?;
        tx.commit()?;
        Ok(generation)
    }
}

/// One recorded outcome for [`Store::finish_batch`].
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The notification log id (in `sending`).
    pub log_id: i64,
    /// Its new state.
    pub finish: Finish,
    /// The attempt.
    pub attempt: Attempt,
}

/// The claim query. The planner left alone sorts every queued row and checks each against
/// every earlier one (quadratic: 400 ms per claim at 2,000 queued). Pinned instead: the
/// (provider_id, status) index holds rowids in order, so `ORDER BY id` walks it and stops at
/// the limit; the per-patient check goes patient → vaccinations → their rows.
pub(crate) const CLAIM_SQL: &str =
    "SELECT n.id, n.vaccination_id, n.provider_id, n.control_id, n.message, n.attempts
     FROM notification_log n INDEXED BY notification_log_provider
     JOIN vaccination v ON v.id = n.vaccination_id
     WHERE n.provider_id = ?1 AND n.status = 'queued' AND n.next_attempt_at <= ?2
       AND NOT EXISTS (
         SELECT 1 FROM vaccination pv INDEXED BY vaccination_patient
         JOIN notification_log e INDEXED BY notification_log_vaccination
           ON e.vaccination_id = pv.id
         WHERE pv.patient_id = v.patient_id AND e.id < n.id
           AND e.provider_id = n.provider_id AND e.status IN ('queued', 'sending'))
     ORDER BY n.id LIMIT ?3";

impl Store {
    /// Claims up to `limit` due `queued` rows of one provider, oldest first, first-in first-out
    /// per patient: a row is taken only when no earlier row of the same patient for the same
    /// provider is still `queued` or `sending`, so a later dose never overtakes an earlier one
    /// (not even one waiting out a retry delay).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn claim_for(
        &mut self,
        provider_id: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<Claim>> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let claims = {
            let mut stmt = tx.prepare_cached(CLAIM_SQL)?;
            let rows = stmt.query_map(
                params![provider_id, now_ms, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| {
                    Ok(Claim {
                        log_id: r.get(0)?,
                        vaccination_id: r.get(1)?,
                        provider_id: r.get(2)?,
                        control_id: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                        message: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                        attempts: r.get(5)?,
                    })
                },
            )?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        {
            let mut upd = tx.prepare_cached(
                "UPDATE notification_log SET status = 'sending', updated_at = ?2 WHERE id = ?1",
            )?;
            for c in &claims {
                upd.execute(params![c.log_id, now_ms])?;
            }
        }
        tx.commit()?;
        Ok(claims)
    }

    /// Records many send outcomes in one transaction (one fsync for all: the forwarder's group
    /// commit). Each row moves with its attempt; a row not in `sending` is skipped and its id
    /// returned.
    ///
    /// # Errors
    /// SQLite errors (then nothing of the batch is recorded).
    pub fn finish_batch(&mut self, outcomes: &[Outcome]) -> Result<Vec<i64>> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = now_ms();
        let mut skipped = Vec::new();
        for o in outcomes {
            if finish_in(&tx, o.log_id, &o.finish, &o.attempt, now)? {
                continue;
            }
            skipped.push(o.log_id);
        }
        tx.commit()?;
        Ok(skipped)
    }

    /// Puts claimed rows that were never sent back to `queued`, with no attempt recorded (a
    /// shutdown or a paused IIS).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn release(&mut self, log_ids: &[i64]) -> Result<usize> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut n = 0;
        {
            let mut upd = tx.prepare_cached(
                "UPDATE notification_log SET status = 'queued', updated_at = ?2
                 WHERE id = ?1 AND status = 'sending'",
            )?;
            let now = now_ms();
            for id in log_ids {
                n += upd.execute(params![id, now])?;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    /// When the next `queued` row of `provider_id` is due (ms), if any.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn next_due(&self, provider_id: &str) -> Result<Option<i64>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT min(next_attempt_at) FROM notification_log
                 WHERE provider_id = ?1 AND status = 'queued'",
            )?
            .query_row(params![provider_id], |r| r.get(0))?)
    }

    /// Makes due at `now_ms` every `queued` row of `provider_id` scheduled later than
    /// `now_ms + max_wait_ms`. No retry is ever scheduled that far (`retry_max_ms` caps the
    /// backoff), so such a time was written by a clock that has since gone back; left alone,
    /// the row would wait out the jump. Returns how many rows were rescheduled.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn reschedule_beyond(
        &self,
        provider_id: &str,
        now_ms: i64,
        max_wait_ms: i64,
    ) -> Result<usize> {
        Ok(self
            .conn
            .prepare_cached(
                "UPDATE notification_log SET next_attempt_at = ?2
             WHERE provider_id = ?1 AND status = 'queued' AND next_attempt_at > ?3",
            )?
            .execute(params![provider_id, now_ms, now_ms.saturating_add(max_wait_ms)])?)
    }

    /// How many `queued` rows of `provider_id` are due at `now_ms`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn due_count(&self, provider_id: &str, now_ms: i64) -> Result<u64> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM notification_log
                 WHERE provider_id = ?1 AND status = 'queued' AND next_attempt_at <= ?2",
            )?
            .query_row(params![provider_id, now_ms], |r| r.get(0))?)
    }
}

/// Moves one `sending` row to its outcome and records the attempt; false when the row was not
/// in `sending`.
fn finish_in(
    tx: &Transaction<'_>,
    log_id: i64,
    finish: &Finish,
    attempt: &Attempt,
    now: i64,
) -> Result<bool> {
    let changed = match finish {
        Finish::Accepted { ack_code, ack, ack_errors }
        | Finish::Rejected { ack_code, ack, ack_errors } => {
            let status =
                if matches!(finish, Finish::Accepted { .. }) { "accepted" } else { "rejected" };
            tx.prepare_cached(
                "UPDATE notification_log SET status = ?2, ack_code = ?3, ack = ?4,
                   ack_errors = ?5, attempts = attempts + 1, next_attempt_at = NULL,
                   finished_at = ?6, updated_at = ?6
                 WHERE id = ?1 AND status = 'sending'",
            )?
            .execute(params![log_id, status, ack_code, ack, ack_errors, now])?
        }
        Finish::Retry { next_attempt_at } => tx
            .prepare_cached(
                "UPDATE notification_log SET status = 'queued', attempts = attempts + 1,
                   next_attempt_at = ?2, updated_at = ?3
                 WHERE id = ?1 AND status = 'sending'",
            )?
            .execute(params![log_id, next_attempt_at, now])?,
        Finish::Failed { reason } => tx
            .prepare_cached(
                "UPDATE notification_log SET status = 'failed', reasons = ?2,
                   attempts = attempts + 1, next_attempt_at = NULL, finished_at = ?3,
                   updated_at = ?3
                 WHERE id = ?1 AND status = 'sending'",
            )?
            .execute(params![log_id, reason, now])?,
    };
    if changed != 1 {
        return Ok(false);
    }
    if !matches!(finish, Finish::Retry { .. }) {
        // A final outcome of a record that came from Dataverse: queue its write-back.
        tx.prepare_cached(
            "INSERT INTO dataverse_outbox (log_id, kind, payload, next_attempt_at, created_at)
             SELECT ?1, 'outcome', '', ?2, ?2 WHERE EXISTS (
               SELECT 1 FROM notification_log n JOIN dataverse_row d ON d.vaccination_id = n.vaccination_id
               WHERE n.id = ?1)",
        )?
        .execute(params![log_id, now])?;
    }
    tx.prepare_cached(
        "INSERT INTO attempt (log_id, started_at, duration_ms, http_status, outcome, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        log_id,
        attempt.started_at,
        attempt.duration_ms,
        attempt.http_status,
        attempt.outcome,
        attempt.error
    ])?;
    Ok(true)
}

impl Store {
    /// Queued message counts per provider (rows without a provider are listed as "").
    ///
    /// # Errors
    /// SQLite errors.
    pub fn queued_by_provider(&self) -> Result<Vec<(String, u64)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT coalesce(provider_id, ''), count(*) FROM notification_log
             WHERE status = 'queued' GROUP BY provider_id ORDER BY 1",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The claim walks the provider index in id order and stops at its limit: no sort of the
    /// queue, no scan (the quadratic plan SQLite picks when left alone).
    #[test]
    fn the_claim_walks_an_index_in_order() -> Result<()> {
        let store = Store::open_in_memory()?;
        let mut stmt = store.conn.prepare(&format!("EXPLAIN QUERY PLAN {CLAIM_SQL}"))?;
        let plan = stmt
            .query_map(params!["P", 0, 10], |r| r.get::<_, String>(3))?
            .collect::<rusqlite::Result<Vec<_>>>()?
            .join(" / ");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        assert!(!plan.contains("SCAN"), "{plan}");
        assert!(plan.contains("notification_log_provider"), "{plan}");
        assert!(plan.contains("vaccination_patient"), "{plan}");
        Ok(())
    }
}
