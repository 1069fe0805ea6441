//! TLS on the forwarding path, in process against the simulated IIS: an untrusted certificate
//! is refused (nothing marked sent, a clear error in the attempt), and mutual TLS works with a
//! client certificate and fails without one.

use std::io::Write;
use std::path::{Path, PathBuf};

use izrelay::config::vault::{Key, read_settings};
use izrelay::forwarder::{DrainOptions, DrainReport, ForwardConfig, ForwardSettings, drain};
use izrelay::hl7::Profiles;
use izrelay::sim::iis;
use izrelay::sim::tls::Identity;
use izrelay::store::Store;

use crate::util::root;

fn store_with_records(dir: &Path, n: usize, url: &str, key: &Key) -> PathBuf {
    let base: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            root().join("tests/fixtures/records/01-adult-covid-pfizer-309-ndc.json"),
        )
        .expect("fixture"),
    )
    .expect("json");
    let records = dir.join("records.ndjson");
    let mut f = std::fs::File::create(&records).expect("create");
    for i in 0..n {
        let mut r = base.clone();
        r["vaccination_id"] = format!("tls-{i}").into();
        r["provider_id"] = "PRV-T".into();
        r["patient"]["id"] = format!("MRN-{i}").into();
        writeln!(f, "{r}").expect("write");
    }
    let db = dir.join("izrelay.db");
    let mut store = Store::open(&db).expect("store");
    izrelay::pull::import::import_file(
        &mut store,
        &records,
        &Profiles::default(),
        chrono::Local::now().fixed_offset(),
        &|_| {},
    )
    .expect("import");
    let xml = format!(
        "<Settings><setting providerId=\"PRV-T\"><value name=\"userName\">u</value>\
         <value name=\"password\">secret-tls-pw</value><value name=\"iisEndpoint\">{url}</value>\
         </setting></Settings>"
    );
    store.import_credentials(&read_settings(&xml).expect("xml"), key, &[]).expect("creds");
    db
}

fn forward(db: &Path, key: &Key, settings: ForwardSettings) -> DrainReport {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("rt");
    let config = ForwardConfig { default: settings, ..ForwardConfig::default() };
    let store = Store::open(db).expect("store");
    rt.block_on(async {
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        drain(
            store,
            key,
            &config,
            &DrainOptions { once: true, ..DrainOptions::default() },
            None,
            stopped,
        )
        .await
    })
    .expect("drain")
    .1
}

fn statuses(db: &Path) -> Vec<(String, i64, Option<String>)> {
    let c = rusqlite::Connection::open(db).expect("db");
    let mut s = c
        .prepare(
            "SELECT n.status, n.attempts, (SELECT error FROM attempt a WHERE a.log_id = n.id ORDER BY a.id DESC LIMIT 1)
             FROM notification_log n",
        )
        .expect("sql");
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("q")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// Settings that try each message once in this drain (no retry due within the horizon).
fn once_each() -> ForwardSettings {
    ForwardSettings {
        retry_base_ms: 600_000,
        retry_max_ms: 600_000,
        circuit_failures: 0,
        ..ForwardSettings::default()
    }
}

#[test]
fn an_untrusted_certificate_is_refused_and_nothing_is_marked_sent() {
    let dir = tempfile::tempdir().expect("tmp");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("rt");
    let sim = rt
        .block_on(iis::start(
            ([127, 0, 0, 1], 0).into(),
            iis::Config {
                tls: Some(Identity::self_signed().expect("cert")),
                ..iis::Config::default()
            },
        ))
        .expect("sim");
    let key = Key::generate().expect("key");
    let db = store_with_records(dir.path(), 5, &sim.url, &key);
    let report = forward(&db, &key, once_each());
    assert_eq!(report.providers[0].accepted, 0, "{report:?}");
    for (status, attempts, error) in statuses(&db) {
        assert_eq!(status, "queued");
        // Full jitter may put a retry inside the drain's horizon: one or two tries, never sent.
        assert!((1..=3).contains(&attempts), "{attempts}");
        let error = error.unwrap_or_default();
        assert!(error.contains("tls error") && error.contains("certificate"), "{error}");
    }
    assert!(sim.deliveries().is_empty(), "the IIS application never saw a message");
}

#[test]
fn mutual_tls_sends_with_a_client_certificate_and_fails_without() {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    let dir = tempfile::tempdir().expect("tmp");
    // A client CA and a client certificate it issued, as a state's IZ Gateway onboarding gives.
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let client_key = KeyPair::generate().expect("key");
    let mut client_params =
        CertificateParams::new(vec!["clinic.example".to_owned()]).expect("params");
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = client_params.signed_by(&client_key, &ca, &ca_key).expect("client cert");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    };
    let client_cert = write("client.pem", &client.pem());
    let client_key_file = write("client.key", &client_key.serialize_pem());

    let server = Identity::self_signed().expect("cert");
    let server_ca = write("server-ca.pem", &server.cert_pem);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("rt");
    let sim = rt
        .block_on(iis::start(
            ([127, 0, 0, 1], 0).into(),
            iis::Config { tls: Some(server), client_ca: Some(ca.pem()), ..iis::Config::default() },
        ))
        .expect("sim");
    let key = Key::generate().expect("key");
    let db = store_with_records(dir.path(), 4, &sim.url, &key);

    let without =
        forward(&db, &key, ForwardSettings { ca_file: Some(server_ca.clone()), ..once_each() });
    assert_eq!(without.providers[0].accepted, 0, "{without:?}");
    assert!(sim.deliveries().is_empty());
    // Due again now: put the schedule back, as an operator's fix would be followed by a drain.
    rusqlite::Connection::open(&db)
        .expect("db")
        .execute("UPDATE notification_log SET next_attempt_at = 0", [])
        .expect("reset");

    let with = forward(
        &db,
        &key,
        ForwardSettings {
            ca_file: Some(server_ca),
            client_cert: Some(client_cert),
            client_key: Some(client_key_file),
            ..once_each()
        },
    );
    assert_eq!(with.providers[0].accepted, 4, "{with:?}");
    assert_eq!(sim.deliveries().len(), 4);
}
