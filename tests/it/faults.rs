//! The fault matrix (issue 7): the real binary against the simulators, with the failure
//! injected from outside the process: a damaged database file, a database locked by another
//! process, a full disk, a Dataverse token endpoint that is down, a clock that went back, an
//! expired IIS certificate. Each case checks what the user sees (a clear error, an exit code)
//! and that nothing stored is lost, doubled or overwritten.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::forward::{text, write_records};
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
        let site = Site { dir, data };
        let config = format!(
            "[forward]\nrequest_timeout_secs = 2\nconnect_timeout_secs = 2\n\
             retry_base_ms = 5\nretry_max_ms = 40\ncircuit_probe_ms = 50\n{extra}"
        );
        std::fs::write(site.path("config.toml"), config).expect("config");
        site
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

    /// `izrelay run` with its stderr in `name`; the caller stops it.
    fn spawn_daemon(&self, name: &str) -> std::process::Child {
        let log = std::fs::File::create(self.path(name)).expect("log");
        self.cmd().arg("run").stdout(Stdio::null()).stderr(log).spawn().expect("run starts")
    }
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
    let exit = wait_exit(&mut daemon, "izrelay run on a damaged database");
    assert!(!exit.success(), "run refuses to start");
    named("run", &std::fs::read_to_string(site.path("run.log")).expect("log"));
}
