//! IIS endpoints and their sealed credentials (`iis_endpoint`), by provider id.
//!
//! Role in the data flow: `izrelay credentials import` writes rows here from a `Settings.xml`;
//! the forwarder reads them ([`Store::endpoints`]) and decrypts the password in memory only;
//! a `SecurityFault` pauses an endpoint ([`Store::pause_endpoint`]) until its credentials are
//! imported again.
//!
//! Invariants:
//! - `password_sealed` is always AES-256-GCM (`config::vault`), sealed with the provider id as
//!   associated data; no password is ever stored, logged or audited in clear.
//! - Every row is sealed with the same key: an import refuses a key that opens none of the
//!   existing rows, and [`Store::rotate_key`] re-seals every row in one transaction (any row
//!   that does not open with the old key aborts it, changing nothing).
//! - An import is all or nothing: every setting is checked before the first write.
//! - `allow_insecure` is set when the endpoint is plain http (admitted because its host is
//!   loopback or the operator opted in with `--allow-http`): the forwarder may use http only
//!   for such a row.
//! - Each change writes an `audit_event` in the same transaction (provider ids and counts,
//!   never a secret).

use std::path::Path;

use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};
use serde::Serialize;

use super::{Result, Store, now_ms};
use crate::config::vault::{self, Key, Secret, Setting};

/// An IIS endpoint with its password decrypted, for the forwarder.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The IIS account number.
    pub provider_id: String,
    /// The SOAP endpoint URL.
    pub url: String,
    /// The facility id, when the IIS wants one.
    pub facility_id: Option<String>,
    /// The user name.
    pub user_name: String,
    /// The password (redacted in `Debug`).
    pub password: Secret,
    /// Plain http was admitted for this endpoint (loopback host or `--allow-http`).
    pub allow_insecure: bool,
    /// Sending is paused (e.g. after a `SecurityFault`) until the credentials are imported again.
    pub paused: bool,
    /// Why it is paused.
    pub paused_reason: Option<String>,
}

/// The vault name of the Dataverse client secret.
pub const DATAVERSE_SECRET: &str = "dataverse";

/// An IIS endpoint as `credentials list` shows it: everything but the password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointInfo {
    /// The IIS account number.
    pub provider_id: String,
    /// The SOAP endpoint URL.
    pub url: String,
    /// The facility id.
    pub facility_id: Option<String>,
    /// The user name.
    pub user_name: String,
    /// Plain http was admitted for this endpoint.
    pub allow_insecure: bool,
    /// Sending is paused.
    pub paused: bool,
    /// Why it is paused.
    pub paused_reason: Option<String>,
    /// Last change of the row (ms).
    pub updated_at: i64,
}

impl Store {
    /// Imports `settings` in one transaction: checks every setting first (required values,
    /// no duplicate, https unless the host is loopback — 127.0.0.0/8, ::1, localhost — or the
    /// provider is in `allow_http`), checks that `key` opens the credentials already stored,
    /// then upserts every row (re-importing a provider clears its pause) and writes an audit
    /// event. Returns how many settings were imported.
    ///
    /// # Errors
    /// [`vault::Error::Settings`] listing every problem, [`vault::Error::WrongKey`] when `key`
    /// opens none of the stored credentials, SQLite errors. Nothing is written on any error.
    pub fn import_credentials(
        &mut self,
        settings: &[Setting],
        key: &Key,
        allow_http: &[String],
    ) -> Result<usize> {
        vault::check_settings(settings, allow_http)?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        check_key(&tx, key)?;
        let now = now_ms();
        {
            let mut upsert = tx.prepare(
                "INSERT INTO iis_endpoint (provider_id, endpoint, facility_id, user_name, \
                 password_sealed, allow_insecure, paused, paused_reason, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, NULL, ?7) \
                 ON CONFLICT (provider_id) DO UPDATE SET endpoint = excluded.endpoint, \
                 facility_id = excluded.facility_id, user_name = excluded.user_name, \
                 password_sealed = excluded.password_sealed, \
                 allow_insecure = excluded.allow_insecure, paused = 0, paused_reason = NULL, \
                 updated_at = excluded.updated_at",
            )?;
            for s in settings {
                let sealed = key.seal(&s.provider_id, s.password.expose())?;
                upsert.execute(params![
                    s.provider_id,
                    s.endpoint,
                    s.facility_id,
                    s.user_name,
                    sealed,
                    vault::is_plain_http(&s.endpoint),
                    now
                ])?;
            }
        }
        let ids: Vec<&str> = settings.iter().map(|s| s.provider_id.as_str()).collect();
        let insecure: Vec<&str> = settings
            .iter()
            .filter(|s| vault::is_plain_http(&s.endpoint))
            .map(|s| s.provider_id.as_str())
            .collect();
        let detail = serde_json::json!({ "imported": settings.len(), "plain_http": insecure });
        audit(&tx, "credentials-import", Some(&ids.join(",")), Some(&detail.to_string()))?;
        tx.commit()?;
        tracing::info!(count = settings.len(), "credentials imported");
        Ok(settings.len())
    }

    /// Every endpoint without its password, by provider id.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn list_endpoints(&self) -> Result<Vec<EndpointInfo>> {
        let mut stmt = self.conn.prepare(
            "SELECT provider_id, endpoint, facility_id, user_name, allow_insecure, paused, \
             paused_reason, updated_at FROM iis_endpoint ORDER BY provider_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(EndpointInfo {
                provider_id: r.get(0)?,
                url: r.get(1)?,
                facility_id: r.get(2)?,
                user_name: r.get(3)?,
                allow_insecure: r.get(4)?,
                paused: r.get(5)?,
                paused_reason: r.get(6)?,
                updated_at: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Every endpoint with its password opened, by provider id.
    ///
    /// # Errors
    /// [`vault::Error::WrongKey`] naming the first row that does not open; SQLite errors.
    pub fn endpoints(&self, key: &Key) -> Result<Vec<Endpoint>> {
        let mut stmt = self.conn.prepare(&format!("{ENDPOINT_SQL} ORDER BY provider_id"))?;
        let rows = stmt.query_map([], read_sealed)?.collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter().map(|row| row.open(key)).collect()
    }

    /// One endpoint with its password opened, or `None` when the provider has none.
    ///
    /// # Errors
    /// [`vault::Error::WrongKey`]; SQLite errors.
    pub fn endpoint(&self, provider_id: &str, key: &Key) -> Result<Option<Endpoint>> {
        let row = self
            .conn
            .query_row(
                &format!("{ENDPOINT_SQL} WHERE provider_id = ?1"),
                [provider_id],
                read_sealed,
            )
            .optional()?;
        row.map(|r| r.open(key)).transpose()
    }

    /// Removes a provider's endpoint and credentials; `false` when there was none.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn remove_endpoint(&mut self, provider_id: &str) -> Result<bool> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let removed =
            tx.execute("DELETE FROM iis_endpoint WHERE provider_id = ?1", [provider_id])?;
        if removed == 0 {
            return Ok(false);
        }
        audit(&tx, "credentials-remove", Some(provider_id), None)?;
        tx.commit()?;
        Ok(true)
    }

    /// Pauses sending to a provider's IIS until its credentials are imported again. `reason`
    /// is shown to staff and audited: it must not contain a secret.
    ///
    /// # Errors
    /// [`super::Error::NotFound`] when the provider has no endpoint; SQLite errors.
    pub fn pause_endpoint(&mut self, provider_id: &str, reason: &str) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = tx.execute(
            "UPDATE iis_endpoint SET paused = 1, paused_reason = ?2, updated_at = ?3 \
             WHERE provider_id = ?1",
            params![provider_id, reason, now_ms()],
        )?;
        if changed == 0 {
            return Err(super::Error::NotFound(format!("IIS endpoint for provider {provider_id}")));
        }
        audit(&tx, "credentials-pause", Some(provider_id), Some(reason))?;
        tx.commit()?;
        Ok(())
    }

    /// Re-seals every stored password from `old` to `new` in one transaction; returns how many.
    ///
    /// # Errors
    /// [`vault::Error::WrongKey`] when any row does not open with `old` (nothing changes);
    /// SQLite errors.
    pub fn rotate_key(&mut self, old: &Key, new: &Key) -> Result<usize> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = reseal(&tx, old, new)?;
        tx.commit()?;
        tracing::info!(count = n, "credentials re-sealed with a new key");
        Ok(n)
    }

    /// `credentials rotate-key` with a key file beside this database: under the database write
    /// lock (so two rotations cannot interleave), loads the current key, writes a new random
    /// one to `izrelay.key.new` (0600, fsync), re-seals every row, commits, then renames the new
    /// key over `izrelay.key` (fsync of the directory). A crash between the commit and the
    /// rename is finished by the next [`Key::load`]. Returns how many passwords were re-sealed.
    ///
    /// # Errors
    /// [`vault::Error::KeyInEnvironment`] when `IZRELAY_KEY` is set (use [`Store::rotate_key`]
    /// with the new key), key file errors, [`vault::Error::WrongKey`] when a row does not open
    /// with the current key (nothing changes), SQLite errors.
    pub fn rotate_key_file(&mut self) -> Result<usize> {
        if Key::from_env(vault::KEY_ENV)?.is_some() {
            return Err(vault::Error::KeyInEnvironment.into());
        }
        let data_dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .ok_or_else(|| super::Error::NotFound("the data directory of this database".into()))?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let old = Key::load(&data_dir)?;
        let new = Key::generate()?;
        vault::stage_new_key(&data_dir, &new)?;
        let n = match reseal(&tx, &old, &new) {
            Ok(n) => n,
            Err(e) => {
                // Nothing was committed: the staged key would open nothing.
                drop(tx);
                vault::discard_new_key(&data_dir);
                return Err(e);
            }
        };
        // Should the commit fail, the staged key stays: `Key::load` picks whichever opens.
        tx.commit()?;
        vault::promote_new_key(&data_dir, &new)?;
        tracing::info!(count = n, "credentials re-sealed with a new key file");
        Ok(n)
    }
}

/// Re-seals every row from `old` to `new` and audits it, inside `tx`.
fn reseal(tx: &Transaction<'_>, old: &Key, new: &Key) -> Result<usize> {
    let rows: Vec<(String, Vec<u8>)> = {
        let mut stmt = tx.prepare("SELECT provider_id, password_sealed FROM iis_endpoint")?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?
    };
    let mut update =
        tx.prepare("UPDATE iis_endpoint SET password_sealed = ?2 WHERE provider_id = ?1")?;
    for (provider_id, sealed) in &rows {
        let password = old.open(provider_id, sealed)?;
        update.execute(params![provider_id, new.seal(provider_id, password.expose())?])?;
    }
    let secrets: Vec<(String, Vec<u8>)> = {
        let mut stmt = tx.prepare("SELECT name, sealed FROM secret")?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?
    };
    let mut update_secret = tx.prepare("UPDATE secret SET sealed = ?2 WHERE name = ?1")?;
    for (name, sealed) in &secrets {
        let aad = secret_aad(name);
        let value = old.open(&aad, sealed)?;
        update_secret.execute(params![name, new.seal(&aad, value.expose())?])?;
    }
    let detail = serde_json::json!({ "resealed": rows.len() + secrets.len() });
    audit(tx, "credentials-rotate-key", None, Some(&detail.to_string()))?;
    Ok(rows.len() + secrets.len())
}

/// The associated data of a named secret: never equal to a provider id's.
fn secret_aad(name: &str) -> String {
    format!("secret:{name}")
}

impl Store {
    /// Seals and stores a named secret (e.g. `dataverse`: the Dataverse client secret),
    /// replacing an older value; writes an audit event (without the value).
    ///
    /// # Errors
    /// Sealing and SQLite errors.
    pub fn set_secret(&mut self, name: &str, value: &Secret, key: &Key) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let sealed = key.seal(&secret_aad(name), value.expose())?;
        tx.execute(
            "INSERT INTO secret (name, sealed, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
            params![name, sealed, super::now_ms()],
        )?;
        audit(&tx, "secret-set", Some(name), None)?;
        tx.commit()?;
        Ok(())
    }

    /// Opens a named secret, if stored.
    ///
    /// # Errors
    /// [`vault::Error::WrongKey`] when `key` is not the one it was sealed with; SQLite errors.
    pub fn secret(&self, name: &str, key: &Key) -> Result<Option<Secret>> {
        let sealed: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT sealed FROM secret WHERE name = ?1", params![name], |r| r.get(0))
            .optional()?;
        match sealed {
            Some(s) => Ok(Some(key.open(&secret_aad(name), &s)?)),
            None => Ok(None),
        }
    }
}

const ENDPOINT_SQL: &str = "SELECT provider_id, endpoint, facility_id, user_name, \
    password_sealed, allow_insecure, paused, paused_reason FROM iis_endpoint";

/// A row of [`ENDPOINT_SQL`] before its password is opened.
struct SealedRow {
    provider_id: String,
    url: String,
    facility_id: Option<String>,
    user_name: String,
    sealed: Vec<u8>,
    allow_insecure: bool,
    paused: bool,
    paused_reason: Option<String>,
}

impl SealedRow {
    fn open(self, key: &Key) -> Result<Endpoint> {
        let password = key.open(&self.provider_id, &self.sealed)?;
        Ok(Endpoint {
            provider_id: self.provider_id,
            url: self.url,
            facility_id: self.facility_id,
            user_name: self.user_name,
            password,
            allow_insecure: self.allow_insecure,
            paused: self.paused,
            paused_reason: self.paused_reason,
        })
    }
}

fn read_sealed(r: &rusqlite::Row<'_>) -> rusqlite::Result<SealedRow> {
    Ok(SealedRow {
        provider_id: r.get(0)?,
        url: r.get(1)?,
        facility_id: r.get(2)?,
        user_name: r.get(3)?,
        sealed: r.get(4)?,
        allow_insecure: r.get(5)?,
        paused: r.get(6)?,
        paused_reason: r.get(7)?,
    })
}

/// Refuses `key` when rows exist and it opens none of them: mixing two keys in one table
/// would leave some credentials unreadable with either. One row that opens is proof enough,
/// so a single damaged row can still be replaced by re-importing it.
fn check_key(tx: &Transaction<'_>, key: &Key) -> Result<()> {
    let mut stmt = tx.prepare("SELECT provider_id, password_sealed FROM iis_endpoint")?;
    let mut rows = stmt.query([])?;
    let mut first = None;
    while let Some(row) = rows.next()? {
        let provider_id: String = row.get(0)?;
        let sealed: Vec<u8> = row.get(1)?;
        match key.open(&provider_id, &sealed) {
            Ok(_) => return Ok(()),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    match first {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// [`Store::audit_event`] inside a transaction.
fn audit(
    tx: &Transaction<'_>,
    action: &str,
    subject: Option<&str>,
    detail: Option<&str>,
) -> Result<()> {
    tx.execute(
        "INSERT INTO audit_event (at, action, subject, detail) VALUES (?1, ?2, ?3, ?4)",
        params![now_ms(), action, subject, detail],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::vault::read_settings;
    use crate::store::Error;

    const PASSWORD: &str = "Pw-4f9d2c-very-secret";

    fn settings(password: &str, endpoint: &str) -> Vec<Setting> {
        read_settings(&format!(
            r#"<Settings>
  <setting providerId="PRV-001">
    <value name="userName">clinic17</value>
    <value name="password">{password}</value>
    <value name="iisEndpoint">https://iis.example.gov/HL7/CDCWS</value>
    <value name="facilityId">FAC-17</value>
  </setting>
  <setting providerId="PRV-002">
    <value name="userName">clinic18</value>
    <value name="password">{password}-2</value>
    <value name="iisEndpoint">{endpoint}</value>
  </setting>
</Settings>"#
        ))
        .map_err(|e| e.to_string())
        .expect("test settings are valid")
    }

    fn temp_store() -> Result<(tempfile::TempDir, Store)> {
        let dir =
            tempfile::tempdir().map_err(|e| Error::Create { path: "tmp".into(), source: e })?;
        let store = Store::open(&dir.path().join("izrelay.db"))?;
        Ok((dir, store))
    }

    fn audit_rows(store: &Store) -> Result<Vec<String>> {
        let mut stmt = store
            .conn
            .prepare("SELECT action || ' ' || ifnull(subject,'') || ' ' || ifnull(detail,'') FROM audit_event ORDER BY id")?;
        Ok(stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?)
    }

    #[test]
    fn import_then_endpoints_decrypts_and_nothing_is_in_clear() -> Result<()> {
        let (dir, mut store) = temp_store()?;
        let key = Key::generate()?;
        let n =
            store.import_credentials(&settings(PASSWORD, "http://127.0.0.1:9/iis"), &key, &[])?;
        assert_eq!(n, 2);
        let all = store.endpoints(&key)?;
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].provider_id, "PRV-001");
        assert_eq!(all[0].password.expose(), PASSWORD);
        assert_eq!(all[0].url, "https://iis.example.gov/HL7/CDCWS");
        assert_eq!(all[0].facility_id.as_deref(), Some("FAC-17"));
        assert!(!all[0].allow_insecure);
        assert!(all[1].allow_insecure, "loopback http is admitted and marked");
        assert_eq!(all[1].password.expose(), format!("{PASSWORD}-2"));
        let one = store.endpoint("PRV-002", &key)?.map(|e| e.user_name);
        assert_eq!(one.as_deref(), Some("clinic18"));
        assert!(store.endpoint("PRV-404", &key)?.is_none());
        let listed = store.list_endpoints()?;
        assert_eq!(listed.len(), 2);
        let json = serde_json::to_string(&listed).map_err(|e| Error::Corrupt(e.to_string()))?;
        assert!(!json.contains(PASSWORD), "{json}");
        assert!(!format!("{all:?}").contains(PASSWORD));
        let audit = audit_rows(&store)?.join("\n");
        assert!(audit.contains("credentials-import PRV-001,PRV-002"), "{audit}");
        assert!(!audit.contains(PASSWORD), "{audit}");
        drop(store);
        // Neither the database nor its WAL holds the password.
        for entry in std::fs::read_dir(dir.path()).map_err(|e| Error::Corrupt(e.to_string()))? {
            let path = entry.map_err(|e| Error::Corrupt(e.to_string()))?.path();
            let bytes = std::fs::read(&path).map_err(|e| Error::Corrupt(e.to_string()))?;
            assert!(!bytes.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()), "{path:?}");
        }
        Ok(())
    }

    #[test]
    fn reimport_clears_a_pause_and_replaces_the_password() -> Result<()> {
        let (_dir, mut store) = temp_store()?;
        let key = Key::generate()?;
        store.import_credentials(&settings(PASSWORD, "https://b.example/"), &key, &[])?;
        store.pause_endpoint("PRV-001", "SecurityFault: bad password")?;
        let e = store.endpoint("PRV-001", &key)?.expect("stored");
        assert!(e.paused);
        assert_eq!(e.paused_reason.as_deref(), Some("SecurityFault: bad password"));
        assert!(matches!(store.pause_endpoint("PRV-404", "x"), Err(Error::NotFound(_))));
        store.import_credentials(&settings("new-pw", "https://b.example/"), &key, &[])?;
        let e = store.endpoint("PRV-001", &key)?.expect("stored");
        assert!(!e.paused && e.paused_reason.is_none());
        assert_eq!(e.password.expose(), "new-pw");
        Ok(())
    }

    #[test]
    fn one_bad_setting_writes_nothing() -> Result<()> {
        let (_dir, mut store) = temp_store()?;
        let key = Key::generate()?;
        let bad = settings(PASSWORD, "http://iis.example.org/iis");
        let err = store.import_credentials(&bad, &key, &[]).err().map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(err.contains("line 8: providerId PRV-002: iisEndpoint uses plain http"), "{err}");
        assert!(!err.contains(PASSWORD));
        assert!(store.list_endpoints()?.is_empty());
        assert!(audit_rows(&store)?.is_empty());
        // The explicit opt-in admits it, and marks it.
        store.import_credentials(&bad, &key, &["PRV-002".to_owned()])?;
        let listed = store.list_endpoints()?;
        assert_eq!(listed.iter().map(|e| e.allow_insecure).collect::<Vec<_>>(), [false, true]);
        // Hand-made settings are checked too.
        let mut dup = settings(PASSWORD, "https://b.example/");
        dup[1].provider_id = "PRV-001".into();
        dup[1].password = Secret::new("changed");
        let err = store.import_credentials(&dup, &key, &[]).err().map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("given again (first at line 2)"));
        assert_eq!(
            store.endpoint("PRV-001", &key)?.map(|e| e.password),
            Some(Secret::new(PASSWORD))
        );
        Ok(())
    }

    #[test]
    fn a_wrong_key_is_refused_on_import_and_open() -> Result<()> {
        let (_dir, mut store) = temp_store()?;
        let key = Key::generate()?;
        store.import_credentials(&settings(PASSWORD, "https://b.example/"), &key, &[])?;
        let wrong = Key::generate()?;
        let err = store.import_credentials(&settings("x", "https://b.example/"), &wrong, &[]);
        assert!(matches!(err, Err(Error::Vault(vault::Error::WrongKey { .. }))), "{err:?}");
        assert_eq!(
            store.endpoint("PRV-001", &key)?.map(|e| e.password),
            Some(Secret::new(PASSWORD))
        );
        assert!(matches!(
            store.endpoints(&wrong),
            Err(Error::Vault(vault::Error::WrongKey { .. }))
        ));
        assert!(matches!(
            store.endpoint("PRV-002", &wrong),
            Err(Error::Vault(vault::Error::WrongKey { provider_id })) if provider_id == "PRV-002"
        ));
        Ok(())
    }

    #[test]
    fn rotate_key_reseals_everything_or_nothing() -> Result<()> {
        let (_dir, mut store) = temp_store()?;
        let old = Key::generate()?;
        store.import_credentials(&settings(PASSWORD, "https://b.example/"), &old, &[])?;
        let new = Key::generate()?;
        // A wrong "old" key changes nothing.
        let stranger = Key::generate()?;
        assert!(store.rotate_key(&stranger, &new).is_err());
        assert_eq!(store.endpoints(&old)?.len(), 2);
        assert_eq!(store.rotate_key(&old, &new)?, 2);
        assert!(matches!(store.endpoints(&old), Err(Error::Vault(vault::Error::WrongKey { .. }))));
        let all = store.endpoints(&new)?;
        assert_eq!(all[0].password.expose(), PASSWORD);
        assert_eq!(all[1].password.expose(), format!("{PASSWORD}-2"));
        // A row that does not open aborts the whole rotation.
        store.conn.execute(
            "UPDATE iis_endpoint SET password_sealed = x'00' WHERE provider_id = 'PRV-002'",
            [],
        )?;
        let before: Vec<u8> = store.conn.query_row(
            "SELECT password_sealed FROM iis_endpoint WHERE provider_id = 'PRV-001'",
            [],
            |r| r.get(0),
        )?;
        assert!(store.rotate_key(&new, &Key::generate()?).is_err());
        let after: Vec<u8> = store.conn.query_row(
            "SELECT password_sealed FROM iis_endpoint WHERE provider_id = 'PRV-001'",
            [],
            |r| r.get(0),
        )?;
        assert_eq!(before, after);
        assert!(audit_rows(&store)?.iter().any(|a| a.starts_with("credentials-rotate-key")));
        Ok(())
    }

    #[test]
    fn remove_deletes_one_provider() -> Result<()> {
        let (_dir, mut store) = temp_store()?;
        let key = Key::generate()?;
        store.import_credentials(&settings(PASSWORD, "https://b.example/"), &key, &[])?;
        assert!(store.remove_endpoint("PRV-001")?);
        assert!(!store.remove_endpoint("PRV-001")?);
        let left: Vec<String> =
            store.list_endpoints()?.into_iter().map(|e| e.provider_id).collect();
        assert_eq!(left, ["PRV-002"]);
        assert!(audit_rows(&store)?.iter().any(|a| a.starts_with("credentials-remove PRV-001")));
        Ok(())
    }

    #[test]
    fn rotate_key_file_replaces_the_key_file_or_changes_nothing() -> Result<()> {
        let (dir, mut store) = temp_store()?;
        let old = Key::load_or_create(dir.path())?;
        store.import_credentials(&settings(PASSWORD, "https://b.example/"), &old, &[])?;
        let key_path = dir.path().join(vault::KEY_FILE);
        let read =
            |p: &std::path::Path| std::fs::read(p).map_err(|e| Error::Corrupt(e.to_string()));
        let before = read(&key_path)?;
        assert_eq!(store.rotate_key_file()?, 2);
        let after = read(&key_path)?;
        assert_ne!(before, after);
        assert!(!dir.path().join(vault::NEW_KEY_FILE).exists());
        let new = Key::load(dir.path())?;
        assert_eq!(store.endpoints(&new)?[0].password.expose(), PASSWORD);
        assert!(store.endpoints(&old).is_err());

        // A row that does not open: an error, the key file and the rows are as they were.
        store.conn.execute(
            "UPDATE iis_endpoint SET password_sealed = x'0102' WHERE provider_id = 'PRV-002'",
            [],
        )?;
        assert!(matches!(
            store.rotate_key_file(),
            Err(Error::Vault(vault::Error::WrongKey { .. }))
        ));
        assert_eq!(read(&key_path)?, after);
        assert!(!dir.path().join(vault::NEW_KEY_FILE).exists());
        assert_eq!(
            store.endpoint("PRV-001", &new)?.map(|e| e.password),
            Some(Secret::new(PASSWORD))
        );
        Ok(())
    }

    #[test]
    fn named_secrets_are_sealed_and_follow_key_rotation() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Corrupt(e.to_string()))?;
        let mut store = Store::open(&dir.path().join("t.db"))?;
        let old = Key::generate()?;
        store.set_secret("dataverse", &Secret::new("dv-client-secret-93"), &old)?;
        store.set_secret("dataverse", &Secret::new("dv-client-secret-94"), &old)?;
        assert_eq!(
            store.secret("dataverse", &old)?.map(|s| s.expose().to_owned()).as_deref(),
            Some("dv-client-secret-94")
        );
        assert!(store.secret("missing", &old)?.is_none());
        let new = Key::generate()?;
        assert!(matches!(store.secret("dataverse", &new), Err(Error::Vault(_))));
        store.rotate_key(&old, &new)?;
        assert_eq!(
            store.secret("dataverse", &new)?.map(|s| s.expose().to_owned()).as_deref(),
            Some("dv-client-secret-94")
        );
        drop(store);
        let bytes =
            std::fs::read(dir.path().join("t.db")).map_err(|e| Error::Corrupt(e.to_string()))?;
        assert!(!bytes.windows(19).any(|w| w == b"dv-client-secret-94"));
        Ok(())
    }
}
