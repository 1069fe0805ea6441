//! What the store keeps for Dataverse: which records came from it (with the ETag last read and
//! the one our own write-back produced), and the write-back queue (`dataverse_outbox`).
//!
//! A final outcome (`accepted`, `rejected`, `failed`) of a record that came from Dataverse
//! queues one write-back in the same transaction that records the outcome
//! (`outbox::finish_in`), so nothing is lost while Dataverse is unreachable.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{Result, Store, now_ms};

/// One queued write-back with what it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncItem {
    /// The `dataverse_outbox` row.
    pub outbox_id: i64,
    /// Attempts so far.
    pub attempts: u32,
    /// The notification log row.
    pub log_id: i64,
    /// The vaccination (the Dataverse row id).
    pub vaccination_id: String,
    /// Its state.
    pub status: String,
    /// MSH-10.
    pub control_id: Option<String>,
    /// The VXU.
    pub message: Option<String>,
    /// MSA-1.
    pub ack_code: Option<String>,
    /// The raw ACK.
    pub ack: Option<String>,
    /// ERR segments (JSON) or the failure reasons.
    pub errors: Option<String>,
    /// Send attempts of the message.
    pub send_attempts: u32,
    /// When the message was generated (ms).
    pub created_at: i64,
    /// When it reached its outcome (ms).
    pub finished_at: Option<i64>,
    /// The vaccination row's ETag as last known.
    pub etag: Option<String>,
    /// Its `modifiedon` as last read.
    pub modified_on: Option<String>,
}

impl Store {
    /// Records the Dataverse version of rows just taken in: (id, ETag, modifiedon).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn note_dataverse_rows(
        &mut self,
        rows: &[(String, Option<String>, Option<String>)],
    ) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut up = tx.prepare_cached(
                "INSERT INTO dataverse_row (vaccination_id, etag, modified_on, updated_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (vaccination_id) DO UPDATE SET etag = excluded.etag,
                   modified_on = excluded.modified_on, updated_at = excluded.updated_at",
            )?;
            let now = now_ms();
            for (id, etag, modified) in rows {
                up.execute(params![id, etag, modified, now])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The ETags our own write-backs produced, for `ids` that have one.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn own_writes(&self, ids: &[&str]) -> Result<HashMap<String, String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT written_etag FROM dataverse_row WHERE vaccination_id = ?1 AND written_etag IS NOT NULL",
        )?;
        let mut out = HashMap::new();
        for id in ids {
            if let Some(e) = stmt.query_row([id], |r| r.get::<_, String>(0)).optional()? {
                out.insert((*id).to_owned(), e);
            }
        }
        Ok(out)
    }

    /// Write-backs due at `now_ms`, oldest first.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn due_syncs(&self, now_ms: i64, limit: usize) -> Result<Vec<SyncItem>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT o.id, o.attempts, n.id, n.vaccination_id, n.status, n.control_id, n.message,
                    n.ack_code, n.ack, coalesce(n.ack_errors, n.reasons), n.attempts, n.created_at,
                    n.finished_at, d.etag, d.modified_on
             FROM dataverse_outbox o
             JOIN notification_log n ON n.id = o.log_id
             LEFT JOIN dataverse_row d ON d.vaccination_id = n.vaccination_id
             WHERE o.done_at IS NULL AND o.next_attempt_at <= ?1
             ORDER BY o.id LIMIT ?2",
        )?;
        let rows =
            stmt.query_map(params![now_ms, i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                Ok(SyncItem {
                    outbox_id: r.get(0)?,
                    attempts: r.get(1)?,
                    log_id: r.get(2)?,
                    vaccination_id: r.get(3)?,
                    status: r.get(4)?,
                    control_id: r.get(5)?,
                    message: r.get(6)?,
                    ack_code: r.get(7)?,
                    ack: r.get(8)?,
                    errors: r.get(9)?,
                    send_attempts: r.get(10)?,
                    created_at: r.get(11)?,
                    finished_at: r.get(12)?,
                    etag: r.get(13)?,
                    modified_on: r.get(14)?,
                })
            })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Marks a write-back done: the outbox row, the notification log's `synced_at`, and the
    /// vaccination row's new ETag (ours: the next pull skips that version), in one transaction.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn sync_done(&mut self, item: &SyncItem, new_etag: Option<&str>) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = now_ms();
        tx.execute(
            "UPDATE dataverse_outbox SET done_at = ?2, last_error = NULL WHERE id = ?1",
            params![item.outbox_id, now],
        )?;
        tx.execute(
            "UPDATE notification_log SET synced_at = ?2 WHERE id = ?1",
            params![item.log_id, now],
        )?;
        if let Some(etag) = new_etag {
            tx.execute(
                "UPDATE dataverse_row SET etag = ?2, written_etag = ?2, updated_at = ?3 WHERE vaccination_id = ?1",
                params![item.vaccination_id, etag, now],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records a failed write-back: try again at `next_attempt_at`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn sync_failed(&mut self, outbox_id: i64, error: &str, next_attempt_at: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE dataverse_outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3 WHERE id = ?1",
            params![outbox_id, error, next_attempt_at],
        )?;
        Ok(())
    }

    /// Write-backs waiting (the Dataverse sync backlog).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn sync_backlog(&self) -> Result<u64> {
        Ok(self.conn.query_row(
            "SELECT count(*) FROM dataverse_outbox WHERE done_at IS NULL",
            [],
            |r| r.get(0),
        )?)
    }
}
