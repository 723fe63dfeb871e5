//! What the backend is told about the client: forwarding headers only as the balancer saw
//! them (a client's own claims dropped, whatever their suffix), and an X-Request-Id that
//! the balancer's logs name too.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::*;

const CLAIMS: [(&str, &str); 8] = [
    ("x-forwarded-for", "6.6.6.6"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-port", "443"),
    ("x-forwarded-prefix", "/admin"),
    ("x-forwarded-server", "trusted.internal"),
    ("forwarded", "for=6.6.6.6;proto=https"),
    ("x-real-ip", "6.6.6.6"),
    ("x-request-id", "chosen-by-the-client"),
];

fn is_request_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test]
async fn an_untrusted_clients_forwarding_claims_and_request_id_never_reach_the_backend() {
    let a = spawn_backend("a").await;
    let balancer = Running::start(config(&[&a])).await;
    let answer = send(balancer.addr, request("/", &CLAIMS)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    for claimed in [
        "6.6.6.6",
        "/admin",
        "trusted.internal",
        "chosen-by-the-client",
    ] {
        assert!(
            !answer.body.contains(claimed),
            "a client's claim {claimed:?} reached the backend:\n{}",
            answer.body
        );
    }
    for gone in [
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-server",
        "forwarded",
    ] {
        assert_eq!(answer.echoed(gone), None, "{gone}:\n{}", answer.body);
    }
    assert_eq!(
        answer.echoed("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(answer.echoed("x-real-ip").as_deref(), Some("127.0.0.1"));
    assert_eq!(answer.echoed("x-forwarded-proto").as_deref(), Some("http"));
    let first = answer
        .echoed("x-request-id")
        .expect("the backend gets a request id");
    assert!(is_request_id(&first), "{first}");

    let second = get(balancer.addr, "/")
        .await
        .echoed("x-request-id")
        .expect("every request gets one");
    assert!(is_request_id(&second), "{second}");
    assert_ne!(first, second, "ids are unique");
}

#[tokio::test]
async fn a_trusted_proxys_request_id_and_forwarding_headers_are_kept() {
    let a = spawn_backend("a").await;
    let mut config = config(&[&a]);
    config.forwarding.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    let balancer = Running::start(config).await;
    let answer = send(
        balancer.addr,
        request(
            "/",
            &[
                ("x-request-id", "edge-1234"),
                ("x-forwarded-port", "443"),
                ("x-forwarded-for", "198.51.100.7"),
            ],
        ),
    )
    .await;
    assert_eq!(answer.echoed("x-request-id").as_deref(), Some("edge-1234"));
    assert_eq!(answer.echoed("x-forwarded-port").as_deref(), Some("443"));
    assert_eq!(
        answer.echoed("x-forwarded-for").as_deref(),
        Some("198.51.100.7, 127.0.0.1")
    );
    // A trusted proxy that sent none, or an unusable one, gets a fresh id.
    let answer = send(balancer.addr, request("/", &[("x-request-id", "")])).await;
    let id = answer.echoed("x-request-id").unwrap_or_default();
    assert!(is_request_id(&id), "{id:?}");
    let id = get(balancer.addr, "/")
        .await
        .echoed("x-request-id")
        .unwrap();
    assert!(is_request_id(&id), "{id}");
}

#[tokio::test]
async fn the_binary_logs_the_request_id_the_backend_got() {
    let a = spawn_backend("a").await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_balancer"))
        .args(["--listen", "127.0.0.1:0", "--backend", &a.addr.to_string()])
        .env("RUST_LOG", "info,balancer=debug")
        .env("LOG_FORMAT", "json")
        .env_remove("BALANCER_CONFIG")
        .env_remove("BALANCER_BACKENDS")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let next_line = async |lines: &mut tokio::io::Lines<_>| -> String {
        tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the balancer logs within 30 s")
            .unwrap()
            .expect("the balancer is still running")
    };
    // The port it bound, from its "ready" line.
    let addr = loop {
        let line = next_line(&mut lines).await;
        if line.contains("balancer ready") {
            let start = line
                .find("\"listen\":\"")
                .expect("the ready line names the address")
                + 10;
            let end = start + line[start..].find('"').unwrap();
            break line[start..end].parse::<std::net::SocketAddr>().unwrap();
        }
    };
    let answer = get(addr, "/").await;
    let id = answer
        .echoed("x-request-id")
        .expect("the backend got an id");
    assert!(is_request_id(&id), "{id}");
    loop {
        let line = next_line(&mut lines).await;
        if line.contains(&id) {
            assert!(line.contains("answered"), "{line}");
            break;
        }
    }
    child.kill().await.unwrap();
}
