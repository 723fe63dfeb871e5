//! Drives the built binary the way scripts do.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::{eventually, instance, spawn_server};

const BINARY: &str = env!("CARGO_BIN_EXE_loadgen");

#[tokio::test]
async fn json_report_has_the_documented_keys() {
    let server = spawn_server(instance("app-1")).await;
    let url = server.url();
    let output = tokio::process::Command::new(BINARY)
        .args(["--json", "-c", "2", "-n", "25", "--threads", "1", &url])
        .env_remove("LOADGEN_URL")
        .output()
        .await
        .expect("run loadgen");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    for key in [
        "requests",
        "duration_s",
        "throughput",
        "latency_ms",
        "status",
        "errors",
        "groups",
    ] {
        assert!(report.get(key).is_some(), "missing {key} in {stdout}");
    }
    for key in ["p50", "p90", "p99", "p999", "max"] {
        assert!(report["latency_ms"][key].is_number(), "latency_ms.{key}");
    }
    assert_eq!(report["requests"], 25);
    assert_eq!(report["status"]["200"], 25);
    assert_eq!(report["groups"]["app-1"], 25);
    assert_eq!(report["errors"]["refused"], 0);
}

#[test]
fn bad_flags_are_usage_errors() {
    let output = Command::new(BINARY)
        .args(["--connections", "many", "http://127.0.0.1:9/"])
        .env_remove("LOADGEN_URL")
        .output()
        .expect("run loadgen");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--connections"), "{stderr}");

    let output = Command::new(BINARY)
        .args(["--rate", "10:20", "http://127.0.0.1:9/"])
        .output()
        .expect("run loadgen");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--ramp"));
}

#[tokio::test]
async fn interrupt_prints_the_partial_report() {
    let server = spawn_server(instance("app-1")).await;
    let url = server.url();
    let child = tokio::process::Command::new(BINARY)
        .args(["--json", "-q", "-c", "2", "-d", "60s", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loadgen");
    // The event: the run is under way (its requests reach the server), so loadgen listens
    // for signals, since it does so before sending anything.
    const SEEN: u64 = 20;
    assert!(
        eventually(|| server.requests() >= SEEN).await,
        "loadgen never got going"
    );
    let pid = child.id().expect("running").to_string();
    let status = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    // The run would last 60 s; only the interrupt can end it within this hang guard.
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("loadgen stops after SIGINT")
        .expect("wait");
    assert!(output.status.success(), "{output:?}");
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("partial report is JSON");
    assert_eq!(report["stopped_by"], "interrupted");
    // What the server had received is in the report, but for the two requests (one per
    // connection) that may have been in flight at the interrupt.
    let requests = report["requests"].as_u64().unwrap_or(0);
    assert!(requests >= SEEN - 2, "{requests} requests in the report");
}
