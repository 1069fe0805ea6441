//! The local store through the real binary and the library: import at scale, crash safety,
//! the outbox state machine against a model, and schema upgrades.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use izrelay::hl7::{MessageProfile, Profiles};
use izrelay::record::Record;
use izrelay::store::Store;
use izrelay::store::outbox::{Attempt, Finish, Status};
use proptest::prelude::*;
use rusqlite::Connection;

use crate::util::{izrelay, root};

fn base_record() -> serde_json::Value {
    let path = root().join("tests/fixtures/records/11-adult-tdap-private-local-provider-id.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

/// Writes `n` NDJSON lines: every 100th (i % 100 == 50) is broken JSON, every 100th
/// (i % 100 == 7) is a record that fails validation (CVX 999). Returns (valid, invalid, bad).
fn write_records(path: &Path, n: usize) -> (u64, u64, u64) {
    let base = base_record();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let (mut valid, mut invalid, mut bad) = (0, 0, 0);
    for i in 0..n {
        if i % 100 == 50 {
            writeln!(f, "{{\"vaccination_id\": \"broken-{i}\", ").expect("write");
            bad += 1;
            continue;
        }
        let mut r = base.clone();
        r["vaccination_id"] = format!("rec-{i:06}").into();
        r["patient"]["id"] = format!("MRN-{:06}", i / 3).into();
        if i % 100 == 7 {
            r["vaccine"]["cvx"] = "999".into();
            invalid += 1;
        } else {
            valid += 1;
        }
        writeln!(f, "{r}").expect("write");
    }
    f.flush().expect("flush");
    (valid, invalid, bad)
}

fn import_json(data: &Path, file: &Path) -> (Option<i32>, serde_json::Value) {
    let out = izrelay()
        .args(["--data-dir"])
        .arg(data)
        .args(["import", "--json"])
        .arg(file)
        .output()
        .expect("izrelay runs");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

#[test]
fn import_100k_records_with_bad_lines_and_invalid_records() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("records.ndjson");
    let (valid, invalid, bad) = write_records(&file, 100_000);
    let (code, report) = import_json(&dir.path().join("data"), &file);
    assert_eq!(code, Some(1), "bad lines make the import exit non-zero");
    let c = &report["counts"];
    assert_eq!(c["received"], valid + invalid);
    assert_eq!(c["new"], valid + invalid);
    assert_eq!(c["queued"], valid);
    assert_eq!(c["invalid"], invalid);
    assert_eq!(report["bad_total"], bad);
    assert_eq!(report["bad"][0]["at"], "line 51");
    assert_eq!(report["bad"].as_array().map(Vec::len), Some(100));

    // The same file again adds nothing.
    let (_, again) = import_json(&dir.path().join("data"), &file);
    assert_eq!(again["counts"]["unchanged"], valid + invalid);
    assert_eq!(again["counts"]["queued"], 0);
    let store = Store::open(&dir.path().join("data/izrelay.db")).expect("open");
    let status = store.status().expect("status");
    let total: u64 = status.iter().flat_map(|p| p.counts.values()).sum();
    assert_eq!(total, valid + invalid);
}

/// A pseudo-random sequence that needs no dependency: xorshift seeded from the clock.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn sigkill_during_import_loses_nothing_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("records.ndjson");
    let (valid, invalid, _) = write_records(&file, 30_000);
    let data = dir.path().join("data");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed);
    for round in 0..20 {
        let mut child = izrelay()
            .args(["-q", "--data-dir"])
            .arg(&data)
            .arg("import")
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(std::time::Duration::from_millis(20 + rng.next() % 600));
        child.kill().expect("SIGKILL"); // std sends SIGKILL on Unix
        child.wait().expect("reaped");
        let store =
            Store::open(&data.join("izrelay.db")).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(store.integrity_check().expect("check"), "ok", "round {round}");
    }
    let (_, report) = import_json(&data, &file);
    let db = Connection::open(data.join("izrelay.db")).expect("open");
    let count = |sql: &str| -> u64 { db.query_row(sql, [], |r| r.get(0)).expect(sql) };
    assert_eq!(count("SELECT count(*) FROM vaccination"), valid + invalid);
    // Exactly one live (not superseded) message per record: nothing lost, nothing twice.
    assert_eq!(
        count("SELECT count(*) FROM notification_log WHERE status IN ('queued','invalid')"),
        valid + invalid
    );
    assert_eq!(
        count(
            "SELECT count(DISTINCT vaccination_id) FROM notification_log WHERE status IN ('queued','invalid')"
        ),
        valid + invalid
    );
    assert_eq!(
        count("SELECT count(*) FROM notification_log WHERE status = 'superseded'"),
        0,
        "{report}"
    );
}

#[test]
fn upgrade_from_the_v1_fixture_equals_a_fresh_database() {
    let dir = tempfile::tempdir().expect("tmp");
    let old = dir.path().join("v1.db");
    Connection::open(&old)
        .and_then(|c| {
            c.execute_batch(
                &std::fs::read_to_string(root().join("tests/db/create_v1_db.sql"))
                    .expect("fixture"),
            )
        })
        .expect("v1 fixture");
    let fresh = dir.path().join("fresh.db");
    drop(Store::open(&old).expect("upgrade"));
    drop(Store::open(&fresh).expect("create"));
    let schema = |p: &Path| -> Vec<(String, String)> {
        let c = Connection::open(p).expect("open");
        let mut s = c
            .prepare("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
            .expect("q");
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    assert_eq!(schema(&old), schema(&fresh));
    let version = |p: &Path| -> u32 {
        Connection::open(p)
            .and_then(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
            .expect("v")
    };
    assert_eq!(version(&old), version(&fresh));
    // The version 4 step edits the stored table definition in place: the file is still sound
    // and the edited CHECK still refuses a status outside the state machine.
    let c = Connection::open(&old).expect("open");
    let check: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("check");
    assert_eq!(check, "ok");
    let bad = c.execute(
        "INSERT INTO notification_log (vaccination_id, status, record_hash, created_at, updated_at)
         VALUES ('v', 'bogus', x'00', 0, 0)",
        [],
    );
    assert!(
        bad.as_ref().is_err_and(|e| e.to_string().contains("CHECK constraint failed")),
        "{bad:?}"
    );
}

/// Operations of the model test.
#[derive(Debug, Clone)]
enum Op {
    /// Import record `k` (0..4), content variant `v` (0..3; variant 2 is invalid).
    Import {
        k: usize,
        v: u8,
        flag: bool,
    },
    Regenerate {
        k: usize,
    },
    Claim {
        limit: usize,
    },
    /// Finish the `i`th claimed row with outcome `o`.
    Finish {
        i: usize,
        o: u8,
    },
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..4usize, 0..3u8, any::<bool>()).prop_map(|(k, v, flag)| Op::Import { k, v, flag }),
        (0..4usize).prop_map(|k| Op::Regenerate { k }),
        (1..4usize).prop_map(|limit| Op::Claim { limit }),
        (0..4usize, 0..4u8).prop_map(|(i, o)| Op::Finish { i, o }),
        Just(Op::Crash),
    ]
}

fn record(k: usize, v: u8, flag: bool) -> Record {
    let mut r: Record = serde_json::from_value(base_record()).expect("record");
    r.vaccination_id = format!("model-{k}");
    r.generate_hl7 = flag;
    r.vaccine.lot = Some(format!("LOT{v}"));
    if v == 2 {
        r.vaccine.cvx = "999".into();
    }
    r
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random imports, regenerations, claims, outcomes and crashes: the database always agrees
    /// with a model of the state machine.
    #[test]
    fn outbox_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let mut store = Store::open_in_memory().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let profile = Profiles::single(MessageProfile::default());
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-24T09:00:00-08:00").map_err(|e| TestCaseError::fail(e.to_string()))?;
        // Model: log id → (vaccination, status); stored content per vaccination; claimed rows.
        let mut model: BTreeMap<i64, (String, Status)> = BTreeMap::new();
        let mut content: BTreeMap<usize, (u8, bool)> = BTreeMap::new();
        let mut claimed: Vec<i64> = Vec::new();
        let mut next_id = 1i64;
        let mut generate = |model: &mut BTreeMap<i64, (String, Status)>, vac: String, valid: bool| {
            for (vid, st) in model.values_mut() {
                if *vid == vac && matches!(st, Status::Queued | Status::Invalid) { *st = Status::Superseded; }
            }
            model.insert(next_id, (vac, if valid { Status::Queued } else { Status::Invalid }));
            next_id += 1;
        };
        for op in ops {
            match op {
                Op::Import { k, v, flag } => {
                    store.intake(&[record(k, v, flag)], &profile, now).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let vac = format!("model-{k}");
                    // The Generate HL7 flag is not content: only the data decides "changed".
                    let changed = content.get(&k).is_none_or(|&(ov, _)| ov != v);
                    let newest = model.iter().rev().find(|(_, (vid, _))| *vid == vac).map(|(_, (_, s))| *s);
                    let pending_same = !changed && matches!(newest, Some(Status::Queued | Status::Sending | Status::Invalid));
                    if changed || (flag && !pending_same) {
                        generate(&mut model, vac, v != 2);
                    }
                    content.insert(k, (v, flag));
                }
                Op::Regenerate { k } => {
                    let r = store.regenerate(&format!("model-{k}"), &profile, now);
                    match content.get(&k) {
                        Some(&(v, _)) => { prop_assert!(r.is_ok()); generate(&mut model, format!("model-{k}"), v != 2); }
                        None => prop_assert!(r.is_err()),
                    }
                }
                Op::Claim { limit } => {
                    let got = store.claim_due(i64::MAX, limit).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let want: Vec<i64> = model.iter().filter(|(_, (_, s))| *s == Status::Queued).map(|(id, _)| *id).take(limit).collect();
                    prop_assert_eq!(got.iter().map(|c| c.log_id).collect::<Vec<_>>(), want.clone());
                    for id in want { if let Some(e) = model.get_mut(&id) { e.1 = Status::Sending; } claimed.push(id); }
                }
                Op::Finish { i, o } => {
                    if claimed.is_empty() { continue; }
                    let id = claimed.remove(i % claimed.len());
                    let attempt = Attempt { started_at: 0, duration_ms: 1, http_status: Some(200), outcome: "test".into(), error: None };
                    let (finish, to) = match o {
                        0 => (Finish::Accepted { ack_code: "AA".into(), ack: String::new(), ack_errors: "[]".into() }, Status::Accepted),
                        1 => (Finish::Rejected { ack_code: "AE".into(), ack: String::new(), ack_errors: "[]".into() }, Status::Rejected),
                        2 => (Finish::Retry { next_attempt_at: 0 }, Status::Queued),
                        _ => (Finish::Failed { reason: "too large".into() }, Status::Failed),
                    };
                    let in_sending = model.get(&id).is_some_and(|e| e.1 == Status::Sending);
                    let r = store.finish(id, &finish, &attempt);
                    prop_assert_eq!(r.is_ok(), in_sending);
                    if in_sending { if let Some(e) = model.get_mut(&id) { e.1 = to; } }
                }
                Op::Crash => {
                    store.recover_sending().map_err(|e| TestCaseError::fail(e.to_string()))?;
                    for e in model.values_mut() { if e.1 == Status::Sending { e.1 = Status::Queued; } }
                    claimed.clear();
                }
            }
            let db: BTreeMap<i64, (String, Status)> = store
                .log(&izrelay::store::audit::LogFilter { limit: 10_000, ..Default::default() })
                .map_err(|e| TestCaseError::fail(e.to_string()))?
                .into_iter()
                .map(|r| (r.id, (r.vaccination_id, r.status)))
                .collect();
            prop_assert_eq!(&db, &model);
        }
    }
}

#[test]
fn purge_drops_only_accepted_and_synced_bodies() {
    let mut store = Store::open_in_memory().expect("store");
    let profiles = Profiles::single(MessageProfile::default());
    let now = chrono::DateTime::parse_from_rfc3339("2026-11-24T09:00:00-08:00").expect("t");
    let recs: Vec<Record> = (0..3).map(|k| record(k, 0, false)).collect();
    store.intake(&recs, &profiles, now).expect("intake");
    let claims = store.claim_due(i64::MAX, 2).expect("claim");
    let attempt = Attempt {
        started_at: 0,
        duration_ms: 1,
        http_status: Some(200),
        outcome: "accepted".into(),
        error: None,
    };
    for c in &claims {
        let f = Finish::Accepted {
            ack_code: "AA".into(),
            ack: "MSH|^~\\&|A\rMSA|AA|x".into(),
            ack_errors: "[]".into(),
        };
        store.finish(c.log_id, &f, &attempt).expect("finish");
    }
    // Only the first accepted row is synced; row 3 is still queued.
    let synced = claims[0].log_id;
    store.mark_synced(synced, 0).expect("synced");
    assert_eq!(store.purge(i64::MAX).expect("purge"), 1);
    assert_eq!(store.show(synced).expect("show").message, None);
    assert!(
        store.show(claims[1].log_id).expect("show").message.is_some(),
        "accepted but unsynced is kept"
    );
    let queued = store
        .log(&izrelay::store::audit::LogFilter {
            status: Some(Status::Queued),
            limit: 10,
            ..Default::default()
        })
        .expect("log");
    assert!(store.show(queued[0].id).expect("show").message.is_some(), "undelivered is kept");
}

#[test]
fn cli_history_log_show_status_tell_the_story_of_a_record() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let mut store = Store::open(&data.join("izrelay.db")).expect("open");
    let now = chrono::Local::now().fixed_offset();
    let profiles = Profiles::single(MessageProfile::default());
    store.intake(&[record(1, 0, false)], &profiles, now).expect("intake");
    let claim = store.claim_due(i64::MAX, 1).expect("claim").remove(0);
    let ack = format!(
        "MSH|^~\\&|IIS|IIS|||20261124120000-0500||ACK^V04^ACK|A1|P|2.5.1\rMSA|AE|{}\rERR||RXA^1^5^1^1|103^Table value not found^HL70357|E|5^Table value not found^HL70533|||Vaccine code not recognized\r",
        claim.control_id
    );
    let attempt = Attempt {
        started_at: 1,
        duration_ms: 120,
        http_status: Some(200),
        outcome: "rejected".into(),
        error: None,
    };
    let finish = Finish::Rejected { ack_code: "AE".into(), ack, ack_errors: "[]".into() };
    store.finish(claim.log_id, &finish, &attempt).expect("finish");
    store.regenerate("model-1", &profiles, now).expect("regenerate");
    drop(store);

    let run = |args: &[&str]| {
        let o = izrelay().arg("--data-dir").arg(&data).args(args).output().expect("runs");
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let history = run(&["history", "model-1"]);
    assert!(history.contains("2 messages (1 replays)"), "{history}");
    assert!(
        history.contains("rejected") && history.contains("ACK AE") && history.contains("HTTP 200"),
        "{history}"
    );
    let show = run(&["show", &claim.log_id.to_string()]);
    assert!(show.contains("RXA-5   Administered Code"), "{show}");
    assert!(show.contains("HL7 103 (Table value not found); severity E (Error); application 5 (Table value not found)"), "{show}");
    let csv = run(&["log", "--csv", "--status", "rejected"]);
    assert_eq!(csv.lines().count(), 2, "{csv}");
    let json: serde_json::Value = serde_json::from_str(&run(&["status", "--json"])).expect("json");
    assert_eq!(json[0]["counts"]["rejected"], 1);
    assert_eq!(json[0]["counts"]["queued"], 1);
}

#[test]
fn one_batch_holding_two_versions_of_a_record_keeps_the_last() {
    let mut store = Store::open_in_memory().expect("store");
    let profiles = Profiles::single(MessageProfile::default());
    let now = chrono::Local::now().fixed_offset();
    let batch = [record(1, 0, false), record(1, 1, false), record(1, 1, false)];
    let c = store.intake(&batch, &profiles, now).expect("intake");
    assert_eq!((c.new, c.changed, c.unchanged, c.queued), (1, 1, 1, 2));
    let h = store.history("model-1").expect("history");
    let states: Vec<Status> = h.messages.iter().map(|(r, _)| r.status).collect();
    assert_eq!(states, [Status::Superseded, Status::Queued]);
}

#[test]
fn a_row_back_from_the_source_with_only_its_time_and_flag_changed_is_not_reported_again() {
    let mut store = Store::open_in_memory().expect("store");
    let profiles = Profiles::single(MessageProfile::default());
    let now = chrono::Local::now().fixed_offset();
    let mut r = record(1, 0, true);
    r.modified_on = Some("2026-11-20T09:00:00Z".into());
    assert_eq!(store.intake(std::slice::from_ref(&r), &profiles, now).expect("intake").queued, 1);
    let claim = store.claim_due(i64::MAX, 1).expect("claim");
    let attempt = Attempt {
        started_at: 0,
        duration_ms: 1,
        http_status: Some(200),
        outcome: "test".into(),
        error: None,
    };
    let accepted =
        Finish::Accepted { ack_code: "AA".into(), ack: String::new(), ack_errors: "[]".into() };
    store.finish(claim[0].log_id, &accepted, &attempt).expect("finish");
    // Our write-back cleared the flag; Dataverse bumped modifiedon. Same content: unchanged.
    r.generate_hl7 = false;
    r.modified_on = Some("2026-11-20T09:05:00Z".into());
    let c = store.intake(std::slice::from_ref(&r), &profiles, now).expect("intake");
    assert_eq!((c.unchanged, c.changed, c.queued), (1, 0, 0), "{c:?}");
    // A real fix of the data is a change, and is reported again.
    r.vaccine.lot = Some("FIXED1".into());
    r.modified_on = Some("2026-11-20T10:00:00Z".into());
    let c = store.intake(std::slice::from_ref(&r), &profiles, now).expect("intake");
    assert_eq!((c.changed, c.queued), (1, 1), "{c:?}");
    // Setting the flag again on unchanged content asks for a new message.
    r.generate_hl7 = true;
    r.modified_on = Some("2026-11-20T11:00:00Z".into());
    let c = store.intake(std::slice::from_ref(&r), &profiles, now).expect("intake");
    assert_eq!(c.queued, 0, "the last message is still queued with this content: {c:?}");
    assert_eq!(store.history("model-1").expect("history").messages.len(), 2);
}
