//! Active health checks (rise/fall, first pass) and passive ejection.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use balancer::backend::Health;

use crate::helpers::*;

#[tokio::test]
async fn a_failing_backend_leaves_within_fall_intervals_and_returns_after_rise() {
    let (a, b) = (spawn_backend("a").await, spawn_backend("b").await);
    let mut config = config(&[&a, &b]);
    config.health.path = Some("/healthz".into());
    config.health.rise = 2.try_into().unwrap();
    config.health.fall = 3.try_into().unwrap();
    let balancer = spawn_balancer(config).await;
    assert_eq!(spread(balancer.addr, 4).await.len(), 2);

    b.behaviour.unhealthy.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let registry = balancer.registry.clone();
    let b_addr = b.addr;
    let b_down = async || {
        registry
            .load()
            .backends
            .iter()
            .any(|x| x.addr == b_addr && x.health() == Health::Down)
    };
    assert!(eventually(Duration::from_secs(3), b_down).await);
    // fall (3) × interval (100 ms) nominally; generous slack for a loaded CI machine.
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        started.elapsed()
    );
    let counts = spread(balancer.addr, 6).await;
    assert_eq!(counts.get("a"), Some(&6), "{counts:?}");

    b.behaviour.unhealthy.store(false, Ordering::SeqCst);
    let b_up = async || {
        registry
            .load()
            .backends
            .iter()
            .any(|x| x.addr == b_addr && x.health() == Health::Up)
    };
    assert!(eventually(Duration::from_secs(3), b_up).await);
    assert_eq!(spread(balancer.addr, 4).await.get("b"), Some(&2));
}

#[tokio::test]
async fn a_backend_gets_traffic_only_after_its_first_passing_check() {
    let (a, b) = (spawn_backend("a").await, spawn_backend("b").await);
    b.behaviour.unhealthy.store(true, Ordering::SeqCst);
    let mut config = config(&[&a, &b]);
    config.health.path = Some("/healthz".into());
    config.health.interval = Duration::from_secs(60);
    let balancer = spawn_balancer(config).await;
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
    let balancer = spawn_balancer(closed).await;
    let answer = get(balancer.addr, "/").await;
    assert_eq!(answer.status, 503);
    assert!(
        answer.body.contains("no healthy backend"),
        "{}",
        answer.body
    );
    let balancer = spawn_balancer(open).await;
    assert_eq!(get(balancer.addr, "/").await.instance(), "a");
}

#[tokio::test]
async fn connect_failures_eject_a_backend_with_growing_backoff_and_requests_still_succeed() {
    let a = spawn_backend("a").await;
    let mut b = spawn_backend("b").await;
    let mut config = config(&[&a, &b]);
    config.passive.failures = 2.try_into().unwrap();
    config.passive.base_ejection = Duration::from_millis(500);
    let balancer = spawn_balancer(config).await;
    b.stop();
    // Connect refusals never reached b, so each is retried on a: no client sees an error.
    let counts = spread(balancer.addr, 6).await;
    assert_eq!(counts.get("a"), Some(&6), "{counts:?}");
    let b_addr = b.addr;
    let backend = balancer
        .registry
        .load()
        .backends
        .iter()
        .find(|x| x.addr == b_addr)
        .unwrap()
        .clone();
    let now = balancer::backend::now_millis();
    assert!(backend.is_ejected(now), "b is ejected");
    // After the first back-off b is tried again, fails again, and is ejected for longer.
    tokio::time::sleep(Duration::from_millis(550)).await;
    spread(balancer.addr, 4).await;
    assert!(backend.is_ejected(balancer::backend::now_millis()));
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert!(
        backend.is_ejected(balancer::backend::now_millis()),
        "second ejection lasts longer than the first"
    );
}

#[tokio::test]
async fn five_hundreds_count_against_a_backend_when_configured() {
    let (a, b) = (spawn_backend("a").await, spawn_backend("b").await);
    b.behaviour.status.store(500, Ordering::SeqCst);
    let mut config = config(&[&a, &b]);
    config.passive.count_5xx = true;
    config.passive.failures = 2.try_into().unwrap();
    let balancer = spawn_balancer(config).await;
    spread_any(balancer.addr, 6).await;
    let before = b.hits();
    spread_any(balancer.addr, 6).await;
    assert_eq!(b.hits(), before, "b is ejected after two 500s");
}

async fn spread_any(addr: std::net::SocketAddr, n: usize) {
    for _ in 0..n {
        get(addr, "/").await;
    }
}
