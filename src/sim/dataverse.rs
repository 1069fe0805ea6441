//! A simulated Microsoft Dataverse Web API (v9.2) with its OAuth 2.0 token endpoint, served on
//! loopback for the tests and the demo: a test double on the wire, generic over entity sets so
//! the gateway's configurable mapping can point at any table and column names.
//!
//! What it implements, after `research/dataverse.md` §2:
//!
//! - `POST /{tenant}/oauth2/v2.0/token`: client credentials, scope `{url}/.default`, tokens
//!   that expire after [`Config::token_lifetime_secs`]; AAD-shaped errors.
//! - `GET /api/data/v9.2/{set}`: `$select`, `$filter`, `$orderby`, `$expand`, `$top`,
//!   `Prefer: odata.maxpagesize`, `@odata.nextLink` with Dataverse's `$skiptoken` paging cookie
//!   (rows in primary-key order unless `$orderby` says otherwise).
//! - Change tracking: `Prefer: odata.track-changes` → `@odata.deltaLink`; the deltaLink returns
//!   changed rows, then `$deletedEntity` entries; tokens expire.
//! - `GET/PATCH/DELETE /{set}({id})` and `/{set}(key='value',…)`, `POST /{set}`: upsert,
//!   `If-Match`, `If-None-Match`, `@odata.bind`, `Prefer: return=representation`.
//! - `POST /api/data/v9.2/$batch` with changesets (atomic) and `Prefer: odata.continue-on-error`.
//! - `GET /api/data/v9.2/EntityDefinitions(LogicalName='…')`: enough metadata to probe a mapping.
//! - Service protection: 429 with `Retry-After`, 503, latency, outage windows, and a count of
//!   requests that ignored a `Retry-After` ([`Stats::early_requests`]).
//! - Admin routes (no auth): `GET /sim/stats`, `GET|POST /sim/rows/{set}`,
//!   `DELETE /sim/rows/{set}/{id}`, `POST /sim/expire-delta-tokens`.
//!
//! Invariants: every row carries a version from one counter that only grows (its ETag
//! `W/"<version>"`), and `modifiedon` in UTC to the second; every write and delete bumps the
//! counter, which is what change tracking reads. A `$batch` runs under one lock, so a changeset
//! is atomic (it is rolled back by restoring a copy of the data). No request input can panic
//! the server: anything malformed is a 400.
//!
//! # Which error texts are real
//!
//! Verbatim from the research (Microsoft docs): the 429 code `0x80072322` and its message;
//! "The version of the existing record doesn't match the RowVersion property provided." (412,
//! code `""`); "A record with matching key values already exists." (412); the 404 shape
//! "`{logical}` With Id = `{id}` Does Not Exist" (code `""`); "The "$filter" query parameter
//! isn't supported when Change Tracking is enabled." (and its `$orderby`/`$expand`/`$top`
//! variants); the prefix "The key in the request URI is not valid for resource"; the AAD error
//! shape and `AADSTS7000215: Invalid client secret provided`/`AADSTS70011`.
//!
//! From memory of real responses, not in the research: 404 `0x80060888` "Resource not found
//! for the segment '…'."; the rest of the AADSTS7000215 sentence, `AADSTS700016`,
//! `AADSTS90002`; the `WWW-Authenticate` header on a 401.
//!
//! Invented (status and wording chosen here; a client must not match on them): every 401 body
//! (code `0x80040220` was suggested for it; the research names only the error types
//! `ExpiredAuthTicket`/`InvalidAuthTicket`, which the messages start with); the 503 body; the
//! expired delta token (410 Gone, as OData 4.0 §11.3 prescribes for a delta link that is no
//! longer valid, code `0x80044352`); bad `$skiptoken`/`$deltatoken`, `$filter` syntax, batch
//! format, batch size and unsupported-option messages (400 with code `0x80060888`, 501 for
//! documented features the simulator lacks); the `EntityDefinitions` 404 text.

use crate::pull::dataverse::multipart as batch;
mod paging;
mod query;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;

use self::paging::{Cookie, DeltaToken, Track, encode_query, percent_decode};
use self::query::{Expand, Filter};
use super::tls::{Identity, TlsListener, server_config};

/// The Web API path, after the environment URL.
pub const API_PATH: &str = "/api/data/v9.2/";

/// Most operations a `$batch` may carry (`research/dataverse.md` §2.9).
pub const MAX_BATCH_OPERATIONS: usize = 1000;

/// The first row version handed out (real ETags are numbers of this size).
const FIRST_VERSION: u64 = 1_000_000;

/// A table the simulator serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The URL segment, e.g. `msemr_medicationadministrations`.
    pub entity_set: String,
    /// The logical name, e.g. `msemr_medicationadministration` (metadata, error messages).
    pub logical_name: String,
    /// The primary key column, e.g. `msemr_medicationadministrationid`.
    pub primary_key: String,
    /// Declared alternate keys, each a list of columns, e.g. `[["msemr_messagecontrolid"]]`.
    pub alternate_keys: Vec<Vec<String>>,
    /// Whether change tracking is enabled (`Prefer: odata.track-changes` is honoured).
    pub change_tracking: bool,
    /// Choice (picklist) columns: column → its options (value, label), served as
    /// `PicklistAttributeMetadata` with their `OptionSet`.
    pub choices: BTreeMap<String, Vec<(i64, String)>>,
}

impl Table {
    /// A table without alternate keys or change tracking.
    pub fn new(entity_set: &str, logical_name: &str, primary_key: &str) -> Self {
        Self {
            entity_set: entity_set.to_owned(),
            logical_name: logical_name.to_owned(),
            primary_key: primary_key.to_owned(),
            alternate_keys: Vec::new(),
            change_tracking: false,
            choices: BTreeMap::new(),
        }
    }
}

/// What an outage window does to Web API requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outage {
    /// 429 with `Retry-After` (service protection).
    Throttle,
    /// 503 Service Unavailable.
    Unavailable,
    /// The connection is dropped mid-response.
    Down,
}

impl Outage {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Throttle => "throttle",
            Self::Unavailable => "unavailable",
            Self::Down => "down",
        }
    }
}

/// An outage during a window of time after start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheduled {
    /// Start of the window, ms after the server started.
    pub from_ms: u64,
    /// End of the window (exclusive).
    pub until_ms: u64,
    /// What happens in the window.
    pub kind: Outage,
}

impl std::str::FromStr for Scheduled {
    type Err = String;

    /// `KIND@FROM-UNTIL` in ms after start, e.g. `throttle@0-3000`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not KIND@FROM_MS-UNTIL_MS (e.g. unavailable@0-3000)");
        let (kind, window) = s.split_once('@').ok_or_else(bad)?;
        let (from, until) = window.split_once('-').ok_or_else(bad)?;
        let kind = [Outage::Throttle, Outage::Unavailable, Outage::Down]
            .into_iter()
            .find(|o| o.name() == kind)
            .ok_or_else(|| format!("unknown outage {kind:?} (throttle, unavailable, down)"))?;
        Ok(Self {
            from_ms: from.trim().parse().map_err(|_| bad())?,
            until_ms: until.trim().parse().map_err(|_| bad())?,
            kind,
        })
    }
}

/// The simulator's settings.
#[derive(Clone)]
pub struct Config {
    /// The tenant in the token endpoint's path.
    pub tenant: String,
    /// The application (client) id accepted.
    pub client_id: String,
    /// Its secret.
    pub client_secret: String,
    /// The tables served.
    pub tables: Vec<Table>,
    /// Access-token lifetime, seconds (`expires_in`).
    pub token_lifetime_secs: u64,
    /// How long a delta token stays valid, seconds.
    pub delta_token_ttl_secs: u64,
    /// Largest page (`odata.maxpagesize` is capped to it; the size without the preference).
    pub max_page_size: usize,
    /// Share of Web API calls answered 429 (0 to 1).
    pub throttle_rate: f64,
    /// The `Retry-After` of a 429, seconds.
    pub retry_after_secs: u64,
    /// Share of Web API calls answered 503 (0 to 1).
    pub error_rate: f64,
    /// Added to every Web API call, ms.
    pub latency_ms: u64,
    /// Outage windows.
    pub schedule: Vec<Scheduled>,
    /// Random seed (fault draws, GUIDs, tokens).
    pub seed: u64,
    /// Serve HTTPS with this identity.
    pub tls: Option<Identity>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("tenant", &self.tenant)
            .field("client_id", &self.client_id)
            .field("client_secret", &"***")
            .field("tables", &self.tables)
            .field("throttle_rate", &self.throttle_rate)
            .field("error_rate", &self.error_rate)
            .field("schedule", &self.schedule)
            .finish_non_exhaustive()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            tenant: "sim-tenant".into(),
            client_id: "sim-client".into(),
            client_secret: "sim-secret".into(),
            tables: Vec::new(),
            token_lifetime_secs: 3599,
            delta_token_ttl_secs: 7 * 24 * 3600,
            max_page_size: 5000,
            throttle_rate: 0.0,
            retry_after_secs: 1,
            error_rate: 0.0,
            latency_ms: 0,
            schedule: Vec::new(),
            seed: 1,
            tls: None,
        }
    }
}

/// What the simulator has seen and answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Web API requests by HTTP method (a `$batch` counts once, as a POST).
    pub requests: BTreeMap<String, u64>,
    /// Token requests (good or bad).
    pub token_requests: u64,
    /// 401 answers (Web API and token endpoint).
    pub unauthorized: u64,
    /// 429 answers.
    pub throttled: u64,
    /// 503 answers.
    pub unavailable: u64,
    /// Connections dropped by a `down` window.
    pub dropped: u64,
    /// `$batch` requests.
    pub batches: u64,
    /// Operations inside `$batch` requests.
    pub batch_operations: u64,
    /// Successful, committed POST/PATCH per entity set and row id ("records per id").
    pub writes: BTreeMap<String, BTreeMap<String, u64>>,
    /// Web API requests that arrived while a `Retry-After` given to the same client was still
    /// running (0 for a well-behaved client).
    pub early_requests: u64,
}

impl Stats {
    /// Committed writes to one row.
    pub fn writes_to(&self, entity_set: &str, id: &str) -> u64 {
        self.writes.get(entity_set).and_then(|m| m.get(id)).copied().unwrap_or(0)
    }
}

/// Starting errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Cannot bind.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] super::tls::Error),
    /// The configuration is unusable.
    #[error("dataverse simulator: {0}")]
    Config(String),
}

/// A stored row.
#[derive(Debug, Clone)]
struct Row {
    fields: Map<String, Value>,
    version: u64,
}

#[derive(Debug, Clone)]
struct TableData {
    table: Table,
    /// By lower-cased primary key (GUIDs compare case-insensitively).
    rows: BTreeMap<String, Row>,
    /// Deleted rows: lower-cased key → (id as stored, version of the delete).
    deleted: BTreeMap<String, (String, u64)>,
    /// One index per alternate key: normalised key values → lower-cased primary key.
    alt: Vec<HashMap<String, String>>,
}

/// Normalises a key value for comparison (strings case-insensitive).
fn key_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(format!("s{}", s.to_lowercase())),
        Value::Number(n) => Some(format!("n{}", n.as_f64().unwrap_or(0.0))),
        other => Some(format!("o{other}")),
    }
}

impl TableData {
    fn alt_text(&self, i: usize, row: &Map<String, Value>) -> Option<String> {
        let cols = self.table.alternate_keys.get(i)?;
        let mut out = String::new();
        for c in cols {
            out.push_str(&key_text(row.get(c)?)?);
            out.push('\u{1f}');
        }
        Some(out)
    }

    /// Merges `patch` into the row `pk` (creating it), as version `version` at `now`.
    fn apply(
        &mut self,
        pk: &str,
        patch: Map<String, Value>,
        version: u64,
        now: &str,
        enforce_keys: bool,
    ) -> Result<bool, Reply> {
        let lower = pk.to_lowercase();
        let existing = self.rows.get(&lower);
        let created = existing.is_none();
        let mut merged = match existing {
            Some(r) => r.fields.clone(),
            None => {
                let mut m = Map::new();
                m.insert(self.table.primary_key.clone(), Value::String(pk.to_owned()));
                m.insert("createdon".into(), Value::String(now.to_owned()));
                m
            }
        };
        for (k, v) in patch {
            if k != self.table.primary_key {
                merged.insert(k, v);
            }
        }
        merged.insert("modifiedon".into(), Value::String(now.to_owned()));
        let old = existing.map(|r| r.fields.clone());
        for i in 0..self.alt.len() {
            if let Some(k) = self.alt_text(i, &merged) {
                let clash = self.alt[i].get(&k).is_some_and(|other| *other != lower);
                if clash && enforce_keys {
                    return Err(Reply::error(412, "", DUPLICATE));
                }
            }
        }
        for i in 0..self.alt.len() {
            if let Some(k) = old.as_ref().and_then(|o| self.alt_text(i, o)) {
                self.alt[i].remove(&k);
            }
            if let Some(k) = self.alt_text(i, &merged) {
                self.alt[i].insert(k, lower.clone());
            }
        }
        self.deleted.remove(&lower);
        self.rows.insert(lower, Row { fields: merged, version });
        Ok(created)
    }

    fn remove(&mut self, lower: &str, version: u64) -> bool {
        let Some(row) = self.rows.remove(lower) else { return false };
        for i in 0..self.alt.len() {
            if let Some(k) = self.alt_text(i, &row.fields) {
                self.alt[i].remove(&k);
            }
        }
        let id = row.fields.get(&self.table.primary_key).map_or_else(
            || lower.to_owned(),
            |v| v.as_str().map_or_else(|| v.to_string(), str::to_owned),
        );
        self.deleted.insert(lower.to_owned(), (id, version));
        true
    }

    /// The lower-cased primary key of the row a URI key names, if it exists.
    fn find(&self, key: &Key) -> Option<String> {
        match key {
            Key::Id(id) => {
                let lower = id.to_lowercase();
                self.rows.contains_key(&lower).then_some(lower)
            }
            Key::Alt(i, pairs) => {
                let row: Map<String, Value> = pairs.iter().cloned().collect();
                self.alt_text(*i, &row).and_then(|k| self.alt[*i].get(&k).cloned())
            }
        }
    }

    fn columns(&self) -> Vec<String> {
        let mut cols: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        cols.insert(self.table.primary_key.clone());
        cols.extend(["createdon".to_owned(), "modifiedon".to_owned()]);
        for k in &self.table.alternate_keys {
            cols.extend(k.iter().cloned());
        }
        cols.extend(self.table.choices.keys().cloned());
        for r in self.rows.values() {
            for (k, v) in &r.fields {
                if !query::is_navigation(v) {
                    cols.insert(k.clone());
                }
            }
        }
        cols.into_iter().collect()
    }
}

/// A key in a URI: the primary key, or the values of declared alternate key `i`.
#[derive(Debug, Clone, PartialEq)]
enum Key {
    Id(String),
    Alt(usize, Vec<(String, Value)>),
}

#[derive(Debug, Clone)]
struct Data {
    version: u64,
    /// Delta tokens below this version are expired.
    cutoff: u64,
    tables: BTreeMap<String, TableData>,
    writes: BTreeMap<String, BTreeMap<String, u64>>,
    rng: fastrand::Rng,
}

impl Data {
    fn guid(&mut self) -> String {
        new_guid(&mut self.rng)
    }

    fn bump(&mut self) -> u64 {
        self.version += 1;
        self.version
    }
}

fn new_guid(rng: &mut fastrand::Rng) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}",
        rng.u32(..),
        rng.u16(..),
        rng.u16(..0x1000),
        rng.u8(8..12),
        rng.u16(..0x1000),
        rng.u64(..1 << 48)
    )
}

fn now_text() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

struct Client {
    client_id: String,
    expires: Instant,
}

struct Shared {
    config: Config,
    url: String,
    started: Instant,
    rng: Mutex<fastrand::Rng>,
    data: Mutex<Data>,
    tokens: Mutex<HashMap<String, Client>>,
    /// Client id → end of the `Retry-After` it was given.
    retry_after: Mutex<HashMap<String, Instant>>,
    stats: Mutex<Stats>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn stats(&self) -> MutexGuard<'_, Stats> {
        lock(&self.stats)
    }
}

/// A running simulator.
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    /// The environment URL (`http://127.0.0.1:PORT`): the Web API is at `{url}/api/data/v9.2/`,
    /// the token endpoint at `{url}/{tenant}/oauth2/v2.0/token`.
    pub url: String,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// The Web API base (`{url}/api/data/v9.2/`).
    pub fn api_url(&self) -> String {
        format!("{}{API_PATH}", self.url)
    }

    /// The token endpoint.
    pub fn token_url(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.url, self.shared.config.tenant)
    }

    /// Seeds or changes a row as if a user edited it: bumps its version (ETag) and `modifiedon`
    /// and feeds change tracking. A row without its primary key gets a new GUID. Unknown
    /// entity sets and non-object rows are ignored.
    pub fn upsert_row(&self, entity_set: &str, row: Value) {
        let _ = admin_upsert(&self.shared, entity_set, row);
    }

    /// One row as stored (with its `@odata.etag`), by primary key.
    pub fn row(&self, entity_set: &str, id: &str) -> Option<Value> {
        let data = lock(&self.shared.data);
        let r = data.tables.get(entity_set)?.rows.get(&id.to_lowercase())?;
        Some(Value::Object(with_etag(r.fields.clone(), r.version)))
    }

    /// Deletes a row as if a user did (change tracking reports it).
    pub fn delete_row(&self, entity_set: &str, id: &str) {
        let mut data = lock(&self.shared.data);
        let version = data.version + 1;
        if let Some(t) = data.tables.get_mut(entity_set) {
            if t.remove(&id.to_lowercase(), version) {
                data.version = version;
            }
        }
    }

    /// Every row of a table, in primary-key order, with `@odata.etag`.
    pub fn rows(&self, entity_set: &str) -> Vec<Value> {
        all_rows(&self.shared, entity_set)
    }

    /// What the simulator has seen and answered so far.
    pub fn stats(&self) -> Stats {
        stats_now(&self.shared)
    }

    /// Makes every delta token handed out so far expired.
    pub fn expire_delta_tokens(&self) {
        expire(&self.shared);
    }

    /// Stops serving and waits for open connections to finish.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.task.await;
    }
}

/// The counters, with the committed writes (kept with the data so a rollback undoes them).
fn stats_now(shared: &Shared) -> Stats {
    let writes = lock(&shared.data).writes.clone();
    Stats { writes, ..shared.stats().clone() }
}

fn expire(shared: &Shared) {
    let mut data = lock(&shared.data);
    let v = data.bump();
    data.cutoff = v;
}

fn all_rows(shared: &Shared, entity_set: &str) -> Vec<Value> {
    let data = lock(&shared.data);
    data.tables.get(entity_set).map_or_else(Vec::new, |t| {
        t.rows.values().map(|r| Value::Object(with_etag(r.fields.clone(), r.version))).collect()
    })
}

fn admin_upsert(shared: &Shared, entity_set: &str, row: Value) -> bool {
    let Value::Object(mut fields) = row else { return false };
    let mut data = lock(&shared.data);
    let Some(pk_col) = data.tables.get(entity_set).map(|t| t.table.primary_key.clone()) else {
        return false;
    };
    fields.remove("@odata.etag");
    let pk = match fields.get(&pk_col) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => data.guid(),
        Some(other) => other.to_string(),
    };
    fields.insert(pk_col, Value::String(pk.clone()));
    let version = data.bump();
    let now = now_text();
    data.tables
        .get_mut(entity_set)
        .is_some_and(|t| t.apply(&pk, fields, version, &now, false).is_ok())
}

fn with_etag(mut fields: Map<String, Value>, version: u64) -> Map<String, Value> {
    fields.insert("@odata.etag".into(), Value::String(etag(version)));
    fields
}

fn etag(version: u64) -> String {
    format!("W/\"{version}\"")
}

/// Binds `listen` and serves until [`Running::stop`] (on the current tokio runtime).
///
/// # Errors
/// [`Error`] when the address cannot be bound, TLS cannot be set up, two tables share an
/// entity set, or `max_page_size` is 0.
pub async fn start(listen: SocketAddr, config: Config) -> Result<Running, Error> {
    let tls = match &config.tls {
        Some(id) => Some(server_config(id, None)?),
        None => None,
    };
    if config.max_page_size == 0 {
        return Err(Error::Config("max_page_size must be at least 1".into()));
    }
    let mut tables = BTreeMap::new();
    for t in &config.tables {
        let data = TableData {
            table: t.clone(),
            rows: BTreeMap::new(),
            deleted: BTreeMap::new(),
            alt: vec![HashMap::new(); t.alternate_keys.len()],
        };
        if tables.insert(t.entity_set.clone(), data).is_some() {
            return Err(Error::Config(format!("entity set {:?} declared twice", t.entity_set)));
        }
    }
    let tcp = tokio::net::TcpListener::bind(listen).await?;
    let addr = tcp.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{addr}");
    let shared = Arc::new(Shared {
        rng: Mutex::new(fastrand::Rng::with_seed(config.seed)),
        data: Mutex::new(Data {
            version: FIRST_VERSION,
            cutoff: 0,
            tables,
            writes: BTreeMap::new(),
            rng: fastrand::Rng::with_seed(config.seed ^ 0x5eed),
        }),
        config,
        url: url.clone(),
        started: Instant::now(),
        tokens: Mutex::new(HashMap::new()),
        retry_after: Mutex::new(HashMap::new()),
        stats: Mutex::new(Stats::default()),
    });
    let app = Router::new()
        .fallback(handle)
        .layer(DefaultBodyLimit::max(64 * 1024 * 1024))
        .with_state(shared.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let task = match tls {
        Some(cfg) => {
            let listener = TlsListener::new(tcp, cfg)?;
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
            })
        }
        None => tokio::spawn(async move {
            let _ = axum::serve(tcp, app).with_graceful_shutdown(shutdown).await;
        }),
    };
    Ok(Running { addr, url, shared, stop: Some(stop), task })
}

// ---------------------------------------------------------------------------------------------
// Answers

/// "The version of the existing record doesn't match …" (verbatim, research §2.8).
const VERSION_MISMATCH: &str =
    "The version of the existing record doesn't match the RowVersion property provided.";
/// Verbatim, research §2.8.
const DUPLICATE: &str = "A record with matching key values already exists.";
/// Verbatim, research §2.11.
const THROTTLED: &str =
    "Number of requests exceeded the limit of 6000 over time window of 300 seconds.";
/// Code of [`THROTTLED`] (verbatim).
const THROTTLED_CODE: &str = "0x80072322";
/// From memory of real answers ("Resource not found for the segment"); used for our invented
/// 400s too.
const SEGMENT_CODE: &str = "0x80060888";

/// An answer before it becomes an HTTP response (also the inner answer of a batch operation).
#[derive(Debug, Clone, PartialEq)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Payload,
}

/// The body of a [`Reply`].
#[derive(Debug, Clone, PartialEq)]
enum Payload {
    Empty,
    Json(Value),
    /// Written as is (a `$batch` response); its content type is in the reply's headers.
    Raw(String),
}

impl Reply {
    fn new(status: u16) -> Self {
        Self { status, headers: Vec::new(), body: Payload::Empty }
    }

    fn json(status: u16, body: Value) -> Self {
        Self { status, headers: Vec::new(), body: Payload::Json(body) }
    }

    fn error(status: u16, code: &str, message: &str) -> Self {
        Self::json(status, json!({"error": {"code": code, "message": message}}))
    }

    fn bad(message: &str) -> Self {
        Self::error(400, SEGMENT_CODE, message)
    }

    fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.to_owned(), v.into()));
        self
    }

    fn is_error(&self) -> bool {
        self.status >= 400
    }

    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = match self.body {
            Payload::Json(ref v) => (status, v.to_string()).into_response(),
            Payload::Raw(ref s) => (status, s.clone()).into_response(),
            Payload::Empty => status.into_response(),
        };
        let h = r.headers_mut();
        h.insert("OData-Version", HeaderValue::from_static("4.0"));
        if matches!(self.body, Payload::Json(_)) {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; odata.metadata=minimal"),
            );
        }
        for (k, v) in &self.headers {
            if let (Ok(name), Ok(value)) =
                (header::HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v))
            {
                h.insert(name, value);
            }
        }
        r
    }

    /// The inner HTTP message of a batch response part.
    fn to_http(&self) -> batch::HttpMessage {
        let reason = StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Unknown");
        let mut headers = Vec::new();
        if matches!(self.body, Payload::Json(_)) {
            headers.push((
                "Content-Type".to_owned(),
                "application/json; odata.metadata=minimal".to_owned(),
            ));
        }
        headers.push(("OData-Version".to_owned(), "4.0".to_owned()));
        headers.extend(self.headers.iter().cloned());
        batch::HttpMessage {
            start: format!("HTTP/1.1 {} {reason}", self.status),
            headers,
            body: match &self.body {
                Payload::Json(v) => v.to_string(),
                Payload::Raw(s) => s.clone(),
                Payload::Empty => String::new(),
            },
        }
    }
}

/// A body that fails at once: hyper closes the connection mid-response (as `sim::iis` does).
struct Broken;

impl http_body::Body for Broken {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Poll::Ready(Some(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "dropped by the simulated Dataverse",
        ))))
    }
}

fn dropped() -> Response {
    let mut r = Response::new(Body::new(Broken));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

// ---------------------------------------------------------------------------------------------
// Entry point and the service-protection layer

fn header_list(h: &HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_owned(), v.to_owned())))
        .collect()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    if let Some(rest) = path.strip_prefix("/sim/") {
        return admin(&shared, &method, rest, &body).into_response();
    }
    if let Some(resource) = path.strip_prefix(API_PATH) {
        return api_entry(&shared, method, resource, uri.query().unwrap_or(""), &headers, &body)
            .await;
    }
    if let Some(tenant) = path.strip_suffix("/oauth2/v2.0/token") {
        return token(&shared, &method, tenant.trim_start_matches('/'), &body).into_response();
    }
    Reply::error(404, SEGMENT_CODE, &format!("Resource not found for the segment '{path}'."))
        .into_response()
}

async fn api_entry(
    shared: &Arc<Shared>,
    method: Method,
    resource: &str,
    query: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    *shared.stats().requests.entry(method.as_str().to_owned()).or_default() += 1;
    if shared.config.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(shared.config.latency_ms)).await;
    }
    let client = match authenticate(shared, headers) {
        Ok(c) => c,
        Err(r) => {
            shared.stats().unauthorized += 1;
            return r.into_response();
        }
    };
    if let Some(r) = protect(shared, &client) {
        return r;
    }
    let headers = header_list(headers);
    let reply = if resource == "$batch" {
        if method == Method::POST {
            run_batch(shared, &headers, body)
        } else {
            method_not_allowed(&method)
        }
    } else {
        let mut data = lock(&shared.data);
        let req = Req { method: method.as_str(), resource, query, headers: &headers, body };
        api(shared, &mut data, &req)
    };
    reply.into_response()
}

/// Checks the bearer token; the client id it was issued to.
fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<String, Reply> {
    let challenge = format!(
        "Bearer authorization_uri={}/{}/oauth2/authorize, resource_id={}/",
        shared.url, shared.config.tenant, shared.url
    );
    let unauthorized =
        |msg: &str| Reply::error(401, "0x80040220", msg).header("WWW-Authenticate", &challenge);
    let Some(auth) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return Err(unauthorized(
            "InvalidAuthTicket: the request has no Authorization header; send \
             'Authorization: Bearer <token>' with a token from the token endpoint.",
        ));
    };
    let token = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
        .map(str::trim)
        .unwrap_or("");
    let tokens = lock(&shared.tokens);
    match tokens.get(token) {
        Some(c) if Instant::now() < c.expires => Ok(c.client_id.clone()),
        Some(_) => Err(unauthorized(
            "ExpiredAuthTicket: the access token has expired; acquire a new token and retry.",
        )),
        None => Err(unauthorized("InvalidAuthTicket: the access token is not valid.")),
    }
}

fn throttled(secs: u64) -> Response {
    Reply::error(429, THROTTLED_CODE, THROTTLED)
        .header("Retry-After", secs.to_string())
        .into_response()
}

/// Service protection and injected faults; `Some` answers instead of the Web API.
fn protect(shared: &Shared, client: &str) -> Option<Response> {
    let now = Instant::now();
    let retry_after = shared.config.retry_after_secs;
    {
        let windows = lock(&shared.retry_after);
        if let Some(until) = windows.get(client).filter(|u| **u > now) {
            let left = until.duration_since(now).as_millis().div_ceil(1000);
            drop(windows);
            let mut s = shared.stats();
            s.early_requests += 1;
            s.throttled += 1;
            return Some(throttled(u64::try_from(left).unwrap_or(retry_after).max(1)));
        }
    }
    let elapsed = u64::try_from(shared.started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let scheduled = shared
        .config
        .schedule
        .iter()
        .find(|s| (s.from_ms..s.until_ms).contains(&elapsed))
        .map(|s| s.kind);
    let drawn = scheduled.or_else(|| {
        let mut rng = lock(&shared.rng);
        if shared.config.throttle_rate > 0.0 && rng.f64() < shared.config.throttle_rate {
            Some(Outage::Throttle)
        } else if shared.config.error_rate > 0.0 && rng.f64() < shared.config.error_rate {
            Some(Outage::Unavailable)
        } else {
            None
        }
    });
    match drawn? {
        Outage::Throttle => {
            if retry_after > 0 {
                lock(&shared.retry_after)
                    .insert(client.to_owned(), now + Duration::from_secs(retry_after));
            }
            shared.stats().throttled += 1;
            Some(throttled(retry_after))
        }
        Outage::Unavailable => {
            shared.stats().unavailable += 1;
            Some(
                Reply::error(
                    503,
                    "",
                    "The service is temporarily unavailable (simulated outage); retry later.",
                )
                .into_response(),
            )
        }
        Outage::Down => {
            shared.stats().dropped += 1;
            Some(dropped())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// OAuth 2.0 client credentials

fn aad_error(status: u16, error: &str, code: u32, description: &str) -> Reply {
    let now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
    let trace = new_guid(&mut fastrand::Rng::new());
    Reply::json(
        status,
        json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {description}\r\nTrace ID: {trace}\r\nCorrelation ID: {trace}\r\nTimestamp: {now}"
            ),
            "error_codes": [code],
            "timestamp": now,
            "trace_id": trace,
            "correlation_id": trace,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
    )
}

fn token(shared: &Shared, method: &Method, tenant: &str, body: &[u8]) -> Reply {
    shared.stats().token_requests += 1;
    if *method != Method::POST {
        return method_not_allowed(method);
    }
    let cfg = &shared.config;
    if tenant != cfg.tenant {
        return aad_error(
            400,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        );
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if get("grant_type") != "client_credentials" {
        return aad_error(
            400,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type (the simulator knows client_credentials).",
        );
    }
    if get("client_id") != cfg.client_id {
        return aad_error(
            400,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{}' was not found in the directory '{tenant}'.",
                get("client_id")
            ),
        );
    }
    if get("client_secret") != cfg.client_secret {
        shared.stats().unauthorized += 1;
        return aad_error(
            401,
            "invalid_client",
            7000215,
            &format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                cfg.client_id
            ),
        );
    }
    let scope = get("scope");
    let resource = scope.strip_suffix("/.default").map(|r| r.trim_end_matches('/'));
    if resource != Some(shared.url.as_str()) {
        return aad_error(
            400,
            "invalid_scope",
            70011,
            &format!(
                "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid (expected {}/.default).",
                shared.url
            ),
        );
    }
    let access_token = {
        let mut rng = lock(&shared.rng);
        (0..64).map(|_| rng.alphanumeric()).collect::<String>()
    };
    lock(&shared.tokens).insert(
        access_token.clone(),
        Client {
            client_id: cfg.client_id.clone(),
            expires: Instant::now() + Duration::from_secs(cfg.token_lifetime_secs),
        },
    );
    Reply::json(
        200,
        json!({"token_type": "Bearer", "expires_in": cfg.token_lifetime_secs, "ext_expires_in": cfg.token_lifetime_secs, "access_token": access_token}),
    )
}

// ---------------------------------------------------------------------------------------------
// Admin routes

fn admin(shared: &Shared, method: &Method, rest: &str, body: &[u8]) -> Response {
    let ok = |v: Value| Reply::json(200, v).into_response();
    match (method.as_str(), rest.split('/').collect::<Vec<_>>().as_slice()) {
        ("GET", ["stats"]) => match serde_json::to_value(stats_now(shared)) {
            Ok(v) => ok(v),
            Err(e) => Reply::error(500, "", &e.to_string()).into_response(),
        },
        ("POST", ["expire-delta-tokens"]) => {
            expire(shared);
            Reply::new(204).into_response()
        }
        ("GET", ["rows", set]) => ok(Value::Array(all_rows(shared, set))),
        ("POST", ["rows", set]) => {
            let rows = match serde_json::from_slice::<Value>(body) {
                Ok(Value::Array(rows)) => rows,
                Ok(Value::Object(o)) => vec![Value::Object(o)],
                _ => return Reply::bad("expected a JSON array of rows").into_response(),
            };
            let n = rows.len();
            for r in rows {
                if !admin_upsert(shared, set, r) {
                    return Reply::bad(&format!("cannot upsert into {set:?}")).into_response();
                }
            }
            ok(json!({"upserted": n}))
        }
        ("DELETE", ["rows", set, id]) => {
            let mut data = lock(&shared.data);
            let version = data.version + 1;
            let removed =
                data.tables.get_mut(*set).is_some_and(|t| t.remove(&id.to_lowercase(), version));
            if removed {
                data.version = version;
            }
            Reply::new(if removed { 204 } else { 404 }).into_response()
        }
        _ => Reply::error(404, "", "unknown simulator admin route").into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// The Web API

struct Req<'a> {
    method: &'a str,
    /// After `/api/data/v9.2/`, still percent-encoded.
    resource: &'a str,
    /// The raw query string.
    query: &'a str,
    headers: &'a [(String, String)],
    body: &'a [u8],
}

impl Req<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        batch::header(self.headers, name)
    }
}

fn method_not_allowed(method: &Method) -> Reply {
    Reply::error(
        405,
        "",
        &format!("The requested resource does not support http method '{method}'."),
    )
}

/// The `Prefer` preferences, split on commas outside quotes.
#[derive(Debug, Default)]
struct Prefer {
    max_page_size: Option<usize>,
    track_changes: bool,
    representation: bool,
    continue_on_error: bool,
}

fn prefer(headers: &[(String, String)]) -> Prefer {
    let mut p = Prefer::default();
    for (k, v) in headers {
        if !k.eq_ignore_ascii_case("prefer") {
            continue;
        }
        let mut quoted = false;
        let mut items = Vec::new();
        let mut start = 0;
        for (i, c) in v.char_indices() {
            match c {
                '"' => quoted = !quoted,
                ',' if !quoted => {
                    items.push(&v[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        items.push(&v[start..]);
        for item in items {
            let item = item.trim();
            if let Some(n) = item.strip_prefix("odata.maxpagesize=") {
                p.max_page_size = n.trim().trim_matches('"').parse().ok().filter(|n| *n > 0);
            } else if item == "odata.track-changes" {
                p.track_changes = true;
            } else if item == "return=representation" {
                p.representation = true;
            } else if item == "odata.continue-on-error" {
                p.continue_on_error = true;
            }
        }
    }
    p
}

/// Query options, parsed.
#[derive(Debug, Default)]
struct Opts {
    select: Option<Vec<String>>,
    filter: Option<Filter>,
    orderby: Option<Vec<(String, bool)>>,
    expand: Vec<Expand>,
    top: Option<usize>,
    count: bool,
    skiptoken: Option<Cookie>,
    deltatoken: Option<String>,
    /// The names of the system query options present, in order.
    present: Vec<String>,
}

fn query_error(e: &query::Error) -> Reply {
    match e {
        query::Error::Syntax(m) => Reply::bad(&format!("Syntax error: {m}")),
        query::Error::Unsupported(_) => Reply::error(501, "", &e.to_string()),
    }
}

fn parse_opts(raw: &str) -> Result<Opts, Reply> {
    let mut o = Opts::default();
    for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
        match k.as_ref() {
            "$select" => o.select = Some(query::parse_select(&v).map_err(|e| query_error(&e))?),
            "$filter" => o.filter = Some(query::parse_filter(&v).map_err(|e| query_error(&e))?),
            "$orderby" => o.orderby = Some(query::parse_orderby(&v).map_err(|e| query_error(&e))?),
            "$expand" => o.expand = query::parse_expand(&v).map_err(|e| query_error(&e))?,
            "$top" => {
                o.top = Some(v.trim().parse().map_err(|_| {
                    Reply::bad(&format!("Invalid value '{v}' for $top query option."))
                })?);
            }
            "$count" => o.count = v == "true",
            "$skiptoken" => {
                o.skiptoken = Some(Cookie::from_skiptoken(&v).ok_or_else(|| {
                    Reply::bad("The $skiptoken is not valid: follow @odata.nextLink unchanged.")
                })?);
            }
            "$deltatoken" => o.deltatoken = Some(v.into_owned()),
            "$skip" => {
                return Err(Reply::bad(
                    "The query parameter $skip is not supported: page with odata.maxpagesize and @odata.nextLink.",
                ));
            }
            other if other.starts_with('$') => {
                return Err(Reply::error(
                    501,
                    "",
                    &format!("the Dataverse simulator does not implement the query option {other}"),
                ));
            }
            _ => continue,
        }
        o.present.push(k.into_owned());
    }
    Ok(o)
}

/// The resource part of a URI: `set`, `set(key)`, or `EntityDefinitions(LogicalName='x')`.
fn split_resource(resource: &str) -> Result<(String, Option<String>), Reply> {
    let decoded = percent_decode(resource)
        .ok_or_else(|| Reply::bad("The request URI is not valid (bad percent-encoding)."))?;
    match decoded.find('(') {
        None => {
            if decoded.contains('/') {
                return Err(Reply::error(
                    501,
                    "",
                    &format!("the Dataverse simulator does not implement the path '{decoded}'"),
                ));
            }
            Ok((decoded, None))
        }
        Some(i) => {
            let name = decoded[..i].to_owned();
            let rest = &decoded[i + 1..];
            let Some(key) = rest.strip_suffix(')') else {
                if rest.contains(')') {
                    return Err(Reply::error(
                        501,
                        "",
                        &format!("the Dataverse simulator does not implement the path '{decoded}'"),
                    ));
                }
                return Err(Reply::bad(&format!("The request URI '{decoded}' is not valid.")));
            };
            Ok((name, Some(key.to_owned())))
        }
    }
}

/// Parses `key='a',n=2` (or a bare id) against the table's keys.
fn parse_key(t: &Table, text: &str) -> Result<Key, Reply> {
    let invalid = || {
        Reply::bad(&format!(
            "The key in the request URI is not valid for resource '{}'. Make sure that the \
             key name and value are valid.",
            t.logical_name
        ))
    };
    let text = text.trim();
    if !text.contains('=') {
        let id = text.trim_matches('\'');
        if id.is_empty() {
            return Err(invalid());
        }
        return Ok(Key::Id(id.to_owned()));
    }
    let mut pairs = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let start = i;
        while i < chars.len() && chars[i] != '=' {
            i += 1;
        }
        let name: String = chars[start..i].iter().collect::<String>().trim().to_owned();
        i += 1;
        let value = if chars.get(i) == Some(&'\'') {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(invalid()),
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        s.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(&c) => {
                        s.push(c);
                        i += 1;
                    }
                }
            }
            Value::String(s)
        } else {
            let start = i;
            while i < chars.len() && chars[i] != ',' {
                i += 1;
            }
            let raw: String = chars[start..i].iter().collect::<String>().trim().to_owned();
            if paging::is_guid(&raw) {
                Value::String(raw.to_lowercase())
            } else if let Ok(n) = raw.parse::<i64>() {
                Value::from(n)
            } else if raw == "true" || raw == "false" {
                Value::Bool(raw == "true")
            } else {
                return Err(invalid());
            }
        };
        if name.is_empty() {
            return Err(invalid());
        }
        pairs.push((name, value));
        match chars.get(i) {
            None => break,
            Some(',') => i += 1,
            Some(_) => return Err(invalid()),
        }
    }
    if let [(name, Value::String(id))] = pairs.as_slice() {
        if *name == t.primary_key {
            return Ok(Key::Id(id.clone()));
        }
    }
    let mut names: Vec<&str> = pairs.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    let index = t.alternate_keys.iter().position(|k| {
        let mut cols: Vec<&str> = k.iter().map(String::as_str).collect();
        cols.sort_unstable();
        cols == names
    });
    match index {
        Some(i) => Ok(Key::Alt(i, pairs)),
        None => Err(invalid()),
    }
}

fn not_found(t: &Table, key_text: &str) -> Reply {
    Reply::error(404, "", &format!("{} With Id = {key_text} Does Not Exist", t.logical_name))
}

/// Serves one Web API request (also one operation of a `$batch`) on locked data.
fn api(shared: &Shared, data: &mut Data, req: &Req<'_>) -> Reply {
    if let Some(reply) = attribute_metadata(shared, data, req) {
        return reply;
    }
    let (name, key) = match split_resource(req.resource) {
        Ok(x) => x,
        Err(r) => return r,
    };
    if name == "$batch" {
        return Reply::bad("Batches cannot be nested.");
    }
    let opts = match parse_opts(req.query) {
        Ok(o) => o,
        Err(r) => return r,
    };
    if name == "EntityDefinitions" {
        return entity_definition(shared, data, key.as_deref(), &opts, req);
    }
    let Some(table) = data.tables.get(&name).map(|t| t.table.clone()) else {
        return Reply::error(
            404,
            SEGMENT_CODE,
            &format!("Resource not found for the segment '{name}'."),
        );
    };
    match (req.method, key) {
        ("GET", None) => list(shared, data, &table, &opts, req),
        ("POST", None) => create(shared, data, &table, &opts, req),
        ("GET", Some(k)) => match parse_key(&table, &k) {
            Ok(key) => get_one(shared, data, &table, &key, &k, &opts, req),
            Err(r) => r,
        },
        ("PATCH", Some(k)) => match parse_key(&table, &k) {
            Ok(key) => upsert(shared, data, &table, &key, &k, &opts, req),
            Err(r) => r,
        },
        ("DELETE", Some(k)) => match parse_key(&table, &k) {
            Ok(key) => {
                let Some(lower) = data.tables.get(&name).and_then(|t| t.find(&key)) else {
                    return not_found(&table, &k);
                };
                let version = data.version + 1;
                if data.tables.get_mut(&name).is_some_and(|t| t.remove(&lower, version)) {
                    data.version = version;
                }
                Reply::new(204)
            }
            Err(r) => r,
        },
        (m, _) => method_not_allowed(&Method::from_bytes(m.as_bytes()).unwrap_or(Method::GET)),
    }
}

fn context(shared: &Shared, set: &str, select: Option<&[String]>) -> String {
    match select {
        Some(cols) => format!("{}{API_PATH}$metadata#{set}({})", shared.url, cols.join(",")),
        None => format!("{}{API_PATH}$metadata#{set}", shared.url),
    }
}

fn output_row(t: &Table, row: &Row, opts: &Opts) -> Value {
    let projected =
        query::project(&row.fields, Some(&t.primary_key), opts.select.as_deref(), &opts.expand);
    Value::Object(with_etag(projected, row.version))
}

/// The link to the same query with `$skiptoken`/`$deltatoken` replaced by `extra`.
fn link(shared: &Shared, set: &str, raw_query: &str, extra: &str) -> String {
    let mut kept: Vec<&str> = raw_query
        .split('&')
        .filter(|p| {
            let name = p.split('=').next().unwrap_or("");
            let name = percent_decode(name).unwrap_or_default();
            !p.is_empty() && name != "$skiptoken" && name != "$deltatoken"
        })
        .collect();
    kept.push(extra);
    format!("{}{API_PATH}{set}?{}", shared.url, kept.join("&"))
}

/// The sort key of a row: the order columns, then the primary key.
fn sort_key(row: &Map<String, Value>, cols: &[(String, bool)]) -> Vec<Value> {
    cols.iter().map(|(c, _)| row.get(c).cloned().unwrap_or(Value::Null)).collect()
}

fn cmp_keys(a: &[Value], b: &[Value], cols: &[(String, bool)]) -> std::cmp::Ordering {
    for ((x, y), (_, desc)) in a.iter().zip(b).zip(cols) {
        let o = query::sort_cmp(x, y);
        let o = if *desc { o.reverse() } else { o };
        if o.is_ne() {
            return o;
        }
    }
    std::cmp::Ordering::Equal
}

/// The tracked listing's items: a row, or a deleted id.
enum Item<'a> {
    Row(&'a Row),
    Deleted(&'a str),
}

#[allow(clippy::too_many_lines)] // one flow: options → items → page → links
fn list(shared: &Shared, data: &mut Data, t: &Table, opts: &Opts, req: &Req<'_>) -> Reply {
    let prefs = prefer(req.headers);
    let cookie_track = opts.skiptoken.as_ref().and_then(|c| c.track);
    let tracking = t.change_tracking
        && (prefs.track_changes || opts.deltatoken.is_some() || cookie_track.is_some());
    if tracking {
        for o in ["$filter", "$orderby", "$expand", "$top"] {
            if opts.present.iter().any(|p| p == o) {
                return Reply::bad(&format!(
                    "The \"{o}\" query parameter isn't supported when Change Tracking is enabled."
                ));
            }
        }
    } else if opts.deltatoken.is_some() {
        return Reply::bad(&format!(
            "Change tracking is not enabled for the entity '{}': $deltatoken cannot be used.",
            t.logical_name
        ));
    }
    // A column the table does not have (a renamed or misspelled one in a mapping). The
    // simulator knows a table's columns from its rows, so an empty table accepts any.
    if let Some(select) = &opts.select {
        if let Some(td) = data.tables.get(&t.entity_set).filter(|td| !td.rows.is_empty()) {
            let known = td.columns();
            if let Some(c) = select.iter().find(|c| !known.contains(c)) {
                return Reply::bad(&format!(
                    "Could not find a property named '{c}' on type 'Microsoft.Dynamics.CRM.{}'.",
                    t.logical_name
                ));
            }
        }
    }
    let page_size = match prefs.max_page_size {
        Some(n) => n.min(shared.config.max_page_size),
        None => opts.top.unwrap_or(shared.config.max_page_size).min(shared.config.max_page_size),
    };
    let paged = prefs.max_page_size.is_some() || opts.top.is_none();
    let pk_col = (t.primary_key.clone(), false);
    let Some(td) = data.tables.get(&t.entity_set) else {
        return Reply::bad("unknown table");
    };

    // Which items, in which order, after which cookie.
    let mut track = None;
    let mut items: Vec<(Vec<Value>, Item<'_>)> = Vec::new();
    let order: Vec<(String, bool)>;
    let mut pagenumber = 1;
    if tracking {
        order = vec![pk_col];
        track = Some(match (cookie_track, &opts.deltatoken) {
            (Some(tr), _) => tr,
            (None, Some(text)) => {
                let Some(tok) = DeltaToken::parse(text) else {
                    return Reply::bad(
                        "The $deltatoken is not valid: use @odata.deltaLink unchanged.",
                    );
                };
                let age = chrono::Utc::now().signed_duration_since(tok.issued);
                let ttl = i64::try_from(shared.config.delta_token_ttl_secs).unwrap_or(i64::MAX);
                if tok.version < data.cutoff || age.num_seconds() > ttl {
                    return Reply::error(
                        410,
                        "0x80044352",
                        "The change tracking token has expired. Read the table again with \
                         Prefer: odata.track-changes (a full re-sync) to get a new delta link.",
                    )
                    .header(
                        "Location",
                        link(shared, &t.entity_set, req.query, "").trim_end_matches(['&', '?']),
                    );
                }
                Track::Delta { since: tok.version, upto: data.version, deleted: false }
            }
            (None, None) => Track::Snapshot { upto: data.version },
        });
        if let Some(c) = &opts.skiptoken {
            pagenumber = c.pagenumber;
        }
        let after = opts
            .skiptoken
            .as_ref()
            .map(|c| (c.last.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(), c.track));
        match track {
            Some(Track::Snapshot { upto }) => {
                for r in td.rows.values().filter(|r| r.version <= upto) {
                    items.push((sort_key(&r.fields, &order), Item::Row(r)));
                }
            }
            Some(Track::Delta { since, upto, .. }) => {
                for r in td.rows.values().filter(|r| r.version > since && r.version <= upto) {
                    items.push((sort_key(&r.fields, &order), Item::Row(r)));
                }
                for (lower, (id, v)) in &td.deleted {
                    if *v > since && *v <= upto {
                        items.push((vec![Value::String(lower.clone())], Item::Deleted(id)));
                    }
                }
            }
            None => {}
        }
        // Rows come in primary-key order (the map's), then the deletes in id order.
        if let Some((last, tr)) = after {
            let in_deletes = matches!(tr, Some(Track::Delta { deleted: true, .. }));
            let pos = items.iter().position(|(k, item)| {
                let is_del = matches!(item, Item::Deleted(..));
                match (in_deletes, is_del) {
                    (false, true) => true,
                    (true, false) => false,
                    _ => cmp_keys(k, &last, &order).is_gt(),
                }
            });
            let pos = pos.unwrap_or(items.len());
            items.drain(..pos);
        }
    } else {
        let mut cols = opts.orderby.clone().unwrap_or_default();
        if !cols.iter().any(|(c, _)| *c == t.primary_key) {
            cols.push(pk_col);
        }
        order = cols;
        for r in td.rows.values() {
            if opts.filter.as_ref().is_none_or(|f| f.matches(&r.fields)) {
                items.push((sort_key(&r.fields, &order), Item::Row(r)));
            }
        }
        items.sort_by(|a, b| cmp_keys(&a.0, &b.0, &order));
        if let Some(c) = &opts.skiptoken {
            if c.last.len() != order.len()
                || c.last.iter().zip(&order).any(|((a, _), (b, _))| a != b)
            {
                return Reply::bad(
                    "The $skiptoken does not belong to this query: follow @odata.nextLink unchanged.",
                );
            }
            pagenumber = c.pagenumber;
            let last: Vec<Value> = c.last.iter().map(|(_, v)| v.clone()).collect();
            items.retain(|(k, _)| cmp_keys(k, &last, &order).is_gt());
        }
    }
    let total = items.len();
    let more = paged && items.len() > page_size;
    items.truncate(page_size);

    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        Value::String(context(shared, &t.entity_set, opts.select.as_deref())),
    );
    if opts.count {
        body.insert("@odata.count".into(), Value::from(total));
    }
    let deleted_context =
        format!("{}{API_PATH}$metadata#{}/$deletedEntity", shared.url, t.entity_set);
    let value: Vec<Value> = items
        .iter()
        .map(|(_, item)| match item {
            Item::Row(r) => output_row(t, r, opts),
            Item::Deleted(id) => {
                json!({"@odata.context": deleted_context, "id": id, "reason": "deleted"})
            }
        })
        .collect();
    if more {
        let (last_key, last_deleted) = match items.last() {
            Some((k, item)) => (k.clone(), matches!(item, Item::Deleted(..))),
            None => (Vec::new(), false),
        };
        let names: Vec<String> = if last_deleted {
            vec![t.primary_key.clone()]
        } else {
            order.iter().map(|(c, _)| c.clone()).collect()
        };
        let track = match track {
            Some(Track::Delta { since, upto, .. }) => {
                Some(Track::Delta { since, upto, deleted: last_deleted })
            }
            other => other,
        };
        let first = items
            .first()
            .filter(|(_, i)| matches!(i, Item::Row(_)) != last_deleted)
            .map(|(k, _)| k.clone())
            .unwrap_or_default();
        let cookie = Cookie {
            pagenumber: pagenumber + 1,
            last: names.into_iter().zip(last_key).collect(),
            first,
            track,
        };
        let extra = format!("$skiptoken={}", encode_query(&cookie.to_skiptoken()));
        body.insert(
            "@odata.nextLink".into(),
            Value::String(link(shared, &t.entity_set, req.query, &extra)),
        );
    } else if let Some(Track::Snapshot { upto } | Track::Delta { upto, .. }) = track {
        let tok = DeltaToken { version: upto, issued: now_utc_seconds() };
        let extra = format!("$deltatoken={}", tok.to_query());
        body.insert(
            "@odata.deltaLink".into(),
            Value::String(link(shared, &t.entity_set, req.query, &extra)),
        );
    }
    body.insert("value".into(), Value::Array(value));
    let mut applied = Vec::new();
    if let Some(n) = prefs.max_page_size {
        applied.push(format!("odata.maxpagesize={}", n.min(shared.config.max_page_size)));
    }
    if tracking {
        applied.push("odata.track-changes".to_owned());
    }
    let mut r = Reply::json(200, Value::Object(body));
    if !applied.is_empty() {
        r = r.header("Preference-Applied", applied.join(","));
    }
    r
}

fn now_utc_seconds() -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now();
    chrono::DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now)
}

fn get_one(
    shared: &Shared,
    data: &Data,
    t: &Table,
    key: &Key,
    key_text: &str,
    opts: &Opts,
    req: &Req<'_>,
) -> Reply {
    let Some(td) = data.tables.get(&t.entity_set) else { return not_found(t, key_text) };
    let Some(row) = td.find(key).and_then(|l| td.rows.get(&l)) else {
        return not_found(t, key_text);
    };
    if opts.expand.is_empty() && req.header("If-None-Match") == Some(etag(row.version).as_str()) {
        return Reply::new(304).header("ETag", etag(row.version));
    }
    let mut v = output_row(t, row, opts);
    if let Value::Object(m) = &mut v {
        m.insert(
            "@odata.context".into(),
            Value::String(format!(
                "{}/$entity",
                context(shared, &t.entity_set, opts.select.as_deref())
            )),
        );
    }
    Reply::json(200, v).header("ETag", etag(row.version))
}

/// Turns a request body into the columns to write: `nav@odata.bind` → `_nav_value`,
/// annotations dropped, server-managed columns ignored.
fn body_fields(data: &Data, req: &Req<'_>) -> Result<Map<String, Value>, Reply> {
    let body: Value = serde_json::from_slice(req.body).map_err(|e| {
        Reply::bad(&format!("Error identified in Payload provided by the user: {e}"))
    })?;
    let Value::Object(obj) = body else {
        return Err(Reply::bad(
            "Error identified in Payload provided by the user: expected a JSON object",
        ));
    };
    let mut out = Map::new();
    for (k, v) in obj {
        if let Some(nav) = k.strip_suffix("@odata.bind") {
            let col = format!("_{}_value", nav.to_lowercase());
            match v {
                Value::Null => {
                    out.insert(col, Value::Null);
                }
                Value::String(s) => {
                    out.insert(col, Value::String(resolve_bind(data, &s)?));
                }
                // Collection-valued navigation (associate many): not stored by the simulator.
                _ => {}
            }
        } else if k.contains('@')
            || matches!(k.as_str(), "modifiedon" | "createdon" | "versionnumber")
        {
            continue;
        } else {
            out.insert(k, v);
        }
    }
    Ok(out)
}

/// `/contacts(guid)`, `contacts(guid)`, `{url}/api/data/v9.2/accounts(accountnumber='A')` → the id.
fn resolve_bind(data: &Data, reference: &str) -> Result<String, Reply> {
    let bad = || {
        Reply::bad(&format!("The @odata.bind value '{reference}' is not a valid entity reference."))
    };
    let r = match reference.find(API_PATH) {
        Some(i) => &reference[i + API_PATH.len()..],
        None => reference.trim_start_matches('/'),
    };
    let (set, key) = split_resource(r).map_err(|_| bad())?;
    let key = key.ok_or_else(bad)?;
    match data.tables.get(&set) {
        Some(td) => {
            let k = parse_key(&td.table, &key)?;
            match (&k, td.find(&k)) {
                (_, Some(lower)) => Ok(td
                    .rows
                    .get(&lower)
                    .and_then(|row| row.fields.get(&td.table.primary_key))
                    .and_then(Value::as_str)
                    .map_or(lower, str::to_owned)),
                (Key::Id(id), None) if paging::is_guid(id) => Ok(id.to_lowercase()),
                (_, None) => Err(not_found(&td.table, &key)),
            }
        }
        // A table the simulator does not serve: keep the GUID as given.
        None if paging::is_guid(key.trim_matches('\'')) => {
            Ok(key.trim_matches('\'').to_lowercase())
        }
        None => Err(bad()),
    }
}

fn count_write(data: &mut Data, set: &str, id: &str) {
    *data.writes.entry(set.to_owned()).or_default().entry(id.to_owned()).or_default() += 1;
}

fn entity_id(shared: &Shared, set: &str, key: &str) -> String {
    format!("{}{API_PATH}{set}({key})", shared.url)
}

fn create(shared: &Shared, data: &mut Data, t: &Table, opts: &Opts, req: &Req<'_>) -> Reply {
    let fields = match body_fields(data, req) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let pk = match fields.get(&t.primary_key) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Null) | None => data.guid(),
        Some(_) => {
            return Reply::bad(&format!(
                "The primary key {} must be a GUID string.",
                t.primary_key
            ));
        }
    };
    if data.tables.get(&t.entity_set).is_some_and(|td| td.rows.contains_key(&pk.to_lowercase())) {
        return Reply::error(412, "", DUPLICATE);
    }
    let version = data.version + 1;
    let now = now_text();
    let Some(td) = data.tables.get_mut(&t.entity_set) else { return not_found(t, &pk) };
    if let Err(r) = td.apply(&pk, fields, version, &now, true) {
        return r;
    }
    data.version = version;
    count_write(data, &t.entity_set, &pk);
    written(shared, data, t, &pk, &pk, opts, req, 201)
}

/// The answer to a successful write: 204 + `OData-EntityId`, or the row with
/// `return=representation`.
#[allow(clippy::too_many_arguments)]
fn written(
    shared: &Shared,
    data: &Data,
    t: &Table,
    pk: &str,
    uri_key: &str,
    opts: &Opts,
    req: &Req<'_>,
    status_with_body: u16,
) -> Reply {
    let id = entity_id(shared, &t.entity_set, uri_key);
    let row = data.tables.get(&t.entity_set).and_then(|td| td.rows.get(&pk.to_lowercase()));
    if prefer(req.headers).representation {
        if let Some(row) = row {
            let mut v = output_row(t, row, opts);
            if let Value::Object(m) = &mut v {
                m.insert(
                    "@odata.context".into(),
                    Value::String(format!(
                        "{}/$entity",
                        context(shared, &t.entity_set, opts.select.as_deref())
                    )),
                );
            }
            return Reply::json(status_with_body, v)
                .header("ETag", etag(row.version))
                .header("Preference-Applied", "return=representation");
        }
    }
    let mut r = Reply::new(204).header("OData-EntityId", id.clone()).header("Location", id);
    if let Some(row) = row {
        r = r.header("ETag", etag(row.version));
    }
    r
}

#[allow(clippy::too_many_arguments)]
fn upsert(
    shared: &Shared,
    data: &mut Data,
    t: &Table,
    key: &Key,
    key_text: &str,
    opts: &Opts,
    req: &Req<'_>,
) -> Reply {
    let mut fields = match body_fields(data, req) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Some(td) = data.tables.get(&t.entity_set) else { return not_found(t, key_text) };
    let existing = td.find(key);
    let current = existing.as_ref().and_then(|l| td.rows.get(l));
    if let Some(m) = req.header("If-Match") {
        let Some(row) = current else { return not_found(t, key_text) };
        if m != "*" && m != etag(row.version) {
            return Reply::error(412, "", VERSION_MISMATCH);
        }
    }
    if req.header("If-None-Match") == Some("*") && current.is_some() {
        return Reply::error(412, "", DUPLICATE);
    }
    let pk = match (current, key) {
        (Some(row), _) => row
            .fields
            .get(&t.primary_key)
            .and_then(Value::as_str)
            .map_or_else(|| existing.clone().unwrap_or_default(), str::to_owned),
        (None, Key::Id(id)) => id.clone(),
        (None, Key::Alt(_, pairs)) => {
            for (k, v) in pairs {
                fields.insert(k.clone(), v.clone());
            }
            data.guid()
        }
    };
    fields.remove(&t.primary_key);
    let version = data.version + 1;
    let now = now_text();
    let Some(td) = data.tables.get_mut(&t.entity_set) else { return not_found(t, key_text) };
    let created = match td.apply(&pk, fields, version, &now, true) {
        Ok(c) => c,
        Err(r) => return r,
    };
    data.version = version;
    count_write(data, &t.entity_set, &pk);
    written(shared, data, t, &pk, key_text, opts, req, if created { 201 } else { 200 })
}

fn entity_definition(
    shared: &Shared,
    data: &Data,
    key: Option<&str>,
    opts: &Opts,
    req: &Req<'_>,
) -> Reply {
    if req.method != "GET" {
        return method_not_allowed(
            &Method::from_bytes(req.method.as_bytes()).unwrap_or(Method::POST),
        );
    }
    let Some(key) = key else {
        return Reply::error(
            501,
            "",
            "the Dataverse simulator serves EntityDefinitions(LogicalName='…') only",
        );
    };
    let logical =
        key.strip_prefix("LogicalName=").map(|v| v.trim().trim_matches('\'')).unwrap_or("");
    let Some(td) = data.tables.values().find(|td| td.table.logical_name == logical) else {
        return Reply::error(
            404,
            "0x80040217",
            &format!("Could not find an entity with the logical name '{logical}'."),
        );
    };
    let t = &td.table;
    let mut m = Map::new();
    m.insert(
        "@odata.context".into(),
        Value::String(format!("{}{API_PATH}$metadata#EntityDefinitions/$entity", shared.url)),
    );
    m.insert("LogicalName".into(), Value::String(t.logical_name.clone()));
    m.insert("EntitySetName".into(), Value::String(t.entity_set.clone()));
    m.insert("PrimaryIdAttribute".into(), Value::String(t.primary_key.clone()));
    m.insert("ChangeTrackingEnabled".into(), Value::Bool(t.change_tracking));
    let expanded = |nav: &str| opts.expand.iter().any(|e| e.nav == nav);
    if expanded("Attributes") {
        // Lookups are read as `_x_value` but their attribute is `x` (research §1/§2.3).
        let attrs: Vec<Value> = td
            .columns()
            .into_iter()
            .map(|c| {
                let logical = c
                    .strip_prefix('_')
                    .and_then(|x| x.strip_suffix("_value"))
                    .map_or_else(|| c.clone(), str::to_owned);
                let kind = if logical != c {
                    "Lookup"
                } else if t.choices.contains_key(&c) {
                    "Picklist"
                } else if c == t.primary_key {
                    "Uniqueidentifier"
                } else if c == "createdon" || c == "modifiedon" {
                    "DateTime"
                } else {
                    match td.rows.values().find_map(|r| r.fields.get(&c).filter(|v| !v.is_null())) {
                        Some(Value::Bool(_)) => "Boolean",
                        Some(Value::Number(n)) if n.is_f64() => "Decimal",
                        Some(Value::Number(_)) => "Integer",
                        _ => "String",
                    }
                };
                json!({"LogicalName": logical, "AttributeType": kind})
            })
            .collect();
        m.insert("Attributes".into(), Value::Array(attrs));
    }
    if expanded("Keys") {
        let keys: Vec<Value> = t
            .alternate_keys
            .iter()
            .map(|k| json!({"KeyAttributes": k, "EntityKeyIndexStatus": "Active"}))
            .collect();
        m.insert("Keys".into(), Value::Array(keys));
    }
    if let Some(select) = &opts.select {
        m.retain(|k, _| {
            k.starts_with('@') || select.contains(k) || k == "Attributes" || k == "Keys"
        });
    }
    Reply::json(200, Value::Object(m))
}

/// `EntityDefinitions(LogicalName='x')/Attributes/Microsoft.Dynamics.CRM.{Picklist|Status}AttributeMetadata`:
/// the table's choice columns with their options (`$expand=OptionSet` is always served; the
/// simulator's choices are all picklists, so the status cast is an empty list). `None` when the
/// path is something else.
fn attribute_metadata(shared: &Shared, data: &Data, req: &Req<'_>) -> Option<Reply> {
    let decoded = percent_decode(req.resource)?;
    let rest = decoded.strip_prefix("EntityDefinitions(LogicalName=")?;
    let (logical, cast) = rest.split_once(")/Attributes/")?;
    let logical = logical.trim().trim_matches('\'');
    if req.method != "GET" {
        return Some(method_not_allowed(
            &Method::from_bytes(req.method.as_bytes()).unwrap_or(Method::POST),
        ));
    }
    let picklists = match cast {
        "Microsoft.Dynamics.CRM.PicklistAttributeMetadata" => true,
        "Microsoft.Dynamics.CRM.StatusAttributeMetadata" => false,
        _ => {
            return Some(Reply::error(
                501,
                "",
                &format!("the Dataverse simulator does not implement the path '{decoded}'"),
            ));
        }
    };
    let Some(td) = data.tables.values().find(|td| td.table.logical_name == logical) else {
        return Some(Reply::error(
            404,
            "0x80040217",
            &format!("Could not find an entity with the logical name '{logical}'."),
        ));
    };
    let label = |text: &str| {
        json!({"LocalizedLabels": [{"Label": text, "LanguageCode": 1033}],
               "UserLocalizedLabel": {"Label": text, "LanguageCode": 1033}})
    };
    let value: Vec<Value> = if picklists {
        td.table
            .choices
            .iter()
            .map(|(column, options)| {
                let options: Vec<Value> = options
                    .iter()
                    .map(|(v, text)| json!({"Value": v, "Label": label(text)}))
                    .collect();
                json!({"LogicalName": column, "OptionSet": {"Options": options}, "GlobalOptionSet": null})
            })
            .collect()
    } else {
        Vec::new()
    };
    Some(Reply::json(
        200,
        json!({
            "@odata.context": format!("{}{API_PATH}$metadata#EntityDefinitions('{logical}')/Attributes/{cast}(LogicalName,OptionSet)", shared.url),
            "value": value,
        }),
    ))
}

// ---------------------------------------------------------------------------------------------
// $batch

fn run_batch(shared: &Shared, headers: &[(String, String)], body: &[u8]) -> Reply {
    shared.stats().batches += 1;
    let Some(boundary) = batch::header(headers, "content-type").and_then(batch::boundary) else {
        return Reply::bad("A $batch request needs Content-Type: multipart/mixed; boundary=….");
    };
    let Ok(text) = std::str::from_utf8(body) else {
        return Reply::bad("The $batch body is not UTF-8.");
    };
    let parts = match batch::parse(text, &boundary) {
        Ok(p) => p,
        Err(e) => return Reply::bad(&format!("The $batch body is not valid: {e}")),
    };
    // Parse everything first so a malformed batch changes nothing.
    enum Unit {
        Single(batch::Part, batch::HttpMessage),
        Changeset(Vec<(batch::Part, batch::HttpMessage)>),
    }
    let parse_op = |p: &batch::Part| -> Result<batch::HttpMessage, Reply> {
        let ct = batch::header(&p.headers, "content-type").unwrap_or("");
        if !ct.to_ascii_lowercase().starts_with("application/http") {
            return Err(Reply::bad(&format!(
                "A batch part has Content-Type {ct:?}, not application/http."
            )));
        }
        batch::parse_http(&p.body).map_err(|e| Reply::bad(&e))
    };
    let mut units = Vec::new();
    let mut n_ops = 0;
    for p in parts {
        let ct = batch::header(&p.headers, "content-type").unwrap_or("");
        if let Some(cs) = batch::boundary(ct) {
            let ops = match batch::parse(&p.body, &cs) {
                Ok(o) => o,
                Err(e) => return Reply::bad(&format!("A changeset is not valid: {e}")),
            };
            let mut list = Vec::new();
            for op in ops {
                if batch::header(&op.headers, "content-type").and_then(batch::boundary).is_some() {
                    return Reply::bad("Changesets cannot be nested.");
                }
                let m = match parse_op(&op) {
                    Ok(m) => m,
                    Err(r) => return r,
                };
                if m.start.starts_with("GET ") {
                    return Reply::bad("GET requests are not allowed inside a changeset.");
                }
                list.push((op, m));
            }
            n_ops += list.len();
            units.push(Unit::Changeset(list));
        } else {
            let m = match parse_op(&p) {
                Ok(m) => m,
                Err(r) => return r,
            };
            n_ops += 1;
            units.push(Unit::Single(p, m));
        }
    }
    if n_ops > MAX_BATCH_OPERATIONS {
        return Reply::bad(&format!(
            "The number of requests in the batch ({n_ops}) exceeds the limit of {MAX_BATCH_OPERATIONS}."
        ));
    }
    shared.stats().batch_operations += n_ops as u64;
    let continue_on_error = prefer(headers).continue_on_error;
    let mut data = lock(&shared.data);
    let mut out_parts = Vec::new();
    let mut outer_status = 200;
    let http_part = |reply: &Reply, content_id: Option<&str>| {
        let mut h = vec![
            ("Content-Type".to_owned(), "application/http".to_owned()),
            ("Content-Transfer-Encoding".to_owned(), "binary".to_owned()),
        ];
        if let Some(id) = content_id {
            h.push(("Content-ID".to_owned(), id.to_owned()));
        }
        batch::Part { headers: h, body: batch::write_http(&reply.to_http()) }
    };
    let mut rng = fastrand::Rng::with_seed(data.rng.u64(..));
    for unit in units {
        match unit {
            Unit::Single(p, m) => {
                let reply = exec_op(shared, &mut data, &m, &HashMap::new());
                out_parts.push(http_part(&reply, batch::header(&p.headers, "content-id")));
                if reply.is_error() && !continue_on_error {
                    outer_status = reply.status;
                    break;
                }
            }
            Unit::Changeset(ops) => {
                let snapshot = data.clone();
                let mut ids: HashMap<String, String> = HashMap::new();
                let mut replies = Vec::new();
                let mut failed = None;
                for (p, m) in &ops {
                    let reply = exec_op(shared, &mut data, m, &ids);
                    let cid = batch::header(&p.headers, "content-id").map(str::to_owned);
                    if reply.is_error() {
                        failed = Some((reply, cid));
                        break;
                    }
                    if let (Some(cid), Some((_, e))) =
                        (&cid, reply.headers.iter().find(|(k, _)| k == "OData-EntityId"))
                    {
                        ids.insert(cid.clone(), e.clone());
                    }
                    replies.push((reply, cid));
                }
                if let Some((reply, cid)) = failed {
                    // The changeset is rolled back; its answer is the failure alone.
                    *data = snapshot;
                    out_parts.push(http_part(&reply, cid.as_deref()));
                    if !continue_on_error {
                        outer_status = reply.status;
                        break;
                    }
                } else {
                    let cs = format!("changesetresponse_{}", new_guid(&mut rng));
                    let inner: Vec<batch::Part> =
                        replies.iter().map(|(r, cid)| http_part(r, cid.as_deref())).collect();
                    out_parts.push(batch::Part {
                        headers: vec![(
                            "Content-Type".to_owned(),
                            format!("multipart/mixed; boundary={cs}"),
                        )],
                        body: batch::write(&cs, &inner),
                    });
                }
            }
        }
    }
    drop(data);
    let b = format!("batchresponse_{}", new_guid(&mut rng));
    let body = batch::write(&b, &out_parts);
    Reply {
        status: outer_status,
        headers: vec![("Content-Type".into(), format!("multipart/mixed; boundary={b}"))],
        body: Payload::Raw(body),
    }
}

/// Runs one batch operation: its URL made relative to the Web API, `$n` references resolved.
fn exec_op(
    shared: &Shared,
    data: &mut Data,
    m: &batch::HttpMessage,
    ids: &HashMap<String, String>,
) -> Reply {
    let mut words = m.start.split_whitespace();
    let (Some(method), Some(url)) = (words.next(), words.next()) else {
        return Reply::bad(&format!("Invalid request line {:?} in the batch.", m.start));
    };
    let mut url = url.to_owned();
    if let Some(rest) = url.strip_prefix('$') {
        let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
        match ids.get(&n) {
            Some(e) => url = format!("{e}{}", &rest[n.len()..]),
            None => return Reply::bad(&format!("Content-ID reference ${n} is not defined.")),
        }
    }
    let rel = match url.find(API_PATH) {
        Some(i) => url[i + API_PATH.len()..].to_owned(),
        None => url.trim_start_matches('/').to_owned(),
    };
    let (resource, query) = rel.split_once('?').unwrap_or((&rel, ""));
    let req = Req { method, resource, query, headers: &m.headers, body: m.body.as_bytes() };
    if !matches!(method, "GET" | "POST" | "PATCH" | "DELETE") {
        return method_not_allowed(&Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET));
    }
    if req.body.is_empty() && matches!(method, "POST" | "PATCH") {
        return Reply::bad("Error identified in Payload provided by the user: the body is empty.");
    }
    api(shared, data, &req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        Table {
            entity_set: "x_rows".into(),
            logical_name: "x_row".into(),
            primary_key: "x_rowid".into(),
            alternate_keys: vec![vec!["x_code".into()], vec!["x_a".into(), "x_b".into()]],
            change_tracking: true,
            choices: BTreeMap::new(),
        }
    }

    fn shared() -> Shared {
        let t = table();
        let mut tables = BTreeMap::new();
        let alt = vec![HashMap::new(); t.alternate_keys.len()];
        tables.insert(
            t.entity_set.clone(),
            TableData { table: t, rows: BTreeMap::new(), deleted: BTreeMap::new(), alt },
        );
        Shared {
            config: Config::default(),
            url: "http://sim".into(),
            started: Instant::now(),
            rng: Mutex::new(fastrand::Rng::with_seed(1)),
            data: Mutex::new(Data {
                version: FIRST_VERSION,
                cutoff: 0,
                tables,
                writes: BTreeMap::new(),
                rng: fastrand::Rng::with_seed(2),
            }),
            tokens: Mutex::new(HashMap::new()),
            retry_after: Mutex::new(HashMap::new()),
            stats: Mutex::new(Stats::default()),
        }
    }

    fn call(
        s: &Shared,
        method: &str,
        resource: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let headers: Vec<(String, String)> =
            headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let (resource, query) = resource.split_once('?').unwrap_or((resource, ""));
        let req = Req { method, resource, query, headers: &headers, body: body.as_bytes() };
        api(s, &mut lock(&s.data), &req)
    }

    fn message(r: &Reply) -> String {
        match &r.body {
            Payload::Json(v) => v["error"]["message"].as_str().unwrap_or("").to_owned(),
            _ => String::new(),
        }
    }

    const ID: &str = "00000000-0000-4000-8000-000000000001";

    #[test]
    fn keys_parse_against_the_declared_alternate_keys() {
        let t = table();
        assert_eq!(parse_key(&t, ID).expect("id"), Key::Id(ID.into()));
        assert_eq!(parse_key(&t, &format!("x_rowid={ID}")).expect("named id"), Key::Id(ID.into()));
        assert_eq!(
            parse_key(&t, "x_code='O''Brien, A'").expect("alt"),
            Key::Alt(0, vec![("x_code".into(), json!("O'Brien, A"))])
        );
        assert_eq!(
            parse_key(&t, "x_b=2,x_a='q'").expect("composite, any order"),
            Key::Alt(1, vec![("x_b".into(), json!(2)), ("x_a".into(), json!("q"))])
        );
        for bad in ["x_a='q'", "x_code='open", "x_code=notquoted", "=1", "x_code='a'x", ""] {
            let r = parse_key(&t, bad).expect_err(bad);
            assert!(
                message(&r)
                    .starts_with("The key in the request URI is not valid for resource 'x_row'"),
                "{bad}"
            );
        }
    }

    #[test]
    fn etag_rules() {
        let s = shared();
        let url = format!("x_rows({ID})");
        let r = call(&s, "PATCH", &url, &[("If-Match", "*")], r#"{"x_n":1}"#);
        assert_eq!((r.status, message(&r)), (404, format!("x_row With Id = {ID} Does Not Exist")));
        let r = call(&s, "PATCH", &url, &[("If-None-Match", "*")], r#"{"x_n":1}"#);
        assert_eq!(r.status, 204);
        let r = call(&s, "GET", &url, &[], "");
        let Payload::Json(row) = &r.body else { panic!("json") };
        let tag = row["@odata.etag"].as_str().expect("etag").to_owned();
        assert_eq!(tag, format!("W/\"{}\"", FIRST_VERSION + 1));
        // Conditional GET: 304 on a match, not with $expand, 200 on a mismatch.
        assert_eq!(call(&s, "GET", &url, &[("If-None-Match", &tag)], "").status, 304);
        assert_eq!(
            call(&s, "GET", &format!("{url}?$expand=nav"), &[("If-None-Match", &tag)], "").status,
            200
        );
        assert_eq!(call(&s, "GET", &url, &[("If-None-Match", "W/\"1\"")], "").status, 200);
        // If-None-Match: * never updates; If-Match with an old tag never updates.
        let r = call(&s, "PATCH", &url, &[("If-None-Match", "*")], r#"{"x_n":2}"#);
        assert_eq!((r.status, message(&r).as_str()), (412, DUPLICATE));
        let r = call(&s, "PATCH", &url, &[("If-Match", "W/\"1\"")], r#"{"x_n":2}"#);
        assert_eq!((r.status, message(&r).as_str()), (412, VERSION_MISMATCH));
        // The current tag updates, and moves the tag on; the old one then fails.
        assert_eq!(call(&s, "PATCH", &url, &[("If-Match", &tag)], r#"{"x_n":3}"#).status, 204);
        let r = call(&s, "PATCH", &url, &[("If-Match", &tag)], r#"{"x_n":4}"#);
        assert_eq!(r.status, 412);
        let data = lock(&s.data);
        let row = data.tables["x_rows"].rows.get(ID).expect("row");
        assert_eq!(row.fields["x_n"], 3);
        assert_eq!(row.version, FIRST_VERSION + 2);
        assert_eq!(data.writes["x_rows"][ID], 2);
    }

    #[test]
    fn batch_continue_on_error_answers_every_part() {
        let s = shared();
        let op = |url: &str, body: &str| {
            format!(
                "--b\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\nPATCH {url} HTTP/1.1\r\nContent-Type: application/json\r\n\r\n{body}\r\n"
            )
        };
        let body = format!(
            "{}{}{}--b--\r\n",
            op(&format!("/api/data/v9.2/x_rows({ID})"), r#"{"x_n":1}"#),
            op("/api/data/v9.2/x_rows(x_nokey='1')", r#"{"x_n":2}"#),
            op("http://sim/api/data/v9.2/x_rows(x_code='C')", r#"{"x_n":3}"#),
        );
        let ct = vec![("Content-Type".to_owned(), "multipart/mixed; boundary=b".to_owned())];
        let r = run_batch(&s, &ct, body.as_bytes());
        assert_eq!(r.status, 400, "stops at the first failure");
        let Payload::Raw(text) = &r.body else { panic!("multipart") };
        assert_eq!(text.matches("HTTP/1.1 ").count(), 2, "{text}");
        assert_eq!(lock(&s.data).tables["x_rows"].rows.len(), 1, "the first one stays");

        let mut with = ct.clone();
        with.push(("Prefer".into(), "odata.continue-on-error".into()));
        let r = run_batch(&s, &with, body.as_bytes());
        assert_eq!(r.status, 200);
        let Payload::Raw(text) = &r.body else { panic!("multipart") };
        assert_eq!(text.matches("HTTP/1.1 204 No Content").count(), 2, "{text}");
        assert_eq!(text.matches("HTTP/1.1 400 Bad Request").count(), 1);
        assert_eq!(lock(&s.data).tables["x_rows"].rows.len(), 2);

        // More than 1000 operations is refused before anything runs.
        let many: String = (0..=MAX_BATCH_OPERATIONS)
            .map(|i| op(&format!("x_rows(x_code='K{i}')"), "{}"))
            .collect::<String>()
            + "--b--\r\n";
        let r = run_batch(&s, &ct, many.as_bytes());
        assert_eq!(r.status, 400);
        assert_eq!(lock(&s.data).tables["x_rows"].rows.len(), 2);
    }

    #[test]
    fn schedules_parse() {
        assert_eq!(
            "down@100-200".parse::<Scheduled>(),
            Ok(Scheduled { from_ms: 100, until_ms: 200, kind: Outage::Down })
        );
        assert!("http503@0-1".parse::<Scheduled>().is_err());
        assert!("throttle@x-1".parse::<Scheduled>().is_err());
        assert!(!format!("{:?}", Config::default()).contains("sim-secret"));
    }
}
