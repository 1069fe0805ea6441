//! A Dataverse Web API page (JSON) through the shipped mapping (`[dataverse.vaccination]` of
//! `packaging/config.example.toml`, read with `izrelay::config::parse`): `Mapping::record` for
//! each row and `pull::dataverse::pull::prepare_page` for the page, as a pull does.
//!
//! Checks, beyond "no panic":
//! - every row is accounted for: each becomes one prepared entry (a record, or an `invalid`
//!   entry for an unmappable row) or, without a primary key, is counted as skipped;
//! - a mapped record carries the row's primary key as `vaccination_id` and reads back the same
//!   through JSON; mapping the same row twice gives the same answer;
//! - text columns arrive unchanged (a string column becomes that string);
//! - every mapping error names the row's id, a field and a column.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use izrelay::Record;
use izrelay::hl7::Profiles;
use izrelay::pull::dataverse::mapping::Mapping;
use izrelay::pull::dataverse::pull::{PullReport, prepare_page};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const EXAMPLE: &str = include_str!("../../packaging/config.example.toml");

fn setup() -> &'static (Mapping, Profiles) {
    static SETUP: OnceLock<(Mapping, Profiles)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let config = izrelay::config::parse(Path::new("config.example.toml"), EXAMPLE)
            .expect("the example configuration parses");
        let dataverse = config.dataverse.expect("the example configures Dataverse");
        (dataverse.vaccination, config.profiles)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(page) = serde_json::from_slice::<Value>(data) else { return };
    // As Client::read_pages: the rows are the `value` array.
    let rows = match page.get("value") {
        Some(Value::Array(rows)) => rows.clone(),
        _ => match page {
            // A bare row or array of rows reaches the mapping too.
            Value::Array(rows) => rows,
            row @ Value::Object(_) => vec![row],
            _ => return,
        },
    };
    let (mapping, profiles) = setup();
    let now = chrono::DateTime::parse_from_rfc3339("2026-11-24T09:00:00-08:00").expect("time");

    let mut without_id = 0;
    let mut mapped = 0;
    for row in &rows {
        let id = row.get(&mapping.id).and_then(Value::as_str);
        let first = mapping.record(row);
        assert_eq!(first, mapping.record(row), "mapping is not deterministic");
        match first {
            Ok(rec) => {
                mapped += 1;
                let id =
                    id.unwrap_or_else(|| panic!("a row without its primary key mapped: {rec:?}"));
                assert_eq!(rec.vaccination_id, id);
                let json = serde_json::to_string(&rec).expect("record serialises");
                let back: Record = serde_json::from_str(&json).expect("record reads back");
                assert_eq!(back, rec);
                text_columns(mapping, row, &rec);
            }
            Err(errors) => {
                assert!(!errors.is_empty());
                if id.is_none() {
                    without_id += 1;
                }
                for e in &errors {
                    assert_eq!(e.vaccination_id, id.unwrap_or("?"));
                    assert!(!e.field.is_empty() && !e.column.is_empty() && !e.reason.is_empty());
                }
            }
        }
    }
    let mut report = PullReport::default();
    let prepared = prepare_page(mapping, rows.clone(), profiles, now, &mut report)
        .expect("preparing needs no database and cannot fail");
    assert_eq!(report.rows, rows.len() as u64);
    assert_eq!(report.without_id, without_id);
    assert_eq!(prepared.len() as u64 + report.without_id, report.rows);
    assert_eq!(report.unmappable, report.rows - mapped - without_id);
});

/// Text fields mapped straight from a string column (no value translation) arrive unchanged.
fn text_columns(mapping: &Mapping, row: &Value, rec: &Record) {
    let column = |path: &str| -> Option<&str> {
        if mapping.values.contains_key(path) {
            return None;
        }
        let col = mapping.fields.get(path)?;
        let mut v = row;
        for part in col.split('/') {
            v = v.get(part)?;
        }
        v.as_str()
    };
    let p = &rec.patient;
    let checks: [(&str, Option<&str>); 6] = [
        ("patient.id", Some(p.id.as_str())),
        ("patient.family_name", Some(p.family_name.as_str())),
        ("patient.given_name", Some(p.given_name.as_str())),
        ("patient.middle_name", p.middle_name.as_deref()),
        ("vaccine.cvx", Some(rec.vaccine.cvx.as_str())),
        ("vaccine.lot", rec.vaccine.lot.as_deref()),
    ];
    for (path, got) in checks {
        if let Some(want) = column(path) {
            assert_eq!(got, Some(want), "{path}");
        }
    }
}
