//! Pulling from Dataverse, in process against the simulated Web API over loopback HTTP:
//! 12,000 rows across pages, a 429 storm, an unmappable row kept with its field and column,
//! and *Generate HL7* yielding a new message.

use std::collections::BTreeMap;
use std::path::Path;

use izrelay::config::vault::Secret;
use izrelay::pull::dataverse::pull::{PullReport, pull};
use izrelay::pull::dataverse::{Client, DataverseConfig};
use izrelay::sim::dataverse::{self as dv, Table};
use izrelay::store::Store;
use serde_json::{Value, json};

use crate::util::root;

pub(crate) const SET: &str = "msemr_medicationadministrations";
const PK: &str = "msemr_medicationadministrationid";

/// The shipped default mapping (`packaging/config.example.toml`), pointed at the simulator.
fn config(url: &str) -> (DataverseConfig, izrelay::config::Config) {
    let text =
        std::fs::read_to_string(root().join("packaging/config.example.toml")).expect("example");
    let text = text.replace(
        "# url = \"https://contoso.crm.dynamics.com\"",
        &format!("url = \"{url}\"\ntenant_id = \"sim-tenant\"\nclient_id = \"sim-client\""),
    );
    let c = izrelay::config::parse(Path::new("example"), &text).expect("config");
    (c.dataverse.clone().expect("dataverse"), c)
}

/// A row shaped as the default mapping expects, with its lookups expanded.
pub(crate) fn row(i: usize, completed: bool) -> Value {
    json!({
        PK: format!("00000000-0000-4000-8000-{i:012}"),
        "msemr_status": if completed { 935000002 } else { 935000000 },
        "izr_generatehl7": false,
        "izr_ndc": "00069-2432-01",
        "izr_lotnumber": format!("LOT{i}"),
        "izr_lotexpiration": "2027-03-31",
        "izr_doseml": 0.3,
        "izr_dosenumber": 1,
        "msemr_effectivedatetime": "2026-11-20T09:30:00Z",
        "izr_vfceligibility": "V01",
        "izr_fundingsource": "VXC50",
        "izr_visdocument": "253088698300063911250131",
        "izr_visvaccinetype": null,
        "izr_vispublished": "2025-01-31",
        "izr_vispresented": "2026-11-20",
        // Lookups as the Web API returns them: the GUID column, and the related row when expanded.
        "_msemr_perfomeronbehalfof_value": "10000000-0000-4000-8000-000000000001",
        "_msemr_subjecttypepatient_value": format!("20000000-0000-4000-8000-{i:012}"),
        "_msemr_medicationreferencenew_value": "30000000-0000-4000-8000-000000000309",
        "_msemr_dosageroute_value": "40000000-0000-4000-8000-000000000001",
        "_msemr_dosagesite_value": "40000000-0000-4000-8000-000000000002",
        "_izr_location_value": "50000000-0000-4000-8000-000000000017",
        "_izr_vaccinator_value": "60000000-0000-4000-8000-000000000001",
        "msemr_perfomeronbehalfof": {"accountnumber": "PRV-001"},
        "msemr_subjecttypepatient": {"msemr_medicalrecordnumber": format!("MRN-{i}"), "lastname": "O'Brien",
            "firstname": "Mary", "birthdate": "1980-02-29", "gendercode": 2},
        "msemr_medicationreferencenew": {"izr_cvx": "309", "izr_mvx": "PFR"},
        "msemr_dosageroute": {"msemr_code": "C28161"},
        "msemr_dosagesite": {"msemr_code": "LD"},
        "izr_location": {"msemr_locationnumber": "FAC-17", "msemr_name": "Elm Street Clinic"},
        "izr_vaccinator": {"msemr_qualification1identifier": "1234567893", "lastname": "Lee", "firstname": "Ana"}
    })
}

/// `msemr_status` as the CDM healthcare model defines it (research/dataverse.md §1.4).
fn status_options() -> Vec<(i64, String)> {
    ["In Progress", "On Hold", "Completed", "Entered in Error", "Item", "Stopped", "Unknown"]
        .iter()
        .zip(935_000_000..)
        .map(|(l, v)| (v, (*l).to_owned()))
        .collect()
}

struct Env {
    rt: tokio::runtime::Runtime,
    sim: dv::Running,
    store: Store,
    client: Client,
    dv: DataverseConfig,
    config: izrelay::config::Config,
    _dir: tempfile::TempDir,
}

fn env(sim_config: dv::Config, rows: usize) -> Env {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("rt");
    let mut table = Table::new(SET, "msemr_medicationadministration", PK);
    table.change_tracking = true;
    table.choices.insert("msemr_status".into(), status_options());
    table.choices.insert(
        "izr_sexcode".into(),
        vec![(1, "Male".into()), (2, "Female".into()), (3, "Other".into())],
    );
    let log_table =
        Table::new("izr_notificationlogs", "izr_notificationlog", "izr_notificationlogid");
    let sim = rt
        .block_on(dv::start(
            ([127, 0, 0, 1], 0).into(),
            dv::Config { tables: vec![table, log_table], ..sim_config },
        ))
        .expect("sim");
    for i in 0..rows {
        sim.upsert_row(SET, row(i, i % 4 != 3));
    }
    let (dv, config) = config(&sim.url);
    let mut settings = dv.settings();
    settings.token_url = Some(sim.token_url());
    settings.retry_base_ms = 20;
    settings.retry_max_ms = 200;
    let client = Client::new(settings, Secret::new("sim-secret")).expect("client");
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(&dir.path().join("izrelay.db")).expect("store");
    Env { rt, sim, store, client, dv, config, _dir: dir }
}

impl Env {
    fn pull(&mut self) -> PullReport {
        let now = chrono::Local::now().fixed_offset();
        self.rt
            .block_on(pull(
                &self.client,
                &self.dv.vaccination,
                &mut self.store,
                &self.config.profiles,
                now,
            ))
            .expect("pull")
    }

    fn counts(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for p in self.store.status().expect("status") {
            for (s, n) in p.counts {
                *m.entry(s).or_default() += n;
            }
        }
        m
    }
}

#[test]
fn twelve_thousand_rows_across_pages_then_only_the_hundred_changed() {
    let mut e = env(dv::Config::default(), 12_000);
    let r = e.pull();
    assert_eq!(r.mode, "full");
    assert_eq!((r.rows, r.pages, r.unmappable), (12_000, 12, 0), "{r:?}");
    assert_eq!(r.intake.new, 12_000);
    assert_eq!(r.intake.queued, 9_000, "three in four are completed: {r:?}");
    assert_eq!(r.intake.not_completed, 3_000);
    let gets_before = e.sim.stats().requests.get("GET").copied().unwrap_or(0);
    let quiet = e.pull();
    assert_eq!((quiet.mode.as_str(), quiet.rows), ("delta", 0), "{quiet:?}");
    // Change 100 rows (a new lot number): only those are read and sent again.
    for i in (0..12_000).step_by(120) {
        let mut r = row(i, i % 4 != 3);
        r["izr_lotnumber"] = format!("LOT{i}-FIXED").into();
        e.sim.upsert_row(SET, r);
    }
    let delta = e.pull();
    assert_eq!(
        (delta.mode.as_str(), delta.rows, delta.intake.changed),
        ("delta", 100, 100),
        "{delta:?}"
    );
    assert_eq!(delta.intake.queued, 100, "every one is completed (i % 4 == 0): {delta:?}");
    let gets = e.sim.stats().requests.get("GET").copied().unwrap_or(0) - gets_before;
    assert!(gets <= 2 + 1 + 1, "two delta reads and one read by id: {gets} GETs");
    assert_eq!(
        e.counts().get("queued"),
        Some(&(9_000 + 75 - 75)),
        "each new message supersedes the unsent one"
    );
}

#[test]
fn an_expired_delta_token_falls_back_to_a_full_resync_and_loses_nothing() {
    let mut e = env(dv::Config::default(), 500);
    assert_eq!(e.pull().mode, "full");
    let mut changed = row(7, true);
    changed["izr_lotnumber"] = "LOT7-B".into();
    e.sim.upsert_row(SET, changed);
    e.sim.expire_delta_tokens();
    let r = e.pull();
    assert_eq!(r.mode, "watermark (delta token expired)", "{r:?}");
    assert_eq!(r.intake.changed, 1, "the change made while the token expired: {r:?}");
    assert!(r.rows >= 1 && r.rows == r.intake.changed + r.intake.unchanged, "{r:?}");
    assert_eq!(r.intake.queued, 1, "row 7 is now completed: its message is queued: {r:?}");
    assert_eq!(e.pull().mode, "delta", "a new delta link was stored");
}

#[test]
fn a_429_storm_is_waited_out_never_sent_into() {
    let mut e =
        env(dv::Config { throttle_rate: 0.4, retry_after_secs: 1, ..dv::Config::default() }, 3_000);
    let started = std::time::Instant::now();
    let r = e.pull();
    assert_eq!(r.rows, 3_000, "{r:?}");
    let stats = e.sim.stats();
    assert!(stats.throttled > 0, "the storm happened: {stats:?}");
    assert_eq!(stats.early_requests, 0, "a request went out before Retry-After had passed");
    assert!(started.elapsed().as_secs() >= stats.throttled.min(1), "Retry-After was waited");
}

#[test]
fn an_unmappable_row_is_kept_with_its_field_and_column_and_generate_hl7_sends_again() {
    let mut e = env(dv::Config::default(), 10);
    let mut bad = row(99, true);
    bad["msemr_subjecttypepatient"]["gendercode"] = json!(7);
    e.sim.upsert_row(SET, bad);
    let r = e.pull();
    assert_eq!((r.rows, r.unmappable, r.intake.invalid), (11, 1, 1), "{r:?}");
    let id = "00000000-0000-4000-8000-000000000099";
    let h = e.store.history(id).expect("history");
    let reasons = h.messages[0].0.reason_lines().join("\n");
    assert!(
        reasons.contains("patient.sex") && reasons.contains("msemr_subjecttypepatient/gendercode"),
        "{reasons}"
    );
    // Fixed at the source: the next pull queues it.
    e.sim.upsert_row(SET, row(99, true));
    let r = e.pull();
    assert_eq!((r.intake.changed, r.intake.queued), (1, 1), "{r:?}");

    // Generate HL7 on a record whose message was accepted: a new notification log row.
    let target = "00000000-0000-4000-8000-000000000000";
    rusqlite::Connection::open(e.store.path())
        .expect("db")
        .execute(
            "UPDATE notification_log SET status = 'accepted' WHERE vaccination_id = ?1",
            [target],
        )
        .expect("accept");
    let mut flagged = row(0, true);
    flagged["izr_generatehl7"] = json!(true);
    e.sim.upsert_row(SET, flagged);
    let r = e.pull();
    assert_eq!(r.intake.queued, 1, "{r:?}");
    assert_eq!(e.store.history(target).expect("history").messages.len(), 2);
}

#[test]
fn probe_finds_the_mapping_complete_and_names_a_renamed_column() {
    let e = env(dv::Config::default(), 5);
    let ok =
        e.rt.block_on(izrelay::pull::dataverse::probe::probe(&e.client, &e.dv.vaccination))
            .expect("probe");
    assert_eq!(ok.problems, Vec::<String>::new(), "{ok:?}");
    assert!(ok.found > 20, "{ok:?}");
    let mut renamed = e.dv.vaccination.clone();
    renamed.fields.insert("vaccine.lot".into(), "izr_lot_number".into());
    renamed.logical_name = "msemr_medicationadministration".into();
    let r =
        e.rt.block_on(izrelay::pull::dataverse::probe::probe(&e.client, &renamed)).expect("probe");
    assert_eq!(r.problems.len(), 1, "{r:?}");
    assert!(
        r.problems[0].contains("dataverse.vaccination.fields.vaccine.lot")
            && r.problems[0].contains("izr_lot_number"),
        "{r:?}"
    );
    let mut missing = e.dv.vaccination.clone();
    missing.logical_name = "izr_nosuchtable".into();
    let r =
        e.rt.block_on(izrelay::pull::dataverse::probe::probe(&e.client, &missing)).expect("probe");
    assert!(r.problems[0].contains("no table \"izr_nosuchtable\""), "{r:?}");
}

#[test]
fn probe_names_every_option_value_the_environment_lacks() {
    let e = env(dv::Config::default(), 5);
    let mut m = e.dv.vaccination.clone();
    m.completed.equals = serde_json::json!(935_000_009);
    m.generate_hl7.equals = serde_json::json!(1);
    m.fields.insert("patient.sex".into(), "izr_sexcode".into());
    m.values.insert(
        "patient.sex".into(),
        [("1", "M"), ("2", "F"), ("9", "U")]
            .iter()
            .map(|(a, b)| ((*a).into(), (*b).into()))
            .collect(),
    );
    let r = e.rt.block_on(izrelay::pull::dataverse::probe::probe(&e.client, &m)).expect("probe");
    assert_eq!(r.problems.len(), 3, "{r:#?}");
    assert!(
        r.problems[0].contains("completed.equals: 935000009 is not an option of msemr_status")
            && r.problems[0].contains("935000002 Completed"),
        "{r:#?}"
    );
    assert!(
        r.problems[1].contains("generate_hl7.equals: izr_generatehl7 is a yes/no column"),
        "{r:#?}"
    );
    assert!(r.problems[2].contains("\"9\" is not an option of izr_sexcode"), "{r:#?}");
    assert!(
        r.notes.iter().any(|n| n.contains("option 3 (Other) of izr_sexcode has no mapping")),
        "{r:#?}"
    );
    // A choice column compared with true is named too.
    let mut m = e.dv.vaccination.clone();
    m.completed.equals = serde_json::json!(true);
    let r = e.rt.block_on(izrelay::pull::dataverse::probe::probe(&e.client, &m)).expect("probe");
    assert_eq!(r.problems.len(), 1, "{r:#?}");
    assert!(r.problems[0].contains("msemr_status is a choice column"), "{r:#?}");
}

#[test]
fn outcomes_wait_while_dataverse_is_down_then_sync_exactly_once_and_clear_the_flag() {
    sync_cycle(50);
}

#[test]
fn the_same_without_batch_one_request_per_operation() {
    sync_cycle(0);
}

fn sync_cycle(batch_size: usize) {
    use izrelay::store::outbox::{Attempt, Finish};
    let mut e = env(dv::Config::default(), 0);
    e.dv.batch_size = batch_size;
    for i in 0..20 {
        let mut r = row(i, true);
        r["izr_generatehl7"] = json!(i % 4 == 0);
        e.sim.upsert_row(SET, r);
    }
    assert_eq!(e.pull().intake.queued, 20);
    // Forwarded: each message accepted (the forwarder's own tests cover the wire).
    let claims = e.store.claim_for("PRV-001", i64::MAX, 100).expect("claim");
    assert_eq!(claims.len(), 20);
    for c in &claims {
        let attempt = Attempt {
            started_at: 0,
            duration_ms: 1,
            http_status: Some(200),
            outcome: "accepted".into(),
            error: None,
        };
        let ack = format!(
            "MSH|^~\\&|IIS|IIS|||20261120||ACK^V04^ACK|A{}|P|2.5.1\rMSA|AA|{}",
            c.log_id, c.control_id
        );
        e.store
            .finish(
                c.log_id,
                &Finish::Accepted { ack_code: "AA".into(), ack, ack_errors: "[]".into() },
                &attempt,
            )
            .expect("finish");
    }
    assert_eq!(
        e.store.sync_backlog().expect("backlog"),
        20,
        "every outcome queued for the write-back"
    );

    // Dataverse unreachable (nothing listens on that port): every outcome waits.
    let mut down = e.dv.settings();
    down.url = "http://127.0.0.1:9".into();
    down.token_url = Some("http://127.0.0.1:9/t".into());
    down.max_attempts = 2;
    down.retry_base_ms = 10;
    down.retry_max_ms = 20;
    let down = Client::new(down, Secret::new("sim-secret")).expect("client");
    let r = e.rt.block_on(izrelay::sync::sync_once(&down, &e.dv, &mut e.store)).expect("sync");
    assert_eq!((r.synced, r.backlog), (0, 20), "{r:?}");
    rusqlite::Connection::open(e.store.path())
        .expect("db")
        .execute("UPDATE dataverse_outbox SET next_attempt_at = 0", [])
        .expect("due now");

    // Meanwhile a user asks again for row 1 (a newer version: its ETag no longer matches).
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    let mut again_requested = row(1, true);
    again_requested["izr_generatehl7"] = json!(true);
    e.sim.upsert_row(SET, again_requested);

    // Back: every outcome written exactly once, the flag cleared, the status set.
    let r = e.rt.block_on(izrelay::sync::sync_once(&e.client, &e.dv, &mut e.store)).expect("sync");
    assert_eq!((r.synced, r.failed, r.backlog), (20, 0, 0), "{r:?}");
    assert_eq!(r.batches, u64::from(batch_size > 0), "{r:?}");
    let again =
        e.rt.block_on(izrelay::sync::sync_once(&e.client, &e.dv, &mut e.store)).expect("sync");
    assert_eq!(again.synced, 0, "nothing twice");
    let logs = e.sim.rows("izr_notificationlogs");
    assert_eq!(logs.len(), 20);
    let stats = e.sim.stats();
    for l in &logs {
        let id = l["izr_notificationlogid"].as_str().expect("id");
        assert_eq!(stats.writes_to("izr_notificationlogs", id), 1, "written once: {l}");
        assert_eq!(l["izr_ackcode"], "AA");
    }
    assert_eq!(r.conflicts, 1, "the edited row answered 412: {r:?}");
    for i in 0..20 {
        let id = format!("00000000-0000-4000-8000-{i:012}");
        let v = e.sim.row(SET, &id).expect("row");
        // Row 1's newer request stands; every other flag is cleared.
        assert_eq!(v["izr_generatehl7"], json!(i == 1), "{v}");
        assert_eq!(v["izr_hl7status"], "accepted");
    }
    // The write-back is not a user's change: the next pull sends nothing again, except the
    // user's new request for row 1.
    let p = e.pull();
    assert_eq!((p.own_writes, p.intake.queued), (19, 1), "{p:?}");
}

#[test]
fn a_renamed_column_stops_the_pull_with_its_name_and_loses_nothing() {
    let mut e = env(dv::Config::default(), 50);
    assert_eq!(e.pull().intake.queued, 38);
    let before = e.counts();
    e.dv.vaccination.fields.insert("vaccine.lot".into(), "izr_lot_number".into());
    e.store.set_cursor(izrelay::pull::dataverse::pull::DELTA_CURSOR, None).expect("forget link");
    let now = chrono::Local::now().fixed_offset();
    let err =
        e.rt.block_on(pull(&e.client, &e.dv.vaccination, &mut e.store, &e.config.profiles, now))
            .err()
            .map(|x| x.to_string())
            .unwrap_or_default();
    assert!(err.contains("HTTP 400") && err.contains("izr_lot_number"), "{err}");
    assert_eq!(e.counts(), before, "nothing local changed");
}

#[test]
fn a_delta_link_from_another_environment_is_dropped_for_a_full_read() {
    let mut e = env(dv::Config::default(), 8);
    assert_eq!(e.pull().mode, "full");
    assert_eq!(e.pull().mode, "delta");
    // The config now names another environment (here: a second simulator with the same rows).
    let other = env(dv::Config::default(), 8);
    e.client = other.client.clone();
    let r = e.pull();
    assert_eq!(r.mode, "full", "{r:?}");
    assert_eq!((r.rows, r.intake.queued), (8, 0), "same records, nothing sent again: {r:?}");
    assert_eq!(e.pull().mode, "delta");
}

/// A page larger than `max_response_bytes` is refused with an error that names the limit,
/// and nothing of it is stored; the same rows in pages under the limit go through.
#[test]
fn a_page_over_max_response_bytes_is_refused_and_nothing_is_stored() {
    let mut e = env(dv::Config::default(), 200);
    let limited = |page_size: usize| {
        let mut s = e.dv.settings();
        s.token_url = Some(e.sim.token_url());
        s.retry_base_ms = 20;
        s.retry_max_ms = 200;
        s.page_size = page_size;
        s.max_response_bytes = 16 * 1024;
        Client::new(s, Secret::new("sim-secret")).expect("client")
    };
    e.client = limited(1000);
    let now = chrono::Local::now().fixed_offset();
    let err =
        e.rt.block_on(pull(&e.client, &e.dv.vaccination, &mut e.store, &e.config.profiles, now))
            .expect_err("a 200-row page is over 16 KiB");
    let msg = format!("{err:#}");
    assert!(msg.contains("larger than 16384 bytes"), "{msg}");
    assert!(!msg.contains("sim-secret"), "{msg}");
    assert!(e.counts().is_empty(), "nothing stored: {:?}", e.counts());
    e.client = limited(5);
    let r = e.pull();
    assert_eq!((r.rows, r.pages), (200, 40), "pages of 5 rows fit: {r:?}");
}
