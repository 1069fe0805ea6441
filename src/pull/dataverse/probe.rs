//! `izrelay dataverse probe`: checks the mapping against the environment's metadata
//! (`EntityDefinitions`), naming every missing table, column and option value.
//!
//! Checked: the table (by logical name) and its entity set name, change tracking, and every
//! column the mapping reads directly on the vaccination row (the key, `modifiedon`, the two
//! flags, each field's column or lookup). For the two flags and every `values` table on a
//! direct choice column, the option values are checked against the column's option set
//! (`PicklistAttributeMetadata` / `StatusAttributeMetadata` with `OptionSet`): a flag's
//! `equals` that is not an option, a yes/no column compared with a number (or a choice with
//! `true`), a mapped value that is not an option are problems; an option with no mapping is a
//! note (rows holding it are kept invalid). Columns read *through* a lookup live on another
//! table; they are listed as not checked.

use std::collections::BTreeMap;

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
        "EntityDefinitions(LogicalName='{}')?$select=LogicalName,EntitySetName,ChangeTrackingEnabled&$expand=Attributes($select=LogicalName,AttributeType)",
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
    // Column → its AttributeType ("" when the answer leaves it out).
    let attributes: BTreeMap<String, String> = meta
        .get("Attributes")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| {
                    let name = x.get("LogicalName").and_then(Value::as_str)?;
                    let kind = x.get("AttributeType").and_then(Value::as_str).unwrap_or("");
                    Some((name.to_ascii_lowercase(), kind.to_owned()))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut check = |key: String, column: &str| {
        let direct = column.split('/').next().unwrap_or(column);
        if attributes.contains_key(&direct.to_ascii_lowercase()) {
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
    let options = option_sets(client, &mapping.logical_name).await?;
    for (key, condition) in
        [("completed", &mapping.completed), ("generate_hl7", &mapping.generate_hl7)]
    {
        let column = condition.column.to_ascii_lowercase();
        let key = format!("dataverse.vaccination.{key}.equals");
        let kind = attributes.get(&column).map_or("", String::as_str);
        match (&condition.equals, options.get(&column)) {
            (Value::Bool(_), Some(_)) => report.problems.push(format!(
                "{key}: {} is a choice column; compare it with one of its option values, not true/false ({})",
                condition.column,
                list(options.get(&column))
            )),
            (Value::Bool(_), None) => {}
            (equals, Some(set)) => match number(equals) {
                Some(n) if set.contains_key(&n) => {}
                _ => report.problems.push(format!(
                    "{key}: {equals} is not an option of {} ({})",
                    condition.column,
                    list(Some(set))
                )),
            },
            (equals, None) if kind.eq_ignore_ascii_case("Boolean") => {
                report.problems.push(format!(
                    "{key}: {} is a yes/no column; compare it with true, not {equals}",
                    condition.column
                ));
            }
            (_, None) => {}
        }
    }
    for (field, table) in &mapping.values {
        let Some(column) = mapping.fields.get(field) else {
            report.problems.push(format!(
                "dataverse.vaccination.values.\"{field}\": no column is mapped to {field}"
            ));
            continue;
        };
        if column.contains('/') {
            continue; // read through a lookup: noted above
        }
        let Some(set) = options.get(&column.to_ascii_lowercase()) else {
            continue; // not a choice column (e.g. a text code): any value may appear
        };
        for from in table.keys() {
            if !number(&Value::String(from.clone())).is_some_and(|n| set.contains_key(&n)) {
                report.problems.push(format!(
                    "dataverse.vaccination.values.\"{field}\": {from:?} is not an option of {column} ({})",
                    list(Some(set))
                ));
            }
        }
        for (value, label) in set {
            if !table.keys().any(|k| number(&Value::String(k.clone())) == Some(*value)) {
                report.notes.push(format!(
                    "dataverse.vaccination.values.\"{field}\": option {value} ({label}) of {column} has no mapping; a row holding it is kept invalid"
                ));
            }
        }
    }
    Ok(report)
}

/// Choice columns of the table → option value → label, from its picklist and status metadata.
async fn option_sets(
    client: &Client,
    logical_name: &str,
) -> Result<BTreeMap<String, BTreeMap<i64, String>>, Error> {
    let mut out = BTreeMap::new();
    for cast in ["PicklistAttributeMetadata", "StatusAttributeMetadata"] {
        let path = format!(
            "EntityDefinitions(LogicalName='{}')/Attributes/Microsoft.Dynamics.CRM.{cast}?$select=LogicalName&$expand=OptionSet($select=Options),GlobalOptionSet($select=Options)",
            logical_name.replace('\'', "''")
        );
        let answer = client.send(&Request::get(&path)).await?.json(&path)?;
        for attribute in answer.get("value").and_then(Value::as_array).into_iter().flatten() {
            let Some(name) = attribute.get("LogicalName").and_then(Value::as_str) else {
                continue;
            };
            let set = ["OptionSet", "GlobalOptionSet"]
                .iter()
                .filter_map(|k| attribute.get(*k)?.get("Options")?.as_array())
                .flatten()
                .filter_map(|o| {
                    let value = o.get("Value")?.as_i64()?;
                    let label = o
                        .pointer("/Label/UserLocalizedLabel/Label")
                        .or_else(|| o.pointer("/Label/LocalizedLabels/0/Label"))
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    Some((value, label.to_owned()))
                })
                .collect();
            out.insert(name.to_ascii_lowercase(), set);
        }
    }
    Ok(out)
}

fn number(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn list(set: Option<&BTreeMap<i64, String>>) -> String {
    let Some(set) = set else { return "no options".into() };
    let items: Vec<String> = set.iter().map(|(v, l)| format!("{v} {l}")).collect();
    format!("options: {}", items.join(", "))
}
