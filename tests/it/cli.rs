//! The `izrelay` binary as a user runs it: exit codes, outputs, bad input.

use std::collections::BTreeMap;
use std::process::Output;

use izrelay::demo;

use crate::util::{files_under, izrelay, izrelay_new_user, root};

fn run(args: &[&str]) -> Output {
    izrelay().args(args).output().expect("izrelay runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// What `izrelay demo` must report, computed from the seeded records.
struct DemoExpected {
    records: usize,
    invalid: usize,
    /// Per provider, the audit line: `provider PRV-001: invalid 1, accepted 16`.
    provider_lines: Vec<String>,
}

fn demo_expected() -> DemoExpected {
    let text = std::fs::read_to_string(root().join("src/demo/samples.json")).expect("samples");
    let records: Vec<serde_json::Value> = serde_json::from_str(&text).expect("samples are JSON");
    let mut per_provider: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for r in &records {
        let provider = r["provider_id"].as_str().unwrap_or("-").to_owned();
        let invalid = r["vaccination_id"] == demo::INVALID_SAMPLE;
        let (total, bad) = per_provider.entry(provider).or_default();
        *total += 1;
        *bad += usize::from(invalid);
    }
    // The order and wording of `izrelay status`: invalid before accepted, zero counts left out.
    let provider_lines = per_provider
        .iter()
        .map(|(p, &(total, bad))| {
            let mut counts = Vec::new();
            if bad > 0 {
                counts.push(format!("invalid {bad}"));
            }
            if total > bad {
                counts.push(format!("accepted {}", total - bad));
            }
            format!("provider {p}: {}", counts.join(", "))
        })
        .collect();
    let invalid = per_provider.values().map(|&(_, bad)| bad).sum();
    DemoExpected { records: records.len(), invalid, provider_lines }
}

/// The lines of `out` from the one starting (after indentation) with `start`, up to the next
/// line at that indentation or less.
fn block<'a>(out: &'a str, start: &str) -> Vec<&'a str> {
    let lines: Vec<&str> = out.lines().collect();
    let Some(i) = lines.iter().position(|l| l.trim_start().starts_with(start)) else {
        return Vec::new();
    };
    let indent = |l: &str| l.len() - l.trim_start().len();
    let head = indent(lines[i]);
    let rest = lines[i + 1..].iter().take_while(|l| !l.is_empty() && indent(l) > head);
    std::iter::once(lines[i]).chain(rest.copied()).collect()
}

#[test]
fn demo_runs_for_a_new_user_and_prints_the_audit() {
    let dir = tempfile::tempdir().expect("tmp");
    let o = izrelay_new_user(dir.path()).arg("demo").output().expect("izrelay runs");
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    let want = demo_expected();
    assert_eq!(want.invalid, 1, "the samples have exactly one invalid record");
    let queued = want.records - want.invalid;

    // The cycle: pull, validate, forward through the outage, sync.
    let pulled =
        format!("{} rows (full pull): {queued} queued, {} invalid", want.records, want.invalid);
    assert!(out.contains(&pulled), "{out}");
    assert!(out.contains(&format!("{queued} messages: ")), "{out}");
    assert!(out.contains("0 with errors"), "{out}");
    assert!(out.contains("during the outage (HTTP 503"), "{out}");
    assert!(out.contains(" 2 or more messages, 0 sent out of order"), "{out}");
    assert!(out.contains(&format!("{queued} outcome(s) written to izr_notificationlogs")), "{out}");
    let totals = format!("records {}  queued {queued}  accepted {queued}  ", want.records);
    assert!(out.contains(&totals), "{out}");
    let verdict = format!("synced {queued}  invalid {}  result: as expected", want.invalid);
    assert!(out.contains(&verdict), "{out}");
    // Two VXUs in full, the rest summarised.
    assert_eq!(out.matches("MSH|^~\\&|").count(), demo::PRINTED_SAMPLES.len(), "{out}");

    // The audit: counts by state per provider, one line each.
    let audit = &out[out.find("== 5. audit").expect("an audit section")..];
    for line in &want.provider_lines {
        assert!(audit.contains(&format!("\n   {line}\n")), "{line:?} missing:\n{audit}");
    }
    assert_eq!(audit.matches("\n   provider ").count(), want.provider_lines.len(), "{audit}");

    // One record's history: it met the outage, then the IIS accepted it.
    let history = block(audit, &format!("history of {}: 1 message(s)", demo::SHOWN_SAMPLE));
    assert!(!history.is_empty(), "no history of the shown record:\n{audit}");
    let text = history.join("\n");
    assert!(text.contains("  accepted  MSH-10 "), "{text}");
    assert!(text.contains("attempt ") && text.contains("retry  HTTP 503"), "{text}");
    let last_attempt = history.iter().rev().find(|l| l.trim_start().starts_with("attempt "));
    assert!(last_attempt.is_some_and(|l| l.contains("  accepted")), "{text}");
    // The simulated IIS validates like a real one. A Dataverse GUID in ORC-3 is longer than
    // the 22 characters HL7 2.5.1 allows there, so an administered dose is answered AE with
    // that warning (and nothing worse); without the warning the answer is AA.
    let ack = block(&text, "ACK A");
    match ack.first().map(|l| l.trim()) {
        Some("ACK AA: accepted") => assert_eq!(ack.len(), 1, "{text}"),
        Some("ACK AE: accepted with warnings") => {
            assert!(ack.len() > 1, "{text}");
            assert!(ack[1..].iter().all(|l| l.trim_start().starts_with("warning at ")), "{text}");
        }
        _ => panic!("the shown record's ACK is not an acceptance:\n{text}"),
    }

    // The invalid record's reasons, each naming the field and the rule.
    let reasons = block(audit, &format!("record {} is invalid:", demo::INVALID_SAMPLE));
    assert!(reasons.len() > 5, "{audit}");
    for r in &reasons[1..] {
        let (field, rule) = r.trim_start().trim_start_matches("- ").split_once(": ").expect(r);
        assert!(!field.is_empty() && !field.contains(' ') && !rule.is_empty(), "{r}");
    }
    assert!(audit.contains("- vaccine.cvx: CVX 999 is not an administrable vaccine code"));
    assert!(audit.contains("- patient.birth_date: 2030-01-01 is in the future"), "{audit}");

    // Nothing left behind: no config or data in HOME, nothing in the working directory, the
    // temporary data directory removed.
    assert_eq!(files_under(&dir.path().join("home")), Vec::<std::path::PathBuf>::new());
    for d in ["work", "tmp"] {
        let left: Vec<_> = std::fs::read_dir(dir.path().join(d)).expect(d).collect();
        assert!(left.is_empty(), "{d}: {left:?}");
    }
}

#[test]
fn demo_with_data_dir_leaves_the_database_and_status_agrees() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let data_arg = data.to_str().expect("utf-8 path");
    let o = izrelay_new_user(dir.path())
        .args(["--data-dir", data_arg, "demo", "--brief"])
        .output()
        .expect("izrelay runs");
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(out.contains("result: as expected"), "{out}");
    assert!(!out.contains("MSH|"), "--brief prints no message: {out}");
    assert!(data.join("izrelay.db").is_file(), "{:?}", files_under(&data));

    let o = izrelay_new_user(dir.path())
        .args(["--data-dir", data_arg, "status"])
        .output()
        .expect("izrelay runs");
    let status = stdout(&o);
    assert!(o.status.success(), "{status}{}", stderr(&o));
    let want = demo_expected();
    assert_eq!(status.lines().count(), want.provider_lines.len(), "{status}");
    for line in &want.provider_lines {
        // The demo printed it, and `status` says the same (then oldest queued, last accepted).
        assert!(out.contains(&format!("\n   {line}\n")), "{line:?} missing:\n{out}");
        assert!(status.contains(&format!("{line}; oldest queued -; last accepted ")), "{status}");
    }

    let o = izrelay_new_user(dir.path())
        .args(["--data-dir", data_arg, "history", demo::SHOWN_SAMPLE])
        .output()
        .expect("izrelay runs");
    let history = stdout(&o);
    assert!(o.status.success(), "{history}{}", stderr(&o));
    assert!(history.contains("accepted"), "{history}");
    assert!(history.contains("retry  HTTP 503"), "{history}");
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
