//! `izrelay credentials` through the real binary: import, list, remove, rotate-key, the key
//! file and `IZRELAY_KEY`, and that no password ever reaches an output or the database in
//! clear.

use std::path::{Path, PathBuf};
use std::process::Output;

use izrelay::config::vault::Key;
use izrelay::store::Store;

use crate::util::{izrelay, root};

/// Every password in the fixtures (the clear text, as sealed).
const PASSWORDS: [&str; 4] =
    ["Fixture-Pw-7c1e&x", "Fixture-Pw-9a3b<y>", "Fixture-Pw-5d5d", "Fixture-Pw-typo"];
/// A part of each that must never show either (e.g. if an escape were printed raw).
const PASSWORD_STEM: &str = "Fixture-Pw";

const KEY_A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const KEY_B: &str = "f0e0d0c0b0a090807060504030201000f1e1d1c1b1a191817161514131211101";

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/settings").join(name)
}

/// Runs `izrelay --data-dir DATA ARGS` with only the given key variables set, and checks that
/// no password is in its output and that it did not panic.
fn run(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = izrelay();
    cmd.arg("--data-dir").arg(data).args(args);
    cmd.env_remove("IZRELAY_KEY").env_remove("IZRELAY_NEW_KEY").env_remove("IZRELAY_DATA_DIR");
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("izrelay runs");
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!text.contains(PASSWORD_STEM), "a password in the output of {args:?}:\n{text}");
    assert!(!text.contains("panicked"), "{args:?}:\n{text}");
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("file exists").permissions().mode() & 0o777
}

/// No file in `dir` (database, WAL, key) holds a password in clear.
fn assert_no_clear_password(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("data dir") {
        let p = entry.expect("entry").path();
        let bytes = std::fs::read(&p).expect("readable");
        for pw in PASSWORDS {
            assert!(!bytes.windows(pw.len()).any(|w| w == pw.as_bytes()), "{pw} in {p:?}");
        }
    }
}

/// The passwords as the forwarder will see them, through the library.
fn stored_passwords(data: &Path, key: &Key) -> Vec<(String, String)> {
    let store = Store::open(&data.join("izrelay.db")).expect("open");
    let all = store.endpoints(key).expect("endpoints open with the key");
    all.into_iter().map(|e| (e.provider_id, e.password.expose().to_owned())).collect()
}

#[test]
fn import_list_rotate_and_remove_with_a_key_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let config = dir.path().join("config.toml");
    let o = run(&data, &["--config", path(&config), "init"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let key_path = data.join("izrelay.key");
    let key_before = std::fs::read(&key_path).expect("init wrote the key");

    let o = run(&data, &["credentials", "import", path(&fixture("good.xml"))], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("imported 2 credential(s)"), "{}", stdout(&o));
    assert!(stdout(&o).contains("PRV-001, PRV-002"), "{}", stdout(&o));

    let o = run(&data, &["credentials", "list"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = stdout(&o);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("PROVIDER"), "{table}");
    assert!(lines[1].starts_with("PRV-001") && lines[1].contains("clinic17"), "{table}");
    assert!(lines[1].contains("https://iis.example.gov/HL7/CDCWS") && lines[1].contains("FAC-17"));
    assert!(lines[2].contains("http://127.0.0.1:18443/iis (plain http)"), "{table}");

    let o = run(&data, &["credentials", "list", "--json"], &[]);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(json[0]["provider_id"], "PRV-001");
    assert_eq!(json[0]["user_name"], "clinic17");
    assert_eq!(json[1]["allow_insecure"], true);
    assert_eq!(json[1]["paused"], false);
    assert!(json[0].get("password").is_none());

    #[cfg(unix)]
    {
        assert_eq!(mode(&key_path), 0o600);
        assert_eq!(mode(&data.join("izrelay.db")), 0o600);
    }
    let key = Key::load(&data).expect("key");
    let want = vec![
        ("PRV-001".to_owned(), PASSWORDS[0].to_owned()),
        ("PRV-002".to_owned(), PASSWORDS[1].to_owned()),
    ];
    assert_eq!(stored_passwords(&data, &key), want);

    let o = run(&data, &["credentials", "rotate-key"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("re-sealed 2 credential(s)"), "{}", stdout(&o));
    let key_after = std::fs::read(&key_path).expect("key");
    assert_eq!(key_after.len(), 32);
    assert_ne!(key_before, key_after, "a new key");
    assert!(!data.join("izrelay.key.new").exists());
    #[cfg(unix)]
    assert_eq!(mode(&key_path), 0o600);
    let new_key = Key::load(&data).expect("new key");
    assert_eq!(stored_passwords(&data, &new_key), want);
    let store = Store::open(&data.join("izrelay.db")).expect("open");
    assert!(store.endpoints(&key).is_err(), "the old key no longer opens them");
    drop(store);

    let o = run(&data, &["credentials", "list"], &[]);
    assert!(o.status.success() && stdout(&o).contains("PRV-002"), "{}", stderr(&o));
    // A second rotation proves the first left every row sealed with the key on disk.
    let o = run(&data, &["credentials", "rotate-key"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));

    let o = run(&data, &["credentials", "remove", "PRV-002"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&data, &["credentials", "remove", "PRV-002"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no credentials for provider PRV-002"), "{}", stderr(&o));
    let o = run(&data, &["credentials", "list", "--json"], &[]);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(json.as_array().map(Vec::len), Some(1));

    // The audit trail names the actions, never a secret.
    let o = run(&data, &["log"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let db = rusqlite::Connection::open(data.join("izrelay.db")).expect("db");
    let actions: Vec<String> = db
        .prepare("SELECT action FROM audit_event ORDER BY id")
        .expect("sql")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<rusqlite::Result<_>>()
        .expect("rows");
    assert_eq!(
        actions,
        [
            "init",
            "credentials-import",
            "credentials-rotate-key",
            "credentials-rotate-key",
            "credentials-remove"
        ]
    );
    drop(db);
    assert_no_clear_password(&data);
}

#[test]
fn a_bad_settings_file_exits_2_naming_line_and_provider_and_imports_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let o = run(&data, &["credentials", "import", path(&fixture("bad.xml"))], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    let err = stderr(&o);
    for want in [
        "bad.xml: 5 problem(s), nothing imported",
        "line 9: providerId PRV-002: value password is missing",
        "line 13: providerId PRV-001: value password is missing",
        "line 13: providerId PRV-001: iisEndpoint must be an https URL, not ftp:",
        "line 13: providerId PRV-001: providerId given again (first at line 4)",
        "line 15: providerId PRV-001: unknown value name \"pasword\"",
    ] {
        assert!(err.contains(want), "{want:?} missing from:\n{err}");
    }
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("  - line ")).collect();
    assert_eq!(lines.len(), 5, "{err}");
    assert!(lines[0].contains("line 9") && lines[4].contains("line 15"), "in file order: {err}");
    let o = run(&data, &["credentials", "list", "--json"], &[]);
    assert_eq!(stdout(&o).trim(), "[]", "the good setting was not imported either");

    let o = run(&data, &["credentials", "import", path(&fixture("malformed.xml"))], &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("line 6: providerId PRV-001: malformed XML"), "{err}");
    let o = run(&data, &["credentials", "list"], &[]);
    assert!(stdout(&o).contains("no credentials"), "{}", stdout(&o));

    let o = run(&data, &["credentials", "import", "/nonexistent/Settings.xml"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read /nonexistent/Settings.xml"), "{}", stderr(&o));

    let latin1 = dir.path().join("latin1.xml");
    std::fs::write(&latin1, b"<Settings><setting providerId=\"A\">\xe9</setting></Settings>")
        .expect("write");
    let o = run(&data, &["credentials", "import", path(&latin1)], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is not UTF-8 text"), "{}", stderr(&o));
}

#[test]
fn plain_http_needs_loopback_or_an_explicit_opt_in() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let file = fixture("plain-http.xml");
    let o = run(&data, &["credentials", "import", path(&file)], &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("line 2: providerId PRV-003: iisEndpoint uses plain http"), "{err}");
    assert!(err.contains("--allow-http PRV-003"), "{err}");
    let o = run(&data, &["credentials", "import", path(&file), "--allow-http", "PRV-9"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--allow-http PRV-9: no setting has this providerId"));
    let o = run(&data, &["credentials", "import", path(&file), "--allow-http", "PRV-003"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&data, &["credentials", "list"], &[]);
    assert!(stdout(&o).contains("http://iis-test.example.org/iis (plain http)"), "{}", stdout(&o));
}

#[test]
fn izrelay_key_from_the_environment_wrong_bad_and_rotated() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let good = fixture("good.xml");
    let import = ["credentials", "import", path(&good)];
    let o = run(&data, &import, &[("IZRELAY_KEY", KEY_A)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!data.join("izrelay.key").exists(), "no key file when IZRELAY_KEY is set");

    let o = run(&data, &import, &[("IZRELAY_KEY", KEY_B)]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("does not open with this key"), "{err}");
    assert!(err.contains("IZRELAY_KEY"), "{err}");
    assert!(!err.contains(KEY_A) && !err.contains(KEY_B), "{err}");

    let o = run(&data, &import, &[("IZRELAY_KEY", "not-a-key-0123")]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("IZRELAY_KEY must be 64 hex digits"), "{err}");
    assert!(!err.contains("not-a-key-0123"), "{err}");

    // Without IZRELAY_KEY (and no key file) a new key is not made up beside stored credentials.
    let o = run(&data, &import, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no credential key"), "{}", stderr(&o));
    assert!(stderr(&o).contains("izrelay init"), "{}", stderr(&o));
    assert!(!data.join("izrelay.key").exists());

    let o = run(&data, &["credentials", "rotate-key"], &[("IZRELAY_KEY", KEY_A)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("set IZRELAY_NEW_KEY"), "{}", stderr(&o));

    let o = run(
        &data,
        &["credentials", "rotate-key"],
        &[("IZRELAY_KEY", KEY_B), ("IZRELAY_NEW_KEY", KEY_A)],
    );
    assert_eq!(o.status.code(), Some(2), "a wrong old key rotates nothing");
    let o = run(
        &data,
        &["credentials", "rotate-key"],
        &[("IZRELAY_KEY", KEY_A), ("IZRELAY_NEW_KEY", KEY_B)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("set IZRELAY_KEY"), "{}", stdout(&o));
    let o = run(&data, &import, &[("IZRELAY_KEY", KEY_A)]);
    assert_eq!(o.status.code(), Some(2), "the old key is refused after rotation");
    let o = run(&data, &import, &[("IZRELAY_KEY", KEY_B)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_no_clear_password(&data);
}

#[cfg(unix)]
#[test]
fn a_key_file_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let o = run(&data, &["credentials", "import", path(&fixture("good.xml"))], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("created"), "import creates the key when none exists");
    let key_path = data.join("izrelay.key");
    assert_eq!(mode(&key_path), 0o600);
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let o = run(&data, &["credentials", "rotate-key"], &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("readable by group or others (mode 640)"), "{err}");
    assert!(err.contains("chmod 600"), "{err}");
}
