//! `pull`: Dataverse rows → canonical records → the same intake as `izrelay import`.
//!
//! This version reads the whole vaccination table page by page (`$select` + `$expand` from
//! the mapping) and lets intake decide per record: new or changed and *Completed* → a message;
//! *Generate HL7* → a message again; unchanged → nothing. A row the mapping cannot turn into a
//! record is kept as an `invalid` entry naming each field and column. Incremental pulls by
//! change tracking (`@odata.deltaLink` kept in `sync_cursor`), the write-back of outcomes and
//! the `$batch` drain are the rest of the Dataverse issue.

use chrono::{DateTime, FixedOffset};
use serde_json::Value;
use tracing::{info, warn};

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
}

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
    let mut report = PullReport::default();
    let mut failure: Option<crate::store::Error> = None;
    {
        let report = &mut report;
        let failure = &mut failure;
        let mut page = |rows: Vec<Value>| {
            if failure.is_some() {
                return;
            }
            report.pages += 1;
            let taken = prepare_page(mapping, rows, profiles, now, report)
                .and_then(|batch| store.intake_prepared(batch, now));
            match taken {
                Ok(c) => report.intake.add(&c),
                Err(e) => *failure = Some(e),
            }
        };
        client.read_pages(&mapping.query(), false, &mut page).await?;
    }
    if let Some(e) = failure {
        return Err(e.into());
    }
    info!(
        rows = report.rows,
        pages = report.pages,
        queued = report.intake.queued,
        unmappable = report.unmappable,
        "dataverse pull done"
    );
    Ok(report)
}
