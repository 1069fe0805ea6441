//! TLS for the simulators: a self-signed certificate generated at start (written out as PEM so
//! a client can trust it through `ca_file`), or a certificate and key from files; optional
//! client-certificate verification (mutual TLS). Connections are handshaken off the accept
//! loop, so a slow or broken client cannot stall the others.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// TLS setup errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Certificate generation failed.
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
    /// A PEM file is unusable.
    #[error("{what}: {reason}")]
    Pem {
        /// Which input.
        what: String,
        /// Why.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// A server certificate chain and its key, in PEM.
#[derive(Clone)]
pub struct Identity {
    /// The certificate chain (PEM).
    pub cert_pem: String,
    /// The private key (PEM).
    key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("key_pem", &"***").finish_non_exhaustive()
    }
}

impl Identity {
    /// A self-signed certificate for `localhost`, `127.0.0.1` and `::1`.
    ///
    /// # Errors
    /// [`Error::Generate`].
    pub fn self_signed() -> Result<Self, Error> {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
        let c = rcgen::generate_simple_self_signed(names)
            .map_err(|e| Error::Generate(e.to_string()))?;
        Ok(Self { cert_pem: c.cert.pem(), key_pem: c.key_pair.serialize_pem() })
    }

    /// A certificate chain and key given as PEM text.
    pub fn from_pem(cert_pem: String, key_pem: String) -> Self {
        Self { cert_pem, key_pem }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls server configuration for `id`; with `client_ca` (PEM), clients must present a
/// certificate issued by it.
///
/// # Errors
/// [`Error`] for unusable PEM or a refused configuration.
pub fn server_config(
    id: &Identity,
    client_ca: Option<&str>,
) -> Result<rustls::ServerConfig, Error> {
    let pem = |what: &str, e: &dyn std::fmt::Display| Error::Pem {
        what: what.to_owned(),
        reason: e.to_string(),
    };
    let certs = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem("certificate", &e))?;
    if certs.is_empty() {
        return Err(pem("certificate", &"no certificate in the PEM"));
    }
    let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).map_err(|e| pem("key", &e))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots
                    .add(c.map_err(|e| pem("client CA", &e))?)
                    .map_err(|e| pem("client CA", &e))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder.with_single_cert(certs, key).map_err(|e| Error::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// An axum listener that hands out TLS streams whose handshake completed.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp` with `config`.
    pub fn new(tcp: TcpListener, config: rustls::ServerConfig) -> std::io::Result<Self> {
        let addr = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = tcp.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                if tx.is_closed() {
                    break;
                }
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let hs = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                    if let Ok(Ok(tls)) = hs.await {
                        let _ = tx.send((tls, peer)).await;
                    }
                });
            }
        });
        Ok(Self { rx, addr })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            // The accept task ended: nothing will come again.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}
