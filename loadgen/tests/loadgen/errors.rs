use crate::helpers::{Behavior, refusing_port, run_loadgen, spawn_server};

#[tokio::test]
async fn refused_connections_are_counted_not_fatal() {
    let refusing = refusing_port();
    let url = refusing.url();
    let report = run_loadgen(&["-c", "2", "-n", "6", &url]).await;
    assert_eq!(report.requests, 6);
    assert_eq!(report.errors["refused"], 6, "{:?}", report.errors);
    assert_eq!(report.failures, 6);
    assert!(report.groups.is_empty());
}

#[tokio::test]
async fn resets_are_classified() {
    let server = spawn_server(Behavior::Reset).await;
    let url = server.url();
    let report = run_loadgen(&["-c", "1", "-n", "4", &url]).await;
    assert_eq!(report.requests, 4);
    assert_eq!(report.errors["reset"], 4, "{:?}", report.errors);
}

#[tokio::test]
async fn timeouts_are_classified() {
    let server = spawn_server(Behavior::Silent).await;
    let url = server.url();
    // The server never answers nor closes first: only loadgen's timeout ends these.
    let report = run_loadgen(&["-c", "2", "-n", "2", "--timeout", "300ms", &url]).await;
    assert_eq!(report.requests, 2);
    assert_eq!(report.errors["timeout"], 2, "{:?}", report.errors);
}

#[tokio::test]
async fn errors_are_classified_on_the_reqwest_path_too() {
    // `--sessions` needs cookie jars, so these requests go through reqwest.
    let refusing = refusing_port();
    let url = refusing.url();
    let report = run_loadgen(&["--sessions", "1", "-n", "3", &url]).await;
    assert_eq!(report.run.transport, "reqwest");
    assert_eq!(report.errors["refused"], 3, "{:?}", report.errors);

    let reset = spawn_server(Behavior::Reset).await;
    let url = reset.url();
    let report = run_loadgen(&["--sessions", "1", "-n", "3", &url]).await;
    assert_eq!(report.errors["reset"], 3, "{:?}", report.errors);

    let silent = spawn_server(Behavior::Silent).await;
    let url = silent.url();
    let report = run_loadgen(&["--sessions", "2", "-n", "2", "--timeout", "300ms", &url]).await;
    assert_eq!(report.errors["timeout"], 2, "{:?}", report.errors);
}

#[tokio::test]
async fn the_timeout_counts_per_request_not_per_worker() {
    // Each answer takes 50 ms, far within 2 s even on a loaded machine, but fifty in a row
    // on one connection take longer than that: none may be cut short by a deadline meant
    // for an earlier request.
    let server = spawn_server(Behavior::Respond {
        headers: Vec::new(),
        delay: std::time::Duration::from_millis(50),
    })
    .await;
    let url = server.url();
    let report = run_loadgen(&["-c", "1", "-n", "50", "--timeout", "2s", &url]).await;
    assert_eq!(report.errors["timeout"], 0, "{:?}", report.errors);
    assert_eq!(report.status.get("200"), Some(&50));
}
