//! Intake: records from a file or Dataverse into `vaccination`, and into the outbox when due.
//!
//! Rules, per record (design.md "pull"):
//! - new, or changed (different content and `modified_on` not older) and `completed` → stored
//!   and a message generated;
//! - `generate_hl7` → generated again even if unchanged, unless the newest message for it is
//!   still waiting (queued) for the same content, so re-reading a file adds nothing;
//! - `completed: false` → stored, not generated;
//! - the same record again → nothing; an older version (`modified_on` before the stored one) →
//!   ignored.

use chrono::{DateTime, FixedOffset};
use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};

use super::outbox::{Generated, INSERT_LOG_SQL, Status, generate, insert_generation};
use super::{Error, Result, Store};
use crate::hl7::Profiles;
use crate::record::Record;

/// What an intake did, by record.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct IntakeCounts {
    /// Records offered.
    pub received: u64,
    /// Not seen before.
    pub new: u64,
    /// Seen before with other content.
    pub changed: u64,
    /// Identical to what is stored.
    pub unchanged: u64,
    /// Older than what is stored (ignored).
    pub stale: u64,
    /// Stored but not complete, so not generated.
    pub not_completed: u64,
    /// Messages queued.
    pub queued: u64,
    /// Records marked invalid (with reasons).
    pub invalid: u64,
}

impl IntakeCounts {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &IntakeCounts) {
        self.received += other.received;
        self.new += other.new;
        self.changed += other.changed;
        self.unchanged += other.unchanged;
        self.stale += other.stale;
        self.not_completed += other.not_completed;
        self.queued += other.queued;
        self.invalid += other.invalid;
    }
}

/// SHA-256 of the record's canonical JSON.
pub(crate) fn record_hash(json: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, json.as_bytes()).as_ref().to_vec()
}

/// A record made ready for the store: its canonical JSON, the hash of that, and (for a
/// completed record) its message generated in advance. Preparing needs no database, so the
/// import does it on a second thread while the store writes the previous batch.
#[derive(Debug)]
pub struct Prepared {
    key: Key,
    json: String,
    hash: Vec<u8>,
    generated: Option<Generated>,
}

/// The fields of a record the store thread needs; the rest of the record is dropped on the
/// preparing thread (freeing a record's forty strings is work the writer need not do).
#[derive(Debug)]
struct Key {
    vaccination_id: String,
    provider_id: Option<String>,
    patient_id: String,
    cvx: String,
    lot: Option<String>,
    completed: bool,
    generate_hl7: bool,
    modified_on: Option<String>,
}

impl Prepared {
    /// Prepares `rec` with the message profile of its provider.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if the record cannot be serialised (it always can).
    pub fn new(mut rec: Record, profiles: &Profiles, now: DateTime<FixedOffset>) -> Result<Self> {
        // The stored JSON and its hash are the record's content. The source's modified time
        // and the Generate HL7 flag are not content: a row that comes back with only those
        // changed (our own write-back clearing the flag and setting the HL7 status, raced by a
        // pull that read it before the write-back's ETag was recorded) is unchanged, and is
        // never reported a second time.
        let modified_on = rec.modified_on.take();
        let generate_hl7 = std::mem::replace(&mut rec.generate_hl7, false);
        let json = serde_json::to_string(&rec).map_err(|e| Error::Corrupt(e.to_string()))?;
        let hash = record_hash(&json);
        // Generated now, used only if the store finds the record new or changed; a discarded
        // generation just leaves an MSH-10 unused.
        let generated =
            rec.completed.then(|| generate(&rec, profiles.get(rec.provider_id.as_deref()), now));
        let key = Key {
            vaccination_id: rec.vaccination_id,
            provider_id: rec.provider_id,
            patient_id: rec.patient.id,
            cvx: rec.vaccine.cvx,
            lot: rec.vaccine.lot,
            completed: rec.completed,
            generate_hl7,
            modified_on,
        };
        Ok(Self { key, json, hash, generated })
    }
}

impl Prepared {
    /// A source row that could not be mapped to a record (Dataverse): it is kept, under its
    /// id, as the raw row (`{"unmapped": row}`), and when complete gets an `invalid`
    /// notification log row holding every mapping error (field and column), so it shows in the
    /// audit and is fixed at the source; the next pull brings the fixed row as a new version.
    #[allow(clippy::too_many_arguments)]
    pub fn unmappable(
        vaccination_id: String,
        provider_id: Option<String>,
        completed: bool,
        generate_hl7: bool,
        modified_on: Option<String>,
        row: &serde_json::Value,
        violations: Vec<crate::hl7::Violation>,
    ) -> Result<Self> {
        let json = serde_json::to_string(&serde_json::json!({ "unmapped": row }))
            .map_err(|e| Error::Corrupt(e.to_string()))?;
        let hash = record_hash(&json);
        let key = Key {
            vaccination_id,
            provider_id,
            patient_id: String::new(),
            cvx: String::new(),
            lot: None,
            completed,
            generate_hl7,
            modified_on,
        };
        Ok(Self { key, json, hash, generated: completed.then_some(Err(violations)) })
    }
}

impl Store {
    /// Takes a batch of records in one transaction.
    ///
    /// # Errors
    /// SQLite errors (the whole batch is rolled back).
    pub fn intake(
        &mut self,
        records: &[Record],
        profiles: &Profiles,
        now: DateTime<FixedOffset>,
    ) -> Result<IntakeCounts> {
        let prepared = records
            .iter()
            .map(|r| Prepared::new(r.clone(), profiles, now))
            .collect::<Result<Vec<_>>>()?;
        self.intake_prepared(prepared, now)
    }

    /// Takes a batch of prepared records in one transaction.
    ///
    /// # Errors
    /// SQLite errors (the whole batch is rolled back).
    pub fn intake_prepared(
        &mut self,
        batch: Vec<Prepared>,
        now: DateTime<FixedOffset>,
    ) -> Result<IntakeCounts> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut counts = IntakeCounts::default();
        let mut stored = stored_versions(&tx, &batch)?;
        {
            // Prepared once per batch: looking a statement up in rusqlite's cache for every
            // record (hashing its SQL, moving it in and out of the cache) was ~7 % of the
            // store thread's instructions.
            let mut stmts = Statements {
                upsert: tx.prepare_cached(UPSERT_SQL)?,
                insert_log: tx.prepare_cached(INSERT_LOG_SQL)?,
            };
            for p in batch {
                intake_one(&tx, &mut stmts, p, now, &mut stored, &mut counts)?;
            }
        }
        tx.commit()?;
        Ok(counts)
    }
}

/// The stored hash and `modified_on` of each record of the batch that is already stored,
/// in one query per batch rather than one per record.
fn stored_versions(tx: &Transaction<'_>, batch: &[Prepared]) -> Result<Versions> {
    let mut out = Versions::with_capacity(batch.len());
    // SQLite allows 32,766 parameters; batches are far smaller, but chunk anyway.
    for chunk in batch.chunks(500) {
        let placeholders = vec!["?"; chunk.len()].join(",");
        let sql = format!(
            "SELECT id, record_hash, modified_on FROM vaccination WHERE id IN ({placeholders})"
        );
        let mut stmt = tx.prepare_cached(&sql)?;
        let ids = chunk.iter().map(|p| p.key.vaccination_id.as_str());
        let rows = stmt.query_map(rusqlite::params_from_iter(ids), |r| {
            Ok((r.get::<_, String>(0)?, (r.get::<_, Vec<u8>>(1)?, r.get::<_, Option<String>>(2)?)))
        })?;
        for row in rows {
            let (id, version) = row?;
            out.insert(id, version);
        }
    }
    Ok(out)
}

/// Stores a record version: a new row, or the new content of a known one.
const UPSERT_SQL: &str =
    "INSERT INTO vaccination (id, provider_id, patient_id, cvx, lot, completed, modified_on,
                              record_hash, record_json, received_at, updated_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)
     ON CONFLICT (id) DO UPDATE SET provider_id = excluded.provider_id,
       patient_id = excluded.patient_id, cvx = excluded.cvx, lot = excluded.lot,
       completed = excluded.completed, modified_on = excluded.modified_on,
       record_hash = excluded.record_hash, record_json = excluded.record_json,
       updated_at = excluded.updated_at";

/// The statements an intake runs for every record, prepared once per batch.
struct Statements<'c> {
    upsert: rusqlite::CachedStatement<'c>,
    insert_log: rusqlite::CachedStatement<'c>,
}

/// Stored versions by vaccination id: (record hash, modified_on).
type Versions = std::collections::HashMap<String, (Vec<u8>, Option<String>)>;

fn intake_one(
    tx: &Transaction<'_>,
    stmts: &mut Statements<'_>,
    p: Prepared,
    now: DateTime<FixedOffset>,
    versions: &mut Versions,
    counts: &mut IntakeCounts,
) -> Result<()> {
    let Prepared { key: rec, json, hash, generated } = p;
    counts.received += 1;
    let ms = now.timestamp_millis();
    let stored = versions.get(&rec.vaccination_id).cloned();
    let changed = match &stored {
        None => {
            counts.new += 1;
            true
        }
        Some((old_hash, _)) if *old_hash == hash => {
            counts.unchanged += 1;
            false
        }
        Some((_, old_modified)) => {
            // RFC 3339 UTC strings order like times; a missing side counts as newer.
            let older =
                matches!((&rec.modified_on, old_modified), (Some(new), Some(old)) if new < old);
            if older {
                counts.stale += 1;
                return Ok(());
            }
            counts.changed += 1;
            true
        }
    };
    if changed {
        stmts.upsert.execute(params![
            rec.vaccination_id,
            rec.provider_id,
            rec.patient_id,
            rec.cvx,
            rec.lot,
            rec.completed,
            rec.modified_on,
            hash,
            json,
            ms
        ])?;
    }
    if changed {
        // A later record of the same batch compares against this version.
        versions.insert(rec.vaccination_id.clone(), (hash.clone(), rec.modified_on.clone()));
    }
    if !rec.completed {
        counts.not_completed += 1;
        return Ok(());
    }
    let wanted = changed || (rec.generate_hl7 && !pending_for(tx, &rec.vaccination_id, &hash)?);
    if wanted {
        // Every completed record was generated when it was prepared.
        let generated = generated.ok_or_else(|| {
            Error::Corrupt(format!("vaccination {}: no message prepared", rec.vaccination_id))
        })?;
        let first = stored.is_none();
        let generation = insert_generation(
            tx,
            &mut stmts.insert_log,
            &rec.vaccination_id,
            rec.provider_id.as_deref(),
            &hash,
            generated,
            first,
            now,
        )?;
        match generation.status {
            Status::Invalid => counts.invalid += 1,
            _ => counts.queued += 1,
        }
    }
    Ok(())
}

/// True when the newest message of the vaccination is still waiting and was built from `hash`.
fn pending_for(tx: &Transaction<'_>, vaccination_id: &str, hash: &[u8]) -> Result<bool> {
    let newest: Option<(String, Vec<u8>)> = tx
        .prepare_cached(
            "SELECT status, record_hash FROM notification_log WHERE vaccination_id = ?1
             ORDER BY id DESC LIMIT 1",
        )?
        .query_row(params![vaccination_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(newest.is_some_and(|(status, h)| {
        matches!(status.as_str(), "queued" | "sending" | "invalid") && h == hash
    }))
}
