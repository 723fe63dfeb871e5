//! Test harness: in-process backends (small hyper servers that answer with their own id),
//! a balancer on port 0, and a tiny HTTP client plus a raw-socket helper.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use balancer::Balancer;
use balancer::backend::Registry;
use balancer::config::{BackendSpec, Config};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// How a test backend behaves; shared so a test can change it while it runs.
#[derive(Debug, Default)]
pub struct Behaviour {
    pub unhealthy: AtomicBool,
    /// Delay before answering, in milliseconds.
    pub delay_ms: AtomicU64,
    /// Answer every request (but /healthz) with this status instead of 200, if non-zero.
    pub status: AtomicU64,
    /// Pause between body reads, in microseconds (a slow reader).
    pub read_pause_us: AtomicU64,
}

#[derive(Debug)]
pub struct TestBackend {
    pub id: String,
    pub addr: SocketAddr,
    /// Requests other than health checks.
    pub hits: Arc<AtomicUsize>,
    /// Health-check requests answered.
    pub health_checks: Arc<AtomicUsize>,
    /// Bytes of request bodies received.
    pub body_bytes: Arc<AtomicU64>,
    pub behaviour: Arc<Behaviour>,
    task: Option<JoinHandle<()>>,
}

impl TestBackend {
    /// Stops listening and drops every open connection: afterwards connects are refused.
    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn spec(&self) -> BackendSpec {
        self.addr.to_string().parse().unwrap()
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.stop();
    }
}

pub async fn spawn_backend(id: &str) -> TestBackend {
    spawn_backend_on("127.0.0.1:0".parse().unwrap(), id).await
}

pub async fn spawn_backend_on(addr: SocketAddr, id: &str) -> TestBackend {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let health_checks = Arc::new(AtomicUsize::new(0));
    let body_bytes = Arc::new(AtomicU64::new(0));
    let behaviour = Arc::new(Behaviour::default());
    let state = (
        id.to_owned(),
        hits.clone(),
        health_checks.clone(),
        body_bytes.clone(),
        behaviour.clone(),
    );
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = state.clone();
            connections.spawn(async move {
                let service = service_fn(move |request| answer(state.clone(), request));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
            while connections.try_join_next().is_some() {}
        }
    });
    TestBackend {
        id: id.to_owned(),
        addr,
        hits,
        health_checks,
        body_bytes,
        behaviour,
        task: Some(task),
    }
}

type BackendState = (
    String,
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
    Arc<AtomicU64>,
    Arc<Behaviour>,
);

/// Answers with `x-instance-id`, and echoes the request head in the body as `name: value`
/// lines after a first line with the method and target.
async fn answer(
    state: BackendState,
    mut request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (id, hits, health_checks, body_bytes, behaviour) = state;
    if request.uri().path() == "/healthz" {
        health_checks.fetch_add(1, Ordering::SeqCst);
        let status = if behaviour.unhealthy.load(Ordering::SeqCst) {
            503
        } else {
            200
        };
        return Ok(reply(&id, status, Bytes::from_static(b"ok")));
    }
    hits.fetch_add(1, Ordering::SeqCst);
    let delay = behaviour.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if request.headers().contains_key(http::header::UPGRADE) {
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 1024];
                // Echo, upper-cased, until the client closes; bounded by a timeout.
                while let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_secs(5), io.read(&mut buf)).await
                {
                    if n == 0 {
                        break;
                    }
                    let upper = buf[..n].to_ascii_uppercase();
                    if io.write_all(&upper).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut response = reply(&id, 101, Bytes::new());
        response
            .headers_mut()
            .insert("upgrade", "echo".parse().unwrap());
        response
            .headers_mut()
            .insert("connection", "upgrade".parse().unwrap());
        return Ok(response);
    }
    let mut echo = format!("{} {}\n", request.method(), request.uri());
    for (name, value) in request.headers() {
        echo.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
    }
    let pause = behaviour.read_pause_us.load(Ordering::SeqCst);
    let mut body = request.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Some(data) = frame.data_ref() {
            received += data.len() as u64;
            body_bytes.fetch_add(data.len() as u64, Ordering::SeqCst);
        }
        if pause > 0 {
            tokio::time::sleep(Duration::from_micros(pause)).await;
        }
    }
    echo.push_str(&format!("body-bytes: {received}\n"));
    let status = match behaviour.status.load(Ordering::SeqCst) {
        0 => 200,
        s => s as u16,
    };
    Ok(reply(&id, status, Bytes::from(echo)))
}

fn reply(id: &str, status: u16, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    response
        .headers_mut()
        .insert("x-instance-id", id.parse().unwrap());
    response
}

/// A balancer config for tests: loopback port 0, quick timeouts, the given backends.
pub fn config(backends: &[&TestBackend]) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        backends: backends.iter().map(|b| b.spec()).collect(),
        ..Config::default()
    };
    config.health.interval = Duration::from_millis(100);
    config.health.timeout = Duration::from_millis(200);
    config.timeouts.connect = Duration::from_millis(500);
    config.timeouts.shutdown_grace = Duration::from_secs(5);
    config.discovery.resolve_interval = Duration::from_millis(200);
    config
}

#[derive(Debug)]
pub struct TestBalancer {
    pub addr: SocketAddr,
    pub registry: Arc<Registry>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestBalancer {
    /// Signals shutdown and waits (bounded) for the drain to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("balancer drains within 10 s")
            .unwrap();
    }
}

impl Drop for TestBalancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn spawn_balancer(config: Config) -> TestBalancer {
    config.validate().expect("test config is valid");
    let balancer = Balancer::build(config).await.unwrap();
    let addr = balancer.local_addr().unwrap();
    let registry = balancer.registry();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(balancer.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestBalancer {
        addr,
        registry,
        stop: Some(stop),
        task,
    }
}

/// A response read in full.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn instance(&self) -> &str {
        self.headers
            .get("x-instance-id")
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    /// A header the backend saw, from its echo.
    pub fn echoed(&self, name: &str) -> Option<String> {
        let prefix = format!("{name}: ");
        self.body
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
    }
}

/// Sends one request on a fresh connection, within 10 s.
pub async fn send(addr: SocketAddr, request: Request<Full<Bytes>>) -> Answer {
    tokio::time::timeout(Duration::from_secs(10), async {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    })
    .await
    .expect("request answered within 10 s")
}

pub async fn get(addr: SocketAddr, path: &str) -> Answer {
    send(addr, request(path, &[])).await
}

pub fn request(path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut builder = Request::get(path).header("host", "app.test");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::new())).unwrap()
}

/// Writes raw bytes and reads what comes back until the server closes or 3 s pass.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Asks for an upgrade to the test backends' `echo` protocol and reads the answer's head;
/// returns the connection and the head, lower-cased.
pub async fn open_tunnel(addr: SocketAddr) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        head.push(byte[0]);
        assert!(head.len() < 4096);
    }
    (
        stream,
        String::from_utf8(head).unwrap().to_ascii_lowercase(),
    )
}

/// Sends `message` through an echo tunnel; whether it came back upper-cased within 2 s.
pub async fn echo(stream: &mut TcpStream, message: &str) -> bool {
    if stream.write_all(message.as_bytes()).await.is_err() {
        return false;
    }
    let mut reply = vec![0u8; message.len()];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut reply)).await,
        Ok(Ok(_))
    ) && reply == message.to_ascii_uppercase().as_bytes()
}

/// Counts answers per instance id over `n` sequential GETs.
pub async fn spread(addr: SocketAddr, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let answer = get(addr, "/").await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        *counts.entry(answer.instance().to_owned()).or_insert(0) += 1;
    }
    counts
}

/// Polls `condition` every 20 ms for at most `limit`.
pub async fn eventually(limit: Duration, mut condition: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
