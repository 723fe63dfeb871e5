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
pub mod reload;
pub mod selection;
pub mod server;
pub mod sticky;
pub mod telemetry;
pub mod tls;
pub mod tunnel;
pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use backend::Registry;
use config::{Config, Sources};
use discovery::Discovery;
use proxy::{Policy, Proxy};
use reload::Reloader;
use sticky::Sticky;

/// A bound, ready balancer: backends resolved, first health round done.
#[derive(Debug)]
pub struct Balancer {
    listener: TcpListener,
    /// The HTTPS listener and its TLS set-up, when `tls.listen` is set.
    tls: Option<(TcpListener, tls::Tls)>,
    /// Automatic certificates, when `[tls.acme]` is set.
    acme: Option<Arc<tls::acme::Acme>>,
    config: Arc<Config>,
    registry: Arc<Registry>,
    proxy: Arc<Proxy>,
    admin: Option<admin::AdminServer>,
    background: Vec<JoinHandle<()>>,
    reloader: Reloader,
}

impl Balancer {
    /// Binds the listeners, reads the certificates (if TLS is on), resolves the backends
    /// and starts discovery and health checks. It has no sources to read again: its
    /// [`Reloader`] refuses every reload (see [`Self::build_from`]).
    pub async fn build(config: Config) -> std::io::Result<Self> {
        Self::build_with(config, None).await
    }

    /// As [`Self::build`], for `config` as read from `sources` ([`Sources::load`]): a reload
    /// (SIGHUP, a watched file) reads them again.
    pub async fn build_from(config: Config, sources: Sources) -> std::io::Result<Self> {
        Self::build_with(config, Some(sources)).await
    }

    async fn build_with(config: Config, sources: Option<Sources>) -> std::io::Result<Self> {
        // First: a bad certificate file is a configuration error, reported before anything
        // is bound or resolved.
        let tls = match config.tls.listen {
            Some(_) => Some(tls::Tls::build(&config).map_err(std::io::Error::other)?),
            None => None,
        };
        // The cached ACME certificate is served from the first handshake on.
        let acme = match &tls {
            Some(tls) => tls::acme::Acme::new(&config, tls.store.clone())
                .map_err(|e| std::io::Error::other(tls::TlsError::from(e)))?,
            None => None,
        };
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
        let (configs, _) = watch::channel(config.clone());
        let listener = TcpListener::bind(config.listen).await?;
        let tls = match (tls, config.tls.listen) {
            (Some(tls), Some(addr)) => {
                let socket = TcpListener::bind(addr).await.map_err(|e| {
                    std::io::Error::new(e.kind(), format!("TLS listener {addr}: {e}"))
                })?;
                Some((socket, tls))
            }
            _ => None,
        };
        let registry = Arc::new(Registry::default());
        let discovery = Arc::new(Mutex::new(Discovery::new(
            &config,
            registry.clone(),
            sticky.clone(),
        )));
        discovery.lock().await.refresh().await;
        let mut background = vec![
            Discovery::spawn(discovery.clone()),
            health::passive::spawn(registry.clone(), std::time::Duration::from_millis(500)),
            // Idle until a configuration sets `health.path`.
            health::active::spawn(registry.clone(), configs.subscribe()),
        ];
        if health::active::enabled(&config) {
            // A first round before serving, so a healthy stack answers from the start.
            let first = health::active::first_round_budget(&config.health);
            let _ =
                tokio::time::timeout(first, health::active::check_all(&registry, &config.health))
                    .await;
        }
        if let Some((_, tls)) = &tls {
            background.push(tls::certs::spawn_reloader(
                tls.store.clone(),
                config.tls.reload_interval,
            ));
        }
        if let Some(acme) = &acme {
            // Its challenges are answered once the listeners serve (`run_until_stopped`);
            // until then the authority's requests wait in the listen backlog.
            background.push(acme.clone().spawn());
        }
        let stats = Arc::new(metrics::ProxyStats::default());
        let reloads = Arc::new(reload::ReloadStats::default());
        let admin = match config.admin.listen {
            Some(addr) => Some(
                admin::AdminServer::bind(
                    addr,
                    configs.subscribe(),
                    registry.clone(),
                    sticky.clone(),
                    stats.clone(),
                    reloads.clone(),
                )
                .await
                .map_err(|e| {
                    std::io::Error::new(e.kind(), format!("admin listener {addr}: {e}"))
                })?,
            ),
            None => None,
        };
        let proxy = Arc::new(Proxy::new(
            Policy::new(config.clone(), sticky),
            registry.clone(),
            stats,
        ));
        let reloader = Reloader::new(reload::Parts {
            sources,
            configs,
            proxy: proxy.clone(),
            registry: registry.clone(),
            discovery,
            sticky_key: key,
            stats: reloads,
        });
        let local = listener.local_addr()?;
        let admin_listen = admin
            .as_ref()
            .and_then(|a| a.local_addr().ok())
            .map_or_else(|| "off".to_owned(), |a| a.to_string());
        let tls_listen = tls
            .as_ref()
            .and_then(|(socket, _)| socket.local_addr().ok())
            .map_or_else(|| "off".to_owned(), |a| a.to_string());
        tracing::info!(listen = %local, mode = ?config.mode, admin_listen, tls_listen, algorithm = ?config.algorithm, backends = registry.load().backends.len(),
            health_checks = health::active::enabled(&config), sticky = config.sticky.enabled, "balancer ready");
        Ok(Self {
            listener,
            tls,
            acme,
            config,
            registry,
            proxy,
            admin,
            background,
            reloader,
        })
    }

    /// The handle that reloads this balancer's configuration.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Reloads on every SIGHUP that `hangups` (installed before binding) receives.
    #[cfg(unix)]
    pub fn reload_on_hangup(&mut self, hangups: reload::Hangups) {
        self.background.push(hangups.spawn(self.reloader.clone()));
    }

    /// Reloads when the config file changes (`--watch-config`); refused for a balancer that
    /// was not read from a file.
    pub fn watch_config_file(&mut self) -> Result<std::path::PathBuf, config::ConfigError> {
        let file = self.reloader.file().ok_or_else(|| {
            config::ConfigError::Invalid(
                "--watch-config: there is no config file to watch (give --config or BALANCER_CONFIG)".into(),
            )
        })?;
        self.background
            .push(reload::watch_file(file.clone(), self.reloader.clone()));
        Ok(file)
    }

    /// Where the admin API listens, if it is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|a| a.local_addr().ok())
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Where the HTTPS listener is bound, if TLS is on.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls
            .as_ref()
            .and_then(|(socket, _)| socket.local_addr().ok())
    }

    /// The certificates being served, if TLS is on.
    pub fn certificates(&self) -> Option<Arc<tls::certs::CertStore>> {
        self.tls.as_ref().map(|(_, tls)| tls.store.clone())
    }

    /// Automatic certificates, if `[tls.acme]` is set.
    pub fn acme(&self) -> Option<Arc<tls::acme::Acme>> {
        self.acme.clone()
    }

    /// The live backend set, for inspection.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// Serves until `shutdown` completes, then drains within the grace period.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) {
        let Self {
            listener,
            tls,
            acme,
            config,
            registry,
            proxy,
            admin,
            mut background,
            ..
        } = self;
        background.extend(admin.map(admin::AdminServer::spawn));
        if config.mode == config::Mode::Tcp {
            // Layer 4: the public listener copies bytes (validation refuses TLS with it).
            let layer4 = Arc::new(l4::Layer4::new(proxy, registry));
            l4::serve(listener, layer4, shutdown).await;
            for task in background {
                task.abort();
            }
            return;
        }
        let mut listeners = Vec::with_capacity(2);
        match tls {
            Some((socket, tls)) => {
                // With HTTPS on, the plain listener only redirects to it.
                let port = match config.tls.https_port {
                    Some(port) => port,
                    None => socket.local_addr().map_or(443, |a| a.port()),
                };
                let mut redirect =
                    tls::redirect::Redirect::new(port, &config.forwarding.server_names);
                if let Some(acme) = &acme {
                    redirect = redirect.with_challenges(acme.challenges());
                }
                listeners.push(server::Listener {
                    socket: listener,
                    front: server::Front::Redirect(redirect),
                });
                listeners.push(server::Listener {
                    socket,
                    front: server::Front::Tls(tls),
                });
            }
            None => listeners.push(server::Listener {
                socket: listener,
                front: server::Front::Plain,
            }),
        }
        server::serve(listeners, proxy, config, shutdown).await;
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
