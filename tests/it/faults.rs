//! The fault matrix (issue 7): the real binary against the simulators, with the failure
//! injected from outside the process: a damaged database file, a database locked by another
//! process, a full disk, a Dataverse token endpoint that is down, a clock that went back, an
//! expired IIS certificate. Each case checks what the user sees (a clear error, an exit code)
//! and that nothing stored is lost, doubled or overwritten.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use std::collections::{BTreeMap, BTreeSet};

use crate::daemon::DvSim;
use crate::forward::{Sim, sim_accounts, text, write_records, write_settings};
use crate::util::izrelay;

/// A data dir and a config (no Dataverse, no IIS unless `extra` says so).
struct Site {
    dir: tempfile::TempDir,
    data: PathBuf,
}

impl Site {
    fn new(extra: &str) -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        Site::with_data(dir, data, extra)
    }

    fn with_data(dir: tempfile::TempDir, data: PathBuf, extra: &str) -> Site {
        let site = Site { dir, data };
        let config = format!(
            "[forward]\nrequest_timeout_secs = 2\nconnect_timeout_secs = 2\n\
             retry_base_ms = 5\nretry_max_ms = 40\ncircuit_probe_ms = 50\n{extra}"
        );
        std::fs::write(site.path("config.toml"), config).expect("config");
        site
    }

    /// Trusts `sim`'s certificate and imports credentials for `provider` pointing at it.
    fn use_iis(&self, sim: &Sim, provider: &str) {
        let config = std::fs::read_to_string(self.path("config.toml")).expect("config");
        let config = config.replacen(
            "[forward]\n",
            &format!("[forward]\nca_file = {:?}\n", self.path("sim-ca.pem")),
            1,
        );
        std::fs::write(self.path("config.toml"), config).expect("config");
        write_settings(&self.path("Settings.xml"), &sim.url, &[(provider, "clinic", PASSWORD)]);
        self.ok(&["credentials", "import", self.path("Settings.xml").to_str().expect("utf8")]);
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn db_path(&self) -> PathBuf {
        self.data.join("izrelay.db")
    }

    fn cmd(&self) -> Command {
        let mut c = izrelay();
        c.arg("--config").arg(self.path("config.toml")).arg("--data-dir").arg(&self.data);
        c.env_remove("IZRELAY_KEY").env_remove("RUST_LOG");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("izrelay runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?}: {}{}", text(&out.stdout), text(&out.stderr));
        text(&out.stdout)
    }

    fn db(&self) -> Connection {
        Connection::open(self.db_path()).expect("db")
    }

    fn count(&self, sql: &str) -> i64 {
        self.db().query_row(sql, [], |r| r.get(0)).expect("count")
    }

    /// `izrelay run` with its stderr in `name`, killed on drop.
    fn spawn_daemon(&self, name: &str) -> Daemon {
        let log = std::fs::File::create(self.path(name)).expect("log");
        let child = self
            .cmd()
            .arg("run")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run starts");
        Daemon { child, log: self.path(name) }
    }
}

const PASSWORD: &str = "Fau1t-Pa55!k2";

/// The `sim iis` arguments for the one account [`Site::use_iis`] imports.
fn iis_args(provider: &str, more: &[&str]) -> Vec<String> {
    let mut args = sim_accounts(&[(provider, "clinic", PASSWORD)]);
    args.extend(more.iter().map(|s| (*s).to_owned()));
    args
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Every dose the IIS stored was stored under one MSH-10, and accepted (not as a resend)
/// once; returns how many doses it has.
fn accepted_exactly_once(sim: &Sim) -> usize {
    let mut ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut accepted: BTreeMap<String, usize> = BTreeMap::new();
    for d in sim.deliveries() {
        let control = d.control_id.clone().unwrap_or_default();
        if matches!(d.outcome.as_str(), "accepted" | "accepted_with_warnings" | "duplicate") {
            ids.entry(d.vaccination_id.clone().unwrap_or_default()).or_default().insert(control);
        }
        if d.outcome.starts_with("accepted") {
            *accepted.entry(d.control_id.clone().unwrap_or_default()).or_default() += 1;
        }
    }
    for (dose, ids) in &ids {
        assert_eq!(ids.len(), 1, "dose {dose} stored under several MSH-10s: {ids:?}");
    }
    for (control, n) in &accepted {
        assert_eq!(*n, 1, "MSH-10 {control} accepted {n} times");
    }
    ids.len()
}

/// Polls `done` every 100 ms until it holds; panics with `what` after `secs`.
fn wait_for(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Holds `BEGIN EXCLUSIVE` on `db` from another connection for `hold`; returns once the lock
/// is taken. Join the handle to know it was released.
fn hold_exclusive(db: &Path, hold: Duration) -> std::thread::JoinHandle<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let db = db.to_path_buf();
    let handle = std::thread::spawn(move || {
        let conn = Connection::open(&db).expect("open");
        conn.busy_timeout(Duration::from_secs(30)).expect("busy timeout");
        conn.execute_batch("BEGIN EXCLUSIVE").expect("exclusive lock");
        conn.execute("INSERT INTO audit_event (at, action) VALUES (0, 'test holds the lock')", [])
            .expect("a write under the lock");
        tx.send(()).expect("signal");
        std::thread::sleep(hold);
        conn.execute_batch("COMMIT").expect("release");
    });
    rx.recv().expect("the lock was taken");
    handle
}

fn integrity_ok(db: &Path) {
    let conn = Connection::open(db).expect("open");
    let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("check");
    assert_eq!(ok, "ok");
}

/// A running `izrelay run`: killed on drop, its log printed when the test failed.
struct Daemon {
    child: std::process::Child,
    log: PathBuf,
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_none()
    }

    /// SIGTERM, then the exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
        wait_exit(&mut self.child, "izrelay run after SIGTERM")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- daemon log ---\n{}", self.log());
        }
    }
}

/// A small tmpfs mounted on a directory, unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// `None`, with a printed notice, where mounting is not permitted (not root).
    fn mount(dir: &Path, kib: u64, what: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k,mode=0700"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir: dir.to_path_buf() }),
            Ok(o) => {
                eprintln!(
                    "NOTICE: cannot mount a tmpfs ({}); skipping {what}",
                    text(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("NOTICE: cannot run mount ({e}); skipping {what}");
                None
            }
        }
    }

    /// Fills the file system with `filler` until writes fail, then gives back `free` bytes.
    fn fill(&self, free: u64) -> PathBuf {
        use std::io::Write;
        let filler = self.dir.join("filler");
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0x5a_u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let len = f.metadata().expect("len").len();
        f.set_len(len.saturating_sub(free)).expect("truncate");
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.dir).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// A TCP gate on loopback in front of `target`: while up it relays bytes both ways (TLS
/// passes through untouched), while down it accepts and at once closes every connection.
struct Gate {
    addr: std::net::SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Gate {
    fn new(target: std::net::SocketAddr) -> Gate {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (up, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (up2, stop2) = (up.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(target) else { continue };
                for (mut from, mut to) in [
                    (client.try_clone().expect("clone"), server.try_clone().expect("clone")),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        Gate { addr, up, stop }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr);
    }
}

/// A config for `dv` (its token endpoint at `token_base` instead) and the daemon's quick loops.
fn dataverse_config(site: &Site, dv: &DvSim, token_base: &str) {
    let example =
        std::fs::read_to_string(crate::util::root().join("packaging/config.example.toml"))
            .expect("example");
    let config = example
        .replace(
            "# url = \"https://contoso.crm.dynamics.com\"",
            &format!(
                "url = {:?}\ntenant_id = \"sim-tenant\"\nclient_id = \"sim-client\"\n\
                 token_url = \"{token_base}/sim-tenant/oauth2/v2.0/token\"\nca_file = {:?}",
                dv.url,
                site.path("dv-ca.pem")
            ),
        )
        .replace("pull_interval_secs = 300", "pull_interval_secs = 1")
        .replace("sync_interval_secs = 60", "sync_interval_secs = 1")
        .replace("monitor_interval_secs = 30", "monitor_interval_secs = 1")
        .replace("# metrics_listen = \"127.0.0.1:9464\"", "metrics_listen = \"127.0.0.1:0\"");
    std::fs::write(site.path("config.toml"), config).expect("config");
    site.ok(&["check-config"]);
    let out = site
        .cmd()
        .args(["credentials", "dataverse-secret"])
        .env("IZRELAY_DATAVERSE_SECRET", "sim-secret")
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Waits (generously) for `child` to exit; kills it and panics past the deadline.
fn wait_exit(child: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn quick_check(db: &Path) -> String {
    let conn = Connection::open(db).expect("open");
    let rows: rusqlite::Result<Vec<String>> = conn
        .prepare("PRAGMA quick_check")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect());
    match rows {
        Ok(rows) => rows.join("\n"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_damaged_database_is_refused_by_status_import_and_run_and_never_written() {
    let site = Site::new("");
    write_records(&site.path("a.ndjson"), "PRV-A", 300);
    write_records(&site.path("b.ndjson"), "PRV-B", 10);
    site.ok(&["import", site.path("a.ndjson").to_str().expect("utf8")]);
    let db = site.db_path();
    assert!(
        std::fs::metadata(db.with_extension("db-wal")).map_or(true, |m| m.len() == 0),
        "the last close checkpointed the WAL"
    );
    let page_size = site.count("PRAGMA page_size") as usize;
    let original = std::fs::read(&db).expect("db bytes");
    let pages = original.len() / page_size;
    assert!(pages > 20, "a database of some size: {pages} pages");
    // Garbage over one page in the middle; the first, from the middle on, that SQLite's own
    // check notices (a page of an overflow chain's body would go unnoticed by any check).
    let mut rng = fastrand::Rng::with_seed(7);
    let mut damaged = None;
    for page in pages / 2..pages {
        let mut bytes = original.clone();
        let at = page * page_size;
        bytes[at..at + page_size].fill_with(|| rng.u8(..));
        std::fs::write(&db, &bytes).expect("write garbage");
        if quick_check(&db) != "ok" {
            damaged = Some(bytes);
            break;
        }
    }
    let damaged = damaged.expect("a page whose damage quick_check sees");
    assert_eq!(std::fs::read(&db).expect("db"), damaged, "the test's own check wrote nothing");
    let named = |what: &str, stderr: &str| {
        assert!(stderr.contains(&db.display().to_string()), "{what} names the file: {stderr}");
        assert!(stderr.contains("damaged"), "{what} says it is damaged: {stderr}");
        assert_eq!(std::fs::read(&db).expect("db"), damaged, "{what} wrote into the file");
    };
    let status = site.run(&["status"]);
    assert!(!status.status.success(), "status: {}", text(&status.stdout));
    named("status", &text(&status.stderr));
    let import = site.run(&["import", site.path("b.ndjson").to_str().expect("utf8")]);
    assert!(!import.status.success(), "import: {}", text(&import.stdout));
    named("import", &text(&import.stderr));
    let mut daemon = site.spawn_daemon("run.log");
    let exit = wait_exit(&mut daemon.child, "izrelay run on a damaged database");
    assert!(!exit.success(), "run refuses to start");
    named("run", &std::fs::read_to_string(site.path("run.log")).expect("log"));
}

#[test]
fn a_database_locked_by_another_process_fails_import_cleanly_and_the_daemon_recovers() {
    let site = Site::new("");
    write_records(&site.path("a.ndjson"), "PRV-A", 10);
    write_records(&site.path("b.ndjson"), "PRV-B", 50);
    site.ok(&["import", site.path("a.ndjson").to_str().expect("utf8")]);
    let db = site.db_path();
    // Longer than the busy timeout (10 s), so the import cannot simply wait it out.
    let lock = hold_exclusive(&db, Duration::from_secs(13));
    let import = site.run(&["import", site.path("b.ndjson").to_str().expect("utf8")]);
    let stderr = text(&import.stderr);
    lock.join().expect("lock thread");
    let vaccinations = site.count("SELECT count(*) FROM vaccination");
    let messages = site.count("SELECT count(*) FROM notification_log");
    if import.status.success() {
        // Waiting for the lock and then importing is correct too.
        assert_eq!((vaccinations, messages), (60, 60));
    } else {
        assert!(stderr.contains(&db.display().to_string()), "names the database: {stderr}");
        assert!(stderr.contains("locked"), "says it is locked: {stderr}");
        assert_eq!((vaccinations, messages), (10, 10), "nothing half-imported: {stderr}");
    }
    integrity_ok(&db);
    site.ok(&["import", site.path("b.ndjson").to_str().expect("utf8")]);
    assert_eq!(site.count("SELECT count(*) FROM notification_log"), 60);

    // The daemon: the IIS fails for a while so work is pending when the lock is taken.
    let sim =
        Sim::start(site.dir.path(), &strs(&iis_args("PRV-B", &["--schedule", "http503@0-4000"])));
    site.use_iis(&sim, "PRV-B");
    let mut daemon = site.spawn_daemon("run.log");
    wait_for(60, "the daemon forwards", || !sim.deliveries().is_empty());
    // Longer than two busy timeouts: a write of the forwarder fails, and so does its reopen.
    let lock = hold_exclusive(&db, Duration::from_secs(25));
    std::thread::sleep(Duration::from_secs(22));
    assert!(daemon.running(), "the daemon keeps running under the lock");
    lock.join().expect("lock thread");
    wait_for(120, "the daemon drains after the lock is released", || {
        site.count(
            "SELECT count(*) FROM notification_log \
             WHERE provider_id = 'PRV-B' AND status = 'accepted'",
        ) == 50
    });
    assert!(daemon.running(), "still running");
    let exit = daemon.stop();
    assert!(exit.success(), "clean stop: {exit:?}");
    let log = daemon.log();
    assert!(log.contains("locked"), "the loop logged the lock: {log}");
    assert_eq!(accepted_exactly_once(&sim), 50);
    integrity_ok(&db);
}

#[test]
fn a_full_disk_stops_an_import_cleanly_and_a_reimport_completes_once_space_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(fs) = Tmpfs::mount(&dir.path().join("data"), 32 * 1024, "the disk-full import case")
    else {
        return;
    };
    let site = Site::with_data(dir, fs.dir.clone(), "");
    write_records(&site.path("a.ndjson"), "PRV-A", 5);
    write_records(&site.path("b.ndjson"), "PRV-B", 2000);
    site.ok(&["import", site.path("a.ndjson").to_str().expect("utf8")]);
    // Room for part of the file (imports commit batch by batch), not for all of it.
    let filler = fs.fill(3 * 1024 * 1024);
    let out = site.run(&["import", site.path("b.ndjson").to_str().expect("utf8")]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "2000 records do not fit in 3 MiB: {}", text(&out.stdout));
    assert!(stderr.contains("full"), "says the disk is full: {stderr}");
    eprintln!("import on a full disk: {stderr}");
    let reported: i64 = stderr
        .split("failed after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .map_or(0, |n| n.parse().expect("a count"));
    let stored =
        |site: &Site| site.count("SELECT count(*) FROM vaccination WHERE provider_id = 'PRV-B'");
    // A reader needs room for its shared-memory file too: count once space is back.
    std::fs::remove_file(filler).expect("space returns");
    assert_eq!(stored(&site), reported, "what the error says is stored is what is: {stderr}");
    assert_eq!(
        site.count("SELECT count(*) FROM notification_log WHERE provider_id = 'PRV-B'"),
        reported,
        "one message per stored record"
    );
    integrity_ok(&site.db_path());
    site.ok(&["import", site.path("b.ndjson").to_str().expect("utf8")]);
    assert_eq!(stored(&site), 2000);
    assert_eq!(site.count("SELECT count(*) FROM notification_log"), 2005);
    integrity_ok(&site.db_path());
}

#[test]
fn a_full_disk_during_forward_reports_nothing_unstored_and_the_drain_completes_later() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(fs) = Tmpfs::mount(&dir.path().join("data"), 32 * 1024, "the disk-full forward case")
    else {
        return;
    };
    let site = Site::with_data(dir, fs.dir.clone(), "");
    let sim = Sim::start(site.dir.path(), &strs(&iis_args("PRV-A", &[])));
    site.use_iis(&sim, "PRV-A");
    write_records(&site.path("a.ndjson"), "PRV-A", 200);
    site.ok(&["import", site.path("a.ndjson").to_str().expect("utf8")]);
    let accepted =
        |site: &Site| site.count("SELECT count(*) FROM notification_log WHERE status = 'accepted'");
    // An open connection keeps the WAL index (shared memory) allocated, so the forwarder can
    // open the database and claim, and it is its outcomes that find the disk full.
    let keep = site.db();
    let _: i64 =
        keep.query_row("SELECT count(*) FROM vaccination", [], |r| r.get(0)).expect("read");
    let filler = fs.fill(96 * 1024);
    let out = site.run(&["forward", "--once"]);
    drop(keep);
    let stdout = text(&out.stdout);
    assert!(!out.status.success(), "a full disk is trouble: {stdout}");
    eprintln!("forward on a full disk: {stdout}{}", text(&out.stderr));
    // A reader needs room for its shared-memory file too: count once space is back.
    std::fs::remove_file(filler).expect("space returns");
    let reported: i64 = stdout
        .split("PRV-A: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .map_or(0, |n| n.parse().expect("a count"));
    assert_eq!(
        reported,
        accepted(&site),
        "reported accepted = stored accepted: {stdout}{}",
        text(&out.stderr)
    );
    assert!(accepted(&site) < 200, "the disk was full: {stdout}");
    integrity_ok(&site.db_path());
    for _ in 0..20 {
        let out = site.run(&["forward", "--once"]);
        assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
        if accepted(&site) == 200 {
            break;
        }
    }
    assert_eq!(accepted(&site), 200);
    assert_eq!(accepted_exactly_once(&sim), 200);
    integrity_ok(&site.db_path());
}

#[test]
fn a_dataverse_token_endpoint_that_is_down_fails_pull_clearly_and_the_daemon_waits_it_out() {
    let site = Site::new("");
    let dv = DvSim::start_with(site.dir.path(), 12, &[]);
    let target: std::net::SocketAddr =
        dv.url.trim_start_matches("https://").parse().expect("sim address");
    let gate = Gate::new(target);
    let token_base = format!("https://{}", gate.addr);
    dataverse_config(&site, &dv, &token_base);
    let local = |site: &Site| {
        [
            "SELECT count(*) FROM vaccination",
            "SELECT count(*) FROM notification_log",
            "SELECT count(*) FROM sync_cursor",
            "SELECT count(*) FROM dataverse_row",
        ]
        .map(|q| site.count(q))
    };
    let before = local(&site);
    let out = site.run(&["pull"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "pull with the token endpoint down: {}", text(&out.stdout));
    assert!(stderr.contains("token"), "names the token endpoint: {stderr}");
    assert!(stderr.contains(&gate.addr.to_string()), "says which: {stderr}");
    assert_eq!(local(&site), before, "nothing local changed");

    let listen = site.path("listen");
    let log = std::fs::File::create(site.path("run.log")).expect("log");
    let child = site
        .cmd()
        .arg("run")
        .arg("--listen-file")
        .arg(&listen)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("run starts");
    let mut daemon = Daemon { child, log: site.path("run.log") };
    wait_for(60, "the daemon listens", || listen.exists());
    let addr = std::fs::read_to_string(&listen).expect("listen file");
    // Several pull intervals with the token endpoint down.
    wait_for(60, "the pull loop notices", || daemon.log().contains("dataverse pull failed"));
    std::thread::sleep(Duration::from_secs(4));
    let (status, health) = crate::daemon::get(&addr, "/healthz");
    assert_eq!(status, 200, "the daemon is healthy enough to serve: {health}");
    assert!(daemon.running());
    gate.set_up(true);
    wait_for(120, "the pull succeeds once the token endpoint is back", || {
        site.count("SELECT count(*) FROM vaccination") > 0
    });
    let exit = daemon.stop();
    assert!(exit.success(), "clean stop: {exit:?}");
    let log = daemon.log();
    let warnings = log.lines().filter(|l| l.contains("dataverse pull failed")).count();
    assert_eq!(warnings, 1, "one warning for the outage, not one per retry: {log}");
    assert!(log.contains("dataverse answers again"), "{log}");
}

#[test]
fn a_retry_scheduled_a_year_ahead_by_a_clock_that_went_back_is_sent_now() {
    let site = Site::new("");
    let sim = Sim::start(site.dir.path(), &strs(&iis_args("PRV-A", &[])));
    site.use_iis(&sim, "PRV-A");
    write_records(&site.path("a.ndjson"), "PRV-A", 6);
    site.ok(&["import", site.path("a.ndjson").to_str().expect("utf8")]);
    // As a retry written while the clock was a year ahead, now corrected, would look.
    let year_ms: i64 = 365 * 24 * 3600 * 1000;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let n = site
        .db()
        .execute(
            "UPDATE notification_log SET next_attempt_at = ?1, attempts = 1 WHERE status = 'queued'",
            [now_ms + year_ms],
        )
        .expect("reschedule");
    assert_eq!(n, 6);
    let out = site.run(&["forward", "--once"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("PRV-A: 6 accepted"), "{stdout}{stderr}");
    assert!(stderr.contains("clock went back"), "the reschedule is logged: {stderr}");
    assert_eq!(site.count("SELECT count(*) FROM notification_log WHERE status = 'accepted'"), 6);
    assert_eq!(accepted_exactly_once(&sim), 6);
}

#[test]
fn an_expired_iis_certificate_is_refused_and_nothing_is_marked_sent() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType, date_time_ymd};
    let site = Site::new("");
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.not_before = date_time_ymd(2020, 1, 1);
    ca.not_after = date_time_ymd(2060, 1, 1);
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let mut leaf = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
    leaf.subject_alt_names =
        vec![SanType::IpAddress(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))];
    leaf.not_before = date_time_ymd(2020, 1, 1);
    leaf.not_after = date_time_ymd(2021, 1, 1);
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).expect("leaf cert");
    std::fs::write(site.path("sim-ca.pem"), ca_cert.pem()).expect("ca");
    std::fs::write(site.path("leaf.pem"), leaf_cert.pem()).expect("leaf");
    std::fs::write(site.path("leaf.key"), leaf_key.serialize_pem()).expect("key");
    let (cert, key) = (site.path("leaf.pem"), site.path("leaf.key"));
    let args = iis_args(
        "PRV-A",
        &["--tls-cert", cert.to_str().expect("utf8"), "--tls-key", key.to_str().expect("utf8")],
    );
    let sim = Sim::start(site.dir.path(), &strs(&args));
    site.use_iis(&sim, "PRV-A");
    write_records(&site.path("a.ndjson"), "PRV-A", 5);
    site.ok(&["import", site.path("a.ndjson").to_str().expect("utf8")]);
    let out = site.run(&["forward", "--once"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    eprintln!("forward to an expired certificate: {stdout}{stderr}");
    assert!(!out.status.success(), "refused: {stdout}{stderr}");
    let said = format!("{stdout}{stderr}").to_lowercase();
    assert!(said.contains("certificate"), "mentions the certificate: {stdout}{stderr}");
    assert!(said.contains("expired"), "says it expired: {stdout}{stderr}");
    assert_eq!(
        site.count("SELECT count(*) FROM notification_log WHERE status = 'queued'"),
        5,
        "nothing marked sent"
    );
    assert!(sim.deliveries().is_empty(), "no message crossed the handshake");
}
