//! The Dataverse Web API client.
//!
//! Every request goes through [`Client::send`]: it waits out any `Retry-After` the service gave
//! this client (a throttled client that keeps sending only extends its penalty), adds the
//! bearer token and the OData headers, retries 429/503 after `Retry-After` (else backoff),
//! other 5xx and transport errors with capped exponential backoff and full jitter, and a 401
//! once with a fresh token. Other 4xx are returned as [`Error::Api`] with Dataverse's
//! `error.code` and `error.message`. The client secret is held in a [`Secret`] and sent only
//! to the token endpoint; tokens never appear in errors or logs. No answer is read past
//! [`Settings::max_response_bytes`] (64 MiB by default): a larger success answer is
//! [`Error::TooLarge`], not retried; a larger error answer is cut there (only its first bytes
//! are shown anyway).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::config::vault::Secret;
use crate::forwarder::backoff;

/// How to reach one Dataverse environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The environment URL, e.g. `https://contoso.crm.dynamics.com`.
    pub url: String,
    /// Entra ID tenant id.
    pub tenant_id: String,
    /// The application (client) id of the app registration.
    pub client_id: String,
    /// The token endpoint; default `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token`.
    pub token_url: Option<String>,
    /// Web API version.
    pub api_version: String,
    /// Rows per page (`Prefer: odata.maxpagesize`, at most 5,000).
    pub page_size: usize,
    /// Connect timeout, seconds.
    pub connect_timeout_secs: u64,
    /// Request timeout, seconds.
    pub request_timeout_secs: u64,
    /// First retry delay bound, ms (doubles per attempt, full jitter).
    pub retry_base_ms: u64,
    /// Longest retry delay, ms.
    pub retry_max_ms: u64,
    /// Attempts per request before giving up (the caller retries later).
    pub max_attempts: u32,
    /// Extra trust anchors (PEM) for a private CA (tests, proxies).
    pub ca_file: Option<std::path::PathBuf>,
    /// The largest answer read, in bytes (a page, a `$batch` answer, a token); see
    /// [`DEFAULT_MAX_RESPONSE_BYTES`].
    pub max_response_bytes: usize,
}

/// The default of [`Settings::max_response_bytes`]: 64 MiB. A page of 5,000 rows with their
/// expanded lookups is a few MiB; this bounds the memory a broken or hostile answer can take.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 << 20;

impl Default for Settings {
    fn default() -> Self {
        Self {
            url: String::new(),
            tenant_id: String::new(),
            client_id: String::new(),
            token_url: None,
            api_version: "v9.2".into(),
            page_size: 1000,
            connect_timeout_secs: 15,
            request_timeout_secs: 120,
            retry_base_ms: 2_000,
            retry_max_ms: 300_000,
            max_attempts: 6,
            ca_file: None,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// Dataverse client errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The settings cannot be used.
    #[error("dataverse settings: {0}")]
    Settings(String),
    /// The token endpoint refused the credentials.
    #[error(
        "dataverse sign-in failed (HTTP {status}): {message}; check tenant_id, client_id and the client secret"
    )]
    Auth {
        /// HTTP status.
        status: u16,
        /// `error_description` from Entra ID, or the body.
        message: String,
    },
    /// The Web API answered an error that retrying will not fix.
    #[error("dataverse {method} {path}: HTTP {status} {code}: {message}")]
    Api {
        /// The method.
        method: String,
        /// The path (no query string: it can hold record data).
        path: String,
        /// HTTP status.
        status: u16,
        /// Dataverse's `error.code` (often empty).
        code: String,
        /// Dataverse's `error.message`.
        message: String,
    },
    /// Still failing after every attempt (throttling, 5xx, network).
    #[error("dataverse {method} {path}: gave up after {attempts} attempts: {last}")]
    Unavailable {
        /// The method.
        method: String,
        /// The path.
        path: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// An answer linked outside the configured environment (a next or delta link to another
    /// host or scheme); it is not followed, so the token never leaves the environment.
    #[error("dataverse answered a link outside {api}: {link}; not followed")]
    ForeignLink {
        /// The link, without its query string.
        link: String,
        /// The Web API base of the configured environment.
        api: String,
    },
    /// A success answer larger than [`Settings::max_response_bytes`]; retrying will not
    /// shrink it.
    #[error(
        "dataverse {method} {path}: the answer is larger than {max} bytes; lower [dataverse] \
         page_size, or check what answers at that address"
    )]
    TooLarge {
        /// The method.
        method: String,
        /// The path (no query string).
        path: String,
        /// The limit, bytes.
        max: usize,
    },
    /// A success answer that is not the JSON expected.
    #[error("dataverse {path}: unexpected answer: {source}")]
    BadAnswer {
        /// The path.
        path: String,
        /// What is wrong.
        #[source]
        source: serde_json::Error,
    },
}

/// The result type.
pub type Result<T> = std::result::Result<T, Error>;

/// An answer from the Web API.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The `ETag` header, when any.
    pub etag: Option<String>,
    /// The `OData-EntityId` header, when any.
    pub entity_id: Option<String>,
    /// The body (empty for 204).
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON.
    ///
    /// # Errors
    /// [`Error::BadAnswer`].
    pub fn json(&self, path: &str) -> Result<Value> {
        serde_json::from_slice(&self.body)
            .map_err(|source| Error::BadAnswer { path: path.to_owned(), source })
    }
}

/// A request to send.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `GET`, `PATCH`, `POST` …
    pub method: reqwest::Method,
    /// A path under the Web API (`contacts?$select=fullname`), or a full URL (a nextLink).
    pub target: &'a str,
    /// `Prefer` values.
    pub prefer: Vec<String>,
    /// `If-Match`.
    pub if_match: Option<&'a str>,
    /// A JSON body.
    pub body: Option<Vec<u8>>,
    /// Another content type for the body (a `$batch`).
    pub content_type: Option<String>,
}

impl<'a> Request<'a> {
    /// A GET of `target`.
    pub fn get(target: &'a str) -> Self {
        Self {
            method: reqwest::Method::GET,
            target,
            prefer: Vec::new(),
            if_match: None,
            body: None,
            content_type: None,
        }
    }
}

struct Token {
    value: Secret,
    /// Refresh after this instant (five minutes before `expires_in` runs out).
    refresh_at: Instant,
}

/// A client of one Dataverse environment. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    settings: Arc<Settings>,
    secret: Secret,
    api: String,
    token: Arc<Mutex<Option<Token>>>,
    /// No request leaves before this instant (the last `Retry-After`).
    throttled_until: Arc<Mutex<Option<Instant>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("api", &self.api).finish_non_exhaustive()
    }
}

/// The longest `Retry-After` honoured as given.
const MAX_RETRY_AFTER_MS: u64 = 3_600_000;

/// How much of `expires_in` is kept as margin.
const TOKEN_MARGIN: Duration = Duration::from_secs(300);

impl Client {
    /// Builds a client.
    ///
    /// # Errors
    /// [`Error::Settings`] for an unusable URL or CA file.
    pub fn new(settings: Settings, secret: Secret) -> Result<Self> {
        let url = reqwest::Url::parse(&settings.url)
            .map_err(|e| Error::Settings(format!("url {:?}: {e}", settings.url)))?;
        let local = crate::iis::client::is_loopback(&url);
        if url.scheme() != "https" && !(url.scheme() == "http" && local) {
            return Err(Error::Settings(format!(
                "url {:?}: must be https (plain http only on loopback)",
                settings.url
            )));
        }
        if settings.tenant_id.is_empty() || settings.client_id.is_empty() {
            return Err(Error::Settings("tenant_id and client_id are required".into()));
        }
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(settings.connect_timeout_secs))
            .timeout(Duration::from_secs(settings.request_timeout_secs))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("izrelay/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &settings.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| Error::Settings(format!("ca_file {}: {e}", path.display())))?;
            for c in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::Settings(format!("ca_file {}: {e}", path.display())))?
            {
                b = b.add_root_certificate(c);
            }
        }
        let http = b.build().map_err(|e| Error::Settings(e.to_string()))?;
        let api =
            format!("{}/api/data/{}/", settings.url.trim_end_matches('/'), settings.api_version);
        Ok(Self {
            http,
            settings: Arc::new(settings),
            secret,
            api,
            token: Arc::new(Mutex::new(None)),
            throttled_until: Arc::new(Mutex::new(None)),
        })
    }

    /// The Web API base URL (ends with `/`).
    pub fn api_base(&self) -> &str {
        &self.api
    }

    fn token_url(&self) -> String {
        self.settings.token_url.clone().unwrap_or_else(|| {
            format!(
                "https://login.microsoftonline.com/{}/oauth2/v2.0/token",
                self.settings.tenant_id
            )
        })
    }

    /// A valid access token, from the cache or the token endpoint.
    async fn token(&self, fresh: bool) -> Result<Secret> {
        let mut guard = self.token.lock().await;
        if let Some(t) = guard.as_ref().filter(|t| !fresh && Instant::now() < t.refresh_at) {
            return Ok(t.value.clone());
        }
        let scope = format!("{}/.default", self.settings.url.trim_end_matches('/'));
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("client_secret", self.secret.expose())
            .append_pair("scope", &scope)
            .append_pair("grant_type", "client_credentials")
            .finish();
        let mut last = String::new();
        for attempt in 1..=self.settings.max_attempts {
            let sent = self
                .http
                .post(self.token_url())
                .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form.clone())
                .send()
                .await;
            match sent {
                Ok(resp) if resp.status().is_success() => {
                    let body = match read_capped(resp, self.settings.max_response_bytes).await {
                        Ok(b) => b,
                        Err(Body::TooLarge) => {
                            return Err(Error::TooLarge {
                                method: "POST".into(),
                                path: "token".into(),
                                max: self.settings.max_response_bytes,
                            });
                        }
                        Err(Body::Transport(e)) => {
                            return Err(Error::Auth {
                                status: 200,
                                message: format!("reading the token: {}", e.without_url()),
                            });
                        }
                    };
                    let v: Value = serde_json::from_slice(&body).map_err(|e| Error::Auth {
                        status: 200,
                        message: format!("the token answer is not JSON: {e}"),
                    })?;
                    let access =
                        v.get("access_token").and_then(Value::as_str).ok_or_else(|| {
                            Error::Auth {
                                status: 200,
                                message: "no access_token in the answer".into(),
                            }
                        })?;
                    let expires = v.get("expires_in").and_then(|e| {
                        e.as_u64().or_else(|| e.as_str().and_then(|s| s.parse().ok()))
                    });
                    let lifetime = Duration::from_secs(expires.unwrap_or(3_599));
                    let refresh_at =
                        Instant::now() + lifetime.saturating_sub(TOKEN_MARGIN).max(lifetime / 2);
                    let value = Secret::new(access);
                    *guard = Some(Token { value: value.clone(), refresh_at });
                    debug!(expires_in = lifetime.as_secs(), "dataverse token acquired");
                    return Ok(value);
                }
                Ok(resp) if resp.status().is_server_error() || resp.status() == 429 => {
                    last = format!("HTTP {}", resp.status().as_u16());
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    // Only the first bytes of an error are shown: a cut or unreadable body is
                    // no worse than none.
                    let body = read_capped(resp, self.settings.max_response_bytes)
                        .await
                        .unwrap_or_default();
                    let message = serde_json::from_slice::<Value>(&body)
                        .ok()
                        .and_then(|v| {
                            v.get("error_description")
                                .or_else(|| v.get("error"))
                                .and_then(Value::as_str)
                                .map(|s| s.lines().next().unwrap_or("").to_owned())
                        })
                        .unwrap_or_else(|| {
                            String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
                        });
                    return Err(Error::Auth { status, message });
                }
                Err(e) => last = e.without_url().to_string(),
            }
            if attempt < self.settings.max_attempts {
                tokio::time::sleep(self.backoff(attempt, None)).await;
            }
        }
        Err(Error::Unavailable {
            method: "POST".into(),
            path: format!("token endpoint {}", self.token_url()),
            attempts: self.settings.max_attempts,
            last,
        })
    }

    fn backoff(&self, attempt: u32, retry_after_ms: Option<u64>) -> Duration {
        Duration::from_millis(backoff::delay_ms(
            attempt,
            self.settings.retry_base_ms,
            self.settings.retry_max_ms,
            retry_after_ms,
            backoff::draw(),
        ))
    }

    /// Waits until any `Retry-After` given to this client has passed.
    async fn wait_throttle(&self) {
        let until = *self.throttled_until.lock().await;
        if let Some(t) = until.filter(|t| *t > Instant::now()) {
            tokio::time::sleep_until(t).await;
        }
    }

    async fn throttle(&self, d: Duration) {
        let until = Instant::now() + d;
        let mut guard = self.throttled_until.lock().await;
        if guard.is_none_or(|t| t < until) {
            *guard = Some(until);
        }
    }

    /// Sends a request with retries (see the module docs).
    ///
    /// # Errors
    /// [`Error::Api`] for an answer retrying will not fix, [`Error::Unavailable`] after every
    /// attempt failed, [`Error::Auth`] when no token can be had.
    pub async fn send(&self, req: &Request<'_>) -> Result<Answer> {
        let url = if req.target.starts_with("http://") || req.target.starts_with("https://") {
            // A full URL comes from an answer (`@odata.nextLink`, a delta link): the bearer
            // token goes only to the configured environment, never to another host or over
            // plain http because an answer said so.
            if !req.target.starts_with(&self.api) {
                return Err(Error::ForeignLink {
                    link: req.target.split('?').next().unwrap_or("").to_owned(),
                    api: self.api.clone(),
                });
            }
            req.target.to_owned()
        } else {
            format!("{}{}", self.api, req.target.trim_start_matches('/'))
        };
        let path = url.split('?').next().unwrap_or("").to_owned();
        let mut renewed = false;
        let mut last = String::new();
        for attempt in 1..=self.settings.max_attempts {
            self.wait_throttle().await;
            let token = self.token(false).await?;
            let mut b = self
                .http
                .request(req.method.clone(), &url)
                .bearer_auth(token.expose())
                .header("Accept", "application/json")
                .header("OData-MaxVersion", "4.0")
                .header("OData-Version", "4.0")
                .header("If-None-Match", "null");
            if !req.prefer.is_empty() {
                b = b.header("Prefer", req.prefer.join(","));
            }
            if let Some(m) = req.if_match {
                b = b.header("If-Match", m);
            }
            if let Some(body) = &req.body {
                let ct = req.content_type.clone().unwrap_or_else(|| "application/json".into());
                b = b.header(reqwest::header::CONTENT_TYPE, ct).body(body.clone());
            }
            let resp = match b.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = e.without_url().to_string();
                    warn!(path, attempt, error = %last, "dataverse unreachable; will retry");
                    if attempt < self.settings.max_attempts {
                        tokio::time::sleep(self.backoff(attempt, None)).await;
                    }
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let header = |name: &str| {
                resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
            };
            let retry_after_ms =
                header("Retry-After").and_then(|v| v.trim().parse::<u64>().ok()).map(|s| s * 1000);
            let etag = header("ETag");
            let entity_id = header("OData-EntityId");
            let body = match read_capped(resp, self.settings.max_response_bytes).await {
                Ok(b) => b,
                Err(Body::TooLarge) if (200..300).contains(&status) => {
                    return Err(Error::TooLarge {
                        method: req.method.to_string(),
                        path,
                        max: self.settings.max_response_bytes,
                    });
                }
                // An error answer is read only for its first bytes.
                Err(Body::TooLarge) => Vec::new(),
                Err(Body::Transport(e)) => {
                    last = e.without_url().to_string();
                    if attempt < self.settings.max_attempts {
                        tokio::time::sleep(self.backoff(attempt, None)).await;
                    }
                    continue;
                }
            };
            match status {
                200..=299 | 304 => return Ok(Answer { status, etag, entity_id, body }),
                401 if !renewed => {
                    renewed = true;
                    debug!("dataverse answered 401; acquiring a new token");
                    self.token(true).await?;
                }
                429 | 503 => {
                    // Retry-After is the service's rule, not a hint: honoured in full (up to
                    // an hour, against a broken value), never shortened by retry_max_ms.
                    let wait = match retry_after_ms {
                        Some(ms) => Duration::from_millis(ms.min(MAX_RETRY_AFTER_MS)),
                        None => self.backoff(attempt, None),
                    };
                    last = format!("HTTP {status}: {}", error_text(&body).1);
                    warn!(
                        path,
                        status,
                        wait_ms = wait.as_millis() as u64,
                        "dataverse throttled or unavailable; waiting"
                    );
                    self.throttle(wait).await;
                }
                500..=599 => {
                    last = format!("HTTP {status}: {}", error_text(&body).1);
                    if attempt < self.settings.max_attempts {
                        tokio::time::sleep(self.backoff(attempt, None)).await;
                    }
                }
                _ => {
                    let (code, message) = error_text(&body);
                    return Err(Error::Api {
                        method: req.method.to_string(),
                        path,
                        status,
                        code,
                        message,
                    });
                }
            }
        }
        Err(Error::Unavailable {
            method: req.method.to_string(),
            path,
            attempts: self.settings.max_attempts,
            last,
        })
    }

    /// Reads every page of `query` (a path under the Web API), following `@odata.nextLink`
    /// unchanged with the same `odata.maxpagesize`, calling `page` with each page's rows.
    /// With `track_changes`, asks for change tracking and returns the final `@odata.deltaLink`.
    /// A `query` that is itself a deltaLink (full URL) reads the changes since it.
    ///
    /// # Errors
    /// As [`Client::send`], and [`Error::BadAnswer`] for a page without `value`.
    pub async fn read_pages(
        &self,
        query: &str,
        track_changes: bool,
        page: &mut (dyn FnMut(Vec<Value>) + Send),
    ) -> Result<Option<String>> {
        let mut prefer =
            vec![format!("odata.maxpagesize={}", self.settings.page_size.clamp(1, 5000))];
        if track_changes {
            prefer.push("odata.track-changes".into());
        }
        let mut next = query.to_owned();
        loop {
            let req = Request { prefer: prefer.clone(), ..Request::get(&next) };
            let answer = self.send(&req).await?;
            let mut v = answer.json(&next)?;
            let rows = match v.get_mut("value").map(Value::take) {
                Some(Value::Array(rows)) => rows,
                _ => {
                    return Err(Error::BadAnswer {
                        path: next.split('?').next().unwrap_or("").to_owned(),
                        source: serde::de::Error::custom("no \"value\" array"),
                    });
                }
            };
            page(rows);
            if let Some(link) = v.get("@odata.nextLink").and_then(Value::as_str) {
                next = link.to_owned();
                continue;
            }
            return Ok(v.get("@odata.deltaLink").and_then(Value::as_str).map(str::to_owned));
        }
    }
}

/// Why [`read_capped`] returned no body.
enum Body {
    /// More than the limit.
    TooLarge,
    /// The connection failed while reading.
    Transport(reqwest::Error),
}

/// The body of `resp`, read chunk by chunk and refused as soon as it passes `max` bytes (a
/// `Content-Length` over `max` is refused before reading).
async fn read_capped(
    mut resp: reqwest::Response,
    max: usize,
) -> std::result::Result<Vec<u8>, Body> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(Body::TooLarge);
    }
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(Body::Transport)? {
        if buf.len() + chunk.len() > max {
            return Err(Body::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// `(error.code, error.message)` from Dataverse's error JSON, or a short piece of the body.
pub fn error_text(body: &[u8]) -> (String, String) {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        if let Some(e) = v.get("error") {
            let code = e.get("code").and_then(Value::as_str).unwrap_or("").to_owned();
            let message = e
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| e.to_string(), str::to_owned);
            return (code, message);
        }
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    (String::new(), text.split_whitespace().collect::<Vec<_>>().join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json() {
        let (code, msg) = error_text(
            br#"{"error":{"code":"0x80072322","message":"Number of requests exceeded the limit of 6000 over time window of 300 seconds."}}"#,
        );
        assert_eq!(code, "0x80072322");
        assert!(msg.starts_with("Number of requests"));
        assert_eq!(error_text(b"<html>  Bad\n gateway</html>").1, "<html> Bad gateway</html>");
    }

    #[tokio::test]
    async fn a_link_outside_the_environment_is_not_followed() {
        let settings = Settings {
            url: "https://contoso.crm.dynamics.com".into(),
            tenant_id: "t".into(),
            client_id: "c".into(),
            // Nothing listens there: reaching the token endpoint would be a transport error.
            token_url: Some("http://127.0.0.1:9/token".into()),
            max_attempts: 1,
            ..Settings::default()
        };
        let client = Client::new(settings, Secret::new("x")).expect("client");
        for link in [
            "https://evil.example/api/data/v9.2/x?$skiptoken=1",
            "http://contoso.crm.dynamics.com/api/data/v9.2/x",
            "https://contoso.crm.dynamics.com.evil.example/api/data/v9.2/x",
        ] {
            let err = client.send(&Request::get(link)).await.expect_err(link);
            assert!(matches!(err, Error::ForeignLink { .. }), "{link}: {err}");
            assert!(!err.to_string().contains("skiptoken"), "{err}");
        }
        let own = "https://contoso.crm.dynamics.com/api/data/v9.2/x?$skiptoken=1";
        let err = client.send(&Request::get(own)).await.expect_err("no token endpoint");
        assert!(!matches!(err, Error::ForeignLink { .. }), "{err}");
    }

    #[test]
    fn settings_are_checked() {
        let s = |url: &str| Settings {
            url: url.into(),
            tenant_id: "t".into(),
            client_id: "c".into(),
            ..Settings::default()
        };
        assert!(Client::new(s("https://contoso.crm.dynamics.com"), Secret::new("x")).is_ok());
        assert!(Client::new(s("http://127.0.0.1:9"), Secret::new("x")).is_ok());
        assert!(Client::new(s("http://contoso.crm.dynamics.com"), Secret::new("x")).is_err());
        assert!(
            Client::new(Settings { client_id: String::new(), ..s("https://x") }, Secret::new("x"))
                .is_err()
        );
    }
}
