//! Sync back: every final outcome of a record that came from Dataverse is written back,
//! whenever Dataverse answers.
//!
//! Per queued write-back (`dataverse_outbox`, filled in the outcome's own transaction):
//! 1. an upsert (`PATCH` without `If-Match`) of the notification log record, keyed by a GUID
//!    derived from this installation and the local row id, so a retry after a lost answer
//!    updates the same record instead of creating a second one;
//! 2. an update of the vaccination row, guarded by its ETag (`If-Match`): the HL7 status, and
//!    the *Generate HL7* flag cleared. On 412 (someone changed the row) the row is read again;
//!    if its flag is set on a newer version than the one the message was built from, only the
//!    status is written (a newer request stands), else both, under the new ETag. The version
//!    this write produces is remembered, so the next pull does not take our own write for a
//!    user's change.
//!
//! Transport trouble ends the round (rows stay queued with backoff); an error Dataverse will
//! not fix by itself is kept on the row (`last_error`) and retried with backoff.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use tracing::{info, warn};

use crate::forwarder::backoff;
use crate::pull::dataverse::client::{Client, Error, Request};
use crate::pull::dataverse::{DataverseConfig, LogTable};
use crate::store::dataverse::SyncItem;
use crate::store::{Store, now_ms};

/// What a sync round did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    /// Outcomes written back.
    pub synced: u64,
    /// Write-backs that failed and wait for a retry.
    pub failed: u64,
    /// Vaccination rows changed by someone else meanwhile (412), handled by re-reading.
    pub conflicts: u64,
    /// Write-backs still waiting after this round.
    pub backlog: u64,
    /// The last error, when any.
    pub last_error: Option<String>,
}

/// Sync errors that stop the round before it starts.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

/// The name of this installation's id in `sync_cursor`.
const INSTALLATION: &str = "installation_id";

/// This installation's random id (created once).
fn installation_id(store: &mut Store) -> Result<String, SyncError> {
    if let Some(id) = store.cursor(INSTALLATION)? {
        return Ok(id);
    }
    let id = format!("{:032x}", fastrand::u128(..));
    store.set_cursor(INSTALLATION, Some(&id))?;
    Ok(id)
}

/// The Dataverse GUID of a local notification log row.
pub fn log_guid(installation: &str, log_id: i64) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("izrelay-log:{installation}:{log_id}").as_bytes(),
    );
    let b = d.as_ref();
    let hex: String = b[..16].iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-5{}-a{}-{}", &hex[..8], &hex[8..12], &hex[13..16], &hex[17..20], &hex[20..32])
}

fn iso(ms: Option<i64>) -> Value {
    ms.and_then(DateTime::<Utc>::from_timestamp_millis)
        .map_or(Value::Null, |t| Value::from(t.format("%Y-%m-%dT%H:%M:%SZ").to_string()))
}

/// Drains every due write-back once.
///
/// # Errors
/// [`SyncError`] for database failures.
pub async fn sync_once(
    client: &Client,
    dv: &DataverseConfig,
    store: &mut Store,
) -> Result<SyncReport, SyncError> {
    let mut report = SyncReport::default();
    let Some(log) = dv.notification_log.as_ref() else {
        report.backlog = store.sync_backlog()?;
        return Ok(report);
    };
    let installation = installation_id(store)?;
    // Each write-back is tried at most once per call, whatever its new due time.
    let mut tried = std::collections::HashSet::new();
    'rounds: loop {
        let items: Vec<SyncItem> = store
            .due_syncs(now_ms(), 200 + tried.len())?
            .into_iter()
            .filter(|i| !tried.contains(&i.outbox_id))
            .collect();
        if items.is_empty() {
            break;
        }
        for item in items {
            tried.insert(item.outbox_id);
            match write_back(client, dv, log, &installation, &item, &mut report).await {
                Ok(etag) => {
                    store.sync_done(&item, etag.as_deref())?;
                    report.synced += 1;
                }
                Err(e) => {
                    report.failed += 1;
                    let text = e.to_string();
                    let delay = backoff::delay_ms(
                        item.attempts + 1,
                        5_000,
                        3_600_000,
                        None,
                        backoff::draw(),
                    );
                    store.sync_failed(
                        item.outbox_id,
                        &text,
                        now_ms() + i64::try_from(delay).unwrap_or(i64::MAX),
                    )?;
                    report.last_error = Some(text);
                    if matches!(e, Error::Unavailable { .. } | Error::Auth { .. }) {
                        warn!(error = %e, "dataverse unreachable; outcomes wait in the outbox");
                        break 'rounds;
                    }
                }
            }
        }
    }
    report.backlog = store.sync_backlog()?;
    info!(
        synced = report.synced,
        failed = report.failed,
        backlog = report.backlog,
        "dataverse sync round done"
    );
    Ok(report)
}

async fn write_back(
    client: &Client,
    dv: &DataverseConfig,
    log: &LogTable,
    installation: &str,
    item: &SyncItem,
    report: &mut SyncReport,
) -> Result<Option<String>, Error> {
    let vset = &dv.vaccination.entity_set;
    let mut body = Map::new();
    body.insert(log.control_id.clone(), json!(item.control_id));
    body.insert(log.status.clone(), json!(item.status));
    body.insert(log.message.clone(), json!(item.message));
    body.insert(log.ack_code.clone(), json!(item.ack_code));
    body.insert(log.ack.clone(), json!(item.ack));
    body.insert(log.errors.clone(), json!(item.errors));
    body.insert(log.attempts.clone(), json!(item.send_attempts));
    body.insert(log.generated_on.clone(), iso(Some(item.created_at)));
    body.insert(log.responded_on.clone(), iso(item.finished_at));
    body.insert(
        format!("{}@odata.bind", log.vaccination),
        json!(format!("/{vset}({})", item.vaccination_id)),
    );
    let target = format!("{}({})", log.entity_set, log_guid(installation, item.log_id));
    let bytes = serde_json::to_vec(&Value::Object(body)).unwrap_or_default();
    client
        .send(&Request {
            method: reqwest::Method::PATCH,
            body: Some(bytes),
            ..Request::get(&target)
        })
        .await?;

    // The vaccination row, guarded by its ETag.
    let row = format!("{vset}({})", item.vaccination_id);
    let flag = &dv.vaccination.generate_hl7;
    let update = |clear: bool| {
        let mut b = Map::new();
        if let Some(col) = &log.vaccination_status {
            b.insert(col.clone(), json!(item.status));
        }
        if clear {
            b.insert(flag.column.clone(), flag.cleared_value());
        }
        serde_json::to_vec(&Value::Object(b)).unwrap_or_default()
    };
    let patch = |if_match: String, body: Vec<u8>| {
        let row = row.clone();
        async move {
            let select = format!("{row}?$select={}", dv.vaccination.modified_on);
            client
                .send(&Request {
                    method: reqwest::Method::PATCH,
                    prefer: vec!["return=representation".into()],
                    if_match: Some(&if_match),
                    body: Some(body),
                    ..Request::get(&select)
                })
                .await
                .map(|a| {
                    a.json(&row)
                        .ok()
                        .and_then(|v| {
                            v.get("@odata.etag").and_then(Value::as_str).map(str::to_owned)
                        })
                        .or(a.etag)
                })
        }
    };
    match patch(item.etag.clone().unwrap_or_else(|| "*".into()), update(true)).await {
        Ok(etag) => Ok(etag),
        Err(Error::Api { status: 412, .. }) => {
            report.conflicts += 1;
            let read = format!("{row}?$select={},{}", flag.column, dv.vaccination.modified_on);
            let current = client.send(&Request::get(&read)).await?.json(&read)?;
            let etag = current.get("@odata.etag").and_then(Value::as_str).unwrap_or("*").to_owned();
            let modified = current.get(&dv.vaccination.modified_on).and_then(Value::as_str);
            // A flag set on a version newer than the one read: a new request; leave it set.
            let newer_request = flag.holds(&current)
                && matches!((modified, item.modified_on.as_deref()), (Some(now), Some(then)) if now > then);
            patch(etag, update(!newer_request)).await
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_guids_are_stable_distinct_and_shaped() {
        let a = log_guid("inst", 1);
        assert_eq!(a, log_guid("inst", 1));
        assert_ne!(a, log_guid("inst", 2));
        assert_ne!(a, log_guid("other", 1));
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    }
}
