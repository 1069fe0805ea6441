//! The drain loop: one worker per IIS endpoint, a store thread, group commits.
//!
//! ```text
//!   worker (per IIS, async) ──claim──▶ store thread ──▶ SQLite (rows → sending)
//!        │  ≤ concurrency sends in flight over HTTPS
//!        └──outcome──▶ store thread: every outcome waiting is committed in ONE transaction
//! ```
//!
//! - **FIFO per patient**: [`Store::claim_for`] takes a row only when no earlier row of the same
//!   patient for the same IIS is `queued` or `sending`; a row stays `sending` until its outcome
//!   is committed, so a later dose cannot overtake an earlier one, even across retries.
//! - **Durability**: an outcome is acknowledged only by its commit; a crash before it leaves the
//!   row in `sending`, which the next forwarder start puts back to `queued` with the same
//!   MSH-10 (an IIS recognises the resend).
//! - **Group commit**: the store thread takes every command waiting in its channel and commits
//!   all outcomes together, so one fsync serves many messages when the IIS is fast.
//! - **Circuit breaker**: after `circuit_failures` consecutive transport failures a worker stops
//!   claiming and probes with `connectivityTest` every `circuit_probe_ms`; a good answer
//!   closes the circuit. With `once`, a failed probe ends the worker (rows stay queued).
//! - **Pause**: a `SecurityFault` (or 401/403/404) pauses the IIS in the database until its
//!   credentials are imported again; its rows go back to `queued`; other IIS go on.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use super::backoff;
use super::settings::{ForwardConfig, ForwardSettings};
use crate::config::vault::Key;
use crate::iis::classify::{Disposition, classify};
use crate::iis::client::{Client, Reply};
use crate::iis::soap::{self, Response};
use crate::store::outbox::{Attempt, Claim, Finish, Outcome};
use crate::store::{self, Endpoint, Store, now_ms};

/// With `once`, a worker waits for retries due within this horizon before it ends.
pub const ONCE_HORIZON_MS: i64 = 2_000;

/// How long an idle worker sleeps before looking for due rows again (continuous mode).
const IDLE_POLL_MS: i64 = 1_000;

/// Forwarding errors that stop the drain.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The store thread stopped.
    #[error("the store thread stopped: {0}")]
    StoreThread(String),
}

/// How to drain.
#[derive(Debug, Clone, Default)]
pub struct DrainOptions {
    /// Drain what is due (and retries due within [`ONCE_HORIZON_MS`]), then return.
    pub once: bool,
    /// Only these providers (all when empty).
    pub providers: Vec<String>,
    /// Told every attempt's outcome (the daemon's metrics).
    pub observer: Option<Observer>,
}

/// Called once per send attempt with the provider, the outcome word (`accepted`, `rejected`,
/// `accepted with warnings`, `retry`, `paused`, `failed`) and the time the exchange took.
#[derive(Clone)]
pub struct Observer(pub Arc<ObserveFn>);

/// The function an [`Observer`] calls.
pub type ObserveFn = dyn Fn(&str, &'static str, Duration) + Send + Sync;

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

/// What one IIS worker did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProviderReport {
    /// The provider id.
    pub provider_id: String,
    /// Due when the drain started.
    pub due_at_start: u64,
    /// Accepted (AA, or AE with warnings only).
    pub accepted: u64,
    /// Accepted with warnings (included in `accepted`).
    pub warnings: u64,
    /// Rejected by the IIS.
    pub rejected: u64,
    /// Attempts that will be retried.
    pub retried: u64,
    /// Given up (too large, bad request).
    pub failed: u64,
    /// The IIS is paused, and why.
    pub paused: Option<String>,
    /// The circuit was open when the worker ended.
    pub circuit_open: bool,
    /// Why the circuit opened: the last connection failure (refused, timed out, a
    /// certificate that is expired or not trusted …).
    pub circuit_reason: Option<String>,
    /// The worker could not start (bad endpoint URL, certificate file …).
    pub error: Option<String>,
}

/// What a drain did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DrainReport {
    /// One report per IIS endpoint.
    pub providers: Vec<ProviderReport>,
    /// Queued messages whose provider has no IIS credentials: (provider, count).
    pub without_endpoint: Vec<(String, u64)>,
    /// Rows put back from `sending` to `queued` at start (left by a crash).
    pub recovered: usize,
    /// The database failed mid-drain (a claim or an outcome could not be written, e.g. locked
    /// by another process or full): the workers stopped early; rows left in `sending` go back
    /// to `queued` at the next drain, which the caller should start after a pause.
    pub store_failed: bool,
}

/// Progress callback: called once per outcome recorded.
pub type Progress = Arc<dyn Fn() + Send + Sync>;

/// Told the number of messages due when the drain starts.
pub type Total = Arc<dyn Fn(u64) + Send + Sync>;

/// What an outcome counts as in its provider's report, once (and only once) it is committed.
#[derive(Debug, Clone)]
struct Tally {
    provider: String,
    kind: TallyKind,
}

#[derive(Debug, Clone, Copy)]
enum TallyKind {
    Accepted { warnings: bool },
    Rejected,
    Retried,
    Failed,
    Uncounted,
}

/// Per provider, the outcomes committed to the database: what the report says.
type Committed = Arc<std::sync::Mutex<BTreeMap<String, ProviderReport>>>;

fn count_committed(committed: &Committed, tallies: impl Iterator<Item = Tally>) {
    let Ok(mut map) = committed.lock() else { return };
    for t in tallies {
        let r = map.entry(t.provider).or_default();
        match t.kind {
            TallyKind::Accepted { warnings } => {
                r.accepted += 1;
                r.warnings += u64::from(warnings);
            }
            TallyKind::Rejected => r.rejected += 1,
            TallyKind::Retried => r.retried += 1,
            TallyKind::Failed => r.failed += 1,
            TallyKind::Uncounted => {}
        }
    }
}

enum Cmd {
    Claim {
        provider: String,
        limit: usize,
        reply: oneshot::Sender<store::Result<Vec<Claim>>>,
    },
    Finish(Box<Outcome>, Tally),
    Pause {
        provider: String,
        reason: String,
    },
    Release {
        ids: Vec<i64>,
        reply: oneshot::Sender<store::Result<usize>>,
    },
    NextDue {
        provider: String,
        /// Rows scheduled later than now + this are made due first (a clock that went back).
        max_wait_ms: i64,
        reply: oneshot::Sender<store::Result<Option<i64>>>,
    },
}

/// The store thread's address.
#[derive(Clone)]
struct StoreHandle {
    tx: std::sync::mpsc::Sender<Cmd>,
    failed: Arc<AtomicBool>,
}

impl StoreHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Result<T, Error> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).map_err(|_| Error::StoreThread("channel closed".into()))?;
        rx.await.map_err(|_| Error::StoreThread("no reply".into()))
    }

    fn send(&self, cmd: Cmd) {
        if self.tx.send(cmd).is_err() {
            self.failed.store(true, Ordering::SeqCst);
        }
    }
}

/// Runs the store thread until every handle is dropped. Outcomes are committed in groups;
/// a failed commit (disk full …) marks the drain failed: those rows stay `sending` and go back
/// to `queued` with their MSH-10 at the next start.
fn store_thread(
    mut store: Store,
    rx: std::sync::mpsc::Receiver<Cmd>,
    failed: Arc<AtomicBool>,
    progress: Option<Progress>,
    committed: Committed,
) -> Store {
    const MAX_GROUP: usize = 1024;
    while let Ok(first) = rx.recv() {
        let mut cmds = vec![first];
        while cmds.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(c) => cmds.push(c),
                Err(_) => break,
            }
        }
        let mut outcomes = Vec::new();
        let mut tallies = Vec::new();
        let mut rest = Vec::new();
        for c in cmds {
            match c {
                Cmd::Finish(o, t) => {
                    outcomes.push(*o);
                    tallies.push(t);
                }
                other => rest.push(other),
            }
        }
        if !outcomes.is_empty() {
            match store.finish_batch(&outcomes) {
                Ok(skipped) => {
                    count_committed(
                        &committed,
                        outcomes
                            .iter()
                            .zip(tallies)
                            .filter(|(o, _)| !skipped.contains(&o.log_id))
                            .map(|(_, t)| t),
                    );
                    for id in skipped {
                        warn!(log_id = id, "outcome not recorded: the row had left sending");
                    }
                    if let Some(p) = &progress {
                        for _ in &outcomes {
                            p();
                        }
                    }
                }
                Err(e) => {
                    error!(error = %e, count = outcomes.len(), "cannot record send outcomes; stopping");
                    failed.store(true, Ordering::SeqCst);
                }
            }
        }
        for c in rest {
            match c {
                Cmd::Claim { provider, limit, reply } => {
                    let r = if failed.load(Ordering::SeqCst) {
                        Ok(Vec::new())
                    } else {
                        store.claim_for(&provider, now_ms(), limit)
                    };
                    if r.is_err() {
                        failed.store(true, Ordering::SeqCst);
                    }
                    let _ = reply.send(r);
                }
                Cmd::Pause { provider, reason } => {
                    if let Err(e) = store.pause_endpoint(&provider, &reason) {
                        error!(provider, error = %e, "cannot record the pause");
                    }
                }
                Cmd::Release { ids, reply } => {
                    let _ = reply.send(store.release(&ids));
                }
                Cmd::NextDue { provider, max_wait_ms, reply } => {
                    let r = store
                        .reschedule_beyond(&provider, now_ms(), max_wait_ms)
                        .and_then(|n| {
                            if n > 0 {
                                warn!(provider, rows = n, "messages scheduled beyond the longest retry wait (the clock went back?) are due now");
                            }
                            store.next_due(&provider)
                        });
                    let _ = reply.send(r);
                }
                Cmd::Finish(..) => {}
            }
        }
    }
    store
}

/// Drains the outbox of every IIS endpoint in the vault until `shutdown` turns true or, with
/// `once`, until nothing is due. Returns the store (for the caller's audit) and the report.
///
/// # Errors
/// [`Error`] when the database fails at start.
pub async fn drain(
    mut store: Store,
    key: &Key,
    config: &ForwardConfig,
    options: &DrainOptions,
    progress: Option<(Progress, Total)>,
    shutdown: watch::Receiver<bool>,
) -> Result<(Store, DrainReport), Error> {
    let mut report = DrainReport { recovered: store.recover_sending()?, ..DrainReport::default() };
    if report.recovered > 0 {
        info!(rows = report.recovered, "requeued messages left in sending by an interrupted run");
    }
    let endpoints: Vec<Endpoint> = store
        .endpoints(key)?
        .into_iter()
        .filter(|e| options.providers.is_empty() || options.providers.contains(&e.provider_id))
        .collect();
    let known: std::collections::BTreeSet<&str> =
        endpoints.iter().map(|e| e.provider_id.as_str()).collect();
    report.without_endpoint = store
        .queued_by_provider()?
        .into_iter()
        .filter(|(p, _)| {
            !known.contains(p.as_str())
                && (options.providers.is_empty() || options.providers.contains(p))
        })
        .collect();
    let now = now_ms();
    let mut dues = BTreeMap::new();
    for e in &endpoints {
        let max_wait_ms =
            i64::try_from(config.get(&e.provider_id).retry_max_ms).unwrap_or(i64::MAX);
        let rescheduled = store.reschedule_beyond(&e.provider_id, now, max_wait_ms)?;
        if rescheduled > 0 {
            warn!(
                provider = e.provider_id,
                rows = rescheduled,
                "messages scheduled beyond the longest retry wait (the clock went back?) are due now"
            );
        }
        dues.insert(e.provider_id.clone(), store.due_count(&e.provider_id, now)?);
    }
    let (bar_inc, bar_total) = match progress {
        Some((inc, total)) => (Some(inc), Some(total)),
        None => (None, None),
    };
    if let Some(total) = &bar_total {
        total(dues.values().sum());
    }

    let failed = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let thread_failed = failed.clone();
    let committed = Committed::default();
    let thread_committed = committed.clone();
    let thread = std::thread::Builder::new()
        .name("izrelay-store".into())
        .spawn(move || store_thread(store, rx, thread_failed, bar_inc, thread_committed))
        .map_err(|e| Error::StoreThread(e.to_string()))?;
    let handle = StoreHandle { tx, failed: failed.clone() };

    let mut workers = JoinSet::new();
    for ep in endpoints {
        let settings = config.get(&ep.provider_id).clone();
        let due = dues.get(&ep.provider_id).copied().unwrap_or(0);
        let mut base = ProviderReport {
            provider_id: ep.provider_id.clone(),
            due_at_start: due,
            ..ProviderReport::default()
        };
        if ep.paused {
            base.paused = Some(ep.paused_reason.clone().unwrap_or_else(|| "paused".into()));
            report.providers.push(base);
            continue;
        }
        let client = match Client::new(&ep, &settings) {
            Ok(c) => c,
            Err(e) => {
                error!(provider = ep.provider_id, error = %e, "cannot reach this IIS");
                base.error = Some(e.to_string());
                report.providers.push(base);
                continue;
            }
        };
        let worker = Worker {
            provider: ep.provider_id.clone(),
            settings,
            client,
            store: handle.clone(),
            once: options.once,
            observer: options.observer.clone(),
            shutdown: shutdown.clone(),
            report: base,
        };
        workers.spawn(worker.run());
    }
    drop(handle);
    while let Some(done) = workers.join_next().await {
        match done {
            Ok(r) => report.providers.push(r),
            Err(e) => error!(error = %e, "a forwarder worker stopped abnormally"),
        }
    }
    let store = thread.join().map_err(|_| Error::StoreThread("panicked".into()))?;
    report.store_failed = failed.load(Ordering::SeqCst);
    // The counts are what was committed, not what was sent: an outcome the database could not
    // store (disk full) is not reported, and its row is sent again (same MSH-10).
    if let Ok(map) = committed.lock() {
        for p in &mut report.providers {
            let c = map.get(&p.provider_id).cloned().unwrap_or_default();
            (p.accepted, p.warnings, p.rejected, p.retried, p.failed) =
                (c.accepted, c.warnings, c.rejected, c.retried, c.failed);
        }
    }
    report.providers.sort_by(|a, b| a.provider_id.cmp(&b.provider_id));
    Ok((store, report))
}

struct Worker {
    provider: String,
    settings: ForwardSettings,
    client: Client,
    store: StoreHandle,
    once: bool,
    observer: Option<Observer>,
    shutdown: watch::Receiver<bool>,
    report: ProviderReport,
}

enum State {
    Running,
    CircuitOpen,
    Paused,
    Stopping,
}

impl Worker {
    async fn run(mut self) -> ProviderReport {
        info!(provider = self.provider, due = self.report.due_at_start, "forwarding");
        let mut buffer: VecDeque<Claim> = VecDeque::new();
        let mut inflight: JoinSet<(Claim, i64, Reply)> = JoinSet::new();
        let mut consecutive: u32 = 0;
        let mut state = State::Running;
        let concurrency = self.settings.concurrency;
        loop {
            if *self.shutdown.borrow() || self.store.failed.load(Ordering::SeqCst) {
                state = State::Stopping;
            }
            if matches!(state, State::Running) && buffer.len() < concurrency {
                let want = concurrency * 4 - buffer.len();
                let provider = self.provider.clone();
                match self.store.ask(|reply| Cmd::Claim { provider, limit: want, reply }).await {
                    Ok(Ok(claims)) => buffer.extend(claims),
                    Ok(Err(e)) => {
                        error!(provider = self.provider, error = %e, "cannot claim messages");
                        state = State::Stopping;
                    }
                    Err(_) => state = State::Stopping,
                }
            }
            while matches!(state, State::Running) && inflight.len() < concurrency {
                let Some(claim) = buffer.pop_front() else { break };
                let client = self.client.clone();
                inflight.spawn(async move {
                    let started = now_ms();
                    let reply = client.submit(&claim.message).await;
                    (claim, started, reply)
                });
            }
            if inflight.is_empty() {
                if !buffer.is_empty() {
                    let ids: Vec<i64> = buffer.drain(..).map(|c| c.log_id).collect();
                    let _ = self.store.ask(|reply| Cmd::Release { ids, reply }).await;
                }
                match state {
                    State::Stopping | State::Paused => break,
                    State::CircuitOpen => {
                        if self.probe().await {
                            consecutive = 0;
                            state = State::Running;
                            continue;
                        }
                        self.report.circuit_open = true;
                        break;
                    }
                    State::Running => {
                        if !self.idle().await {
                            break;
                        }
                        continue;
                    }
                }
            }
            let joined = if matches!(state, State::Stopping) {
                inflight.join_next().await
            } else {
                let mut shutdown = self.shutdown.clone();
                tokio::select! {
                    j = inflight.join_next() => j,
                    _ = shutdown.changed() => { state = State::Stopping; continue; }
                }
            };
            let Some(Ok((claim, started, reply))) = joined else { continue };
            let disposition = classify(&reply, &claim.control_id);
            let transport = matches!(disposition, Disposition::Retry { transport: true, .. });
            consecutive = if transport { consecutive + 1 } else { 0 };
            if transport
                && self.settings.circuit_failures > 0
                && consecutive >= self.settings.circuit_failures
                && matches!(state, State::Running)
            {
                let reason = match &disposition {
                    Disposition::Retry { reason, .. } => reason.to_string(),
                    _ => String::new(),
                };
                warn!(
                    provider = self.provider,
                    failures = consecutive,
                    reason = %reason,
                    "iis unreachable; circuit open"
                );
                self.report.circuit_reason = Some(reason);
                state = State::CircuitOpen;
            }
            if let Disposition::Pause { reason } = &disposition {
                if !matches!(state, State::Paused) {
                    error!(provider = self.provider, reason = %reason, "iis paused until its credentials are imported again");
                    self.store.send(Cmd::Pause {
                        provider: self.provider.clone(),
                        reason: reason.clone(),
                    });
                    self.report.paused = Some(reason.clone());
                }
                state = State::Paused;
            }
            self.record(claim, started, &reply, disposition);
        }
        info!(
            provider = self.provider,
            accepted = self.report.accepted,
            rejected = self.report.rejected,
            retried = self.report.retried,
            failed = self.report.failed,
            "forwarding ended"
        );
        self.report
    }

    /// Sends the outcome of one attempt to the store thread and counts it.
    fn record(&mut self, claim: Claim, started: i64, reply: &Reply, d: Disposition) {
        let attempts = claim.attempts.saturating_add(1);
        let mut error = None;
        let mut kind = TallyKind::Uncounted;
        let finish = match &d {
            Disposition::Accepted { ack, raw } | Disposition::Rejected { ack, raw } => {
                let ack_errors = serde_json::to_string(&ack.errors).unwrap_or_default();
                let ack_code = format!("{:?}", ack.code);
                if matches!(d, Disposition::Accepted { .. }) {
                    self.report.accepted += 1;
                    if !ack.errors.is_empty() {
                        self.report.warnings += 1;
                    }
                    kind = TallyKind::Accepted { warnings: !ack.errors.is_empty() };
                    debug!(log_id = claim.log_id, attempts, "accepted");
                    Finish::Accepted { ack_code, ack: raw.clone(), ack_errors }
                } else {
                    self.report.rejected += 1;
                    kind = TallyKind::Rejected;
                    warn!(
                        provider = self.provider,
                        log_id = claim.log_id,
                        code = ack_code,
                        "message rejected by the iis; fix the record and regenerate"
                    );
                    Finish::Rejected { ack_code, ack: raw.clone(), ack_errors }
                }
            }
            Disposition::Retry { reason, retry_after_ms, .. } => {
                self.report.retried += 1;
                kind = TallyKind::Retried;
                let delay = backoff::delay_ms(
                    attempts,
                    self.settings.retry_base_ms,
                    self.settings.retry_max_ms,
                    *retry_after_ms,
                    backoff::draw(),
                );
                debug!(log_id = claim.log_id, attempts, delay_ms = delay, reason = %reason, "send failed; will retry");
                error = Some(reason.clone());
                Finish::Retry {
                    next_attempt_at: now_ms()
                        .saturating_add(i64::try_from(delay).unwrap_or(i64::MAX)),
                }
            }
            Disposition::Pause { reason } => {
                error = Some(reason.clone());
                // Not the message's fault: it waits, due at once, for the IIS to resume.
                Finish::Retry { next_attempt_at: now_ms() }
            }
            Disposition::Fail { reason } => {
                self.report.failed += 1;
                kind = TallyKind::Failed;
                warn!(provider = self.provider, log_id = claim.log_id, reason = %reason, "message failed; not retried");
                error = Some(reason.clone());
                Finish::Failed { reason: reason.clone() }
            }
        };
        if let Some(Observer(observe)) = &self.observer {
            let took = u64::try_from(now_ms().saturating_sub(started)).unwrap_or(0);
            observe(&self.provider, d.word(), Duration::from_millis(took));
        }
        let attempt = Attempt {
            started_at: started,
            duration_ms: reply.duration_ms,
            http_status: reply.http_status,
            outcome: d.word().to_owned(),
            error,
        };
        let tally = Tally { provider: self.provider.clone(), kind };
        self.store
            .send(Cmd::Finish(Box::new(Outcome { log_id: claim.log_id, finish, attempt }), tally));
    }

    /// Waits for the next due row; false when the worker should end.
    async fn idle(&mut self) -> bool {
        let provider = self.provider.clone();
        let max_wait_ms = i64::try_from(self.settings.retry_max_ms).unwrap_or(i64::MAX);
        let next = match self.store.ask(|reply| Cmd::NextDue { provider, max_wait_ms, reply }).await
        {
            Ok(Ok(n)) => n,
            _ => return false,
        };
        let now = now_ms();
        let wait = match next {
            Some(t) if t <= now => 0,
            Some(t) if !self.once || t - now <= ONCE_HORIZON_MS => (t - now).min(IDLE_POLL_MS),
            _ if self.once => return false,
            _ => IDLE_POLL_MS,
        };
        self.sleep(wait).await
    }

    /// Sleeps `ms` unless shutdown comes first; false on shutdown.
    async fn sleep(&mut self, ms: i64) -> bool {
        let d = Duration::from_millis(u64::try_from(ms).unwrap_or(0));
        tokio::select! {
            () = tokio::time::sleep(d) => !*self.shutdown.borrow(),
            _ = self.shutdown.changed() => false,
        }
    }

    /// Probes an open circuit until it closes; false when the worker should end (shutdown, or
    /// one failed probe with `once`).
    async fn probe(&mut self) -> bool {
        loop {
            let wait = i64::try_from(self.settings.circuit_probe_ms).unwrap_or(i64::MAX);
            if !self.sleep(wait).await {
                return false;
            }
            let echo = format!("izrelay {}", now_ms());
            let reply = self.client.ping(&echo).await;
            let ok = matches!(
                reply.body.as_deref().map(soap::parse_response),
                Ok(Ok(Response::Connectivity(_)))
            );
            if ok {
                info!(provider = self.provider, "iis answers again; circuit closed");
                return true;
            }
            debug!(provider = self.provider, "probe failed; circuit stays open");
            if self.once {
                return false;
            }
        }
    }
}
