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
use tracing::{debug, warn};

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
    /// `$batch` requests sent.
    pub batches: u64,
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

/// Due write-backs below this count go one request at a time; at or above it, by `$batch`.
pub const BATCH_MIN: usize = 10;

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
        for chunk in items.chunks(if dv.batch_size > 1 && items.len() >= BATCH_MIN {
            dv.batch_size
        } else {
            1
        }) {
            let results = if chunk.len() > 1 {
                report.batches += 1;
                write_back_batch(client, dv, log, &installation, chunk, &mut report).await
            } else {
                let mut one = Vec::new();
                for item in chunk {
                    one.push(write_back(client, dv, log, &installation, item, &mut report).await);
                }
                one
            };
            for (item, result) in chunk.iter().zip(results) {
                tried.insert(item.outbox_id);
                match result {
                    Ok(etag) => {
                        store.sync_done(item, etag.as_deref())?;
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
                            for rest in chunk {
                                tried.insert(rest.outbox_id);
                            }
                            break 'rounds;
                        }
                    }
                }
            }
        }
    }
    report.backlog = store.sync_backlog()?;
    debug!(
        synced = report.synced,
        failed = report.failed,
        backlog = report.backlog,
        "dataverse sync round done"
    );
    Ok(report)
}

/// The notification log upsert: (target, JSON body).
fn log_upsert(
    dv: &DataverseConfig,
    log: &LogTable,
    installation: &str,
    item: &SyncItem,
) -> (String, Vec<u8>) {
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
    (target, serde_json::to_vec(&Value::Object(body)).unwrap_or_default())
}

/// The vaccination row update: status, and the flag cleared when `clear`.
fn row_update(dv: &DataverseConfig, log: &LogTable, item: &SyncItem, clear: bool) -> Vec<u8> {
    let flag = &dv.vaccination.generate_hl7;
    let mut b = Map::new();
    if let Some(col) = &log.vaccination_status {
        b.insert(col.clone(), json!(item.status));
    }
    if clear {
        b.insert(flag.column.clone(), flag.cleared_value());
    }
    serde_json::to_vec(&Value::Object(b)).unwrap_or_default()
}

fn row_target(dv: &DataverseConfig, item: &SyncItem) -> String {
    format!(
        "{}({})?$select={}",
        dv.vaccination.entity_set, item.vaccination_id, dv.vaccination.modified_on
    )
}

/// PATCHes the vaccination row under `if_match`; returns the new ETag.
async fn patch_row(
    client: &Client,
    dv: &DataverseConfig,
    item: &SyncItem,
    if_match: &str,
    body: Vec<u8>,
) -> Result<Option<String>, Error> {
    let target = row_target(dv, item);
    client
        .send(&Request {
            method: reqwest::Method::PATCH,
            prefer: vec!["return=representation".into()],
            if_match: Some(if_match),
            body: Some(body),
            ..Request::get(&target)
        })
        .await
        .map(|a| a.json(&target).ok().and_then(|v| etag_of(&v)).or(a.etag))
}

fn etag_of(v: &Value) -> Option<String> {
    v.get("@odata.etag").and_then(Value::as_str).map(str::to_owned)
}

/// After a 412: re-read the row and write again under its new ETag, keeping a newer request.
async fn resolve_conflict(
    client: &Client,
    dv: &DataverseConfig,
    log: &LogTable,
    item: &SyncItem,
    report: &mut SyncReport,
) -> Result<Option<String>, Error> {
    report.conflicts += 1;
    let flag = &dv.vaccination.generate_hl7;
    let read = format!(
        "{}({})?$select={},{}",
        dv.vaccination.entity_set, item.vaccination_id, flag.column, dv.vaccination.modified_on
    );
    let current = client.send(&Request::get(&read)).await?.json(&read)?;
    let etag = etag_of(&current).unwrap_or_else(|| "*".into());
    let modified = current.get(&dv.vaccination.modified_on).and_then(Value::as_str);
    // A flag set on a version newer than the one read: a new request; leave it set.
    let newer_request = flag.holds(&current)
        && matches!((modified, item.modified_on.as_deref()), (Some(now), Some(then)) if now > then);
    let written =
        patch_row(client, dv, item, &etag, row_update(dv, log, item, !newer_request)).await?;
    // With a newer request kept, the version written is not only ours: the next pull must take
    // it (so its ETag is not remembered as our own).
    Ok(if newer_request { None } else { written })
}

async fn write_back(
    client: &Client,
    dv: &DataverseConfig,
    log: &LogTable,
    installation: &str,
    item: &SyncItem,
    report: &mut SyncReport,
) -> Result<Option<String>, Error> {
    let (target, body) = log_upsert(dv, log, installation, item);
    client
        .send(&Request {
            method: reqwest::Method::PATCH,
            body: Some(body),
            ..Request::get(&target)
        })
        .await?;
    let if_match = item.etag.clone().unwrap_or_else(|| "*".into());
    match patch_row(client, dv, item, &if_match, row_update(dv, log, item, true)).await {
        Err(Error::Api { status: 412, .. }) => {
            resolve_conflict(client, dv, log, item, report).await
        }
        other => other,
    }
}

/// Writes back many outcomes in one `$batch` (two operations each, `continue-on-error`), then
/// finishes 412s one by one. One result per item, in order.
async fn write_back_batch(
    client: &Client,
    dv: &DataverseConfig,
    log: &LogTable,
    installation: &str,
    items: &[SyncItem],
    report: &mut SyncReport,
) -> Vec<Result<Option<String>, Error>> {
    use crate::pull::dataverse::multipart::{self, HttpMessage, Part};
    let base_path = reqwest::Url::parse(client.api_base())
        .map(|u| u.path().to_owned())
        .unwrap_or_else(|_| "/api/data/v9.2/".into());
    let boundary = format!("batch_izrelay_{:016x}", fastrand::u64(..));
    let mut parts = Vec::with_capacity(items.len() * 2);
    for (i, item) in items.iter().enumerate() {
        let (target, body) = log_upsert(dv, log, installation, item);
        let if_match = item.etag.clone().unwrap_or_else(|| "*".into());
        let ops = [
            (target, body, None),
            (row_target(dv, item), row_update(dv, log, item, true), Some(if_match)),
        ];
        for (k, (target, body, if_match)) in ops.into_iter().enumerate() {
            let mut headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
            if let Some(m) = if_match {
                headers.push(("If-Match".into(), m));
                headers.push(("Prefer".into(), "return=representation".into()));
            }
            let http = HttpMessage {
                start: format!("PATCH {base_path}{target} HTTP/1.1"),
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            };
            parts.push(Part {
                headers: vec![
                    ("Content-Type".into(), "application/http".into()),
                    ("Content-Transfer-Encoding".into(), "binary".into()),
                    ("Content-ID".into(), (i * 2 + k + 1).to_string()),
                ],
                body: multipart::write_http(&http),
            });
        }
    }
    let body = multipart::write(&boundary, &parts);
    let sent = client
        .send(&Request {
            method: reqwest::Method::POST,
            prefer: vec!["odata.continue-on-error".into()],
            content_type: Some(format!("multipart/mixed; boundary={boundary}")),
            body: Some(body.into_bytes()),
            ..Request::get("$batch")
        })
        .await;
    let answer = match sent {
        Ok(a) => a,
        Err(e) => {
            let text = e.to_string();
            let unavailable = matches!(e, Error::Unavailable { .. } | Error::Auth { .. });
            return items
                .iter()
                .map(|_| {
                    Err(if unavailable {
                        Error::Unavailable {
                            method: "POST".into(),
                            path: "$batch".into(),
                            attempts: 0,
                            last: text.clone(),
                        }
                    } else {
                        Error::Api {
                            method: "POST".into(),
                            path: "$batch".into(),
                            status: 0,
                            code: String::new(),
                            message: text.clone(),
                        }
                    })
                })
                .collect();
        }
    };
    let text = String::from_utf8_lossy(&answer.body).into_owned();
    let responses: Vec<HttpMessage> = text
        .lines()
        .find(|l| l.starts_with("--"))
        .map(|l| l.trim_end().trim_start_matches("--").to_owned())
        .and_then(|b| multipart::parse(&text, &b).ok())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| multipart::parse_http(&p.body).ok())
        .collect();
    let status = |m: &HttpMessage| {
        m.start.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok()).unwrap_or(0)
    };
    let api_err = |m: &HttpMessage, path: &str| {
        let (code, message) = crate::pull::dataverse::client::error_text(m.body.as_bytes());
        Error::Api {
            method: "PATCH".into(),
            path: path.to_owned(),
            status: status(m),
            code,
            message,
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let (Some(log_r), Some(row_r)) = (responses.get(i * 2), responses.get(i * 2 + 1)) else {
            out.push(Err(Error::Api {
                method: "POST".into(),
                path: "$batch".into(),
                status: 0,
                code: String::new(),
                message: "no answer for this operation in the $batch response".into(),
            }));
            continue;
        };
        if !(200..300).contains(&status(log_r)) {
            out.push(Err(api_err(log_r, &log.entity_set)));
            continue;
        }
        let r = match status(row_r) {
            200..=299 => Ok(serde_json::from_str::<Value>(&row_r.body)
                .ok()
                .and_then(|v| etag_of(&v))
                .or_else(|| multipart::header(&row_r.headers, "ETag").map(str::to_owned))),
            412 => resolve_conflict(client, dv, log, item, report).await,
            _ => Err(api_err(row_r, &dv.vaccination.entity_set)),
        };
        out.push(r);
    }
    out
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
