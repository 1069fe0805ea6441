//! Schema versions: `schema.sql` creates a fresh database; `upgrade_from` steps an older one
//! forward. Both run at open, in one transaction, under `PRAGMA user_version`.
//!
//! Never edit a shipped upgrade step; add one, bump [`END_VERSION`], and update `schema.sql`
//! to the result (the upgrade test compares the two).

use rusqlite::Transaction;

/// The schema version this binary writes.
pub const END_VERSION: u32 = 4;

/// The complete current schema.
pub const SCHEMA_SQL: &str = include_str!("../../schema.sql");

/// notification_log's status CHECK up to version 3 ...
const V3_STATUS_CHECK: &str = "CHECK (status IN
                        ('invalid','queued','sending','accepted','rejected','failed','superseded'))";
/// ... and from version 4 (as in `schema.sql`).
const V4_STATUS_CHECK: &str = "CHECK (status = 'invalid' OR status = 'queued'
                        OR status = 'sending' OR status = 'accepted' OR status = 'rejected'
                        OR status = 'failed' OR status = 'superseded')";

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
        // Version 4: notification_log's status CHECK as a chain of `=`. SQLite evaluates
        // `status IN (7 values)` by building and dropping a temporary index for every row
        // written (~3 % of an import's store thread). Both forms accept the same values, so
        // the stored table definition is edited in place, as SQLite documents for changing a
        // CHECK constraint (lang_altertable.html, "other kinds of table schema changes"):
        // instant on a database of any size, where rebuilding the table would copy every row.
        3 => {
            let version: i64 = tx.pragma_query_value(None, "schema_version", |r| r.get(0))?;
            tx.pragma_update(None, "writable_schema", true)?;
            let edited = tx.execute(
                "UPDATE sqlite_schema SET sql = replace(sql, ?1, ?2)
                 WHERE type = 'table' AND name = 'notification_log'",
                [V3_STATUS_CHECK, V4_STATUS_CHECK],
            );
            // Set back before any error is returned: the pragma is per connection.
            let bumped = tx.pragma_update(None, "schema_version", version + 1);
            tx.pragma_update(None, "writable_schema", false)?;
            edited?;
            bumped?;
            upgrade_from(tx, 4)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_4_status_check_is_the_one_schema_sql_creates() {
        assert!(SCHEMA_SQL.contains(V4_STATUS_CHECK));
        assert!(!SCHEMA_SQL.contains(V3_STATUS_CHECK));
    }
}
