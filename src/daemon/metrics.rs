//! `/healthz` and `/metrics` (Prometheus text format) on a loopback port.
//!
//! Counters and the latency histogram are fed by the loops as things happen; the queue gauges
//! (depth by state and provider, oldest queued age, the Dataverse sync backlog) are read from
//! the database at scrape time, so they are never stale and cost nothing between scrapes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::store::{Store, now_ms};

/// What a loop is doing, for `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoopState {
    /// Started and not stopped.
    Running,
    /// Not configured (e.g. no Dataverse): healthy.
    Off(String),
    /// Stopped on an error it cannot get past: unhealthy.
    Failed(String),
}

/// The loops' states and the metric values, shared by the loops and the server.
pub struct Telemetry {
    loops: Mutex<BTreeMap<&'static str, LoopState>>,
    registry: Registry,
    sends: Family<SendLabels, Counter>,
    latency: Family<ProviderLabels, Histogram>,
    queue: Family<QueueLabels, Gauge>,
    oldest: Family<ProviderLabels, Gauge<f64, AtomicU64>>,
    paused: Family<ProviderLabels, Gauge>,
    backlog: Gauge,
    pulled: Counter,
    last_pull: Gauge<i64, AtomicI64>,
    pull_failures: Counter,
    synced: Counter,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SendLabels {
    provider: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    provider: String,
    state: String,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("izrelay");
        let sends = Family::<SendLabels, Counter>::default();
        registry.register("sends", "Send attempts to an IIS by outcome", sends.clone());
        let latency = Family::<ProviderLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        registry.register(
            "send_duration_seconds",
            "Time from sending a VXU to having the IIS's answer",
            latency.clone(),
        );
        let queue = Family::<QueueLabels, Gauge>::default();
        registry.register("messages", "Notification log rows by provider and state", queue.clone());
        let oldest = Family::<ProviderLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "oldest_queued_age_seconds",
            "Age of the oldest queued message per provider",
            oldest.clone(),
        );
        let paused = Family::<ProviderLabels, Gauge>::default();
        registry.register(
            "iis_paused",
            "1 when sending to this IIS is paused until its credentials are imported again",
            paused.clone(),
        );
        let backlog = Gauge::default();
        registry.register(
            "dataverse_sync_backlog",
            "Outcomes waiting to be written back to Dataverse",
            backlog.clone(),
        );
        let pulled = Counter::default();
        registry.register("dataverse_rows_pulled", "Rows read from Dataverse", pulled.clone());
        let last_pull = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "dataverse_last_pull_timestamp_seconds",
            "Unix time of the last successful Dataverse pull (0: none yet)",
            last_pull.clone(),
        );
        let pull_failures = Counter::default();
        registry.register(
            "dataverse_pull_failures",
            "Dataverse pulls that failed",
            pull_failures.clone(),
        );
        let synced = Counter::default();
        registry.register("dataverse_synced", "Outcomes written back to Dataverse", synced.clone());
        Self {
            loops: Mutex::new(BTreeMap::new()),
            registry,
            sends,
            latency,
            queue,
            oldest,
            paused,
            backlog,
            pulled,
            last_pull,
            pull_failures,
            synced,
        }
    }

    /// Sets a loop's state.
    pub fn set_loop(&self, name: &'static str, state: LoopState) {
        self.loops.lock().unwrap_or_else(PoisonError::into_inner).insert(name, state);
    }

    /// The loops' states.
    pub fn loops(&self) -> BTreeMap<&'static str, LoopState> {
        self.loops.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// One send attempt's outcome.
    pub fn sent(&self, provider: &str, outcome: &str, took: Duration) {
        self.sends
            .get_or_create(&SendLabels {
                provider: provider.to_owned(),
                outcome: outcome.replace(' ', "_"),
            })
            .inc();
        self.latency
            .get_or_create(&ProviderLabels { provider: provider.to_owned() })
            .observe(took.as_secs_f64());
    }

    /// A successful pull of `rows` rows.
    pub fn pulled(&self, rows: u64) {
        self.pulled.inc_by(rows);
        self.last_pull.set(now_ms() / 1000);
    }

    /// A failed pull.
    pub fn pull_failed(&self) {
        self.pull_failures.inc();
    }

    /// Outcomes written back.
    pub fn synced(&self, n: u64) {
        self.synced.inc_by(n);
    }

    /// The text exposition, with the queue gauges read from `store` now.
    ///
    /// # Errors
    /// The database's error, as text.
    pub fn render(&self, store: &Store) -> Result<String, String> {
        let status = store.status().map_err(|e| e.to_string())?;
        let backlog = store.sync_backlog().map_err(|e| e.to_string())?;
        self.queue.clear();
        self.oldest.clear();
        self.paused.clear();
        let now = now_ms();
        for p in &status {
            let provider = ProviderLabels { provider: p.provider_id.clone() };
            for (state, n) in &p.counts {
                self.queue
                    .get_or_create(&QueueLabels {
                        provider: p.provider_id.clone(),
                        state: state.clone(),
                    })
                    .set(i64::try_from(*n).unwrap_or(i64::MAX));
            }
            let age = p.oldest_queued.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
            self.oldest.get_or_create(&provider).set(age);
            self.paused.get_or_create(&provider).set(i64::from(p.paused));
        }
        self.backlog.set(i64::try_from(backlog).unwrap_or(i64::MAX));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .map_err(|e| e.to_string())?;
        Ok(out)
    }

    /// `/healthz`: healthy when no loop failed and the database answers.
    pub fn health(&self, store: &Store) -> (bool, String) {
        let mut ok = true;
        let mut lines = Vec::new();
        for (name, state) in self.loops() {
            match state {
                LoopState::Running => lines.push(format!("{name}: running")),
                LoopState::Off(why) => lines.push(format!("{name}: off ({why})")),
                LoopState::Failed(why) => {
                    ok = false;
                    lines.push(format!("{name}: FAILED: {why}"));
                }
            }
        }
        if lines.is_empty() {
            ok = false;
            lines.push("loops: not started".into());
        }
        match store.version() {
            Ok(v) => lines.push(format!("database: ok (schema {v})")),
            Err(e) => {
                ok = false;
                lines.push(format!("database: FAILED: {e}"));
            }
        }
        (ok, lines.join("\n") + "\n")
    }
}

#[derive(Clone)]
struct Served {
    telemetry: Arc<Telemetry>,
    store: Arc<Mutex<Store>>,
}

/// Serves `/healthz` and `/metrics` on `addr` until `stop` is cancelled; returns the bound
/// address once listening.
///
/// # Errors
/// The bind error.
pub async fn serve(
    addr: SocketAddr,
    telemetry: Arc<Telemetry>,
    store: Store,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let state = Served { telemetry, store: Arc::new(Mutex::new(store)) };
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(e) = served.await {
            tracing::error!(error = %e, "health and metrics server stopped");
        }
    });
    Ok((bound, task))
}

async fn healthz(State(s): State<Served>) -> Response {
    let answer = tokio::task::spawn_blocking(move || {
        let store = s.store.lock().unwrap_or_else(PoisonError::into_inner);
        s.telemetry.health(&store)
    })
    .await;
    match answer {
        Ok((true, body)) => (StatusCode::OK, body).into_response(),
        Ok((false, body)) => (StatusCode::SERVICE_UNAVAILABLE, body).into_response(),
        Err(e) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("health check failed: {e}\n")).into_response()
        }
    }
}

async fn metrics(State(s): State<Served>) -> Response {
    let answer = tokio::task::spawn_blocking(move || {
        let store = s.store.lock().unwrap_or_else(PoisonError::into_inner);
        s.telemetry.render(&store)
    })
    .await;
    match answer {
        Ok(Ok(text)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            text,
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("cannot read the database: {e}\n"))
            .into_response(),
        Err(e) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("metrics failed: {e}\n")).into_response()
        }
    }
}
