//! Prometheus metrics in the text exposition format, without a metrics framework.
//!
//! Label values are bounded: routes are the router's own patterns (or `unmatched`), statuses
//! are HTTP codes, so no client input can grow these maps.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    hits_recorded: AtomicU64,
    write_batches: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    cache_errors: AtomicU64,
    /// A gauge: hits holding a simulated worker right now.
    work_in_progress: AtomicU64,
}

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    pub fn observe_request(&self, route: &str, status: u16, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        {
            let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = requests.get_mut(&(route.to_owned(), status)) {
                *n += 1;
            } else {
                requests.insert((route.to_owned(), status), 1);
            }
        }
        let mut latency = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let histogram = match latency.get_mut(route) {
            Some(h) => h,
            None => latency.entry(route.to_owned()).or_default(),
        };
        if let Some(i) = BUCKETS.iter().position(|&upper| seconds <= upper) {
            histogram.counts[i] += 1;
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }

    pub fn hits_recorded(&self, hits: u64) {
        self.hits_recorded.fetch_add(hits, Ordering::Relaxed);
        self.write_batches.fetch_add(1, Ordering::Relaxed);
    }

    pub fn cache_hit(&self) {
        self.cache_hits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn cache_miss(&self) {
        self.cache_misses.fetch_add(1, Ordering::Relaxed);
    }

    pub fn cache_error(&self) {
        self.cache_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn work_started(&self) {
        self.work_in_progress.fetch_add(1, Ordering::Relaxed);
    }

    pub fn work_finished(&self) {
        self.work_in_progress.fetch_sub(1, Ordering::Relaxed);
    }

    /// The exposition text, labelled with this instance's id.
    pub fn render(&self, instance_id: &str) -> String {
        let instance = escape_label(instance_id);
        let mut out = String::with_capacity(4096);
        out.push_str(
            "# HELP hits_http_requests_total HTTP requests answered, by route and status.\n",
        );
        out.push_str("# TYPE hits_http_requests_total counter\n");
        for ((route, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "hits_http_requests_total{{instance=\"{instance}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape_label(route)
            );
        }
        out.push_str("# HELP hits_http_request_duration_seconds Time to answer, by route.\n");
        out.push_str("# TYPE hits_http_request_duration_seconds histogram\n");
        for (route, h) in self
            .latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let route = escape_label(route);
            let mut cumulative = 0;
            for (upper, n) in BUCKETS.iter().zip(h.counts) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "hits_http_request_duration_seconds_bucket{{instance=\"{instance}\",route=\"{route}\",le=\"{upper}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "hits_http_request_duration_seconds_bucket{{instance=\"{instance}\",route=\"{route}\",le=\"+Inf\"}} {}\n\
                 hits_http_request_duration_seconds_sum{{instance=\"{instance}\",route=\"{route}\"}} {}\n\
                 hits_http_request_duration_seconds_count{{instance=\"{instance}\",route=\"{route}\"}} {}",
                h.count, h.sum, h.count
            );
        }
        let counters = [
            (
                "hits_recorded_total",
                "Hits committed to PostgreSQL by this instance.",
                &self.hits_recorded,
            ),
            (
                "hits_write_batches_total",
                "Transactions that committed hits (hits per batch = recorded / batches).",
                &self.write_batches,
            ),
            (
                "hits_cache_hits_total",
                "24-hour window sums read from Redis.",
                &self.cache_hits,
            ),
            (
                "hits_cache_misses_total",
                "24-hour window sums missing from Redis and computed from PostgreSQL.",
                &self.cache_misses,
            ),
            (
                "hits_cache_errors_total",
                "Cache lookups that found Redis unavailable or slow.",
                &self.cache_errors,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{instance=\"{instance}\"}} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP hits_work_in_progress Hits holding a simulated worker now (WORK_MS).\n\
             # TYPE hits_work_in_progress gauge\n\
             hits_work_in_progress{{instance=\"{instance}\"}} {}",
            self.work_in_progress.load(Ordering::Relaxed)
        );
        out
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.observe_request("/", 200, Duration::from_millis(3));
        m.observe_request("/", 200, Duration::from_millis(30));
        m.hits_recorded(5);
        m.work_started();
        m.work_started();
        m.work_finished();
        let text = m.render("a\"b");
        assert!(
            text.contains(r#"hits_http_requests_total{instance="a\"b",route="/",status="200"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"le="0.005"} 1"#), "{text}");
        assert!(text.contains(r#"le="0.05"} 2"#), "{text}");
        assert!(
            text.contains(r#"hits_recorded_total{instance="a\"b"} 5"#),
            "{text}"
        );
        assert!(
            text.contains(
                "# TYPE hits_work_in_progress gauge\nhits_work_in_progress{instance=\"a\\\"b\"} 1\n"
            ),
            "{text}"
        );
    }
}
