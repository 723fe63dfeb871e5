//! The open model: requests go out on their schedule, never early, and latency counts from
//! the intended send time. Only what the schedule makes certain is asserted: a loaded machine
//! may send late, never early, so the figures checked here cannot depend on its speed.

use std::time::Duration;

use crate::helpers::{Behavior, instance, run_loadgen, spawn_server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_keeps_to_its_schedule() {
    let server = spawn_server(instance("solo")).await;
    let url = server.url();
    // 400 requests at 200 per second: request i is due at i / 200 s, the last at 1.995 s. A
    // closed loop would finish them all within milliseconds.
    let report = run_loadgen(&["--rate", "200", "-n", "400", "-c", "10", &url]).await;
    assert_eq!(report.requests, 400);
    assert_eq!(server.requests(), 400);
    assert_eq!(report.run.model, "open");
    assert_eq!(report.stopped_by, loadgen::StopReason::Requests);
    assert!(report.duration_s >= 1.99, "{} s", report.duration_s);
    let first = report.timeline.first().expect("a first second");
    assert!(
        first.requests <= 200,
        "only the 200 due in the first second can finish in it: {}",
        first.requests
    );
    assert!(
        (report.throughput - 400.0 / report.duration_s).abs() < 1e-6,
        "throughput {} for 400 in {} s",
        report.throughput,
        report.duration_s
    );
    // Latency counts from the intended time, which is never after the actual send time.
    assert!(
        report.latency_ms.p50 >= report.service_time_ms.p50,
        "{:?} vs {:?}",
        report.latency_ms,
        report.service_time_ms
    );
}

#[tokio::test]
async fn open_model_with_a_duration_stops_at_the_deadline() {
    let server = spawn_server(instance("solo")).await;
    let url = server.url();
    let report = run_loadgen(&["--rate", "100", "-d", "1s", "-c", "5", &url]).await;
    assert_eq!(report.stopped_by, loadgen::StopReason::Duration);
    assert!(report.duration_s <= 1.0, "{} s", report.duration_s);
    // 100 are due before the deadline (the 101st is due at it); none is sent after it.
    assert!(server.requests() <= 100, "{} sent", server.requests());
    assert!((1..=100).contains(&report.requests), "{}", report.requests);
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
    assert!(uncorrected >= 100.0, "service {uncorrected}");
    // The 12th request was due at 220 ms and cannot finish before the twelve answers, one
    // after the other: at least the slowest one plus eleven times 100 ms. So its latency
    // from the intended time exceeds the slowest service time by 880 ms at least, however
    // slow the machine (p99 of twelve samples is the largest; HDR rounds by 0.1%).
    assert!(
        corrected >= uncorrected + 850.0,
        "corrected p99 {corrected} ms vs uncorrected {uncorrected} ms"
    );
}

#[tokio::test]
async fn ramp_sends_the_planned_count() {
    let server = spawn_server(instance("solo")).await;
    let url = server.url();
    // (100 + 300) / 2 * 1 s = 200 requests over the ramp; the last is due at 0.997 s. (The
    // shape of the ramp is checked exactly by the schedule's unit tests.)
    let report = run_loadgen(&[
        "--rate", "100:300", "--ramp", "1s", "-n", "200", "-c", "10", &url,
    ])
    .await;
    assert_eq!(report.requests, 200);
    assert_eq!(server.requests(), 200);
    assert!(report.duration_s >= 0.99, "{} s", report.duration_s);
    assert_eq!(report.run.rate, Some((100.0, 300.0)));
}
