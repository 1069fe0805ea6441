//! Sync-back benchmark: a backlog of 10,000 outcomes written back to the simulated Dataverse,
//! one request per operation and by `$batch` (50 outcomes = 100 operations per request).
//! `cargo bench --bench sync` (figures in BENCHMARKS.md). The simulator runs in this process
//! over loopback HTTP; both share the 2 cores.

use std::time::Instant;

use izrelay::config::vault::Secret;
use izrelay::pull::dataverse::{Client, DataverseConfig};
use izrelay::sim::dataverse::{self as dv, Table};
use izrelay::store::Store;
use izrelay::store::outbox::{Attempt, Finish, Outcome};
use serde_json::json;

const N: usize = 10_000;
const SET: &str = "msemr_medicationadministrations";

fn row(i: usize) -> serde_json::Value {
    json!({
        "msemr_medicationadministrationid": format!("00000000-0000-4000-8000-{i:012}"),
        "msemr_status": 935000002, "izr_generatehl7": true, "izr_ndc": "00069-2432-01",
        "izr_lotnumber": "LX9261", "izr_lotexpiration": "2027-03-31", "izr_doseml": 0.3, "izr_dosenumber": 1,
        "msemr_effectivedatetime": "2026-11-20T09:30:00Z", "izr_vfceligibility": "V01", "izr_fundingsource": "VXC50",
        "izr_visdocument": "253088698300063911250131", "izr_visvaccinetype": null, "izr_vispublished": "2025-01-31", "izr_vispresented": "2026-11-20",
        "msemr_perfomeronbehalfof": {"accountnumber": "PRV-001"},
        "msemr_subjecttypepatient": {"msemr_medicalrecordnumber": format!("MRN-{i}"), "lastname": "Doe",
            "firstname": "Jane", "birthdate": "1980-02-29", "gendercode": 2},
        "msemr_medicationreferencenew": {"izr_cvx": "309", "izr_mvx": "PFR"},
        "msemr_dosageroute": {"msemr_code": "C28161"}, "msemr_dosagesite": {"msemr_code": "LD"},
        "izr_location": {"msemr_locationnumber": "FAC-17", "msemr_name": "Elm Street Clinic"},
        "izr_vaccinator": {"msemr_qualification1identifier": "1234567893", "lastname": "Lee", "firstname": "Ana"}
    })
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("rt");
    let mut table =
        Table::new(SET, "msemr_medicationadministration", "msemr_medicationadministrationid");
    table.change_tracking = true;
    let log = Table::new("izr_notificationlogs", "izr_notificationlog", "izr_notificationlogid");
    let sim = rt
        .block_on(dv::start(
            ([127, 0, 0, 1], 0).into(),
            dv::Config { tables: vec![table, log], ..dv::Config::default() },
        ))
        .expect("sim");
    for i in 0..N {
        sim.upsert_row(SET, row(i));
    }
    let text = izrelay::config::EXAMPLE.replace(
        "# url = \"https://contoso.crm.dynamics.com\"",
        &format!("url = \"{}\"\ntenant_id = \"sim-tenant\"\nclient_id = \"sim-client\"", sim.url),
    );
    let config = izrelay::config::parse(std::path::Path::new("example"), &text).expect("config");
    let mut dvc: DataverseConfig = config.dataverse.clone().expect("dataverse");
    let mut settings = dvc.settings();
    settings.token_url = Some(sim.token_url());
    let client = Client::new(settings, Secret::new("sim-secret")).expect("client");
    let dir = tempfile::tempdir().expect("tmp");
    let mut store = Store::open(&dir.path().join("izrelay.db")).expect("store");
    let now = chrono::Local::now().fixed_offset();
    let pulled = rt
        .block_on(izrelay::pull::dataverse::pull::pull(
            &client,
            &dvc.vaccination,
            &mut store,
            &config.profiles,
            now,
        ))
        .expect("pull");
    assert_eq!(pulled.intake.queued as usize, N, "{pulled:?}");
    loop {
        let claims = store.claim_for("PRV-001", i64::MAX, 1000).expect("claim");
        if claims.is_empty() {
            break;
        }
        let outcomes: Vec<Outcome> = claims
            .iter()
            .map(|c| Outcome {
                log_id: c.log_id,
                finish: Finish::Accepted {
                    ack_code: "AA".into(),
                    ack: format!(
                        "MSH|^~\\&|IIS|IIS|||20261120||ACK^V04^ACK|A{}|P|2.5.1\rMSA|AA|{}",
                        c.log_id, c.control_id
                    ),
                    ack_errors: "[]".into(),
                },
                attempt: Attempt {
                    started_at: 0,
                    duration_ms: 1,
                    http_status: Some(200),
                    outcome: "accepted".into(),
                    error: None,
                },
            })
            .collect();
        store.finish_batch(&outcomes).expect("finish");
    }
    for batch_size in [0usize, 50] {
        let db = rusqlite::Connection::open(store.path()).expect("db");
        db.execute(
            "UPDATE dataverse_outbox SET done_at = NULL, next_attempt_at = 0, attempts = 0",
            [],
        )
        .expect("reset");
        drop(db);
        dvc.batch_size = batch_size;
        let before = sim.stats();
        let start = Instant::now();
        let r = rt.block_on(izrelay::sync::sync_once(&client, &dvc, &mut store)).expect("sync");
        let secs = start.elapsed().as_secs_f64();
        let after = sim.stats();
        let requests: u64 =
            after.requests.values().sum::<u64>() - before.requests.values().sum::<u64>();
        assert_eq!(r.synced as usize, N, "{r:?}");
        println!(
            "sync {N} outcomes, {}: {secs:.1} s, {requests} HTTP requests ({} $batch, {} conflicts), {:.0} outcomes/s",
            if batch_size == 0 {
                "one request per operation".to_owned()
            } else {
                format!("$batch of {batch_size}")
            },
            r.batches,
            r.conflicts,
            N as f64 / secs
        );
    }
}
