//! `izrelay run`: the daemon. A supervisor runs four loops until SIGTERM or SIGINT:
//!
//! | loop | does | every |
//! |---|---|---|
//! | `forward` | drains the outbox to each IIS ([`mod@crate::forwarder::drain`], continuous) | new rows are picked up within a second |
//! | `pull` | Dataverse changes into the outbox ([`crate::pull::dataverse::pull`]) | `pull_interval_secs`, first at start |
//! | `sync` | outcomes back to Dataverse ([`crate::sync::sync_once`]) | `sync_interval_secs`, and soon after outcomes |
//! | `monitor` | alerts: an IIS paused or resumed, the oldest queued message too old; notices re-imported credentials | `monitor_interval_secs` |
//!
//! - **Stop** (SIGTERM, SIGINT): every loop stops at a safe point: a forward worker claims
//!   nothing more, lets its in-flight sends finish and records them, and puts what it had
//!   claimed but not sent back to `queued`; a pull stops between pages (what was stored stays;
//!   the delta link only advances after a complete pull); a sync round finishes. If that takes
//!   longer than `stop_timeout_secs`, the caller drops the runtime and [`after_stop`] puts any
//!   row still in `sending` back to `queued` (same MSH-10). Nothing is ever half-recorded:
//!   every state change is one transaction.
//! - **Reload** (SIGHUP): the configuration file and the key are read again; when they are
//!   valid, the loops stop as above and start again with them (the health and metrics server
//!   keeps running; a change of `metrics_listen` needs a restart). An invalid file is logged
//!   and the old configuration kept.
//! - **Alerts** are log events emitted once per state change (an IIS paused, a message
//!   rejected, the oldest queued message older than `alert_queued_minutes`, Dataverse
//!   unreachable), never once per retry. Nothing at `info` carries PHI: records are named by
//!   their ids, never by patient data.

pub mod metrics;
mod settings;

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

pub use metrics::{LoopState, Telemetry};
pub use settings::DaemonSettings;

use crate::config::Config;
use crate::config::vault::Key;
use crate::forwarder::{DrainOptions, Observer, drain};
use crate::store::credentials::DATAVERSE_SECRET;
use crate::store::{Store, now_ms};

/// The database file name in the data directory.
pub const DB_FILE: &str = "izrelay.db";

/// Why the daemon could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database cannot be opened.
    #[error("cannot open the database {path}: {source}")]
    Store {
        /// The file.
        path: PathBuf,
        /// Why.
        source: crate::store::Error,
    },
    /// The key cannot be read.
    #[error(transparent)]
    Key(#[from] crate::config::vault::Error),
    /// The health and metrics port cannot be bound.
    #[error("cannot serve health and metrics on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Re-reads the configuration (SIGHUP); the error names every problem.
pub type Reload = Arc<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// What the daemon needs to start.
pub struct Options {
    /// The data directory (database and key).
    pub data_dir: PathBuf,
    /// The configuration at start.
    pub config: Config,
    /// How to read the configuration again on SIGHUP.
    pub reload: Reload,
    /// Told the health and metrics address once bound (tests use port 0).
    pub on_listen: Option<Box<dyn FnOnce(std::net::SocketAddr) + Send>>,
}

/// How the daemon ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stopped {
    /// The loops did not stop within `stop_timeout_secs`; call [`after_stop`] once the
    /// runtime is gone.
    pub timed_out: bool,
    /// Reloads done.
    pub reloads: u32,
}

/// One configuration generation: what every loop reads.
struct Generation {
    data_dir: PathBuf,
    config: Config,
    key: Arc<Key>,
    telemetry: Arc<Telemetry>,
    /// Bumped by the monitor when the IIS endpoints change (an import, a pause, a removal).
    endpoints: watch::Receiver<u64>,
    /// Wakes the sync loop after outcomes.
    outcomes: Arc<Notify>,
    /// Held by a pull and by a sync round: they never overlap, so a pull never reads a row
    /// between our write-back and the recording of its ETag.
    dataverse: tokio::sync::Mutex<()>,
}

/// Page cache per daemon connection, KiB (see [`Store::limit_page_cache`]): the interior pages
/// of the tables and indexes a claim, an outcome or a status query walks fit many times over.
const PAGE_CACHE_KIB: u32 = 256;

/// Opens the database for a daemon loop: a connection with a small page cache.
fn open_store(path: &Path) -> Result<Store, crate::store::Error> {
    let store = Store::open(path)?;
    store.limit_page_cache(PAGE_CACHE_KIB)?;
    Ok(store)
}

impl Generation {
    fn open(&self) -> Result<Store, crate::store::Error> {
        open_store(&self.data_dir.join(DB_FILE))
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
///
/// # Errors
/// [`Error`] when it cannot start (database, key, metrics port); once running, loops report
/// their problems in the log and in `/healthz` and keep trying.
pub async fn run(options: Options) -> Result<Stopped, Error> {
    let Options { data_dir, mut config, reload, on_listen } = options;
    let db = data_dir.join(DB_FILE);
    let opened = |path: &Path| {
        open_store(path).map_err(|source| Error::Store { path: path.to_path_buf(), source })
    };
    // Opening first runs any schema upgrade once, before the loops open their connections.
    let probe = opened(&db)?;
    let mut key = Arc::new(Key::load(&data_dir)?);
    let telemetry = Arc::new(Telemetry::new());
    let root = CancellationToken::new();
    let server_stop = CancellationToken::new();
    let mut server = None;
    if let Some(addr) = config.daemon.metrics_listen {
        let (bound, task) = metrics::serve(addr, telemetry.clone(), probe, server_stop.clone())
            .await
            .map_err(|source| Error::Listen { addr, source })?;
        info!(address = %bound, "serving /healthz and /metrics");
        if let Some(tell) = on_listen {
            tell(bound);
        }
        server = Some(task);
    } else {
        drop(probe);
    }
    let mut hangups = signals(root.clone());
    let mut stopped = Stopped::default();
    info!(data_dir = %data_dir.display(), "izrelay running");
    loop {
        let generation = root.child_token();
        let tracker = TaskTracker::new();
        let (endpoints_tx, endpoints_rx) = watch::channel(0u64);
        let gen_ = Arc::new(Generation {
            data_dir: data_dir.clone(),
            config: config.clone(),
            key: key.clone(),
            telemetry: telemetry.clone(),
            endpoints: endpoints_rx,
            outcomes: Arc::new(Notify::new()),
            dataverse: tokio::sync::Mutex::new(()),
        });
        tracker.spawn(forward_loop(gen_.clone(), generation.clone()));
        tracker.spawn(pull_loop(gen_.clone(), generation.clone()));
        tracker.spawn(sync_loop(gen_.clone(), generation.clone()));
        tracker.spawn(monitor_loop(gen_.clone(), endpoints_tx, generation.clone()));
        tracker.close();
        // Wait for a stop, or a reload with a valid configuration.
        let next = loop {
            tokio::select! {
                () = root.cancelled() => break None,
                got = hangups.recv() => {
                    if got.is_none() {
                        // No more hang-ups can come; wait for the stop alone.
                        root.cancelled().await;
                        break None;
                    }
                    match (reload(), Key::load(&data_dir)) {
                        (Ok(c), Ok(k)) => break Some((c, k)),
                        (Err(e), _) => error!(problems = %e, "reload refused: the configuration is not valid; keeping the running one"),
                        (_, Err(e)) => error!(error = %e, "reload refused: cannot read the key; keeping the running one"),
                    }
                }
            }
        };
        info!(reload = next.is_some(), "stopping the loops at safe points");
        generation.cancel();
        let bound = Duration::from_secs(config.daemon.stop_timeout_secs);
        if tokio::time::timeout(bound, tracker.wait()).await.is_err() {
            warn!(
                seconds = config.daemon.stop_timeout_secs,
                "loops did not stop in time; unfinished sends go back to queued"
            );
            stopped.timed_out = true;
            break;
        }
        match next {
            Some((c, k)) => {
                if c.daemon.metrics_listen != config.daemon.metrics_listen {
                    warn!("metrics_listen changed: it takes effect at the next start");
                }
                config = c;
                key = Arc::new(k);
                stopped.reloads += 1;
                info!("configuration reloaded");
            }
            None => break,
        }
    }
    server_stop.cancel();
    if let Some(task) = server {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    info!(timed_out = stopped.timed_out, "izrelay stopped");
    Ok(stopped)
}

/// After a stop that timed out and the runtime is gone: rows still `sending` go back to
/// `queued` with their MSH-10. Returns how many.
///
/// # Errors
/// The database's error.
pub fn after_stop(data_dir: &Path) -> Result<usize, crate::store::Error> {
    Store::open(&data_dir.join(DB_FILE))?.recover_sending()
}

/// SIGTERM and SIGINT cancel `root`; each SIGHUP is one message on the returned channel.
fn signals(root: CancellationToken) -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match (signal(SignalKind::terminate()), signal(SignalKind::hangup())) {
                (Ok(mut term), Ok(mut hup)) => loop {
                    tokio::select! {
                        _ = term.recv() => { info!(signal = "SIGTERM", "stop requested"); break; }
                        _ = tokio::signal::ctrl_c() => { info!(signal = "SIGINT", "stop requested"); break; }
                        _ = hup.recv() => {
                            info!(signal = "SIGHUP", "reload requested");
                            let _ = tx.try_send(());
                        }
                    }
                },
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(windows)]
        {
            // A service wrapper (WinSW, NSSM) sends Ctrl-C or Ctrl-Break: both stop cleanly.
            drop(tx);
            match tokio::signal::windows::ctrl_break() {
                Ok(mut brk) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = brk.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
            info!(signal = "Ctrl-C/Ctrl-Break", "stop requested");
        }
        #[cfg(not(any(unix, windows)))]
        {
            drop(tx);
            let _ = tokio::signal::ctrl_c().await;
            info!(signal = "Ctrl-C", "stop requested");
        }
        root.cancel();
    });
    rx
}

/// Sleeps `d` unless `token` is cancelled first; false when cancelled.
async fn pause(d: Duration, token: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = token.cancelled() => false,
    }
}

async fn forward_loop(g: Arc<Generation>, token: CancellationToken) {
    const NAME: &str = "forward";
    g.telemetry.set_loop(NAME, LoopState::Running);
    let telemetry = g.telemetry.clone();
    let wake = g.outcomes.clone();
    let observer = Observer(Arc::new(move |provider, outcome, took| {
        telemetry.sent(provider, outcome, took);
        if outcome != "retry" {
            wake.notify_one();
        }
    }));
    let options = DrainOptions { once: false, providers: Vec::new(), observer: Some(observer) };
    let mut endpoints = g.endpoints.clone();
    let mut failing = false;
    while !token.is_cancelled() {
        endpoints.borrow_and_update();
        let store = match g.open() {
            Ok(s) => s,
            Err(e) => {
                if !failing {
                    error!(error = %e, "forwarding cannot open the database; retrying");
                }
                failing = true;
                g.telemetry.set_loop(NAME, LoopState::Failed(e.to_string()));
                if !pause(Duration::from_secs(5), &token).await {
                    break;
                }
                continue;
            }
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let drained = drain(store, &g.key, &g.config.forward, &options, None, stop_rx);
        tokio::pin!(drained);
        let result = tokio::select! {
            r = &mut drained => r,
            () = async {
                tokio::select! {
                    () = token.cancelled() => {}
                    _ = endpoints.changed() => debug!("iis endpoints changed; restarting the workers"),
                }
            } => {
                let _ = stop_tx.send(true);
                drained.await
            }
        };
        match result {
            // The workers stopped on a database error (locked, full): retry like an open
            // failure, instead of waiting for an endpoint change that may never come.
            Ok((_, report)) if report.store_failed => {
                if !failing {
                    error!("forwarding stopped: the database failed (see above); retrying");
                }
                failing = true;
                g.telemetry.set_loop(NAME, LoopState::Failed("database error".into()));
                if !pause(Duration::from_secs(5), &token).await {
                    break;
                }
                continue;
            }
            Ok((_, report)) => {
                if failing {
                    info!("forwarding works again");
                }
                failing = false;
                g.telemetry.set_loop(NAME, LoopState::Running);
                for (provider, n) in &report.without_endpoint {
                    warn!(
                        provider = provider.as_str(),
                        queued = n,
                        "queued messages but no iis credentials for this provider"
                    );
                }
            }
            Err(e) => {
                error!(error = %e, "forwarding stopped; retrying");
                failing = true;
                g.telemetry.set_loop(NAME, LoopState::Failed(e.to_string()));
                if !pause(Duration::from_secs(5), &token).await {
                    break;
                }
                continue;
            }
        }
        if token.is_cancelled() {
            break;
        }
        // Every worker ended by itself (no endpoint, all paused) or the endpoints changed:
        // start again once they change (or at once if they already did).
        if !endpoints.has_changed().unwrap_or(false) {
            tokio::select! {
                () = token.cancelled() => break,
                _ = endpoints.changed() => {}
            }
        }
    }
}

/// The Dataverse client for this generation, or why there is none (`Ok(None)`: not
/// configured).
fn dataverse_client(
    g: &Generation,
    store: &Store,
) -> Result<Option<crate::pull::dataverse::Client>, String> {
    let Some(dv) = g.config.dataverse.as_ref().filter(|d| d.enabled()) else {
        return Ok(None);
    };
    let secret = store
        .secret(DATAVERSE_SECRET, &g.key)
        .map_err(|e| e.to_string())?
        .ok_or("no Dataverse client secret: pipe it into `izrelay credentials dataverse-secret`")?;
    crate::pull::dataverse::Client::new(dv.settings(), secret).map(Some).map_err(|e| e.to_string())
}

async fn pull_loop(g: Arc<Generation>, token: CancellationToken) {
    const NAME: &str = "pull";
    let Some((mut store, client)) = dataverse_setup(&g, NAME, &token).await else { return };
    let Some(dv) = g.config.dataverse.as_ref() else { return };
    let interval = Duration::from_secs(g.config.daemon.pull_interval_secs);
    let mut failing = false;
    loop {
        let pulled = tokio::select! {
            r = async {
                let _turn = g.dataverse.lock().await;
                let now = chrono::Local::now().fixed_offset();
                crate::pull::dataverse::pull::pull(&client, &dv.vaccination, &mut store, &g.config.profiles, now).await
            } => r,
            () = token.cancelled() => break,
        };
        match pulled {
            Ok(r) => {
                g.telemetry.pulled(r.rows);
                if failing {
                    info!("dataverse answers again; pull works");
                }
                failing = false;
                let c = &r.intake;
                let level_info = c.queued > 0 || c.invalid > 0 || r.unmappable > 0;
                if level_info {
                    info!(
                        mode = r.mode,
                        rows = r.rows,
                        queued = c.queued,
                        invalid = c.invalid,
                        unmappable = r.unmappable,
                        "pulled from dataverse"
                    );
                } else {
                    debug!(mode = r.mode, rows = r.rows, "pulled from dataverse; nothing new");
                }
                if c.invalid > 0 || r.unmappable > 0 {
                    warn!(
                        invalid = c.invalid,
                        unmappable = r.unmappable,
                        "records that cannot be sent were kept as invalid; see `izrelay log --status invalid`"
                    );
                }
            }
            Err(e) => {
                g.telemetry.pull_failed();
                if failing {
                    debug!(error = %e, "dataverse pull failed again");
                } else {
                    warn!(error = %e, "dataverse pull failed; retrying every pull interval");
                }
                failing = true;
            }
        }
        if !pause(interval, &token).await {
            break;
        }
    }
}

/// Opens the loop's connection and client; `None` when the loop has nothing to do (its state
/// says why) and has waited for the stop.
async fn dataverse_setup(
    g: &Generation,
    name: &'static str,
    token: &CancellationToken,
) -> Option<(Store, crate::pull::dataverse::Client)> {
    let ready = g
        .open()
        .map_err(|e| e.to_string())
        .and_then(|store| Ok((dataverse_client(g, &store)?, store)));
    match ready {
        Ok((Some(client), store)) => {
            g.telemetry.set_loop(name, LoopState::Running);
            Some((store, client))
        }
        Ok((None, _)) => {
            g.telemetry.set_loop(name, LoopState::Off("Dataverse is not configured".into()));
            token.cancelled().await;
            None
        }
        Err(e) => {
            error!(error = %e, "{name} cannot start");
            g.telemetry.set_loop(name, LoopState::Failed(e));
            token.cancelled().await;
            None
        }
    }
}

async fn sync_loop(g: Arc<Generation>, token: CancellationToken) {
    const NAME: &str = "sync";
    if g.config.dataverse.as_ref().is_some_and(|d| d.notification_log.is_none()) {
        g.telemetry.set_loop(NAME, LoopState::Off("no [dataverse.notification_log]".into()));
        token.cancelled().await;
        return;
    }
    let Some((mut store, client)) = dataverse_setup(&g, NAME, &token).await else { return };
    let Some(dv) = g.config.dataverse.as_ref() else { return };
    let interval = Duration::from_secs(g.config.daemon.sync_interval_secs);
    let mut failing = false;
    loop {
        // A round is finished even when a stop comes meanwhile (the stop bound covers it).
        let round = {
            let _turn = g.dataverse.lock().await;
            crate::sync::sync_once(&client, dv, &mut store).await
        };
        match round {
            Ok(r) => {
                g.telemetry.synced(r.synced);
                if r.synced > 0 {
                    info!(
                        synced = r.synced,
                        backlog = r.backlog,
                        "outcomes written back to dataverse"
                    );
                }
                match (&r.last_error, failing) {
                    (Some(e), false) if r.failed > 0 => {
                        warn!(failed = r.failed, backlog = r.backlog, error = %e, "dataverse write-back failing; outcomes wait in the outbox");
                        failing = true;
                    }
                    (None, true) => {
                        info!("dataverse write-back works again");
                        failing = false;
                    }
                    _ => {}
                }
            }
            Err(e) => {
                error!(error = %e, "sync round failed");
                failing = true;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = g.outcomes.notified() => {
                // Let a burst of outcomes gather into one round.
                if !pause(Duration::from_secs(1), &token).await {
                    break;
                }
            }
            () = token.cancelled() => break,
        }
    }
}

async fn monitor_loop(g: Arc<Generation>, endpoints: watch::Sender<u64>, token: CancellationToken) {
    const NAME: &str = "monitor";
    let interval = Duration::from_secs(g.config.daemon.monitor_interval_secs);
    let too_old_ms = i64::try_from(g.config.daemon.alert_queued_minutes)
        .unwrap_or(i64::MAX / 60_000)
        .saturating_mul(60_000);
    let mut store = None;
    let mut paused: BTreeMap<String, bool> = BTreeMap::new();
    let mut old: BTreeMap<String, bool> = BTreeMap::new();
    let mut last_fingerprint = None;
    loop {
        if store.is_none() {
            store = g.open().ok();
        }
        if let Some(s) = &store {
            g.telemetry.set_loop(NAME, LoopState::Running);
            if let Ok(list) = s.list_endpoints() {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                for e in &list {
                    (&e.provider_id, &e.url, e.paused, e.updated_at).hash(&mut h);
                }
                let fp = h.finish();
                if last_fingerprint.is_some_and(|f| f != fp) {
                    endpoints.send_modify(|v| *v = v.wrapping_add(1));
                }
                last_fingerprint = Some(fp);
            }
            match s.status() {
                Ok(status) => {
                    let now = now_ms();
                    for p in status {
                        let id = p.provider_id;
                        let was = paused.insert(id.clone(), p.paused).unwrap_or(false);
                        if p.paused && !was {
                            error!(
                                provider = id.as_str(),
                                "ALERT iis paused: its credentials were refused; import them again to resume"
                            );
                        } else if was && !p.paused {
                            info!(provider = id.as_str(), "iis resumed");
                        }
                        let age = p.oldest_queued.map_or(0, |t| now - t);
                        let is_old = age > too_old_ms;
                        let was_old = old.insert(id.clone(), is_old).unwrap_or(false);
                        if is_old && !was_old {
                            warn!(
                                provider = id.as_str(),
                                minutes = age / 60_000,
                                "ALERT the oldest queued message is older than the alert age"
                            );
                        } else if was_old && !is_old {
                            info!(provider = id.as_str(), "queue caught up");
                        }
                    }
                }
                Err(e) => {
                    g.telemetry.set_loop(NAME, LoopState::Failed(e.to_string()));
                    store = None;
                }
            }
        } else {
            g.telemetry.set_loop(NAME, LoopState::Failed("cannot open the database".into()));
        }
        if !pause(interval, &token).await {
            break;
        }
    }
}
