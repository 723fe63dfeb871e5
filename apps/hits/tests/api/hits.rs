//! A hit is counted and shown with the instance that served it.

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_load_is_one_hit_shown_with_the_instance_id() {
    let (db, redis) = fresh_backends();
    let app = spawn_app(&db, &redis.url(), "web-1").await;

    let response = app.get("/").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-instance-id"], "web-1");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = response.text().await.unwrap();
    assert!(
        page.contains("Served by instance <code id=\"instance\">web-1</code>"),
        "{page}"
    );
    assert!(page.contains("<div id=\"total\">1<"), "{page}");

    let second = app.get("/").await.text().await.unwrap();
    assert!(
        second.contains("<div id=\"total\">2<"),
        "reloading is a hit: {second}"
    );
    assert!(second.contains("<div id=\"last24h\">2<"), "{second}");

    let stats = app.stats().await;
    assert_eq!(
        stats,
        StatsJson {
            instance_id: "web-1".into(),
            total: 2,
            last_24h: 2,
            by_instance: [("web-1".to_owned(), 2)].into(),
        }
    );
    assert_eq!(app.stats().await.total, 2, "GET /api/hits records nothing");
    assert_eq!(
        rows_in_hits(&db).await,
        2,
        "each hit is a row in PostgreSQL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_api_hits_records_one_hit_and_answers_json() {
    let (db, redis) = fresh_backends();
    let app = spawn_app(&db, &redis.url(), "api-1").await;

    let response = app.post("/api/hits").await;
    assert_eq!(response.status(), 200);
    let json: serde_json::Value = response.json().await.unwrap();
    for key in ["instance_id", "total", "last_24h", "by_instance"] {
        assert!(json.get(key).is_some(), "key {key} in {json}");
    }
    assert_eq!(json["total"], 1);
    assert_eq!(json["by_instance"]["api-1"], 1);
    assert_eq!(rows_in_hits(&db).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_serves_the_window_and_metrics_count_it() {
    let (db, redis) = fresh_backends();
    let app = spawn_app(&db, &redis.url(), "cache-1").await;
    for _ in 0..5 {
        assert_eq!(app.get("/").await.status(), 200);
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("hits_recorded_total{instance_id=\"cache-1\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "hits_http_requests_total{instance_id=\"cache-1\",route=\"/\",status=\"200\"} 5"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "hits_http_request_duration_seconds_count{instance_id=\"cache-1\",route=\"/\"} 5"
        ),
        "{metrics}"
    );
    let hits = metric(&metrics, "hits_cache_hits_total");
    let misses = metric(&metrics, "hits_cache_misses_total");
    assert!(misses >= 1, "the first lookup misses: {metrics}");
    assert!(hits >= 1, "later lookups are served by Redis: {metrics}");
    let keys = redis.command("KEYS hits:*:window:v1:*").unwrap();
    assert!(
        keys.contains(":window:v1:"),
        "the window is cached in Redis: {keys}"
    );
}

/// Two deployments (two databases) sharing one Redis: each shows its own 24-hour figure,
/// while two instances of one deployment share one cache entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_sharing_one_redis_keep_their_own_figures() {
    use sqlx::Connection;
    let redis = testkit::Redis::start();
    let (db_a, db_b) = (
        testkit::Postgres::shared().create_database(),
        testkit::Postgres::shared().create_database(),
    );
    let a1 = spawn_app(&db_a, &redis.url(), "a-1").await;
    let a2 = spawn_app(&db_a, &redis.url(), "a-2").await;
    let b = spawn_app(&db_b, &redis.url(), "b-1").await;
    // Closed minutes of the window (the part cached in Redis), different in each database.
    for (url, hits) in [(&db_a, 100), (&db_b, 7)] {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(
            "INSERT INTO hit_minutes (minute, instance_id, shard, hits)
             VALUES (date_trunc('minute', now()) - interval '10 minutes', 'old', 0, $1)",
        )
        .bind(hits as i64)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    assert_eq!(a1.stats().await.last_24h, 100);
    assert_eq!(
        b.stats().await.last_24h,
        7,
        "not deployment A's cached figure"
    );
    assert_eq!(a2.stats().await.last_24h, 100);
    let keys = redis.command("KEYS hits:*:window:v1:*").unwrap();
    let mut deployments: Vec<&str> = keys
        .lines()
        .filter_map(|key| key.split(':').nth(1))
        .collect();
    deployments.sort_unstable();
    deployments.dedup();
    assert_eq!(deployments.len(), 2, "one namespace per database: {keys}");
}

pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|line| line.starts_with(name) && line.as_bytes().get(name.len()) == Some(&b'{'))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} not found in:\n{text}"))
}
