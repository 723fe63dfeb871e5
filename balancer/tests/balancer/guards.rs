//! Guards no client can switch off, on raw sockets: whatever a connection sent first, it
//! stays under the head and idle timeouts and every framing check; a slow client is not
//! counted against a backend; every wait (backend body, client writes, tunnels) is bounded.
//! Each test waits for the event (the socket closing, a counter) under a generous hang
//! guard; the configured timeouts are a few hundred milliseconds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use balancer::backend::now_millis;
use balancer::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::helpers::*;

/// Long enough that only a guard that never fires can reach it.
const HANG: Duration = Duration::from_secs(15);

/// How a raw backend answers.
#[derive(Debug, Clone, Copy)]
enum Script {
    /// `200` with a two-byte body to every request (an Upgrade gets no 101), keep-alive.
    Ok,
    /// A head promising 100 bytes, five of them, then nothing.
    StallMidBody,
    /// A head promising a huge body, written until the peer stops taking it.
    Flood,
    /// `200` with a body of `LARGE_BYTES`, keep-alive.
    Large,
}

/// A backend on raw sockets, counting the requests it read and the connections on which a
/// write failed or the peer closed while it held them.
struct RawBackend {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    aborted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const FLOOD_BYTES: usize = 256 * 1024 * 1024;
/// Far more than a client's small receive buffer holds: most of it still waits in the
/// balancer's send queue when the balancer is done writing.
const LARGE_BYTES: usize = 16 * 1024 * 1024;

async fn raw_backend(script: Script) -> RawBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let aborted = Arc::new(AtomicUsize::new(0));
    let (r, a) = (requests.clone(), aborted.clone());
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            connections.spawn(serve_raw(stream, script, r.clone(), a.clone()));
            while connections.try_join_next().is_some() {}
        }
    });
    RawBackend {
        addr,
        requests,
        aborted,
        task,
    }
}

async fn serve_raw(
    mut stream: TcpStream,
    script: Script,
    requests: Arc<AtomicUsize>,
    aborted: Arc<AtomicUsize>,
) {
    let mut buf = Vec::new();
    loop {
        let Some(head_end) = read_until_head_end(&mut stream, &mut buf).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length = content_length(&head);
        buf.drain(..head_end);
        while buf.len() < length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..length);
        requests.fetch_add(1, Ordering::SeqCst);
        match script {
            Script::Ok => {
                if stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Script::StallMidBody => {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello")
                    .await;
                // Hold the connection until the balancer gives up on it.
                let mut rest = [0u8; 64];
                while let Ok(Ok(n)) = tokio::time::timeout(HANG, stream.read(&mut rest)).await {
                    if n == 0 {
                        aborted.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
                return;
            }
            Script::Large => {
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {LARGE_BYTES}\r\n\r\n");
                let chunk = vec![b'x'; 64 * 1024];
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for _ in 0..LARGE_BYTES / chunk.len() {
                    if stream.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
            }
            Script::Flood => {
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {FLOOD_BYTES}\r\n\r\n");
                let chunk = vec![b'x'; 64 * 1024];
                let flood = async {
                    stream.write_all(head.as_bytes()).await?;
                    for _ in 0..FLOOD_BYTES / chunk.len() {
                        stream.write_all(&chunk).await?;
                    }
                    Ok::<_, std::io::Error>(())
                };
                if let Ok(Err(_)) = tokio::time::timeout(HANG, flood).await {
                    aborted.fetch_add(1, Ordering::SeqCst);
                }
                return;
            }
        }
    }
}

/// Reads into `buf` until it holds a whole head; returns the head's length.
async fn read_until_head_end(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(end + 4);
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(HANG, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
    }
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A response read off a raw socket: its head (lower-cased) and its Content-Length body.
async fn read_response(stream: &mut TcpStream) -> (u16, String, String) {
    let mut buf = Vec::new();
    let head_end = tokio::time::timeout(HANG, read_until_head_end(stream, &mut buf))
        .await
        .expect("an answer within the hang guard")
        .expect("an answer, not a closed connection");
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    let length = content_length(&head);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(HANG, stream.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed mid-body");
        body.extend_from_slice(&chunk[..n]);
    }
    (status, head, String::from_utf8_lossy(&body).into_owned())
}

/// Waits for the balancer to close the connection (end of stream or reset); panics if it
/// is still open at the hang guard. Returns how many bytes came before the end.
async fn closed(stream: &mut TcpStream) -> usize {
    let mut total = 0;
    let mut chunk = vec![0u8; 64 * 1024];
    tokio::time::timeout(HANG, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    })
    .await
    .expect("the balancer closed the connection");
    total
}

/// Test config: one backend at `addr`, the client-side guards at a few hundred ms.
fn guarded(addr: SocketAddr) -> Config {
    let mut config = config(&[]);
    config.backends = vec![addr.to_string().parse().unwrap()];
    config.timeouts.client_header = Duration::from_millis(400);
    config.timeouts.keep_alive_idle = Duration::from_millis(500);
    config
}

const PARTIAL_HEAD: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n";
const SMUGGLE: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

/// Opens a connection, sends `first`, expects `status`, then: with `then` empty, waits
/// idle; else sends it. Either way the connection must be closed by the guards.
async fn first_then(balancer: SocketAddr, first: &[u8], status: u16, then: &[u8]) {
    let mut stream = TcpStream::connect(balancer).await.unwrap();
    stream.write_all(first).await.unwrap();
    let (got, head, _) = read_response(&mut stream).await;
    assert_eq!(got, status, "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    if !then.is_empty() {
        stream.write_all(then).await.unwrap();
    }
    closed(&mut stream).await;
}

const UPGRADE: &[u8] =
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
const CONNECT: &[u8] = b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n";
const DOUBLE_LENGTH: &[u8] =
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi";

#[tokio::test]
async fn an_upgrade_without_101_stays_under_the_idle_and_head_timeouts() {
    let backend = raw_backend(Script::Ok).await;
    let balancer = Running::start(guarded(backend.addr)).await;
    first_then(balancer.addr, UPGRADE, 200, b"").await;
    first_then(balancer.addr, UPGRADE, 200, PARTIAL_HEAD).await;
}

#[tokio::test]
async fn connect_stays_under_the_idle_and_head_timeouts() {
    let backend = raw_backend(Script::Ok).await;
    let balancer = Running::start(guarded(backend.addr)).await;
    first_then(balancer.addr, CONNECT, 405, b"").await;
    first_then(balancer.addr, CONNECT, 405, PARTIAL_HEAD).await;
    assert_eq!(backend.requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn equal_repeated_content_lengths_stay_under_the_idle_and_head_timeouts() {
    let backend = raw_backend(Script::Ok).await;
    let balancer = Running::start(guarded(backend.addr)).await;
    first_then(balancer.addr, DOUBLE_LENGTH, 200, b"").await;
    first_then(balancer.addr, DOUBLE_LENGTH, 200, PARTIAL_HEAD).await;
}

#[tokio::test]
async fn every_later_request_still_gets_every_framing_check() {
    let backend = raw_backend(Script::Ok).await;
    let balancer = Running::start(guarded(backend.addr)).await;
    for first in [UPGRADE, CONNECT, DOUBLE_LENGTH] {
        let before = backend.requests.load(Ordering::SeqCst);
        let mut stream = TcpStream::connect(balancer.addr).await.unwrap();
        stream.write_all(first).await.unwrap();
        read_response(&mut stream).await;
        stream.write_all(SMUGGLE).await.unwrap();
        let (status, head, _) = read_response(&mut stream).await;
        assert_eq!(
            status,
            400,
            "after {:?}: {head}",
            String::from_utf8_lossy(first)
        );
        closed(&mut stream).await;
        let forwarded = backend.requests.load(Ordering::SeqCst) - before;
        assert!(forwarded <= 1, "the smuggled request reached the backend");
    }
}

#[tokio::test]
async fn bytes_sent_before_an_upgrade_is_decided_are_never_forwarded_unchecked() {
    let backend = raw_backend(Script::Ok).await;
    let balancer = Running::start(guarded(backend.addr)).await;
    let mut stream = TcpStream::connect(balancer.addr).await.unwrap();
    // The upgrade and, behind it, what may be tunnel bytes or a smuggled request.
    let mut both = UPGRADE.to_vec();
    both.extend_from_slice(SMUGGLE);
    stream.write_all(&both).await.unwrap();
    let (status, head, _) = read_response(&mut stream).await;
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("connection: close"), "{head}");
    closed(&mut stream).await;
    assert_eq!(backend.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_head_with_more_headers_than_allowed_is_refused_and_closed() {
    let backend = raw_backend(Script::Ok).await;
    let balancer = Running::start(guarded(backend.addr)).await;
    let mut request = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..200 {
        request.push_str(&format!("X-{i}: v\r\n"));
    }
    request.push_str("\r\n");
    let mut stream = TcpStream::connect(balancer.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let (status, head, _) = read_response(&mut stream).await;
    assert_eq!(status, 431, "{head}");
    closed(&mut stream).await;
    assert_eq!(backend.requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_slow_client_body_is_a_408_and_never_counts_against_the_backend() {
    let a = spawn_backend("a").await;
    let mut config = config(&[&a]);
    config.timeouts.client_body = Duration::from_millis(800);
    // Shorter than the whole slow upload below: it must count from the body's end.
    config.timeouts.response_header = Duration::from_millis(400);
    config.passive.failures = std::num::NonZeroU32::new(1).unwrap();
    let balancer = Running::start(config).await;
    let backend = balancer.registry.load().backends[0].clone();

    // A body that trickles in (each pause under client_body, all of them over
    // response_header) is forwarded; the backend's measured time is its own.
    let mut stream = TcpStream::connect(balancer.addr).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n")
        .await
        .unwrap();
    for byte in [b"a", b"b", b"c", b"d"] {
        // The client's own pace, not a synchronisation: 4 x 200 ms is over
        // response_header, each well under client_body.
        tokio::time::sleep(Duration::from_millis(200)).await;
        stream.write_all(byte).await.unwrap();
    }
    let (status, _, body) = read_response(&mut stream).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("body-bytes: 4"), "{body}");
    assert!(
        backend.latency_micros() < 300_000.0,
        "the upload time was taken for the backend's: {} µs",
        backend.latency_micros()
    );

    // A body that stops: 408 for the client, nothing against the backend.
    let mut stream = TcpStream::connect(balancer.addr).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhello")
        .await
        .unwrap();
    let (status, head, _) = read_response(&mut stream).await;
    assert_eq!(status, 408, "{head}");
    closed(&mut stream).await;
    assert!(
        !backend.is_ejected(now_millis()),
        "a slow client ejected the backend"
    );
    assert_eq!(get(balancer.addr, "/").await.status, 200);
    assert!(backend.latency_micros() < 300_000.0);
}

#[tokio::test]
async fn a_backend_that_stalls_mid_body_is_cut_off_and_released() {
    let backend = raw_backend(Script::StallMidBody).await;
    let mut config = guarded(backend.addr);
    config.timeouts.backend_body = Duration::from_millis(300);
    config.passive.failures = std::num::NonZeroU32::new(1).unwrap();
    let balancer = Running::start(config).await;
    let mut stream = TcpStream::connect(balancer.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let head_end = read_until_head_end(&mut stream, &mut buf).await.unwrap();
    let received = buf.len() - head_end + closed(&mut stream).await;
    assert!(received < 100, "the whole body arrived");
    let set = balancer.registry.load();
    let held = &set.backends[0];
    assert!(
        eventually(HANG, async || backend.aborted.load(Ordering::SeqCst) == 1
            && held.in_flight() == 0)
        .await,
        "the backend connection was not closed or the request still counts in flight"
    );
    assert!(
        held.is_ejected(now_millis()),
        "a body the backend broke off counts against it"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_within_client_write() {
    let backend = raw_backend(Script::Flood).await;
    let mut config = guarded(backend.addr);
    config.timeouts.client_write = Duration::from_millis(300);
    config.passive.failures = std::num::NonZeroU32::new(1).unwrap();
    let balancer = Running::start(config).await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(balancer.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    // Not reading: the balancer's writes stall until client_write ends the connection,
    // and the backend's connection goes with it.
    let set = balancer.registry.load();
    let held = &set.backends[0];
    assert!(
        eventually(HANG, async || backend.aborted.load(Ordering::SeqCst) == 1
            && held.in_flight() == 0)
        .await,
        "the balancer kept writing to a client that does not read"
    );
    let received = closed(&mut stream).await;
    assert!(received < FLOOD_BYTES, "the whole body arrived");
    assert!(
        !held.is_ejected(now_millis()),
        "a client that stopped reading ejected the backend"
    );
}

#[tokio::test]
async fn an_open_tunnel_holds_its_place_under_max_connections() {
    let a = spawn_backend("a").await;
    let mut config = config(&[&a]);
    config.limits.max_connections = 1;
    let balancer = Running::start(config).await;
    let (mut tunnel, head) = open_tunnel(balancer.addr).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(echo(&mut tunnel, "hello").await);

    let mut waiting = TcpStream::connect(balancer.addr).await.unwrap();
    waiting
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    // A window, not a synchronisation: while the tunnel is open, nothing may be served.
    let early = tokio::time::timeout(Duration::from_millis(500), waiting.read(&mut byte)).await;
    assert!(early.is_err(), "a connection beyond the limit was served");
    assert!(echo(&mut tunnel, "still open").await);

    drop(tunnel);
    // The timed-out read took nothing: the whole answer is still to come.
    let (status, _, _) = read_response(&mut waiting).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_after_tunnel_idle_and_frees_its_place() {
    let a = spawn_backend("a").await;
    let mut config = config(&[&a]);
    config.limits.max_connections = 1;
    // Shorter than the test backend's own 5 s echo timeout: the balancer must act first.
    config.timeouts.tunnel_idle = Duration::from_millis(300);
    let balancer = Running::start(config).await;
    let (mut tunnel, head) = open_tunnel(balancer.addr).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(echo(&mut tunnel, "hello").await);
    // The hang guard stays under the backend's 5 s, so only the balancer can have closed it.
    tokio::time::timeout(Duration::from_secs(4), closed(&mut tunnel))
        .await
        .expect("the idle tunnel was closed by the balancer");
    // Its place under max_connections is free again.
    assert_eq!(get(balancer.addr, "/").await.status, 200);
}

#[tokio::test]
async fn a_connection_parked_while_idle_serves_on_and_keeps_every_guard() {
    let backend = raw_backend(Script::Ok).await;
    let mut config = guarded(backend.addr);
    config.timeouts.keep_alive_idle = Duration::from_secs(4);
    let balancer = Running::start(config).await;
    let idle_past_parking = balancer::guards::IDLE_PARK_AFTER + Duration::from_millis(500);
    let request: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";

    let mut stream = TcpStream::connect(balancer.addr).await.unwrap();
    for _ in 0..2 {
        stream.write_all(request).await.unwrap();
        assert_eq!(read_response(&mut stream).await.0, 200);
        // The client's own pause, long enough for the balancer to park the connection.
        tokio::time::sleep(idle_past_parking).await;
    }
    // Woken by a request split across writes: it is served, and the framing checks run.
    stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    stream.write_all(b"Host: a\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut stream).await.0, 200);
    tokio::time::sleep(idle_past_parking).await;
    stream.write_all(SMUGGLE).await.unwrap();
    assert_eq!(read_response(&mut stream).await.0, 400);
    closed(&mut stream).await;
    assert_eq!(backend.requests.load(Ordering::SeqCst), 3);

    // Parked, then a partial head: the head timeout still applies.
    let mut stream = TcpStream::connect(balancer.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    assert_eq!(read_response(&mut stream).await.0, 200);
    tokio::time::sleep(idle_past_parking).await;
    stream.write_all(PARTIAL_HEAD).await.unwrap();
    tokio::time::timeout(Duration::from_secs(3), closed(&mut stream))
        .await
        .expect("closed by client_header, well before keep_alive_idle");

    // Parked and left alone: closed at keep_alive_idle, counted from the last answer.
    let mut stream = TcpStream::connect(balancer.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    assert_eq!(read_response(&mut stream).await.0, 200);
    closed(&mut stream).await;
}

/// Longer than any test runs: a lingering bound that must not be the one that ends it.
const LONG: Duration = Duration::from_secs(60);

/// A balancer in front of `backend` with these lingering bounds and `max_connections`.
async fn lingering(
    backend: SocketAddr,
    bytes: usize,
    time: Duration,
    quiet: Duration,
    max_connections: usize,
) -> Running {
    let mut config = guarded(backend);
    config.limits.lingering_bytes = bytes;
    config.timeouts.lingering_time = time;
    config.timeouts.lingering_timeout = quiet;
    config.limits.max_connections = max_connections;
    Running::start(config).await
}

/// Sends a request that closes the connection and reads its answer whole; the stream is
/// left open for the client to go on writing.
async fn closing_exchange(stream: &mut TcpStream) {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (status, head, _) = read_response(stream).await;
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("connection: close"), "{head}");
}

/// Writes `chunk` again and again (at most `most` times) until a write fails, pausing
/// `pause` between writes; how many bytes were written before.
async fn write_until_refused(
    stream: &mut TcpStream,
    chunk: &[u8],
    most: usize,
    pause: Duration,
) -> usize {
    let mut written = 0;
    tokio::time::timeout(HANG, async {
        for _ in 0..most {
            if stream.write_all(chunk).await.is_err() {
                return;
            }
            written += chunk.len();
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        panic!("the balancer took {written} bytes and never closed the connection");
    })
    .await
    .expect("hang guard: the balancer cut the lingering client off");
    written
}

#[tokio::test]
async fn a_client_that_writes_on_after_a_closing_request_still_reads_the_whole_answer() {
    let backend = raw_backend(Script::Large).await;
    let balancer = Running::start(guarded(backend.addr)).await;
    let stream = connect_with_small_window(balancer.addr).await;
    assert_eq!(
        closing_answer_read_while_writing(stream, "a").await,
        LARGE_BYTES
    );
}

#[tokio::test]
async fn a_lingering_client_is_cut_off_after_lingering_bytes() {
    let backend = raw_backend(Script::Ok).await;
    let balancer = lingering(backend.addr, 256 * 1024, LONG, LONG, 1000).await;
    let mut stream = TcpStream::connect(balancer.addr).await.unwrap();
    closing_exchange(&mut stream).await;
    let written =
        write_until_refused(&mut stream, &[b'x'; 16 * 1024], 64 * 1024, Duration::ZERO).await;
    assert!(written >= 256 * 1024, "cut off after {written} bytes");
}

#[tokio::test]
async fn a_lingering_client_is_cut_off_after_lingering_time() {
    let backend = raw_backend(Script::Ok).await;
    let short = Duration::from_millis(300);
    let balancer = lingering(backend.addr, 64 * 1024 * 1024, short, LONG, 1000).await;
    let started = tokio::time::Instant::now();
    let mut stream = TcpStream::connect(balancer.addr).await.unwrap();
    closing_exchange(&mut stream).await;
    // A trickle, so neither lingering_timeout nor lingering_bytes is what ends it.
    write_until_refused(&mut stream, b"x", 100_000, Duration::from_millis(10)).await;
    // Timers never fire early: the lingering lasted its whole time.
    assert!(started.elapsed() >= short, "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_quiet_lingering_client_is_closed_after_lingering_timeout_and_frees_its_place() {
    let backend = raw_backend(Script::Ok).await;
    let short = Duration::from_millis(300);
    let balancer = lingering(backend.addr, 64 * 1024 * 1024, LONG, short, 1).await;
    let started = tokio::time::Instant::now();
    let mut quiet = TcpStream::connect(balancer.addr).await.unwrap();
    closing_exchange(&mut quiet).await;
    // The quiet client neither writes nor closes: its place comes back only when the
    // balancer gives up lingering, and only then is the next connection served.
    let mut next = TcpStream::connect(balancer.addr).await.unwrap();
    closing_exchange(&mut next).await;
    assert!(started.elapsed() >= short, "{:?}", started.elapsed());
    drop(quiet);
}
