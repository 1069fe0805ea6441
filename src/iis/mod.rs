//! The IIS side of the data flow: a VXU leaves the outbox, travels to the state Immunization
//! Information System over the CDC IIS SOAP web service (WSDL namespace `urn:cdc:iisb:2011`),
//! and an ACK or a SOAP Fault comes back.
//!
//! - [`soap`]: the envelopes both ways, for our client and for the simulated IIS. Pure code: it
//!   builds and reads bytes and never does I/O.
//! - [`client`]: one IIS endpoint over HTTPS (reqwest + rustls): submit and ping.
//! - [`classify`]: every answer mapped to a [`classify::Disposition`] (accept, reject, retry,
//!   pause the IIS, fail the message).

pub mod classify;
pub mod client;
pub mod soap;
