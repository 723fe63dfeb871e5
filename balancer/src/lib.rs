//! hitscale's HTTP load balancer: a reverse proxy on hyper with six selection algorithms,
//! active and passive health checks, cookie sticky sessions and DNS discovery.
//!
//! Policy (which backend: [`selection`], [`sticky`], [`health`], [`discovery`]) is kept
//! apart from mechanism (moving bytes: [`proxy`], [`upstream`], [`pool`], [`server`]). They meet in the
//! [`backend::Registry`], an atomically swapped snapshot of the backend set.

pub mod admin;
pub mod backend;
pub mod cli;
pub mod config;
pub mod discovery;
pub mod framing;
#[cfg(test)]
mod framing_proptests;
pub mod guards;
pub mod health;
pub mod l4;
pub mod metrics;
#[cfg(test)]
mod mutations;
pub mod pool;
pub mod proxy;
pub mod selection;
pub mod server;
pub mod sticky;
pub mod telemetry;
pub mod tunnel;
pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use backend::Registry;
use config::Config;
use discovery::Discovery;
use proxy::Proxy;
use sticky::Sticky;

/// A bound, ready balancer: backends resolved, first health round done.
#[derive(Debug)]
pub struct Balancer {
    listener: TcpListener,
    config: Arc<Config>,
    registry: Arc<Registry>,
    proxy: Arc<Proxy>,
    admin: Option<admin::AdminServer>,
    background: Vec<JoinHandle<()>>,
}

impl Balancer {
    /// Binds the listener, resolves the backends and starts discovery and health checks.
    pub async fn build(config: Config) -> std::io::Result<Self> {
        let key = match &config.sticky.key {
            Some(key) => key.clone(),
            None => {
                if config.sticky.enabled {
                    tracing::warn!(
                        "no sticky key configured (sticky.key, --sticky-key or BALANCER_STICKY_KEY): \
                         using a random one, so sticky cookies will not survive a restart \
                         nor be understood by another balancer"
                    );
                }
                sticky::StickyKey::random()?
            }
        };
        // One instance for discovery (which names backends) and the proxy (which reads the
        // names back), so both always use the same key.
        let sticky = Sticky::new(&config.sticky, &key);
        let config = Arc::new(config);
        let listener = TcpListener::bind(config.listen).await?;
        let registry = Arc::new(Registry::default());
        let mut discovery = Discovery::new(&config, registry.clone(), sticky.clone());
        discovery.refresh().await;
        let mut background = vec![
            discovery.spawn(config.discovery.resolve_interval),
            health::passive::spawn(registry.clone(), std::time::Duration::from_millis(500)),
        ];
        if health::active::enabled(&config) {
            // A first round before serving, so a healthy stack answers from the start.
            let first = health::active::first_round_budget(&config.health);
            let _ =
                tokio::time::timeout(first, health::active::check_all(&registry, &config.health))
                    .await;
            background.push(health::active::spawn(
                registry.clone(),
                config.health.clone(),
            ));
        }
        let stats = Arc::new(metrics::ProxyStats::default());
        let admin = match config.admin.listen {
            Some(addr) => Some(
                admin::AdminServer::bind(
                    addr,
                    config.clone(),
                    registry.clone(),
                    sticky.clone(),
                    stats.clone(),
                )
                .await
                .map_err(|e| {
                    std::io::Error::new(e.kind(), format!("admin listener {addr}: {e}"))
                })?,
            ),
            None => None,
        };
        let sticky = config.sticky.enabled.then_some(sticky);
        let proxy = Arc::new(Proxy::new(
            config.clone(),
            registry.clone(),
            selection::for_algorithm(config.algorithm),
            sticky,
            stats,
        ));
        let local = listener.local_addr()?;
        let admin_listen = admin
            .as_ref()
            .and_then(|a| a.local_addr().ok())
            .map_or_else(|| "off".to_owned(), |a| a.to_string());
        tracing::info!(listen = %local, mode = ?config.mode, admin_listen, algorithm = ?config.algorithm, backends = registry.load().backends.len(),
            health_checks = health::active::enabled(&config), sticky = config.sticky.enabled, "balancer ready");
        Ok(Self {
            listener,
            config,
            registry,
            proxy,
            admin,
            background,
        })
    }

    /// Where the admin API listens, if it is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|a| a.local_addr().ok())
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The live backend set, for inspection.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// Serves until `shutdown` completes, then drains within the grace period.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) {
        let Self {
            listener,
            config,
            registry,
            proxy,
            admin,
            mut background,
        } = self;
        background.extend(admin.map(admin::AdminServer::spawn));
        match config.mode {
            config::Mode::Http => server::serve(listener, proxy, config, shutdown).await,
            config::Mode::Tcp => {
                let selector = selection::for_algorithm(config.algorithm);
                let layer4 = Arc::new(l4::Layer4::new(config, registry, selector));
                l4::serve(listener, layer4, shutdown).await;
            }
        }
        for task in background {
            task.abort();
        }
    }
}

/// `balancer healthcheck`: whether something accepts TCP connections at `addr` within
/// two seconds. It deliberately sends no HTTP request: a request would reach the app.
pub fn healthcheck(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).is_ok()
}
