//! How the forwarder talks to one IIS: timeouts, concurrency, retry schedule, circuit breaker and
//! TLS material. Read from `[forward]` in the config file, overridden key by key by
//! `[provider.<id>.forward]`, like the message profile.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Forwarding settings for one IIS (all keys optional in the file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardSettings {
    /// Messages in flight to this IIS at once (1..=64).
    pub concurrency: usize,
    /// TCP + TLS connect timeout, seconds.
    pub connect_timeout_secs: u64,
    /// Whole request timeout (send, IIS processing, answer), seconds.
    pub request_timeout_secs: u64,
    /// First retry delay bound, milliseconds; doubles per attempt (full jitter).
    pub retry_base_ms: u64,
    /// Longest retry delay, milliseconds (also caps a server's `Retry-After`).
    pub retry_max_ms: u64,
    /// Consecutive transport failures that open the circuit (0 = never).
    pub circuit_failures: u32,
    /// While the circuit is open, how often `connectivityTest` probes the IIS, milliseconds.
    pub circuit_probe_ms: u64,
    /// Largest response body accepted, bytes (IZ Gateway caps messages at 4 MiB).
    pub max_response_bytes: usize,
    /// Extra trust anchors (PEM) for this IIS's certificate, added to the system roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS, as IZ Gateway requires.
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub client_key: Option<PathBuf>,
}

impl Default for ForwardSettings {
    fn default() -> Self {
        Self {
            concurrency: 4,
            connect_timeout_secs: 15,
            request_timeout_secs: 60,
            retry_base_ms: 30_000,
            retry_max_ms: 3_600_000,
            circuit_failures: 5,
            circuit_probe_ms: 60_000,
            max_response_bytes: 4 << 20,
            ca_file: None,
            client_cert: None,
            client_key: None,
        }
    }
}

impl ForwardSettings {
    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    /// The request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// Every problem with these values, each prefixed by `key`.
    pub(crate) fn problems(&self, key: &str) -> Vec<String> {
        let mut p = Vec::new();
        if !(1..=64).contains(&self.concurrency) {
            p.push(format!("{key}.concurrency: {} is not between 1 and 64", self.concurrency));
        }
        if self.connect_timeout_secs == 0 || self.request_timeout_secs == 0 {
            p.push(format!("{key}: timeouts must be at least 1 second"));
        }
        if self.retry_base_ms == 0 || self.retry_max_ms < self.retry_base_ms {
            p.push(format!("{key}: retry_base_ms must be > 0 and retry_max_ms ≥ retry_base_ms"));
        }
        if self.circuit_probe_ms == 0 {
            p.push(format!("{key}.circuit_probe_ms: must be > 0"));
        }
        if self.max_response_bytes < 1024 {
            p.push(format!("{key}.max_response_bytes: must be at least 1024"));
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            p.push(format!("{key}: client_cert and client_key go together"));
        }
        for (name, path) in [
            ("ca_file", &self.ca_file),
            ("client_cert", &self.client_cert),
            ("client_key", &self.client_key),
        ] {
            if let Some(path) = path.as_ref().filter(|p| !p.is_file()) {
                p.push(format!("{key}.{name}: {} is not a readable file", path.display()));
            }
        }
        p
    }
}

/// The settings of every IIS: a default and per-provider overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardConfig {
    /// `[forward]`.
    pub default: ForwardSettings,
    /// `[provider.<id>.forward]` merged over `[forward]`.
    pub by_provider: std::collections::BTreeMap<String, ForwardSettings>,
}

impl ForwardConfig {
    /// The settings for `provider`.
    pub fn get(&self, provider: &str) -> &ForwardSettings {
        self.by_provider.get(provider).unwrap_or(&self.default)
    }
}
