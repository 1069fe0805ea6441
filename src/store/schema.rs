//! Schema versions: `schema.sql` creates a fresh database; `upgrade_from` steps an older one
//! forward. Both run at open, in one transaction, under `PRAGMA user_version`.
//!
//! Never edit a shipped upgrade step; add one, bump [`END_VERSION`], and update `schema.sql`
//! to the result (the upgrade test compares the two).

use rusqlite::Transaction;

/// The schema version this binary writes.
pub const END_VERSION: u32 = 3;

/// The complete current schema.
pub const SCHEMA_SQL: &str = include_str!("../../schema.sql");

/// Brings a database at `version` (0 = empty) to [`END_VERSION`].
pub(crate) fn upgrade_from(tx: &Transaction<'_>, version: u32) -> rusqlite::Result<()> {
    match version {
        0 => tx.execute_batch(SCHEMA_SQL),
        1 => {
            tx.execute_batch(
                "CREATE TABLE secret (
    name            TEXT PRIMARY KEY,
    sealed          BLOB NOT NULL,
    updated_at      INTEGER NOT NULL
) STRICT;
CREATE TABLE dataverse_row (
    vaccination_id  TEXT PRIMARY KEY,
    etag            TEXT,
    modified_on     TEXT,
    written_etag    TEXT,
    updated_at      INTEGER NOT NULL
) STRICT;",
            )?;
            upgrade_from(tx, 2)
        }
        // Version 3: no index on vaccination.provider_id. No query looks vaccinations up by
        // provider (the queue and `log --provider` use notification_log_provider), and it was
        // one of eleven index entries written per imported record.
        2 => {
            tx.execute_batch("DROP INDEX IF EXISTS vaccination_provider;")?;
            upgrade_from(tx, 3)
        }
        _ => Ok(()),
    }
}
