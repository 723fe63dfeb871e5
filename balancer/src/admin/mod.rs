//! The admin listener: a second, separate socket serving the JSON API ([`api`]) that lists
//! backends and drains, resumes, reweights, adds and removes them at run time, the
//! Prometheus metrics (`GET /metrics`, [`crate::metrics`]), and the live dashboard
//! ([`dashboard`], `GET /`, fed by one [`sampler`] task) with the scaling events an
//! autoscaler reports ([`scaling`]). It is off
//! unless `admin.listen` is set, never shares the public listener, and answers only
//! requests carrying the bearer token ([`auth`]), or, on the dashboard's read-only routes,
//! the session cookie its token form sets; without a token it may only listen on
//! loopback (checked by `Config::validate`).
//!
//! It listens on a socket, so it is bounded like one facing an attacker: a few connections
//! at a time, a deadline on each request head, a small head, a capped and time-limited
//! body, and a lifetime for each connection; dashboard event streams, the only long
//! answers, hold at most [`dashboard::MAX_EVENT_STREAMS`] of the connections.

pub mod api;
pub mod auth;
pub mod client;
pub mod dashboard;
pub mod sampler;
pub mod scaling;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::backend::Registry;
use crate::config::Config;
use crate::guards::Guards;
use crate::sticky::Sticky;

/// Admin connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 16;
/// From a connection's accept (or its previous answer) to a complete request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// The largest request body (the API's are a few dozen bytes).
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// How long a request body may take to arrive.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest an admin connection lives, whatever it does.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// The most backends the set may hold after an API add.
pub const MAX_BACKENDS: usize = 1024;

/// What the API handlers need: the live set and how to build a backend like discovery does.
#[derive(Debug)]
pub struct AdminState {
    pub registry: Arc<Registry>,
    pub sticky: Sticky,
    /// The configuration in force (follows reloads).
    pub config: watch::Receiver<Arc<Config>>,
    verifier: Option<auth::Verifier>,
    /// The `/metrics` registry: one collector reading the live set at scrape time.
    pub metrics: prometheus_client::registry::Registry,
    /// The dashboard's figures, as the sampler publishes them.
    feed: sampler::Feed,
    /// Open dashboard event streams, at most [`dashboard::MAX_EVENT_STREAMS`].
    event_streams: Arc<Semaphore>,
    /// What autoscalers reported (bounded ring), for the dashboard.
    pub scaling: scaling::ScalingEvents,
}

/// The bound admin listener, ready to serve.
#[derive(Debug)]
pub struct AdminServer {
    listener: TcpListener,
    state: Arc<AdminState>,
    sampler: sampler::Sampler,
}

impl AdminServer {
    pub async fn bind(
        addr: SocketAddr,
        config: watch::Receiver<Arc<Config>>,
        registry: Arc<Registry>,
        sticky: Sticky,
        stats: Arc<crate::metrics::ProxyStats>,
        reloads: Arc<crate::reload::ReloadStats>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        // The token is the start-up one: a reload refuses to change it.
        let verifier = config
            .borrow()
            .admin
            .token
            .as_ref()
            .map(auth::Verifier::new);
        if verifier.is_some() {
            tracing::info!(admin_listen = %local, "admin API listening; calls need the bearer token");
        } else {
            tracing::warn!(admin_listen = %local, "admin API listening on loopback WITHOUT a token: \
                any local process can change the backends (set BALANCER_ADMIN_TOKEN, BALANCER_ADMIN_TOKEN_FILE or admin.token_file)");
        }
        let (sampler, feed) = sampler::channel();
        Ok(Self {
            listener,
            state: Arc::new(AdminState {
                metrics: {
                    let mut metrics = crate::metrics::registry(registry.clone(), stats);
                    metrics.register_collector(Box::new(crate::reload::Collector(reloads)));
                    metrics
                },
                registry,
                sticky,
                config,
                verifier,
                feed,
                event_streams: Arc::new(Semaphore::new(dashboard::MAX_EVENT_STREAMS)),
                scaling: scaling::ScalingEvents::default(),
            }),
            sampler,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the task is aborted (with the balancer's other background tasks).
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(serve(self.listener, self.state, self.sampler))
    }
}

/// Aborts the task when dropped: the sampler stops with the server that serves its figures.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn serve(listener: TcpListener, state: Arc<AdminState>, sampler: sampler::Sampler) {
    let _sampler = AbortOnDrop(tokio::spawn(sampler::run(state.registry.clone(), sampler)));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Covers idle keep-alive too: a connection that sends nothing is closed.
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES.max(8192))
        .max_headers(32)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore is never closed");
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        let builder = builder.clone();
        // Bounds of the public side in force, reused for the pools of API-added backends.
        let pool = Guards::from_config(&state.config.borrow()).pool;
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let state = state.clone();
                async move {
                    let response = if dashboard::serves(request.uri().path()) {
                        dashboard::handle(&state, peer, request).await
                    } else {
                        api::handle(&state, pool, peer, request)
                            .await
                            .map(BodyExt::boxed)
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            if tokio::time::timeout(CONNECTION_LIFETIME, connection)
                .await
                .is_err()
            {
                tracing::debug!(%peer, "admin connection closed at the end of its lifetime");
            }
        });
    }
}

impl AdminState {
    /// Whether the request may act: no token configured (loopback only), or the right one.
    fn authorized(&self, authorization: Option<&[u8]>) -> bool {
        match &self.verifier {
            None => true,
            Some(verifier) => verifier.allows(authorization),
        }
    }
}
