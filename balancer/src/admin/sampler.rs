//! The dashboard's figures. One task per admin server (not one per viewer) reads the live
//! set's counters once a second, the same Relaxed atomics `/metrics` reads, and turns
//! their differences into rates: requests per second, error rate, latency quantiles and
//! share of traffic. Each tick is published once, already framed as a server-sent event,
//! through a `watch` channel (a slow viewer skips ticks, it never queues them), and kept in
//! a bounded history (the last five minutes) that a new viewer receives first.
//!
//! The request path pays nothing for any of this: the sampler only loads counters that
//! the proxy already increments.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::backend::{Backend, Registry, now_millis};

use crate::metrics::BUCKETS_NANOS;

/// How often the counters are read.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Ticks kept for the chart: five minutes.
pub const HISTORY: usize = 300;
/// Ticks over which error rates and latency quantiles are taken: a quantile of one
/// second's few requests would jump about.
pub const WINDOW: usize = 10;

const BUCKETS: usize = BUCKETS_NANOS.len() + 1;

/// One backend's counters at one instant.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    at_ms: u64,
    /// Every attempt, answered or not.
    attempts: u64,
    /// 5xx answers and attempts the backend left unanswered (not the client's doing).
    errors: u64,
    buckets: [u64; BUCKETS],
    latency_sum_nanos: u64,
    sticky_issued: u64,
    sticky_routed: u64,
}

impl Counters {
    fn read(backend: &Backend, at_ms: u64) -> Self {
        let stats = &backend.stats;
        let answered: u64 = (1..=5).map(|class| stats.answered(class)).sum();
        let [connect_failed, timeout, failed, client_error] = stats.unanswered();
        let (buckets, latency_sum_nanos) = stats.latency();
        Self {
            at_ms,
            attempts: answered + connect_failed + timeout + failed + client_error,
            errors: stats.answered(5) + connect_failed + timeout + failed,
            buckets,
            latency_sum_nanos,
            sticky_issued: stats
                .sticky_issued
                .load(std::sync::atomic::Ordering::Relaxed),
            sticky_routed: stats
                .sticky_routed
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// A backend's recent readings, newest last, at most `WINDOW + 1`.
struct Track {
    backend: Arc<Backend>,
    /// Its address as the chart's points name it, made once.
    address: Arc<str>,
    readings: VecDeque<Counters>,
}

/// One tick of the chart: requests per second of each backend.
#[derive(Debug, Clone)]
struct Point {
    t: u64,
    rps: Vec<(Arc<str>, f64)>,
}

impl Point {
    fn to_json(&self) -> Value {
        let rps: serde_json::Map<String, Value> = self
            .rps
            .iter()
            .map(|(address, rps)| (address.to_string(), json!(round(*rps))))
            .collect();
        json!({ "t": self.t, "rps": rps })
    }
}

/// What viewers subscribe to: the latest tick, and the history before it.
#[derive(Debug, Clone)]
pub struct Feed {
    latest: watch::Receiver<Option<Bytes>>,
    history: Arc<Mutex<VecDeque<Point>>>,
}

/// The sampler's side, handed to [`run`] when the admin server starts serving.
#[derive(Debug)]
pub struct Sampler {
    latest: watch::Sender<Option<Bytes>>,
    history: Arc<Mutex<VecDeque<Point>>>,
}

/// A connected sampler and feed.
pub fn channel() -> (Sampler, Feed) {
    let (latest, receiver) = watch::channel(None);
    let history = Arc::new(Mutex::new(VecDeque::with_capacity(HISTORY)));
    (
        Sampler {
            latest,
            history: history.clone(),
        },
        Feed {
            latest: receiver,
            history,
        },
    )
}

impl Feed {
    /// A receiver of the ticks to come and, framed as one `history` event, those before.
    /// A tick that lands in between may arrive twice; viewers drop a repeated `t`.
    pub fn subscribe(&self) -> (watch::Receiver<Option<Bytes>>, Bytes) {
        let mut receiver = self.latest.clone();
        receiver.mark_unchanged();
        let points: Vec<Value> = self
            .history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(Point::to_json)
            .collect();
        let history = json!({
            "interval_ms": INTERVAL.as_millis() as u64,
            "capacity": HISTORY,
            "points": points,
        });
        (receiver, event("history", &history))
    }
}

/// `value` framed as one server-sent event named `name` (JSON has no raw newline).
fn event(name: &str, value: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {value}\n\n"))
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Two decimals are plenty for a screen and keep the events short.
fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// The upper bound, in milliseconds, of the bucket holding quantile `q` of the counts, or
/// `"+Inf"` past the last bound; `null` without any count. The buckets are all the
/// histogram knows, so the dashboard shows the bound ("≤ 25 ms"), not an interpolation.
fn quantile(buckets: &[u64; BUCKETS], q: f64) -> Value {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return Value::Null;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, count) in buckets.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return match BUCKETS_NANOS.get(i) {
                Some(&bound) => json!(bound as f64 / 1e6),
                None => json!("+Inf"),
            };
        }
    }
    json!("+Inf")
}

/// Reads the counters every [`INTERVAL`] and publishes until the task is aborted (with
/// the admin server) or no feed is left.
pub async fn run(registry: Arc<Registry>, sampler: Sampler) {
    let mut tracks: HashMap<SocketAddr, Track> = HashMap::new();
    let mut ticker = tokio::time::interval(INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let (snapshot, point) = sample(&registry, &mut tracks, now_millis(), unix_millis());
        {
            let mut history = sampler.history.lock().unwrap_or_else(|e| e.into_inner());
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(point);
        }
        if sampler.latest.is_closed() {
            // Every feed is gone: the admin server has stopped.
            return;
        }
        // The feed itself holds one receiver; only a viewer's are worth the encoding.
        if sampler.latest.receiver_count() > 1 {
            sampler
                .latest
                .send_replace(Some(event("snapshot", &snapshot)));
        }
    }
}

/// One tick: the snapshot viewers see, and the chart's point.
/// `now` is [`now_millis`] (the counters' clock), `t` the wall clock viewers see.
fn sample(
    registry: &Registry,
    tracks: &mut HashMap<SocketAddr, Track>,
    now: u64,
    t: u64,
) -> (Value, Point) {
    let set = registry.load_full();
    // Only the current set is tracked; a backend removed and added again is a new one.
    tracks.retain(|address, track| {
        set.backends
            .iter()
            .any(|b| b.addr == *address && Arc::ptr_eq(b, &track.backend))
    });
    let mut rows = Vec::with_capacity(set.backends.len());
    for backend in &set.backends {
        let track = tracks.entry(backend.addr).or_insert_with(|| Track {
            backend: backend.clone(),
            address: backend.addr.to_string().into(),
            readings: VecDeque::with_capacity(WINDOW + 1),
        });
        if track.readings.len() == WINDOW + 1 {
            track.readings.pop_front();
        }
        track.readings.push_back(Counters::read(backend, now));
        rows.push(figures(backend, &track.address, &track.readings, now));
    }
    let total_rps: f64 = rows.iter().map(|r| r.rps).sum();
    let point = Point {
        t,
        // A backend's first reading has no rate yet: a gap in the chart, not a zero.
        rps: rows
            .iter()
            .filter(|r| r.measured)
            .map(|r| (r.address.clone(), r.rps))
            .collect(),
    };
    let backends: Vec<Value> = rows
        .into_iter()
        .map(|mut row| {
            row.json["share"] = json!(if total_rps > 0.0 {
                round(row.rps / total_rps)
            } else {
                0.0
            });
            row.json
        })
        .collect();
    let snapshot = json!({
        "t": t,
        "generation": set.generation,
        "window_s": WINDOW as u64 * INTERVAL.as_secs(),
        "total_rps": round(total_rps),
        "backends": backends,
    });
    (snapshot, point)
}

struct Row {
    address: Arc<str>,
    rps: f64,
    /// Whether there were two readings to take a rate from.
    measured: bool,
    json: Value,
}

fn figures(backend: &Backend, address: &Arc<str>, readings: &VecDeque<Counters>, now: u64) -> Row {
    let newest = *readings.back().expect("a reading was just pushed");
    let previous = readings.len().checked_sub(2).map(|i| readings[i]);
    let oldest = readings[0];
    let per_second = |from: &Counters, value: fn(&Counters) -> u64| -> f64 {
        let ms = newest.at_ms.saturating_sub(from.at_ms);
        if ms == 0 {
            return 0.0;
        }
        value(&newest).saturating_sub(value(from)) as f64 * 1000.0 / ms as f64
    };
    let (rps, sticky_issued_ps, sticky_routed_ps) = match &previous {
        Some(previous) => (
            per_second(previous, |c| c.attempts),
            per_second(previous, |c| c.sticky_issued),
            per_second(previous, |c| c.sticky_routed),
        ),
        None => (0.0, 0.0, 0.0),
    };
    let attempts = newest.attempts.saturating_sub(oldest.attempts);
    let errors = newest.errors.saturating_sub(oldest.errors);
    let mut buckets = [0u64; BUCKETS];
    for (i, slot) in buckets.iter_mut().enumerate() {
        *slot = newest.buckets[i].saturating_sub(oldest.buckets[i]);
    }
    let measured: u64 = buckets.iter().sum();
    let mean_ms = (measured > 0).then(|| {
        round(
            newest
                .latency_sum_nanos
                .saturating_sub(oldest.latency_sum_nanos) as f64
                / 1e6
                / measured as f64,
        )
    });
    let (state, reason) = super::api::state_of(backend, now);
    Row {
        address: address.clone(),
        rps,
        measured: previous.is_some(),
        json: json!({
            "address": &**address,
            "origin": &*backend.origin,
            "state": state,
            "reason": reason,
            "weight": backend.weight(),
            "in_flight": backend.in_flight(),
            "requests": newest.attempts,
            "rps": round(rps),
            "error_rate": (attempts > 0).then(|| round(errors as f64 / attempts as f64 * 100.0) / 100.0),
            "errors_in_window": errors,
            "p50_ms": quantile(&buckets, 0.5),
            "p99_ms": quantile(&buckets, 0.99),
            "mean_ms": mean_ms,
            "sticky_issued": newest.sticky_issued,
            "sticky_issued_ps": round(sticky_issued_ps),
            "sticky_routed_ps": round(sticky_routed_ps),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{BackendSet, Health};
    use crate::metrics::Outcome;

    #[test]
    fn quantiles_name_the_bucket_bound_that_holds_them() {
        let mut buckets = [0u64; BUCKETS];
        assert_eq!(quantile(&buckets, 0.5), Value::Null);
        buckets[0] = 98;
        buckets[2] = 1;
        buckets[6] = 1;
        assert_eq!(quantile(&buckets, 0.5), json!(5.0));
        assert_eq!(quantile(&buckets, 0.99), json!(100.0));
        assert_eq!(quantile(&buckets, 1.0), json!("+Inf"));
    }

    #[test]
    fn rates_come_from_counter_differences_and_shares_add_up() {
        let registry = Registry::default();
        let backend = |port: u16| {
            Arc::new(Backend::new(
                SocketAddr::from(([127, 0, 0, 1], port)),
                format!("app:{port}").into(),
                1,
                String::new(),
                Health::Up,
                crate::pool::Pool::new(1, Duration::from_secs(1)),
            ))
        };
        let (a, b) = (backend(9001), backend(9002));
        registry.store(BackendSet {
            generation: 1,
            backends: vec![a.clone(), b.clone()],
        });
        let mut tracks = HashMap::new();
        let (first, first_point) = sample(&registry, &mut tracks, 10_000, 1);
        assert_eq!(first["backends"][0]["rps"], json!(0.0));
        assert!(first_point.rps.is_empty(), "no rate from one reading");
        assert_eq!(first["backends"][0]["p50_ms"], Value::Null);
        for _ in 0..30 {
            a.stats.record(Outcome::Answered(200));
            a.stats.observe_latency(Duration::from_millis(3));
        }
        a.stats.record(Outcome::Answered(502));
        a.stats.observe_latency(Duration::from_millis(300));
        for _ in 0..10 {
            b.stats.record(Outcome::Answered(200));
            b.stats.observe_latency(Duration::from_millis(20));
        }
        b.stats.record(Outcome::ConnectFailed);
        b.stats.record(Outcome::ClientError);
        // Two seconds later: rates divide by the time between the readings.
        let (snapshot, point) = sample(&registry, &mut tracks, 12_000, 2);
        let a_row = &snapshot["backends"][0];
        let b_row = &snapshot["backends"][1];
        assert_eq!(a_row["rps"], json!(15.5), "{snapshot}");
        assert_eq!(b_row["rps"], json!(6.0), "{snapshot}");
        assert_eq!(snapshot["total_rps"], json!(21.5), "{snapshot}");
        assert_eq!(a_row["error_rate"], json!(0.0323), "1 of 31");
        assert_eq!(a_row["errors_in_window"], json!(1));
        // A connect failure is the backend's, a client's broken body is not.
        assert_eq!(b_row["errors_in_window"], json!(1));
        assert_eq!(b_row["requests"], json!(12));
        assert_eq!(a_row["p50_ms"], json!(5.0));
        assert_eq!(a_row["p99_ms"], json!(1000.0));
        assert_eq!(b_row["p50_ms"], json!(25.0));
        let shares = a_row["share"].as_f64().unwrap() + b_row["share"].as_f64().unwrap();
        assert!((0.99..=1.01).contains(&shares), "{snapshot}");
        assert_eq!(a_row["state"], json!("healthy"));
        assert_eq!(point.rps.len(), 2);
        assert_eq!(&*point.rps[0].0, "127.0.0.1:9001");
    }
}
