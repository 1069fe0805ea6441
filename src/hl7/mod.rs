//! HL7 v2.5.1 for immunization reporting: the CDC VXU / ACK core.
//!
//! - [`generate_vxu`]: canonical record → VXU^V04^VXU_V04 (CDC IG 1.5 + 2018 addendum, Z22),
//!   after [`validate_record`] found nothing wrong with the record.
//! - [`validate_message`]: any VXU (ours or another system's) → findings with HL7 locations.
//! - [`parse_ack`]: an IIS's ACK, however far it drifts from Z23 → code, errors, outcome.
//! - [`Message`]: the zero-copy parser under all of them; [`escape`] and [`unescape`] for data.
//!
//! Data flows one way: `record` → `validate` → `vxu` (via `encode`) → wire; wire → `parse` →
//! `ack`. Nothing here does I/O.

mod ack;
mod codes;
mod conformance;
mod encode;
mod escape;
mod message_profile;
mod nist;
mod parse;
mod validate;
mod vxu;

pub use ack::{Ack, AckCode, AckError, AckParseError, ErrorSeverity, Outcome, parse_ack};
pub use conformance::{Finding, Severity, validate_message};
pub use encode::Writer;
pub use escape::{Delimiters, escape, escape_into, unescape};
pub use message_profile::{
    Hd, LocalCode, MessageProfile, NdcPlacement, ProcessingId, Profiles, VisMethod,
};
pub use parse::{Field, Message, ParseError, Rep, Segment};
pub use validate::Violation;
pub use vxu::{Invalid, generate_vxu, new_control_id};

use crate::record::Record;

/// Checks a record without building a message: every violation, or none.
pub fn validate_record(
    rec: &Record,
    profile: &MessageProfile,
    today: chrono::NaiveDate,
) -> Vec<Violation> {
    validate::resolve(rec, profile, today).err().unwrap_or_default()
}

/// The name of a field in the Z22 (VXU) or Z23 (ACK) profile, e.g. `RXA`, 5 → `Administered Code`.
pub fn field_name(segment: &str, field: usize, ack: bool) -> Option<&'static str> {
    let profile = if ack { nist::Profile::Z23 } else { nist::Profile::Z22 };
    nist::field_name(profile, segment, field)
}

/// The meaning of a code in an HL7 / CDC table used in ACKs: `0357`, `0516`, `0533`, `0008`.
pub fn table_meaning(table: &str, code: &str) -> Option<&'static str> {
    let set = match table {
        "0357" => "HL70357_IZ",
        "0516" => "HL70516_IZ",
        "0533" => "HL70533_IZ",
        "0008" => "HL70008_IZ",
        _ => return None,
    };
    nist::display(set, code)
}
