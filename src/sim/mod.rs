//! Simulated remote systems, served on loopback for the demo and the tests: test doubles on
//! the wire, faithful to the published protocols (never in-process fakes that skip HTTP).
//!
//! - [`dataverse`]: the Dataverse Web API (OAuth token endpoint, paging, change tracking,
//!   upsert, `$batch`) with service-protection faults and a write record.
//! - [`iis`]: a CDC-WSDL SOAP 1.2 IIS with fault injection and a delivery record.
//! - [`tls`]: TLS for the simulators (a generated self-signed certificate, or given files).

pub mod dataverse;
pub mod iis;
pub mod tls;
