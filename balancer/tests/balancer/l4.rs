//! The layer-4 listener (`mode = "tcp"`): connections, not requests, are balanced; bytes
//! pass unread both ways (binary, TLS records); ip-hash keeps a client address on one
//! backend; a dead backend is skipped at connect and marked down by TCP health checks;
//! drain, `max_connections`, `tunnel_idle` and the graceful shutdown hold; sticky cookies
//! are refused with the mode, naming where they were asked for.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use balancer::backend::Health;
use balancer::config::{Algorithm, Config, Mode, Origin, Overrides};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

use crate::helpers::{
    Running, closed_by_peer, config, eventually, http1_over, request, send, send_on, spawn_backend,
};

const LIMIT: Duration = Duration::from_secs(20);

/// A TCP backend that greets each connection with its name and a newline, then echoes
/// every byte back unchanged.
struct EchoBackend {
    name: &'static str,
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl EchoBackend {
    async fn spawn(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if stream
                        .write_all(format!("{name}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        Self {
            name,
            addr,
            connections,
            task,
        }
    }

    fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn tcp_config(backends: &[&EchoBackend]) -> Config {
    let mut config = config(&[]);
    config.mode = Mode::Tcp;
    config.backends = backends
        .iter()
        .map(|b| b.addr.to_string().parse().unwrap())
        .collect();
    config
}

/// Connects from `from` (any 127.0.0.0/8 address) and reads the backend's greeting.
async fn connect_from(balancer: SocketAddr, from: IpAddr) -> (TcpStream, String) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let mut stream = tokio::time::timeout(LIMIT, socket.connect(balancer))
        .await
        .expect("connected within the hang guard")
        .unwrap();
    let greeting = read_line(&mut stream).await;
    (stream, greeting)
}

async fn connect(balancer: SocketAddr) -> (TcpStream, String) {
    connect_from(balancer, IpAddr::V4(Ipv4Addr::LOCALHOST)).await
}

async fn read_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") {
        let read = tokio::time::timeout(LIMIT, stream.read(&mut byte))
            .await
            .expect("hang guard: a greeting line within 20 s");
        assert_eq!(read.unwrap(), 1, "closed before a whole line: {line:?}");
        line.push(byte[0]);
    }
    line.pop();
    String::from_utf8(line).unwrap()
}

/// Sends `bytes` and reads the same number back.
async fn round_trip(stream: &mut TcpStream, bytes: &[u8]) -> Vec<u8> {
    stream.write_all(bytes).await.unwrap();
    let mut back = vec![0u8; bytes.len()];
    tokio::time::timeout(LIMIT, stream.read_exact(&mut back))
        .await
        .expect("hang guard: the echo within 20 s")
        .unwrap();
    back
}

#[tokio::test]
async fn connections_are_balanced_and_their_bytes_pass_unread_both_ways() {
    let (a, b) = (EchoBackend::spawn("a").await, EchoBackend::spawn("b").await);
    let balancer = Running::start(tcp_config(&[&a, &b])).await;
    let mut seen = HashMap::new();
    // Every byte value, and the start of a TLS ClientHello: nothing is parsed.
    let mut payload: Vec<u8> = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];
    payload.extend(0..=255u8);
    payload.extend(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    for _ in 0..6 {
        let (mut stream, greeting) = connect(balancer.addr).await;
        *seen.entry(greeting).or_insert(0) += 1;
        assert_eq!(round_trip(&mut stream, &payload).await, payload);
    }
    assert_eq!(seen, HashMap::from([("a".into(), 3), ("b".into(), 3)]));
    // Six tunnels, plus the TCP health checks' own connects.
    assert!(a.connections.load(Ordering::SeqCst) >= 3);
}

#[tokio::test]
async fn a_kept_alive_connection_stays_on_one_backend_where_http_mode_balances_each_request() {
    let (a, b) = (spawn_backend("a").await, spawn_backend("b").await);
    let mut l4 = config(&[&a, &b]);
    l4.mode = Mode::Tcp;
    let l7 = Running::start(config(&[&a, &b])).await;
    let l4 = Running::start(l4).await;

    for (balancer, expected) in [(l4.addr, 1), (l7.addr, 2)] {
        let stream = TcpStream::connect(balancer).await.unwrap();
        let mut sender = http1_over(stream).await;
        let mut instances = HashSet::new();
        for _ in 0..6 {
            let answer = send_on(&mut sender, request("/", &[])).await;
            assert_eq!(answer.status, 200);
            instances.insert(answer.instance().to_owned());
        }
        assert_eq!(
            instances.len(),
            expected,
            "six requests on one kept-alive connection through {balancer}: {instances:?}"
        );
    }
    // Layer 4 adds nothing to what the client sent: no forwarding headers.
    let answer = send(
        l4.addr,
        Request::get("/echo-headers")
            .header("host", "app.test")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.echoed("host").as_deref(), Some("app.test"));
    assert!(answer.echoed("x-forwarded-for").is_none(), "{answer:?}");
}

#[tokio::test]
async fn ip_hash_keeps_each_client_address_on_one_backend() {
    let backends = [
        EchoBackend::spawn("a").await,
        EchoBackend::spawn("b").await,
        EchoBackend::spawn("c").await,
    ];
    let mut config = tcp_config(&backends.iter().collect::<Vec<_>>());
    config.algorithm = Algorithm::IpHash;
    let balancer = Running::start(config).await;
    let mut chosen = HashMap::new();
    for last in 1..=16u8 {
        let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
        for _ in 0..3 {
            let (_stream, greeting) = connect_from(balancer.addr, from).await;
            let first = chosen.entry(from).or_insert_with(|| greeting.clone());
            assert_eq!(*first, greeting, "{from} moved between backends");
        }
    }
    let used: HashSet<_> = chosen.values().collect();
    // 16 addresses on a 3-backend ring all landing on one backend: odds below 1 in 10^7.
    assert!(used.len() > 1, "every address on one backend: {chosen:?}");
}

#[tokio::test]
async fn a_dead_backend_is_skipped_at_connect_and_marked_down_by_tcp_checks() {
    let (a, b) = (EchoBackend::spawn("a").await, EchoBackend::spawn("b").await);
    let balancer = Running::start(tcp_config(&[&a, &b])).await;
    let set = balancer.registry.load_full();
    assert!(
        set.backends.iter().all(|b| b.health() == Health::Up),
        "TCP checks brought both up"
    );
    b.stop();
    // Before the checks notice: a refused connect moves on to the next candidate.
    for _ in 0..4 {
        let (mut stream, greeting) = connect(balancer.addr).await;
        assert_eq!(greeting, "a");
        assert_eq!(
            round_trip(&mut stream, b"still served").await,
            b"still served"
        );
    }
    let dead = set
        .backends
        .iter()
        .find(|x| x.addr == b.addr)
        .unwrap()
        .clone();
    assert!(
        eventually(LIMIT, async || dead.health() == Health::Down).await,
        "b marked down by the TCP health checks"
    );
    assert_eq!(b.name, "b");
}

#[tokio::test]
async fn a_drained_backend_keeps_its_open_connection_takes_no_new_one_and_is_drained_when_it_closes()
 {
    let (a, b) = (EchoBackend::spawn("a").await, EchoBackend::spawn("b").await);
    let running = Running::builder(tcp_config(&[&a, &b]))
        .admin(None)
        .start()
        .await;
    let mut on_a = None;
    while on_a.is_none() {
        let (stream, greeting) = connect(running.addr).await;
        if greeting == "a" {
            on_a = Some(stream);
        }
    }
    let mut on_a = on_a.unwrap();
    let admin_addr = running.admin();
    let admin = |method: &'static str, path: String| async move {
        let answer = send(
            admin_addr,
            Request::builder()
                .method(method)
                .uri(path)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
        let json: Value = serde_json::from_str(&answer.body).unwrap();
        (answer.status, json)
    };
    let (status, entry) = admin("POST", format!("/api/backends/{}/drain", a.addr)).await;
    assert_eq!(status, 200, "{entry}");
    assert_eq!(
        entry["state"], "draining",
        "its connection is open: {entry}"
    );
    for _ in 0..4 {
        assert_eq!(connect(running.addr).await.1, "b");
    }
    assert_eq!(round_trip(&mut on_a, b"open on").await, b"open on");
    drop(on_a);
    let drained = async || {
        let (_, list) = admin("GET", "/api/backends".to_owned()).await;
        list["backends"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["address"] == a.addr.to_string() && e["state"] == "drained")
    };
    assert!(
        eventually(LIMIT, drained).await,
        "a drained once its connection closed"
    );
}

#[tokio::test]
async fn max_connections_bounds_open_connections_and_an_idle_one_is_closed() {
    let a = EchoBackend::spawn("a").await;
    let mut config = tcp_config(&[&a]);
    config.limits.max_connections = 1;
    config.timeouts.tunnel_idle = Duration::from_millis(300);
    let balancer = Running::start(config).await;
    let (mut first, _) = connect(balancer.addr).await;
    let mut second = TcpStream::connect(balancer.addr).await.unwrap();
    let mut byte = [0u8; 1];
    // A window, not a synchronisation: while the first is open, the second is not served.
    let early = tokio::time::timeout(Duration::from_millis(200), second.read(&mut byte)).await;
    assert!(early.is_err(), "a connection beyond the limit was served");
    assert_eq!(round_trip(&mut first, b"x").await, b"x");
    // The first, left idle, is closed by tunnel_idle; its place goes to the second.
    assert!(closed_by_peer(&mut first).await);
    assert_eq!(read_line(&mut second).await, "a");
}

#[tokio::test]
async fn shutdown_lets_an_open_connection_finish_within_the_grace_period() {
    let a = EchoBackend::spawn("a").await;
    let balancer = Running::start(tcp_config(&[&a])).await;
    let addr = balancer.addr;
    let (mut open, _) = connect(addr).await;
    let stopping = tokio::spawn(balancer.shutdown());
    // Accepting stops at once; the open connection carries on.
    assert!(
        eventually(LIMIT, async || TcpStream::connect(addr).await.is_err()).await,
        "the listener closed"
    );
    assert_eq!(
        round_trip(&mut open, b"during grace").await,
        b"during grace"
    );
    assert!(
        !stopping.is_finished(),
        "shutdown waits for the open connection"
    );
    drop(open);
    tokio::time::timeout(LIMIT, stopping)
        .await
        .expect("shutdown ends once the last connection closed")
        .unwrap();
}

#[test]
fn sticky_cookies_are_refused_with_tcp_mode_naming_the_source() {
    let overrides = Overrides {
        backends: vec!["127.0.0.1:9".parse().unwrap()],
        mode: Some(Mode::Tcp),
        sticky: Some(true),
        origins: vec![
            ("mode", Origin::Env("BALANCER_MODE")),
            ("sticky.enabled", Origin::Flag("--sticky")),
        ],
        ..Overrides::default()
    };
    let error = Config::load(None, overrides).unwrap_err().to_string();
    assert!(
        error.contains("--sticky") && error.contains("tcp") && error.contains("ip-hash"),
        "{error}"
    );
    assert!("udp".parse::<Mode>().unwrap_err().contains("http or tcp"));

    // TLS is passed through at layer 4, never terminated.
    let mut config = Config {
        mode: Mode::Tcp,
        backends: vec!["127.0.0.1:9".parse().unwrap()],
        ..Config::default()
    };
    config.tls.listen = Some("127.0.0.1:0".parse().unwrap());
    config.origins.set("mode", Origin::Flag("--mode"));
    let error = config.validate().unwrap_err().to_string();
    assert!(
        error.contains("--mode") && error.contains("passes TLS through"),
        "{error}"
    );
}
