use std::time::Duration;

use crate::helpers::{Behavior, instance, run_loadgen, spawn_server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_holds_the_target_rate() {
    let server = spawn_server(instance("solo")).await;
    let url = server.url();
    // 400 requests at 200 per second: the last one is due at 1.995 s. A closed loop would
    // finish in milliseconds; a generator that falls behind would take longer.
    let report = run_loadgen(&["--rate", "200", "-n", "400", "-c", "10", &url]).await;
    assert_eq!(report.requests, 400);
    assert_eq!(report.run.model, "open");
    assert!(report.duration_s >= 1.99, "{} s", report.duration_s);
    assert!(
        (report.throughput - 200.0).abs() / 200.0 < 0.04,
        "{} req/s",
        report.throughput
    );
    // A fast server keeps up: latency from the intended time stays close to service time.
    assert!(report.latency_ms.p50 < 50.0, "{:?}", report.latency_ms);
}

#[tokio::test]
async fn open_model_with_a_duration_stops_at_the_deadline() {
    let server = spawn_server(instance("solo")).await;
    let url = server.url();
    let report = run_loadgen(&["--rate", "100", "-d", "1s", "-c", "5", &url]).await;
    assert_eq!(report.stopped_by, loadgen::StopReason::Duration);
    // 100 are due before the deadline; one still in flight at the deadline is dropped.
    assert!((90..=100).contains(&report.requests), "{}", report.requests);
}

#[tokio::test]
async fn slow_server_latency_counts_from_the_intended_send_time() {
    let server = spawn_server(Behavior::Respond {
        headers: Vec::new(),
        delay: Duration::from_millis(100),
    })
    .await;
    let url = server.url();
    // 50 req/s asked of one connection that can do 10: each request waits for the ones
    // before it, and the corrected latency must show that wait.
    let report = run_loadgen(&["--rate", "50", "-n", "12", "-c", "1", &url]).await;
    assert_eq!(report.requests, 12);
    let corrected = report.latency_ms.p99;
    let uncorrected = report.service_time_ms.p99;
    assert!(
        (100.0..300.0).contains(&uncorrected),
        "service {uncorrected}"
    );
    assert!(
        corrected > 2.0 * uncorrected,
        "corrected p99 {corrected} ms vs uncorrected {uncorrected} ms"
    );
    // The 12th request was due at 220 ms and finished after about 1200 ms.
    assert!(corrected > 800.0, "corrected p99 {corrected}");
}

#[tokio::test]
async fn ramp_sends_the_planned_count() {
    let server = spawn_server(instance("solo")).await;
    let url = server.url();
    // (100 + 300) / 2 * 1 s = 200 requests over the ramp; the last is due just before 1 s.
    let report = run_loadgen(&[
        "--rate", "100:300", "--ramp", "1s", "-n", "200", "-c", "10", &url,
    ])
    .await;
    assert_eq!(report.requests, 200);
    assert!(report.duration_s >= 0.98, "{} s", report.duration_s);
    assert!(report.duration_s < 1.5, "{} s", report.duration_s);
    assert_eq!(report.run.rate, Some((100.0, 300.0)));
}
