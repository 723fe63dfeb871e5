//! Redis down or slow: nothing fails and counts stay exact. PostgreSQL down: 503, then
//! recovery by itself when it returns.

use crate::helpers::*;
use crate::hits::metric;
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
    const TOTAL: usize = 300;
    // The first two thirds run freely; Redis is stopped once a third is sent, so while the
    // second third is under way. The last third waits until Redis is surely gone.
    const STOP_AT: usize = TOTAL / 3;
    const GATE: usize = 2 * TOTAL / 3;
    let sent = Arc::new(AtomicUsize::new(0));
    let (redis_gone, gone) = tokio::sync::watch::channel(false);

    let mut load = JoinSet::new();
    for _ in 0..8 {
        let (app, sent, mut gone) = (app.clone(), sent.clone(), gone.clone());
        load.spawn(async move {
            let mut ok = 0;
            loop {
                let index = sent.fetch_add(1, Ordering::SeqCst);
                if index >= TOTAL {
                    break;
                }
                if index >= GATE {
                    gone.wait_for(|gone| *gone).await.expect("the test runs");
                }
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
    let a_third_sent = eventually(Duration::from_secs(30), || async {
        sent.load(Ordering::SeqCst) >= STOP_AT
    })
    .await;
    assert!(a_third_sent, "the load never got going");
    tokio::task::block_in_place(|| redis.stop());
    redis_gone.send_replace(true);
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
    // Every hit sent after the stop found Redis unavailable, and said so.
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let errors = metric(&metrics, "hits_cache_errors_total");
    assert!(
        errors >= (TOTAL - GATE) as u64,
        "{errors} cache errors for {} hits without Redis",
        TOTAL - GATE
    );

    // Back again: the lazy connection reconnects and the cache is used once more.
    tokio::task::block_in_place(|| redis.restart());
    let recovered = eventually(Duration::from_secs(30), || async {
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
    let cache_errors = || async {
        let metrics = app.get("/metrics").await.text().await.unwrap();
        metric(&metrics, "hits_cache_errors_total")
    };
    let errors_before = cache_errors().await;

    const STALLED: u64 = 10;
    {
        // Redis is stopped dead until `_stalled` is dropped: every request below is answered
        // while it is stalled, so none of them waited for it to come back.
        let _stalled = tokio::task::block_in_place(|| redis.freeze());
        for i in 0..STALLED {
            let response = app.get("/").await;
            assert_eq!(response.status(), 200, "request {i} while Redis is stalled");
        }
        assert_eq!(
            cache_errors().await - errors_before,
            STALLED,
            "each hit found Redis stalled (or recently so) and went on without it"
        );
    }
    assert_eq!(app.stats().await.total, STALLED as i64 + 1);
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
