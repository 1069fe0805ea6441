//! Forward: drain the outbox to each IIS over the CDC SOAP web service.
//!
//! - [`settings`]: timeouts, concurrency, retry and TLS settings per IIS (from the config).
//! - [`backoff`]: the retry schedule, a pure function.
//! - [`mod@drain`]: one worker per IIS endpoint, a store thread that claims rows and records
//!   outcomes in group commits, per-patient first-in first-out, a circuit breaker per IIS.
//!
//! What never happens: a row marked `accepted` without the ACK stored in the same transaction;
//! a dose sent under a second MSH-10 (a resend after a crash carries the row's MSH-10); a later
//! dose of a patient sent while an earlier one is still pending.

pub mod backoff;
pub mod drain;
pub mod settings;

pub use drain::{DrainOptions, DrainReport, Observer, ProviderReport, drain};
pub use settings::{ForwardConfig, ForwardSettings};
