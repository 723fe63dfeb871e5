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
    let balancer = Running::start(config(&[&a])).await;
    let produced = Arc::new(AtomicU64::new(0));
    let body = Generated {
        remaining: size,
        chunk: Bytes::from(vec![b'x'; 64 * 1024]),
        produced: produced.clone(),
    };
    let stream = tokio::net::TcpStream::connect(balancer.addr).await.unwrap();
    let mut sender = http1_over(stream).await;
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

/// A scratch directory for one test's files, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("balancer-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn a_one_gib_upload_streams_through_the_binary_with_small_memory() {
    // The real binary in its own process, so its memory is measured alone.
    let a = spawn_backend("a").await;
    // The response timeout runs from the request's start, so it covers the whole upload:
    // give it what the upload needs on a slow machine, well inside the hang guard below.
    let scratch = Scratch::new("upload");
    let file = scratch.0.join("balancer.toml");
    std::fs::write(&file, "[timeouts]\nresponse_header = \"240s\"\n").unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_balancer"));
    command.arg("--config").arg(&file).args([
        "--listen",
        "127.0.0.1:0",
        "--backend",
        &a.addr.to_string(),
    ]);
    let balancer = BinaryBalancer::start(command).await;
    let size: u64 = 1 << 30;
    let started = Instant::now();
    let produced = Arc::new(AtomicU64::new(0));
    let body = Generated {
        remaining: size,
        chunk: Bytes::from(vec![b'x'; 64 * 1024]),
        produced,
    };
    let stream = tokio::net::TcpStream::connect(balancer.addr).await.unwrap();
    let mut sender = http1_over(stream).await;
    let request = http::Request::post("/upload")
        .header("host", "app.test")
        .header("content-length", size)
        .body(body)
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(300), sender.send_request(request))
        .await
        .expect("hang guard: the upload finished within 300 s")
        .unwrap();
    assert_eq!(response.status(), 200, "{}", balancer.output());
    assert_eq!(a.body_bytes.load(Ordering::SeqCst), size);
    let peak = peak_rss_of(balancer.pid);
    eprintln!(
        "1 GiB upload through the binary: {:?}, balancer peak RSS {} KiB",
        started.elapsed(),
        peak / 1024
    );
    assert!(
        peak > 0 && peak < 48 << 20,
        "balancer peak RSS {peak} bytes"
    );
    balancer.kill().await;
}

#[tokio::test]
async fn a_slow_backend_pushes_back_on_the_client_instead_of_being_buffered() {
    let (gap, _) = upload(128 << 20, true).await;
    // Loopback socket buffers on the two hops can hold up to ~20 MiB between them; anything
    // like the whole body in flight would mean the balancer buffers.
    assert!(gap < 40 << 20, "up to {gap} bytes were in flight");
}

/// Waits until connects to `addr` are refused: the balancer has closed its listener,
/// the first thing a shutdown does.
async fn until_refused(addr: std::net::SocketAddr) {
    assert!(
        eventually(Duration::from_secs(10), async || {
            tokio::net::TcpStream::connect(addr).await.is_err()
        })
        .await,
        "the listener was closed within 10 s of the shutdown signal"
    );
}

#[tokio::test]
async fn sigterm_style_shutdown_lets_in_flight_requests_finish() {
    let a = spawn_backend("a").await;
    a.behaviour.hold.store(true, Ordering::SeqCst);
    let balancer = Running::start(config(&[&a])).await;
    let addr = balancer.addr;
    let in_flight = tokio::spawn(async move { get(addr, "/").await });
    assert!(
        eventually(Duration::from_secs(10), async || a.hits() == 1).await,
        "the request reached the backend"
    );
    let shutdown = tokio::spawn(balancer.shutdown());
    until_refused(addr).await;
    assert!(
        !shutdown.is_finished() && !in_flight.is_finished(),
        "the drain waits for the request the backend still holds"
    );
    a.behaviour.hold.store(false, Ordering::SeqCst);
    assert_eq!(
        in_flight.await.unwrap().status,
        200,
        "the in-flight request finished"
    );
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("hang guard: shutdown ends once nothing is in flight")
        .unwrap();
}

#[tokio::test]
async fn shutdown_ends_as_soon_as_the_last_tunnel_closes() {
    let a = spawn_backend("a").await;
    let mut config = config(&[&a]);
    // Far longer than the hang guard below: the end of shutdown comes from the tunnel.
    config.timeouts.shutdown_grace = Duration::from_secs(120);
    let balancer = Running::start(config).await;
    let addr = balancer.addr;
    let (mut tunnel, head) = open_tunnel(addr).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    let mut shutdown = tokio::spawn(balancer.shutdown());
    until_refused(addr).await;
    assert!(
        echo(&mut tunnel, "still open").await,
        "the tunnel keeps working while draining"
    );
    assert!(
        !shutdown.is_finished(),
        "the open tunnel holds the shutdown"
    );
    drop(tunnel);
    tokio::time::timeout(Duration::from_secs(30), &mut shutdown)
        .await
        .expect("shutdown ended once its last tunnel closed, long before the grace period")
        .unwrap();
}

#[tokio::test]
async fn shutdown_cuts_tunnels_still_open_when_the_grace_period_ends() {
    let a = spawn_backend("a").await;
    let mut config = config(&[&a]);
    // Room for the steps below to run before it ends, even on a loaded machine.
    let grace = Duration::from_secs(3);
    config.timeouts.shutdown_grace = grace;
    let balancer = Running::start(config).await;
    let addr = balancer.addr;

    // A tunnel its client closes during the drain, and one nobody closes.
    let (mut closing, head) = open_tunnel(addr).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    let (mut lingering, head) = open_tunnel(addr).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    let started = Instant::now();
    let mut shutdown = tokio::spawn(balancer.shutdown());
    until_refused(addr).await;
    assert!(
        echo(&mut closing, "still open").await,
        "tunnels keep working while draining"
    );
    drop(closing);
    assert!(echo(&mut lingering, "me too").await);
    assert!(
        !shutdown.is_finished(),
        "the lingering tunnel holds the shutdown"
    );
    tokio::time::timeout(Duration::from_secs(30), &mut shutdown)
        .await
        .expect("hang guard: the grace period ends the shutdown")
        .unwrap();
    // Timers never fire early, so this lower bound cannot flake: it shows the lingering
    // tunnel was given the whole grace period.
    assert!(
        started.elapsed() >= grace,
        "shutdown ended after {:?}, before the grace period",
        started.elapsed()
    );
    assert!(
        closed_by_peer(&mut lingering).await,
        "the lingering tunnel is closed at the end of the grace period"
    );
}

/// The test's own /etc/hosts for the balancer: rewritten in place (never replaced, since
/// the bind mount holds on to the file itself), and glibc reads it on every lookup.
struct Hosts(std::path::PathBuf);

impl Hosts {
    fn write(&self, entries: &str) {
        use std::io::Write as _;
        let content = format!("127.0.0.1 localhost\n::1 localhost\n{entries}");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .create(true)
            .open(&self.0)
            .unwrap();
        // One write, so a concurrent lookup sees either little or everything.
        file.write_all(content.as_bytes()).unwrap();
    }
}

/// Two backends on the same port of 127.0.0.2 and 127.0.0.3, as the containers of one
/// scaled service would be.
async fn twin_backends() -> (TestBackend, TestBackend) {
    for _ in 0..50 {
        let first = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
        let port = first.local_addr().unwrap().port();
        // Both stay bound from here on; a port taken on 127.0.0.3 just means another try.
        if let Ok(second) = tokio::net::TcpListener::bind(("127.0.0.3", port)).await {
            return (
                spawn_backend_with(first, "two"),
                spawn_backend_with(second, "three"),
            );
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3 in 50 tries");
}

const NAME: &str = "backends.hitscale.test";

#[tokio::test]
async fn a_dns_name_stands_for_all_its_addresses_and_changes_are_followed() {
    let (two, three) = twin_backends().await;
    let port = two.addr.port();
    let scratch = Scratch::new("dns");
    let hosts = Hosts(scratch.0.join("hosts"));
    hosts.write(&format!("127.0.0.2 {NAME}\n"));
    // The binary in its own mount namespace, where the test's hosts file is /etc/hosts:
    // real name resolution through glibc, for this process only.
    let mut command = tokio::process::Command::new("unshare");
    command
        .args([
            "--mount",
            "sh",
            "-c",
            "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
        ])
        .arg(&hosts.0)
        .arg(env!("CARGO_BIN_EXE_balancer"))
        .args(["--listen", "127.0.0.1:0", "--resolve-interval", "100ms"])
        .args(["--backend", &format!("{NAME}:{port}")]);
    let mut balancer = BinaryBalancer::start_or_explain(
        command,
        "the balancer under `unshare --mount` with the test's /etc/hosts (this test needs \
         util-linux's unshare, and root or CAP_SYS_ADMIN for the mount)",
    )
    .await;
    let addr = balancer.addr;
    assert_eq!(
        spread(addr, 4).await.get("two"),
        Some(&4),
        "the name stands for 127.0.0.2 only"
    );
    assert_eq!(three.hits(), 0);

    // Scaled up: the name now stands for two addresses.
    hosts.write(&format!("127.0.0.2 {NAME}\n127.0.0.3 {NAME}\n"));
    let added = balancer
        .wait_for_log(Duration::from_secs(30), |l| {
            l.contains("\"backend added\"") && l.contains(&format!("\"127.0.0.3:{port}\""))
        })
        .await;
    assert_eq!(
        json_field(&added, "origin").as_deref(),
        Some(format!("{NAME}:{port}").as_str())
    );
    // The log line comes just before the new set is swapped in: wait for its first answer.
    assert!(
        eventually(Duration::from_secs(10), async || get(addr, "/")
            .await
            .instance()
            == "three")
        .await
    );
    let counts = spread(addr, 4).await;
    assert_eq!(
        (counts.get("two"), counts.get("three")),
        (Some(&2), Some(&2)),
        "both addresses take turns: {counts:?}"
    );

    // A request held by 127.0.0.2 while it goes away: it drains, not cut off.
    two.behaviour.hold.store(true, Ordering::SeqCst);
    let mut held = None;
    for _ in 0..4 {
        let before = two.hits();
        let request = tokio::spawn(async move { get(addr, "/").await });
        assert!(
            eventually(Duration::from_secs(10), async || request.is_finished()
                || two.hits() > before)
            .await
        );
        if two.hits() > before {
            held = Some(request);
            break;
        }
        assert_eq!(request.await.unwrap().instance(), "three");
    }
    let held = held.expect("round robin sent one of four requests to 127.0.0.2");
    hosts.write(&format!("127.0.0.3 {NAME}\n"));
    let removed = balancer
        .wait_for_log(Duration::from_secs(30), |l| {
            l.contains("\"backend removed\"") && l.contains(&format!("\"127.0.0.2:{port}\""))
        })
        .await;
    assert_eq!(
        json_field(&removed, "in_flight").as_deref(),
        Some("1"),
        "{removed}"
    );
    // Four answers in a row from 127.0.0.3 can only come from the new set.
    let mut in_a_row = 0;
    assert!(
        eventually(Duration::from_secs(10), async || {
            in_a_row = if get(addr, "/").await.instance() == "three" {
                in_a_row + 1
            } else {
                0
            };
            in_a_row == 4
        })
        .await
    );
    let two_hits = two.hits();
    assert_eq!(spread(addr, 6).await.get("three"), Some(&6));
    assert_eq!(
        two.hits(),
        two_hits,
        "nothing new goes to the removed address"
    );
    two.behaviour.hold.store(false, Ordering::SeqCst);
    let answer = held.await.unwrap();
    assert_eq!(
        (answer.status, answer.instance()),
        (200, "two"),
        "the request on the removed address finished there"
    );
    balancer.kill().await;
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
    // A bare listener: whatever the subcommand sends arrives here, and it must be nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut sent = Vec::new();
        // Ends when the subcommand's process closes its side.
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut sent).await;
        sent
    });
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_balancer"))
        .args(["healthcheck", "--addr", &addr.to_string()])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let sent = tokio::time::timeout(Duration::from_secs(10), accepted)
        .await
        .expect("hang guard: the subcommand's connection ended")
        .unwrap();
    assert!(
        sent.is_empty(),
        "no byte was sent: {:?}",
        String::from_utf8_lossy(&sent)
    );

    let closed = closed_port();
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_balancer"))
        .args(["healthcheck", "--listen", &closed.addr.to_string()])
        .status()
        .await
        .unwrap();
    assert_eq!(status.code(), Some(1));
}
