//! The local store: one SQLite file holds every record, message, attempt and response.
//!
//! [`Store::open`] creates the file 0600, turns on WAL with `synchronous=FULL` (an acknowledged
//! state change survives power loss), foreign keys and a busy timeout, and upgrades an older
//! schema in one transaction; a database newer than this binary is refused. One `Store` is one
//! writer connection; writers use `BEGIN IMMEDIATE` so two processes never deadlock on upgrade
//! from a read lock. Submodules: `outbox` (the state machine), `audit` (the queries staff run),
//! `credentials` (IIS endpoints and their sealed passwords).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

pub mod audit;
pub mod credentials;
pub mod dataverse;
pub mod outbox;
pub mod records;
mod schema;

pub use credentials::{Endpoint, EndpointInfo};
pub use schema::END_VERSION;

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SQLite failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file could not be created or its mode set.
    #[error("cannot create {path}: {source}")]
    Create {
        /// The database path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The database was written by a newer izrelay.
    #[error(
        "{path} has schema version {found}, newer than this izrelay understands ({END_VERSION}); \
         upgrade izrelay, or point --data-dir at another directory"
    )]
    TooNew {
        /// The database path.
        path: PathBuf,
        /// Its `user_version`.
        found: u32,
    },
    /// SQLite found the database file damaged (`quick_check`, or a read that hit a bad page).
    #[error(
        "the database {path} is damaged ({detail}); izrelay will not write to it: stop every \
         izrelay process, keep a copy of the file, and restore it from a backup"
    )]
    Damaged {
        /// The database path.
        path: PathBuf,
        /// What SQLite reported.
        detail: String,
    },
    /// Another process held a write lock on the database longer than [`BUSY_TIMEOUT`].
    #[error(
        "the database {path} is locked by another process (waited {} s): another izrelay \
         command, or a tool holding a write transaction on it, is still running; try again when \
         it is done",
        BUSY_TIMEOUT.as_secs()
    )]
    Locked {
        /// The database path.
        path: PathBuf,
    },
    /// A stored record or value could not be read back.
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
    /// No such row.
    #[error("{0} not found")]
    NotFound(String),
    /// The record came from Dataverse and could not be mapped; it cannot be regenerated here.
    #[error(
        "vaccination {0} could not be mapped from its Dataverse row (see `izrelay history {0}` \
         for the fields and columns); fix it in Dataverse and the next pull brings it back"
    )]
    Unmapped(String),
    /// Credentials could not be sealed, opened or checked (wrong key, bad settings).
    #[error(transparent)]
    Vault(#[from] crate::config::vault::Error),
}

/// The store's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// The database.
#[derive(Debug)]
pub struct Store {
    pub(crate) conn: Connection,
    path: PathBuf,
}

/// How long a writer waits for another process's lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Page size of a new database file, in bytes (SQLite's default is 4,096). A stored record
/// (~1.4 KB of JSON) and its message (~1.5 KB of VXU) fill a 4 KiB page two or three to a page,
/// with the rest of the page left over; at 8 KiB the same rows leave less unused, there are half
/// as many pages and b-tree levels to walk and balance, and each WAL frame carries twice the
/// data for one header and checksum. Measured on a 20,000-record import (BENCHMARKS.md, store):
/// 19 % fewer bytes on disk and ~20 % less CPU for the inserts. 16 KiB saves only a little more
/// and doubles what every single-row update (a send's outcome) writes to the WAL.
pub const PAGE_SIZE: u32 = 8192;

impl Store {
    /// Opens (creating 0600 if needed) and upgrades the database at `path`.
    ///
    /// # Errors
    /// [`Error::TooNew`] for a database from a newer izrelay; I/O and SQLite errors otherwise.
    pub fn open(path: &Path) -> Result<Self> {
        create_private(path)?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| damaged(path, e))?;
        Self::setup(conn, path.to_path_buf()).map_err(|e| match e {
            Error::Sqlite(e) => damaged(path, e),
            e => e,
        })
    }

    /// `PRAGMA quick_check`: the structure of every page is read and checked (not the index
    /// contents), in time proportional to the file size. Run before a long write (import) and at
    /// daemon start, so a damaged file is reported instead of written to.
    ///
    /// # Errors
    /// [`Error::Damaged`] naming the file and the first problems found; SQLite errors.
    pub fn quick_check(&self) -> Result<()> {
        let rows: rusqlite::Result<Vec<String>> = self
            .conn
            .prepare("PRAGMA quick_check(5)")
            .and_then(|mut stmt| stmt.query_map([], |r| r.get(0))?.collect());
        match rows.map_err(|e| damaged(&self.path, e))? {
            rows if rows == ["ok"] => Ok(()),
            rows => Err(Error::Damaged {
                path: self.path.clone(),
                detail: rows.join("; ").replace('\n', " "),
            }),
        }
    }

    /// An in-memory database (tests, `hl7` tools).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn open_in_memory() -> Result<Self> {
        Self::setup(Connection::open_in_memory()?, PathBuf::from(":memory:"))
    }

    fn setup(mut conn: Connection, path: PathBuf) -> Result<Self> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Takes effect only on a new (empty) file, so it comes before anything writes; an
        // existing database keeps the page size it was created with (a WAL database cannot
        // change it). See PAGE_SIZE.
        conn.pragma_update(None, "page_size", PAGE_SIZE)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Keep the WAL bounded: checkpoint at ~4 MiB and truncate it back afterwards.
        conn.pragma_update(None, "journal_size_limit", 4 * 1024 * 1024)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: u32 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > END_VERSION {
            return Err(Error::TooNew { path, found: version });
        }
        if version < END_VERSION {
            schema::upgrade_from(&tx, version)?;
            tx.pragma_update(None, "user_version", END_VERSION)?;
        }
        tx.commit()?;
        Ok(Self { conn, path })
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Caps this connection's page cache at `kib` KiB (SQLite's default is 2,000 KiB per
    /// connection). The daemon's connections live for hours and do index lookups that touch a
    /// few pages each; the file's pages are in the kernel's page cache anyway, so a big private
    /// copy per connection only adds to the daemon's resident memory.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn limit_page_cache(&self, kib: u32) -> Result<()> {
        Ok(self.conn.pragma_update(None, "cache_size", -i64::from(kib))?)
    }

    /// The schema version of the open database.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn version(&self) -> Result<u32> {
        Ok(self.conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    /// `PRAGMA integrity_check`: `ok` or the problems found.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn integrity_check(&self) -> Result<String> {
        let mut stmt = self.conn.prepare("PRAGMA integrity_check")?;
        let rows: Vec<String> =
            stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
        Ok(rows.join("\n"))
    }

    /// Records an administrative action.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn audit_event(
        &self,
        action: &str,
        subject: Option<&str>,
        detail: Option<&str>,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO audit_event (at, action, subject, detail) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![now_ms(), action, subject, detail],
        )?;
        Ok(())
    }
}

/// `wal_autocheckpoint` (pages) of the writer during a bulk import. A second connection
/// checkpoints after every batch ([`Store::checkpointer`]); the writer checkpoints itself only
/// when the WAL has grown past this (32 MiB at 8 KiB pages), which bounds the WAL if the other
/// one lags.
const BULK_AUTOCHECKPOINT: i64 = 4096;

/// `journal_size_limit` (bytes) of the writer during a bulk import (4 MiB otherwise). Once a
/// checkpoint has copied the whole WAL, the next commit starts writing it from the beginning
/// and cuts the file down to this limit; a batch writes ~4 MiB, so at 4 MiB every batch cut
/// the file and grew it again, and the kernel's work to drop and re-allocate those pages was
/// a third of the store thread's time (`perf`). At 64 MiB the file is kept and overwritten
/// in place; [`Store::bulk_end`] puts the limit back, and the next commit trims the file.
const BULK_JOURNAL_LIMIT: i64 = 64 * 1024 * 1024;

/// `cache_size` (KiB, negative as SQLite wants it) of the writer during a bulk import: a
/// 1,000-record batch dirties ~4.4 MiB of pages, more than the default 2 MiB cache, which made
/// SQLite spill pages to the WAL mid-transaction and read them back.
const BULK_CACHE_KIB: i64 = -16 * 1024;

/// The writer's settings saved by [`Store::bulk_begin`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Saved {
    autocheckpoint: i64,
    cache_size: i64,
    journal_size_limit: i64,
}

impl Store {
    /// Sets the writer connection up for a bulk import: a larger page cache, the WAL file kept
    /// between batches, and checkpoints left to a [`Store::checkpointer`] until the WAL grows
    /// past 4,096 pages. Durability is
    /// unchanged (`synchronous=FULL`: every commit is synced before it returns).
    pub(crate) fn bulk_begin(&self) -> Result<Saved> {
        let saved = Saved {
            autocheckpoint: self
                .conn
                .pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))?,
            cache_size: self.conn.pragma_query_value(None, "cache_size", |r| r.get(0))?,
            journal_size_limit: self
                .conn
                .pragma_query_value(None, "journal_size_limit", |r| r.get(0))?,
        };
        self.conn.pragma_update(None, "wal_autocheckpoint", BULK_AUTOCHECKPOINT)?;
        self.conn.pragma_update(None, "cache_size", BULK_CACHE_KIB)?;
        self.conn.pragma_update(None, "journal_size_limit", BULK_JOURNAL_LIMIT)?;
        Ok(saved)
    }

    /// Puts back what [`Store::bulk_begin`] changed.
    pub(crate) fn bulk_end(&self, saved: Saved) -> Result<()> {
        self.conn.pragma_update(None, "wal_autocheckpoint", saved.autocheckpoint)?;
        self.conn.pragma_update(None, "cache_size", saved.cache_size)?;
        self.conn.pragma_update(None, "journal_size_limit", saved.journal_size_limit)?;
        Ok(())
    }

    /// A second connection to the same file, to checkpoint the WAL on another thread while
    /// this one writes; `None` for an in-memory database.
    pub(crate) fn checkpointer(&self) -> Result<Option<Checkpointer>> {
        if self.path.as_os_str() == ":memory:" {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // The checkpoint syncs the WAL before copying and the database file after.
        conn.pragma_update(None, "synchronous", "FULL")?;
        Ok(Some(Checkpointer { conn }))
    }
}

/// A connection that only checkpoints (see [`Store::checkpointer`]).
#[derive(Debug)]
pub(crate) struct Checkpointer {
    conn: Connection,
}

impl Checkpointer {
    /// `PRAGMA wal_checkpoint(PASSIVE)`: copies the committed frames no reader still needs
    /// into the database file, without waiting for or blocking the writer.
    pub(crate) fn passive(&self) -> Result<()> {
        self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    }
}

/// [`Error::Damaged`] when SQLite says the file is corrupt or not a database, [`Error::Locked`]
/// when another process kept it locked past the busy timeout, else the error.
fn damaged(path: &Path, e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
            Error::Damaged { path: path.to_path_buf(), detail: e.to_string() }
        }
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            Error::Locked { path: path.to_path_buf() }
        }
        _ => Error::Sqlite(e),
    }
}

/// Creates `path` with mode 0600 when it does not exist yet.
fn create_private(path: &Path) -> Result<()> {
    let err = |source| Error::Create { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    // Never open an existing file here: closing any descriptor of a database releases every
    // POSIX lock this process holds on it, including the locks of other connections (SQLite's
    // documented "broken locks" hazard), which turns into SQLITE_IOERR for them. A file that
    // does not exist yet has no connection to break.
    if path.exists() {
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        // Another thread or process created it meanwhile: fine, and it is not ours to close.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(err(e)),
    }
}

/// Milliseconds since 1970 UTC, the store's time unit.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Formats store milliseconds as RFC 3339 (UTC), for output.
pub fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or_else(|| ms.to_string(), |t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

impl Store {
    /// A stored position of an incremental pull (`sync_cursor`).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn cursor(&self, name: &str) -> Result<Option<String>> {
        use rusqlite::OptionalExtension;
        Ok(self
            .conn
            .query_row("SELECT value FROM sync_cursor WHERE name = ?1", [name], |r| r.get(0))
            .optional()?)
    }

    /// Stores (or, with `None`, forgets) a pull position.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn set_cursor(&mut self, name: &str, value: Option<&str>) -> Result<()> {
        match value {
            Some(v) => self.conn.execute(
                "INSERT INTO sync_cursor (name, value, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                rusqlite::params![name, v, now_ms()],
            )?,
            None => self.conn.execute("DELETE FROM sync_cursor WHERE name = ?1", [name])?,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_database_has_the_current_version_and_mode_0600() -> Result<()> {
        let dir =
            tempfile::tempdir().map_err(|e| Error::Create { path: "tmp".into(), source: e })?;
        let path = dir.path().join("sub/izrelay.db");
        let store = Store::open(&path)?;
        assert_eq!(store.version()?, END_VERSION);
        assert_eq!(store.integrity_check()?, "ok");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode =
                std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
            assert_eq!(mode, 0o600);
        }
        drop(store);
        // Reopening an up-to-date database changes nothing.
        assert_eq!(Store::open(&path)?.version()?, END_VERSION);
        Ok(())
    }

    #[test]
    fn a_newer_database_is_refused() -> Result<()> {
        let dir =
            tempfile::tempdir().map_err(|e| Error::Create { path: "tmp".into(), source: e })?;
        let path = dir.path().join("izrelay.db");
        drop(Store::open(&path)?);
        Connection::open(&path)?.pragma_update(None, "user_version", END_VERSION + 1)?;
        let err = Store::open(&path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("newer than this izrelay understands"), "{err}");
        Ok(())
    }
}
