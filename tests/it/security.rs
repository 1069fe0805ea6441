//! The claims of `SECURITY.md` that need the real binary: no secret in any output, log or
//! database file across a whole working session (`-vv` trace logging included); core dumps
//! off in a running daemon; an IIS answer over `max_response_bytes` never accepted.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::daemon::{DvSim, sim_config};
use crate::forward::{Sim, sim_accounts, text, write_records, write_settings};
use crate::util::{izrelay, root};

/// The IIS password PRV-001 first gets (the simulator refuses it: SecurityFault).
const PW_WRONG: &str = "Wr0ng-Pa55-sec-4a8e";
/// PRV-001's real IIS password.
const PW_001: &str = "Pa55-sec-001-b7d2";
/// PRV-002's IIS password.
const PW_002: &str = "Pa55-sec-002-e19c";
/// The Dataverse client secret (unreserved characters only, so that its form-encoded and
/// XML forms are the clear text too and one grep finds every form).
const DV_SECRET: &str = "Dv-S3cret-sec-Q8zk7Wm";
/// A Dataverse secret the sign-in refuses.
const DV_WRONG: &str = "Dv-Wr0ng-sec-Lx52Pq";
/// A key that opens nothing in the database (the bad-key case).
const OTHER_KEY: &str = "f0e0d0c0b0a090807060504030201000f1e1d1c1b1a191817161514131211101";

/// A data dir with a config for the simulated IIS and Dataverse; every stdout and stderr byte
/// of every command is kept.
struct Site {
    dir: tempfile::TempDir,
    transcript: Vec<u8>,
}

impl Site {
    fn new(iis: &Sim, dv: &DvSim, dir: tempfile::TempDir) -> Site {
        let site = Site { dir, transcript: Vec::new() };
        let config = sim_config(site.dir.path(), &dv.url, &[]);
        assert!(config.contains(&dv.url) && config.contains("metrics_listen = \"127.0.0.1:0\""));
        std::fs::write(site.path("config.toml"), config).expect("config");
        let _ = iis;
        site
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cmd(&self) -> Command {
        let mut c = izrelay();
        c.arg("--config").arg(self.path("config.toml")).arg("--data-dir").arg(self.path("data"));
        for var in ["IZRELAY_KEY", "IZRELAY_NEW_KEY", "IZRELAY_DATAVERSE_SECRET", "RUST_LOG"] {
            c.env_remove(var);
        }
        c
    }

    /// Runs `izrelay ARGS` with `env`; keeps its output; fails on a panic.
    fn run_env(&mut self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let out = self.cmd().args(args).envs(env.iter().copied()).output().expect("izrelay runs");
        self.transcript.extend_from_slice(&out.stdout);
        self.transcript.extend_from_slice(&out.stderr);
        assert!(!text(&out.stderr).contains("panicked"), "{args:?}: {}", text(&out.stderr));
        out
    }

    fn run(&mut self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    fn ok(&mut self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?}: {}{}", text(&out.stdout), text(&out.stderr));
        text(&out.stdout)
    }

    /// Stores `secret` as the Dataverse client secret, through `IZRELAY_DATAVERSE_SECRET`.
    fn dataverse_secret(&mut self, secret: &str) {
        let out = self.run_env(
            &["-vv", "credentials", "dataverse-secret"],
            &[("IZRELAY_DATAVERSE_SECRET", secret)],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    }

    fn log_ids(&self) -> Vec<i64> {
        let db = rusqlite::Connection::open(self.path("data/izrelay.db")).expect("db");
        let mut stmt = db.prepare("SELECT id FROM notification_log ORDER BY id").expect("sql");
        stmt.query_map([], |r| r.get(0)).expect("q").collect::<Result<_, _>>().expect("rows")
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Starts `izrelay run` (JSON logs to `log`) and waits for its metrics address.
#[allow(clippy::zombie_processes, reason = "every caller waits for the returned child")]
fn start_daemon(cmd: &mut Command, dir: &Path, log: &Path, args: &[&str]) -> (Child, String) {
    let listen = dir.join("listen");
    let _ = std::fs::remove_file(&listen);
    let mut child = cmd
        .args(args)
        .args(["--log-format", "json", "run", "--listen-file"])
        .arg(&listen)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
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
            panic!("no listen file: {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sigterm(child: &mut Child) {
    let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(ok.success());
    let status = child.wait().expect("wait");
    assert!(status.success(), "SIGTERM is a clean stop: {status:?}");
}

/// A whole working session, every command at trace level where it touches a secret: import of
/// credentials, the Dataverse secret, a pull, a forward with a SecurityFault (wrong password),
/// then with the right one, the write-back, a bad key, a refused Dataverse secret, the audit
/// commands and the daemon. No password, secret or key is in any stdout or stderr byte, nor in
/// the database files.
#[test]
fn no_secret_in_any_output_log_or_database_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let entries_wrong = [("PRV-001", "clinic-001", PW_WRONG), ("PRV-002", "clinic-002", PW_002)];
    let entries_good = [("PRV-001", "clinic-001", PW_001), ("PRV-002", "clinic-002", PW_002)];
    let iis = Sim::start(
        dir.path(),
        &sim_accounts(&entries_good).iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let dv = DvSim::start_with(dir.path(), 6, &["--client-secret", DV_SECRET]);
    let mut site = Site::new(&iis, &dv, dir);
    write_settings(&site.path("wrong.xml"), &iis.url, &entries_wrong);
    write_settings(&site.path("good.xml"), &iis.url, &entries_good);
    write_records(&site.path("records.ndjson"), "PRV-002", 4);
    let p = |site: &Site, name: &str| site.path(name).to_str().expect("utf-8").to_owned();

    site.ok(&["init"]);
    site.ok(&["-vv", "check-config"]);
    site.ok(&["-vv", "credentials", "import", &p(&site, "wrong.xml")]);
    site.dataverse_secret(DV_SECRET);
    site.ok(&["credentials", "list"]);
    site.ok(&["credentials", "list", "--json"]);
    site.ok(&["-vv", "pull", "--once"]);
    site.ok(&["-vv", "import", &p(&site, "records.ndjson")]);
    // PRV-001's password is refused: SecurityFault, the IIS paused (exit 1).
    let out = site.run(&["-vv", "forward", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("PAUSED"), "{}", text(&out.stdout));
    let out = site.run(&["-vv", "--log-format", "json", "iis", "ping", "PRV-001"]);
    assert!(!text(&out.stdout).is_empty() || !text(&out.stderr).is_empty());
    site.ok(&["status"]);
    site.ok(&["status", "--json"]);
    site.ok(&["-vv", "credentials", "import", &p(&site, "good.xml")]);
    site.ok(&["-vv", "--log-format", "json", "forward", "--once"]);
    site.ok(&["-vv", "sync", "--once"]);
    site.ok(&["-vv", "iis", "ping", "PRV-002"]);
    for args in [
        &["log", "--json"][..],
        &["log", "--csv"],
        &["log"],
        &["status"],
        &["history", "PRV-002-rec-00001"],
        &["history", "PRV-002-rec-00001", "--json"],
    ] {
        site.ok(args);
    }
    for id in site.log_ids() {
        site.ok(&["show", &id.to_string()]);
    }
    // The bad-key case: every command that opens a credential says so, and only so.
    for args in [&["-vv", "forward", "--once"][..], &["-vv", "iis", "ping", "PRV-002"]] {
        let out = site.run_env(args, &[("IZRELAY_KEY", OTHER_KEY)]);
        assert!(!out.status.success(), "{args:?} with another key");
        assert!(
            text(&out.stderr).contains("does not open with this key"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    // A Dataverse secret the sign-in refuses.
    site.dataverse_secret(DV_WRONG);
    let out = site.run(&["-vv", "pull", "--once"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("sign-in failed"), "{}", text(&out.stderr));
    site.dataverse_secret(DV_SECRET);
    // The daemon at trace level: pull, forward, sync, then SIGTERM.
    let log = site.path("daemon.log");
    let (mut child, _addr) = start_daemon(&mut site.cmd(), site.dir.path(), &log, &["-vv"]);
    std::thread::sleep(Duration::from_millis(2500));
    // The WAL exists only while a connection is open: read the files with the daemon running.
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for f in ["izrelay.db", "izrelay.db-wal", "izrelay.db-shm"] {
        if let Ok(bytes) = std::fs::read(site.path("data").join(f)) {
            files.push((format!("{f} (daemon running)"), bytes));
        }
    }
    sigterm(&mut child);
    let daemon_log = std::fs::read(&log).expect("daemon log");
    assert!(contains(&daemon_log, b"dataverse"), "the daemon pulled");
    site.transcript.extend_from_slice(&daemon_log);
    files.push(("izrelay.db".into(), std::fs::read(site.path("data/izrelay.db")).expect("db")));
    let wal = files.iter().find(|(n, _)| n.starts_with("izrelay.db-wal")).map(|(_, b)| b.len());
    assert!(wal.unwrap_or(0) > 0, "the WAL was read: {wal:?}");

    let key = std::fs::read(site.path("data/izrelay.key")).expect("key");
    let key_hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let secrets: [(&str, &[u8]); 8] = [
        ("PW_WRONG", PW_WRONG.as_bytes()),
        ("PW_001", PW_001.as_bytes()),
        ("PW_002", PW_002.as_bytes()),
        ("DV_SECRET", DV_SECRET.as_bytes()),
        ("DV_WRONG", DV_WRONG.as_bytes()),
        ("OTHER_KEY", OTHER_KEY.as_bytes()),
        ("the key", &key),
        ("the key in hex", key_hex.as_bytes()),
    ];
    // What the grep sees: enough output that a leak would be in it.
    assert!(site.transcript.len() > 20_000, "only {} bytes of output", site.transcript.len());
    assert!(contains(&site.transcript, b"TRACE"), "trace logging was on");
    for (name, secret) in secrets {
        assert!(!contains(&site.transcript, secret), "{name} in the output of a command");
        for (file, bytes) in &files {
            assert!(!contains(bytes, secret), "{name} in clear in {file}");
        }
    }
}

/// `/proc/<pid>/limits` of a running `izrelay run`: no core file. As root, the daemon also
/// runs as `nobody` to show it is not dumpable: its `/proc/<pid>/environ` belongs to root,
/// where a plain process of `nobody` (the control, `sleep`) owns its own.
#[cfg(target_os = "linux")]
#[test]
fn a_running_daemon_writes_no_core_file_and_is_not_dumpable() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;

    let unit = std::fs::read_to_string(root().join("packaging/izrelay.service")).expect("unit");
    assert!(unit.lines().any(|l| l == "LimitCORE=0"), "the unit sets LimitCORE=0");

    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("config.toml"),
        "[daemon]\nmetrics_listen = \"127.0.0.1:0\"\npull_interval_secs = 1\n",
    )
    .expect("config");
    let root_user = std::fs::metadata("/proc/self").expect("proc").uid() == 0;
    const NOBODY: u32 = 65534;
    if root_user {
        std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).expect("chown");
        std::fs::set_permissions(
            dir.path().join("config.toml"),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .expect("chmod");
    }
    // Through a shell that raises the soft core limit to the hard one first: the limits a
    // test run inherits (often a soft 0) must not be what makes the check pass.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -S -c \"$(ulimit -H -c)\" && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_izrelay"))
        .arg("--config")
        .arg(dir.path().join("config.toml"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("HOME", dir.path())
        .env("IZRELAY_KEY", OTHER_KEY)
        .env_remove("IZRELAY_DATA_DIR");
    if root_user {
        cmd.uid(NOBODY).gid(NOBODY);
    }
    let log = dir.path().join("daemon.log");
    let (mut child, _addr) = start_daemon(&mut cmd, dir.path(), &log, &[]);
    let proc_dir = PathBuf::from(format!("/proc/{}", child.id()));
    let limits = std::fs::read_to_string(proc_dir.join("limits")).expect("limits");
    let core = limits.lines().find(|l| l.starts_with("Max core file size")).expect("core line");
    let values: Vec<&str> = core["Max core file size".len()..].split_whitespace().collect();
    let environ_owner = std::fs::metadata(proc_dir.join("environ")).expect("environ").uid();
    sigterm(&mut child);
    assert_eq!(values[..2], ["0", "0"], "soft and hard core limits: {core}");
    if root_user {
        let mut control = Command::new("sleep");
        control.arg("5").uid(NOBODY).gid(NOBODY);
        let mut control = control.spawn().expect("sleep");
        let control_owner =
            std::fs::metadata(format!("/proc/{}/environ", control.id())).expect("environ").uid();
        let _ = control.kill();
        let _ = control.wait();
        assert_eq!(control_owner, NOBODY, "a dumpable process of nobody owns its /proc files");
        assert_eq!(environ_owner, 0, "izrelay is not dumpable: its /proc files are root's");
    } else {
        eprintln!("NOTICE: not root; the not-dumpable check needs another user and is skipped");
    }
}

/// What [`LoopbackIis`] answers.
#[derive(Clone)]
enum Reply {
    /// An AA ACK for the message's MSH-10, the SOAP answer padded by an XML comment to this
    /// many bytes.
    Ack(usize),
    /// `307 Temporary Redirect` to this URL.
    Redirect(String),
}

/// A loopback HTTP/1.1 server that answers every request with `reply`; counts connections;
/// stops when dropped.
struct LoopbackIis {
    url: String,
    stop: Arc<AtomicBool>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LoopbackIis {
    fn start(reply: Reply) -> LoopbackIis {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}/iis", listener.local_addr().expect("addr"));
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = connections.clone();
        let thread = std::thread::spawn(move || {
            // Bounded: at most 60 s and 200 connections, whatever the client does.
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut served = 0;
            while !stopped.load(Ordering::Relaxed) && Instant::now() < deadline && served < 200 {
                match listener.accept() {
                    Ok((stream, _)) => {
                        served += 1;
                        count.fetch_add(1, Ordering::Relaxed);
                        let _ = answer(stream, &reply);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        LoopbackIis { url, stop, connections, thread: Some(thread) }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for LoopbackIis {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request and answers it (one request per connection).
fn answer(stream: TcpStream, reply: &Reply) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let mut out = stream;
    let answer_len = match reply {
        Reply::Ack(len) => *len,
        Reply::Redirect(to) => {
            write!(
                out,
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            return out.flush();
        }
    };
    let soap = match izrelay::iis::soap::parse_request(&body) {
        Ok(izrelay::iis::soap::Request::Submit { hl7, .. }) => {
            let control_id = hl7.split('|').nth(9).unwrap_or("").to_owned();
            let ack = format!(
                "MSH|^~\\&|IIS|IIS|IZRELAY||20261124090000||ACK^V04^ACK|A{control_id}|P|2.5.1\r\
                 MSA|AA|{control_id}\r"
            );
            izrelay::iis::soap::submit_response(&ack)
        }
        Ok(_) => izrelay::iis::soap::connectivity_response("ok"),
        Err(_) => String::new(),
    };
    let pad = answer_len.saturating_sub(soap.len() + 7);
    let body = format!("{soap}<!--{}-->", "x".repeat(pad));
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/soap+xml; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    out.flush()
}

/// With `max_response_bytes = 1024`, an IIS answer of 2,048 bytes is refused: the message is
/// not accepted, it stays queued, and the error names the limit. The same answer in 1,000
/// bytes is accepted (the control: only the size differs).
#[test]
fn an_iis_answer_over_max_response_bytes_is_never_accepted() {
    for (answer_len, accepted) in [(2048, false), (1000, true)] {
        let iis = LoopbackIis::start(Reply::Ack(answer_len));
        let dir = tempfile::tempdir().expect("tmp");
        let path = |name: &str| dir.path().join(name);
        std::fs::write(
            path("config.toml"),
            // Backoff draws the retry delay from [0, retry_max_ms] (full jitter) and `forward
            // --once` waits for retries due within 2 s: with a 10-minute cap the retry fell in
            // that window once in ~300 runs (seen in CI). With ~30 years it practically cannot.
            "[forward]\nmax_response_bytes = 1024\nretry_base_ms = 1000000000000\n\
             retry_max_ms = 1000000000000\n\
             request_timeout_secs = 5\n",
        )
        .expect("config");
        write_settings(&path("Settings.xml"), &iis.url, &[("PRV-X", "user-x", PW_001)]);
        write_records(&path("records.ndjson"), "PRV-X", 1);
        let run = |args: &[&str]| {
            izrelay()
                .arg("--config")
                .arg(path("config.toml"))
                .arg("--data-dir")
                .arg(path("data"))
                .args(args)
                .env_remove("IZRELAY_KEY")
                .output()
                .expect("izrelay runs")
        };
        let xml = path("Settings.xml");
        let out =
            run(&["credentials", "import", "--allow-http", "PRV-X", xml.to_str().expect("p")]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let records = path("records.ndjson");
        assert!(run(&["import", records.to_str().expect("p")]).status.success());
        let out = run(&["forward", "--once"]);
        assert_eq!(iis.connections(), 1, "one attempt, the retry is not due in this run");
        let log = text(&run(&["log", "--json"]).stdout);
        let rows: serde_json::Value = serde_json::from_str(&log).expect("log json");
        let row = &rows[0];
        if accepted {
            assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
            assert_eq!(row["status"], "accepted", "{log}");
        } else {
            assert_eq!(row["status"], "queued", "not accepted, kept for a retry: {log}");
            let history = text(&run(&["history", "PRV-X-rec-00000"]).stdout);
            let all = format!("{history}{}{}{log}", text(&out.stdout), text(&out.stderr));
            assert!(
                all.contains("larger than max_response_bytes (1024)"),
                "the error names the limit: {all}"
            );
        }
    }
}

/// SQL metacharacters in record fields and command arguments are values, never SQL: a record
/// whose id holds a `DROP TABLE` is stored and found by that id, and filters built to match
/// everything match nothing.
#[test]
fn sql_metacharacters_are_values_never_sql() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = |name: &str| dir.path().join(name);
    let evil_id = "x'); DROP TABLE notification_log; --";
    write_records(&path("records.ndjson"), "PRV-Q", 2);
    let mut records = std::fs::read_to_string(path("records.ndjson")).expect("records");
    records = records.replacen("PRV-Q-rec-00000", &evil_id.replace('"', "\\\""), 1);
    std::fs::write(path("records.ndjson"), records).expect("write");
    let run = |args: &[&str]| {
        let out = izrelay()
            .arg("--data-dir")
            .arg(path("data"))
            .args(args)
            .env_remove("IZRELAY_KEY")
            .output()
            .expect("izrelay runs");
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    let records = path("records.ndjson");
    let (ok, _, err) = run(&["import", records.to_str().expect("utf-8")]);
    assert!(ok, "{err}");
    let (ok, history, err) = run(&["history", evil_id, "--json"]);
    assert!(ok && history.contains("DROP TABLE"), "{history}{err}");
    let rows = |args: &[&str]| {
        let (ok, out, err) = run(args);
        assert!(ok, "{args:?}: {err}");
        serde_json::from_str::<serde_json::Value>(&out)
            .expect("json")
            .as_array()
            .expect("list")
            .len()
    };
    assert_eq!(rows(&["log", "--json"]), 2, "both records, the table still there");
    assert_eq!(rows(&["log", "--json", "--provider", "PRV-Q"]), 2, "the control");
    for args in [
        &["log", "--json", "--provider", "PRV-Q' OR '1'='1"][..],
        &["log", "--json", "--patient", "x' OR 1=1 --"],
        &["log", "--json", "--provider", "%"],
    ] {
        assert_eq!(rows(args), 0, "{args:?}");
    }
    let (ok, _, err) = run(&["history", "PRV-Q-rec-00001' OR '1'='1"]);
    assert!(!ok, "an unknown id, not every row: {err}");
}

/// Runs `izrelay --config DIR/config.toml --data-dir DIR/data ARGS`.
fn run_in(dir: &Path, args: &[&str]) -> Output {
    izrelay()
        .arg("--config")
        .arg(dir.join("config.toml"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(args)
        .env_remove("IZRELAY_KEY")
        .output()
        .expect("izrelay runs")
}

/// An IIS that answers with a redirect is not followed (the password would go to the
/// redirect's target): nothing reaches the target, the message is not accepted.
#[test]
fn an_iis_redirect_is_never_followed() {
    let target = LoopbackIis::start(Reply::Ack(0));
    let iis = LoopbackIis::start(Reply::Redirect(target.url.clone()));
    let dir = tempfile::tempdir().expect("tmp");
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("config.toml"), "[forward]\nrequest_timeout_secs = 5\n").expect("config");
    write_settings(&path("Settings.xml"), &iis.url, &[("PRV-R", "user-r", PW_001)]);
    write_records(&path("records.ndjson"), "PRV-R", 1);
    let xml = path("Settings.xml");
    let out = run_in(
        dir.path(),
        &["credentials", "import", "--allow-http", "PRV-R", xml.to_str().expect("p")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let records = path("records.ndjson");
    assert!(run_in(dir.path(), &["import", records.to_str().expect("p")]).status.success());
    let out = run_in(dir.path(), &["forward", "--once"]);
    let log = text(&run_in(dir.path(), &["log", "--json"]).stdout);
    assert!(iis.connections() >= 1, "the IIS was called");
    assert_eq!(target.connections(), 0, "the redirect was followed: {}", text(&out.stdout));
    assert!(!log.contains("\"accepted\""), "{log}");
    assert!(text(&out.stdout).contains("PAUSED"), "a 3xx pauses the IIS: {}", text(&out.stdout));
}

/// `/healthz` and `/metrics` only on loopback: another address fails `check-config`.
#[test]
fn metrics_listen_off_loopback_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    for (addr, ok) in [("0.0.0.0:9464", false), ("192.0.2.7:9464", false), ("127.0.0.1:9464", true)]
    {
        let config = format!("[daemon]\nmetrics_listen = \"{addr}\"\n");
        std::fs::write(dir.path().join("config.toml"), config).expect("config");
        let out = run_in(dir.path(), &["check-config"]);
        assert_eq!(out.status.success(), ok, "{addr}: {}", text(&out.stderr));
        if !ok {
            let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
            assert!(all.contains("not a loopback address"), "{all}");
        }
    }
}
