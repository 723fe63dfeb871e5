//! `/metrics` speaks the format the scraper asks for, and labels stay bounded whatever the
//! clients send.

use crate::helpers::*;

/// What Prometheus 3 sends when it scrapes with its default protocols.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

async fn scrape(app: &TestApp, accept: Option<&str>) -> (String, String) {
    let mut request = app.client.get(app.url("/metrics"));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await.expect("request sent");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["vary"], "accept");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    (content_type, response.text().await.unwrap())
}

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_text_by_default_openmetrics_when_asked() {
    let (db, redis) = fresh_backends();
    let app = spawn_app(&db, &redis.url(), "metrics-1").await;
    assert_eq!(app.post("/api/hits").await.status(), 200);

    let (content_type, text) = scrape(&app, None).await;
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    for line in [
        "# TYPE hits_http_requests_total counter",
        r#"hits_http_requests_total{instance_id="metrics-1",route="/api/hits",status="200"} 1"#,
        "# TYPE hits_http_request_duration_seconds histogram",
        r#"hits_http_request_duration_seconds_count{instance_id="metrics-1",route="/api/hits"} 1"#,
        r#"hits_http_request_duration_seconds_bucket{instance_id="metrics-1",route="/api/hits",le="+Inf"} 1"#,
        r#"hits_recorded_total{instance_id="metrics-1"} 1"#,
        r#"hits_write_batches_total{instance_id="metrics-1"} 1"#,
    ] {
        assert!(has_line(&text, line), "no line {line} in:\n{text}");
    }
    assert!(!text.contains("# EOF"), "{text}");

    let (content_type, text) = scrape(&app, Some(PROMETHEUS_ACCEPT)).await;
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    for line in [
        "# TYPE hits_http_requests counter",
        r#"hits_http_requests_total{instance_id="metrics-1",route="/metrics",status="200"} 1"#,
        "# UNIT hits_http_request_duration_seconds seconds",
        r#"hits_recorded_total{instance_id="metrics-1"} 1"#,
    ] {
        assert!(has_line(&text, line), "no line {line} in:\n{text}");
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_paths_never_become_label_values() {
    let (db, redis) = fresh_backends();
    let app = spawn_app(&db, &redis.url(), "metrics-2").await;
    for i in 0..3 {
        let path = format!("/probe-{i}/wp-login.php");
        assert_eq!(app.get(&path).await.status(), 404, "{path}");
    }
    let response = app
        .client
        .delete(app.url("/api/hits"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);

    let (_, text) = scrape(&app, None).await;
    assert!(
        has_line(
            &text,
            r#"hits_http_requests_total{instance_id="metrics-2",route="unmatched",status="404"} 3"#
        ),
        "the three unknown paths share one series:\n{text}"
    );
    assert!(
        has_line(
            &text,
            r#"hits_http_requests_total{instance_id="metrics-2",route="/api/hits",status="405"} 1"#
        ),
        "a wrong method is labelled with the route it missed:\n{text}"
    );
    assert!(!text.contains("probe-"), "{text}");
}
