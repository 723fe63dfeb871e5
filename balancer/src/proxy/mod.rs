//! The forwarding mechanism: one request in, one backend exchange out. It asks the
//! selector for candidates and walks them; it knows nothing about how they were ordered.
//!
//! A request is sent at most once unless it provably never reached a backend (connect
//! failed, or the first write on a pooled connection was refused), or retries of idempotent bodiless
//! requests are enabled and the retry budget allows one.

pub mod body;
pub mod error;
pub mod guard;
pub mod headers;
pub mod retry;
pub mod upgrade;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use arc_swap::ArcSwap;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, header};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tracing::Instrument as _;

use crate::backend::{Backend, InFlight, Registry, now_millis};
use crate::config::Config;
use crate::guards::Guards;
use crate::metrics::{self, ProxyStats};
use crate::pool;
use crate::selection::{self, SelectContext, Selector};
use crate::sticky::Sticky;
use crate::upstream::{
    self, ConnectError, Connection, ExchangeError, Outcome, RequestBody, ResponseBody,
};
use body::{ClientBody, ProxiedBody};
use error::ProxyError;
use retry::RetryBudget;

/// Shared by every connection: the policy in force and the live backend set.
#[derive(Debug)]
pub struct Proxy {
    /// Swapped whole by a configuration reload; each request loads it once, at its start,
    /// so a request (and the tunnel it may open) runs under one configuration throughout.
    policy: ArcSwap<Policy>,
    registry: Arc<Registry>,
    tunnels: upgrade::Tunnels,
    ids: headers::RequestIds,
    /// Global counters for `/metrics` (atomics; per-backend ones live in `Backend`).
    stats: Arc<ProxyStats>,
}

/// Everything a request's handling reads from the configuration, derived once per
/// configuration: the config itself, its bounds, the selector, the sticky cookie settings
/// and the retry budget.
#[derive(Debug)]
pub struct Policy {
    pub config: Arc<Config>,
    pub guards: Guards,
    selector: Arc<dyn Selector>,
    sticky: Option<Sticky>,
    budget: Arc<RetryBudget>,
}

impl Policy {
    /// The selection algorithm's instance (its rotation, scores or hash ring).
    pub fn selector(&self) -> &dyn Selector {
        &*self.selector
    }

    /// `sticky` carries the cookie settings and key; it is used only if `config` enables it.
    pub fn new(config: Arc<Config>, sticky: Sticky) -> Self {
        Self {
            guards: Guards::from_config(&config),
            selector: selection::for_algorithm(config.algorithm).into(),
            sticky: config.sticky.enabled.then_some(sticky),
            budget: Arc::new(RetryBudget::new(&config.retry)),
            config,
        }
    }

    /// The policy of `config`, keeping this one's selector (its rotation, smooth-WRR scores,
    /// hash ring) when the algorithm is the same, and its retry budget when the retry
    /// settings are: a reload that does not touch them does not reset them.
    pub fn succeed(&self, config: Arc<Config>, sticky: Sticky) -> Self {
        let mut next = Self::new(config, sticky);
        if next.config.algorithm == self.config.algorithm {
            next.selector = self.selector.clone();
        }
        let (old, new) = (&self.config.retry, &next.config.retry);
        if (old.budget_ratio, old.budget_min) == (new.budget_ratio, new.budget_min) {
            next.budget = self.budget.clone();
        }
        next
    }
}

/// The parts of the client's request that every attempt reuses.
struct Head<'a> {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    /// Written to the backend besides `headers` (see `headers::RequestIds::assign`).
    request_id: Option<&'a [u8]>,
}

/// `0, 1, 2, ...`: the eligible list when every backend of a set this size is available.
static EVERY_INDEX: [usize; 64] = {
    let mut all = [0; 64];
    let mut i = 0;
    while i < all.len() {
        all[i] = i;
        i += 1;
    }
    all
};

/// How one attempt on one backend ended.
enum Attempt {
    /// The answer's head, and its body with the request's in-flight count (none after a
    /// 101), which `forward` hands the client with the request's policy.
    Answered(http::response::Parts, Option<(ResponseBody, InFlight)>),
    /// Nothing reached the backend: the next candidate may be tried.
    NotSent(ProxyError),
    /// The backend may have seen the request.
    Failed(ProxyError),
}

impl Proxy {
    pub fn new(policy: Policy, registry: Arc<Registry>, stats: Arc<ProxyStats>) -> Self {
        Self {
            policy: ArcSwap::from_pointee(policy),
            registry,
            tunnels: upgrade::Tunnels::default(),
            ids: headers::RequestIds::new(),
            stats,
        }
    }

    /// The policy in force now.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Puts `policy` in force for every request that starts from now on.
    pub fn set_policy(&self, policy: Policy) {
        self.policy.store(Arc::new(policy));
    }

    /// The upgraded (WebSocket) connections this proxy opened and that are still open.
    pub fn tunnels(&self) -> &upgrade::Tunnels {
        &self.tunnels
    }

    pub async fn handle(
        &self,
        peer: SocketAddr,
        mut request: Request<Incoming>,
    ) -> Response<ClientBody> {
        // The one configuration this request runs under, whatever a reload does meanwhile.
        let policy = self.policy.load_full();
        // Set first, so the backend gets it and every log line about the request names it.
        let trusted = headers::is_trusted(peer, &policy.config.forwarding.trusted_proxies);
        let id = self.ids.assign(request.headers_mut(), trusted);
        let method = request.method().clone();
        // A cheap reference-counted copy, only read if the request fails.
        let uri = request.uri().clone();
        // A span only where debug logging is on: wrapping every request's future in one
        // (even a disabled span) moves and polls it through one more layer. Each branch
        // makes its own future where it awaits it, so the usual one is not moved first.
        let outcome = if tracing::enabled!(tracing::Level::DEBUG) {
            self.forward(policy, peer, request, id.header())
                .instrument(tracing::debug_span!("request", request_id = id.as_str()))
                .await
        } else {
            self.forward(policy, peer, request, id.header()).await
        };
        match outcome {
            Ok(response) => response,
            Err(error) => {
                if error.status().is_server_error() {
                    tracing::warn!(%peer, %method, path = uri.path(), request_id = id.as_str(), %error, status = error.status().as_u16(), "request failed");
                } else {
                    tracing::debug!(%peer, %method, path = uri.path(), request_id = id.as_str(), %error, "request refused");
                }
                error.into_response()
            }
        }
    }

    async fn forward(
        &self,
        policy: Arc<Policy>,
        peer: SocketAddr,
        mut request: Request<Incoming>,
        request_id: Option<&[u8]>,
    ) -> Result<Response<ClientBody>, ProxyError> {
        let target = guard::check(&request, &policy.config.forwarding.server_names)?;
        let upgrade = headers::wants_upgrade(request.headers());
        let mut client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        let (mut parts, incoming) = request.into_parts();
        if parts.version == http::Version::HTTP_2 {
            headers::from_http2(&mut parts.headers, parts.uri.authority());
        }
        let mut head = Head {
            method: parts.method,
            uri: target,
            headers: parts.headers,
            request_id,
        };
        let requested = policy
            .sticky
            .as_ref()
            .and_then(|s| s.requested(&head.headers));
        headers::remove_hop_by_hop(&mut head.headers, upgrade);
        let scheme = parts
            .extensions
            .get::<headers::Scheme>()
            .copied()
            .unwrap_or(headers::Scheme::Http);
        let client_ip = headers::set_forwarded_as(
            &mut head.headers,
            peer,
            &policy.config.forwarding.trusted_proxies,
            scheme,
        );
        if let Some(sticky) = &policy.sticky {
            sticky.strip(&mut head.headers);
        }
        let bodiless = incoming.is_end_stream();
        let mut body = if bodiless {
            RequestBody::Empty
        } else {
            // Read the first frame before choosing a backend: a body whose framing is broken
            // from the start (bad chunk size) is refused without reaching anyone.
            let mut incoming = incoming;
            let first = tokio::time::timeout(policy.guards.client.body, incoming.frame())
                .await
                .map_err(|_| ProxyError::ClientTimeout)?;
            let first = match first {
                Some(Ok(frame)) => Some(frame),
                Some(Err(_)) => return Err(ProxyError::BadRequest("malformed request body")),
                None => None,
            };
            RequestBody::Streaming {
                first,
                rest: incoming,
            }
        };

        let set = self.registry.load_full();
        let now = now_millis();
        let n = set.backends.len();
        // Usually every backend is available: then the list of them is a constant, not an
        // allocation per request.
        let some: Vec<usize>;
        let eligible: &[usize] =
            if n <= EVERY_INDEX.len() && set.backends.iter().all(|b| b.is_available(now)) {
                &EVERY_INDEX[..n]
            } else {
                let available = (0..n)
                    .filter(|&i| set.backends[i].is_available(now))
                    .collect::<Vec<_>>();
                some = if available.is_empty() && policy.config.fail_open {
                    (0..n).filter(|&i| !set.backends[i].is_draining()).collect()
                } else {
                    available
                };
                &some
            };
        if eligible.is_empty() {
            return Err(ProxyError::NoBackend);
        }
        let mut order = policy
            .selector
            .select(&set, eligible, &SelectContext { client_ip });
        if let Some(id) = &requested {
            match order.iter().position(|&i| set.backends[i].sticky_id == *id) {
                Some(position) => {
                    let chosen = order.remove(position);
                    order.insert(0, chosen);
                    self.stats.sticky_hits.fetch_add(1, Relaxed);
                    set.backends[chosen]
                        .stats
                        .sticky_routed
                        .fetch_add(1, Relaxed);
                }
                None => {
                    self.stats.sticky_reroutes.fetch_add(1, Relaxed);
                }
            }
        }
        policy.budget.deposit();

        let idempotent_retry = policy.config.retry.idempotent
            && bodiless
            && !upgrade
            && matches!(
                head.method,
                Method::GET
                    | Method::HEAD
                    | Method::OPTIONS
                    | Method::PUT
                    | Method::DELETE
                    | Method::TRACE
            );
        let mut last_error = ProxyError::NoBackend;
        let max_attempts = policy.config.retry.max_attempts.get() as usize;
        for (attempt, &index) in order.iter().take(max_attempts).enumerate() {
            let backend = &set.backends[index];
            if attempt > 0 {
                self.stats.retries.fetch_add(1, Relaxed);
                tracing::debug!(backend = %backend.addr, attempt, "retrying on next candidate");
            }
            match self
                .attempt(&policy, backend, &head, &mut body, &mut client_upgrade)
                .await
            {
                Attempt::Answered(mut parts, body) => {
                    tracing::debug!(backend = %backend.addr, status = parts.status.as_u16(), "answered");
                    if let Some(sticky) = &policy.sticky
                        && requested.as_deref() != Some(backend.sticky_id.as_str())
                    {
                        parts
                            .headers
                            .append(header::SET_COOKIE, sticky.set_cookie(&backend.sticky_id));
                        backend.stats.sticky_issued.fetch_add(1, Relaxed);
                    }
                    let body = match body {
                        // The request's own policy handle moves into the body, which needs
                        // it until its end: no second reference count per request.
                        Some((body, in_flight)) => ClientBody::Proxied(ProxiedBody::new(
                            body,
                            backend.clone(),
                            in_flight,
                            policy,
                        )),
                        None => ClientBody::empty(),
                    };
                    return Ok(Response::from_parts(parts, body));
                }
                Attempt::NotSent(error) => last_error = error,
                Attempt::Failed(error) => {
                    let retry = idempotent_retry
                        && !matches!(error, ProxyError::BadRequest(_) | ProxyError::ClientTimeout)
                        && policy.budget.withdraw();
                    if !retry {
                        return Err(error);
                    }
                    body = RequestBody::Empty;
                    last_error = error;
                }
            }
        }
        Err(last_error)
    }

    /// One exchange with `backend`. A pooled connection that turns out dead before the
    /// request left is replaced by a fresh one once.
    async fn attempt(
        &self,
        policy: &Policy,
        backend: &Arc<Backend>,
        head: &Head<'_>,
        body: &mut RequestBody,
        client_upgrade: &mut Option<OnUpgrade>,
    ) -> Attempt {
        let passive = &policy.config.passive;
        let guards = &policy.guards.backend;
        let in_flight = backend.track();
        let request = upstream::RequestHead {
            method: &head.method,
            uri: &head.uri,
            headers: &head.headers,
            host_fallback: Some(&backend.origin),
            request_id: head.request_id,
        };
        let mut fresh = false;
        loop {
            let connected = if fresh {
                Connection::connect(backend.addr, guards.connect).await
            } else {
                pool::checkout(&backend.pool, backend.addr, guards.connect).await
            };
            let connection = match connected {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::debug!(backend = %backend.addr, %error, "connect failed");
                    backend.record_failure(passive, "connect failed");
                    backend.stats.record(metrics::Outcome::ConnectFailed);
                    return Attempt::NotSent(match error {
                        ConnectError::TimedOut => ProxyError::ConnectTimeout,
                        ConnectError::Io(_) => ProxyError::ConnectFailed,
                    });
                }
            };
            // Only what the backend caused counts against it: a client that sends its body
            // slowly or badly is answered 408/400 and leaves the backend's record alone.
            let sent =
                upstream::send(connection, &request, body, client_upgrade.is_some(), guards).await;
            let answered = match sent {
                Err(ExchangeError::ResponseTimeout) => {
                    backend.record_failure(passive, "response timeout");
                    backend.stats.record(metrics::Outcome::Timeout);
                    return Attempt::Failed(ProxyError::ResponseTimeout);
                }
                Err(ExchangeError::NotSent(error)) => {
                    tracing::debug!(backend = %backend.addr, %error, "connection closed before sending");
                    if !fresh {
                        fresh = true;
                        continue;
                    }
                    backend.record_failure(passive, "connection closed before sending");
                    backend.stats.record(metrics::Outcome::ConnectFailed);
                    return Attempt::NotSent(ProxyError::ConnectFailed);
                }
                Err(ExchangeError::ClientBody) => {
                    backend.stats.record(metrics::Outcome::ClientError);
                    return Attempt::Failed(ProxyError::BadRequest(
                        "malformed or incomplete request body",
                    ));
                }
                Err(ExchangeError::ClientBodyTimeout) => {
                    backend.stats.record(metrics::Outcome::ClientError);
                    return Attempt::Failed(ProxyError::ClientTimeout);
                }
                Err(error) => {
                    tracing::debug!(backend = %backend.addr, %error, "backend exchange failed");
                    backend.record_failure(passive, "backend connection error");
                    backend.stats.record(metrics::Outcome::Failed);
                    return Attempt::Failed(ProxyError::BackendFailed);
                }
                Ok(answered) => answered,
            };
            if let Some(waited) = answered.waited {
                backend.record_latency(waited);
                backend.stats.observe_latency(waited);
            }
            let outcome = answered.outcome;
            let (mut parts, body) = match outcome {
                Outcome::Response(parts, body) => (parts, Some(body)),
                Outcome::Switched(parts, stream, early) => {
                    if let Some(client) = client_upgrade.take() {
                        self.tunnels.spawn(
                            client,
                            stream,
                            early,
                            policy.guards.tunnel,
                            backend.addr,
                        );
                    }
                    (parts, None)
                }
            };
            backend
                .stats
                .record(metrics::Outcome::Answered(parts.status.as_u16()));
            if parts.status.is_server_error() && passive.count_5xx {
                backend.record_failure(passive, "5xx response");
            } else {
                backend.record_success();
            }
            let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
            headers::remove_hop_by_hop(&mut parts.headers, switching);
            return Attempt::Answered(parts, body.map(|body| (body, in_flight)));
        }
    }
}
