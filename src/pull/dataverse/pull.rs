//! `pull`: Dataverse rows → canonical records → the same intake as `izrelay import`.
//!
//! [`pull`] is incremental by change tracking: the `@odata.deltaLink` kept in `sync_cursor`
//! returns the ids of the vaccination rows changed since the last pull (change tracking allows
//! no `$expand` or `$filter`), and those rows are then read whole, with their lookups
//! expanded, by `Microsoft.Dynamics.CRM.In` on the primary key, [`ID_CHUNK`] at a time. The
//! first pull takes a new delta link first and then reads the whole table ([`pull_all`]); a
//! pull whose delta token has expired does the same but reads only the rows modified at or
//! after the watermark (the newest `modifiedon` a complete pull took). A change made between
//! the two reads is read again next time, which intake turns into nothing. The new delta link is stored only after every
//! row it covers is in the store. Filtering for *Completed* and *Generate HL7* happens in
//! intake: new or changed and *Completed* → a message; *Generate HL7* → a message again;
//! unchanged → nothing. A row the mapping cannot turn into a record is kept as an `invalid`
//! entry naming each field and column. Deleted rows are logged, never deleted locally (the
//! audit trail stays).

use chrono::{DateTime, FixedOffset};
use serde_json::Value;
use tracing::{debug, warn};

use super::client::{Client, Error};
use super::mapping::Mapping;
use crate::hl7::{Profiles, Violation};
use crate::store::Store;
use crate::store::records::{IntakeCounts, Prepared};

/// What a pull did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PullReport {
    /// Pages read.
    pub pages: u64,
    /// Rows read.
    pub rows: u64,
    /// Rows the mapping could not turn into a record (kept as invalid, with reasons).
    pub unmappable: u64,
    /// Rows without a primary key value (cannot be kept; never expected from Dataverse).
    pub without_id: u64,
    /// What intake did with the records.
    pub intake: IntakeCounts,
    /// `delta` (changes since the stored link), `full`, or `full (delta token expired)`.
    pub mode: String,
    /// Rows Dataverse reported deleted (kept locally).
    pub deleted: u64,
    /// Rows skipped because the version read is the one our own write-back produced.
    pub own_writes: u64,
    /// The newest `modifiedon` taken (the watermark for a resync after an expired token).
    #[serde(skip)]
    pub newest: Option<String>,
}

/// The `sync_cursor` name of the newest `modifiedon` taken by a complete pull.
pub const WATERMARK_CURSOR: &str = "dataverse.vaccination.watermark";

/// Takes one page: skips the versions our own write-back produced (clearing *Generate HL7*
/// must not read as a change and send the dose again), prepares the rest, takes them in, and
/// notes each row's ETag and `modifiedon`.
fn take_page(
    mapping: &Mapping,
    rows: Vec<Value>,
    store: &mut Store,
    profiles: &Profiles,
    now: DateTime<FixedOffset>,
    report: &mut PullReport,
) -> Result<(), crate::store::Error> {
    let id_of = |r: &Value| r.get(&mapping.id).and_then(Value::as_str).map(str::to_owned);
    let etag_of = |r: &Value| r.get("@odata.etag").and_then(Value::as_str).map(str::to_owned);
    let ids: Vec<String> = rows.iter().filter_map(id_of).collect();
    let own = store.own_writes(&ids.iter().map(String::as_str).collect::<Vec<_>>())?;
    let mut seen = Vec::with_capacity(rows.len());
    let mut fresh = Vec::with_capacity(rows.len());
    for r in rows {
        if let Some(id) = id_of(&r) {
            let etag = etag_of(&r);
            if etag.is_some() && own.get(&id) == etag.as_ref() {
                report.own_writes += 1;
                continue;
            }
            let modified = r.get(&mapping.modified_on).and_then(Value::as_str).map(str::to_owned);
            if let Some(m) = &modified {
                // RFC 3339 UTC strings order like the times they are.
                if report.newest.as_ref().is_none_or(|n| m > n) {
                    report.newest = Some(m.clone());
                }
            }
            seen.push((id, etag, modified));
        }
        fresh.push(r);
    }
    let batch = prepare_page(mapping, fresh, profiles, now, report)?;
    let counts = store.intake_prepared(batch, now)?;
    report.intake.add(&counts);
    store.note_dataverse_rows(&seen)
}

/// The `sync_cursor` name of the vaccination table's delta link.
pub const DELTA_CURSOR: &str = "dataverse.vaccination.deltalink";

/// Ids per `In(...)` request when reading changed rows whole.
pub const ID_CHUNK: usize = 100;

/// Pull errors.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// Dataverse failed.
    #[error(transparent)]
    Dataverse(#[from] Error),
    /// The database failed (the page being stored is rolled back; pages before it are kept).
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

/// Turns one page of rows into prepared records.
pub fn prepare_page(
    mapping: &Mapping,
    rows: Vec<Value>,
    profiles: &Profiles,
    now: DateTime<FixedOffset>,
    report: &mut PullReport,
) -> Result<Vec<Prepared>, crate::store::Error> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        report.rows += 1;
        match mapping.record(&row) {
            Ok(rec) => out.push(Prepared::new(rec, profiles, now)?),
            Err(errors) => {
                let Some(id) = row.get(&mapping.id).and_then(Value::as_str).map(str::to_owned)
                else {
                    report.without_id += 1;
                    warn!(
                        column = mapping.id,
                        "a Dataverse row without its primary key was skipped"
                    );
                    continue;
                };
                report.unmappable += 1;
                let provider = mapping
                    .fields
                    .get("provider_id")
                    .and_then(|col| col.split('/').try_fold(&row, |v, p| v.get(p)))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let violations = errors
                    .into_iter()
                    .map(|e| Violation {
                        record_id: e.vaccination_id,
                        field: e.field,
                        rule: format!("Dataverse column {}: {}", e.column, e.reason),
                    })
                    .collect();
                let modified =
                    row.get(&mapping.modified_on).and_then(Value::as_str).map(str::to_owned);
                out.push(Prepared::unmappable(
                    id,
                    provider,
                    mapping.completed.holds(&row),
                    mapping.generate_hl7.holds(&row),
                    modified,
                    &row,
                    violations,
                )?);
            }
        }
    }
    Ok(out)
}

/// Reads every vaccination row and takes each page into the store in one transaction.
///
/// # Errors
/// [`PullError`]; pages already stored stay stored (the next pull finds them unchanged).
pub async fn pull_all(
    client: &Client,
    mapping: &Mapping,
    store: &mut Store,
    profiles: &Profiles,
    now: DateTime<FixedOffset>,
) -> Result<PullReport, PullError> {
    read_all(client, mapping, store, profiles, now, None).await
}

/// Reads every row (or, with `since`, every row modified at or after it: `ge`, as rows share
/// seconds) and takes each page in.
async fn read_all(
    client: &Client,
    mapping: &Mapping,
    store: &mut Store,
    profiles: &Profiles,
    now: DateTime<FixedOffset>,
    since: Option<&str>,
) -> Result<PullReport, PullError> {
    let mut report = PullReport { mode: "full".into(), ..PullReport::default() };
    let mut failure: Option<crate::store::Error> = None;
    {
        let report = &mut report;
        let failure = &mut failure;
        let mut page = |rows: Vec<Value>| {
            if failure.is_some() {
                return;
            }
            report.pages += 1;
            if let Err(e) = take_page(mapping, rows, store, profiles, now, report) {
                *failure = Some(e);
            }
        };
        let query = match since {
            Some(t) => format!(
                "{}&$filter={}",
                mapping.query(),
                encode_query_value(&format!("{} ge {t}", mapping.modified_on))
            ),
            None => mapping.query(),
        };
        client.read_pages(&query, false, &mut page).await?;
    }
    if let Some(e) = failure {
        return Err(e.into());
    }
    debug!(
        rows = report.rows,
        pages = report.pages,
        queued = report.intake.queued,
        unmappable = report.unmappable,
        "dataverse pull done"
    );
    Ok(report)
}

/// Pulls what changed since the last pull (or everything, the first time or after the delta
/// token expired); see the module docs.
///
/// # Errors
/// [`PullError`]; what was stored stays stored, and the delta link is not advanced.
pub async fn pull(
    client: &Client,
    mapping: &Mapping,
    store: &mut Store,
    profiles: &Profiles,
    now: DateTime<FixedOffset>,
) -> Result<PullReport, PullError> {
    let mut expired = false;
    // A delta link belongs to the environment (and table) that issued it: after the configured
    // URL changes, the stored link would read another environment's changes, or none.
    let stored = store.cursor(DELTA_CURSOR)?;
    let stored = match stored {
        Some(link) if !link.starts_with(client.api_base()) => {
            warn!("the stored delta link belongs to another Dataverse environment; full resync");
            store.set_cursor(DELTA_CURSOR, None)?;
            None
        }
        other => other,
    };
    if let Some(link) = stored {
        let mut changed: Vec<String> = Vec::new();
        let mut deleted = 0u64;
        let read = client
            .read_pages(&link, false, &mut |rows: Vec<Value>| {
                for r in rows {
                    if r.get("reason").and_then(Value::as_str) == Some("deleted") {
                        deleted += 1;
                    } else if let Some(id) = r.get(&mapping.id).and_then(Value::as_str) {
                        changed.push(id.to_owned());
                    }
                }
            })
            .await;
        match read {
            Ok(next) => {
                let mut report =
                    PullReport { mode: "delta".into(), deleted, ..PullReport::default() };
                if deleted > 0 {
                    warn!(
                        rows = deleted,
                        "dataverse reports deleted vaccination rows; local history is kept"
                    );
                }
                changed.sort_unstable();
                changed.dedup();
                read_by_id(client, mapping, store, profiles, now, &changed, &mut report).await?;
                if let Some(next) = next {
                    store.set_cursor(DELTA_CURSOR, Some(&next))?;
                }
                save_watermark(store, &report)?;
                debug!(
                    changed = changed.len(),
                    queued = report.intake.queued,
                    "dataverse delta pull done"
                );
                return Ok(report);
            }
            Err(Error::Api { status, code, message, .. }) if matches!(status, 400 | 404 | 410) => {
                warn!(status, code, message, "dataverse delta token no longer valid; full resync");
                expired = true;
            }
            Err(e) => return Err(e.into()),
        }
    }
    // Baseline first, so changes made during the read come back in the next delta.
    let baseline = client.read_pages(&mapping.tracked_query(), true, &mut |_rows| {}).await?;
    let watermark = if expired { store.cursor(WATERMARK_CURSOR)? } else { None };
    let mut report = read_all(client, mapping, store, profiles, now, watermark.as_deref()).await?;
    report.mode = match (expired, &watermark) {
        (true, Some(_)) => "watermark (delta token expired)".into(),
        (true, None) => "full (delta token expired)".into(),
        (false, _) => "full".into(),
    };
    match baseline {
        Some(link) => store.set_cursor(DELTA_CURSOR, Some(&link))?,
        None => warn!("dataverse gave no delta link: is change tracking enabled on the table?"),
    }
    save_watermark(store, &report)?;
    Ok(report)
}

/// Advances the watermark to the newest `modifiedon` a complete pull took.
fn save_watermark(store: &mut Store, report: &PullReport) -> Result<(), PullError> {
    if let Some(newest) = &report.newest {
        let old = store.cursor(WATERMARK_CURSOR)?;
        if old.as_ref().is_none_or(|o| newest > o) {
            store.set_cursor(WATERMARK_CURSOR, Some(newest))?;
        }
    }
    Ok(())
}

/// Reads rows whole by primary key, [`ID_CHUNK`] ids per request, and takes them in.
async fn read_by_id(
    client: &Client,
    mapping: &Mapping,
    store: &mut Store,
    profiles: &Profiles,
    now: DateTime<FixedOffset>,
    ids: &[String],
    report: &mut PullReport,
) -> Result<(), PullError> {
    let base = mapping.query();
    for chunk in ids.chunks(ID_CHUNK) {
        let list: Vec<String> =
            chunk.iter().map(|id| format!("'{}'", id.replace('\'', "''"))).collect();
        let filter = format!(
            "Microsoft.Dynamics.CRM.In(PropertyName='{}',PropertyValues=[{}])",
            mapping.id,
            list.join(",")
        );
        let query = format!("{base}&$filter={}", encode_query_value(&filter));
        let mut rows_all = Vec::new();
        client.read_pages(&query, false, &mut |rows: Vec<Value>| rows_all.extend(rows)).await?;
        report.pages += 1;
        take_page(mapping, rows_all, store, profiles, now, report)?;
    }
    Ok(())
}

/// Percent-encodes a query option value (spaces, quotes, brackets and the like).
fn encode_query_value(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>().replace('+', "%20")
}
