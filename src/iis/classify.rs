//! Every answer an IIS can give, mapped to what the forwarder does next ([`Disposition`]).
//!
//! | answer | disposition |
//! |---|---|
//! | ACK AA, or AE whose errors are all W/I | accepted |
//! | ACK AE with an E error, or AR | rejected (not retried; fix the data and regenerate) |
//! | ACK AR/AE with code 207, an ACK whose MSA-2 is not our MSH-10, an unreadable ACK | retry |
//! | transport error, timeout, TLS failure, HTTP 408 / 429 / 5xx, HTML or garbage | retry (counts toward the circuit) |
//! | SOAP `UnknownFault`, an unrecognised fault | retry |
//! | SOAP `SecurityFault`, `UnsupportedOperationFault`, HTTP 3xx / 401 / 403 / 404 / 405 | pause the IIS (fix configuration; no account lock-out) |
//! | SOAP `MessageTooLargeFault`, HTTP 413, other HTTP 4xx | failed (not retried) |
//!
//! A SOAP answer is read whatever the HTTP status (SOAP 1.2 faults arrive with 400 or 500).

use super::client::{Reply, TransportKind};
use super::soap::{self, FaultKind, Response};
use crate::hl7::{Ack, Outcome, parse_ack};

/// What to do with a message after one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// The IIS stored it.
    Accepted {
        /// The parsed ACK.
        ack: Box<Ack>,
        /// The raw ACK.
        raw: String,
    },
    /// The IIS refused it; do not retry.
    Rejected {
        /// The parsed ACK.
        ack: Box<Ack>,
        /// The raw ACK.
        raw: String,
    },
    /// Send again later.
    Retry {
        /// Why.
        reason: String,
        /// The server's `Retry-After`, ms.
        retry_after_ms: Option<u64>,
        /// A transport-level failure (counts toward opening the circuit).
        transport: bool,
    },
    /// Stop sending to this IIS until its configuration or credentials change.
    Pause {
        /// Why.
        reason: String,
    },
    /// Give up on this message.
    Fail {
        /// Why.
        reason: String,
    },
}

impl Disposition {
    /// A short word for the attempt row and the logs.
    pub fn word(&self) -> &'static str {
        match self {
            Self::Accepted { ack, .. } if ack.outcome == Outcome::AcceptedWithWarnings => {
                "accepted with warnings"
            }
            Self::Accepted { .. } => "accepted",
            Self::Rejected { .. } => "rejected",
            Self::Retry { .. } => "retry",
            Self::Pause { .. } => "paused",
            Self::Fail { .. } => "failed",
        }
    }
}

/// How many bytes of an unexpected body go into an error text.
const SNIPPET: usize = 120;

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(SNIPPET)]);
    let flat: String =
        text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>();
    let flat = flat.split_whitespace().collect::<Vec<_>>().join(" ");
    if body.len() > SNIPPET { format!("{flat}…") } else { flat }
}

/// Classifies the reply to a `submitSingleMessage` of the message with MSH-10 `sent_control_id`.
pub fn classify(reply: &Reply, sent_control_id: &str) -> Disposition {
    let retry_after_ms = reply.retry_after_ms;
    let body = match &reply.body {
        Ok(b) => b,
        Err(e) => {
            return Disposition::Retry {
                reason: format!("{}: {}", e.kind.word(), e.message),
                retry_after_ms,
                transport: e.kind != TransportKind::TooLarge,
            };
        }
    };
    let status = reply.http_status.unwrap_or(0);
    match soap::parse_response(body) {
        Ok(Response::Submit(text)) => from_ack(text, sent_control_id),
        Ok(Response::Connectivity(_)) => Disposition::Retry {
            reason: "the IIS answered a connectivityTest to a submitSingleMessage".into(),
            retry_after_ms,
            transport: false,
        },
        Ok(Response::Fault(f)) => {
            let text = format!(
                "{} fault{}: {}{}",
                fault_name(f.kind),
                f.code.map(|c| format!(" {c}")).unwrap_or_default(),
                if f.detail.trim().is_empty() { f.soap_reason.trim() } else { f.detail.trim() },
                if f.reason.trim().is_empty() {
                    String::new()
                } else {
                    format!(" ({})", f.reason.trim())
                },
            );
            match f.kind {
                FaultKind::Security | FaultKind::UnsupportedOperation => {
                    Disposition::Pause { reason: text }
                }
                FaultKind::MessageTooLarge => Disposition::Fail { reason: text },
                FaultKind::Unknown | FaultKind::Other => {
                    Disposition::Retry { reason: text, retry_after_ms, transport: false }
                }
            }
        }
        Err(_) if body.iter().all(u8::is_ascii_whitespace) => {
            by_status(status, "empty answer", retry_after_ms)
        }
        Err(_) if (200..300).contains(&status) => {
            by_status(status, &format!("not a SOAP answer: {}", snippet(body)), retry_after_ms)
        }
        Err(_) => by_status(status, &snippet(body), retry_after_ms),
    }
}

fn fault_name(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::Security => "SecurityFault",
        FaultKind::MessageTooLarge => "MessageTooLargeFault",
        FaultKind::Unknown => "UnknownFault",
        FaultKind::UnsupportedOperation => "UnsupportedOperationFault",
        FaultKind::Other => "SOAP",
    }
}

fn from_ack(text: String, sent: &str) -> Disposition {
    let ack = match parse_ack(&text, Some(sent)) {
        Ok(a) => a,
        Err(e) => {
            return Disposition::Retry {
                reason: format!("unreadable ACK ({e}): {}", snippet(text.as_bytes())),
                retry_after_ms: None,
                transport: false,
            };
        }
    };
    if ack.control_id_matches == Some(false) {
        return Disposition::Retry {
            reason: format!(
                "the ACK acknowledges {:?}, not the message sent ({sent})",
                ack.control_id.as_deref().unwrap_or("")
            ),
            retry_after_ms: None,
            transport: false,
        };
    }
    match ack.outcome {
        Outcome::Accepted | Outcome::AcceptedWithWarnings => {
            Disposition::Accepted { ack: Box::new(ack), raw: text }
        }
        Outcome::Rejected => Disposition::Rejected { ack: Box::new(ack), raw: text },
        Outcome::Retryable => Disposition::Retry {
            reason: format!("the IIS reported an internal error ({:?})", ack.code),
            retry_after_ms: None,
            transport: false,
        },
    }
}

fn by_status(status: u16, what: &str, retry_after_ms: Option<u64>) -> Disposition {
    let reason = format!("HTTP {status}: {what}");
    match status {
        200..=299 => Disposition::Retry { reason, retry_after_ms, transport: true },
        408 | 429 | 500..=599 => Disposition::Retry { reason, retry_after_ms, transport: true },
        300..=399 | 401 | 403 | 404 | 405 => Disposition::Pause {
            reason: format!("{reason} (check the endpoint URL and credentials)"),
        },
        _ => Disposition::Fail { reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iis::client::{TransportError, TransportKind};

    const MSH: &str = "MSH|^~\\&|IIS|IIS|||20260101||ACK^V04^ACK|A1|P|2.5.1\r";

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            http_status: Some(status),
            retry_after_ms: None,
            body: Ok(body.as_bytes().to_vec()),
            duration_ms: 1,
        }
    }

    fn ack(rest: &str) -> Reply {
        reply(200, &soap::submit_response(&format!("{MSH}{rest}")))
    }

    #[test]
    fn acks() {
        assert_eq!(classify(&ack("MSA|AA|X1"), "X1").word(), "accepted");
        assert_eq!(
            classify(&ack("MSA|AE|X1\rERR||PID^1^11|101^^HL70357|W"), "X1").word(),
            "accepted with warnings"
        );
        assert_eq!(
            classify(&ack("MSA|AE|X1\rERR||RXA^1^5|103^^HL70357|E"), "X1").word(),
            "rejected"
        );
        assert_eq!(classify(&ack("MSA|AR|X1"), "X1").word(), "rejected");
        let d = classify(&ack("MSA|AR|X1\rERR|||207^^HL70357|E"), "X1");
        assert!(matches!(d, Disposition::Retry { transport: false, .. }), "{d:?}");
        let d = classify(&ack("MSA|AA|SOMEONE-ELSE"), "X1");
        assert!(
            matches!(&d, Disposition::Retry { reason, .. } if reason.contains("SOMEONE-ELSE")),
            "{d:?}"
        );
        assert!(matches!(
            classify(&reply(200, &soap::submit_response("garbage")), "X1"),
            Disposition::Retry { .. }
        ));
    }

    #[test]
    fn faults() {
        let f = |k| reply(500, &soap::fault_response(k, 1, "r", "detail text"));
        assert!(matches!(classify(&f(FaultKind::Security), "X"), Disposition::Pause { .. }));
        assert!(matches!(
            classify(&f(FaultKind::UnsupportedOperation), "X"),
            Disposition::Pause { .. }
        ));
        assert!(matches!(classify(&f(FaultKind::MessageTooLarge), "X"), Disposition::Fail { .. }));
        let d = classify(&f(FaultKind::Unknown), "X");
        assert!(
            matches!(&d, Disposition::Retry { transport: false, reason, .. } if reason.contains("detail text")),
            "{d:?}"
        );
    }

    #[test]
    fn http_and_transport() {
        for s in [408, 429, 500, 502, 503] {
            assert!(
                matches!(
                    classify(&reply(s, "busy"), "X"),
                    Disposition::Retry { transport: true, .. }
                ),
                "{s}"
            );
        }
        for s in [301, 401, 403, 404] {
            assert!(matches!(classify(&reply(s, "no"), "X"), Disposition::Pause { .. }), "{s}");
        }
        for s in [400, 413, 422] {
            assert!(matches!(classify(&reply(s, "no"), "X"), Disposition::Fail { .. }), "{s}");
        }
        let html = classify(&reply(200, "<html><body>502 Bad Gateway</body></html>"), "X");
        assert!(
            matches!(&html, Disposition::Retry { transport: true, reason, .. } if reason.contains("Bad Gateway")),
            "{html:?}"
        );
        let mut r = reply(503, "");
        r.retry_after_ms = Some(5_000);
        assert!(matches!(
            classify(&r, "X"),
            Disposition::Retry { retry_after_ms: Some(5_000), .. }
        ));
        let timeout = Reply {
            http_status: None,
            retry_after_ms: None,
            body: Err(TransportError { kind: TransportKind::Timeout, message: "timed out".into() }),
            duration_ms: 60_000,
        };
        assert!(matches!(classify(&timeout, "X"), Disposition::Retry { transport: true, .. }));
    }
}
