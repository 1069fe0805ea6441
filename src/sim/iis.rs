//! A simulated state IIS speaking the CDC WSDL (SOAP 1.2, `urn:cdc:iisb:2011`).
//!
//! It checks user name, password and facility (a wrong one is a `SecurityFault`, as real IIS
//! answer), refuses two messages in one call (`MessageTooLargeFault`), validates the VXU with
//! the same CDC rules as `izrelay hl7 validate` and answers AA, AE with ERR segments (W for
//! warnings, E for errors) or AR, answers `connectivityTest`, recognises a resend of an
//! accepted MSH-10 (answered AA again, recorded as `duplicate`), and injects faults by rate and
//! by schedule. Every call is recorded ([`Delivery`]), in memory (`GET /sim/deliveries`) and
//! optionally as NDJSON in a file, so a test can count deliveries per message.

use std::collections::HashSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tokio::sync::oneshot;

use super::tls::{Identity, TlsListener, server_config};
use crate::hl7::{self, Delimiters, Message, Severity};
use crate::iis::soap::{self, FaultKind, Request};
use crate::store::now_ms;

/// An injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// HTTP 500 with a plain-text body.
    Http500,
    /// HTTP 503 with `Retry-After: 1`.
    Http503,
    /// HTTP 429 with `Retry-After: 1`.
    Http429,
    /// HTTP 408.
    Http408,
    /// The connection is dropped before the message is processed.
    Drop,
    /// The message is processed (and recorded), then the connection is dropped: the ACK is lost.
    LostAck,
    /// A SOAP `UnknownFault`.
    Unknown,
    /// HTTP 200 with an HTML error page (a proxy in the way).
    Html,
    /// HTTP 200 with bytes that are not XML.
    Garbage,
    /// An AR ACK with ERR code 207 (application internal error).
    Ack207,
    /// The answer comes after `slow_ms` (past the client's timeout); the message is processed.
    Slow,
    /// A SOAP `SecurityFault` whatever the credentials.
    Security,
    /// A SOAP `MessageTooLargeFault`.
    TooLarge,
}

impl Fault {
    /// Every fault after which a retry succeeds: what `--fault-rate` draws from by default.
    pub const TRANSIENT: [Fault; 11] = [
        Self::Http500,
        Self::Http503,
        Self::Http429,
        Self::Http408,
        Self::Drop,
        Self::LostAck,
        Self::Unknown,
        Self::Html,
        Self::Garbage,
        Self::Ack207,
        Self::Slow,
    ];

    /// Every fault.
    pub const ALL: [Fault; 13] = [
        Self::Http500,
        Self::Http503,
        Self::Http429,
        Self::Http408,
        Self::Drop,
        Self::LostAck,
        Self::Unknown,
        Self::Html,
        Self::Garbage,
        Self::Ack207,
        Self::Slow,
        Self::Security,
        Self::TooLarge,
    ];

    /// The name used on the command line and in the delivery record.
    pub fn name(self) -> &'static str {
        match self {
            Self::Http500 => "http500",
            Self::Http503 => "http503",
            Self::Http429 => "http429",
            Self::Http408 => "http408",
            Self::Drop => "drop",
            Self::LostAck => "lost_ack",
            Self::Unknown => "unknown_fault",
            Self::Html => "html",
            Self::Garbage => "garbage",
            Self::Ack207 => "ack207",
            Self::Slow => "slow",
            Self::Security => "security_fault",
            Self::TooLarge => "too_large_fault",
        }
    }

    /// Parses a name given by [`Fault::name`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == s)
    }
}

/// A fault forced during a window of time after start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheduled {
    /// Start of the window, ms after the server started.
    pub from_ms: u64,
    /// End of the window (exclusive).
    pub until_ms: u64,
    /// The fault.
    pub fault: Fault,
}

impl std::str::FromStr for Scheduled {
    type Err = String;

    /// `KIND@FROM-UNTIL` in milliseconds after start, e.g. `http503@0-3000`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not KIND@FROM_MS-UNTIL_MS (e.g. http503@0-3000)");
        let (kind, window) = s.split_once('@').ok_or_else(bad)?;
        let (from, until) = window.split_once('-').ok_or_else(bad)?;
        let fault = Fault::parse(kind).ok_or_else(|| format!("unknown fault {kind:?}"))?;
        let from_ms = from.trim().parse().map_err(|_| bad())?;
        let until_ms = until.trim().parse().map_err(|_| bad())?;
        Ok(Self { from_ms, until_ms, fault })
    }
}

/// Response time of the simulated IIS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Latency {
    /// Answer at once.
    #[default]
    None,
    /// A fixed delay, ms.
    Fixed(u64),
    /// Drawn from the response-time curve IZ Gateway's mock IIS publishes (p50 ≈ 1.9 s, p90 ≈
    /// 5.1 s, p99 ≈ 8.9 s; `research/peers.md`).
    Izgw,
}

/// Quantiles of the IZ Gateway mock IIS response time: (cumulative share, ms).
const IZGW_CURVE: [(f64, f64); 7] = [
    (0.0, 150.0),
    (0.16, 500.0),
    (0.5, 1_900.0),
    (0.9, 5_100.0),
    (0.95, 6_300.0),
    (0.99, 8_900.0),
    (1.0, 20_000.0),
];

impl Latency {
    fn draw(self, rng: &mut fastrand::Rng) -> u64 {
        match self {
            Self::None => 0,
            Self::Fixed(ms) => ms,
            Self::Izgw => {
                let u = rng.f64();
                let mut prev = IZGW_CURVE[0];
                for &(q, ms) in &IZGW_CURVE[1..] {
                    if u <= q {
                        let t = (u - prev.0) / (q - prev.0);
                        // Truncation to whole ms is the intent.
                        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                        return (prev.1 + t * (ms - prev.1)) as u64;
                    }
                    prev = (q, ms);
                }
                20_000
            }
        }
    }
}

/// An account the simulated IIS accepts.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
    /// Facility id the account may submit for (any when `None`).
    pub facility: Option<String>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("user", &self.user)
            .field("password", &"***")
            .field("facility", &self.facility)
            .finish()
    }
}

/// The simulator's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Accounts accepted; empty accepts any credentials.
    pub accounts: Vec<Account>,
    /// Share of calls that get a fault drawn from `faults` (0.0..=1.0).
    pub fault_rate: f64,
    /// What `fault_rate` draws from.
    pub faults: Vec<Fault>,
    /// Faults forced in windows of time.
    pub schedule: Vec<Scheduled>,
    /// Response time.
    pub latency: Latency,
    /// How long a [`Fault::Slow`] answer takes, ms.
    pub slow_ms: u64,
    /// Random seed (fault draws, latency), for reproducible runs.
    pub seed: u64,
    /// Validate VXUs with the CDC rules (AE/AR on errors); off answers AA to any VXU.
    pub validate: bool,
    /// Serve HTTPS with this identity.
    pub tls: Option<Identity>,
    /// Require client certificates issued by this CA (PEM).
    pub client_ca: Option<String>,
    /// Append every delivery to this file as NDJSON.
    pub record: Option<PathBuf>,
    /// The endpoint path.
    pub path: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            accounts: Vec::new(),
            fault_rate: 0.0,
            faults: Fault::TRANSIENT.to_vec(),
            schedule: Vec::new(),
            latency: Latency::None,
            slow_ms: 70_000,
            seed: 1,
            validate: true,
            tls: None,
            client_ca: None,
            record: None,
            path: "/iis".into(),
        }
    }
}

/// One call the simulator received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Delivery {
    /// Order of arrival.
    pub seq: u64,
    /// When (ms since 1970).
    pub at_ms: i64,
    /// `submit`, `ping` or the unsupported operation's name.
    pub op: String,
    /// MSH-10 of the message.
    pub control_id: Option<String>,
    /// ORC-3.1 (the vaccination id), identifying the dose across resends.
    pub vaccination_id: Option<String>,
    /// The facility id sent.
    pub facility: Option<String>,
    /// `accepted`, `accepted_with_warnings`, `rejected`, `duplicate`, `security`,
    /// `too_large`, or `fault:<name>` when a fault answered instead of the IIS.
    pub outcome: String,
    /// The fault injected into this call, if any (`lost_ack` and `slow` still process the
    /// message, so their outcome is the IIS's).
    #[serde(default)]
    pub fault: Option<String>,
}

struct Shared {
    config: Config,
    started: Instant,
    rng: Mutex<fastrand::Rng>,
    deliveries: Mutex<Vec<Delivery>>,
    accepted: Mutex<HashSet<String>>,
    file: Option<Mutex<std::fs::File>>,
}

impl Shared {
    fn record(&self, mut d: Delivery) {
        let mut all = self.deliveries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        d.seq = all.len() as u64 + 1;
        if let Some(file) = &self.file {
            if let Ok(mut line) = serde_json::to_vec(&d) {
                line.push(b'\n');
                let mut f = file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let _ = f.write_all(&line).and_then(|()| f.flush());
            }
        }
        all.push(d);
    }

    fn pick_fault(&self) -> (Option<Fault>, u64) {
        let elapsed = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut rng = self.rng.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let latency = self.config.latency.draw(&mut rng);
        if let Some(s) =
            self.config.schedule.iter().find(|s| (s.from_ms..s.until_ms).contains(&elapsed))
        {
            return (Some(s.fault), latency);
        }
        if self.config.fault_rate > 0.0
            && !self.config.faults.is_empty()
            && rng.f64() < self.config.fault_rate
        {
            let i = rng.usize(..self.config.faults.len());
            return (self.config.faults.get(i).copied(), latency);
        }
        (None, latency)
    }
}

/// A running simulator.
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    /// The endpoint URL (`https://127.0.0.1:PORT/iis`).
    pub url: String,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Every call received so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.deliveries.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Stops serving and waits for open connections to finish.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.task.await;
    }
}

/// Starting errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Cannot bind or open the record file.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] super::tls::Error),
}

/// Binds `listen` and serves until [`Running::stop`] (on the current tokio runtime).
///
/// # Errors
/// [`Error`] when the address cannot be bound, the record file opened, or TLS set up.
pub async fn start(listen: SocketAddr, config: Config) -> Result<Running, Error> {
    let file = match &config.record {
        Some(p) => Some(Mutex::new(std::fs::OpenOptions::new().create(true).append(true).open(p)?)),
        None => None,
    };
    let tls = match &config.tls {
        Some(id) => Some(server_config(id, config.client_ca.as_deref())?),
        None => None,
    };
    let path = config.path.clone();
    let shared = Arc::new(Shared {
        rng: Mutex::new(fastrand::Rng::with_seed(config.seed)),
        config,
        started: Instant::now(),
        deliveries: Mutex::new(Vec::new()),
        accepted: Mutex::new(HashSet::new()),
        file,
    });
    let app = Router::new()
        .route("/sim/deliveries", get(deliveries))
        .route(&path, post(endpoint))
        .fallback(post(endpoint))
        .with_state(shared.clone());
    let tcp = tokio::net::TcpListener::bind(listen).await?;
    let addr = tcp.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
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
    Ok(Running { addr, url: format!("{scheme}://{addr}{path}"), shared, stop: Some(stop), task })
}

async fn deliveries(State(shared): State<Arc<Shared>>) -> Response {
    let all = shared.deliveries.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    match serde_json::to_string(&all) {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// A body that fails at once: hyper closes the connection mid-response.
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
            "dropped by the simulated IIS",
        ))))
    }
}

fn dropped() -> Response {
    let mut r = Response::new(Body::new(Broken));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/soap+xml"));
    r
}

fn soap_reply(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/soap+xml; charset=UTF-8"),
    );
    r
}

fn fault(kind: FaultKind) -> Response {
    let (status, code, reason, detail) = match kind {
        FaultKind::Security => (400, 10, "Security", "Invalid Username or Password"),
        FaultKind::MessageTooLarge => (
            400,
            1313,
            "MessageTooLarge",
            "More than one HL7 message was submitted. Please submit one and only one HL7 message per transaction",
        ),
        FaultKind::UnsupportedOperation => {
            (400, 8_675_309, "UnsupportedOperation", "This Operation is not supported")
        }
        FaultKind::Unknown | FaultKind::Other => {
            (500, 54_353, "Unknown", "An unexpected problem occured")
        }
    };
    soap_reply(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        soap::fault_response(kind, code, reason, detail),
    )
}

fn with_retry_after(status: StatusCode, text: &'static str) -> Response {
    let mut r = (status, text).into_response();
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// The transport-level faults, which apply to any operation.
fn transport_fault(f: Fault) -> Option<Response> {
    Some(match f {
        Fault::Http500 => {
            (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response()
        }
        Fault::Http503 => with_retry_after(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable"),
        Fault::Http429 => with_retry_after(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests"),
        Fault::Http408 => (StatusCode::REQUEST_TIMEOUT, "Request Timeout").into_response(),
        Fault::Drop => dropped(),
        Fault::Html => {
            let mut r = (
                StatusCode::OK,
                "<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>",
            )
                .into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            r
        }
        Fault::Garbage => {
            (StatusCode::OK, Bytes::from_static(b"\x00\x9f\x92\x96 not xml \xff")).into_response()
        }
        Fault::Unknown => fault(FaultKind::Unknown),
        Fault::Security => fault(FaultKind::Security),
        Fault::TooLarge => fault(FaultKind::MessageTooLarge),
        Fault::LostAck | Fault::Ack207 | Fault::Slow => return None,
    })
}

async fn endpoint(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let (injected, latency) = shared.pick_fault();
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let request = match soap::parse_request(&body) {
        Ok(r) => r,
        Err(e) => {
            return soap_reply(
                StatusCode::BAD_REQUEST,
                soap::fault_response(FaultKind::Unknown, 400, "BadRequest", &e.to_string()),
            );
        }
    };
    let mut delivery = Delivery {
        seq: 0,
        at_ms: now_ms(),
        op: String::new(),
        control_id: None,
        vaccination_id: None,
        facility: None,
        outcome: String::new(),
        fault: injected.map(|f| f.name().to_owned()),
    };
    match request {
        Request::Connectivity { echo } => {
            delivery.op = "ping".into();
            if let Some(r) = injected.and_then(transport_fault) {
                delivery.outcome = format!("fault:{}", injected.map_or("", Fault::name));
                shared.record(delivery);
                return r;
            }
            delivery.outcome = "ok".into();
            shared.record(delivery);
            soap_reply(StatusCode::OK, soap::connectivity_response(&format!("You sent: {echo}")))
        }
        Request::Unsupported(name) => {
            delivery.op = name;
            delivery.outcome = "unsupported".into();
            shared.record(delivery);
            fault(FaultKind::UnsupportedOperation)
        }
        Request::Submit { username, password, facility_id, hl7 } => {
            delivery.op = "submit".into();
            delivery.facility.clone_from(&facility_id);
            if let Ok(m) = Message::parse(&hl7) {
                delivery.control_id =
                    Some(m.msh().text(10, 1).into_owned()).filter(|s| !s.is_empty());
                delivery.vaccination_id = m
                    .segments()
                    .find(|s| s.id() == "ORC")
                    .map(|s| s.text(3, 1).into_owned())
                    .filter(|s| !s.is_empty());
            }
            if !authorised(
                &shared.config.accounts,
                username.as_deref(),
                password.as_deref(),
                facility_id.as_deref(),
            ) {
                delivery.outcome = "security".into();
                shared.record(delivery);
                return fault(FaultKind::Security);
            }
            if hl7.split(['\r', '\n']).filter(|l| l.starts_with("MSH")).count() > 1 {
                delivery.outcome = "too_large".into();
                shared.record(delivery);
                return fault(FaultKind::MessageTooLarge);
            }
            if let Some(f) = injected {
                if let Some(r) = transport_fault(f) {
                    delivery.outcome = format!("fault:{}", f.name());
                    shared.record(delivery);
                    return r;
                }
                if f == Fault::Ack207 {
                    delivery.outcome = "fault:ack207".into();
                    shared.record(delivery);
                    let ack = ack_for(&hl7, "AR", &[Err207]);
                    return soap_reply(StatusCode::OK, soap::submit_response(&ack));
                }
            }
            let (outcome, ack) = process(&shared, &hl7, delivery.control_id.as_deref());
            delivery.outcome = outcome.into();
            shared.record(delivery);
            match injected {
                Some(Fault::LostAck) => dropped(),
                Some(Fault::Slow) => {
                    tokio::time::sleep(Duration::from_millis(shared.config.slow_ms)).await;
                    soap_reply(StatusCode::OK, soap::submit_response(&ack))
                }
                _ => soap_reply(StatusCode::OK, soap::submit_response(&ack)),
            }
        }
    }
}

fn authorised(
    accounts: &[Account],
    user: Option<&str>,
    password: Option<&str>,
    facility: Option<&str>,
) -> bool {
    accounts.is_empty()
        || accounts.iter().any(|a| {
            Some(a.user.as_str()) == user
                && Some(a.password.as_str()) == password
                && a.facility.as_deref().is_none_or(|f| Some(f) == facility)
        })
}

/// Marker for the 207 error row.
struct Err207;

trait ErrRow {
    fn segment(&self, out: &mut String);
}

impl ErrRow for Err207 {
    fn segment(&self, out: &mut String) {
        out.push_str("ERR|||207^Application internal error^HL70357|E||||Simulated internal error");
    }
}

impl ErrRow for hl7::Finding {
    fn segment(&self, out: &mut String) {
        let d = Delimiters::default();
        let (code, text) = if self.message.contains("required") || self.message.contains("missing")
        {
            ("101", "Required field missing")
        } else if self.message.contains("value set") || self.message.contains("table") {
            ("103", "Table value not found")
        } else {
            ("102", "Data type error")
        };
        let sev = match self.severity {
            Severity::Error => "E",
            Severity::Warning => "W",
            Severity::Info => "I",
        };
        out.push_str("ERR||");
        out.push_str(&erl(&self.location));
        out.push('|');
        out.push_str(code);
        out.push('^');
        out.push_str(text);
        out.push_str("^HL70357|");
        out.push_str(sev);
        out.push_str("||||");
        hl7::escape_into(out, &self.message, &d);
    }
}

/// `RXA[2]-5.1` → ERL `RXA^2^5^1^1`.
fn erl(location: &str) -> String {
    let (seg, rest) = location.split_once('-').unwrap_or((location, ""));
    let (id, seq) = match seg.split_once('[') {
        Some((id, n)) => (id, n.trim_end_matches(']')),
        None => (seg, "1"),
    };
    if id.len() != 3 || !id.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) {
        return String::new();
    }
    let mut parts = rest.split('.');
    let field: String = parts.next().unwrap_or("").chars().filter(char::is_ascii_digit).collect();
    let comp: String = parts.next().unwrap_or("").chars().filter(char::is_ascii_digit).collect();
    let mut out = format!("{id}^{seq}");
    if !field.is_empty() {
        out.push('^');
        out.push_str(&field);
        out.push_str("^1");
        if !comp.is_empty() {
            out.push('^');
            out.push_str(&comp);
        }
    }
    out
}

/// Builds an ACK (Z23) for `hl7` with `code` and one ERR per row.
fn ack_for(hl7: &str, code: &str, errors: &[impl ErrRow]) -> String {
    let d = Delimiters::default();
    let (sender_app, sender_fac, control, version) = match Message::parse(hl7) {
        Ok(m) => {
            let msh = m.msh();
            (
                msh.field(3).as_str().to_owned(),
                msh.field(4).as_str().to_owned(),
                msh.text(10, 1).into_owned(),
                msh.text(12, 1).into_owned(),
            )
        }
        Err(_) => Default::default(),
    };
    let now = chrono::Local::now().format("%Y%m%d%H%M%S%z");
    let mut out = String::with_capacity(256);
    out.push_str("MSH|^~\\&|SIMIIS|SIMIIS|");
    out.push_str(&sender_app);
    out.push('|');
    out.push_str(&sender_fac);
    out.push('|');
    out.push_str(&now.to_string());
    out.push_str("||ACK^V04^ACK|");
    out.push_str(&hl7::new_control_id());
    out.push_str("|P|");
    out.push_str(if version.is_empty() { "2.5.1" } else { &version });
    out.push_str("|||NE|NE|||||Z23^CDCPHINVS\rMSA|");
    out.push_str(code);
    out.push('|');
    hl7::escape_into(&mut out, &control, &d);
    for e in errors {
        out.push('\r');
        e.segment(&mut out);
    }
    out.push('\r');
    out
}

/// Validates and acknowledges a message; returns the recorded outcome and the ACK.
fn process(shared: &Shared, hl7: &str, control_id: Option<&str>) -> (&'static str, String) {
    let already = control_id.is_some_and(|c| {
        shared.accepted.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(c)
    });
    if already {
        return ("duplicate", ack_for(hl7, "AA", &[] as &[Err207]));
    }
    let findings: Vec<hl7::Finding> = if shared.config.validate {
        hl7::validate_message(hl7)
            .into_iter()
            .filter(|f| f.severity != Severity::Info)
            .take(20)
            .collect()
    } else {
        Vec::new()
    };
    let errors = findings.iter().any(|f| f.severity == Severity::Error);
    let structural = Message::parse(hl7).is_err() || control_id.is_none();
    let (outcome, code) = if structural {
        ("rejected", "AR")
    } else if errors {
        ("rejected", "AE")
    } else if findings.is_empty() {
        ("accepted", "AA")
    } else {
        ("accepted_with_warnings", "AE")
    };
    if outcome.starts_with("accepted") {
        if let Some(c) = control_id {
            shared
                .accepted
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(c.to_owned());
        }
    }
    (outcome, ack_for(hl7, code, &findings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_locations() {
        assert_eq!(erl("RXA-5.1"), "RXA^1^5^1^1");
        assert_eq!(erl("OBX[3]-4"), "OBX^3^4^1");
        assert_eq!(erl("PID"), "PID^1");
        assert_eq!(erl("line 4"), "");
    }

    #[test]
    fn schedules_parse() {
        assert_eq!(
            "http503@0-3000".parse::<Scheduled>(),
            Ok(Scheduled { from_ms: 0, until_ms: 3000, fault: Fault::Http503 })
        );
        assert!("nope@0-1".parse::<Scheduled>().is_err());
        assert!("drop@x-1".parse::<Scheduled>().is_err());
        for f in Fault::ALL {
            assert_eq!(Fault::parse(f.name()), Some(f));
        }
    }

    #[test]
    fn izgw_latency_has_the_published_median() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut v: Vec<u64> = (0..20_000).map(|_| Latency::Izgw.draw(&mut rng)).collect();
        v.sort_unstable();
        let p50 = v[v.len() / 2];
        let p90 = v[v.len() * 9 / 10];
        assert!((1_700..=2_100).contains(&p50), "p50 {p50}");
        assert!((4_700..=5_500).contains(&p90), "p90 {p90}");
    }

    #[test]
    fn accounts_check_user_password_and_facility() {
        let a =
            vec![Account { user: "u".into(), password: "p".into(), facility: Some("F".into()) }];
        assert!(authorised(&a, Some("u"), Some("p"), Some("F")));
        assert!(!authorised(&a, Some("u"), Some("x"), Some("F")));
        assert!(!authorised(&a, Some("u"), Some("p"), Some("G")));
        assert!(!authorised(&a, None, None, None));
        assert!(authorised(&[], None, None, None));
        assert!(!format!("{a:?}").contains("\"p\""));
    }
}
