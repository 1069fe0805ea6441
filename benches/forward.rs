//! Forwarder benchmarks against the simulated IIS over loopback TLS:
//! 1. drain throughput with 0 ms IIS latency (goal ≥ 2,000 messages/s on 2 cores);
//! 2. drain time of 2,000 messages with a fixed 200 ms IIS latency at concurrency 8, against
//!    its bound of 2,000 / 8 × 0.2 s = 50 s (goal within 5 %).
//!
//! `cargo bench --bench forward` (figures in BENCHMARKS.md). The simulator runs in this process
//! on its own runtime thread, validating every VXU with the CDC rules as it would in a test,
//! so the figure includes the IIS side's work on the same two cores.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use izrelay::config::vault::{Key, read_settings};
use izrelay::forwarder::{DrainOptions, ForwardConfig, ForwardSettings, drain};
use izrelay::hl7::Profiles;
use izrelay::sim::iis::{self, Latency};
use izrelay::sim::tls::Identity;
use izrelay::store::Store;

fn write_ndjson(path: &Path, n: usize) {
    let base: serde_json::Value = serde_json::from_str(include_str!(
        "../tests/fixtures/records/01-adult-covid-pfizer-309-ndc.json"
    ))
    .expect("fixture");
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    for i in 0..n {
        let mut r = base.clone();
        r["vaccination_id"] = format!("fwd-{i:07}").into();
        r["provider_id"] = "PRV-BENCH".into();
        r["patient"]["id"] = format!("MRN-{i:07}").into();
        writeln!(f, "{r}").expect("write");
    }
    f.flush().expect("flush");
}

/// Imports `n` records into a fresh store wired to an IIS at `url`; returns the store path.
fn prepare(dir: &Path, n: usize, url: &str, key: &Key) -> std::path::PathBuf {
    let db = dir.join(format!("bench-{n}-{}.db", url.len()));
    let _ = std::fs::remove_file(&db);
    let mut store = Store::open(&db).expect("store");
    let records = dir.join("records.ndjson");
    write_ndjson(&records, n);
    izrelay::pull::import::import_file(
        &mut store,
        &records,
        &Profiles::default(),
        chrono::Local::now().fixed_offset(),
        &|_| {},
    )
    .expect("import");
    let xml = format!(
        "<Settings><setting providerId=\"PRV-BENCH\"><value name=\"userName\">bench</value>\
         <value name=\"password\">bench-pw</value><value name=\"iisEndpoint\">{url}</value>\
         <value name=\"facilityId\">FAC</value></setting></Settings>"
    );
    let settings = read_settings(&xml).expect("settings");
    store.import_credentials(&settings, key, &[]).expect("credentials");
    db
}

fn run(label: &str, n: usize, concurrency: usize, latency: Latency) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = Identity::self_signed().expect("cert");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &id.cert_pem).expect("ca");
    // The simulator on its own thread and runtime, as `izrelay sim iis` runs it.
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sim_thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let sim = iis::start(
                "127.0.0.1:0".parse().expect("addr"),
                iis::Config { tls: Some(id), latency, ..iis::Config::default() },
            )
            .await
            .expect("sim");
            url_tx.send(sim.url.clone()).expect("url");
            let _ = stop_rx.await;
            let n = sim.deliveries().len();
            sim.stop().await;
            n
        })
    });
    let url = url_rx.recv().expect("sim url");
    let key = Key::generate().expect("key");
    let db = prepare(dir.path(), n, &url, &key);
    let settings = ForwardSettings {
        concurrency,
        ca_file: Some(ca),
        retry_base_ms: 10,
        retry_max_ms: 100,
        ..ForwardSettings::default()
    };
    let config = ForwardConfig { default: settings, ..ForwardConfig::default() };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let store = Store::open(&db).expect("store");
    let start = Instant::now();
    let (store, report) = rt
        .block_on(async {
            let (_stop, stopped) = tokio::sync::watch::channel(false);
            drain(
                store,
                &key,
                &config,
                &DrainOptions { once: true, ..DrainOptions::default() },
                None,
                stopped,
            )
            .await
        })
        .expect("drain");
    let secs = start.elapsed().as_secs_f64();
    let accepted: u64 = report.providers.iter().map(|p| p.accepted).sum();
    assert_eq!(accepted, n as u64, "{report:?}");
    drop(store);
    let _ = stop_tx.send(());
    let deliveries = sim_thread.join().expect("sim thread");
    println!(
        "{label}: {n} messages, concurrency {concurrency}: {secs:.2} s, {:.0} messages/s ({deliveries} deliveries)",
        n as f64 / secs
    );
    secs
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 2_000 } else { 10_000 };
    let mut rates = Vec::new();
    for c in [4, 8, 16] {
        let secs = run("tls, 0 ms latency", n, c, Latency::None);
        rates.push((c, n as f64 / secs));
    }
    if !quick {
        let secs = run("tls, 200 ms latency", 2_000, 8, Latency::Fixed(200));
        println!(
            "200 ms latency: {secs:.2} s against a bound of 50 s: {:+.1} %",
            (secs / 50.0 - 1.0) * 100.0
        );
    }
}
