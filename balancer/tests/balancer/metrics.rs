//! `GET /metrics` on the admin listener: exact per-backend counts by outcome and status
//! class after a known run of requests, histogram counts equal to the answers, nothing in
//! flight at rest, retries and passive ejections of a refusing backend, a health
//! transition when a backend goes down, sticky hits and re-routes; the token is required,
//! and the public listener does not serve the metrics (it proxies the path like any other).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;

use crate::helpers::{
    Answer, Running, admin_call, admin_request, closed_port, config, eventually, get, request,
    send, spawn_backend,
};

const TOKEN: &str = "metrics-admin-token-0123456789";
const LIMIT: Duration = Duration::from_secs(30);

async fn scrape_with(admin: SocketAddr, token: Option<&str>) -> Answer {
    send(admin, admin_request("GET", "/metrics", token, Bytes::new())).await
}

/// The exposition, parsed: one entry per sample line, keyed by name and sorted labels.
struct Scrape(HashMap<String, f64>);

impl Scrape {
    async fn take(admin: SocketAddr) -> Self {
        let answer = scrape_with(admin, Some(TOKEN)).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(
            answer.headers["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let mut samples = HashMap::new();
        for line in answer.body.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            let mut labels: Vec<&str> = labels.split(',').filter(|l| !l.is_empty()).collect();
            labels.sort_unstable();
            let value: f64 = value.parse().expect("a numeric sample");
            samples.insert(key(name, &labels), value);
        }
        Self(samples)
    }

    /// The sample `name` with exactly `labels`; panics if it is missing.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        labels.sort_unstable();
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        let key = key(name, &labels);
        *self
            .0
            .get(&key)
            .unwrap_or_else(|| panic!("no sample {key} in the scrape"))
    }

    fn requests(&self, backend: SocketAddr, outcome: &str, class: &str) -> f64 {
        let backend = backend.to_string();
        self.get(
            "balancer_backend_requests_total",
            &[
                ("backend", &backend),
                ("outcome", outcome),
                ("class", class),
            ],
        )
    }

    fn of(&self, name: &str, backend: SocketAddr) -> f64 {
        self.get(name, &[("backend", &backend.to_string())])
    }

    fn mentions(&self, backend: SocketAddr) -> bool {
        let needle = format!("backend=\"{backend}\"");
        self.0.keys().any(|k| k.contains(&needle))
    }
}

fn key(name: &str, sorted_labels: &[&str]) -> String {
    format!("{name}{{{}}}", sorted_labels.join(","))
}

#[tokio::test]
async fn counts_per_backend_outcome_and_class_are_exact_and_nothing_is_in_flight_at_rest() {
    let ok = spawn_backend("ok").await;
    let failing = spawn_backend("failing").await;
    failing.behaviour.status.store(500, Ordering::SeqCst);
    let refusing = closed_port();
    let mut config = config(&[&ok, &failing]);
    config
        .backends
        .push(refusing.addr.to_string().parse().unwrap());
    // Ejected after its third refused connect, and for the rest of the test.
    config.passive.base_ejection = Duration::from_secs(60);
    config.passive.max_ejection = Duration::from_secs(120);
    let running = Running::builder(config).admin(Some(TOKEN)).start().await;

    let before = Scrape::take(running.admin()).await;
    for backend in [ok.addr, failing.addr, refusing.addr] {
        assert_eq!(before.of("balancer_backend_in_flight", backend), 0.0);
        assert_eq!(before.requests(backend, "answered", "2xx"), 0.0);
    }

    const N: usize = 30;
    let mut statuses = HashMap::new();
    for _ in 0..N {
        *statuses
            .entry(get(running.addr, "/").await.status)
            .or_insert(0) += 1;
    }
    let answered_ok = ok.hits();
    let answered_500 = failing.hits();
    assert_eq!(answered_ok + answered_500, N, "every request answered once");
    assert_eq!(statuses.get(&200), Some(&answered_ok), "{statuses:?}");
    assert_eq!(statuses.get(&500), Some(&answered_500), "{statuses:?}");
    assert!(answered_ok > 0 && answered_500 > 0, "round robin uses both");

    let after = Scrape::take(running.admin()).await;
    assert_eq!(
        after.requests(ok.addr, "answered", "2xx"),
        answered_ok as f64
    );
    assert_eq!(
        after.requests(failing.addr, "answered", "5xx"),
        answered_500 as f64
    );
    for class in ["1xx", "3xx", "4xx", "5xx"] {
        assert_eq!(after.requests(ok.addr, "answered", class), 0.0, "{class}");
    }
    for class in ["1xx", "2xx", "3xx", "4xx"] {
        assert_eq!(
            after.requests(failing.addr, "answered", class),
            0.0,
            "{class}"
        );
    }
    for outcome in ["connect_failed", "timeout", "failed", "client_error"] {
        for backend in [ok.addr, failing.addr] {
            assert_eq!(after.requests(backend, outcome, "none"), 0.0, "{outcome}");
        }
    }
    // The refusing backend: three refused connects (the passive threshold), then ejected;
    // each refusal moved its request to the next candidate.
    assert_eq!(after.requests(refusing.addr, "connect_failed", "none"), 3.0);
    assert_eq!(after.requests(refusing.addr, "answered", "2xx"), 0.0);
    assert_eq!(
        after.of("balancer_backend_ejections_total", refusing.addr),
        1.0
    );
    assert_eq!(after.of("balancer_backend_ejected", refusing.addr), 1.0);
    assert_eq!(after.of("balancer_backend_ejections_total", ok.addr), 0.0);
    assert_eq!(after.get("balancer_retries_total", &[]), 3.0);

    // One latency observation per answer, none for refusals.
    for (backend, answered) in [(ok.addr, answered_ok), (failing.addr, answered_500)] {
        let count = after.of("balancer_backend_response_latency_seconds_count", backend);
        assert_eq!(count, answered as f64);
        let backend = backend.to_string();
        let inf = after.get(
            "balancer_backend_response_latency_seconds_bucket",
            &[("backend", &backend), ("le", "+Inf")],
        );
        assert_eq!(inf, answered as f64);
    }
    assert_eq!(
        after.of(
            "balancer_backend_response_latency_seconds_count",
            refusing.addr
        ),
        0.0
    );
    // Every body was read to its end before the scrape: nothing is in flight.
    for backend in [ok.addr, failing.addr, refusing.addr] {
        assert_eq!(after.of("balancer_backend_in_flight", backend), 0.0);
    }
}

#[tokio::test]
async fn a_backend_going_down_is_one_health_transition() {
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let mut config = config(&[&a, &b]);
    config.health.path = Some("/healthz".into());
    config.health.fall = 2.try_into().unwrap();
    let running = Running::builder(config).admin(Some(TOKEN)).start().await;
    let b_label = b.addr.to_string();
    let transitions = |s: &Scrape, to: &str| {
        s.get(
            "balancer_backend_health_transitions_total",
            &[("backend", &b_label), ("to", to)],
        )
    };
    let state = |s: &Scrape, state: &str| {
        s.get(
            "balancer_backend_health",
            &[("backend", &b_label), ("state", state)],
        )
    };

    let admin = running.admin();
    // Serving waits for a first round only so long: on a loaded machine it may end later.
    assert!(
        eventually(LIMIT, async || state(&Scrape::take(admin).await, "up")
            == 1.0)
        .await,
        "b reported up within the hang guard"
    );
    let before = Scrape::take(running.admin()).await;
    assert_eq!(state(&before, "down"), 0.0);
    // Pending until the first check passed: that was its one transition so far.
    assert_eq!(transitions(&before, "up"), 1.0);
    assert_eq!(transitions(&before, "down"), 0.0);

    b.behaviour.unhealthy.store(true, Ordering::SeqCst);
    assert!(
        eventually(LIMIT, async || state(&Scrape::take(admin).await, "down")
            == 1.0)
        .await,
        "b reported down within the hang guard"
    );
    let after = Scrape::take(running.admin()).await;
    assert_eq!(transitions(&after, "down"), 1.0);
    assert_eq!(transitions(&after, "up"), 1.0);
    assert_eq!(state(&after, "up"), 0.0);
    assert_eq!(state(&after, "pending"), 0.0);
    let a_label = a.addr.to_string();
    assert_eq!(
        after.get(
            "balancer_backend_health_transitions_total",
            &[("backend", &a_label), ("to", "down")]
        ),
        0.0
    );
}

#[tokio::test]
async fn sticky_hits_and_reroutes_are_counted() {
    let (a, b) = (spawn_backend("a").await, spawn_backend("b").await);
    let mut config = config(&[&a, &b]);
    config.sticky.enabled = true;
    let running = Running::builder(config).admin(Some(TOKEN)).start().await;
    let first = get(running.addr, "/").await;
    let set_cookie = first.headers["set-cookie"].to_str().unwrap().to_owned();
    let pair = set_cookie.split(';').next().unwrap().to_owned();
    for _ in 0..3 {
        let answer = send(running.addr, request("/", &[("cookie", &pair)])).await;
        assert_eq!(answer.instance(), first.instance());
    }
    let unknown = "hitscale_backend=0123456789abcdef0123456789abcdef";
    send(running.addr, request("/", &[("cookie", unknown)])).await;
    let scrape = Scrape::take(running.admin()).await;
    assert_eq!(scrape.get("balancer_sticky_hits_total", &[]), 3.0);
    assert_eq!(scrape.get("balancer_sticky_reroutes_total", &[]), 1.0);
    assert_eq!(scrape.get("balancer_retries_total", &[]), 0.0);
    // Per backend: the three cookie-routed requests went to the pinned one; a cookie was
    // issued for the first request and for the re-routed one, to whichever served them.
    let (pinned, other) = if first.instance() == "a" {
        (a.addr, b.addr)
    } else {
        (b.addr, a.addr)
    };
    let (pinned, other) = (pinned.to_string(), other.to_string());
    let routed =
        |addr: &str| scrape.get("balancer_backend_sticky_routed_total", &[("backend", addr)]);
    let issued =
        |addr: &str| scrape.get("balancer_backend_sticky_issued_total", &[("backend", addr)]);
    assert_eq!((routed(&pinned), routed(&other)), (3.0, 0.0));
    assert_eq!(issued(&pinned) + issued(&other), 2.0);
    assert!(issued(&pinned) >= 1.0);
}

#[tokio::test]
async fn metrics_need_the_token_and_the_public_listener_proxies_the_path() {
    let a = spawn_backend("a").await;
    let running = Running::builder(config(&[&a]))
        .admin(Some(TOKEN))
        .start()
        .await;
    for token in [None, Some("wrong-token-0123456789")] {
        let answer = scrape_with(running.admin(), token).await;
        assert_eq!(answer.status, 401, "{token:?}: {}", answer.body);
        assert!(!answer.body.contains("balancer_"), "{}", answer.body);
    }
    let scrape = Scrape::take(running.admin()).await;
    assert!(scrape.mentions(a.addr));

    // On the public listener /metrics is just a path: the backend answers it.
    let hits = a.hits();
    let public = get(running.addr, "/metrics").await;
    assert_eq!(public.status, 200);
    assert_eq!(public.instance(), "a", "answered by the backend");
    assert!(!public.body.contains("balancer_backend"), "{}", public.body);
    assert_eq!(a.hits(), hits + 1);
}

#[tokio::test]
async fn a_removed_backend_leaves_the_exposition() {
    let (a, b) = (spawn_backend("a").await, spawn_backend("b").await);
    let running = Running::builder(config(&[&a, &b]))
        .admin(Some(TOKEN))
        .start()
        .await;
    assert!(Scrape::take(running.admin()).await.mentions(b.addr));
    let remove = format!("/api/backends/{}", b.addr);
    let (status, _) = admin_call(running.admin(), "DELETE", &remove, Some(TOKEN), None).await;
    assert_eq!(status, 200);
    let scrape = Scrape::take(running.admin()).await;
    assert!(!scrape.mentions(b.addr));
    assert!(scrape.mentions(a.addr));
}
