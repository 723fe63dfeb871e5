//! Redis down or slow: nothing fails and counts stay exact. PostgreSQL down: 503, then
//! recovery by itself when it returns.

use crate::helpers::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use testkit::{Postgres, Redis};
use tokio::task::JoinSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_load_fails_no_request_and_counts_stay_exact() {
    let (db, mut redis) = fresh_backends();
    let app =
        Arc::new(spawn_app_with(&db, &redis.url(), "r-1", &[("REDIS_TIMEOUT_MS", "100")]).await);
    const TOTAL: usize = 400;
    let sent = Arc::new(AtomicUsize::new(0));

    let mut load = JoinSet::new();
    for _ in 0..8 {
        let (app, sent) = (app.clone(), sent.clone());
        load.spawn(async move {
            let mut ok = 0;
            while sent.fetch_add(1, Ordering::SeqCst) < TOTAL {
                let response = app.get("/").await;
                assert_eq!(
                    response.status(),
                    200,
                    "no request fails while Redis goes away"
                );
                ok += 1;
            }
            ok
        });
    }
    let started = Instant::now();
    while sent.load(Ordering::SeqCst) < TOTAL / 3 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::task::block_in_place(|| redis.stop());
    let mut answered = 0;
    while let Some(ok) = load.join_next().await {
        answered += ok.expect("load worker");
    }
    assert_eq!(answered, TOTAL);

    let stats = app.stats().await;
    assert_eq!(stats.total, TOTAL as i64);
    assert_eq!(stats.last_24h, TOTAL as i64);
    let body: serde_json::Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(body["redis"], "down");

    // Back again: the lazy connection reconnects and the cache is used once more.
    tokio::task::block_in_place(|| redis.restart());
    let recovered = eventually(Duration::from_secs(15), || async {
        let body: serde_json::Value = app.get("/readyz").await.json().await.unwrap();
        body["redis"] == "up"
    })
    .await;
    assert!(recovered, "the app reconnects to Redis by itself");
    assert_eq!(app.get("/").await.status(), 200);
    let keys = redis.command("KEYS hits:*:window:v1:*").unwrap();
    assert!(
        keys.contains(":window:v1:"),
        "the cache is filled again: {keys}"
    );
    assert_eq!(app.stats().await.total, TOTAL as i64 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_costs_a_bounded_wait_not_a_failure() {
    let (db, redis) = fresh_backends();
    let app = spawn_app_with(&db, &redis.url(), "slow-1", &[("REDIS_TIMEOUT_MS", "100")]).await;
    assert_eq!(app.get("/").await.status(), 200);

    // DEBUG SLEEP stalls the whole server, as a swapping or overloaded Redis would.
    let port = redis.port();
    let stall = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"DEBUG SLEEP 3\r\n").unwrap();
        let mut buf = [0u8; 16];
        let _ = s.read(&mut buf);
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..10 {
        let started = Instant::now();
        let response = app.get("/").await;
        assert_eq!(response.status(), 200, "request {i} while Redis is stalled");
        // The configured bound is 100 ms; Redis stalls for 3 s. Far below 3 s proves the bound.
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "request {i} waited {:?}",
            started.elapsed()
        );
    }
    stall.join().unwrap();
    assert_eq!(app.stats().await.total, 11);
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_answers_503_and_recovers_when_it_returns() {
    let mut pg = Postgres::start();
    let db = pg.create_database();
    let redis = Redis::start();
    let app = spawn_app(&db, &redis.url(), "pg-1").await;
    let mut answered_200 = 0i64;
    for _ in 0..3 {
        assert_eq!(app.get("/").await.status(), 200);
        answered_200 += 1;
    }

    tokio::task::block_in_place(|| pg.stop());
    let response = app.get("/").await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["x-instance-id"], "pg-1");
    assert_eq!(response.headers()["retry-after"], "1");
    let page = response.text().await.unwrap();
    assert!(page.contains("Service unavailable"), "{page}");
    assert_eq!(app.get("/readyz").await.status(), 503);
    assert_eq!(app.get("/api/hits").await.status(), 503);
    assert_eq!(
        app.get("/healthz").await.status(),
        200,
        "the process itself is alive"
    );

    tokio::task::block_in_place(|| pg.restart());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut recovered = false;
    while Instant::now() < deadline {
        let status = app.get("/").await.status();
        if status == 200 {
            answered_200 += 1;
            recovered = true;
            break;
        }
        assert_eq!(status, 503, "only 503 while the database comes back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the app recovers by itself within 30 s");
    assert_eq!(app.get("/readyz").await.status(), 200);
    let stats = app.stats().await;
    assert_eq!(
        stats.total, answered_200,
        "every hit answered 200 is stored, and only those"
    );
    assert_eq!(rows_in_hits(&db).await, answered_200);
}
