//! Store benchmarks: import throughput against raw rusqlite, `history` on a large database,
//! and bytes on disk per queued message. `cargo bench --bench store` (figures in BENCHMARKS.md);
//! `cargo bench --bench store -- --import-only` skips the `history` part.
//!
//! A plain harness: each figure is the median of a few runs of a whole workload, which is what
//! a clinic box feels (criterion's per-iteration model does not fit a 20,000-record import).

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use izrelay::hl7::{MessageProfile, Profiles};
use izrelay::store::Store;
use rusqlite::{Connection, params};

const RECORDS: usize = 20_000;
const RUNS: usize = 5;

fn base() -> serde_json::Value {
    serde_json::from_str(include_str!(
        "../tests/fixtures/records/01-adult-covid-pfizer-309-ndc.json"
    ))
    .expect("fixture")
}

fn write_ndjson(path: &Path, n: usize) {
    let base = base();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    for i in 0..n {
        let mut r = base.clone();
        r["vaccination_id"] = format!("bench-{i:07}").into();
        r["patient"]["id"] = format!("MRN-{:07}", i / 2).into();
        writeln!(f, "{r}").expect("write");
    }
    f.flush().expect("flush");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The same rows izrelay writes (a vaccination row and a queued message per record, the same
/// schema and indexes), inserted with plain prepared statements in 1,000-row transactions on
/// one connection with the pragmas izrelay's writer has during an import (its page size, WAL,
/// synchronous=FULL, journal_size_limit 64 MiB, a 16 MiB page cache). Checkpoints are SQLite's
/// default (every 1,000 pages, on the writing connection): moving them to another thread is one
/// of the things izrelay does that a simple batched insert does not.
fn raw_insert(path: &Path, rows: &[(String, String, String, String)]) -> f64 {
    let mut c = Connection::open(path).expect("open");
    c.pragma_update(None, "page_size", izrelay::store::PAGE_SIZE).expect("page size");
    c.pragma_update(None, "journal_mode", "WAL").expect("wal");
    c.pragma_update(None, "synchronous", "FULL").expect("sync");
    c.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024).expect("limit");
    c.pragma_update(None, "cache_size", -16 * 1024).expect("cache");
    c.execute_batch(include_str!("../schema.sql")).expect("schema");
    let start = Instant::now();
    for chunk in rows.chunks(1000) {
        let tx = c.transaction().expect("tx");
        {
            let mut v = tx
                .prepare_cached(
                    "INSERT INTO vaccination (id, provider_id, patient_id, cvx, lot, completed, modified_on,
                     record_hash, record_json, received_at, updated_at) VALUES (?1, 'PRV-001', ?2, '309', 'L', 1, NULL, ?3, ?4, 0, 0)",
                )
                .expect("prep");
            let mut n = tx
                .prepare_cached(
                    "INSERT INTO notification_log (vaccination_id, provider_id, control_id, status, message,
                     record_hash, next_attempt_at, created_at, updated_at) VALUES (?1, 'PRV-001', ?2, 'queued', ?3, ?4, 0, 0, 0)",
                )
                .expect("prep");
            for (id, json, msg, control) in chunk {
                let hash = [0u8; 32];
                v.execute(params![id, id, &hash[..], json]).expect("insert");
                n.execute(params![id, control, msg, &hash[..]]).expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    start.elapsed().as_secs_f64()
}

fn main() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("records.ndjson");
    write_ndjson(&file, RECORDS);
    let profiles = Profiles::single(MessageProfile::default());
    let now = chrono::Local::now().fixed_offset();

    // izrelay: read NDJSON + validate + generate + queue, batched, synchronous=FULL.
    let mut ours = Vec::new();
    let mut bytes_per_message = 0.0;
    let mut rows = Vec::new();
    let mut raw = Vec::new();
    // izrelay and raw runs alternate, so a change of load on the machine hits both alike.
    for run in 0..RUNS {
        let db = dir.path().join(format!("izrelay-{run}.db"));
        let mut store = Store::open(&db).expect("open");
        let start = Instant::now();
        let report = izrelay::pull::import::import_file(&mut store, &file, &profiles, now, &|_| {})
            .expect("import");
        ours.push(start.elapsed().as_secs_f64());
        assert_eq!(report.counts.queued, RECORDS as u64);
        if run == 0 {
            let c = Connection::open(&db).expect("open");
            c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").expect("checkpoint");
            let size = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
            bytes_per_message = size as f64 / RECORDS as f64;
            let mut s = c
                .prepare("SELECT v.id, v.record_json, n.message, n.control_id FROM vaccination v JOIN notification_log n ON n.vaccination_id = v.id")
                .expect("prep");
            rows = s
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .expect("rows")
                .collect::<Result<Vec<(String, String, String, String)>, _>>()
                .expect("rows");
        }
        raw.push(raw_insert(&dir.path().join(format!("raw-{run}.db")), &rows));
    }
    let rate =
        |v: &[f64]| v.iter().map(|t| format!("{:.0}", RECORDS as f64 / t)).collect::<Vec<_>>();
    println!("per run, records/s: izrelay {:?}, raw {:?}", rate(&ours), rate(&raw));
    let ratios: Vec<String> = ours.iter().zip(&raw).map(|(o, r)| format!("{:.2}", r / o)).collect();
    let (ours, raw) = (median(ours), median(raw));
    println!(
        "import+validate+generate+queue: {:.0} records/s ({RECORDS} records, median of {RUNS})",
        RECORDS as f64 / ours
    );
    println!("raw rusqlite batched insert of the same rows: {:.0} records/s", RECORDS as f64 / raw);
    println!("ratio izrelay/raw: {:.2} (per run: {})", raw / ours, ratios.join(", "));
    println!("bytes on disk per queued message: {bytes_per_message:.0}");
    if std::env::args().any(|a| a == "--import-only") {
        return;
    }

    // history on a database of 1,000,000 notification logs.
    let big = dir.path().join("big.db");
    drop(Store::open(&big).expect("create"));
    {
        let mut c = Connection::open(&big).expect("open");
        c.pragma_update(None, "synchronous", "OFF").expect("fast fill");
        let tx = c.transaction().expect("tx");
        {
            let mut v = tx.prepare("INSERT INTO vaccination (id, provider_id, patient_id, cvx, lot, completed, record_hash, record_json, received_at, updated_at) VALUES (?1, 'P', ?2, '208', 'L', 1, x'00', '{}', 0, 0)").expect("prep");
            let mut n = tx.prepare("INSERT INTO notification_log (vaccination_id, provider_id, control_id, status, message, record_hash, created_at, updated_at) VALUES (?1, 'P', ?2, 'accepted', 'MSH|^~\\&|X', x'00', ?3, ?3)").expect("prep");
            for i in 0..250_000i64 {
                let id = format!("v{i:07}");
                v.execute(params![id, format!("M{}", i / 3)]).expect("v");
                for k in 0..4 {
                    n.execute(params![id, format!("C{i:07}{k}"), i * 4 + k]).expect("n");
                }
            }
        }
        tx.commit().expect("commit");
    }
    let store = Store::open(&big).expect("open");
    let mut times = Vec::new();
    for i in 0..200 {
        let id = format!("v{:07}", (i * 1237) % 250_000);
        let start = Instant::now();
        let h = store.history(&id).expect("history");
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(h.messages.len(), 4);
    }
    println!(
        "history on 1,000,000 notification logs: median {:.3} ms, max {:.3} ms (200 lookups)",
        median(times.clone()),
        times.iter().copied().fold(0.0, f64::max)
    );
}
