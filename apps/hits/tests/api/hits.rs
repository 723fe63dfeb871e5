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
        metrics.contains("hits_recorded_total{instance=\"cache-1\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "hits_http_requests_total{instance=\"cache-1\",route=\"/\",status=\"200\"} 5"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "hits_http_request_duration_seconds_count{instance=\"cache-1\",route=\"/\"} 5"
        ),
        "{metrics}"
    );
    let hits = metric(&metrics, "hits_cache_hits_total");
    let misses = metric(&metrics, "hits_cache_misses_total");
    assert!(misses >= 1, "the first lookup misses: {metrics}");
    assert!(hits >= 1, "later lookups are served by Redis: {metrics}");
    let keys = redis.command("KEYS hits:window:*").unwrap();
    assert!(
        keys.contains("hits:window:v1:"),
        "the window is cached in Redis: {keys}"
    );
}

pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|line| line.starts_with(name) && line.as_bytes().get(name.len()) == Some(&b'{'))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} not found in:\n{text}"))
}
