//! Every route answers with `X-Instance-Id`; health and readiness say what they should.

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_carries_the_instance_header() {
    let (db, redis) = fresh_backends();
    let app = spawn_app(&db, &redis.url(), "hdr-1").await;
    let routes = [
        ("GET", "/", 200),
        ("GET", "/api/hits", 200),
        ("POST", "/api/hits", 200),
        ("GET", "/healthz", 200),
        ("GET", "/readyz", 200),
        ("GET", "/metrics", 200),
        ("GET", "/no/such/page", 404),
        ("DELETE", "/api/hits", 405),
    ];
    for (method, path, status) in routes {
        let response = app
            .client
            .request(method.parse().unwrap(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
        assert_eq!(
            response.headers()["x-instance-id"],
            "hdr-1",
            "{method} {path}"
        );
        assert!(
            response.headers().contains_key("x-request-id"),
            "{method} {path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_reports_both_dependencies() {
    let (db, mut redis) = fresh_backends();
    let app = spawn_app(&db, &redis.url(), "ready-1").await;
    let body: serde_json::Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(body["postgres"], "up");
    assert_eq!(body["redis"], "up");

    redis.stop();
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 200, "Redis is optional for readiness");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["redis"], "down");
}
