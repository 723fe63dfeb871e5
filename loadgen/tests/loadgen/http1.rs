//! The lean HTTP/1.1 transport against servers that frame their responses in every way
//! HTTP/1.1 allows, and some ways it does not.

use crate::helpers::{Behavior, run_loadgen, spawn_server};

fn raw(response: &str, close: bool) -> Behavior {
    Behavior::Raw {
        response: response.as_bytes().to_vec(),
        close,
    }
}

#[tokio::test]
async fn chunked_responses_are_read_exactly_to_their_end() {
    let server = spawn_server(raw(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Instance-Id: chunky\r\n\r\n\
         4\r\nwiki\r\n5;ext=1\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\n",
        false,
    ))
    .await;
    let url = server.url();
    let report = run_loadgen(&["-c", "1", "-n", "20", &url]).await;
    assert_eq!(report.run.transport, "http1");
    assert_eq!(report.status.get("200"), Some(&20), "{:?}", report.errors);
    assert_eq!(report.groups.get("chunky"), Some(&20));
    assert_eq!(report.failures, 0);
}

#[tokio::test]
async fn close_delimited_bodies_end_at_the_close() {
    let server = spawn_server(raw(
        "HTTP/1.1 200 OK\r\nX-Instance-Id: until-close\r\n\r\nall of this is body",
        true,
    ))
    .await;
    let url = server.url();
    let report = run_loadgen(&["-c", "2", "-n", "10", &url]).await;
    assert_eq!(report.status.get("200"), Some(&10), "{:?}", report.errors);
    assert_eq!(report.groups.get("until-close"), Some(&10));
}

#[tokio::test]
async fn interim_responses_are_skipped() {
    let server = spawn_server(raw(
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
         HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
        false,
    ))
    .await;
    let url = server.url();
    let report = run_loadgen(&["-c", "1", "-n", "5", &url]).await;
    assert_eq!(report.status.get("201"), Some(&5), "{:?}", report.errors);
    assert!(!report.status.contains_key("100"));
}

#[tokio::test]
async fn head_responses_have_no_body_whatever_their_length_says() {
    let server = spawn_server(raw(
        "HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n",
        false,
    ))
    .await;
    let url = server.url();
    // A client waiting for the 1000 bytes would time out on each request.
    let report = run_loadgen(&["-m", "HEAD", "-c", "1", "-n", "5", "--timeout", "5s", &url]).await;
    assert_eq!(report.status.get("200"), Some(&5), "{:?}", report.errors);
    assert!(server.last_request().starts_with("HEAD / HTTP/1.1\r\n"));
}

#[tokio::test]
async fn idle_connections_closed_by_the_server_are_replaced_not_counted() {
    // Keep-alive in words, but the server closes after each response: the next request on
    // that connection finds it closed before any answer, and goes out on a new one.
    let server = spawn_server(raw("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", true)).await;
    let url = server.url();
    let report = run_loadgen(&["-c", "1", "-n", "20", &url]).await;
    assert_eq!(report.status.get("200"), Some(&20), "{:?}", report.errors);
    assert_eq!(report.failures, 0);
}

#[tokio::test]
async fn malformed_and_truncated_responses_are_classified() {
    let garbage = spawn_server(raw("HTTQ/1.1 200 OK\r\n\r\n", false)).await;
    let url = garbage.url();
    let report = run_loadgen(&["-c", "1", "-n", "3", &url]).await;
    assert_eq!(report.errors["protocol"], 3, "{:?}", report.errors);

    let bad_length = spawn_server(raw("HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n", false)).await;
    let url = bad_length.url();
    let report = run_loadgen(&["-c", "1", "-n", "3", &url]).await;
    assert_eq!(report.errors["protocol"], 3, "{:?}", report.errors);

    let truncated = spawn_server(raw(
        "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
        true,
    ))
    .await;
    let url = truncated.url();
    let report = run_loadgen(&["-c", "1", "-n", "3", &url]).await;
    assert_eq!(report.errors["closed"], 3, "{:?}", report.errors);

    let bad_chunks = spawn_server(raw(
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        false,
    ))
    .await;
    let url = bad_chunks.url();
    let report = run_loadgen(&["-c", "1", "-n", "3", &url]).await;
    assert_eq!(report.errors["body"], 3, "{:?}", report.errors);

    let head_cut = spawn_server(raw("HTTP/1.1 200 OK\r\ncontent-le", true)).await;
    let url = head_cut.url();
    let report = run_loadgen(&["-c", "1", "-n", "3", &url]).await;
    assert_eq!(report.errors["closed"], 3, "{:?}", report.errors);
}
