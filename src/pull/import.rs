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

use chrono::{DateTime, FixedOffset};
use serde::de::{self, Deserializer as _, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::hl7::Profiles;
use crate::record::Record;
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
}

struct Batcher<'s> {
    store: &'s mut Store,
    profiles: &'s Profiles,
    now: DateTime<FixedOffset>,
    pending: Vec<Record>,
    report: ImportReport,
}

impl Batcher<'_> {
    fn record(&mut self, rec: Record) -> Result<(), store::Error> {
        self.pending.push(rec);
        if self.pending.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn bad(&mut self, at: String, error: String) {
        self.report.bad_total += 1;
        if self.report.bad.len() < BAD_KEPT {
            self.report.bad.push(BadInput { at, error });
        }
    }

    fn flush(&mut self) -> Result<(), store::Error> {
        if !self.pending.is_empty() {
            let counts = self.store.intake(&self.pending, self.profiles, self.now)?;
            self.report.counts.add(&counts);
            self.pending.clear();
        }
        Ok(())
    }
}

/// Imports `path` into `store`; `progress` is told the bytes read so far.
///
/// # Errors
/// [`Error::Read`] when the file cannot be read, [`Error::Store`] when the database fails.
pub fn import_file(
    store: &mut Store,
    path: &Path,
    profiles: &Profiles,
    now: DateTime<FixedOffset>,
    progress: &dyn Fn(u64),
) -> Result<ImportReport, Error> {
    let read_err = |source| Error::Read { path: path.display().to_string(), source };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut reader = BufReader::with_capacity(1 << 16, Counting { inner: file, read: 0, progress });
    let mut b = Batcher {
        store,
        profiles,
        now,
        pending: Vec::with_capacity(BATCH),
        report: ImportReport::default(),
    };
    // Skip a BOM and whitespace, then look at the first byte: `[` means a JSON array.
    let first = loop {
        let buf = reader.fill_buf().map_err(read_err)?;
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
        let c = buf[pos];
        break Some(c);
    };
    match first {
        None => {}
        Some(b'[') => read_array(&mut reader, &mut b)?,
        Some(_) => read_ndjson(&mut reader, &mut b).map_err(read_err)?,
    }
    b.flush()?;
    Ok(b.report)
}

struct Counting<'p, R> {
    inner: R,
    read: u64,
    progress: &'p dyn Fn(u64),
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
    loop {
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
            Ok(rec) => b.record(rec).map_err(std::io::Error::other)?,
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
fn read_array(reader: &mut impl BufRead, b: &mut Batcher<'_>) -> Result<(), Error> {
    struct Elements<'b, 's> {
        batcher: &'b mut Batcher<'s>,
        store_error: &'b mut Option<store::Error>,
    }
    impl<'de> Visitor<'de> for Elements<'_, '_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of vaccination records")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut index = 0usize;
            while let Some(raw) = seq.next_element::<Box<RawValue>>()? {
                index += 1;
                match serde_json::from_str::<Record>(raw.get()) {
                    Ok(rec) => {
                        if let Err(e) = self.batcher.record(rec) {
                            *self.store_error = Some(e);
                            return Err(de::Error::custom("database error"));
                        }
                    }
                    Err(e) => self.batcher.bad(format!("record {index}"), without_position(&e)),
                }
            }
            Ok(())
        }
    }
    let mut store_error = None;
    let mut de = serde_json::Deserializer::from_reader(reader);
    let result = de.deserialize_seq(Elements { batcher: b, store_error: &mut store_error });
    if let Some(e) = store_error {
        return Err(Error::Store(e));
    }
    if let Err(e) = result {
        b.bad(
            format!("line {} column {}", e.line(), e.column()),
            format!(
                "the JSON array is broken here and the rest is unreadable: {}",
                without_position(&e)
            ),
        );
    }
    Ok(())
}
