//! `izrelay import FILE`: canonical records from a JSON array or NDJSON, streamed.
//!
//! The file is never loaded whole: NDJSON is read a line at a time and a JSON array an element
//! at a time, and records go to the store in batched transactions. A line that is not a record
//! (bad JSON, unknown field) is reported with its line number and skipped; nothing valid in the
//! file is lost because of a bad neighbour. In an array a syntax error ends the array (JSON
//! cannot be re-synchronised), and is reported with its line and column; records before it
//! are kept.

use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::mpsc::{SyncSender, sync_channel};

use chrono::{DateTime, FixedOffset};
use serde::de::{self, Deserializer as _, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::hl7::Profiles;
use crate::record::Record;
use crate::store::records::Prepared;
use crate::store::{self, Store, records::IntakeCounts};

/// Records per transaction.
pub const BATCH: usize = 1000;

/// How many bad inputs are kept with their text (all are counted).
pub const BAD_KEPT: usize = 100;

/// One input that is not a record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BadInput {
    /// Where: `line 17` (NDJSON), `record 3` or `line 40 column 2` (array).
    pub at: String,
    /// Why.
    pub error: String,
}

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.error)
    }
}

/// The result of an import.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportReport {
    /// What happened to the records.
    pub counts: IntakeCounts,
    /// Inputs that were not records (the first [`BAD_KEPT`]).
    pub bad: Vec<BadInput>,
    /// How many inputs were not records.
    pub bad_total: u64,
}

/// Import errors (bad records are not errors: they are in the report).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The store failed; the batch in progress was rolled back.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The store failed after earlier batches were committed: those records stay stored.
    #[error(
        "the database failed after {stored} records of this file were stored; they stay \
         stored (import the file again once the problem is fixed: stored records count as \
         unchanged)"
    )]
    StoppedAfter {
        /// Records in the batches committed before the failure.
        stored: u64,
        /// The store's error; the batch in progress was rolled back.
        source: store::Error,
    },
}

/// The reading side: parses and prepares records into batches for the store thread.
struct Batcher<'s> {
    profiles: &'s Profiles,
    now: DateTime<FixedOffset>,
    pending: Vec<Prepared>,
    out: SyncSender<Vec<Prepared>>,
    /// The store side stopped (a database error): stop reading.
    closed: bool,
    bad: Vec<BadInput>,
    bad_total: u64,
}

impl Batcher<'_> {
    fn record(&mut self, rec: Record, at: impl FnOnce() -> String) {
        match Prepared::new(rec, self.profiles, self.now) {
            Ok(p) => self.pending.push(p),
            Err(e) => self.bad(at(), e.to_string()),
        }
        if self.pending.len() >= BATCH {
            self.flush();
        }
    }

    fn bad(&mut self, at: String, error: String) {
        self.bad_total += 1;
        if self.bad.len() < BAD_KEPT {
            self.bad.push(BadInput { at, error });
        }
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() && !self.closed {
            let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(BATCH));
            self.closed = self.out.send(batch).is_err();
        }
    }
}

/// Imports `path` into `store`; `progress` is told the bytes read so far.
///
/// Three threads: this one writes batches to the store while a reader thread parses the next
/// batch, hashes each record and generates its message, so the CPU work overlaps the disk's,
/// and a third checkpoints the WAL into the database file on its own connection.
///
/// # Errors
/// [`Error::Read`] when the file cannot be read, [`Error::Store`] when the database fails.
pub fn import_file(
    store: &mut Store,
    path: &Path,
    profiles: &Profiles,
    now: DateTime<FixedOffset>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ImportReport, Error> {
    let read_err = |source| Error::Read { path: path.display().to_string(), source };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let saved = store.bulk_begin()?;
    let checkpointer = store.checkpointer().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "no checkpoint thread; the writer checkpoints");
        None
    });
    let result = std::thread::scope(|scope| {
        // Checkpoints run on their own connection and thread, woken after every commit, so
        // the store thread only appends to the WAL (copying pages into the database file and
        // syncing it was ~15 % of its time). One last checkpoint when the import ends.
        let (ckpt_tx, ckpt_rx) = sync_channel::<()>(1);
        if let Some(ckpt) = checkpointer {
            scope.spawn(move || {
                for () in ckpt_rx {
                    if let Err(e) = ckpt.passive() {
                        tracing::warn!(error = %e, "checkpoint failed");
                    }
                }
                if let Err(e) = ckpt.passive() {
                    tracing::warn!(error = %e, "checkpoint failed");
                }
            });
        }
        let (tx, rx) = sync_channel::<Vec<Prepared>>(2);
        let reader = scope.spawn(move || {
            let mut b = Batcher {
                profiles,
                now,
                pending: Vec::with_capacity(BATCH),
                out: tx,
                closed: false,
                bad: Vec::new(),
                bad_total: 0,
            };
            let result = read_all(file, progress, &mut b);
            b.flush();
            (result, b.bad, b.bad_total)
        });
        let mut report = ImportReport::default();
        let mut store_error = None;
        for batch in rx {
            match store.intake_prepared(batch, now) {
                Ok(counts) => {
                    report.counts.add(&counts);
                    let _ = ckpt_tx.try_send(());
                }
                Err(e) => {
                    store_error = Some(e);
                    break;
                }
            }
        }
        drop(ckpt_tx);
        let joined = reader.join();
        if let Some(e) = store_error {
            return Err(match report.counts.received {
                0 => Error::Store(e),
                stored => Error::StoppedAfter { stored, source: e },
            });
        }
        let (result, bad, bad_total) = joined.map_err(|_| {
            read_err(std::io::Error::other("the reader thread stopped unexpectedly"))
        })?;
        result.map_err(read_err)?;
        report.bad = bad;
        report.bad_total = bad_total;
        Ok(report)
    });
    let restored = store.bulk_end(saved);
    let report = result?;
    restored?;
    Ok(report)
}

/// Reads the whole file into `b`: a JSON array if its first byte is `[`, else NDJSON.
fn read_all(
    file: std::fs::File,
    progress: &(dyn Fn(u64) + Sync),
    b: &mut Batcher<'_>,
) -> std::io::Result<()> {
    let mut reader = BufReader::with_capacity(1 << 16, Counting { inner: file, read: 0, progress });
    // Skip a BOM and whitespace, then look at the first byte: `[` means a JSON array.
    let first = loop {
        let buf = reader.fill_buf()?;
        let Some(pos) =
            buf.iter().position(|c| !c.is_ascii_whitespace() && !matches!(c, 0xEF | 0xBB | 0xBF))
        else {
            if buf.is_empty() {
                break None;
            }
            let n = buf.len();
            reader.consume(n);
            continue;
        };
        break Some(buf[pos]);
    };
    match first {
        None => Ok(()),
        Some(b'[') => {
            read_array(&mut reader, b);
            Ok(())
        }
        Some(_) => read_ndjson(&mut reader, b),
    }
}

struct Counting<'p, R> {
    inner: R,
    read: u64,
    progress: &'p (dyn Fn(u64) + Sync),
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        (self.progress)(self.read);
        Ok(n)
    }
}

/// NDJSON: one record per line; a store error stops the import, a bad line does not.
fn read_ndjson(reader: &mut impl BufRead, b: &mut Batcher<'_>) -> std::io::Result<()> {
    let mut line = String::new();
    let mut bytes = Vec::new();
    let mut number = 0usize;
    while !b.closed {
        bytes.clear();
        if reader.read_until(b'\n', &mut bytes)? == 0 {
            break;
        }
        number += 1;
        line.clear();
        match std::str::from_utf8(&bytes) {
            Ok(s) => line.push_str(s.trim_start_matches('\u{feff}')),
            Err(e) => {
                b.bad(format!("line {number}"), format!("not UTF-8 text: {e}"));
                continue;
            }
        }
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(&line) {
            Ok(rec) => b.record(rec, || format!("line {number}")),
            Err(e) => b.bad(format!("line {number}"), without_position(&e)),
        }
    }
    Ok(())
}

/// serde_json's message without its " at line 1 column N" tail (the line is reported instead).
fn without_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// A JSON array, one element at a time.
fn read_array(reader: &mut impl BufRead, b: &mut Batcher<'_>) {
    struct Elements<'b, 's> {
        batcher: &'b mut Batcher<'s>,
    }
    impl<'de> Visitor<'de> for Elements<'_, '_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of vaccination records")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut index = 0usize;
            while let Some(raw) = seq.next_element::<Box<RawValue>>()? {
                if self.batcher.closed {
                    return Err(de::Error::custom("the store stopped"));
                }
                index += 1;
                match serde_json::from_str::<Record>(raw.get()) {
                    Ok(rec) => self.batcher.record(rec, || format!("record {index}")),
                    Err(e) => self.batcher.bad(format!("record {index}"), without_position(&e)),
                }
            }
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_reader(reader);
    let result = de.deserialize_seq(Elements { batcher: b });
    if let (Err(e), false) = (result, b.closed) {
        b.bad(
            format!("line {} column {}", e.line(), e.column()),
            format!(
                "the JSON array is broken here and the rest is unreadable: {}",
                without_position(&e)
            ),
        );
    }
}
