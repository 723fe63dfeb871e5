//! Building the app from its config and running it until a shutdown signal.

use crate::cache::WindowCache;
use crate::compaction::Compactor;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::recorder::{Recorder, Writers};
use crate::routes::{AppState, router};
use crate::store::{Store, StoreError};
use crate::work::SimulatedWork;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] StoreError),
    #[error("REDIS_URL: {0}")]
    RedisUrl(redis::RedisError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A bound, migrated, ready-to-serve app.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    router: axum::Router,
    writers: Writers,
    store: Store,
    draining: Arc<AtomicBool>,
    grace: Duration,
    instance_id: Arc<str>,
    compactor: Compactor,
}

impl App {
    /// Connects to PostgreSQL (waiting for it up to `DATABASE_STARTUP_TIMEOUT_SECS`), applies
    /// the migrations, compacts the counters once (unless `COMPACT_INTERVAL_SECS=0`), prepares
    /// the Redis cache (lazily connected) and binds the listener.
    pub async fn build(config: Config) -> Result<App, StartupError> {
        let metrics = Arc::new(Metrics::new(&config.instance_id));
        let store = Store::connect(&config.database).await?;
        let deployment = store.deployment_id().await?;
        let compactor = Compactor::start(store.clone(), config.compaction.interval).await;
        let cache = WindowCache::new(
            config.redis.url(),
            &deployment,
            config.redis.timeout,
            metrics.clone(),
        )
        .map_err(StartupError::RedisUrl)?;
        let (recorder, writers) = Recorder::start(
            store.clone(),
            config.instance_id.clone(),
            config.writes.clone(),
            metrics.clone(),
        );
        let addr = config.listen_addr();
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        let instance_id: Arc<str> = config.instance_id.into();
        let draining = Arc::new(AtomicBool::new(false));
        let state = AppState {
            instance_id: instance_id.clone(),
            store: store.clone(),
            cache: Arc::new(cache),
            recorder,
            work: Arc::new(SimulatedWork::new(&config.work, metrics.clone())),
            metrics,
            draining: draining.clone(),
        };
        Ok(App {
            listener,
            router: router(state),
            writers,
            store,
            draining,
            grace: config.shutdown_grace,
            instance_id,
            compactor,
        })
    }

    /// The bound address (the real port when PORT=0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes; then stops accepting, lets in-flight requests finish
    /// for at most the grace period, commits every hit still queued, and closes the pool.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let App {
            listener,
            router,
            writers,
            store,
            draining,
            grace,
            instance_id,
            compactor,
        } = self;
        tracing::info!(addr = %listener.local_addr()?, instance_id = %instance_id, "hits is serving");
        let stopping = Arc::new(tokio::sync::Notify::new());
        let signal = {
            let stopping = stopping.clone();
            async move {
                shutdown.await;
                draining.store(true, Ordering::Relaxed);
                tracing::info!(grace = ?grace, "shutting down: no new connections; finishing in-flight requests");
                stopping.notify_one();
            }
        };
        let server = axum::serve(listener, router).with_graceful_shutdown(signal);
        let grace_over = async {
            stopping.notified().await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            result = server => result?,
            () = grace_over => tracing::warn!("grace period over; dropping the connections still open"),
        }
        // The router (and with it every Recorder) is gone: the writers drain what is queued.
        writers.finish().await;
        drop(compactor);
        store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}
