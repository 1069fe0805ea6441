//! The `izrelay` binary as a user runs it: exit codes, outputs, bad input.

use std::process::Output;

use crate::util::{izrelay, root};

fn run(args: &[&str]) -> Output {
    izrelay().args(args).output().expect("izrelay runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn demo_runs_and_reports_the_invalid_record() {
    let o = run(&["demo"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("records 6  queued 5  accepted 5"), "{out}");
    assert!(out.contains("provider PRV-001: accepted 4, invalid 1"), "{out}");
    assert!(out.contains("during the outage (HTTP 503"), "{out}");
    assert!(out.contains("6 rows (full pull): 5 queued, 1 invalid"), "{out}");
    assert!(out.contains("5 outcome(s) written to izr_notificationlogs"), "{out}");
    assert!(out.contains("synced 5"), "{out}");
    assert!(out.contains("retry  HTTP 503"), "the history shows the failed attempt: {out}");
    assert!(out.contains("history of 0f8fad5b-d9cb-469f-a165-70867728950e: 1 message(s)"), "{out}");
    assert!(out.contains("vaccine.cvx: CVX 999 is not an administrable vaccine code"), "{out}");
    assert!(out.contains("result: as expected"), "{out}");
    assert_eq!(out.matches("MSH|^~\\&|").count(), 5, "{out}");
}

#[test]
fn generate_prints_segments_and_raw_uses_cr() {
    let rec = root().join("tests/fixtures/records/01-adult-covid-pfizer-309-ndc.json");
    let rec = rec.to_str().expect("utf-8 path");
    let args =
        ["hl7", "generate", rec, "--control-id", "T1", "--timestamp", "2026-11-24T09:00:00-08:00"];
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<String> = stdout(&o).lines().map(str::to_owned).collect();
    assert!(
        lines[0].starts_with(
            "MSH|^~\\&|IZRELAY|FAC-17|||20261124090000-0800||VXU^V04^VXU_V04|T1|P|2.5.1"
        )
    );
    assert!(lines.iter().any(|l| l.starts_with("RXA|0|1|20261120||309^")));
    let mut raw_args = args.to_vec();
    raw_args.push("--raw");
    let raw = stdout(&run(&raw_args));
    assert!(!raw.contains('\n') && raw.matches('\r').count() == lines.len());
}

#[test]
fn generate_invalid_record_exits_1_with_every_reason() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("bad.json");
    std::fs::write(&path, r#"{"vaccination_id":"r-9","vaccine":{"cvx":"999"}}"#).expect("write");
    let o = run(&["hl7", "generate", path.to_str().expect("path")]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    for want in [
        "patient.id: is required",
        "vaccine.cvx: CVX 999 is not an administrable",
        "administered_at: is required",
    ] {
        assert!(err.contains(want), "{want} missing from {err}");
    }
}

#[test]
fn bad_input_exits_2_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let unknown = dir.path().join("unknown.json");
    std::fs::write(&unknown, r#"{"vaccination_id":"r-1","vacine":{}}"#).expect("write");
    let o = run(&["hl7", "generate", unknown.to_str().expect("path")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown field `vacine`"), "{}", stderr(&o));

    let o = run(&["hl7", "generate", "/nonexistent/record.json"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read /nonexistent/record.json"), "{}", stderr(&o));

    let garbage = dir.path().join("garbage.hl7");
    std::fs::write(&garbage, b"\xff\xfe not hl7 at all").expect("write");
    let o = run(&["hl7", "parse-ack", garbage.to_str().expect("path")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is not an ACK"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"));
}

#[test]
fn validate_exits_1_on_errors_and_0_when_clean_with_any_line_ending() {
    let dir = tempfile::tempdir().expect("tmp");
    let rec = root().join("tests/fixtures/records/02-child-flu-140-ndc-mother-nk1.json");
    let o = run(&["hl7", "generate", rec.to_str().expect("path"), "--raw"]);
    let cr = stdout(&o);
    for (name, text) in [
        ("cr.hl7", cr.clone()),
        ("lf.hl7", cr.replace('\r', "\n")),
        ("crlf.hl7", cr.replace('\r', "\r\n")),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        let o = run(&["hl7", "validate", p.to_str().expect("path")]);
        assert_eq!(o.status.code(), Some(0), "{name}: {}", stdout(&o));
    }
    let broken = dir.path().join("broken.hl7");
    std::fs::write(&broken, cr.replace("|ER|AL|", "|AL|ER|")).expect("write");
    let o = run(&["hl7", "validate", "--json", broken.to_str().expect("path")]);
    assert_eq!(o.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    let rules: Vec<&str> = json[0]["findings"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|f| f["rule"].as_str())
        .collect();
    assert!(rules.contains(&"IZ-41") && rules.contains(&"IZ-42"), "{rules:?}");
}

#[test]
fn parse_ack_prints_json_and_flags_a_foreign_control_id() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("ack.hl7");
    std::fs::write(&p, "MSH|^~\\&|IIS||||20260101120000-0500||ACK^V04^ACK|A9|P|2.5.1\r\nMSA|AE|SENT-1\r\nERR||RXA^1^5^1^1|103^Table value not found^HL70357|E|5^Table value not found^HL70533|||Vaccine code not recognized\r\n").expect("write");
    let o = run(&["hl7", "parse-ack", p.to_str().expect("path"), "--control-id", "SENT-2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ack: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(ack["code"], "AE");
    assert_eq!(ack["outcome"], "rejected");
    assert_eq!(ack["control_id_matches"], false);
    assert_eq!(ack["errors"][0]["location"], "RXA-5.1");
    assert_eq!(ack["errors"][0]["message"], "Vaccine code not recognized");
}
