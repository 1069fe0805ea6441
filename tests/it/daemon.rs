//! `izrelay run`, the daemon, as a real process against both simulators as real processes
//! (the IIS and Dataverse over loopback HTTPS): it pulls, forwards, syncs back, serves
//! `/healthz` and `/metrics`, reloads on SIGHUP, and stops on SIGTERM within its bound with
//! nothing left in `sending`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::forward::{Sim, sim_accounts, text, write_records, write_settings};
use crate::util::{izrelay, root};

const PASSWORD: &str = "Da3mon-Pa55!x9";

/// A running `izrelay sim dataverse` over TLS, killed on drop.
pub(crate) struct DvSim {
    child: Child,
    pub(crate) url: String,
}

impl DvSim {
    fn start(dir: &Path, rows: usize) -> DvSim {
        DvSim::start_with(dir, rows, &[])
    }

    /// [`DvSim::start`] with more `sim dataverse` arguments (e.g. `--client-secret S`).
    pub(crate) fn start_with(dir: &Path, rows: usize, args: &[&str]) -> DvSim {
        let seed = dir.join("rows.json");
        let rows: Vec<serde_json::Value> =
            (0..rows).map(|i| crate::dataverse::row(i, i % 5 != 4)).collect();
        std::fs::write(&seed, serde_json::to_string(&rows).expect("json")).expect("seed");
        let set = crate::dataverse::SET;
        let mut child = izrelay()
            .args(["sim", "dataverse", "--listen", "127.0.0.1:0", "--tls", "--cert-out"])
            .arg(dir.join("dv-ca.pem"))
            .args([
                "--table",
                &format!(
                    "{set}:msemr_medicationadministration:msemr_medicationadministrationid:tracked"
                ),
            ])
            .args(["--table", "izr_notificationlogs:izr_notificationlog:izr_notificationlogid"])
            .arg("--seed-file")
            .arg(format!("{set}={}", seed.display()))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("sim dataverse starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("first line");
        let url = line.trim().rsplit(' ').next().expect("url").to_owned();
        assert!(url.starts_with("https://127.0.0.1:"), "{line}");
        DvSim { child, url }
    }
}

impl Drop for DvSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped example config pointed at both simulators (their CA files `sim-ca.pem` and
/// `dv-ca.pem` in `dir`), with fast retries, pull and sync every second, `/metrics` on a
/// loopback port, and the `more` replacements (text, new text).
pub(crate) fn sim_config(dir: &Path, dv_url: &str, more: &[(&str, &str)]) -> String {
    let example =
        std::fs::read_to_string(root().join("packaging/config.example.toml")).expect("example");
    let mut config = example
        .replace(
            "# ca_file = \"/etc/izrelay/state-iis-ca.pem\"",
            &format!("ca_file = {:?}", dir.join("sim-ca.pem")),
        )
        .replace("retry_base_ms = 30000", "retry_base_ms = 5")
        .replace("retry_max_ms = 3600000", "retry_max_ms = 50")
        .replace(
            "# url = \"https://contoso.crm.dynamics.com\"",
            &format!(
                "url = {dv_url:?}\ntenant_id = \"sim-tenant\"\nclient_id = \"sim-client\"\n\
                 token_url = \"{dv_url}/sim-tenant/oauth2/v2.0/token\"\nca_file = {:?}",
                dir.join("dv-ca.pem")
            ),
        )
        .replace("pull_interval_secs = 300", "pull_interval_secs = 1")
        .replace("sync_interval_secs = 60", "sync_interval_secs = 1")
        .replace("# metrics_listen = \"127.0.0.1:9464\"", "metrics_listen = \"127.0.0.1:0\"");
    for (text, new) in more {
        config = config.replace(text, new);
    }
    config
}

/// A data dir, a config for both simulators, the credentials imported.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new(iis: &Sim, dv: &DvSim, dir: tempfile::TempDir, stop_timeout_secs: u64) -> Site {
        let site = Site { dir };
        let stop = format!("stop_timeout_secs = {stop_timeout_secs}");
        let config = sim_config(
            site.dir.path(),
            &dv.url,
            &[
                ("circuit_probe_ms = 60000", "circuit_probe_ms = 50"),
                ("monitor_interval_secs = 30", "monitor_interval_secs = 1"),
                ("stop_timeout_secs = 20", &stop),
            ],
        );
        std::fs::write(site.path("config.toml"), config).expect("config");
        let entries = [("PRV-001", "clinic-17", PASSWORD)];
        write_settings(&site.path("Settings.xml"), &iis.url, &entries);
        site.ok(&["check-config"]);
        site.ok(&["credentials", "import", site.path("Settings.xml").to_str().expect("utf8")]);
        let out = site
            .cmd()
            .args(["credentials", "dataverse-secret"])
            .env("IZRELAY_DATAVERSE_SECRET", "sim-secret")
            .output()
            .expect("runs");
        assert!(out.status.success(), "{}", text(&out.stderr));
        site
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cmd(&self) -> Command {
        let mut c = izrelay();
        c.arg("--config").arg(self.path("config.toml")).arg("--data-dir").arg(self.path("data"));
        c.env_remove("IZRELAY_KEY").env_remove("RUST_LOG");
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().expect("izrelay runs");
        assert!(out.status.success(), "{args:?}: {}{}", text(&out.stdout), text(&out.stderr));
        text(&out.stdout)
    }

    /// Starts the daemon (JSON logs to `daemon.log`); returns it and the metrics address.
    #[allow(clippy::zombie_processes, reason = "the caller waits for the returned child")]
    fn run(&self) -> (Child, String) {
        let log = std::fs::File::create(self.path("daemon.log")).expect("log");
        let listen = self.path("listen");
        let _ = std::fs::remove_file(&listen);
        let mut child = self
            .cmd()
            .args(["--log-format", "json", "run", "--listen-file"])
            .arg(&listen)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("daemon starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(addr) = std::fs::read_to_string(&listen) {
                if !addr.is_empty() {
                    return (child, addr);
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no listen file: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
    }

    fn sending(&self) -> i64 {
        let db = rusqlite::Connection::open(self.path("data/izrelay.db")).expect("db");
        db.query_row("SELECT count(*) FROM notification_log WHERE status = 'sending'", [], |r| {
            r.get(0)
        })
        .expect("count")
    }
}

/// A plain HTTP/1.1 GET: (status, body).
pub(crate) fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("send");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read");
    let status = answer.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status");
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// `name{labels} value` lines of a Prometheus exposition, summed over the label sets that
/// contain every `want` label.
fn metric(text: &str, name: &str, want: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let (n, labels) = key.split_once('{').map_or((key, ""), |(n, rest)| (n, rest));
            (n == name && want.iter().all(|w| labels.contains(w)))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(ok.success());
}

fn wait_exit(child: &mut Child, bound: Duration) -> (std::process::ExitStatus, Duration) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return (status, started.elapsed());
        }
        if started.elapsed() > bound {
            let _ = child.kill();
            panic!("the daemon did not stop within {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn run_pulls_forwards_syncs_serves_metrics_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tmp");
    let iis = Sim::start(
        dir.path(),
        &sim_accounts(&[("PRV-001", "clinic-17", PASSWORD)])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let dv = DvSim::start(dir.path(), 60);
    let site = Site::new(&iis, &dv, dir, 10);
    let (mut child, addr) = site.run();

    // Records also arrive by file while the daemon runs (a second writer on the database).
    write_records(&site.path("records.ndjson"), "PRV-001", 20);
    site.ok(&["import", site.path("records.ndjson").to_str().expect("utf8")]);
    let expected = 48.0 + 20.0; // 60 rows, every fifth not completed; 20 imported

    let deadline = Instant::now() + Duration::from_secs(90);
    let last = loop {
        let (status, body) = get(&addr, "/metrics");
        assert_eq!(status, 200, "{body}");
        let accepted = metric(&body, "izrelay_messages", &["state=\"accepted\""]);
        let waiting = metric(&body, "izrelay_messages", &["state=\"queued\""])
            + metric(&body, "izrelay_messages", &["state=\"sending\""]);
        let backlog = metric(&body, "izrelay_dataverse_sync_backlog", &[]);
        if accepted == expected && waiting == 0.0 && backlog == 0.0 {
            break body;
        }
        assert!(Instant::now() < deadline, "not drained and synced:\n{body}\n{}", site.log());
        std::thread::sleep(Duration::from_millis(200));
    };
    // Every metric the issue names is there, with values that follow from what happened.
    assert_eq!(
        metric(&last, "izrelay_sends_total", &["outcome=\"accepted", "provider=\"PRV-001\""]),
        expected,
        "{last}"
    );
    assert_eq!(metric(&last, "izrelay_send_duration_seconds_count", &[]), expected, "{last}");
    assert!(metric(&last, "izrelay_dataverse_last_pull_timestamp_seconds", &[]) > 1.7e9, "{last}");
    assert_eq!(metric(&last, "izrelay_dataverse_rows_pulled_total", &[]), 60.0, "{last}");
    assert_eq!(metric(&last, "izrelay_dataverse_synced_total", &[]), 48.0, "{last}");
    assert_eq!(metric(&last, "izrelay_oldest_queued_age_seconds", &[]), 0.0, "{last}");
    assert_eq!(metric(&last, "izrelay_iis_paused", &[]), 0.0, "{last}");
    let (status, health) = get(&addr, "/healthz");
    assert_eq!(status, 200, "{health}");
    for l in ["forward: running", "pull: running", "sync: running", "database: ok"] {
        assert!(health.contains(l), "{health}");
    }
    assert_eq!(get(&addr, "/nothing").0, 404);

    // SIGHUP: the configuration is read again and the loops restart; still healthy.
    let hup = Command::new("kill").args(["-HUP", &child.id().to_string()]).status().expect("kill");
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !site.log().contains("configuration reloaded") {
        assert!(Instant::now() < deadline, "no reload: {}", site.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, health) = get(&addr, "/healthz");
    assert_eq!(status, 200, "{health}");

    sigterm(&child);
    let (status, took) = wait_exit(&mut child, Duration::from_secs(15));
    assert!(status.success(), "clean exit: {status:?}\n{}", site.log());
    assert!(took < Duration::from_secs(10), "stopped in {took:?}");
    assert_eq!(site.sending(), 0);
    let log = site.log();
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("every log line is JSON");
        assert!(v.get("level").is_some() && v.get("message").is_some(), "{line}");
    }
    assert!(!log.contains(PASSWORD), "no password in the log");
    assert!(!log.contains("sim-secret"), "no Dataverse secret in the log");
    // No PHI at info: the rows' patient names and MRNs never appear.
    for phi in ["Doe", "MRN-", "1980-02-29"] {
        assert!(!log.contains(phi), "PHI {phi:?} in the log:\n{log}");
    }
    let status = site.ok(&["status"]);
    assert!(status.contains("accepted 68"), "{status}");
}

#[test]
fn sigterm_mid_drain_finishes_in_flight_sends_and_leaves_nothing_in_sending() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut args = sim_accounts(&[("PRV-001", "clinic-17", PASSWORD)]);
    args.extend(["--latency-ms", "300"].map(String::from));
    let iis = Sim::start(dir.path(), &args.iter().map(String::as_str).collect::<Vec<_>>());
    let dv = DvSim::start(dir.path(), 0);
    let site = Site::new(&iis, &dv, dir, 5);
    write_records(&site.path("records.ndjson"), "PRV-001", 200);
    site.ok(&["import", site.path("records.ndjson").to_str().expect("utf8")]);
    let (mut child, addr) = site.run();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = get(&addr, "/metrics");
        if metric(&body, "izrelay_sends_total", &[]) >= 8.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no sends: {}", site.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    sigterm(&child);
    let (status, took) = wait_exit(&mut child, Duration::from_secs(10));
    assert!(status.success(), "{status:?}\n{}", site.log());
    assert!(took < Duration::from_secs(5) + Duration::from_millis(500), "{took:?}");
    assert_eq!(site.sending(), 0, "nothing left in sending");
    // What the IIS accepted is recorded as accepted; the rest waits, queued, for the next start.
    let db = rusqlite::Connection::open(site.path("data/izrelay.db")).expect("db");
    let counts: BTreeMap<String, i64> = db
        .prepare("SELECT status, count(*) FROM notification_log GROUP BY status")
        .expect("sql")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("q")
        .collect::<Result<_, _>>()
        .expect("rows");
    let accepted_by_iis = iis
        .deliveries()
        .iter()
        .filter(|d| d.op == "submit" && d.outcome.starts_with("accepted"))
        .count() as i64;
    assert_eq!(counts.get("accepted").copied().unwrap_or(0), accepted_by_iis, "{counts:?}");
    assert!(counts.get("queued").copied().unwrap_or(0) > 0, "{counts:?}");
    assert_eq!(counts.values().sum::<i64>(), 200);
}
