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
pub(crate) mod multipart;
pub mod probe;
pub mod pull;

pub use client::{Client, Error, Settings};

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[dataverse]` in the config file: the environment and the mapping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataverseConfig {
    /// The environment URL, e.g. `https://contoso.crm.dynamics.com`; empty = Dataverse not used.
    #[serde(default)]
    pub url: String,
    /// Entra ID tenant id.
    #[serde(default)]
    pub tenant_id: String,
    /// The app registration's application (client) id. Its secret is sealed in the vault
    /// (`izrelay credentials dataverse-secret`).
    #[serde(default)]
    pub client_id: String,
    /// The token endpoint, when not Entra ID's public one.
    #[serde(default)]
    pub token_url: Option<String>,
    /// Rows per page (at most 5,000).
    #[serde(default = "page_size")]
    pub page_size: usize,
    /// Extra trust anchors (PEM).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The vaccination table and its mapping to the canonical record.
    pub vaccination: mapping::Mapping,
    /// Where outcomes are written back; none = no write-back.
    #[serde(default)]
    pub notification_log: Option<LogTable>,
    /// Outcomes per `$batch` request when the write-back backlog is large (0 = one request per
    /// operation). Microsoft advises small batches; each outcome is two operations.
    #[serde(default = "batch_size")]
    pub batch_size: usize,
}

fn batch_size() -> usize {
    50
}

/// The notification log table outcomes are written to (one record per local notification log
/// row, keyed by a GUID derived from this installation and the row's id, so a retry updates
/// the same record) and the vaccination's HL7 status column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogTable {
    /// Entity set (URL segment).
    pub entity_set: String,
    /// The lookup (navigation property) to the vaccination, bound with `@odata.bind`.
    pub vaccination: String,
    /// Column: MSH-10.
    pub control_id: String,
    /// Column: the state (`accepted`, `rejected`, `failed` …).
    pub status: String,
    /// Column: the VXU.
    pub message: String,
    /// Column: MSA-1.
    pub ack_code: String,
    /// Column: the raw ACK.
    pub ack: String,
    /// Column: the errors (JSON).
    pub errors: String,
    /// Column: send attempts.
    pub attempts: String,
    /// Column: when the message was generated.
    pub generated_on: String,
    /// Column: when the IIS answered.
    pub responded_on: String,
    /// Column on the vaccination row that receives the state; none = not written.
    #[serde(default)]
    pub vaccination_status: Option<String>,
}

fn page_size() -> usize {
    1000
}

impl DataverseConfig {
    /// True when an environment is configured.
    pub fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }

    /// The client settings.
    pub fn settings(&self) -> Settings {
        Settings {
            url: self.url.clone(),
            tenant_id: self.tenant_id.clone(),
            client_id: self.client_id.clone(),
            token_url: self.token_url.clone(),
            page_size: self.page_size,
            ca_file: self.ca_file.clone(),
            ..Settings::default()
        }
    }

    /// Every problem, each prefixed by `key`.
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut p = self.vaccination.problems(&format!("{key}.vaccination"));
        if self.batch_size > 500 {
            p.push(format!(
                "{key}.batch_size: {} is over 500 (a $batch holds at most 1,000 operations)",
                self.batch_size
            ));
        }
        if !(1..=5000).contains(&self.page_size) {
            p.push(format!("{key}.page_size: {} is not between 1 and 5000", self.page_size));
        }
        if self.enabled() {
            match reqwest::Url::parse(&self.url) {
                Ok(u) if u.scheme() == "https" || crate::iis::client::is_loopback(&u) => {}
                Ok(_) => p.push(format!("{key}.url: must be https")),
                Err(e) => p.push(format!("{key}.url: {e}")),
            }
            for (name, v) in [("tenant_id", &self.tenant_id), ("client_id", &self.client_id)] {
                if v.trim().is_empty() {
                    p.push(format!("{key}.{name}: required when url is set"));
                }
            }
        }
        p
    }
}
