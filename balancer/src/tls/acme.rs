//! Automatic certificates: `[tls.acme]` obtains a certificate for its domains from an ACME
//! certificate authority (RFC 8555, with `instant-acme`), answers the HTTP-01 challenges on
//! the plain listener, keeps the account and the certificate on disk, and renews before
//! expiry, swapping the new certificate into the [`CertStore`] like a renewed file.
//!
//! - **Start-up** ([`Acme::new`]): the cached certificate, if it parses, fits its key and
//!   covers every configured domain, is served at once; a restart does not ask the
//!   authority again while it is good.
//! - **The task** ([`Acme::spawn`]): sleeps until the certificate is due (`renew_before`
//!   its expiry, but never before half its lifetime, so a margin longer than what the
//!   authority issues cannot turn into a loop of orders), then orders: account from the
//!   cache (created once), HTTP-01 for each pending authorization, a fresh P-256 key and
//!   its CSR, the chain. A failure is logged and retried with a doubling pause (30 s up to
//!   6 h), never in a tight loop; every network wait is bounded.
//! - **Challenges** ([`Challenges`]): the plain listener's redirect answers
//!   `/.well-known/acme-challenge/TOKEN` for the balancer's own pending tokens (a bounded
//!   map); any other token is proxied to the backends, so an app's own ACME client keeps
//!   working behind the balancer.
//! - **Cache** (`cache_dir`): `account.json` (the account's key and URL, and the directory
//!   it belongs to: another directory gets a new account), `certificate.pem` and
//!   `certificate.key`; each written to a temporary file with mode 0600, synced, then
//!   renamed over the old one, so a crash leaves either file whole.
//! - **The directory's HTTPS** is verified against the public roots (`webpki-roots`) plus
//!   `directory_ca` if given (a private or test authority); verification is never off.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

use crate::config::{AcmeConfig, Config};
use crate::proxy::body::ClientBody;
use crate::tls::certs::{CertStore, Managed, validity};

/// Pending challenge tokens kept at most (one order has one per domain).
const MAX_PENDING: usize = 100;
/// One request to the authority: connect, TLS, answer and body.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The authority's answers are small JSON documents and PEM chains.
const MAX_ANSWER_BYTES: usize = 1 << 20;
/// How long the authority may take to validate, and to issue.
const POLL_TIMEOUT: Duration = Duration::from_secs(120);
/// A whole order, all its requests and polls included.
const ORDER_TIMEOUT: Duration = Duration::from_secs(600);
const FIRST_RETRY: Duration = Duration::from_secs(30);
const LAST_RETRY: Duration = Duration::from_secs(6 * 3600);
/// The longest single sleep: the due time is computed again after it (a clock that jumped).
const MAX_SLEEP: Duration = Duration::from_secs(24 * 3600);

const ACCOUNT_FILE: &str = "account.json";
const CERT_FILE: &str = "certificate.pem";
const KEY_FILE: &str = "certificate.key";

/// Why ACME could not be set up or an order failed.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("{origin}: tls.acme.cache_dir {path}: {error}")]
    Cache {
        /// Where `cache_dir` was set.
        origin: String,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{origin}: tls.acme.directory_ca {path}: {problem}")]
    DirectoryCa {
        /// Where `directory_ca` was set.
        origin: String,
        path: PathBuf,
        problem: String,
    },
    #[error("ACME: {0}")]
    Protocol(#[from] instant_acme::Error),
    #[error("ACME: {0}")]
    Order(String),
    #[error("ACME certificate: {0}")]
    Certificate(String),
}

/// The balancer's own pending HTTP-01 challenges: token → key authorization.
#[derive(Debug, Default)]
pub struct Challenges {
    tokens: Mutex<HashMap<String, String>>,
}

impl Challenges {
    /// The answer to a challenge request for `token`, if it is one of ours.
    pub fn answer(&self, token: &str) -> Option<Response<ClientBody>> {
        let key_authorization = self.tokens.lock().ok()?.get(token).cloned()?;
        let mut response = Response::new(ClientBody::text(key_authorization));
        *response.status_mut() = StatusCode::OK;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/octet-stream"),
        );
        Some(response)
    }

    fn insert(&self, token: String, key_authorization: String) -> Result<(), AcmeError> {
        let mut tokens = self
            .tokens
            .lock()
            .map_err(|_| AcmeError::Order("challenge map poisoned".to_owned()))?;
        if tokens.len() >= MAX_PENDING && !tokens.contains_key(&token) {
            return Err(AcmeError::Order(format!(
                "more than {MAX_PENDING} pending challenges"
            )));
        }
        tokens.insert(token, key_authorization);
        Ok(())
    }

    fn remove(&self, token: &str) {
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.remove(token);
        }
    }

    /// How many tokens are pending (for tests and inspection).
    pub fn pending(&self) -> usize {
        self.tokens.lock().map_or(0, |t| t.len())
    }
}

/// Removes an order's tokens when the order ends, however it ends.
struct Published<'a> {
    challenges: &'a Challenges,
    tokens: Vec<String>,
}

impl Drop for Published<'_> {
    fn drop(&mut self) {
        for token in &self.tokens {
            self.challenges.remove(token);
        }
    }
}

/// The ACME manager: its configuration, where it puts certificates, its counters.
pub struct Acme {
    config: AcmeConfig,
    /// Where `tls.acme.cache_dir` was set, for errors.
    cache_origin: String,
    store: Arc<CertStore>,
    challenges: Arc<Challenges>,
    connector: TlsConnector,
    /// The account, once loaded or created.
    account: tokio::sync::Mutex<Option<Account>>,
    renew: Notify,
    obtained: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for Acme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acme")
            .field("domains", &self.config.domains)
            .field("directory", &self.config.directory)
            .field("obtained", &self.obtained())
            .finish_non_exhaustive()
    }
}

/// `account.json`: the credentials and the directory they belong to.
#[derive(Serialize, Deserialize)]
struct CachedAccount {
    directory: String,
    credentials: AccountCredentials,
}

impl Acme {
    /// Reads `directory_ca`, makes the cache directory and serves the cached certificate
    /// if it is good for the configured domains. `None` when `[tls.acme]` is not set.
    pub fn new(whole: &Config, store: Arc<CertStore>) -> Result<Option<Arc<Self>>, AcmeError> {
        let Some(config) = &whole.tls.acme else {
            return Ok(None);
        };
        let cache_origin = whole.origin_of("tls.acme.cache_dir");
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = &config.directory_ca {
            let fail = |problem: String| AcmeError::DirectoryCa {
                origin: whole.origin_of("tls.acme.directory_ca"),
                path: path.clone(),
                problem,
            };
            let pem = std::fs::read(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| fail(format!("not PEM certificates: {e}")))?;
            if certs.is_empty() {
                return Err(fail("holds no CERTIFICATE block".to_owned()));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| fail(format!("not a usable CA certificate: {e}")))?;
            }
        }
        let mut client = rustls::ClientConfig::builder_with_provider(super::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| AcmeError::Order(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        make_private_dir(&config.cache_dir).map_err(|error| AcmeError::Cache {
            origin: cache_origin.clone(),
            path: config.cache_dir.clone(),
            error,
        })?;
        let acme = Arc::new(Self {
            config: config.clone(),
            cache_origin,
            store,
            challenges: Arc::new(Challenges::default()),
            connector: TlsConnector::from(Arc::new(client)),
            account: tokio::sync::Mutex::new(None),
            renew: Notify::new(),
            obtained: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
        });
        match acme.read_cached_certificate() {
            Ok(Some(managed)) => {
                tracing::info!(domains = ?managed.names, "ACME certificate read from the cache");
                acme.store.set_managed(managed);
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, "cached ACME certificate not used: a new one will be ordered")
            }
        }
        Ok(Some(acme))
    }

    /// The challenges the plain listener answers.
    pub fn challenges(&self) -> Arc<Challenges> {
        self.challenges.clone()
    }

    /// Orders a new certificate now, whatever the current one's expiry (an operator's or
    /// a test's request; a request made during an order is served after it).
    pub fn renew_now(&self) {
        self.renew.notify_one();
    }

    /// Certificates obtained from the authority since start-up (the cached one not counted).
    pub fn obtained(&self) -> u64 {
        self.obtained.load(Ordering::Relaxed)
    }

    /// Orders that failed since start-up.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The last order's error, if the last order failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok()?.clone()
    }

    /// Runs the renewal loop until aborted.
    pub fn spawn(self: Arc<Self>) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let due = self.renewal_due();
                let wait = due
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO);
                if !wait.is_zero() {
                    tracing::info!(in_secs = wait.as_secs(), "ACME renewal scheduled");
                    tokio::select! {
                        () = tokio::time::sleep(wait.min(MAX_SLEEP)) => continue,
                        () = self.renew.notified() => {}
                    }
                }
                self.obtain_with_retries().await;
            }
        })
    }

    /// When the served certificate is to be replaced: now when there is none.
    pub fn renewal_due(&self) -> SystemTime {
        let now = SystemTime::now();
        let Some(managed) = self.store.managed() else {
            return now;
        };
        let Some((start, end)) = validity(&managed.key.cert[0]) else {
            // Not expected (webpki read it): look again in a day rather than order now.
            return now + MAX_SLEEP;
        };
        let half = start + end.duration_since(start).unwrap_or(Duration::ZERO) / 2;
        let margin = end.checked_sub(self.config.renew_before).unwrap_or(start);
        margin.max(half)
    }

    async fn obtain_with_retries(&self) {
        let mut pause = FIRST_RETRY;
        loop {
            let result = match tokio::time::timeout(ORDER_TIMEOUT, self.obtain()).await {
                Ok(result) => result,
                Err(_) => Err(AcmeError::Order(format!(
                    "the order took longer than {ORDER_TIMEOUT:?}"
                ))),
            };
            match result {
                Ok(()) => {
                    if let Ok(mut last) = self.last_error.lock() {
                        *last = None;
                    }
                    return;
                }
                Err(error) => {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    if account_gone(&error) {
                        self.forget_account().await;
                    }
                    tracing::error!(%error, retry_in_secs = pause.as_secs(), domains = ?self.config.domains,
                        "ACME order failed: the current certificate (if any) is still served");
                    if let Ok(mut last) = self.last_error.lock() {
                        *last = Some(error.to_string());
                    }
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = self.renew.notified() => {}
                    }
                    pause = (pause * 2).min(LAST_RETRY);
                }
            }
        }
    }

    /// One order, from the account to the certificate served.
    async fn obtain(&self) -> Result<(), AcmeError> {
        let account = self.account().await?;
        let identifiers: Vec<Identifier> = self
            .config
            .domains
            .iter()
            .map(|d| Identifier::Dns(d.clone()))
            .collect();
        tracing::info!(domains = ?self.config.domains, "ACME order placed");
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
        let mut published = Published {
            challenges: &self.challenges,
            tokens: Vec::new(),
        };
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(AcmeError::Order(format!(
                        "authorization for {} is {other:?}",
                        authorization.identifier()
                    )));
                }
            }
            let name = authorization.identifier().to_string();
            let mut challenge = authorization
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| AcmeError::Order(format!("no HTTP-01 challenge for {name}")))?;
            let key_authorization = challenge.key_authorization().as_str().to_owned();
            self.challenges
                .insert(challenge.token.clone(), key_authorization)?;
            published.tokens.push(challenge.token.clone());
            challenge.set_ready().await?;
        }
        let retries = RetryPolicy::new().timeout(POLL_TIMEOUT);
        let status = order.poll_ready(&retries).await?;
        if status != OrderStatus::Ready {
            let problem = order
                .state()
                .error
                .as_ref()
                .map_or_else(String::new, |p| format!(": {p}"));
            return Err(AcmeError::Order(format!(
                "the order is {status:?}, not ready{problem}"
            )));
        }
        let key = rcgen::KeyPair::generate().map_err(|e| AcmeError::Certificate(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(self.config.domains.clone())
            .map_err(|e| AcmeError::Certificate(e.to_string()))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params
            .serialize_request(&key)
            .map_err(|e| AcmeError::Certificate(e.to_string()))?;
        order.finalize_csr(csr.der()).await?;
        let chain = order.poll_certificate(&retries).await?;
        drop(published);
        let key_pem = key.serialize_pem();
        let managed = self.parse(chain.as_bytes(), key_pem.as_bytes())?;
        let dir = self.config.cache_dir.clone();
        let (chain_bytes, key_bytes) = (chain.into_bytes(), key_pem.into_bytes());
        tokio::task::spawn_blocking(move || {
            write_private(&dir, KEY_FILE, &key_bytes)?;
            write_private(&dir, CERT_FILE, &chain_bytes)
        })
        .await
        .map_err(|e| AcmeError::Order(e.to_string()))?
        .map_err(|(path, error)| self.cache_error(path, error))?;
        let expires = validity(&managed.key.cert[0]).map(|(_, end)| {
            end.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .as_secs()
        });
        tracing::info!(domains = ?managed.names, expires_in_secs = ?expires, "ACME certificate obtained: new handshakes get it");
        self.store.set_managed(managed);
        self.obtained.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The account: from memory, else from the cache if it belongs to this directory,
    /// else created (and cached).
    async fn account(&self) -> Result<Account, AcmeError> {
        let mut slot = self.account.lock().await;
        if let Some(account) = slot.as_ref() {
            return Ok(account.clone());
        }
        let path = self.config.cache_dir.join(ACCOUNT_FILE);
        let cached = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<CachedAccount>(&bytes) {
                Ok(cached) if cached.directory == self.config.directory => Some(cached),
                Ok(_) => {
                    tracing::info!(
                        "the cached ACME account belongs to another directory: creating one"
                    );
                    None
                }
                Err(error) => {
                    // Never the content: it holds the account's private key.
                    tracing::warn!(file = %path.display(), %error, "cached ACME account unreadable: creating one");
                    None
                }
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(self.cache_error(path, error)),
        };
        let account = match cached {
            Some(cached) => {
                Account::builder_with_http(self.http())
                    .from_credentials(cached.credentials)
                    .await?
            }
            None => {
                let contact: Vec<&str> = self.config.contact.iter().map(String::as_str).collect();
                let (account, credentials) = Account::builder_with_http(self.http())
                    .create(
                        &NewAccount {
                            contact: &contact,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        self.config.directory.clone(),
                        None,
                    )
                    .await?;
                let cached = CachedAccount {
                    directory: self.config.directory.clone(),
                    credentials,
                };
                let bytes = serde_json::to_vec(&cached)
                    .map_err(|e| AcmeError::Order(format!("account credentials: {e}")))?;
                write_private(&self.config.cache_dir, ACCOUNT_FILE, &bytes)
                    .map_err(|(path, error)| self.cache_error(path, error))?;
                tracing::info!(directory = %self.config.directory, "ACME account created");
                account
            }
        };
        *slot = Some(account.clone());
        Ok(account)
    }

    /// Drops an account the authority no longer knows (deactivated, or the authority's
    /// data reset), in memory and in the cache, so the next attempt creates one.
    async fn forget_account(&self) {
        *self.account.lock().await = None;
        let path = self.config.cache_dir.join(ACCOUNT_FILE);
        let kept = self
            .config
            .cache_dir
            .join(format!("{ACCOUNT_FILE}.rejected"));
        match std::fs::rename(&path, &kept) {
            Ok(()) => {
                tracing::warn!(kept = %kept.display(), "the ACME authority no longer knows the cached account: a new one will be created")
            }
            Err(error) => {
                tracing::warn!(file = %path.display(), %error, "could not set the rejected ACME account aside")
            }
        }
    }

    fn cache_error(&self, path: PathBuf, error: std::io::Error) -> AcmeError {
        AcmeError::Cache {
            origin: self.cache_origin.clone(),
            path,
            error,
        }
    }

    fn http(&self) -> Box<dyn HttpClient> {
        Box::new(Http {
            connector: self.connector.clone(),
        })
    }

    /// The cached certificate, if both files are there; an error if they are unusable or
    /// do not cover every configured domain.
    fn read_cached_certificate(&self) -> Result<Option<Managed>, AcmeError> {
        let dir = &self.config.cache_dir;
        let read = |name: &str| match std::fs::read(dir.join(name)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(self.cache_error(dir.join(name), error)),
        };
        let (Some(chain), Some(key)) = (read(CERT_FILE)?, read(KEY_FILE)?) else {
            return Ok(None);
        };
        self.parse(&chain, &key).map(Some)
    }

    /// A chain and its key as a servable certificate for the configured domains.
    fn parse(&self, chain: &[u8], key: &[u8]) -> Result<Managed, AcmeError> {
        let fail = |problem: String| AcmeError::Certificate(problem);
        let chain = CertificateDer::pem_slice_iter(chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(format!("not a PEM chain: {e}")))?;
        let first = chain
            .first()
            .ok_or_else(|| fail("no certificate in the chain".to_owned()))?;
        let end_entity = webpki::EndEntityCert::try_from(first)
            .map_err(|e| fail(format!("not valid X.509: {e}")))?;
        let names: Vec<String> = end_entity
            .valid_dns_names()
            .map(str::to_ascii_lowercase)
            .collect();
        if let Some(missing) = self.config.domains.iter().find(|d| !names.contains(d)) {
            return Err(fail(format!("does not cover {missing} (it has {names:?})")));
        }
        let key =
            PrivateKeyDer::from_pem_slice(key).map_err(|e| fail(format!("no usable key: {e}")))?;
        let certified = CertifiedKey::from_der(chain, key, &super::provider())
            .map_err(|e| fail(format!("the key does not fit: {e}")))?;
        Ok(Managed {
            names: self.config.domains.clone(),
            key: Arc::new(certified),
        })
    }
}

/// Whether the authority said the account does not exist (RFC 8555 7.3.1, 6.7).
fn account_gone(error: &AcmeError) -> bool {
    matches!(
        error,
        AcmeError::Protocol(instant_acme::Error::Api(problem))
            if problem.r#type.as_deref() == Some("urn:ietf:params:acme:error:accountDoesNotExist")
    )
}

/// The authority's HTTP client: one HTTP/1.1 connection over TLS per request (an order
/// makes a dozen requests, minutes or months apart), on the balancer's own hyper and
/// rustls.
struct Http {
    connector: TlsConnector,
}

impl HttpClient for Http {
    fn request(
        &self,
        request: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let connector = self.connector.clone();
        Box::pin(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, send(connector, request)).await {
                Ok(answer) => answer.map_err(|e| instant_acme::Error::Other(e.into())),
                Err(_) => Err(instant_acme::Error::Other(
                    format!("no answer from the ACME directory within {REQUEST_TIMEOUT:?}").into(),
                )),
            }
        })
    }
}

async fn send(
    connector: TlsConnector,
    mut request: Request<BodyWrapper<Bytes>>,
) -> Result<BytesResponse, String> {
    let uri = request.uri().clone();
    if uri.scheme_str() != Some("https") {
        return Err(format!("{uri}: not an https URL"));
    }
    let host = uri.host().ok_or_else(|| format!("{uri}: no host"))?;
    let port = uri.port_u16().unwrap_or(443);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let server_name =
        ServerName::try_from(bare.to_owned()).map_err(|e| format!("{uri}: bad host: {e}"))?;
    let tcp = TcpStream::connect((bare, port))
        .await
        .map_err(|e| format!("{host}:{port}: {e}"))?;
    let tls = connector
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("{host}:{port}: TLS: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("{host}:{port}: {e}"))?;
    // Ends when the exchange is done and `sender` is dropped; bounded by the caller's
    // timeout otherwise (dropping the future drops the connection).
    let driving = tokio::spawn(async move {
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, connection).await;
    });
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    *request.uri_mut() = uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .parse()
        .map_err(|e| format!("{uri}: {e}"))?;
    request.headers_mut().insert(
        header::HOST,
        authority
            .parse()
            .map_err(|e| format!("{uri}: bad host: {e}"))?,
    );
    let answer = sender
        .send_request(request)
        .await
        .map_err(|e| format!("{uri}: {e}"))?;
    let (parts, body) = answer.into_parts();
    let body = Limited::new(body, MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| format!("{uri}: reading the answer: {e}"))?
        .to_bytes();
    drop(sender);
    driving.abort();
    Ok(BytesResponse::from(Response::from_parts(
        parts,
        Full::new(body),
    )))
}

/// Makes `dir` (mode 0700 when created) if it is not there.
fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Writes `name` in `dir` atomically: a temporary file (mode 0600) synced, then renamed.
/// An error comes with the path it concerns.
fn write_private(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), (PathBuf, std::io::Error)> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join(name);
    let temporary = dir.join(format!(".{name}.tmp"));
    let fail = |error| (path.clone(), error);
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    drop(file);
    std::fs::rename(&temporary, &path).map_err(fail)?;
    // The rename itself durable too.
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_answer_only_their_tokens_and_are_bounded() {
        let challenges = Challenges::default();
        challenges.insert("t1".into(), "t1.thumb".into()).unwrap();
        let answer = challenges.answer("t1").unwrap();
        assert_eq!(answer.status(), 200);
        assert!(challenges.answer("t2").is_none());
        for i in 0..MAX_PENDING - 1 {
            challenges.insert(format!("x{i}"), "k".into()).unwrap();
        }
        assert!(challenges.insert("over".into(), "k".into()).is_err());
        {
            let _published = Published {
                challenges: &challenges,
                tokens: vec!["t1".into()],
            };
        }
        assert!(challenges.answer("t1").is_none());
        assert_eq!(challenges.pending(), MAX_PENDING - 1);
    }

    #[test]
    fn cache_files_are_private_and_replaced_whole() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("acme");
        make_private_dir(&cache).unwrap();
        write_private(&cache, "f", b"one").unwrap();
        write_private(&cache, "f", b"two").unwrap();
        assert_eq!(std::fs::read(cache.join("f")).unwrap(), b"two");
        let mode = std::fs::metadata(cache.join("f"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(!cache.join(".f.tmp").exists());
    }
}
