//! The ACK parser: what the IIS said, read the way real IIS write it.
//!
//! Z23 is the rule, but production ACKs drift (corpus/ack/09–20): `ACK`, `ACK^V04` or
//! `ACK^V04^ACK` in MSH-9, SFT segments, MSA-2 missing, text in MSA-3, ERR-8 or (per the IG's
//! own typo) ERR-9, v2.3.1 ERR-1 locations, repeated MSA/ERR pairs. [`parse_ack`] accepts all of
//! them and decides the [`Outcome`] by the community's rule (AIRA's analyzer reads MSA-1 and
//! every ERR-4, never the HTTP status):
//!
//! | MSA-1 | errors | outcome |
//! |---|---|---|
//! | AA / CA | none (or only code 0) | `accepted` |
//! | AA / CA | any | `accepted_with_warnings` |
//! | AE | all severity W or I | `accepted_with_warnings` |
//! | AE / AR / CE | any with HL7 code 207 | `retryable` |
//! | CE | — | `retryable` |
//! | AE | any E (or no severity, or no ERR) | `rejected` |
//! | AR / CR | — | `rejected` |

use serde::Serialize;

use super::parse::{Message, ParseError, Segment};

/// The acknowledgement code of MSA-1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AckCode {
    /// Application accept.
    AA,
    /// Application error.
    AE,
    /// Application reject.
    AR,
    /// Commit accept.
    CA,
    /// Commit error.
    CE,
    /// Commit reject.
    CR,
}

impl AckCode {
    fn parse(code: &str) -> Option<Self> {
        Some(match code {
            "AA" => Self::AA,
            "AE" => Self::AE,
            "AR" => Self::AR,
            "CA" => Self::CA,
            "CE" => Self::CE,
            "CR" => Self::CR,
            _ => return None,
        })
    }

    /// How bad the code is, for choosing among repeated MSA segments.
    fn rank(self) -> u8 {
        match self {
            Self::AA | Self::CA => 0,
            Self::AE | Self::CE => 1,
            Self::AR | Self::CR => 2,
        }
    }
}

/// ERR-4 severity (HL7 table 0516).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorSeverity {
    /// E: the data was rejected.
    Error,
    /// W: accepted with a warning.
    Warning,
    /// I: information.
    Information,
}

/// What the forwarder does with a message after this ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Stored by the IIS.
    Accepted,
    /// Stored, with warnings worth reading.
    AcceptedWithWarnings,
    /// Not stored; sending again will not help until the data is fixed.
    Rejected,
    /// The IIS failed internally (207) or could not commit; send again later.
    Retryable,
}

/// One error reported by the IIS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AckError {
    /// Where, as `RXA-5.1` (`RXA[2]-5` for the second RXA), from ERR-2 or legacy ERR-1.
    pub location: Option<String>,
    /// HL7 error code (table 0357), e.g. `101`.
    pub code: Option<String>,
    /// The code's text as the IIS sent it.
    pub code_text: Option<String>,
    /// ERR-4.
    pub severity: Option<ErrorSeverity>,
    /// Application error code (table 0533, or the IIS's local code).
    pub application_code: Option<String>,
    /// The application code's text.
    pub application_text: Option<String>,
    /// The human-readable message (ERR-8, or ERR-9 where the IG's examples put it).
    pub message: Option<String>,
    /// ERR-7 diagnostic information.
    pub diagnostics: Option<String>,
}

/// A parsed acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ack {
    /// MSA-1 (the worst one when MSA repeats).
    pub code: AckCode,
    /// MSA-2: the control id of the message acknowledged.
    pub control_id: Option<String>,
    /// MSH-10 of the ACK itself.
    pub ack_control_id: Option<String>,
    /// MSH-9 as sent.
    pub message_type: String,
    /// MSA-3 texts (one per MSA).
    pub texts: Vec<String>,
    /// Every ERR segment (and legacy ERR-1 repetition).
    pub errors: Vec<AckError>,
    /// The decision.
    pub outcome: Outcome,
    /// Whether MSA-2 matches the control id we sent; `None` when not checked.
    pub control_id_matches: Option<bool>,
}

/// Why a text is not a usable ACK.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AckParseError {
    /// Not HL7 at all.
    #[error("not an HL7 message: {0}")]
    Parse(#[from] ParseError),
    /// No MSA segment.
    #[error("the ACK has no MSA segment")]
    NoMsa,
    /// MSA-1 is not an acknowledgement code.
    #[error("MSA-1 {0:?} is not an acknowledgement code (AA, AE, AR, CA, CE, CR)")]
    BadCode(String),
}

fn non_empty(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// Formats an error location `SEG`, sequence, field, repetition, component, sub-component.
fn location(seg: &str, seq: &str, field: &str, rep: &str, comp: &str, sub: &str) -> Option<String> {
    let seg = seg.trim();
    if seg.is_empty() {
        return None;
    }
    let mut out = seg.to_owned();
    let seq = seq.trim();
    if !seq.is_empty() && seq != "1" && seq != "0" {
        out.push_str(&format!("[{seq}]"));
    }
    let field = field.trim();
    if !field.is_empty() && field != "0" {
        out.push('-');
        out.push_str(field);
        let rep = rep.trim();
        if !rep.is_empty() && rep != "1" && rep != "0" {
            out.push_str(&format!("({rep})"));
        }
        for part in [comp.trim(), sub.trim()] {
            if part.is_empty() || part == "0" {
                break;
            }
            out.push('.');
            out.push_str(part);
        }
    }
    Some(out)
}

fn severity(code: &str) -> Option<ErrorSeverity> {
    match code.trim() {
        "E" | "e" => Some(ErrorSeverity::Error),
        "W" | "w" => Some(ErrorSeverity::Warning),
        "I" | "i" => Some(ErrorSeverity::Information),
        _ => None,
    }
}

fn read_err(seg: &Segment<'_, '_>, out: &mut Vec<AckError>) {
    let hl7 = seg.field(3).first();
    let app = seg.field(5).first();
    let msg = seg.text(8, 1);
    let message = non_empty(&msg).or_else(|| non_empty(&seg.text(9, 1)));
    let diagnostics = non_empty(
        &seg.field(7).repetitions().map(|r| r.text(1).into_owned()).collect::<Vec<_>>().join(" "),
    );
    let base = AckError {
        location: None,
        code: non_empty(hl7.component(1)),
        code_text: non_empty(&hl7.text(2)),
        severity: severity(seg.code(4, 1)),
        application_code: non_empty(app.component(1)).or_else(|| non_empty(app.component(4))),
        application_text: non_empty(&app.text(2)).or_else(|| non_empty(&app.text(5))),
        message,
        diagnostics,
    };
    let erl = seg.field(2).first();
    if !erl.is_empty() || seg.field(1).is_empty() {
        // `SEG^n` with nothing after it means field n in every ACK seen in the field (the
        // IG's own examples `NK1^3`, `PID^2`; CAIR `RXA^5`; I-CARE `PID^7`), not sequence n.
        let loc = if erl.component_count() == 2 {
            location(erl.component(1), "", erl.component(2), "", "", "")
        } else {
            location(
                erl.component(1),
                erl.component(2),
                erl.component(3),
                erl.component(4),
                erl.component(5),
                erl.component(6),
            )
        };
        out.push(AckError { location: loc, ..base });
        return;
    }
    // v2.3.1 ERR-1 (ELD): SEG^seq^field^code&text&system..., one error per repetition.
    for rep in seg.field(1).repetitions().filter(|r| !r.is_empty()) {
        let loc = location(rep.component(1), rep.component(2), rep.component(3), "", "", "");
        out.push(AckError {
            location: loc,
            code: non_empty(rep.subcomponent(4, 1)).or_else(|| base.code.clone()),
            code_text: non_empty(rep.subcomponent(4, 2)).or_else(|| base.code_text.clone()),
            ..base.clone()
        });
    }
}

fn decide(code: AckCode, errors: &[AckError]) -> Outcome {
    let internal = errors.iter().any(|e| e.code.as_deref() == Some("207"));
    let warnings_only = !errors.is_empty()
        && errors.iter().all(|e| {
            matches!(e.severity, Some(ErrorSeverity::Warning | ErrorSeverity::Information))
        });
    let only_accepted = errors.iter().all(|e| e.code.as_deref() == Some("0"));
    match code {
        AckCode::AA | AckCode::CA if only_accepted => Outcome::Accepted,
        AckCode::AA | AckCode::CA => Outcome::AcceptedWithWarnings,
        AckCode::AE | AckCode::AR | AckCode::CE if internal => Outcome::Retryable,
        AckCode::CE => Outcome::Retryable,
        AckCode::AE if warnings_only => Outcome::AcceptedWithWarnings,
        AckCode::AE | AckCode::AR | AckCode::CR => Outcome::Rejected,
    }
}

/// Parses an ACK; when `sent_control_id` is given, also checks MSA-2 against it.
///
/// # Errors
/// [`AckParseError`] when the text is not HL7, has no MSA, or MSA-1 is not an ack code.
pub fn parse_ack(text: &str, sent_control_id: Option<&str>) -> Result<Ack, AckParseError> {
    let msg = Message::parse(text)?;
    let mut code: Option<AckCode> = None;
    let mut control_id = None;
    let mut texts = Vec::new();
    let mut errors = Vec::new();
    for seg in msg.segments() {
        match seg.id() {
            "MSA" => {
                let raw = seg.code(1, 1);
                let c =
                    AckCode::parse(raw).ok_or_else(|| AckParseError::BadCode(raw.to_owned()))?;
                if code.is_none_or(|old| c.rank() > old.rank()) {
                    code = Some(c);
                }
                if control_id.is_none() {
                    control_id = non_empty(&seg.text(2, 1));
                }
                texts.extend(non_empty(&seg.text(3, 1)));
            }
            "ERR" => read_err(&seg, &mut errors),
            _ => {}
        }
    }
    let code = code.ok_or(AckParseError::NoMsa)?;
    let msh = msg.msh();
    let control_id_matches = sent_control_id.map(|sent| control_id.as_deref() == Some(sent.trim()));
    Ok(Ack {
        code,
        outcome: decide(code, &errors),
        control_id,
        ack_control_id: non_empty(&msh.text(10, 1)),
        message_type: msh.field(9).as_str().to_owned(),
        texts,
        errors,
        control_id_matches,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(location("RXA", "1", "5", "1", "1", ""), Some("RXA-5.1".into()));
        assert_eq!(location("RXA", "2", "5", "", "", ""), Some("RXA[2]-5".into()));
        assert_eq!(location("PID", "1", "3", "2", "1", ""), Some("PID-3(2).1".into()));
        assert_eq!(location("PID", "", "", "", "", ""), Some("PID".into()));
        assert_eq!(location("", "", "", "", "", ""), None);
    }

    #[test]
    fn outcome_rules() -> Result<(), AckParseError> {
        let msh = "MSH|^~\\&|IIS|IIS|||20260101||ACK^V04^ACK|A1|P|2.5.1\r";
        let ack = |rest: &str| parse_ack(&format!("{msh}{rest}"), Some("X1"));
        assert_eq!(ack("MSA|AA|X1")?.outcome, Outcome::Accepted);
        assert_eq!(ack("MSA|AA|X1")?.control_id_matches, Some(true));
        assert_eq!(ack("MSA|AA|X2")?.control_id_matches, Some(false));
        assert_eq!(
            ack("MSA|AE|X1\rERR||PID^1^11|101^^HL70357|W")?.outcome,
            Outcome::AcceptedWithWarnings
        );
        assert_eq!(
            ack("MSA|AE|X1\rERR||PID^1^11|101^^HL70357|W\rERR||RXA^1^5|103^^HL70357|E")?.outcome,
            Outcome::Rejected
        );
        assert_eq!(ack("MSA|AE|X1")?.outcome, Outcome::Rejected);
        assert_eq!(
            ack("MSA|AR|X1\rERR|||207^Application internal error^HL70357|E")?.outcome,
            Outcome::Retryable
        );
        assert_eq!(ack("MSA|AR|X1\rERR||MSH^1^12|203^^HL70357|E")?.outcome, Outcome::Rejected);
        assert_eq!(ack("MSA|XX|X1"), Err(AckParseError::BadCode("XX".into())));
        assert_eq!(ack("ERR|||207"), Err(AckParseError::NoMsa));
        Ok(())
    }
}
