use crate::helpers::{instance, run_loadgen, spawn_server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_requests_are_sent_exactly_once_each() {
    let server = spawn_server(instance("solo")).await;
    let url = server.url();
    let report = run_loadgen(&["-c", "7", "-n", "1000", &url]).await;
    assert_eq!(report.requests, 1000);
    assert_eq!(report.responses, 1000);
    assert_eq!(server.requests(), 1000);
    assert_eq!(report.status.get("200"), Some(&1000));
    assert_eq!(report.groups.get("solo"), Some(&1000));
    assert_eq!(report.stopped_by, loadgen::StopReason::Requests);
    assert_eq!(report.run.transport, "http1");
    assert!(report.latency_ms.p50 > 0.0 && report.latency_ms.max >= report.latency_ms.p99);
    let counted: u64 = report.timeline.iter().map(|second| second.requests).sum();
    assert_eq!(
        counted, 1000,
        "every request lands in the per-second series"
    );
}

#[tokio::test]
async fn duration_bounds_a_closed_run() {
    let server = spawn_server(instance("solo")).await;
    let url = server.url();
    let started = std::time::Instant::now();
    let report = run_loadgen(&["-c", "4", "-d", "700ms", &url]).await;
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(3), "took {took:?}");
    assert!(report.requests > 10, "{} requests", report.requests);
    assert_eq!(report.stopped_by, loadgen::StopReason::Duration);
    assert!(
        (report.duration_s - 0.7).abs() < 0.1,
        "{}",
        report.duration_s
    );
}

#[tokio::test]
async fn max_duration_cuts_an_endless_n_run() {
    let server = spawn_server(crate::helpers::Behavior::Respond {
        headers: Vec::new(),
        delay: std::time::Duration::from_millis(50),
    })
    .await;
    let url = server.url();
    let report = run_loadgen(&["-c", "1", "-n", "1000000", "--max-duration", "500ms", &url]).await;
    assert_eq!(report.stopped_by, loadgen::StopReason::MaxDuration);
    assert!(report.requests < 20, "{} requests", report.requests);
}

#[tokio::test]
async fn method_headers_and_body_are_sent() {
    let server = spawn_server(instance("solo")).await;
    let url = server.url();
    let report = run_loadgen(&[
        "-m",
        "POST",
        "-H",
        "X-Test: yes",
        "--body",
        "hello",
        "--no-keepalive",
        "-c",
        "2",
        "-n",
        "20",
        &url,
    ])
    .await;
    assert_eq!(report.responses, 20);
    assert_eq!(server.requests(), 20);
}
