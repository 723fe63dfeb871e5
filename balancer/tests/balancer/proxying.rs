//! Proxy behaviour: header rules, error answers, retries, upgrade tunnels.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::*;

#[tokio::test]
async fn hop_by_hop_headers_are_removed_forwarded_headers_set_and_host_kept() {
    let a = spawn_backend("a").await;
    let balancer = Running::start(config(&[&a])).await;
    let answer = send(
        balancer.addr,
        request(
            "/path?q=1",
            &[
                ("connection", "x-private"),
                ("x-private", "secret"),
                ("keep-alive", "timeout=5"),
                ("te", "trailers"),
                ("proxy-authorization", "Basic Zm9vOmJhcg=="),
                ("x-forwarded-for", "6.6.6.6"),
                ("x-real-ip", "6.6.6.6"),
                ("x-app", "kept"),
            ],
        ),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert!(
        answer.body.starts_with("GET /path?q=1\n"),
        "{}",
        answer.body
    );
    assert_eq!(answer.echoed("host").as_deref(), Some("app.test"));
    assert_eq!(answer.echoed("x-app").as_deref(), Some("kept"));
    for gone in ["x-private", "keep-alive", "te", "proxy-authorization"] {
        assert_eq!(answer.echoed(gone), None, "{gone} must not be forwarded");
    }
    // The client is not a trusted proxy: its claims are replaced.
    assert_eq!(
        answer.echoed("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(answer.echoed("x-real-ip").as_deref(), Some("127.0.0.1"));
    assert_eq!(answer.echoed("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        answer.echoed("x-forwarded-host").as_deref(),
        Some("app.test")
    );
}

#[tokio::test]
async fn a_trusted_proxy_chain_is_extended() {
    let a = spawn_backend("a").await;
    let mut config = config(&[&a]);
    config.forwarding.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    let balancer = Running::start(config).await;
    let answer = send(
        balancer.addr,
        request(
            "/",
            &[
                ("x-forwarded-for", "198.51.100.7"),
                ("x-forwarded-proto", "https"),
            ],
        ),
    )
    .await;
    assert_eq!(
        answer.echoed("x-forwarded-for").as_deref(),
        Some("198.51.100.7, 127.0.0.1")
    );
    assert_eq!(answer.echoed("x-real-ip").as_deref(), Some("198.51.100.7"));
    assert_eq!(answer.echoed("x-forwarded-proto").as_deref(), Some("https"));
}

#[tokio::test]
async fn refused_connections_give_502_slow_backends_504() {
    let closed = closed_port();
    let mut config = config(&[]);
    config.backends = vec![closed.addr.to_string().parse().unwrap()];
    let balancer = Running::start(config).await;
    let answer = get(balancer.addr, "/").await;
    assert_eq!(answer.status, 502);
    assert!(answer.body.contains("could not connect"), "{}", answer.body);

    let slow = spawn_backend("slow").await;
    // Holds the request until released: only the response timeout can end it.
    slow.behaviour.hold.store(true, Ordering::SeqCst);
    let mut config = crate::helpers::config(&[&slow]);
    config.timeouts.response_header = Duration::from_millis(200);
    let balancer = Running::start(config).await;
    let answer = get(balancer.addr, "/").await;
    assert_eq!(answer.status, 504);
    assert!(
        answer.body.contains("did not answer in time"),
        "{}",
        answer.body
    );
    assert_eq!(slow.hits(), 1, "a timed-out request is not retried");
    slow.behaviour.hold.store(false, Ordering::SeqCst);
}

/// A backend that reads a request and closes without answering; counts requests.
async fn dropping_backend() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        for _ in 0..100 {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 4096];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await
                && n > 0
            {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn a_request_that_reached_a_backend_is_never_sent_twice_by_default() {
    let (dropping, seen) = dropping_backend().await;
    let a = spawn_backend("a").await;
    let mut config = config(&[&a]);
    config
        .backends
        .insert(0, dropping.to_string().parse().unwrap());
    config.passive.enabled = false;
    let balancer = Running::start(config).await;
    let mut failed = 0;
    for _ in 0..6 {
        let answer = get(balancer.addr, "/").await;
        if answer.status == 502 {
            failed += 1;
        }
    }
    assert_eq!(failed, 3, "half went to the dropping backend and failed");
    assert_eq!(seen.load(Ordering::SeqCst), 3);
    assert_eq!(a.hits(), 3, "no failed request was replayed on a");
}

#[tokio::test]
async fn idempotent_retries_are_opt_in_and_skip_requests_with_bodies() {
    let (dropping, _seen) = dropping_backend().await;
    let a = spawn_backend("a").await;
    let mut config = config(&[&a]);
    config
        .backends
        .insert(0, dropping.to_string().parse().unwrap());
    config.passive.enabled = false;
    config.retry.idempotent = true;
    let balancer = Running::start(config).await;
    for _ in 0..6 {
        assert_eq!(get(balancer.addr, "/").await.status, 200);
    }
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let post = http::Request::post("/")
            .header("host", "app.test")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                b"data",
            )))
            .unwrap();
        statuses.push(send(balancer.addr, post).await.status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 502).count(),
        2,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn upgrade_requests_are_tunnelled_after_the_backends_101() {
    let a = spawn_backend("a").await;
    let balancer = Running::start(config(&[&a])).await;
    let (mut stream, head) = open_tunnel(balancer.addr).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    for message in ["hello", "tunnel"] {
        assert!(
            echo(&mut stream, message).await,
            "{message} came back upper-cased"
        );
    }
}

#[tokio::test]
async fn backend_connections_are_pooled_and_reused() {
    let a = spawn_backend("a").await;
    let balancer = Running::start(config(&[&a])).await;
    for _ in 0..10 {
        assert_eq!(get(balancer.addr, "/").await.status, 200);
    }
    let backend = balancer.registry.load().backends[0].clone();
    assert_eq!(
        backend.pool.idle_count(),
        1,
        "ten sequential requests share one connection"
    );
}

/// Whether the balancer closes `stream` within the hang guard; with what it sent first.
async fn closed_within_guard(stream: &mut TcpStream) -> (bool, Vec<u8>) {
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut buf)).await;
    (closed.is_ok(), buf)
}

#[tokio::test]
async fn slow_headers_are_cut_by_the_header_timeout_and_big_heads_refused() {
    let a = spawn_backend("a").await;
    let mut config = config(&[&a]);
    config.timeouts.client_header = Duration::from_millis(300);
    // Far beyond the hang guard: any close seen here is the header timeout's doing.
    config.timeouts.keep_alive_idle = Duration::from_secs(600);
    let balancer = Running::start(config).await;

    // Slowloris: half a request head, then nothing.
    let mut slow = TcpStream::connect(balancer.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n")
        .await
        .unwrap();
    assert!(
        closed_within_guard(&mut slow).await.0,
        "the slow client is disconnected"
    );
    // A connection that never sends a byte gets the header timeout too.
    let mut silent = TcpStream::connect(balancer.addr).await.unwrap();
    assert!(closed_within_guard(&mut silent).await.0);
    assert_eq!(a.hits(), 0);

    // Kept alive: idle for longer than the header timeout, the connection still serves
    // (the pauses are the scenario, not a wait for something: timers never fire early, so
    // a header timeout wrongly covering idle time would always cut it)...
    let mut kept = TcpStream::connect(balancer.addr).await.unwrap();
    let mut answer = [0u8; 4096];
    for _ in 0..2 {
        kept.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .await
            .unwrap();
        let n = tokio::time::timeout(Duration::from_secs(10), kept.read(&mut answer))
            .await
            .unwrap()
            .unwrap();
        assert!(
            answer[..n].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&answer[..n])
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    // ...and a head that then stalls is cut by the header timeout.
    kept.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    assert!(closed_within_guard(&mut kept).await.0);
    assert_eq!(a.hits(), 2);

    // A head beyond the limit.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: {}\r\n\r\n",
        "x".repeat(100 * 1024)
    );
    let answer = raw(balancer.addr, big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_eq!(a.hits(), 2);
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let a = spawn_backend("a").await;
    let mut config = config(&[&a]);
    config.timeouts.client_header = Duration::from_millis(300);
    let idle = Duration::from_millis(1500);
    config.timeouts.keep_alive_idle = idle;
    let balancer = Running::start(config).await;
    let mut stream = TcpStream::connect(balancer.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let (closed, buf) = closed_within_guard(&mut stream).await;
    assert!(closed, "the idle connection is closed");
    // The idle clock starts after the answer, later than `started`, and timers never fire
    // early: a close before this is some other timer's (the header timeout's) doing.
    assert!(
        started.elapsed() >= idle,
        "closed {:?} after the request, before the idle timeout",
        started.elapsed()
    );
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"));
    assert_eq!(a.hits(), 1);
}
