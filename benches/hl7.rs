//! HL7 core benchmarks: record → VXU, VXU and ACK parsing, against hl7-2 and hl7kit.
//!
//! `cargo bench --bench hl7`; figures and how to read them are in BENCHMARKS.md.

use std::hint::black_box;

use chrono::DateTime;
use criterion::{Criterion, Throughput, criterion_main};
use izrelay::hl7::{self, MessageProfile};
use izrelay::record::Record;

const RECORD: &str = include_str!("../tests/fixtures/records/01-adult-covid-pfizer-309-ndc.json");
const ACK: &str = "MSH|^~\\&|WIR|||10318|20190824074646-0500||ACK^V04^ACK|1079866|P|2.5.1|||NE|NE|||||Z23^CDCPHINVS\rMSA|AE|2015-0022QCai75\rERR||MSH^1^6^1|102^Data type error^HL70357|W|4^Invalid value^HL70533|23A~HL70362||Value [23A] is not valid for HL70362\rERR||PID^1^11^1^7|101^Required field missing^HL70357|W||Address Type~1||Address Type is required\r";

fn benches(c: &mut Criterion) {
    let rec: Record = serde_json::from_str(RECORD).expect("fixture record");
    let profile = MessageProfile::default();
    let now = DateTime::parse_from_rfc3339("2026-11-24T09:00:00-08:00").expect("time");
    let vxu = hl7::generate_vxu(&rec, &profile, "BENCH-1", now).expect("valid fixture");

    let mut g = c.benchmark_group("generate");
    g.throughput(Throughput::Elements(1));
    g.bench_function("record_to_vxu (check record + build)", |b| {
        b.iter(|| hl7::generate_vxu(black_box(&rec), &profile, "BENCH-1", now))
    });
    g.finish();

    let mut g = c.benchmark_group(format!("parse_vxu_{}_bytes", vxu.len()));
    g.throughput(Throughput::Bytes(vxu.len() as u64));
    g.bench_function("izrelay", |b| {
        b.iter(|| hl7::Message::parse(black_box(&vxu)).map(|m| m.segment_count()))
    });
    g.bench_function("hl7-2 0.2.7", |b| b.iter(|| hl7_2::parse(black_box(&vxu)).is_ok()));
    g.bench_function("hl7kit 0.2", |b| {
        b.iter(|| hl7kit::Message::parse_bytes(black_box(vxu.as_bytes())).is_ok())
    });
    g.finish();

    let mut g = c.benchmark_group("check");
    g.bench_function("validate_message (Z22 rules)", |b| {
        b.iter(|| hl7::validate_message(black_box(&vxu)).len())
    });
    g.bench_function("parse_ack (WI, 2 ERR)", |b| {
        b.iter(|| hl7::parse_ack(black_box(ACK), Some("2015-0022QCai75")))
    });
    g.finish();
}

#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(hl7_benches, super::benches);
}
criterion_main!(group::hl7_benches);
