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
    let report = run_loadgen(&["-c", "4", "-d", "700ms", &url]).await;
    assert!(report.requests >= 1, "{} requests", report.requests);
    // Closed workers never end by themselves: only the deadline stopped this run, and the
    // report's duration is the deadline, however late the machine noticed it.
    assert_eq!(report.stopped_by, loadgen::StopReason::Duration);
    assert_eq!(report.duration_s, 0.7);
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
    assert_eq!(report.duration_s, 0.5);
    // One connection, 50 ms per answer at the least: no more than ten fit in 500 ms.
    assert!(report.requests <= 10, "{} requests", report.requests);
}

#[tokio::test]
async fn method_headers_and_body_are_sent() {
    let body_file = std::env::temp_dir().join(format!("loadgen-body-{}", std::process::id()));
    std::fs::write(&body_file, "from a file").expect("write body file");
    let body_arg = format!("@{}", body_file.display());
    for (transport_args, body, expected_body) in [
        (&[][..], "hello", "hello"),
        (&["--sessions", "1"][..], body_arg.as_str(), "from a file"),
    ] {
        let server = spawn_server(instance("solo")).await;
        let url = format!("{}submit?x=1", server.url());
        let mut args = vec![
            "-m",
            "PUT",
            "-H",
            "X-Test: yes",
            "--body",
            body,
            "--no-keepalive",
            "-c",
            "2",
            "-n",
            "20",
        ];
        args.extend_from_slice(transport_args);
        args.push(&url);
        let report = run_loadgen(&args).await;
        assert_eq!(report.responses, 20);
        assert_eq!(server.requests(), 20);
        let request = server.last_request();
        let lower = request.to_ascii_lowercase();
        assert!(
            request.starts_with("PUT /submit?x=1 HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(lower.contains("x-test: yes\r\n"), "{request}");
        assert!(lower.contains("connection: close\r\n"), "{request}");
        assert!(
            lower.contains(&format!("host: {}\r\n", server.addr)),
            "{request}"
        );
        assert!(
            request.ends_with(&format!("\r\n\r\n{expected_body}")),
            "{request}"
        );
    }
    let _ = std::fs::remove_file(&body_file);
}
