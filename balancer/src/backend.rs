//! Backends and the backend set: the routing state that health checks, passive ejection
//! and discovery change, and that every request reads without taking a lock.
//!
//! A [`Backend`] keeps its own counters in atomics. The [`BackendSet`] is immutable; a
//! change builds a new set and swaps it in ([`Registry`]), so requests in flight keep the
//! `Arc<Backend>` they chose and finish on it even after it was removed (draining).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::config::PassiveConfig;
use crate::pool::Pool;

/// Milliseconds since the process started: a cheap monotonic clock that fits an atomic.
pub fn now_millis() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What active health checks last concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    /// Not checked yet: no traffic while checks are configured to be awaited.
    Pending = 0,
    Up = 1,
    Down = 2,
}

impl Health {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Up,
            2 => Self::Down,
            _ => Self::Pending,
        }
    }
}

/// One backend address with its live state.
pub struct Backend {
    pub addr: SocketAddr,
    /// The configured name this address came from (`hits:8000`), used as Host for checks.
    pub origin: Arc<str>,
    /// Changed at run time by the admin API; selectors read it per pick.
    weight: AtomicU32,
    /// Set once the admin API chose the weight: discovery keeps it.
    weight_pinned: AtomicBool,
    /// Added through the admin API: discovery keeps it although no DNS entry names it.
    pub added_by_api: bool,
    /// Opaque sticky-cookie value for this backend.
    pub sticky_id: String,
    pub pool: Pool,
    health: AtomicU8,
    draining: AtomicBool,
    in_flight: AtomicU32,
    /// Requests sent here (attempts, retries included); Relaxed, for reporting only.
    requests: AtomicU64,
    /// Failures counted against this backend (connect errors, timeouts, 5xx if counted).
    failures: AtomicU64,
    /// Why the last passive ejection happened, for the admin API.
    ejection_reason: std::sync::Mutex<&'static str>,
    /// Peak-EWMA of the time to response headers, in microseconds (f64 bits).
    latency_ewma: AtomicU64,
    latency_stamp: AtomicU64,
    /// Counters owned by the active health checker.
    pub(crate) check_successes: AtomicU32,
    pub(crate) check_failures: AtomicU32,
    passive_failures: AtomicU32,
    ejected_until: AtomicU64,
    ejections: AtomicU32,
    /// Set while an ejection has not yet been reported as over.
    ejection_open: AtomicBool,
    /// Counters for `/metrics`, bumped on the request path (atomics only).
    pub stats: crate::metrics::BackendStats,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("addr", &self.addr)
            .field("origin", &self.origin)
            .field("weight", &self.weight())
            .field("health", &self.health())
            .finish_non_exhaustive()
    }
}

/// Time constant of the latency average: how fast an old measurement fades.
const LATENCY_DECAY: Duration = Duration::from_secs(10);

impl Backend {
    pub fn new(
        addr: SocketAddr,
        origin: Arc<str>,
        weight: u32,
        sticky_id: String,
        initial: Health,
        pool: Pool,
    ) -> Self {
        Self {
            addr,
            origin,
            weight: AtomicU32::new(weight),
            weight_pinned: AtomicBool::new(false),
            added_by_api: false,
            sticky_id,
            pool,
            health: AtomicU8::new(initial as u8),
            draining: AtomicBool::new(false),
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            ejection_reason: std::sync::Mutex::new(""),
            latency_ewma: AtomicU64::new(0f64.to_bits()),
            latency_stamp: AtomicU64::new(now_millis()),
            check_successes: AtomicU32::new(0),
            check_failures: AtomicU32::new(0),
            passive_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            ejection_open: AtomicBool::new(false),
            stats: crate::metrics::BackendStats::default(),
        }
    }

    /// A backend the admin API added: its weight is pinned, and discovery keeps it.
    pub fn added_by_api(mut self) -> Self {
        self.added_by_api = true;
        *self.weight_pinned.get_mut() = true;
        self
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// The admin API's weight: pinned, so discovery does not put the configured one back.
    /// The caller swaps in a new set generation so selectors rebuild their weighted state.
    pub fn set_weight(&self, weight: u32) {
        self.weight.store(weight, Ordering::Relaxed);
        self.weight_pinned.store(true, Ordering::Relaxed);
    }

    /// A weight from the configuration (a reload): not pinned, so the next configured
    /// value applies too. The caller swaps in a new set generation.
    pub(crate) fn set_configured_weight(&self, weight: u32) {
        self.weight.store(weight, Ordering::Relaxed);
    }

    pub fn weight_pinned(&self) -> bool {
        self.weight_pinned.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The reason of the last passive ejection ("" if none yet).
    pub fn ejection_reason(&self) -> &'static str {
        *self
            .ejection_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Relaxed))
    }

    /// Stores the state; a change to up or down is counted for `/metrics`.
    pub(crate) fn set_health(&self, health: Health) {
        let previous = self.health.swap(health as u8, Ordering::Relaxed);
        if previous != health as u8 {
            match health {
                Health::Up => self.stats.transitions[0].fetch_add(1, Ordering::Relaxed),
                Health::Down => self.stats.transitions[1].fetch_add(1, Ordering::Relaxed),
                Health::Pending => 0,
            };
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Takes new requests again after an admin drain.
    pub(crate) fn stop_draining(&self) {
        self.draining.store(false, Ordering::Relaxed);
    }

    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }

    /// Whether new requests may go here: healthy, not ejected, not draining.
    pub fn is_available(&self, now: u64) -> bool {
        self.health() == Health::Up && !self.is_ejected(now) && !self.is_draining()
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request as in flight until the guard is dropped (when its body ends).
    pub fn track(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Latency estimate in microseconds, decayed towards zero while unmeasured so a slow
    /// backend is probed again eventually.
    pub fn latency_micros(&self) -> f64 {
        let ewma = f64::from_bits(self.latency_ewma.load(Ordering::Relaxed));
        let age = now_millis().saturating_sub(self.latency_stamp.load(Ordering::Relaxed));
        ewma * (-(age as f64) / LATENCY_DECAY.as_millis() as f64).exp()
    }

    /// Peak-EWMA (as Finagle and linkerd do it): a slower sample is taken at once, a faster
    /// one only pulls the average down gradually.
    pub fn record_latency(&self, elapsed: Duration) {
        let sample = elapsed.as_secs_f64() * 1e6;
        let now = now_millis();
        let age = now.saturating_sub(self.latency_stamp.swap(now, Ordering::Relaxed));
        let old = f64::from_bits(self.latency_ewma.load(Ordering::Relaxed));
        let next = if sample > old {
            sample
        } else {
            let w = (-(age as f64) / LATENCY_DECAY.as_millis() as f64).exp();
            old * w + sample * (1.0 - w)
        };
        self.latency_ewma.store(next.to_bits(), Ordering::Relaxed);
    }

    /// A request succeeded: passive failures start again from zero.
    pub fn record_success(&self) {
        if self.passive_failures.load(Ordering::Relaxed) != 0 {
            self.passive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// A request failed (connect error, timeout, or 5xx when so configured). Past the
    /// threshold the backend is ejected for a back-off that doubles with each ejection in a
    /// row, up to the configured maximum.
    pub fn record_failure(&self, config: &PassiveConfig, reason: &'static str) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if !config.enabled {
            return;
        }
        let failures = self.passive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < config.failures.get() {
            return;
        }
        let now = now_millis();
        let previous_until = self.ejected_until.load(Ordering::Relaxed);
        if previous_until > now {
            return;
        }
        self.passive_failures.store(0, Ordering::Relaxed);
        // A backend that stayed in since its last ejection for longer than the maximum
        // back-off has earned a fresh start.
        let max_ms = u64::try_from(config.max_ejection.as_millis()).unwrap_or(u64::MAX);
        let streak = if previous_until != 0 && now.saturating_sub(previous_until) < max_ms {
            self.ejections.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.ejections.store(1, Ordering::Relaxed);
            1
        };
        let base_ms = u64::try_from(config.base_ejection.as_millis()).unwrap_or(u64::MAX);
        let backoff = base_ms
            .saturating_mul(1u64 << (streak - 1).min(20))
            .min(max_ms);
        if self
            .ejected_until
            .compare_exchange(
                previous_until,
                now + backoff,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            *self
                .ejection_reason
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = reason;
            self.ejection_open.store(true, Ordering::Relaxed);
            self.stats.ejections.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                backend = %self.addr, origin = %self.origin, reason, consecutive_failures = failures,
                ejection_ms = backoff, ejections_in_a_row = streak,
                "backend ejected"
            );
        }
    }
}

impl Backend {
    /// True once when an ejection has run out, so the return can be logged.
    pub(crate) fn ejection_ended(&self, now: u64) -> bool {
        !self.is_ejected(now) && self.ejection_open.swap(false, Ordering::Relaxed)
    }
}

/// Decrements the backend's in-flight count when dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Backend>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An immutable snapshot of the backends that new requests may be routed to.
#[derive(Debug, Default)]
pub struct BackendSet {
    /// Changes whenever the membership changes, so selectors can rebuild cached state.
    pub generation: u64,
    pub backends: Vec<Arc<Backend>>,
}

/// The live backend set, swapped atomically by discovery and the admin API.
#[derive(Debug, Default)]
pub struct Registry {
    current: ArcSwap<BackendSet>,
    /// Held by a writer from reading the set to storing its successor, so discovery and
    /// the admin API never lose each other's change. Readers never take it.
    writes: std::sync::Mutex<Edits>,
}

/// What the admin API decided that discovery must respect.
#[derive(Debug, Default)]
pub struct Edits {
    /// Addresses removed through the API: discovery does not bring them back while DNS
    /// still names them. Oldest first, at most [`MAX_REMOVED`].
    pub removed: std::collections::VecDeque<SocketAddr>,
}

/// Removed addresses remembered, so the list cannot grow without bound.
pub const MAX_REMOVED: usize = 4096;

impl Registry {
    pub fn load(&self) -> arc_swap::Guard<Arc<BackendSet>> {
        self.current.load()
    }

    pub fn load_full(&self) -> Arc<BackendSet> {
        self.current.load_full()
    }

    pub fn store(&self, set: BackendSet) {
        self.current.store(Arc::new(set));
    }

    /// Exclusive right to change the set: load, build the successor, store, then drop.
    pub fn writer(&self) -> std::sync::MutexGuard<'_, Edits> {
        self.writes.lock().unwrap_or_else(|e| e.into_inner())
    }
}
