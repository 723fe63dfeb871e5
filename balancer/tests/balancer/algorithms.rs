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
    let balancer = Running::start(config(&backends.iter().collect::<Vec<_>>())).await;
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
    let balancer = Running::start(config).await;
    let mut order = String::new();
    for _ in 0..14 {
        order.push_str(get(balancer.addr, "/").await.instance());
    }
    assert_eq!(order, "aabacaaaabacaa");
}

/// Sends `n` requests one after another while `slow` holds every request it gets: each
/// either is answered by another backend (and then has ended on the balancer's side too,
/// so it no longer counts as in flight) or is held by `slow`. Returns the answers' ids and
/// the requests `slow` holds, which it answers once released.
async fn with_slow_holding(
    balancer: &Running,
    slow: &TestBackend,
    n: usize,
) -> (Vec<String>, Vec<tokio::task::JoinHandle<Answer>>) {
    slow.behaviour
        .hold
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let addr = balancer.addr;
    let (mut answered, mut held) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let before = slow.hits();
        let request = tokio::spawn(async move { get(addr, "/").await });
        assert!(
            eventually(Duration::from_secs(10), async || request.is_finished()
                || slow.hits() > before)
            .await,
            "hang guard: the request was answered or held"
        );
        if slow.hits() > before {
            held.push(request);
            continue;
        }
        let answer = request.await.unwrap();
        assert_eq!(answer.status, 200);
        answered.push(answer.instance().to_owned());
        let registry = balancer.registry.clone();
        assert!(
            eventually(Duration::from_secs(10), async || registry
                .load()
                .backends
                .iter()
                .all(|b| b.addr == slow.addr || b.in_flight() == 0))
            .await,
            "hang guard: the answered request ended on the balancer's side"
        );
    }
    slow.behaviour
        .hold
        .store(false, std::sync::atomic::Ordering::SeqCst);
    (answered, held)
}

#[tokio::test]
async fn least_connections_favours_the_fast_backend() {
    let (fast, slow) = (spawn_backend("fast").await, spawn_backend("slow").await);
    let mut config = config(&[&fast, &slow]);
    config.algorithm = Algorithm::LeastConnections;
    let balancer = Running::start(config).await;
    // Once the slow backend holds a request, it has more in flight than the fast one, so
    // it gets nothing more; before that the two tie.
    let (answered, held) = with_slow_holding(&balancer, &slow, 40).await;
    assert!(held.len() <= 1, "the busy backend got {} of 40", held.len());
    assert!(answered.iter().all(|id| id == "fast"), "{answered:?}");
    for request in held {
        assert_eq!(request.await.unwrap().instance(), "slow");
    }
}

#[tokio::test]
async fn least_response_time_favours_the_fast_backend() {
    let (fast, slow) = (spawn_backend("fast").await, spawn_backend("slow").await);
    slow.behaviour
        .delay_ms
        .store(60, std::sync::atomic::Ordering::SeqCst);
    let mut config = config(&[&fast, &slow]);
    config.algorithm = Algorithm::LeastResponseTime;
    let balancer = Running::start(config).await;
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
    let mut config = config(&[&a, &b, &slow]);
    config.algorithm = Algorithm::PowerOfTwoChoices;
    let balancer = Running::start(config).await;
    // All idle: random draws reach every backend (one left out of 60 draws: odds ~1e-10).
    let counts = spread(balancer.addr, 60).await;
    assert_eq!(counts.len(), 3, "{counts:?}");
    // The busy backend loses every comparison it is drawn into once it holds a request.
    let (answered, held) = with_slow_holding(&balancer, &slow, 40).await;
    assert!(held.len() <= 1, "the busy backend got {} of 40", held.len());
    assert!(
        answered.iter().all(|id| id == "a" || id == "b"),
        "{answered:?}"
    );
    for request in held {
        assert_eq!(request.await.unwrap().instance(), "slow");
    }
}

/// GET from a specific loopback source address, so ip-hash sees different clients.
async fn get_from(source: [u8; 4], addr: std::net::SocketAddr) -> String {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind((source, 0).into()).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    send_on(&mut http1_over(stream).await, request("/", &[]))
        .await
        .instance()
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
    let balancer = Running::start(config).await;
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
        eventually(Duration::from_secs(10), async || registry
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

/// GET / as a proxy forwarding `client` would send it: the answering instance, and the
/// X-Real-IP the backend was told.
async fn get_for(addr: std::net::SocketAddr, forwarded_for: &str) -> (String, String) {
    let answer = send(addr, request("/", &[("x-forwarded-for", forwarded_for)])).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let real_ip = answer.echoed("x-real-ip").unwrap_or_default();
    (answer.instance().to_owned(), real_ip)
}

#[tokio::test]
async fn ip_hash_behind_a_trusted_proxy_hashes_the_client_it_names_and_no_one_elses_claim() {
    let (a, b) = (spawn_backend("a").await, spawn_backend("b").await);
    let mut config = config(&[&a, &b]);
    config.algorithm = Algorithm::IpHash;
    config.forwarding.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    let trusting = Running::start(config.clone()).await;
    config.forwarding.trusted_proxies = Vec::new();
    let untrusting = Running::start(config).await;
    let clients: Vec<String> = (1..=40).map(|i| format!("203.0.113.{i}")).collect();

    // The test is the trusted proxy (127.0.0.1): each forwarded client is hashed on its
    // own address, so 40 of them reach both backends (all on one: odds about 2^-39), and
    // each one always the same backend, also behind one more trusted hop and with an
    // entry forged on its left, which the walk from the right never reaches.
    let mut home = std::collections::HashMap::new();
    for client in &clients {
        let (instance, real_ip) = get_for(trusting.addr, client).await;
        assert_eq!(&real_ip, client, "the backend is told the same client");
        let (again, real_ip) =
            get_for(trusting.addr, &format!("6.6.6.6, {client}, 127.0.0.9")).await;
        assert_eq!(again, instance, "{client} moved");
        assert_eq!(&real_ip, client);
        home.insert(client.clone(), instance);
    }
    let used: std::collections::HashSet<_> = home.values().collect();
    assert_eq!(
        used.len(),
        2,
        "40 forwarded clients all on one backend: {home:?}"
    );

    // An entry that is not an address leaves the trusted peer as the client.
    let (_, real_ip) = get_for(trusting.addr, "203.0.113.1, unknown").await;
    assert_eq!(real_ip, "127.0.0.1");

    // Not trusted: the header is a claim, ignored; every request is the peer's, so all
    // 40 "clients" land where the peer does.
    let peer_home = get(untrusting.addr, "/").await.instance().to_owned();
    for client in &clients {
        let (instance, real_ip) = get_for(untrusting.addr, client).await;
        assert_eq!(real_ip, "127.0.0.1");
        assert_eq!(instance, peer_home, "the claim {client} chose the backend");
    }
}
