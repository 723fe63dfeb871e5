//! Configuration reload. SIGHUP, and with `--watch-config` a change of the config file, make
//! the balancer read its configuration [`Sources`] again (the same file, with the same
//! environment and flag values captured at start-up, which still win) and either apply the
//! result whole or refuse it whole.
//!
//! A reload is validated exactly as start-up is (`Config::validate`, errors naming
//! file:line:key), then checked against what only a restart can change
//! (`Config::check_reloadable`: the bound sockets, the connection limit, the admin token,
//! the sticky key). A refused one is logged with its exact error (`config reload refused:
//! …`) and counted; the running configuration stays. An accepted one:
//!
//! 1. reconciles the backend list like a DNS re-resolution ([`Discovery::reconfigure`] and
//!    `refresh`): survivors keep their `Arc<Backend>` (health, counters, pooled
//!    connections, an admin drain), removed ones drain, and what the admin API did stays
//!    done (added backends, pinned weights, removed addresses);
//! 2. swaps the proxy's [`Policy`](crate::proxy::Policy) (one `ArcSwap` store): every
//!    request loads it once, at its start, so a request in flight, and a tunnel it opened,
//!    finish under the configuration they started with, and new ones get the new one;
//! 3. publishes the config to the background loops (health checks, DNS interval) and the
//!    admin API.
//!
//! Reloads never overlap: each holds one lock for its whole run, so those asked for at the
//! same time run one after the other, in order.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use crate::backend::{Health, Registry};
use crate::config::{Config, ConfigError, Sources};
use crate::discovery::{Discovery, Membership};
use crate::proxy::Proxy;
use crate::sticky::{Sticky, StickyKey};

/// How often a watched config file is looked at. Polled by path rather than watched with
/// inotify: a rename into place or a Kubernetes ConfigMap update (a symlink swapped two
/// levels up) replaces the file under a watch on it, and inotify hears nothing at all
/// through network file systems or Docker Desktop's shared folders, where a host-side edit
/// makes no event in the container. A `stat` by path twice a second sees every one of
/// these, costs nothing measurable, and needs no dependency; the content is read and hashed
/// only when the `stat` differs. (No watcher can see a single bind-mounted *file* replaced
/// by a rename on the host: the mount keeps the old inode. Mount the directory.)
pub const WATCH_POLL: Duration = Duration::from_millis(500);

/// What a successful reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// The config sections (top-level keys) whose values differ.
    pub changed: Vec<&'static str>,
    /// What the reconciliation did to the backend set.
    pub backends: Membership,
}

/// Reload outcomes for `/metrics`, bumped by the reloader only (Relaxed atomics).
#[derive(Debug)]
pub struct ReloadStats {
    ok: AtomicU64,
    refused: AtomicU64,
    /// 1 if the last reload was applied (or none happened yet), 0 if it was refused.
    last_ok: AtomicU64,
    /// Unix time in seconds of the last applied configuration (start-up counts).
    last_success: AtomicU64,
}

impl Default for ReloadStats {
    fn default() -> Self {
        Self {
            ok: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            last_ok: AtomicU64::new(1),
            last_success: AtomicU64::new(unix_now()),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl ReloadStats {
    pub fn applied(&self) -> u64 {
        self.ok.load(Relaxed)
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Relaxed)
    }
}

/// The reload metrics, in the shape of Prometheus's own (`prometheus_config_*`).
#[derive(Debug)]
pub struct Collector(pub Arc<ReloadStats>);

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = &self.0;
        let mut m = encoder.encode_descriptor(
            "config_reloads",
            "Configuration reloads (SIGHUP or a watched file's change), applied or refused.",
            None,
            MetricType::Counter,
        )?;
        for (result, counter) in [("ok", &stats.ok), ("refused", &stats.refused)] {
            m.encode_family(&[("result", result)])?
                .encode_counter::<NoLabelSet, _, u64>(&counter.load(Relaxed), None)?;
        }
        encoder
            .encode_descriptor(
                "config_last_reload_successful",
                "1 if the last configuration reload was applied (or none was asked for), 0 if it was refused.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&stats.last_ok.load(Relaxed))?;
        encoder
            .encode_descriptor(
                "config_last_reload_success_timestamp",
                "When the configuration in force was applied (start-up or the last successful reload), Unix time.",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?
            .encode_gauge(&stats.last_success.load(Relaxed))?;
        Ok(())
    }
}

/// The handle that reloads the configuration; cheap to clone, shared by the triggers.
#[derive(Debug, Clone)]
pub struct Reloader(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    /// `None` for a balancer built from a `Config` value: there is nothing to read again.
    sources: Option<Sources>,
    /// Held for a whole reload, so reloads never overlap and run in the order asked.
    turn: Mutex<()>,
    /// The configuration in force; its receivers are the health loop and the admin API.
    configs: watch::Sender<Arc<Config>>,
    proxy: Arc<Proxy>,
    registry: Arc<Registry>,
    discovery: Arc<Mutex<Discovery>>,
    /// The sticky key in use (configured, or drawn at start-up): cookie settings are
    /// rebuilt from each configuration with it, so existing cookies stay valid.
    sticky_key: StickyKey,
    stats: Arc<ReloadStats>,
}

/// The parts of a running balancer a reload changes.
#[derive(Debug)]
pub struct Parts {
    pub sources: Option<Sources>,
    pub configs: watch::Sender<Arc<Config>>,
    pub proxy: Arc<Proxy>,
    pub registry: Arc<Registry>,
    pub discovery: Arc<Mutex<Discovery>>,
    pub sticky_key: StickyKey,
    pub stats: Arc<ReloadStats>,
}

impl Reloader {
    pub fn new(parts: Parts) -> Self {
        let Parts {
            sources,
            configs,
            proxy,
            registry,
            discovery,
            sticky_key,
            stats,
        } = parts;
        Self(Arc::new(Shared {
            sources,
            turn: Mutex::new(()),
            configs,
            proxy,
            registry,
            discovery,
            sticky_key,
            stats,
        }))
    }

    /// The config file a reload reads, if there is one.
    pub fn file(&self) -> Option<PathBuf> {
        self.0.sources.as_ref().and_then(|s| s.file.clone())
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<Config> {
        self.0.configs.borrow().clone()
    }

    /// The reload counters (also on `/metrics`).
    pub fn stats(&self) -> &ReloadStats {
        &self.0.stats
    }

    /// Reads the sources again and applies what they give, or refuses it; `trigger` says
    /// why in the log (`SIGHUP`, `config file changed`).
    pub async fn reload(&self, trigger: &'static str) -> Result<Reloaded, ConfigError> {
        let _turn = self.0.turn.lock().await;
        let next = match &self.0.sources {
            // Off the runtime's threads: a file on a stalled network mount must not stop
            // the serving (with `--threads 1` there is only one thread).
            Some(sources) => {
                let sources = sources.clone();
                let read = tokio::task::spawn_blocking(move || sources.load()).await;
                read.unwrap_or_else(|e| {
                    Err(ConfigError::Invalid(format!("reading the configuration: {e}")))
                })
            }
            None => Err(ConfigError::Invalid(
                "this balancer was built from a configuration value, not read from sources: there is nothing to read again".into(),
            )),
        };
        let result = match next {
            Ok(next) => self.apply_in_turn(next).await,
            Err(error) => Err(error),
        };
        self.record(trigger, &result);
        result
    }

    async fn apply_in_turn(&self, next: Config) -> Result<Reloaded, ConfigError> {
        let shared = &self.0;
        let current = self.current();
        current.check_reloadable(&next)?;
        let changed = changed_sections(&current, &next);
        let next = Arc::new(next);
        let backends = {
            let mut discovery = shared.discovery.lock().await;
            discovery.reconfigure(&next);
            discovery.refresh().await
        };
        if current.health.path.is_some() && next.health.path.is_none() {
            // Checks are off from now on: no backend may wait for a verdict that will not
            // come (passive ejection still guards them).
            for backend in &shared.registry.load().backends {
                backend.set_health(Health::Up);
            }
        }
        if next.sticky.enabled && !current.sticky.enabled && next.sticky.key.is_none() {
            tracing::warn!(
                "sticky sessions turned on without a sticky key (sticky.key or BALANCER_STICKY_KEY): \
                 using this process's random one, so cookies will not survive a restart"
            );
        }
        let sticky = Sticky::new(&next.sticky, &shared.sticky_key);
        let policy = shared.proxy.policy().succeed(next.clone(), sticky);
        shared.proxy.set_policy(policy);
        shared.configs.send_replace(next);
        Ok(Reloaded { changed, backends })
    }

    fn record(&self, trigger: &'static str, result: &Result<Reloaded, ConfigError>) {
        let stats = &self.0.stats;
        match result {
            Ok(done) => {
                stats.ok.fetch_add(1, Relaxed);
                stats.last_ok.store(1, Relaxed);
                stats.last_success.store(unix_now(), Relaxed);
                let changed = if done.changed.is_empty() {
                    "nothing".to_owned()
                } else {
                    done.changed.join(", ")
                };
                let list = |addrs: &[std::net::SocketAddr]| {
                    addrs
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                tracing::info!(
                    trigger,
                    changed,
                    backends_added = list(&done.backends.added),
                    backends_removed = list(&done.backends.removed),
                    backends_reweighted = list(&done.backends.reweighted),
                    "config reloaded"
                );
            }
            Err(error) => {
                stats.refused.fetch_add(1, Relaxed);
                stats.last_ok.store(0, Relaxed);
                tracing::error!(trigger, "config reload refused: {error}");
            }
        }
    }
}

/// The top-level sections whose values differ, for the log. What only a restart can change
/// (`listen`, the admin listener and token, the secrets) is refused by `check_reloadable`
/// before this runs.
fn changed_sections(old: &Config, new: &Config) -> Vec<&'static str> {
    type Show = fn(&Config) -> String;
    let sections: [(&'static str, Show); 12] = [
        ("backends", |c| format!("{:?}", c.backends)),
        ("algorithm", |c| format!("{:?}", c.algorithm)),
        ("fail_open", |c| format!("{:?}", c.fail_open)),
        ("health", |c| format!("{:?}", c.health)),
        ("passive", |c| format!("{:?}", c.passive)),
        ("discovery", |c| format!("{:?}", c.discovery)),
        ("sticky", |c| format!("{:?}", c.sticky)),
        ("timeouts", |c| format!("{:?}", c.timeouts)),
        ("limits", |c| format!("{:?}", c.limits)),
        ("retry", |c| format!("{:?}", c.retry)),
        ("forwarding", |c| format!("{:?}", c.forwarding)),
        // Read by the dashboard at each login and logout.
        ("admin.cookie_secure", |c| c.admin.cookie_secure.to_string()),
    ];
    sections
        .into_iter()
        .filter(|(_, show)| show(old) != show(new))
        .map(|(name, _)| name)
        .collect()
}

/// SIGHUP's handler, installed when this is made. Make it before the balancer binds: once
/// the process looks ready, a SIGHUP (whose default action ends the process) must reload
/// it, never kill it (the reason `hitscale-signal` installs SIGTERM's early too).
#[cfg(unix)]
#[derive(Debug)]
pub struct Hangups(tokio::signal::unix::Signal);

#[cfg(unix)]
impl Hangups {
    pub fn listen() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        signal(SignalKind::hangup()).map(Self)
    }

    /// Reloads on every SIGHUP (several arriving during one reload make one more).
    pub fn spawn(mut self, reloader: Reloader) -> JoinHandle<()> {
        tokio::spawn(async move {
            while self.0.recv().await.is_some() {
                let _ = reloader.reload("SIGHUP").await;
            }
        })
    }
}

/// What a poll saw of the file: its `stat`, and the digest of its content.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    stat: Option<Stat>,
    digest: Option<[u8; 32]>,
}

/// The `stat` fields that change when a file is written or replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stat {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    inode: (u64, u64, i64, i64),
}

fn stat(path: &std::path::Path) -> Option<Stat> {
    // Follows symbolic links: a ConfigMap's swapped `..data` link changes the target.
    let meta = std::fs::metadata(path).ok()?;
    Some(Stat {
        len: meta.len(),
        modified: meta.modified().ok(),
        #[cfg(unix)]
        inode: {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec())
        },
    })
}

/// What the file at `path` holds now; the content is read only if its `stat` changed.
fn look(path: &std::path::Path, before: &Seen) -> Seen {
    let stat = stat(path);
    if stat.is_some() && stat == before.stat {
        return before.clone();
    }
    let digest = std::fs::read(path)
        .ok()
        .map(|bytes| Sha256::digest(&bytes).into());
    Seen { stat, digest }
}

/// Reloads when the content of the file at `path` changes, once it has held still for one
/// poll (an editor or a copy may write it in several steps). A content that was refused is
/// not tried again until it changes; SIGHUP retries at once.
pub fn watch_file(path: PathBuf, reloader: Reloader) -> JoinHandle<()> {
    tokio::spawn(async move {
        let blank = Seen {
            stat: None,
            digest: None,
        };
        // Off the runtime's threads, as a reload's read is.
        let looked = async |before: &Seen| {
            let (path, before) = (path.clone(), before.clone());
            tokio::task::spawn_blocking(move || look(&path, &before))
                .await
                .unwrap_or_else(|_| blank.clone())
        };
        let mut applied = looked(&blank).await;
        let mut pending: Option<Seen> = None;
        let mut ticker = tokio::time::interval(WATCH_POLL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let now = looked(pending.as_ref().unwrap_or(&applied)).await;
            if now.digest == applied.digest {
                applied = now;
                pending = None;
                continue;
            }
            if pending.as_ref().is_none_or(|p| p.digest != now.digest) {
                pending = Some(now);
                continue;
            }
            pending = None;
            applied = now;
            let _ = reloader.reload("config file changed").await;
        }
    })
}
