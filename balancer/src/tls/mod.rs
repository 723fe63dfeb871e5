//! TLS termination: the HTTPS listener's rustls configuration, its certificates
//! ([`certs`]) and the plain listener's redirect to HTTPS ([`redirect`]).
//!
//! rustls on ring (the crypto provider reqwest's rustls already uses), TLS 1.2 and 1.3
//! only: rustls implements nothing older, so a TLS 1.0 or 1.1 hello is refused with a
//! fatal alert (`protocol_version`; `handshake_failure` first if the hello lacks the
//! signature_algorithms extension, as old clients' hellos do). After the handshake the connection is served exactly like a
//! plain one (`server`: the framing tap, hyper's HTTP/1.1, idle parking, the drain), or,
//! when ALPN chose `h2` (offered first, then `http/1.1`), by hyper's HTTP/2 server
//! (`server::http2`), with `X-Forwarded-Proto: https` for the backends and, if configured,
//! HSTS on the answers.
//!
//! Seams: ALPN is set here (`h2`, then `http/1.1`; the server dispatches on what was
//! negotiated). A certificate obtained by ACME ([`acme`]) sits in its own slot of the
//! [`certs::CertStore`] the resolver reads, and its HTTP-01 challenges are answered under
//! [`redirect::ACME_CHALLENGE_PREFIX`], the one path the redirect leaves alone.

pub mod acme;
pub mod certs;
pub mod redirect;

use std::sync::Arc;

use http::HeaderValue;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use certs::{CertError, CertStore};

/// The crypto provider for every TLS connection.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What the HTTPS listener needs: the acceptor, the certificates, the HSTS header.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: TlsAcceptor,
    pub store: Arc<CertStore>,
    /// `Strict-Transport-Security` for answers over TLS, when configured.
    pub hsts: Option<HeaderValue>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("store", &self.store)
            .field("hsts", &self.hsts)
            .finish_non_exhaustive()
    }
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Certificate(#[from] CertError),
    #[error(transparent)]
    Acme(#[from] acme::AcmeError),
    #[error("TLS set-up: {0}")]
    Rustls(#[from] rustls::Error),
}

impl Tls {
    /// Reads the certificates (every file must parse and every key fit its certificate)
    /// and builds the rustls configuration.
    pub fn build(config: &Config) -> Result<Self, TlsError> {
        let provider = provider();
        let store = Arc::new(CertStore::load(config, provider.clone())?);
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(store.clone());
        // HTTP/2 preferred; a client that offers neither gets HTTP/1.1 too.
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // Stateless resumption tickets (keys rotated by rustls), so a returning client
        // skips the full handshake without a per-session cache entry here.
        server.ticketer = rustls::crypto::ring::Ticketer::new()?;
        let hsts = config.tls.hsts_max_age.map(|age| {
            HeaderValue::from_str(&format!("max-age={}", age.as_secs()))
                .expect("digits are a valid header value")
        });
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            store,
            hsts,
        })
    }
}
