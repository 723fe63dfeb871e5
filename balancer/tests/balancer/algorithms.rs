//! Spread per algorithm, observed through real requests.

use std::time::Duration;

use balancer::config::Algorithm;
use tokio::net::TcpSocket;

use crate::helpers::*;

#[tokio::test]
async fn round_robin_visits_backends_in_exact_order() {
    let backends = [
        spawn_backend("a").await,
        spawn_backend("b").await,
        spawn_backend("c").await,
    ];
    let balancer = spawn_balancer(config(&backends.iter().collect::<Vec<_>>())).await;
    let mut order = Vec::new();
    for _ in 0..9 {
        order.push(get(balancer.addr, "/").await.instance().to_owned());
    }
    // The start is wherever the counter stands; the rotation must be exact.
    let first = &order[..3];
    assert_eq!(
        first.iter().collect::<std::collections::HashSet<_>>().len(),
        3,
        "{order:?}"
    );
    assert_eq!(&order[3..6], first);
    assert_eq!(&order[6..9], first);
}

#[tokio::test]
async fn weighted_round_robin_is_smooth_like_nginx() {
    let (a, b, c) = (
        spawn_backend("a").await,
        spawn_backend("b").await,
        spawn_backend("c").await,
    );
    let mut config = config(&[&a, &b, &c]);
    config.algorithm = Algorithm::WeightedRoundRobin;
    config.backends[0].weight = 5;
    let balancer = spawn_balancer(config).await;
    let mut order = String::new();
    for _ in 0..14 {
        order.push_str(get(balancer.addr, "/").await.instance());
    }
    assert_eq!(order, "aabacaaaabacaa");
}

#[tokio::test]
async fn least_connections_favours_the_fast_backend() {
    let (fast, slow) = (spawn_backend("fast").await, spawn_backend("slow").await);
    slow.behaviour
        .delay_ms
        .store(300, std::sync::atomic::Ordering::SeqCst);
    let mut config = config(&[&fast, &slow]);
    config.algorithm = Algorithm::LeastConnections;
    let balancer = spawn_balancer(config).await;
    // Requests spread over time: the slow backend keeps its connections busy.
    let addr = balancer.addr;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..40 {
        tasks.spawn(async move { get(addr, "/").await.instance().to_owned() });
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut counts = std::collections::HashMap::new();
    while let Some(id) = tasks.join_next().await {
        *counts.entry(id.unwrap()).or_insert(0usize) += 1;
    }
    let (f, s) = (
        counts.get("fast").copied().unwrap_or(0),
        counts.get("slow").copied().unwrap_or(0),
    );
    assert!(f >= 3 * s, "fast {f}, slow {s}");
}

#[tokio::test]
async fn least_response_time_favours_the_fast_backend() {
    let (fast, slow) = (spawn_backend("fast").await, spawn_backend("slow").await);
    slow.behaviour
        .delay_ms
        .store(60, std::sync::atomic::Ordering::SeqCst);
    let mut config = config(&[&fast, &slow]);
    config.algorithm = Algorithm::LeastResponseTime;
    let balancer = spawn_balancer(config).await;
    let counts = spread(balancer.addr, 40).await;
    let (f, s) = (
        counts.get("fast").copied().unwrap_or(0),
        counts.get("slow").copied().unwrap_or(0),
    );
    assert!(f >= 35, "fast {f}, slow {s}");
}

#[tokio::test]
async fn power_of_two_choices_uses_every_backend_and_avoids_the_busy_one() {
    let (a, b, slow) = (
        spawn_backend("a").await,
        spawn_backend("b").await,
        spawn_backend("slow").await,
    );
    slow.behaviour
        .delay_ms
        .store(300, std::sync::atomic::Ordering::SeqCst);
    let mut config = config(&[&a, &b, &slow]);
    config.algorithm = Algorithm::PowerOfTwoChoices;
    let balancer = spawn_balancer(config).await;
    let counts = spread(balancer.addr, 30).await;
    assert!(
        counts.contains_key("a") && counts.contains_key("b"),
        "{counts:?}"
    );
    // Requests spaced over time: the slow backend holds its requests, so it loses every
    // comparison it is drawn into.
    let addr = balancer.addr;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..40 {
        tasks.spawn(async move { get(addr, "/").await.instance().to_owned() });
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut busy = std::collections::HashMap::new();
    while let Some(id) = tasks.join_next().await {
        *busy.entry(id.unwrap()).or_insert(0usize) += 1;
    }
    let s = busy.get("slow").copied().unwrap_or(0);
    assert!(s <= 8, "the busy backend got {s} of 40: {busy:?}");
}

/// GET from a specific loopback source address, so ip-hash sees different clients.
async fn get_from(source: [u8; 4], addr: std::net::SocketAddr) -> String {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind((source, 0).into()).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        sender.send_request(request("/", &[])),
    )
    .await
    .unwrap()
    .unwrap();
    response.headers()["x-instance-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn ip_hash_keeps_clients_and_remaps_few_when_a_backend_leaves() {
    let backends = [
        spawn_backend("a").await,
        spawn_backend("b").await,
        spawn_backend("c").await,
        spawn_backend("d").await,
    ];
    let mut config = config(&backends.iter().collect::<Vec<_>>());
    config.algorithm = Algorithm::IpHash;
    config.health.path = Some("/healthz".into());
    config.health.fall = 1.try_into().unwrap();
    let balancer = spawn_balancer(config).await;
    let clients: Vec<[u8; 4]> = (2..82).map(|i| [127, 0, 1, i]).collect();
    let mut before = Vec::new();
    for client in &clients {
        let first = get_from(*client, balancer.addr).await;
        assert_eq!(
            get_from(*client, balancer.addr).await,
            first,
            "a client keeps its backend"
        );
        before.push(first);
    }
    let used: std::collections::HashSet<_> = before.iter().collect();
    assert!(used.len() >= 3, "clients spread over backends: {used:?}");
    // Take "d" out of rotation: only its clients move.
    backends[3]
        .behaviour
        .unhealthy
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let registry = balancer.registry.clone();
    assert!(
        eventually(Duration::from_secs(3), async || registry
            .load()
            .backends
            .iter()
            .filter(|b| b.health() == balancer::backend::Health::Up)
            .count()
            == 3)
        .await
    );
    let mut moved = 0;
    for (client, old) in clients.iter().zip(&before) {
        let now = get_from(*client, balancer.addr).await;
        if *old == "d" {
            assert_ne!(now, "d");
        }
        if now != *old {
            moved += 1;
        }
    }
    let owned_by_d = before.iter().filter(|b| *b == "d").count();
    assert_eq!(moved, owned_by_d, "only the leaving backend's clients move");
}
