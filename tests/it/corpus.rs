//! Every message of ../shared/corpus, asserted in a table: the validator's error findings on
//! each VXU and the parser's reading of each ACK. The corpus holds non-conformant messages on
//! purpose; these tables are what izrelay says about each, checked by hand against the IG.

use izrelay::hl7::{self, AckCode, Outcome, Severity};

use crate::util::{hl7_files, shared};

/// File prefix → the error findings (`location rule`), sorted and de-duplicated.
const VXU_ERRORS: &[(&str, &[&str])] = &[
    ("01", &["MSH-7 IZ-TS_Z"]),
    ("02", &[]),
    ("03", &[]),
    (
        "04",
        &[
            "MSH-15 IZ-42",
            "MSH-16 IZ-41",
            "MSH-21 IZ-43",
            "MSH-7 IZ-TS_Z",
            "RXA-21",
            "RXA-9.1 IZ-47",
        ],
    ),
    ("05", &[]),
    ("06", &[]),
    ("07", &[]),
    ("08", &[]),
    ("09", &[]),
    ("10", &[]),
    ("11", &[]),
    ("12", &[]),
    ("13", &[]),
    ("14", &["MSH-7 IZ-TS_Z", "RXA OBX-4 1 IZ-24"]),
    (
        "15",
        &[
            "MSH-15 IZ-42",
            "MSH-16 IZ-41",
            "MSH-21 IZ-43",
            "PID-1",
            "PID-6.7",
            "RXA-9.1 IZ-47",
            "RXR-1.1",
        ],
    ),
    ("16", &["MSH-15 IZ-42", "MSH-16 IZ-41", "MSH-21 IZ-43", "PID-1", "RXA[2]-9.1 IZ-47"]),
    (
        "17",
        &[
            "MSH-15 IZ-42",
            "MSH-16 IZ-41",
            "MSH-21 IZ-43",
            "PID-1",
            "PID-6.7",
            "RXA-9.1 IZ-47",
            "RXA[2] IZ-23",
            "RXA[2]-15",
            "RXR-1.1",
        ],
    ),
    (
        "18",
        &[
            "MSH-12 IZ-15",
            "MSH-15 IZ-42",
            "MSH-16 IZ-41",
            "MSH-21 IZ-43",
            "MSH-7 IZ-TS_Z",
            "MSH-9 IZ-17",
            "MSH-9.3",
            "NK1-1 IZ-70",
            "NK1-1",
            "NK1-2.7",
            "NK1-30.7",
            "NK1-4.7",
            "NK1-5.2",
            "OBX-1 NIST-01",
            "OBX-4",
            "ORC-1 IZ-25",
            "ORC-1",
            "PID-1",
            "PID-11.7",
            "PID-3.4",
            "PID-5.2",
            "PID-5.7",
            "RXA-11.4",
            "RXA-2 IZ-29",
            "RXA-2",
            "RXA-6",
            "RXA-9.1 IZ-47",
            "RXR-1.1",
        ],
    ),
    ("19", &[]),
    ("20", &[]),
    ("21", &[]),
    ("22", &["RXA-5.1"]),
    (
        "23",
        &[
            "IN1-15",
            "IN1-2",
            "IN1-3.4",
            "IN1-3.5",
            "MSH-15 IZ-42",
            "MSH-16 IZ-41",
            "MSH-21 IZ-43",
            "MSH-7 IZ-TS_Z",
            "NK1-22.1",
            "OBX[5]-3.3",
            "PD1-11.3",
            "PID-22.3",
            "PID-6.7",
            "RXA-17.1",
            "RXA-21",
            "RXA-7.1",
            "RXA-7.3",
            "RXR-1.1",
        ],
    ),
];

/// File prefix → MSA-1, MSA-2, outcome, number of errors, error locations.
#[allow(clippy::type_complexity)]
const ACKS: &[(&str, AckCode, Option<&str>, Outcome, usize, &[&str])] = &[
    ("01", AckCode::AA, Some("9299381"), Outcome::Accepted, 0, &[]),
    ("02", AckCode::AR, Some("9299381"), Outcome::Rejected, 1, &["MSH-12"]),
    ("03", AckCode::AE, Some("9299381"), Outcome::Rejected, 2, &["PID-5", "PID"]),
    ("04", AckCode::AE, Some("9299381"), Outcome::Rejected, 3, &["RXA-5", "RXA-5", "RXA"]),
    ("05", AckCode::AE, Some("9299381"), Outcome::Rejected, 1, &["NK1-3"]),
    ("06", AckCode::AA, Some("9299381"), Outcome::AcceptedWithWarnings, 1, &["PID-2"]),
    ("07", AckCode::AE, Some("9299381"), Outcome::Rejected, 2, &["PID-7", "PID"]),
    ("08", AckCode::AA, Some("9299381"), Outcome::Accepted, 0, &[]),
    ("09", AckCode::AA, Some("NIST-IZ-001.00"), Outcome::Accepted, 0, &[]),
    ("10", AckCode::AE, Some("NIST-IZ-001.0B0"), Outcome::Rejected, 2, &["MSH-5", "RXA-4"]),
    ("11", AckCode::AE, Some("NIST-IZ-016.00"), Outcome::Rejected, 1, &["RXA-5"]),
    ("12", AckCode::AA, None, Outcome::Accepted, 0, &[]),
    ("13", AckCode::AA, Some("NIST-IZ-001.00"), Outcome::Accepted, 1, &[]),
    ("14", AckCode::AA, Some("NIST-IZ-001.00"), Outcome::Accepted, 0, &[]),
    (
        "15",
        AckCode::AA,
        Some("NIST-IZ-016.00"),
        Outcome::AcceptedWithWarnings,
        4,
        &["OBX-3", "RXA-5.1", "MSH", "MSH-1"],
    ),
    (
        "16",
        AckCode::AE,
        Some("47NR-A.01.01.1th"),
        Outcome::AcceptedWithWarnings,
        3,
        &["MSH-15", "MSH-16", "ORC-12.13"],
    ),
    (
        "17",
        AckCode::AA,
        Some("4904500-I.001.493"),
        Outcome::AcceptedWithWarnings,
        5,
        &["ORC-2", "RXA-11.4"],
    ),
    ("18", AckCode::AR, Some("1tMo-SA.13.2.1"), Outcome::Rejected, 1, &["PID-7"]),
    (
        "19",
        AckCode::AE,
        Some("2015-0022QCai75"),
        Outcome::AcceptedWithWarnings,
        3,
        &["MSH-6", "PID-11.7", "RXA-9"],
    ),
    ("20", AckCode::AE, None, Outcome::Retryable, 1, &[]),
    ("21", AckCode::AE, Some("NIST-IZ-AD-7.1_Send_V04_Z22"), Outcome::Rejected, 1, &["RXA-5.1"]),
    (
        "22",
        AckCode::AE,
        Some("NIST-IZ-AD-7.1_Send_V04_Z22"),
        Outcome::Rejected,
        2,
        &["RXA-4.1", "RXA[2]-5.1"],
    ),
    ("23", AckCode::AR, Some("IIP-Transmit-2"), Outcome::Retryable, 1, &["RXA-5(4)"]),
    ("24", AckCode::AA, Some("IIP-Transmit-6"), Outcome::Accepted, 0, &[]),
];

#[test]
fn corpus_vxu_findings() {
    let Some(shared) = shared("the corpus VXU table") else { return };
    let files = hl7_files(&shared.join("corpus/vxu"));
    assert_eq!(
        files.len(),
        VXU_ERRORS.len(),
        "a corpus VXU was added or removed: update the table"
    );
    for (file, (prefix, expected)) in files.iter().zip(VXU_ERRORS) {
        let name = file.file_name().expect("name").to_string_lossy();
        assert!(name.starts_with(prefix), "{name} is not row {prefix}");
        let text = std::fs::read_to_string(file).expect("read");
        let msg = hl7::Message::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(msg.segment("RXA").is_some(), "{name}: no RXA");
        let mut got: Vec<String> = hl7::validate_message(&text)
            .into_iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| match f.rule {
                Some(r) => format!("{} {r}", f.location),
                None => f.location,
            })
            .collect();
        got.sort();
        got.dedup();
        let mut want = expected.to_vec();
        want.sort_unstable();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn corpus_acks_parse_with_the_expected_outcome() {
    let Some(shared) = shared("the corpus ACK table") else { return };
    let files = hl7_files(&shared.join("corpus/ack"));
    assert_eq!(files.len(), ACKS.len(), "a corpus ACK was added or removed: update the table");
    for (file, (prefix, code, control_id, outcome, n_errors, locations)) in files.iter().zip(ACKS) {
        let name = file.file_name().expect("name").to_string_lossy();
        assert!(name.starts_with(prefix), "{name} is not row {prefix}");
        let text = std::fs::read_to_string(file).expect("read");
        let ack = hl7::parse_ack(&text, *control_id).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(ack.code, *code, "{name}");
        assert_eq!(ack.control_id.as_deref(), *control_id, "{name}");
        assert_eq!(ack.outcome, *outcome, "{name}");
        assert_eq!(ack.errors.len(), *n_errors, "{name}");
        let got: Vec<&str> = ack.errors.iter().filter_map(|e| e.location.as_deref()).collect();
        assert_eq!(got, *locations, "{name}");
        if control_id.is_some() {
            assert_eq!(ack.control_id_matches, Some(true), "{name}");
        }
        assert_eq!(
            hl7::parse_ack(&text, Some("NOT-SENT")).map(|a| a.control_id_matches),
            Ok(Some(false))
        );
    }
}

#[test]
fn corpus_ack_details_are_read_from_where_iis_put_them() {
    let Some(shared) = shared("ACK detail checks") else { return };
    let read = |prefix: &str| {
        let file = hl7_files(&shared.join("corpus/ack"))
            .into_iter()
            .find(|f| f.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
            .expect("file");
        hl7::parse_ack(&std::fs::read_to_string(file).expect("read"), None).expect("ack")
    };
    // IG example: text one field too far (ERR-9).
    assert_eq!(read("03").errors[0].message.as_deref(), Some("Patient name is required"));
    // Real ACK: text in ERR-8, local code in ERR-5's second triplet.
    let il = read("18");
    assert_eq!(il.errors[0].application_code.as_deref(), Some("2"));
    assert_eq!(
        il.errors[0].message.as_deref(),
        Some("Message had been Ignored. Invalid Birth Date")
    );
    // MSA-3 text kept.
    assert!(read("09").texts[0].starts_with("Patient D26376273"));
    // Legacy ERR-1: two errors from two repetitions.
    let al = read("10");
    assert_eq!(al.errors[1].code_text.as_deref(), Some("Required field missing"));
    // Repeated MSA: four texts.
    assert_eq!(read("15").texts.len(), 4);
    // DQA local application codes in ERR-5.4.
    assert_eq!(read("17").errors[0].application_code.as_deref(), Some("DQA0051"));
}
