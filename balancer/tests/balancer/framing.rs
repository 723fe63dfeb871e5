//! Request smuggling and open-proxy attempts, sent as raw bytes: each is refused with a
//! 4xx and none reaches a backend.

use crate::helpers::*;

async fn refused(raw_request: &str, expected: &str) {
    let a = spawn_backend("a").await;
    let balancer = Running::start(config(&[&a])).await;
    let answer = raw(balancer.addr, raw_request.as_bytes()).await;
    assert!(
        answer.starts_with(expected),
        "{raw_request:?} got {answer:?}"
    );
    assert_eq!(a.hits(), 0, "{raw_request:?} reached the backend");
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused() {
    refused(
        "POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n",
        "HTTP/1.1 400",
    )
    .await;
    refused(
        "POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        "HTTP/1.1 400",
    )
    .await;
}

#[tokio::test]
async fn conflicting_content_lengths_are_refused() {
    refused(
        "POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        "HTTP/1.1 400",
    )
    .await;
    refused(
        "POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4, 5\r\n\r\nabcde",
        "HTTP/1.1 400",
    )
    .await;
}

#[tokio::test]
async fn malformed_chunking_is_refused() {
    refused("POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", "HTTP/1.1 400").await;
    refused(
        "POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        "HTTP/1.1 400",
    )
    .await;
    refused(
        "POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        "HTTP/1.1 400",
    )
    .await;
    refused(
        "POST / HTTP/1.0\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "HTTP/1.1 400",
    )
    .await;
}

#[tokio::test]
async fn missing_or_doubled_host_is_refused() {
    refused("GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 400").await;
    refused(
        "GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
        "HTTP/1.1 400",
    )
    .await;
}

#[tokio::test]
async fn the_balancer_is_not_an_open_proxy() {
    refused(
        "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
        "HTTP/1.1 400",
    )
    .await;
    refused(
        "GET http://example.com/ HTTP/1.1\r\nHost: app.test\r\n\r\n",
        "HTTP/1.1 400",
    )
    .await;
    refused(
        // Connection: close because a refused CONNECT leaves the connection open for more
        // requests, and `raw` reads until the balancer closes.
        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n",
        "HTTP/1.1 405",
    )
    .await;
}

#[tokio::test]
async fn absolute_form_for_a_configured_server_name_is_served() {
    let a = spawn_backend("a").await;
    let mut config = config(&[&a]);
    config.forwarding.server_names = vec!["app.test".into()];
    let balancer = Running::start(config).await;
    let answer = raw(
        balancer.addr,
        b"GET http://app.test/x HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Forwarded in origin-form.
    assert!(answer.contains("GET /x\n"), "{answer}");
}

#[tokio::test]
async fn chunking_that_breaks_mid_body_is_a_400_and_the_backend_never_gets_a_whole_request() {
    let a = spawn_backend("a").await;
    let balancer = Running::start(config(&[&a])).await;
    let answer = raw(
        balancer.addr,
        b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nmore\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    // The head and first chunk had been forwarded; then the backend connection was aborted,
    // so the backend's body read failed and it never saw a complete request.
    assert!(a.body_bytes.load(std::sync::atomic::Ordering::SeqCst) <= 5);
}
