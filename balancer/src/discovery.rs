//! Discovery: turns the configured backend entries into addresses. A DNS name stands for
//! all its addresses and is re-resolved periodically, so scaling a compose service or
//! restarting containers with new addresses is followed without a restart.
//!
//! Every change builds a new [`BackendSet`] and swaps it in atomically. A backend that
//! stays keeps its `Arc` (and so its health, counters and pooled connections); a removed
//! one is marked draining and lives on only as long as requests in flight hold it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::backend::{Backend, BackendSet, Health, Registry};
use crate::config::{BackendSpec, Config};
use crate::guards::{Guards, PoolGuards};
use crate::pool::Pool;
use crate::sticky::Sticky;

#[derive(Debug)]
pub struct Discovery {
    specs: Vec<BackendSpec>,
    /// Last good answer per entry, kept when a lookup fails so a DNS hiccup removes nothing.
    last_known: Vec<Vec<SocketAddr>>,
    registry: Arc<Registry>,
    sticky: Sticky,
    initial_health: Health,
    resolve_timeout: Duration,
    resolve_interval: Duration,
    pool: PoolGuards,
}

/// What one refresh changed in the set.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Membership {
    pub added: Vec<SocketAddr>,
    pub removed: Vec<SocketAddr>,
    /// Survivors whose configured weight changed (weights the admin API set are kept).
    pub reweighted: Vec<SocketAddr>,
}

impl Membership {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.reweighted.is_empty()
    }
}

impl Discovery {
    /// `sticky` names backends in cookies; the proxy must use the same one.
    pub fn new(config: &Config, registry: Arc<Registry>, sticky: Sticky) -> Self {
        let mut discovery = Self {
            specs: Vec::new(),
            last_known: Vec::new(),
            registry,
            sticky,
            initial_health: Health::Up,
            resolve_timeout: config.discovery.resolve_timeout,
            resolve_interval: config.discovery.resolve_interval,
            pool: Guards::from_config(config).pool,
        };
        discovery.reconfigure(config);
        discovery
    }

    /// Takes the backend entries and discovery settings of a reloaded `config`; the next
    /// [`Self::refresh`] reconciles the set with them. An entry that stays keeps its last
    /// known addresses, so a reload during a DNS outage removes nothing it should not.
    pub fn reconfigure(&mut self, config: &Config) {
        self.last_known = config
            .backends
            .iter()
            .map(|spec| {
                self.specs
                    .iter()
                    .position(|old| (&old.host, old.port) == (&spec.host, spec.port))
                    .map(|i| self.last_known[i].clone())
                    .unwrap_or_default()
            })
            .collect();
        self.specs = config.backends.clone();
        self.initial_health = if config.health.path.is_some() && config.health.wait_for_first_pass {
            Health::Pending
        } else {
            Health::Up
        };
        self.resolve_timeout = config.discovery.resolve_timeout;
        self.resolve_interval = config.discovery.resolve_interval;
        self.pool = Guards::from_config(config).pool;
    }

    /// Resolves every entry and swaps in a new set if the membership or a configured
    /// weight changed; says what changed.
    pub async fn refresh(&mut self) -> Membership {
        for (index, spec) in self.specs.iter().enumerate() {
            match resolve(spec, self.resolve_timeout).await {
                Ok(addrs) if !addrs.is_empty() => self.last_known[index] = addrs,
                Ok(_) => {
                    tracing::warn!(backend = %spec.authority(), "DNS answer has no addresses; keeping the previous ones")
                }
                Err(error) => {
                    tracing::warn!(backend = %spec.authority(), %error, "cannot resolve backend; keeping the previous addresses")
                }
            }
        }
        // Held until the new set is stored, so an admin change in between is not lost.
        let edits = self.registry.writer();
        let current = self.registry.load_full();
        let existing: HashMap<SocketAddr, &Arc<Backend>> =
            current.backends.iter().map(|b| (b.addr, b)).collect();
        let mut next: Vec<Arc<Backend>> = Vec::new();
        let mut reweighted = Vec::new();
        for (spec, addrs) in self.specs.iter().zip(&self.last_known) {
            let origin: Arc<str> = spec.authority().into();
            for &addr in addrs {
                if next.iter().any(|b| b.addr == addr) || edits.removed.contains(&addr) {
                    continue;
                }
                match existing.get(&addr) {
                    Some(backend) => {
                        // In place, so it keeps its health, counters and connections.
                        if !backend.weight_pinned() && backend.weight() != spec.weight {
                            backend.set_configured_weight(spec.weight);
                            reweighted.push(addr);
                        }
                        next.push((*backend).clone())
                    }
                    None => next.push(Arc::new(Backend::new(
                        addr,
                        origin.clone(),
                        spec.weight,
                        self.sticky.id_for(addr),
                        self.initial_health,
                        Pool::new(self.pool.max_idle, self.pool.idle),
                    ))),
                }
            }
        }
        // Backends added through the admin API stay until the API removes them.
        for backend in &current.backends {
            if backend.added_by_api && !next.iter().any(|b| b.addr == backend.addr) {
                next.push(backend.clone());
            }
        }
        let same = next.len() == current.backends.len()
            && next
                .iter()
                .zip(&current.backends)
                .all(|(a, b)| Arc::ptr_eq(a, b));
        if same && reweighted.is_empty() {
            return Membership::default();
        }
        let mut membership = Membership {
            reweighted,
            ..Membership::default()
        };
        for backend in &next {
            if !current.backends.iter().any(|b| Arc::ptr_eq(b, backend)) {
                membership.added.push(backend.addr);
                tracing::info!(backend = %backend.addr, origin = %backend.origin, weight = backend.weight(), health = ?backend.health(), reason = "discovered", "backend added");
            }
        }
        for backend in &current.backends {
            if !next.iter().any(|b| Arc::ptr_eq(b, backend)) {
                backend.start_draining();
                membership.removed.push(backend.addr);
                tracing::info!(backend = %backend.addr, origin = %backend.origin, in_flight = backend.in_flight(), reason = "no longer resolved or reconfigured; draining", "backend removed");
            }
        }
        // A new generation also for a weight change: weighted selectors rebuild from it.
        self.registry.store(BackendSet {
            generation: current.generation + 1,
            backends: next,
        });
        membership
    }

    /// Re-resolves every `discovery.resolve_interval`. Shared with the reloader, which
    /// reconfigures and refreshes it between two rounds (never during one).
    pub fn spawn(discovery: Arc<tokio::sync::Mutex<Self>>) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                // Read each round, so a reloaded interval takes effect from the next one.
                let interval = discovery.lock().await.resolve_interval;
                tokio::time::sleep(interval).await;
                discovery.lock().await.refresh().await;
            }
        })
    }
}

async fn resolve(spec: &BackendSpec, timeout: Duration) -> std::io::Result<Vec<SocketAddr>> {
    let lookup = tokio::net::lookup_host((spec.host.as_str(), spec.port));
    let mut addrs: Vec<SocketAddr> = tokio::time::timeout(timeout, lookup)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "DNS lookup timed out"))??
        .collect();
    addrs.sort();
    addrs.dedup();
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sticky::StickyKey;

    fn sticky(config: &Config) -> Sticky {
        Sticky::new(&config.sticky, &StickyKey::random().unwrap())
    }

    #[tokio::test]
    async fn changes_swap_the_set_keep_survivors_and_drain_the_removed() {
        let config = Config {
            backends: vec![
                "127.0.0.1:7001".parse().unwrap(),
                "127.0.0.1:7002,weight=2".parse().unwrap(),
            ],
            ..Config::default()
        };
        let registry = Arc::new(Registry::default());
        let mut discovery = Discovery::new(&config, registry.clone(), sticky(&config));
        discovery.refresh().await;
        let first = registry.load_full();
        assert_eq!(first.backends.len(), 2);
        assert_eq!(first.backends[1].weight(), 2);

        // Nothing changed: the set is not swapped.
        discovery.refresh().await;
        assert!(Arc::ptr_eq(&first, &registry.load_full()));

        // One address goes away and another appears, as when a container is replaced.
        let held = first.backends[1].clone();
        let _in_flight = held.track();
        discovery.specs = vec![
            "127.0.0.1:7001".parse().unwrap(),
            "127.0.0.1:7003".parse().unwrap(),
        ];
        discovery.last_known = vec![Vec::new(); 2];
        discovery.refresh().await;
        let second = registry.load_full();
        assert_eq!(second.generation, first.generation + 1);
        let addrs: Vec<String> = second.backends.iter().map(|b| b.addr.to_string()).collect();
        assert_eq!(addrs, ["127.0.0.1:7001", "127.0.0.1:7003"]);
        assert!(
            Arc::ptr_eq(&first.backends[0], &second.backends[0]),
            "survivors keep their state"
        );
        assert!(held.is_draining(), "the removed backend drains");
        assert_eq!(held.in_flight(), 1, "its in-flight request is unaffected");
    }

    #[tokio::test]
    async fn a_reconfigured_weight_changes_in_place_unless_the_api_pinned_it() {
        let mut config = Config {
            backends: vec![
                "127.0.0.1:7001".parse().unwrap(),
                "127.0.0.1:7002".parse().unwrap(),
            ],
            ..Config::default()
        };
        let registry = Arc::new(Registry::default());
        let mut discovery = Discovery::new(&config, registry.clone(), sticky(&config));
        discovery.refresh().await;
        let first = registry.load_full();
        first.backends[1].set_weight(7);

        config.backends = vec![
            "127.0.0.1:7001,weight=3".parse().unwrap(),
            "127.0.0.1:7002,weight=4".parse().unwrap(),
        ];
        discovery.reconfigure(&config);
        let changed = discovery.refresh().await;
        assert_eq!(changed.reweighted, ["127.0.0.1:7001".parse().unwrap()]);
        assert!(changed.added.is_empty() && changed.removed.is_empty());
        let second = registry.load_full();
        assert_eq!(second.generation, first.generation + 1, "selectors rebuild");
        assert!(Arc::ptr_eq(&first.backends[0], &second.backends[0]));
        assert_eq!(second.backends[0].weight(), 3);
        assert_eq!(second.backends[1].weight(), 7, "the API's weight stays");
    }

    #[tokio::test]
    async fn a_failed_lookup_keeps_the_previous_addresses() {
        let config = Config {
            backends: vec!["127.0.0.1:7001".parse().unwrap()],
            ..Config::default()
        };
        let registry = Arc::new(Registry::default());
        let mut discovery = Discovery::new(&config, registry.clone(), sticky(&config));
        discovery.refresh().await;
        discovery.specs = vec!["name.invalid:7001".parse().unwrap()];
        discovery.resolve_timeout = Duration::from_millis(500);
        discovery.refresh().await;
        assert_eq!(registry.load().backends.len(), 1);
    }
}
