//! Start-up, discovery, streaming of large bodies, graceful shutdown and the CLI.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame};

use crate::helpers::*;

/// A request body of `remaining` bytes made on demand, counting what it produced.
struct Generated {
    remaining: u64,
    chunk: Bytes,
    produced: Arc<AtomicU64>,
}

impl Body for Generated {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk.len() as u64);
        self.remaining -= n;
        self.produced.fetch_add(n, Ordering::SeqCst);
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n as usize)))))
    }
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Uploads `size` bytes through the balancer; returns the largest gap seen between bytes
/// produced by the client and bytes received by the backend, and the peak RSS growth.
async fn upload(size: u64, slow_reader: bool) -> (u64, u64) {
    let a = spawn_backend("a").await;
    if slow_reader {
        a.behaviour.read_pause_us.store(200, Ordering::SeqCst);
    }
    let balancer = spawn_balancer(config(&[&a])).await;
    let produced = Arc::new(AtomicU64::new(0));
    let body = Generated {
        remaining: size,
        chunk: Bytes::from(vec![b'x'; 64 * 1024]),
        produced: produced.clone(),
    };
    let stream = tokio::net::TcpStream::connect(balancer.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::post("/upload")
        .header("host", "app.test")
        .header("content-length", size)
        .body(body)
        .unwrap();
    let baseline = rss_bytes();
    let received = a.body_bytes.clone();
    let monitor = {
        let produced = produced.clone();
        tokio::spawn(async move {
            let (mut max_gap, mut max_rss) = (0u64, 0u64);
            for _ in 0..6000 {
                let gap = produced
                    .load(Ordering::SeqCst)
                    .saturating_sub(received.load(Ordering::SeqCst));
                max_gap = max_gap.max(gap);
                max_rss = max_rss.max(rss_bytes().saturating_sub(baseline));
                if received.load(Ordering::SeqCst) >= size {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (max_gap, max_rss)
        })
    };
    let response = tokio::time::timeout(Duration::from_secs(60), sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(a.body_bytes.load(Ordering::SeqCst), size);
    monitor.await.unwrap()
}

/// Peak resident memory of a process, from /proc.
fn peak_rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test]
async fn a_one_gib_upload_streams_through_the_binary_with_small_memory() {
    // The real binary in its own process, so its memory is measured alone.
    let a = spawn_backend("a").await;
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_balancer"))
        .args(["--listen", &listen, "--backend", &a.addr.to_string()])
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = listen.parse().unwrap();
    assert!(
        eventually(Duration::from_secs(10), async || {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await
    );
    let pid = child.id().unwrap();
    let size: u64 = 1 << 30;
    let started = Instant::now();
    let produced = Arc::new(AtomicU64::new(0));
    let body = Generated {
        remaining: size,
        chunk: Bytes::from(vec![b'x'; 64 * 1024]),
        produced,
    };
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::post("/upload")
        .header("host", "app.test")
        .header("content-length", size)
        .body(body)
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(120), sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(a.body_bytes.load(Ordering::SeqCst), size);
    let peak = peak_rss_of(pid);
    eprintln!(
        "1 GiB upload through the binary: {:?}, balancer peak RSS {} KiB",
        started.elapsed(),
        peak / 1024
    );
    assert!(
        peak > 0 && peak < 48 << 20,
        "balancer peak RSS {peak} bytes"
    );
    child.kill().await.unwrap();
}

#[tokio::test]
async fn a_slow_backend_pushes_back_on_the_client_instead_of_being_buffered() {
    let (gap, _) = upload(128 << 20, true).await;
    // Loopback socket buffers on the two hops can hold up to ~20 MiB between them; anything
    // like the whole body in flight would mean the balancer buffers.
    assert!(gap < 40 << 20, "up to {gap} bytes were in flight");
}

#[tokio::test]
async fn sigterm_style_shutdown_lets_in_flight_requests_finish() {
    let a = spawn_backend("a").await;
    a.behaviour.delay_ms.store(500, Ordering::SeqCst);
    let balancer = spawn_balancer(config(&[&a])).await;
    let addr = balancer.addr;
    let in_flight = tokio::spawn(async move { get(addr, "/").await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    balancer.shutdown().await;
    assert_eq!(
        in_flight.await.unwrap().status,
        200,
        "the in-flight request finished"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn shutdown_waits_for_upgraded_connections_within_the_grace_period() {
    let a = spawn_backend("a").await;
    let mut config = config(&[&a]);
    config.timeouts.shutdown_grace = Duration::from_millis(1500);
    let balancer = spawn_balancer(config).await;

    // A tunnel its client closes during the drain: shutdown ends as soon as it is gone.
    let (mut closing, head) = open_tunnel(balancer.addr).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    // A tunnel nobody closes: it is cut when the grace period ends.
    let (mut lingering, head) = open_tunnel(balancer.addr).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    let started = Instant::now();
    let shutdown = tokio::spawn(balancer.shutdown());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        echo(&mut closing, "still open").await,
        "tunnels keep working while draining"
    );
    assert!(echo(&mut lingering, "me too").await);
    drop(closing);
    shutdown.await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(4),
        "the lingering tunnel held shutdown until the grace period's end, no longer: {took:?}"
    );
    assert!(
        !echo(&mut lingering, "gone").await,
        "closed at the end of the grace period"
    );
}

#[tokio::test]
async fn a_dns_name_stands_for_all_its_addresses_and_changes_are_followed() {
    // "localhost" resolves to 127.0.0.1 (and maybe ::1); a backend on both stands in for
    // a scaled service.
    let a = spawn_backend_on("127.0.0.1:0".parse().unwrap(), "v4").await;
    let mut config = config(&[]);
    config.backends = vec![format!("localhost:{}", a.addr.port()).parse().unwrap()];
    let balancer = spawn_balancer(config).await;
    let addrs: Vec<_> = balancer
        .registry
        .load()
        .backends
        .iter()
        .map(|b| b.addr)
        .collect();
    assert!(addrs.contains(&a.addr), "{addrs:?}");
    assert_eq!(get(balancer.addr, "/").await.status, 200);
}

#[tokio::test]
async fn the_binary_rejects_bad_config_with_the_file_line_and_key() {
    let dir = std::env::temp_dir().join(format!("balancer-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("balancer.toml");
    std::fs::write(&file, "backends = [\"a:80\"]\n[health]\nrise = 0\n").unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_balancer"))
        .arg("--config")
        .arg(&file)
        .env_remove("BALANCER_BACKENDS")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("balancer.toml") && stderr.contains("line 3") && stderr.contains("rise"),
        "{stderr}"
    );

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_balancer"))
        .args(["--backend", "a:80", "--health-interval", "soon"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--health-interval"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn the_healthcheck_subcommand_only_opens_a_tcp_connection() {
    let a = spawn_backend("a").await;
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_balancer"))
        .args(["healthcheck", "--addr", &a.addr.to_string()])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(a.hits(), 0, "no HTTP request was sent");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_balancer"))
        .args(["healthcheck", "--listen", &closed.to_string()])
        .status()
        .await
        .unwrap();
    assert_eq!(status.code(), Some(1));
}
