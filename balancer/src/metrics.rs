//! Prometheus metrics, served by the admin listener at `GET /metrics` (token-protected).
//!
//! The request path only bumps plain atomics (Relaxed): per-backend ones in
//! [`BackendStats`], held by each [`Backend`](crate::backend::Backend), and global ones in
//! [`ProxyStats`]. No lock, no hash lookup, no allocation per request: the balancer's CPU
//! per request is measured against nginx and HAProxy. The Prometheus side is a
//! `prometheus-client` [`Collector`] that, at scrape time, reads the current backend set
//! from the registry and encodes each metric; a backend that left the set simply no longer
//! appears. Label values are bounded: backend addresses (the set is capped), fixed outcome,
//! class and state names — never a path or a client.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use crate::backend::{Health, Registry, now_millis};

/// The exposition's media type (Prometheus text 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the latency buckets, in nanoseconds (5 ms … 5 s; +Inf is implicit).
pub const BUCKETS_NANOS: [u64; 6] = [
    5_000_000,
    25_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
    5_000_000_000,
];

/// How one attempt on one backend ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The backend answered with a head: counted per status class.
    Answered(u16),
    /// No connection (refused, unreachable, connect timeout, or dead before the request left).
    ConnectFailed,
    /// Connected and sent, but no answer within the response timeout.
    Timeout,
    /// The exchange broke after the request may have left (reset, malformed answer).
    Failed,
    /// The client's body was broken or too slow: not the backend's doing.
    ClientError,
}

/// Outcomes other than `answered`, in the order of [`BackendStats::unanswered`].
const UNANSWERED: [&str; 4] = ["connect_failed", "timeout", "failed", "client_error"];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Per-backend counters bumped on the request path.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Answered attempts by status class (1xx..5xx).
    classes: [AtomicU64; 5],
    /// Unanswered attempts by outcome, as in [`UNANSWERED`].
    unanswered: [AtomicU64; 4],
    /// Time to response head: per-bucket (not cumulative) counts, the last one +Inf.
    buckets: [AtomicU64; BUCKETS_NANOS.len() + 1],
    latency_sum_nanos: AtomicU64,
    /// Active-check transitions to up and to down.
    pub(crate) transitions: [AtomicU64; 2],
    /// Passive ejections started.
    pub(crate) ejections: AtomicU64,
    /// Sticky cookies naming this backend handed to clients: sessions newly pinned to it.
    pub sticky_issued: AtomicU64,
    /// Requests whose sticky cookie named this backend, which was tried first.
    pub sticky_routed: AtomicU64,
}

impl BackendStats {
    pub fn record(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Answered(status) => &self.classes[usize::from((status / 100).clamp(1, 5) - 1)],
            Outcome::ConnectFailed => &self.unanswered[0],
            Outcome::Timeout => &self.unanswered[1],
            Outcome::Failed => &self.unanswered[2],
            Outcome::ClientError => &self.unanswered[3],
        };
        counter.fetch_add(1, Relaxed);
    }

    pub fn observe_latency(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKETS_NANOS
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(BUCKETS_NANOS.len());
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.latency_sum_nanos.fetch_add(nanos, Relaxed);
    }

    /// Answered attempts with the given status class (1-5).
    pub fn answered(&self, class: u16) -> u64 {
        self.classes[usize::from(class.clamp(1, 5) - 1)].load(Relaxed)
    }

    /// Attempts that got no answer, in the order of [`UNANSWERED`]: connect failed,
    /// timeout, failed, client error.
    pub fn unanswered(&self) -> [u64; 4] {
        self.unanswered.each_ref().map(|c| c.load(Relaxed))
    }

    /// Per-bucket (not cumulative) latency counts, bounded above by [`BUCKETS_NANOS`]
    /// (the last bucket is +Inf), and the sum of all latencies in nanoseconds.
    pub fn latency(&self) -> ([u64; BUCKETS_NANOS.len() + 1], u64) {
        (
            self.buckets.each_ref().map(|c| c.load(Relaxed)),
            self.latency_sum_nanos.load(Relaxed),
        )
    }
}

/// Global counters bumped on the request path.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Attempts on a further candidate after the first one of a request.
    pub retries: AtomicU64,
    /// A sticky cookie named an eligible backend, which was tried first.
    pub sticky_hits: AtomicU64,
    /// A sticky cookie named no eligible backend (unknown, down, ejected, draining).
    pub sticky_reroutes: AtomicU64,
}

/// Reads the live set and the global counters at scrape time.
#[derive(Debug)]
pub struct BalancerCollector {
    registry: Arc<Registry>,
    stats: Arc<ProxyStats>,
}

/// The scrape registry: every metric under the `balancer_` prefix.
pub fn registry(
    backends: Arc<Registry>,
    stats: Arc<ProxyStats>,
) -> prometheus_client::registry::Registry {
    let mut registry = prometheus_client::registry::Registry::with_prefix("balancer");
    registry.register_collector(Box::new(BalancerCollector {
        registry: backends,
        stats,
    }));
    registry
}

/// The exposition text of `registry`.
pub fn render(registry: &prometheus_client::registry::Registry) -> String {
    let mut out = String::with_capacity(8192);
    // Writing into a String cannot fail; an encoder error would be a bug in the crate.
    let written = prometheus_client::encoding::prometheus_text::encode(&mut out, registry);
    debug_assert!(written.is_ok(), "encoding metrics: {written:?}");
    out
}

type Fmt = Result<(), std::fmt::Error>;

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: &AtomicU64) -> Fmt {
    encoder
        .encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value.load(Relaxed), None)
}

impl Collector for BalancerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Fmt {
        let set = self.registry.load_full();
        let addrs: Vec<String> = set.backends.iter().map(|b| b.addr.to_string()).collect();
        let backends = || set.backends.iter().zip(addrs.iter().map(String::as_str));

        let mut m = encoder.encode_descriptor(
            "backend_requests",
            "Attempts sent to each backend, by outcome and, when answered, status class (class=\"none\" otherwise).",
            None,
            MetricType::Counter,
        )?;
        for (backend, addr) in backends() {
            for (class, name) in CLASSES.iter().enumerate() {
                let labels = [("backend", addr), ("outcome", "answered"), ("class", name)];
                let value = backend.stats.classes[class].load(Relaxed);
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
            }
            for (outcome, name) in UNANSWERED.iter().enumerate() {
                let labels = [("backend", addr), ("outcome", name), ("class", "none")];
                let value = backend.stats.unanswered[outcome].load(Relaxed);
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
            }
        }

        let mut m = encoder.encode_descriptor(
            "backend_response_latency",
            "Time from the request's last byte to the backend's response head.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (backend, addr) in backends() {
            let stats = &backend.stats;
            let mut buckets = [(0.0, 0u64); BUCKETS_NANOS.len() + 1];
            let mut count = 0;
            for (i, slot) in buckets.iter_mut().enumerate() {
                let bound = BUCKETS_NANOS
                    .get(i)
                    .map_or(f64::INFINITY, |&n| n as f64 / 1e9);
                let n = stats.buckets[i].load(Relaxed);
                count += n;
                *slot = (bound, n);
            }
            let sum = stats.latency_sum_nanos.load(Relaxed) as f64 / 1e9;
            m.encode_family(&[("backend", addr)])?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }

        let mut m = encoder.encode_descriptor(
            "backend_in_flight",
            "Requests in flight on each backend (until their response body ends).",
            None,
            MetricType::Gauge,
        )?;
        for (backend, addr) in backends() {
            m.encode_family(&[("backend", addr)])?
                .encode_gauge(&backend.in_flight())?;
        }

        let mut m = encoder.encode_descriptor(
            "backend_health",
            "Active health-check state of each backend: 1 for its current state, 0 for the others.",
            None,
            MetricType::Gauge,
        )?;
        for (backend, addr) in backends() {
            let health = backend.health();
            for (state, name) in [
                (Health::Up, "up"),
                (Health::Down, "down"),
                (Health::Pending, "pending"),
            ] {
                m.encode_family(&[("backend", addr), ("state", name)])?
                    .encode_gauge(&u32::from(health == state))?;
            }
        }

        let mut m = encoder.encode_descriptor(
            "backend_health_transitions",
            "Active health-check state changes of each backend, by the state entered.",
            None,
            MetricType::Counter,
        )?;
        for (backend, addr) in backends() {
            for (i, to) in ["up", "down"].into_iter().enumerate() {
                let value = backend.stats.transitions[i].load(Relaxed);
                m.encode_family(&[("backend", addr), ("to", to)])?
                    .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
            }
        }

        let now = now_millis();
        let mut m = encoder.encode_descriptor(
            "backend_ejected",
            "1 while a backend is passively ejected.",
            None,
            MetricType::Gauge,
        )?;
        for (backend, addr) in backends() {
            m.encode_family(&[("backend", addr)])?
                .encode_gauge(&u32::from(backend.is_ejected(now)))?;
        }

        let mut m = encoder.encode_descriptor(
            "backend_ejections",
            "Passive ejections of each backend.",
            None,
            MetricType::Counter,
        )?;
        for (backend, addr) in backends() {
            let value = backend.stats.ejections.load(Relaxed);
            m.encode_family(&[("backend", addr)])?
                .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        }

        let mut m = encoder.encode_descriptor(
            "backend_sticky_issued",
            "Sticky cookies naming each backend handed to clients: sessions newly pinned to it.",
            None,
            MetricType::Counter,
        )?;
        for (backend, addr) in backends() {
            let value = backend.stats.sticky_issued.load(Relaxed);
            m.encode_family(&[("backend", addr)])?
                .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        }

        let mut m = encoder.encode_descriptor(
            "backend_sticky_routed",
            "Requests whose sticky cookie named each backend, which was tried first.",
            None,
            MetricType::Counter,
        )?;
        for (backend, addr) in backends() {
            let value = backend.stats.sticky_routed.load(Relaxed);
            m.encode_family(&[("backend", addr)])?
                .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        }

        counter(
            &mut encoder,
            "retries",
            "Attempts on a further backend after a request's first one failed.",
            &self.stats.retries,
        )?;
        counter(
            &mut encoder,
            "sticky_hits",
            "Requests whose sticky cookie named an eligible backend, tried first.",
            &self.stats.sticky_hits,
        )?;
        counter(
            &mut encoder,
            "sticky_reroutes",
            "Requests whose sticky cookie named no eligible backend (unknown, down, ejected or draining).",
            &self.stats.sticky_reroutes,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_lands_in_the_first_bucket_that_holds_it() {
        let stats = BackendStats::default();
        stats.observe_latency(Duration::from_millis(5));
        stats.observe_latency(Duration::from_millis(6));
        stats.observe_latency(Duration::from_secs(60));
        let counts: Vec<u64> = stats.buckets.iter().map(|b| b.load(Relaxed)).collect();
        assert_eq!(counts, [1, 1, 0, 0, 0, 0, 1]);
        assert_eq!(stats.latency_sum_nanos.load(Relaxed), 60_011_000_000);
        stats.record(Outcome::Answered(503));
        stats.record(Outcome::Answered(204));
        assert_eq!((stats.answered(5), stats.answered(2)), (1, 1));
    }

    #[test]
    fn the_exposition_names_each_backend_and_uses_prometheus_names() {
        use crate::backend::{Backend, BackendSet};
        let backends = Arc::new(Registry::default());
        let backend = Arc::new(Backend::new(
            "127.0.0.1:9001".parse().unwrap(),
            "app:9001".into(),
            1,
            String::new(),
            Health::Up,
            crate::pool::Pool::new(1, Duration::from_secs(1)),
        ));
        backend.stats.record(Outcome::Answered(200));
        backend.stats.observe_latency(Duration::from_millis(20));
        backends.store(BackendSet {
            generation: 1,
            backends: vec![backend],
        });
        let stats = Arc::new(ProxyStats::default());
        stats.retries.fetch_add(2, Relaxed);
        let text = render(&registry(backends, stats));
        for line in [
            "# TYPE balancer_backend_requests_total counter",
            r#"balancer_backend_requests_total{backend="127.0.0.1:9001",outcome="answered",class="2xx"} 1"#,
            r#"balancer_backend_requests_total{backend="127.0.0.1:9001",outcome="timeout",class="none"} 0"#,
            "# TYPE balancer_backend_response_latency_seconds histogram",
            r#"balancer_backend_response_latency_seconds_bucket{backend="127.0.0.1:9001",le="0.005"} 0"#,
            r#"balancer_backend_response_latency_seconds_bucket{backend="127.0.0.1:9001",le="0.025"} 1"#,
            r#"balancer_backend_response_latency_seconds_bucket{backend="127.0.0.1:9001",le="+Inf"} 1"#,
            r#"balancer_backend_response_latency_seconds_sum{backend="127.0.0.1:9001"} 0.02"#,
            r#"balancer_backend_response_latency_seconds_count{backend="127.0.0.1:9001"} 1"#,
            r#"balancer_backend_health{backend="127.0.0.1:9001",state="up"} 1"#,
            r#"balancer_backend_in_flight{backend="127.0.0.1:9001"} 0"#,
            r#"balancer_backend_sticky_issued_total{backend="127.0.0.1:9001"} 0"#,
            r#"balancer_backend_sticky_routed_total{backend="127.0.0.1:9001"} 0"#,
            "balancer_retries_total 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in:\n{text}"
            );
        }
    }
}
