//! `izrelay dataverse probe`: checks the mapping against the environment's metadata
//! (`EntityDefinitions`), naming every missing table and column.
//!
//! Checked: the table (by logical name) and its entity set name, change tracking, and every
//! column the mapping reads directly on the vaccination row (the key, `modifiedon`, the two
//! flags, each field's column or lookup). Columns read *through* a lookup live on another
//! table, which the lookup's metadata would name; they are listed as not checked.

use std::collections::BTreeSet;

use serde_json::Value;

use super::client::{Client, Error, Request};
use super::mapping::Mapping;

/// What the probe found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProbeReport {
    /// Problems that stop a pull (missing table or column).
    pub problems: Vec<String>,
    /// Things worth knowing that do not stop it.
    pub notes: Vec<String>,
    /// Columns checked and found.
    pub found: usize,
}

/// Probes `mapping` against the environment behind `client`.
///
/// # Errors
/// [`Error`] for anything but a missing table (which is a problem in the report).
pub async fn probe(client: &Client, mapping: &Mapping) -> Result<ProbeReport, Error> {
    let mut report = ProbeReport::default();
    let path = format!(
        "EntityDefinitions(LogicalName='{}')?$select=LogicalName,EntitySetName,ChangeTrackingEnabled&$expand=Attributes($select=LogicalName)",
        mapping.logical_name.replace('\'', "''")
    );
    let answer = match client.send(&Request::get(&path)).await {
        Ok(a) => a,
        Err(Error::Api { status: 404, .. }) => {
            report.problems.push(format!(
                "dataverse.vaccination.logical_name: no table {:?} in this environment",
                mapping.logical_name
            ));
            return Ok(report);
        }
        Err(e) => return Err(e),
    };
    let meta = answer.json(&path)?;
    let set = meta.get("EntitySetName").and_then(Value::as_str).unwrap_or("");
    if set != mapping.entity_set {
        report.problems.push(format!(
            "dataverse.vaccination.entity_set: {:?}, but the table's EntitySetName is {set:?}",
            mapping.entity_set
        ));
    }
    if meta.get("ChangeTrackingEnabled").and_then(Value::as_bool) != Some(true) {
        report.problems.push(format!(
            "table {}: change tracking is off; turn on \"Track changes\" for it (pull reads changes by delta link)",
            mapping.logical_name
        ));
    }
    let attributes: BTreeSet<String> = meta
        .get("Attributes")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.get("LogicalName").and_then(Value::as_str))
                .map(str::to_ascii_lowercase)
                .collect()
        })
        .unwrap_or_default();
    let mut check = |key: String, column: &str| {
        let direct = column.split('/').next().unwrap_or(column);
        if attributes.contains(&direct.to_ascii_lowercase()) {
            report.found += 1;
        } else {
            report
                .problems
                .push(format!("{key}: no column {direct:?} on table {}", mapping.logical_name));
        }
        if column.contains('/') {
            report.notes.push(format!(
                "{key}: {column:?} is read through a lookup; its target column is not checked"
            ));
        }
    };
    check("dataverse.vaccination.id".into(), &mapping.id);
    check("dataverse.vaccination.modified_on".into(), &mapping.modified_on);
    check("dataverse.vaccination.completed.column".into(), &mapping.completed.column);
    check("dataverse.vaccination.generate_hl7.column".into(), &mapping.generate_hl7.column);
    for (field, column) in &mapping.fields {
        check(format!("dataverse.vaccination.fields.{field}"), column);
    }
    Ok(report)
}
