//! The HTTPS client of one IIS endpoint: SOAP 1.2 `submitSingleMessage` and `connectivityTest`
//! over reqwest + rustls.
//!
//! Certificate verification is always on: the system roots, plus the PEM trust anchors of the
//! endpoint's `ca_file` when set (a state's private CA, or the simulator's certificate). Mutual
//! TLS with `client_cert`/`client_key`. Plain `http` only for an endpoint the vault allowed
//! (loopback, or an explicit opt-in). Redirects are never followed: the body carries the
//! password. The response body is read up to `max_response_bytes` and no further. The password
//! is in memory only, inside [`Secret`], and only in the envelope sent.

use std::time::{Duration, Instant};

use super::soap;
use crate::config::vault::Secret;
use crate::forwarder::ForwardSettings;
use crate::store::Endpoint;

/// Why a client cannot be built for an endpoint (configuration, never transient).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The endpoint URL is not usable.
    #[error("provider {provider}: endpoint {url:?}: {reason}")]
    Url {
        /// The provider id.
        provider: String,
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A certificate or key file cannot be used.
    #[error("provider {provider}: {what} {path}: {reason}")]
    Tls {
        /// The provider id.
        provider: String,
        /// `ca_file`, `client_cert` …
        what: &'static str,
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// reqwest refused the settings.
    #[error("provider {provider}: cannot build the HTTPS client: {reason}")]
    Build {
        /// The provider id.
        provider: String,
        /// Why.
        reason: String,
    },
}

/// How a request failed before an HTTP answer was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// Connect or request timeout.
    Timeout,
    /// TCP connect failed (refused, unreachable, DNS).
    Connect,
    /// The TLS handshake failed (certificate wrong, expired, untrusted …).
    Tls,
    /// The connection broke mid-request or mid-response.
    Io,
    /// The answer was larger than `max_response_bytes`.
    TooLarge,
}

impl TransportKind {
    /// A short word for the attempt row.
    pub fn word(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connect => "connect error",
            Self::Tls => "tls error",
            Self::Io => "connection error",
            Self::TooLarge => "response too large",
        }
    }
}

/// A request that got no complete HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportError {
    /// What kind of failure.
    pub kind: TransportKind,
    /// The error chain, without the URL's query or any credential.
    pub message: String,
}

/// What came back from one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status, when a response head arrived.
    pub http_status: Option<u16>,
    /// `Retry-After` in milliseconds, when the server sent one.
    pub retry_after_ms: Option<u64>,
    /// The body, or why there is none.
    pub body: Result<Vec<u8>, TransportError>,
    /// How long the request took.
    pub duration_ms: i64,
}

/// A client for one IIS.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    url: reqwest::Url,
    user: String,
    password: Secret,
    facility: Option<String>,
    max_response: usize,
}

/// True for `localhost` and loopback IP literals.
pub fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

impl Client {
    /// Builds the client for `endpoint` with `settings`.
    ///
    /// # Errors
    /// [`Error`] for an unusable URL, certificate or key file.
    pub fn new(endpoint: &Endpoint, settings: &ForwardSettings) -> Result<Self, Error> {
        let provider = endpoint.provider_id.clone();
        let url_err = |reason: &str| Error::Url {
            provider: provider.clone(),
            url: endpoint.url.clone(),
            reason: reason.to_owned(),
        };
        let url = reqwest::Url::parse(&endpoint.url).map_err(|e| url_err(&e.to_string()))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(url_err("credentials in the URL are not allowed; use the vault"));
        }
        match url.scheme() {
            "https" => {}
            "http" if endpoint.allow_insecure || is_loopback(&url) => {}
            "http" => return Err(url_err("plain http is allowed only for loopback or by opt-in")),
            _ => return Err(url_err("the scheme must be https")),
        }
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(settings.connect_timeout())
            .timeout(settings.request_timeout())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(settings.concurrency)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("izrelay/", env!("CARGO_PKG_VERSION")))
            .tcp_nodelay(true);
        let read = |what: &'static str, path: &std::path::Path| {
            std::fs::read(path).map_err(|e| Error::Tls {
                provider: provider.clone(),
                what,
                path: path.display().to_string(),
                reason: e.to_string(),
            })
        };
        if let Some(path) = &settings.ca_file {
            let pem = read("ca_file", path)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| Error::Tls {
                provider: provider.clone(),
                what: "ca_file",
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            if certs.is_empty() {
                return Err(Error::Tls {
                    provider,
                    what: "ca_file",
                    path: path.display().to_string(),
                    reason: "no PEM certificate in it".into(),
                });
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if let (Some(cert), Some(key)) = (&settings.client_cert, &settings.client_key) {
            let mut pem = read("client_cert", cert)?;
            pem.push(b'\n');
            pem.extend(read("client_key", key)?);
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| Error::Tls {
                provider: provider.clone(),
                what: "client_cert",
                path: cert.display().to_string(),
                reason: e.to_string(),
            })?;
            b = b.identity(id);
        }
        let http = b
            .build()
            .map_err(|e| Error::Build { provider: provider.clone(), reason: chain(&e) })?;
        Ok(Self {
            http,
            url,
            user: endpoint.user_name.clone(),
            password: endpoint.password.clone(),
            facility: endpoint.facility_id.clone(),
            max_response: settings.max_response_bytes,
        })
    }

    /// Sends one HL7 message (`submitSingleMessage`).
    pub async fn submit(&self, hl7: &str) -> Reply {
        let body =
            soap::submit_request(&self.user, self.password.expose(), self.facility.as_deref(), hl7);
        self.post("submitSingleMessage", body).await
    }

    /// Asks the IIS to echo `echo` (`connectivityTest`).
    pub async fn ping(&self, echo: &str) -> Reply {
        self.post("connectivityTest", soap::connectivity_request(echo)).await
    }

    async fn post(&self, action: &str, body: String) -> Reply {
        let start = Instant::now();
        let elapsed = |s: Instant| i64::try_from(s.elapsed().as_millis()).unwrap_or(i64::MAX);
        let sent = self
            .http
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, soap::content_type(action))
            .body(body)
            .send()
            .await;
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => {
                return Reply {
                    http_status: None,
                    retry_after_ms: None,
                    body: Err(transport(&e)),
                    duration_ms: elapsed(start),
                };
            }
        };
        let status = resp.status().as_u16();
        let retry_after_ms = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let mut buf = Vec::with_capacity(
            resp.content_length()
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(4096)
                .min(self.max_response),
        );
        let body = loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if buf.len() + chunk.len() > self.max_response {
                        break Err(TransportError {
                            kind: TransportKind::TooLarge,
                            message: format!(
                                "the answer is larger than max_response_bytes ({})",
                                self.max_response
                            ),
                        });
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(None) => break Ok(buf),
                Err(e) => break Err(transport(&e)),
            }
        };
        Reply { http_status: Some(status), retry_after_ms, body, duration_ms: elapsed(start) }
    }
}

/// `Retry-After`: delta-seconds or an HTTP date.
fn parse_retry_after(v: &str) -> Option<u64> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(secs.saturating_mul(1000));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let ms = at.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    Some(u64::try_from(ms).unwrap_or(0))
}

fn transport(e: &reqwest::Error) -> TransportError {
    let message = chain(e);
    let lower = message.to_ascii_lowercase();
    let kind = if e.is_timeout() {
        TransportKind::Timeout
    } else if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake")
    {
        TransportKind::Tls
    } else if e.is_connect() {
        TransportKind::Connect
    } else {
        TransportKind::Io
    };
    TransportError { kind, message }
}

/// The error and its sources, joined; the URL is left out (it is in the endpoint already).
fn chain(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    let top = match e.url() {
        Some(u) => {
            e.to_string().replace(&format!(" ({u})"), "").replace(&format!(" for url ({u})"), "")
        }
        None => e.to_string(),
    };
    parts.push(top);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("120"), Some(120_000));
        assert_eq!(parse_retry_after(" 0 "), Some(0));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(0), "past date");
        assert_eq!(parse_retry_after("soon"), None);
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let ms = parse_retry_after(&later).unwrap_or(0);
        assert!((25_000..=30_000).contains(&ms), "{ms}");
    }

    #[test]
    fn loopback_hosts() -> Result<(), url::ParseError> {
        for (u, yes) in [
            ("http://127.0.0.1:8080/x", true),
            ("http://127.9.9.9/x", true),
            ("http://[::1]/x", true),
            ("http://LOCALHOST/x", true),
            ("http://iis.example.gov/x", false),
            ("http://10.0.0.1/x", false),
        ] {
            assert_eq!(is_loopback(&reqwest::Url::parse(u)?), yes, "{u}");
        }
        Ok(())
    }
}
