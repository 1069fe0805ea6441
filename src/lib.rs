//! izrelay: a local-first, store-and-forward gateway from a vaccination clinic to the state
//! Immunization Information Systems (IIS).
//!
//! Data flow (see `design.md`): records come from Microsoft Dataverse or a file (`record`),
//! become CDC-conformant HL7 v2.5.1 VXU messages (`hl7`), wait in a local SQLite outbox, are
//! forwarded to the IIS over the CDC SOAP web service, and their outcomes are written back.
//! This crate is built issue by issue; what exists so far:
//!
//! - [`record`]: the canonical vaccination record (the import format).
//! - [`hl7`]: VXU generation, record and message validation, ACK parsing.
//! - [`store`]: the SQLite outbox, notification log, audit queries, sealed IIS credentials.
//! - [`pull`]: file import (Dataverse comes next).
//! - [`config`]: the TOML configuration and the credential vault (`config::vault`).
//! - [`iis`]: the CDC SOAP envelopes, the HTTPS client, the classification of answers.
//! - [`forwarder`]: the drain loop to each IIS.
//! - `sim`: the simulated IIS and Dataverse (and TLS for them), for the demo and the tests.
//! - `demo`: the embedded default run by `izrelay demo`.
//!
//! `sim` and `demo` exist with the `simulators` feature (on by default, off in the packaged
//! binary).
//! - [`harden`]: core dumps off for every izrelay process (`SECURITY.md`).

#![forbid(unsafe_code)]

pub mod config;
pub mod daemon;
#[cfg(feature = "simulators")]
pub mod demo;
pub mod forwarder;
pub mod harden;
pub mod hl7;
pub mod iis;
pub mod pull;
pub mod record;
#[cfg(feature = "simulators")]
pub mod sim;
pub mod store;
pub mod sync;

pub use record::Record;
