//! Redis as a shared cache of the one expensive figure: hits in the 24-hour window.
//!
//! The window's closed minutes no longer change, so their sum is cached under a key named by
//! its first live minute; every instance reads it from Redis and one of them recomputes it from
//! PostgreSQL when the minute turns. Redis is only ever a cache: when it is down or slow a
//! request waits at most `REDIS_TIMEOUT_MS`, the figure comes from PostgreSQL (once per minute
//! per instance, remembered in-process), a warning is logged, and the lazy connection keeps
//! reconnecting in the background. After a failure Redis is left alone for a second, so a dead
//! Redis costs one timeout per second, not one per request.

use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a cached window lives: past its minute it is never read again.
const WINDOW_TTL_SECS: u64 = 180;
/// How long Redis is skipped after a failure before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Whether Redis answered lately, as shown by `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheState {
    Up,
    Down,
}

pub struct WindowCache {
    /// `hits:<deployment id>:window:v1:`, followed by the first live minute.
    key_prefix: String,
    connection: ConnectionManager,
    timeout: Duration,
    /// Milliseconds since `epoch` before which Redis is not tried; 0 when it is healthy.
    skip_until_ms: AtomicU64,
    down: AtomicBool,
    epoch: Instant,
    /// The last computed (key, sum): serves readers while Redis is away.
    local: Mutex<Option<(i64, i64)>>,
    /// One recomputation at a time per instance; the others wait and reuse its result.
    compute: tokio::sync::Mutex<()>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for WindowCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowCache")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl WindowCache {
    /// Creates the cache; no connection is made until the first use, so the app starts
    /// whether or not Redis is up. A malformed URL is the only error.
    /// `deployment` namespaces the keys: instances on one database share them, and
    /// deployments on other databases sharing the Redis never see them.
    pub fn new(
        url: &str,
        deployment: &str,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<WindowCache, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(WindowCache {
            key_prefix: format!("hits:{deployment}:window:v1:"),
            connection,
            timeout,
            skip_until_ms: AtomicU64::new(0),
            down: AtomicBool::new(false),
            epoch: Instant::now(),
            local: Mutex::new(None),
            compute: tokio::sync::Mutex::new(()),
            metrics,
        })
    }

    pub fn state(&self) -> CacheState {
        if self.down.load(Ordering::Relaxed) {
            CacheState::Down
        } else {
            CacheState::Up
        }
    }

    /// Pings Redis (bounded by the timeout) and updates the state; for `/readyz`.
    pub async fn probe(&self) -> CacheState {
        match self.query::<String>(redis::cmd("PING")).await {
            Ok(_) => self.mark_up(),
            Err(reason) => self.mark_down(&reason),
        }
        self.state()
    }

    /// Hits in the closed minutes of the window that starts live at `live_from`.
    pub async fn window_before(&self, store: &Store, live_from: i64) -> Result<i64, StoreError> {
        let key = self.window_key(live_from);
        let mut refill_redis = false;
        if self.redis_allowed() {
            match self.get(&key).await {
                Ok(Some(sum)) => {
                    self.metrics.cache_hit();
                    self.remember(live_from, sum);
                    return Ok(sum);
                }
                Ok(None) => {
                    self.metrics.cache_miss();
                    refill_redis = true;
                }
                Err(reason) => {
                    self.metrics.cache_error();
                    self.mark_down(&reason);
                }
            }
        } else {
            self.metrics.cache_error();
        }

        let sum = {
            let _turn = self.compute.lock().await;
            match self.remembered(live_from) {
                Some(sum) => sum,
                None => {
                    let sum = store.window_before(live_from).await?;
                    self.remember(live_from, sum);
                    sum
                }
            }
        };
        if refill_redis && let Err(reason) = self.set(&key, sum).await {
            self.mark_down(&reason);
        }
        Ok(sum)
    }

    async fn get(&self, key: &str) -> Result<Option<i64>, String> {
        let mut get = redis::cmd("GET");
        get.arg(key);
        let value = self.query(get).await?;
        self.mark_up();
        Ok(value)
    }

    async fn set(&self, key: &str, sum: i64) -> Result<(), String> {
        let mut set = redis::cmd("SET");
        set.arg(key).arg(sum).arg("EX").arg(WINDOW_TTL_SECS);
        self.query(set).await
    }

    /// One command, bounded by the timeout whatever state the connection is in.
    async fn query<T: redis::FromRedisValue>(&self, command: redis::Cmd) -> Result<T, String> {
        let mut conn = self.connection.clone();
        match tokio::time::timeout(self.timeout, command.query_async::<T>(&mut conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn redis_allowed(&self) -> bool {
        self.now_ms() >= self.skip_until_ms.load(Ordering::Relaxed)
    }

    fn mark_down(&self, reason: &str) {
        let retry = u64::try_from(RETRY_AFTER.as_millis()).unwrap_or(1000);
        self.skip_until_ms
            .store(self.now_ms() + retry, Ordering::Relaxed);
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(%reason, "redis unavailable; serving counts from PostgreSQL until it returns");
        }
    }

    fn mark_up(&self) {
        self.skip_until_ms.store(0, Ordering::Relaxed);
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("redis is back; caching again");
        }
    }

    fn window_key(&self, live_from: i64) -> String {
        format!("{}{live_from}", self.key_prefix)
    }

    fn remember(&self, live_from: i64, sum: i64) {
        *self.local.lock().unwrap_or_else(|p| p.into_inner()) = Some((live_from, sum));
    }

    fn remembered(&self, live_from: i64) -> Option<i64> {
        match *self.local.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((key, sum)) if key == live_from => Some(sum),
            _ => None,
        }
    }
}
