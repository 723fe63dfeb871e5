//! Prometheus metrics, kept by `prometheus-client` and exposed in the OpenMetrics or the
//! Prometheus text format, whichever the scraper asks for.
//!
//! Label values are bounded: routes are the router's own patterns (or `unmatched`), statuses
//! are HTTP codes, so no client input can grow these families. Every series carries this
//! instance's id as a constant `instance_id` label, so that scrapes of a replica set stay
//! apart even behind a balancer. Not `instance`: that is the label Prometheus gives each
//! target (its address), and it renames a scraped `instance` to `exported_instance`.

use axum::extract::MatchedPath;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What `prometheus-client`'s OpenMetrics encoder writes (it exports no constant for it).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Prometheus text format, version 0.0.4.
pub const PROMETHEUS_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The exposition formats `/metrics` can answer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/openmetrics-text` 1.0.0, what Prometheus prefers when it scrapes.
    OpenMetrics,
    /// `text/plain` 0.0.4, for everything that did not ask for OpenMetrics (curl, browsers).
    Prometheus,
}

impl Format {
    /// Picks the format an `Accept` header prefers: OpenMetrics only when it is named with a
    /// weight at least that of plain text, since a scraper that cannot parse it would not
    /// name it, and `*/*` callers are usually people reading the text.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Prometheus;
        };
        let (mut openmetrics, mut text) = (0.0_f32, 0.0_f32);
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default();
            let weight = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(Some(1.0), |(_, v)| v.trim().parse::<f32>().ok())
                .unwrap_or(0.0);
            if media.eq_ignore_ascii_case("application/openmetrics-text") {
                openmetrics = openmetrics.max(weight);
            } else if ["text/plain", "text/*", "*/*"]
                .iter()
                .any(|m| media.eq_ignore_ascii_case(m))
            {
                text = text.max(weight);
            }
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::Prometheus => PROMETHEUS_CONTENT_TYPE,
        }
    }
}

/// A route label: the router's pattern, held as the router's own shared string so that
/// labelling a request allocates nothing.
#[derive(Debug, Clone)]
pub enum Route {
    Matched(MatchedPath),
    Fixed(&'static str),
}

impl Route {
    /// Requests no route matched (the 404 fallback); one label for all of them.
    pub const UNMATCHED: Route = Route::Fixed("unmatched");

    pub fn as_str(&self) -> &str {
        match self {
            Route::Matched(path) => path.as_str(),
            Route::Fixed(name) => name,
        }
    }
}

impl From<Option<&MatchedPath>> for Route {
    fn from(path: Option<&MatchedPath>) -> Route {
        path.map_or(Route::UNMATCHED, |p| Route::Matched(p.clone()))
    }
}

// By text, so a pattern matched by the router and the same text spelled out are one series.
impl PartialEq for Route {
    fn eq(&self, other: &Route) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Route {}

impl Hash for Route {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: Route,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: Route,
}

/// The app's metrics. Counters are atomics; the request families take a read lock to find
/// an existing series (a write lock only the first time a route/status pair is seen), and a
/// latency histogram locks only its own route's buckets.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    hits_recorded: Counter,
    write_batches: Counter,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_errors: Counter,
    /// Hits holding a simulated worker right now.
    work_in_progress: Gauge,
}

impl Metrics {
    /// Metrics whose every series is labelled `instance_id="<instance_id>"`.
    pub fn new(instance_id: &str) -> Metrics {
        let mut registry = Registry::with_prefix_and_labels(
            "hits",
            [("instance_id".into(), instance_id.to_owned().into())].into_iter(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        let latency =
            Family::<RouteLabels, Histogram>::new_with_constructor(|| Histogram::new(BUCKETS));
        let hits_recorded = Counter::default();
        let write_batches = Counter::default();
        let cache_hits = Counter::default();
        let cache_misses = Counter::default();
        let cache_errors = Counter::default();
        let work_in_progress = Gauge::default();
        // The registry appends `_total` to counters and the unit to the histogram's name, and
        // a full stop to each help text.
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer, by route",
            Unit::Seconds,
            latency.clone(),
        );
        registry.register(
            "recorded",
            "Hits committed to PostgreSQL by this instance",
            hits_recorded.clone(),
        );
        registry.register(
            "write_batches",
            "Transactions that committed hits (hits per batch = recorded / batches)",
            write_batches.clone(),
        );
        registry.register(
            "cache_hits",
            "24-hour window sums read from Redis",
            cache_hits.clone(),
        );
        registry.register(
            "cache_misses",
            "24-hour window sums missing from Redis and computed from PostgreSQL",
            cache_misses.clone(),
        );
        registry.register(
            "cache_errors",
            "Cache lookups that found Redis unavailable or slow",
            cache_errors.clone(),
        );
        registry.register(
            "work_in_progress",
            "Hits holding a simulated worker now (WORK_MS)",
            work_in_progress.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            hits_recorded,
            write_batches,
            cache_hits,
            cache_misses,
            cache_errors,
            work_in_progress,
        }
    }

    pub fn observe_request(&self, route: Route, status: u16, elapsed: Duration) {
        let labels = RequestLabels { route, status };
        self.requests.get_or_create(&labels).inc();
        let labels = RouteLabels {
            route: labels.route,
        };
        self.latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    pub fn hits_recorded(&self, hits: u64) {
        self.hits_recorded.inc_by(hits);
        self.write_batches.inc();
    }

    pub fn cache_hit(&self) {
        self.cache_hits.inc();
    }

    pub fn cache_miss(&self) {
        self.cache_misses.inc();
    }

    pub fn cache_error(&self) {
        self.cache_errors.inc();
    }

    pub fn work_started(&self) {
        self.work_in_progress.inc();
    }

    pub fn work_finished(&self) {
        self.work_in_progress.dec();
    }

    /// The exposition text in the given format.
    pub fn render(&self, format: Format) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail; an encoder error would be a bug in the crate.
        let written = match format {
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)
            }
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            }
        };
        debug_assert!(written.is_ok(), "encoding metrics: {written:?}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed() -> Metrics {
        let m = Metrics::new("a\"b");
        m.observe_request(Route::Fixed("/"), 200, Duration::from_millis(3));
        m.observe_request(Route::Fixed("/"), 200, Duration::from_millis(30));
        m.observe_request(Route::UNMATCHED, 404, Duration::from_millis(1));
        m.hits_recorded(5);
        m.cache_error();
        m.work_started();
        m.work_started();
        m.work_finished();
        m
    }

    #[test]
    fn renders_counters_and_cumulative_buckets_in_prometheus_text() {
        let text = observed().render(Format::Prometheus);
        for line in [
            "# TYPE hits_http_requests_total counter",
            r#"hits_http_requests_total{instance_id="a\"b",route="/",status="200"} 2"#,
            r#"hits_http_requests_total{instance_id="a\"b",route="unmatched",status="404"} 1"#,
            "# TYPE hits_http_request_duration_seconds histogram",
            r#"hits_http_request_duration_seconds_bucket{instance_id="a\"b",route="/",le="0.0025"} 0"#,
            r#"hits_http_request_duration_seconds_bucket{instance_id="a\"b",route="/",le="0.005"} 1"#,
            r#"hits_http_request_duration_seconds_bucket{instance_id="a\"b",route="/",le="0.05"} 2"#,
            r#"hits_http_request_duration_seconds_bucket{instance_id="a\"b",route="/",le="+Inf"} 2"#,
            r#"hits_http_request_duration_seconds_count{instance_id="a\"b",route="/"} 2"#,
            "# HELP hits_recorded_total Hits committed to PostgreSQL by this instance.",
            r#"hits_recorded_total{instance_id="a\"b"} 5"#,
            r#"hits_write_batches_total{instance_id="a\"b"} 1"#,
            r#"hits_cache_hits_total{instance_id="a\"b"} 0"#,
            r#"hits_cache_misses_total{instance_id="a\"b"} 0"#,
            r#"hits_cache_errors_total{instance_id="a\"b"} 1"#,
            "# TYPE hits_work_in_progress gauge",
            r#"hits_work_in_progress{instance_id="a\"b"} 1"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line} in:\n{text}"
            );
        }
        let sum = text
            .lines()
            .find_map(|l| {
                l.strip_prefix(
                    r#"hits_http_request_duration_seconds_sum{instance_id="a\"b",route="/"} "#,
                )
            })
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no sum for / in:\n{text}"));
        assert!((sum - 0.033).abs() < 1e-9, "{sum}");
        assert!(!text.contains("# EOF"), "{text}");
        // Prometheus owns `instance` (the target): a series carrying it gets it renamed.
        assert!(
            !text.contains("{instance=") && !text.contains(",instance="),
            "{text}"
        );
    }

    #[test]
    fn openmetrics_names_families_without_suffixes_and_ends_with_eof() {
        let text = observed().render(Format::OpenMetrics);
        for line in [
            "# TYPE hits_http_requests counter",
            "# TYPE hits_http_request_duration_seconds histogram",
            "# UNIT hits_http_request_duration_seconds seconds",
            r#"hits_recorded_total{instance_id="a\"b"} 5"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line} in:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn openmetrics_only_when_the_scraper_asks_for_it() {
        let prometheus_scrape = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        let cases = [
            (None, Format::Prometheus),
            (Some("*/*"), Format::Prometheus),
            (Some("text/plain"), Format::Prometheus),
            (Some(prometheus_scrape), Format::OpenMetrics),
            (Some("application/openmetrics-text"), Format::OpenMetrics),
            (
                Some("Application/OpenMetrics-Text; version=1.0.0"),
                Format::OpenMetrics,
            ),
            (Some("application/openmetrics-text;q=0"), Format::Prometheus),
            (
                Some("text/plain;q=0.9, application/openmetrics-text;q=0.5"),
                Format::Prometheus,
            ),
            (
                Some("application/openmetrics-text;q=bogus"),
                Format::Prometheus,
            ),
        ];
        for (accept, format) in cases {
            assert_eq!(Format::negotiate(accept), format, "{accept:?}");
        }
    }
}
