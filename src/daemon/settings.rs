//! `[daemon]`: how often `izrelay run` pulls and syncs, how long it may take to stop, when it
//! raises the "messages waiting too long" alert, and where health and metrics are served.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The daemon's settings (all keys optional in the file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonSettings {
    /// Seconds between two Dataverse pulls (the first runs at start).
    pub pull_interval_secs: u64,
    /// Seconds between two sync-back rounds when nothing new was decided.
    pub sync_interval_secs: u64,
    /// Seconds between two checks of queue age and paused IIS (the alerts).
    pub monitor_interval_secs: u64,
    /// Alert when the oldest queued message is older than this many minutes.
    pub alert_queued_minutes: u64,
    /// Seconds SIGTERM may take: in-flight sends finish, then whatever is left is put back to
    /// `queued` and the process exits.
    pub stop_timeout_secs: u64,
    /// Serve `/healthz` and `/metrics` here (a loopback address such as `127.0.0.1:9464`);
    /// off when absent.
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        Self {
            pull_interval_secs: 300,
            sync_interval_secs: 60,
            monitor_interval_secs: 30,
            alert_queued_minutes: 240,
            stop_timeout_secs: 20,
            metrics_listen: None,
        }
    }
}

impl DaemonSettings {
    /// Every problem, each naming its key under `key`.
    pub(crate) fn problems(&self, key: &str) -> Vec<String> {
        let mut p = Vec::new();
        for (name, v) in [
            ("pull_interval_secs", self.pull_interval_secs),
            ("sync_interval_secs", self.sync_interval_secs),
            ("monitor_interval_secs", self.monitor_interval_secs),
            ("alert_queued_minutes", self.alert_queued_minutes),
            ("stop_timeout_secs", self.stop_timeout_secs),
        ] {
            if v == 0 {
                p.push(format!("{key}.{name}: must be at least 1"));
            }
        }
        if let Some(addr) = self.metrics_listen.filter(|a| !a.ip().is_loopback()) {
            p.push(format!(
                "{key}.metrics_listen: {addr} is not a loopback address; health and metrics are \
                 served on 127.0.0.1 or ::1 only (put a reverse proxy in front to expose them)"
            ));
        }
        p
    }
}
