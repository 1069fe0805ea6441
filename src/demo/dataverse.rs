//! The demo's Dataverse: the simulated Web API on loopback, holding the sample records as
//! rows of a vaccination table (one column per record field), with a notification log table
//! for the write-back.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::config::vault::Secret;
use crate::pull::dataverse::mapping::{Condition, Mapping};
use crate::pull::dataverse::{Client, DataverseConfig, LogTable};
use crate::sim::dataverse::{self as dv, Table};

/// The demo's vaccination entity set.
pub const SET: &str = "izr_vaccinations";
const PK: &str = "izr_vaccinationid";
/// The demo's notification log entity set.
pub const LOG_SET: &str = "izr_notificationlogs";

/// Leaf paths and values of a record's JSON (`patient.family_name`, `vis[0].presented`).
fn flatten(v: &Value, prefix: &str, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(x, &p, out);
            }
        }
        Value::Array(a) if a.iter().all(Value::is_object) && !a.is_empty() => {
            for (i, x) in a.iter().enumerate() {
                flatten(x, &format!("{prefix}[{i}]"), out);
            }
        }
        Value::Array(a) => {
            let parts: Vec<String> =
                a.iter().map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned)).collect();
            out.push((prefix.to_owned(), Value::from(parts.join(","))));
        }
        Value::Null => {}
        other => out.push((prefix.to_owned(), other.clone())),
    }
}

fn column(path: &str) -> String {
    let mut c = String::from("izr_");
    c.extend(
        path.chars()
            .map(|ch| if ch.is_ascii_alphanumeric() { ch.to_ascii_lowercase() } else { '_' }),
    );
    c
}

/// Paths the mapping handles itself.
const OWN: [&str; 4] = ["vaccination_id", "completed", "generate_hl7", "modified_on"];

/// The Dataverse rows of `records` and the mapping that reads them back.
pub fn rows_and_mapping(records: &[Value]) -> (Vec<Value>, Mapping) {
    let mut fields = BTreeMap::new();
    let mut rows = Vec::new();
    for r in records {
        let mut leaves = Vec::new();
        flatten(r, "", &mut leaves);
        let mut row = Map::new();
        for (path, value) in leaves {
            match path.as_str() {
                "vaccination_id" => {
                    row.insert(PK.into(), value);
                }
                "completed" | "generate_hl7" => {
                    row.insert(column(&path), value);
                }
                p if OWN.contains(&p) => {}
                _ => {
                    fields.insert(path.clone(), column(&path));
                    row.insert(column(&path), value);
                }
            }
        }
        // Every row has both flags, as every row of a real table has every column.
        for flag in ["completed", "generate_hl7"] {
            row.entry(column(flag)).or_insert(Value::Bool(false));
        }
        rows.push(Value::Object(row));
    }
    let yes = |c: &str| Condition { column: column(c), equals: Value::Bool(true), cleared: None };
    let mapping = Mapping {
        entity_set: SET.into(),
        logical_name: "izr_vaccination".into(),
        id: PK.into(),
        modified_on: "modifiedon".into(),
        completed: yes("completed"),
        generate_hl7: yes("generate_hl7"),
        fields,
        values: BTreeMap::new(),
    };
    (rows, mapping)
}

/// A running demo Dataverse with its config and a client.
pub struct DemoDataverse {
    /// The simulator.
    pub sim: dv::Running,
    /// The config pointing at it.
    pub config: DataverseConfig,
    /// A client signed in with the demo app's secret.
    pub client: Client,
}

/// Starts the simulator with `records` as rows.
///
/// # Errors
/// Simulator or client start-up failures, as text.
pub async fn start(records: &[Value]) -> Result<DemoDataverse, String> {
    let (rows, mapping) = rows_and_mapping(records);
    let mut table = Table::new(SET, "izr_vaccination", PK);
    table.change_tracking = true;
    let log = Table::new(LOG_SET, "izr_notificationlog", "izr_notificationlogid");
    let sim = dv::start(
        ([127, 0, 0, 1], 0).into(),
        dv::Config { tables: vec![table, log], ..dv::Config::default() },
    )
    .await
    .map_err(|e| e.to_string())?;
    for r in rows {
        sim.upsert_row(SET, r);
    }
    let defaults = dv::Config::default();
    let config = DataverseConfig {
        url: sim.url.clone(),
        tenant_id: defaults.tenant.clone(),
        client_id: defaults.client_id.clone(),
        token_url: Some(sim.token_url()),
        page_size: 1000,
        batch_size: 50,
        ca_file: None,
        vaccination: mapping,
        notification_log: Some(LogTable {
            entity_set: LOG_SET.into(),
            vaccination: "izr_vaccination".into(),
            control_id: "izr_messagecontrolid".into(),
            status: "izr_status".into(),
            message: "izr_hl7message".into(),
            ack_code: "izr_ackcode".into(),
            ack: "izr_ackmessage".into(),
            errors: "izr_errortext".into(),
            attempts: "izr_attempts".into(),
            generated_on: "izr_generatedon".into(),
            responded_on: "izr_respondedon".into(),
            vaccination_status: Some("izr_hl7status".into()),
        }),
    };
    let client = Client::new(config.settings(), Secret::new(defaults.client_secret))
        .map_err(|e| e.to_string())?;
    Ok(DemoDataverse { sim, config, client })
}
