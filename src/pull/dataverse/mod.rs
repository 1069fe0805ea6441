//! Microsoft Dataverse (the Vaccination Management solution): the Web API client.
//!
//! - [`client`]: OAuth 2.0 client credentials (token cached, refreshed before it runs out,
//!   re-acquired once on 401), `/api/data/v9.2/` with the OData headers, paging by
//!   `@odata.nextLink` followed unchanged, change tracking by `@odata.deltaLink`, 429/503 with
//!   `Retry-After` honoured for every request of the client, 5xx and transport errors retried
//!   with backoff, Dataverse's error JSON turned into a clear message.
//!
//! The mapping of tables and columns to the canonical record, `pull` and the write-back come
//! with the rest of the Dataverse issue.

pub mod client;
pub mod mapping;

pub use client::{Client, Error, Settings};
