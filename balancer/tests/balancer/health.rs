//! Active health checks (rise/fall, first pass) and passive ejection.

use std::sync::atomic::Ordering;
use std::time::Duration;

use balancer::backend::{Backend, Health, now_millis};

use crate::helpers::*;

/// `b`'s state as the balancer reports it.
fn health_of(balancer: &Running, b: &TestBackend) -> Health {
    balancer
        .registry
        .load()
        .backends
        .iter()
        .find(|x| x.addr == b.addr)
        .expect("b is in the backend set")
        .health()
}

/// Waits (10 s hang guard) until `b` reaches `target`, counting the checks `answered`
/// since `since`. Rounds of checks run one after another, so at most one answered check
/// is not yet applied: while `b` has not moved, at most `threshold + 1` have been answered
/// (counted before the state is read); once it has, at least `threshold` were (counted
/// after). Together: it moves at the threshold-th check, not before, not later.
async fn moves_at_threshold(
    balancer: &Running,
    b: &TestBackend,
    target: Health,
    answered: &std::sync::atomic::AtomicUsize,
    since: usize,
    threshold: usize,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let count = answered.load(Ordering::SeqCst) - since;
        if health_of(balancer, b) == target {
            break;
        }
        assert!(
            count <= threshold + 1,
            "still not {target:?} after {count} checks (threshold {threshold})"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "hang guard: b did not become {target:?} within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let count = answered.load(Ordering::SeqCst) - since;
    assert!(
        count >= threshold,
        "{target:?} after only {count} checks (threshold {threshold})"
    );
}

#[tokio::test]
async fn a_failing_backend_leaves_after_fall_failed_checks_and_returns_after_rise() {
    let (a, b) = (spawn_backend("a").await, spawn_backend("b").await);
    let mut config = config(&[&a, &b]);
    config.health.path = Some("/healthz".into());
    config.health.rise = 2.try_into().unwrap();
    config.health.fall = 3.try_into().unwrap();
    let balancer = Running::start(config).await;
    assert_eq!(spread(balancer.addr, 4).await.len(), 2);
    assert_eq!(health_of(&balancer, &b), Health::Up);

    let failed = b.failed_checks.load(Ordering::SeqCst);
    b.behaviour.unhealthy.store(true, Ordering::SeqCst);
    moves_at_threshold(&balancer, &b, Health::Down, &b.failed_checks, failed, 3).await;
    let counts = spread(balancer.addr, 6).await;
    assert_eq!(counts.get("a"), Some(&6), "{counts:?}");

    let passed = b.passed_checks.load(Ordering::SeqCst);
    b.behaviour.unhealthy.store(false, Ordering::SeqCst);
    moves_at_threshold(&balancer, &b, Health::Up, &b.passed_checks, passed, 2).await;
    assert_eq!(spread(balancer.addr, 4).await.get("b"), Some(&2));
}

#[tokio::test]
async fn a_backend_gets_traffic_only_after_its_first_passing_check() {
    let (a, b) = (spawn_backend("a").await, spawn_backend("b").await);
    b.behaviour.unhealthy.store(true, Ordering::SeqCst);
    let mut config = config(&[&a, &b]);
    config.health.path = Some("/healthz".into());
    config.health.interval = Duration::from_secs(60);
    let balancer = Running::start(config).await;
    // b never passed a check: it is still pending and gets nothing.
    let states: Vec<Health> = balancer
        .registry
        .load()
        .backends
        .iter()
        .map(|x| x.health())
        .collect();
    assert!(states.contains(&Health::Pending), "{states:?}");
    assert_eq!(spread(balancer.addr, 4).await.get("a"), Some(&4));
    assert_eq!(b.hits(), 0);
    assert!(b.health_checks.load(Ordering::SeqCst) >= 1, "b was checked");
}

#[tokio::test]
async fn every_backend_down_answers_503_quickly_or_fails_open() {
    let a = spawn_backend("a").await;
    a.behaviour.unhealthy.store(true, Ordering::SeqCst);
    let mut closed = config(&[&a]);
    closed.health.path = Some("/healthz".into());
    let mut open = closed.clone();
    open.fail_open = true;
    let balancer = Running::start(closed).await;
    let answer = get(balancer.addr, "/").await;
    assert_eq!(answer.status, 503);
    assert!(
        answer.body.contains("no healthy backend"),
        "{}",
        answer.body
    );
    let balancer = Running::start(open).await;
    assert_eq!(get(balancer.addr, "/").await.instance(), "a");
}

/// When `backend`'s ejection ends, on the balancer's clock: found by asking `is_ejected`
/// about moments of our choosing (it is monotonic in the moment asked about).
fn ejected_until(backend: &Backend) -> u64 {
    let (mut ejected, mut free) = (0u64, now_millis() + 3_600_000);
    assert!(backend.is_ejected(ejected), "the backend was ejected");
    assert!(!backend.is_ejected(free));
    while free - ejected > 1 {
        let mid = ejected + (free - ejected) / 2;
        if backend.is_ejected(mid) {
            ejected = mid;
        } else {
            free = mid;
        }
    }
    free
}

#[tokio::test]
async fn connect_failures_eject_a_backend_with_growing_backoff_and_requests_still_succeed() {
    let a = spawn_backend("a").await;
    let mut b = spawn_backend("b").await;
    let mut config = config(&[&a, &b]);
    config.passive.failures = 2.try_into().unwrap();
    let base: u64 = 500;
    config.passive.base_ejection = Duration::from_millis(base);
    let balancer = Running::start(config).await;
    b.stop();
    let b_addr = b.addr;
    let backend = balancer
        .registry
        .load()
        .backends
        .iter()
        .find(|x| x.addr == b_addr)
        .unwrap()
        .clone();

    // Sends requests until b is ejected (`ejected_since` is a moment before which it was
    // not). Connect refusals never reached b, so each is retried on a: no client sees an
    // error.
    let until_ejected = async |ejected_since: u64| {
        let mut sent = 0;
        while !backend.is_ejected(ejected_since) {
            assert!(sent < 20, "b was ejected after failing twice");
            let answer = get(balancer.addr, "/").await;
            assert_eq!((answer.status, answer.instance()), (200, "a"));
            sent += 1;
        }
    };
    // The ejection starts between `before` and `after`, and lasts the back-off.
    let before = now_millis();
    until_ejected(0).await;
    let after = now_millis();
    let first = ejected_until(&backend);
    assert!(
        (before + base..=after + base).contains(&first),
        "the first ejection lasts {base} ms: ends at {first}, began within {before}..={after}"
    );

    // After the first back-off b is tried again, fails again, and is ejected for twice as
    // long.
    assert!(
        eventually(Duration::from_secs(10), async || !backend
            .is_ejected(now_millis()))
        .await,
        "hang guard: the first ejection ended"
    );
    let before = now_millis();
    until_ejected(first).await;
    let after = now_millis();
    let second = ejected_until(&backend);
    assert!(
        (before + 2 * base..=after + 2 * base).contains(&second),
        "the second ejection lasts {} ms: ends at {second}, began within {before}..={after}",
        2 * base
    );
}

#[tokio::test]
async fn five_hundreds_count_against_a_backend_when_configured() {
    let (a, b) = (spawn_backend("a").await, spawn_backend("b").await);
    b.behaviour.status.store(500, Ordering::SeqCst);
    let mut config = config(&[&a, &b]);
    config.passive.count_5xx = true;
    config.passive.failures = 2.try_into().unwrap();
    // Far longer than the test: the ejection cannot run out while it is observed.
    config.passive.base_ejection = Duration::from_secs(60);
    let balancer = Running::start(config).await;
    spread_any(balancer.addr, 6).await;
    assert_eq!(b.hits(), 2, "b had its turns until its second 500");
    spread_any(balancer.addr, 6).await;
    assert_eq!(b.hits(), 2, "b is ejected after two 500s");
}

async fn spread_any(addr: std::net::SocketAddr, n: usize) {
    for _ in 0..n {
        get(addr, "/").await;
    }
}
