//! Forwarding through the real binary to the simulated IIS (`izrelay sim iis`, a separate
//! process) over loopback HTTPS: end to end, injected faults, SIGKILL mid-drain, a paused IIS,
//! and no password anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use izrelay::sim::iis::Delivery;
use rusqlite::Connection;

use crate::util::{izrelay, root};

/// A running `izrelay sim iis`, killed on drop.
pub(crate) struct Sim {
    pub(crate) child: Child,
    pub(crate) url: String,
    record: PathBuf,
}

impl Sim {
    pub(crate) fn start(dir: &Path, args: &[&str]) -> Sim {
        let record = dir.join("deliveries.ndjson");
        let mut child = izrelay()
            .args(["sim", "iis", "--listen", "127.0.0.1:0", "--tls", "--cert-out"])
            .arg(dir.join("sim-ca.pem"))
            .arg("--record")
            .arg(&record)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("sim starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("first line");
        let url = line.trim().rsplit(' ').next().expect("url").to_owned();
        assert!(url.starts_with("https://127.0.0.1:"), "{line}");
        Sim { child, url, record }
    }

    pub(crate) fn deliveries(&self) -> Vec<Delivery> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("delivery json"))
            .collect()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A data dir with a config trusting the simulator's certificate.
struct Site {
    dir: tempfile::TempDir,
    /// Every stdout and stderr byte of every command run, for the password grep.
    transcript: Vec<u8>,
}

impl Site {
    fn new(extra: &str) -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        let site = Site { dir, transcript: Vec::new() };
        let config = format!(
            "[forward]\nca_file = {:?}\nrequest_timeout_secs = 2\nconnect_timeout_secs = 2\n\
             retry_base_ms = 5\nretry_max_ms = 40\ncircuit_probe_ms = 50\n{extra}",
            site.path("sim-ca.pem")
        );
        std::fs::write(site.path("config.toml"), config).expect("config");
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

    fn run(&mut self, args: &[&str]) -> Output {
        let out = self.cmd().args(args).output().expect("izrelay runs");
        self.transcript.extend_from_slice(&out.stdout);
        self.transcript.extend_from_slice(&out.stderr);
        out
    }

    fn ok(&mut self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?}: {}{}", text(&out.stdout), text(&out.stderr));
        text(&out.stdout)
    }

    fn db(&self) -> Connection {
        Connection::open(self.path("data/izrelay.db")).expect("db")
    }

    fn counts(&self) -> BTreeMap<String, i64> {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT status, count(*) FROM notification_log GROUP BY status")
            .expect("sql");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    /// Runs `forward --once` until nothing is queued (at most `max` runs).
    fn drain(&mut self, max: usize) -> usize {
        for run in 1..=max {
            let out = self.run(&["forward", "--once"]);
            assert!(matches!(out.status.code(), Some(0 | 1)), "{}", text(&out.stderr));
            if !self.counts().contains_key("queued") && !self.counts().contains_key("sending") {
                return run;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("still queued after {max} runs: {:?}", self.counts());
    }
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn base_record() -> serde_json::Value {
    let path = root().join("tests/fixtures/records/11-adult-tdap-private-local-provider-id.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

/// `n` valid records for `provider`, two doses per patient (so FIFO per patient matters).
pub(crate) fn write_records(path: &Path, provider: &str, n: usize) {
    let base = base_record();
    let mut f = std::fs::File::create(path).expect("create");
    for i in 0..n {
        let mut r = base.clone();
        r["vaccination_id"] = format!("{provider}-rec-{i:05}").into();
        r["provider_id"] = provider.into();
        r["patient"]["id"] = format!("{provider}-{:05}", i / 2).into();
        writeln!(f, "{r}").expect("write");
    }
}

pub(crate) fn write_settings(path: &Path, url: &str, entries: &[(&str, &str, &str)]) {
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Settings>\n");
    for (provider, user, password) in entries {
        xml.push_str(&format!(
            "  <setting providerId=\"{provider}\">\n    <value name=\"userName\">{user}</value>\n    \
             <value name=\"password\">{password}</value>\n    <value name=\"iisEndpoint\">{url}</value>\n    \
             <value name=\"facilityId\">FAC-{provider}</value>\n  </setting>\n"
        ));
    }
    xml.push_str("</Settings>\n");
    std::fs::write(path, xml).expect("settings");
}

pub(crate) fn sim_accounts(entries: &[(&str, &str, &str)]) -> Vec<String> {
    entries
        .iter()
        .flat_map(|(provider, user, password)| {
            ["--account".to_owned(), format!("{user}:{password}:FAC-{provider}")]
        })
        .collect()
}

/// Per vaccination: the MSH-10s the simulator accepted (or recognised as a resend).
fn stored_by_dose(deliveries: &[Delivery]) -> BTreeMap<String, BTreeSet<String>> {
    let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for d in deliveries {
        if matches!(d.outcome.as_str(), "accepted" | "accepted_with_warnings" | "duplicate") {
            m.entry(d.vaccination_id.clone().unwrap_or_default())
                .or_default()
                .insert(d.control_id.clone().unwrap_or_default());
        }
    }
    m
}

const PASSWORD_A: &str = "Pa55-w0rd!A-7c1e";
const PASSWORD_B: &str = "Pa55-w0rd!B-93fd";

fn assert_no_password(site: &Site, passwords: &[&str]) {
    let mut files = vec![site.path("data/izrelay.db")];
    for extra in ["data/izrelay.db-wal", "deliveries.ndjson"] {
        if site.path(extra).exists() {
            files.push(site.path(extra));
        }
    }
    for p in passwords {
        for f in &files {
            let bytes = std::fs::read(f).expect("read");
            assert!(
                !bytes.windows(p.len()).any(|w| w == p.as_bytes()),
                "password in clear in {}",
                f.display()
            );
        }
        assert!(
            !site.transcript.windows(p.len()).any(|w| w == p.as_bytes()),
            "password in the output of a command"
        );
    }
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn end_to_end_over_https_every_message_accepted_and_history_shows_the_ack() {
    let mut site = Site::new("");
    let entries = [("PRV-A", "clinic-a", PASSWORD_A)];
    let sim = Sim::start(
        site.dir.path(),
        &sim_accounts(&entries).iter().map(String::as_str).collect::<Vec<_>>(),
    );
    write_settings(&site.path("Settings.xml"), &sim.url, &entries);
    write_records(&site.path("records.ndjson"), "PRV-A", 30);
    site.ok(&["init"]);
    site.ok(&["credentials", "import", site.path("Settings.xml").to_str().expect("utf8")]);
    site.ok(&["import", site.path("records.ndjson").to_str().expect("utf8")]);
    let ping = site.ok(&["iis", "ping", "PRV-A"]);
    assert!(ping.contains("You sent: izrelay ping"), "{ping}");
    let out = site.ok(&["-v", "forward", "--once"]);
    assert!(out.contains("PRV-A: 30 accepted"), "{out}");
    assert_eq!(site.counts(), BTreeMap::from([("accepted".to_owned(), 30)]));
    let history = site.ok(&["history", "PRV-A-rec-00007"]);
    assert!(history.contains("accepted"), "{history}");
    assert!(history.contains("ACK A"), "the ACK is in the history: {history}");
    let deliveries = sim.deliveries();
    let submits = deliveries.iter().filter(|d| d.op == "submit").count();
    assert_eq!(submits, 30, "one delivery per message, no resend without a fault");
    assert!(deliveries.iter().all(|d| d.facility.as_deref() != Some("")));
    assert_no_password(&site, &[PASSWORD_A]);
    #[cfg(unix)]
    {
        assert_eq!(mode(&site.path("data/izrelay.db")), 0o600);
        assert_eq!(mode(&site.path("data/izrelay.key")), 0o600);
    }
}

#[test]
fn thirty_percent_faults_of_every_kind_every_message_accepted_exactly_once() {
    let mut site = Site::new("circuit_failures = 0\n");
    let entries = [("PRV-A", "clinic-a", PASSWORD_A)];
    let mut args = sim_accounts(&entries);
    args.extend(["--fault-rate", "0.3", "--slow-ms", "2500", "--seed", "42"].map(String::from));
    let sim = Sim::start(site.dir.path(), &args.iter().map(String::as_str).collect::<Vec<_>>());
    write_settings(&site.path("Settings.xml"), &sim.url, &entries);
    write_records(&site.path("records.ndjson"), "PRV-A", 200);
    site.ok(&["credentials", "import", site.path("Settings.xml").to_str().expect("utf8")]);
    site.ok(&["import", site.path("records.ndjson").to_str().expect("utf8")]);
    site.drain(40);
    assert_eq!(site.counts(), BTreeMap::from([("accepted".to_owned(), 200)]));
    let deliveries = sim.deliveries();
    let kinds: BTreeSet<&str> = deliveries.iter().filter_map(|d| d.fault.as_deref()).collect();
    for f in izrelay::sim::iis::Fault::TRANSIENT {
        assert!(kinds.contains(f.name()), "fault {} never injected: {kinds:?}", f.name());
    }
    let mut accepted: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &deliveries {
        if d.outcome.starts_with("accepted") {
            *accepted.entry(d.control_id.as_deref().unwrap_or("")).or_default() += 1;
        }
    }
    assert_eq!(accepted.len(), 200, "every message accepted");
    assert!(accepted.values().all(|&n| n == 1), "an MSH-10 accepted twice");
    for (dose, ids) in stored_by_dose(&deliveries) {
        assert_eq!(ids.len(), 1, "dose {dose} stored under several MSH-10s: {ids:?}");
    }
    // FIFO per patient: the two doses of a patient were accepted in order.
    let db = site.db();
    let order: Vec<(String, String)> = deliveries
        .iter()
        .filter(|d| d.outcome.starts_with("accepted"))
        .map(|d| {
            (d.vaccination_id.clone().unwrap_or_default(), d.control_id.clone().unwrap_or_default())
        })
        .collect();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (vacc, _) in &order {
        let patient: String = db
            .query_row("SELECT patient_id FROM vaccination WHERE id = ?1", [vacc], |r| r.get(0))
            .expect("patient");
        if let Some(prev) = seen.insert(patient.clone(), vacc.clone()) {
            assert!(prev < *vacc, "patient {patient}: {vacc} accepted before {prev}");
        }
    }
}

#[test]
fn sigkill_during_a_drain_loses_nothing_and_never_changes_an_msh10() {
    let mut site = Site::new("concurrency = 8\n");
    let entries = [("PRV-A", "clinic-a", PASSWORD_A)];
    let mut args = sim_accounts(&entries);
    args.extend(
        [
            // Slow enough that 20 kills land before the drain ends.
            "--latency-ms",
            "60",
            "--fault-rate",
            "0.05",
            "--faults",
            "lost_ack,http503,drop",
            "--no-validate",
        ]
        .map(String::from),
    );
    let sim = Sim::start(site.dir.path(), &args.iter().map(String::as_str).collect::<Vec<_>>());
    write_settings(&site.path("Settings.xml"), &sim.url, &entries);
    write_records(&site.path("records.ndjson"), "PRV-A", 1000);
    site.ok(&["credentials", "import", site.path("Settings.xml").to_str().expect("utf8")]);
    site.ok(&["import", site.path("records.ndjson").to_str().expect("utf8")]);
    let mut rng = fastrand::Rng::with_seed(7);
    let mut kills = 0;
    while kills < 20 {
        let mut child = site
            .cmd()
            .args(["forward", "--once"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("forward starts");
        std::thread::sleep(Duration::from_millis(rng.u64(40..200)));
        if child.try_wait().expect("wait").is_none() {
            child.kill().expect("SIGKILL");
            kills += 1;
        }
        let _ = child.wait();
        let db = site.db();
        let ok: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("check");
        assert_eq!(ok, "ok");
        if !site.counts().contains_key("queued") && !site.counts().contains_key("sending") {
            break;
        }
    }
    assert_eq!(kills, 20, "the drain ended before 20 kills: make it slower");
    site.drain(20);
    assert_eq!(site.counts(), BTreeMap::from([("accepted".to_owned(), 1000)]));
    let db = site.db();
    let rows: i64 = db
        .query_row("SELECT count(DISTINCT control_id) FROM notification_log", [], |r| r.get(0))
        .expect("q");
    assert_eq!(rows, 1000, "one MSH-10 per dose in the outbox");
    let deliveries = sim.deliveries();
    let by_dose = stored_by_dose(&deliveries);
    assert_eq!(by_dose.len(), 1000, "every dose reached the IIS");
    for (dose, ids) in &by_dose {
        assert_eq!(ids.len(), 1, "dose {dose} delivered under several MSH-10s: {ids:?}");
        let ours: String = db
            .query_row(
                "SELECT control_id FROM notification_log WHERE vaccination_id = ?1",
                [dose],
                |r| r.get(0),
            )
            .expect("row");
        assert!(ids.contains(&ours), "dose {dose}: the IIS has {ids:?}, the outbox {ours}");
    }
    eprintln!(
        "sigkill drain: {kills} kills, {} deliveries for 1000 doses ({} resends)",
        deliveries.len(),
        deliveries.iter().filter(|d| d.outcome == "duplicate").count()
    );
}

#[test]
fn a_security_fault_pauses_only_that_iis_and_reimport_resumes_it() {
    let mut site = Site::new("");
    let good = [("PRV-A", "clinic-a", PASSWORD_A), ("PRV-B", "clinic-b", PASSWORD_B)];
    let sim = Sim::start(
        site.dir.path(),
        &sim_accounts(&good).iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let wrong = [("PRV-A", "clinic-a", "not-the-password"), ("PRV-B", "clinic-b", PASSWORD_B)];
    write_settings(&site.path("wrong.xml"), &sim.url, &wrong);
    write_settings(&site.path("good.xml"), &sim.url, &good);
    write_records(&site.path("a.ndjson"), "PRV-A", 20);
    write_records(&site.path("b.ndjson"), "PRV-B", 20);
    site.ok(&["credentials", "import", site.path("wrong.xml").to_str().expect("utf8")]);
    site.ok(&["import", site.path("a.ndjson").to_str().expect("utf8")]);
    site.ok(&["import", site.path("b.ndjson").to_str().expect("utf8")]);
    let out = site.run(&["forward", "--once"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "a paused IIS is reported: {stdout}");
    assert!(stdout.contains("PRV-A: 0 accepted") && stdout.contains("PAUSED"), "{stdout}");
    assert!(stdout.contains("PRV-B: 20 accepted"), "{stdout}");
    let security_calls = sim.deliveries().iter().filter(|d| d.outcome == "security").count();
    assert!(
        security_calls <= 4,
        "at most one call per concurrent slot before the pause: {security_calls}"
    );
    // Paused: another run sends nothing to PRV-A.
    let again = site.run(&["forward", "--once"]);
    assert!(text(&again.stdout).contains("PAUSED"));
    assert_eq!(sim.deliveries().iter().filter(|d| d.outcome == "security").count(), security_calls);
    let status = site.ok(&["status"]);
    assert!(status.contains("PRV-A") && status.to_lowercase().contains("paused"), "{status}");
    site.ok(&["credentials", "import", site.path("good.xml").to_str().expect("utf8")]);
    let out = site.ok(&["forward", "--once"]);
    assert!(out.contains("PRV-A: 20 accepted"), "{out}");
    assert_eq!(site.counts(), BTreeMap::from([("accepted".to_owned(), 40)]));
    assert_no_password(&site, &[PASSWORD_A, PASSWORD_B, "not-the-password"]);
    #[cfg(unix)]
    {
        assert_eq!(mode(&site.path("data")), 0o700, "created without init");
        assert_eq!(mode(&site.path("data/izrelay.db")), 0o600);
        assert_eq!(mode(&site.path("data/izrelay.key")), 0o600);
    }
}

#[test]
fn an_outage_opens_the_circuit_a_probe_closes_it_and_sigterm_stops_cleanly() {
    let mut site = Site::new("circuit_failures = 3\nconcurrency = 2\n");
    let entries = [("PRV-A", "clinic-a", PASSWORD_A)];
    let mut args = sim_accounts(&entries);
    args.extend(["--schedule", "http503@0-1500", "--schedule", "drop@1500-2000"].map(String::from));
    let sim = Sim::start(site.dir.path(), &args.iter().map(String::as_str).collect::<Vec<_>>());
    write_settings(&site.path("Settings.xml"), &sim.url, &entries);
    write_records(&site.path("records.ndjson"), "PRV-A", 40);
    site.ok(&["credentials", "import", site.path("Settings.xml").to_str().expect("utf8")]);
    site.ok(&["import", site.path("records.ndjson").to_str().expect("utf8")]);
    let log = std::fs::File::create(site.path("forward.log")).expect("log");
    let mut child = site
        .cmd()
        .args(["forward"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("forward starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while site.counts().get("accepted").copied().unwrap_or(0) < 40 {
        assert!(std::time::Instant::now() < deadline, "not drained: {:?}", site.counts());
        std::thread::sleep(Duration::from_millis(100));
    }
    let term =
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(term.success());
    let status = child.wait().expect("wait");
    assert!(status.success(), "SIGTERM is a clean stop: {status:?}");
    let log = std::fs::read_to_string(site.path("forward.log")).expect("log");
    assert_eq!(log.matches("circuit open").count(), 1, "one alert per state change: {log}");
    assert!(log.contains("circuit closed"), "{log}");
    let deliveries = sim.deliveries();
    let outage_submits =
        deliveries.iter().filter(|d| d.op == "submit" && d.fault.is_some()).count();
    let probes = deliveries.iter().filter(|d| d.op == "ping").count();
    assert!(probes >= 2, "the open circuit is probed: {probes}");
    assert!(
        outage_submits <= 3 + 2 * 2,
        "sending stops once the circuit opens: {outage_submits} messages sent into the outage"
    );
    assert_eq!(site.counts(), BTreeMap::from([("accepted".to_owned(), 40)]));
}
