//! Test harness: in-process backends (small hyper servers that answer with their own id),
//! a balancer on port 0 (in-process as [`Running`], whose builder adds the admin listener,
//! HTTPS from files or ACME, or a configuration file's sources; or the binary, reporting its
//! bound address in its log), and the clients every test shares: HTTP/1.1 over any stream
//! (plain or TLS), the admin API, raw sockets, upgrades and echo tunnels.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use balancer::Balancer;
use balancer::admin::auth::AdminToken;
use balancer::backend::Registry;
use balancer::config::{AcmeConfig, BackendSpec, CertificateSpec, Config, Sources};
use balancer::reload::Reloader;
use balancer::tls::acme::Acme;
use balancer::tls::certs::CertStore;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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
    /// While set, requests (but /healthz) are held unanswered: a request a test keeps in
    /// flight for as long as it needs, instead of for a guessed delay.
    pub hold: AtomicBool,
    /// Bytes of padding (`.`) after the echo in every answer's body: a large answer.
    pub pad_bytes: AtomicU64,
}

#[derive(Debug)]
pub struct TestBackend {
    pub id: String,
    pub addr: SocketAddr,
    /// Requests other than health checks.
    pub hits: Arc<AtomicUsize>,
    /// Health-check requests answered.
    pub health_checks: Arc<AtomicUsize>,
    /// Health checks answered 503 (while `unhealthy`) and 200.
    pub failed_checks: Arc<AtomicUsize>,
    pub passed_checks: Arc<AtomicUsize>,
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
    spawn_backend_with(TcpListener::bind(addr).await.unwrap(), id)
}

/// A backend on a listener the test already bound (to choose its address and port).
pub fn spawn_backend_with(listener: TcpListener, id: &str) -> TestBackend {
    let addr = listener.local_addr().unwrap();
    let state = BackendState {
        id: id.to_owned(),
        hits: Arc::default(),
        health_checks: Arc::default(),
        failed_checks: Arc::default(),
        passed_checks: Arc::default(),
        body_bytes: Arc::default(),
        behaviour: Arc::default(),
    };
    let mut backend = TestBackend {
        id: id.to_owned(),
        addr,
        hits: state.hits.clone(),
        health_checks: state.health_checks.clone(),
        failed_checks: state.failed_checks.clone(),
        passed_checks: state.passed_checks.clone(),
        body_bytes: state.body_bytes.clone(),
        behaviour: state.behaviour.clone(),
        task: None,
    };
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
    backend.task = Some(task);
    backend
}

#[derive(Clone)]
struct BackendState {
    id: String,
    hits: Arc<AtomicUsize>,
    health_checks: Arc<AtomicUsize>,
    failed_checks: Arc<AtomicUsize>,
    passed_checks: Arc<AtomicUsize>,
    body_bytes: Arc<AtomicU64>,
    behaviour: Arc<Behaviour>,
}

/// Answers with `x-instance-id`, and echoes the request head in the body as `name: value`
/// lines after a first line with the method and target.
async fn answer(
    state: BackendState,
    mut request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let BackendState {
        id,
        hits,
        health_checks,
        failed_checks,
        passed_checks,
        body_bytes,
        behaviour,
    } = state;
    if request.uri().path() == "/healthz" {
        health_checks.fetch_add(1, Ordering::SeqCst);
        let status = if behaviour.unhealthy.load(Ordering::SeqCst) {
            failed_checks.fetch_add(1, Ordering::SeqCst);
            503
        } else {
            passed_checks.fetch_add(1, Ordering::SeqCst);
            200
        };
        return Ok(reply(&id, status, Bytes::from_static(b"ok")));
    }
    hits.fetch_add(1, Ordering::SeqCst);
    // Bounded, so a test that forgets to release cannot hang the backend for ever.
    for _ in 0..3000 {
        if !behaviour.hold.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
                    tokio::time::timeout(Duration::from_secs(30), io.read(&mut buf)).await
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
    let pad = behaviour.pad_bytes.load(Ordering::SeqCst);
    echo.extend(std::iter::repeat_n('.', usize::try_from(pad).unwrap()));
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
    // Generous: a check that times out on a loaded machine would count as a failure the
    // test did not cause (and delay the first round, which serving waits for).
    config.health.timeout = Duration::from_secs(2);
    config.timeouts.connect = Duration::from_millis(500);
    config.timeouts.shutdown_grace = Duration::from_secs(5);
    config.discovery.resolve_interval = Duration::from_millis(200);
    config
}

/// A balancer running in-process on loopback port 0, as a test starts it:
/// [`Running::start`] for the plain listener alone, [`Running::builder`] for the admin
/// listener, HTTPS (certificate files or ACME) or a configuration file's sources. Each
/// listener's port is read back from the balancer, never chosen by the test.
pub struct Running {
    /// The public listener (with TLS on, the plain one that redirects).
    pub addr: SocketAddr,
    pub registry: Arc<Registry>,
    /// The configuration it was started with (listeners still at port 0).
    pub config: Config,
    admin: Option<SocketAddr>,
    tls: Option<SocketAddr>,
    certificates: Option<Arc<CertStore>>,
    acme: Option<Arc<Acme>>,
    reloader: Reloader,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// What a [`Running`] balancer is started with besides its configuration.
#[must_use]
pub struct Builder {
    config: Config,
    sources: Option<Sources>,
}

impl Builder {
    /// The admin listener on loopback port 0, with `token` (none: loopback needs none).
    pub fn admin(mut self, token: Option<&str>) -> Self {
        self.config.admin.listen = Some("127.0.0.1:0".parse().unwrap());
        self.config.admin.token = token.map(AdminToken::from_text);
        self
    }

    /// HTTPS on loopback port 0 with `certificates`, their files read again every 50 ms.
    pub fn tls(mut self, certificates: Vec<CertificateSpec>) -> Self {
        self.config.tls.listen = Some("127.0.0.1:0".parse().unwrap());
        self.config.tls.certificates = certificates;
        self.config.tls.reload_interval = Duration::from_millis(50);
        self
    }

    /// HTTPS on loopback port 0 with certificates from `acme`.
    pub fn acme(mut self, acme: AcmeConfig) -> Self {
        self.config.tls.listen = Some("127.0.0.1:0".parse().unwrap());
        self.config.tls.acme = Some(acme);
        self
    }

    /// Built from `sources` (a configuration file that a reload reads again).
    pub fn sources(mut self, sources: Sources) -> Self {
        self.sources = Some(sources);
        self
    }

    /// Validates, builds and runs the balancer; it is serving when this returns.
    pub async fn start(self) -> Running {
        let Self { config, sources } = self;
        config.validate().expect("test config is valid");
        let balancer = match sources {
            Some(sources) => Balancer::build_from(config.clone(), sources).await,
            None => Balancer::build(config.clone()).await,
        }
        .unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        Running {
            addr: balancer.local_addr().unwrap(),
            registry: balancer.registry(),
            admin: balancer.admin_addr(),
            tls: balancer.tls_addr(),
            certificates: balancer.certificates(),
            acme: balancer.acme(),
            reloader: balancer.reloader(),
            config,
            stop: Some(stop),
            task: tokio::spawn(balancer.run_until_stopped(async move {
                let _ = stopped.await;
            })),
        }
    }
}

impl Running {
    /// A balancer with `config` and nothing more.
    pub async fn start(config: Config) -> Self {
        Self::builder(config).start().await
    }

    pub fn builder(config: Config) -> Builder {
        Builder {
            config,
            sources: None,
        }
    }

    /// The admin listener's address ([`Builder::admin`]).
    pub fn admin(&self) -> SocketAddr {
        self.admin.expect("started with an admin listener")
    }

    /// The HTTPS listener's address ([`Builder::tls`], [`Builder::acme`]).
    pub fn tls(&self) -> SocketAddr {
        self.tls.expect("started with TLS")
    }

    /// The certificates served over HTTPS.
    pub fn certificates(&self) -> &CertStore {
        self.certificates.as_ref().expect("started with TLS")
    }

    /// The ACME client ([`Builder::acme`]).
    pub fn acme(&self) -> &Arc<Acme> {
        self.acme.as_ref().expect("started with ACME")
    }

    pub fn reloader(&self) -> &Reloader {
        &self.reloader
    }

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

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
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

/// An HTTP/1.1 client (hyper's) on an established stream: a TCP socket, or TLS over one.
pub async fn http1_over<S, B>(stream: S) -> SendRequest<B>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

/// Sends one request on `sender` and reads the answer whole, within 10 s.
pub async fn send_on(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Answer {
    tokio::time::timeout(Duration::from_secs(10), async {
        sender.ready().await.unwrap();
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

/// Sends one request on a fresh connection, within 10 s.
pub async fn send(addr: SocketAddr, request: Request<Full<Bytes>>) -> Answer {
    let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
        .await
        .expect("connected within 10 s")
        .unwrap();
    send_on(&mut http1_over(stream).await, request).await
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

/// Writes raw bytes and reads what comes back until the server closes the connection,
/// which it must do within 10 s (so a test never passes on whatever a timeout cut off).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    raw_on(TcpStream::connect(addr).await.unwrap(), bytes).await
}

/// As [`raw`], on an established stream (TLS, say).
pub async fn raw_on<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, bytes: &[u8]) -> String {
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the server did not close the connection within 10 s; got {:?}",
                String::from_utf8_lossy(&out)
            )
        });
    // A reset after the answer still ends the exchange; what was read is the answer.
    if let Err(error) = read {
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::ConnectionReset,
            "reading the answer: {error}"
        );
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A request for the admin listener, with `token` as its bearer token if any.
pub fn admin_request(
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Bytes,
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    builder.body(Full::new(body)).unwrap()
}

/// One admin API call, with `token` as the bearer token if any: its status and JSON
/// body.
pub async fn admin_call(
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let answer = send(admin, admin_request(method, path, token, Bytes::from(body))).await;
    let json = serde_json::from_str(&answer.body)
        .unwrap_or_else(|e| panic!("admin answer is not JSON ({e}): {}", answer.body));
    (answer.status, json)
}

/// The admin API's entry for `address`, if it is in the set.
pub async fn listed(admin: SocketAddr, token: Option<&str>, address: SocketAddr) -> Option<Value> {
    let (status, list) = admin_call(admin, "GET", "/api/backends", token, None).await;
    assert_eq!(status, 200, "{list}");
    list["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == address.to_string())
        .cloned()
}

/// Whether the peer ended `stream` (end of stream or reset) rather than sending more;
/// waits for that event, with a 10 s hang guard.
pub async fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(_)) => false,
        Err(_) => panic!("the connection neither closed nor sent anything within 10 s"),
    }
}

/// An address nothing listens on, for as long as the value lives: the port is held by a
/// bound socket that never listens, so connects are refused and no other test can take
/// it (unlike a port bound, read and released).
#[derive(Debug)]
pub struct ClosedPort {
    pub addr: SocketAddr,
    _held: tokio::net::TcpSocket,
}

pub fn closed_port() -> ClosedPort {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    ClosedPort {
        addr: socket.local_addr().unwrap(),
        _held: socket,
    }
}

/// Asks for an upgrade to the test backends' `echo` protocol and reads the answer's head;
/// returns the connection and the head, lower-cased.
pub async fn open_tunnel(addr: SocketAddr) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = upgrade_on(&mut stream, "app.test").await;
    (stream, head)
}

/// Asks for an upgrade to the `echo` protocol on `stream` naming `host`; the answer's
/// head, lower-cased.
pub async fn upgrade_on<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, host: &str) -> String {
    stream
        .write_all(
            format!(
                "GET /ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    read_head(stream).await
}

/// Reads a response head byte by byte (nothing after it is taken), each byte within
/// 10 s; lower-cased.
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut byte))
            .await
            .expect("the answer's head within 10 s")
            .unwrap();
        head.push(byte[0]);
        assert!(head.len() < 4096);
    }
    String::from_utf8(head).unwrap().to_ascii_lowercase()
}

/// A connection to `addr` with a small receive buffer: most of a large answer then still
/// waits in the server's send queue when the server is done writing, where a reset (a
/// close with unread bytes) would drop it.
pub async fn connect_with_small_window(addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Asks for `/large` on `stream` with `Connection: close`, then reads the answer while
/// writing on ([`read_while_writing`]): when the server is done with the answer, bytes it
/// never read are waiting, and closing on them would be a reset. Asserts a 200 that closes
/// the connection, all of its Content-Length, then a clean end of stream; returns the
/// Content-Length.
pub async fn closing_answer_read_while_writing<S>(mut stream: S, host: &str) -> usize
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let request = format!("GET /large HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no content-length: {head}"));
    let client = read_while_writing(stream, Duration::from_secs(30)).await;
    assert!(client.written > 0, "the client wrote on");
    assert_eq!(client.read, length, "the whole answer ({:?})", client.end);
    client
        .end
        .expect("a clean end of stream after the answer, not a reset");
    length
}

/// What a client that writes on while it reads saw: the bytes it read, how its reading
/// ended (`Ok` at the end of stream; a reset is an error) and how many bytes it wrote.
#[derive(Debug)]
pub struct WroteOn {
    pub read: usize,
    pub end: std::io::Result<()>,
    pub written: usize,
}

/// Reads `stream` to its end while writing to it all along (at most 8 MiB, until the
/// reading ends or a write fails), as a client that pipelines, or streams a body its
/// answer made moot, does. Within the hang guard `limit`.
pub async fn read_while_writing<S>(stream: S, limit: Duration) -> WroteOn
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (done, mut finished) = oneshot::channel::<()>();
    let writing = tokio::spawn(async move {
        let chunk = vec![b'x'; 16 * 1024];
        let mut written = 0usize;
        // More than a socket's buffers take, less than the default `lingering_bytes`.
        for _ in 0..512 {
            tokio::select! {
                _ = &mut finished => break,
                wrote = writer.write_all(&chunk) => match wrote {
                    Ok(()) => written += chunk.len(),
                    Err(_) => break,
                },
            }
        }
        written
    });
    let mut read = 0;
    let mut chunk = vec![0u8; 4096];
    let end = tokio::time::timeout(limit, async {
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) => return Ok(()),
                Ok(n) => read += n,
                Err(error) => return Err(error),
            }
        }
    })
    .await
    .expect("hang guard: the stream ended");
    let _ = done.send(());
    let written = writing.await.unwrap();
    WroteOn { read, end, written }
}

/// Sends `message` through an echo tunnel; whether it came back upper-cased. Panics if
/// nothing (not even the connection's end) comes back within 10 s: a hang guard, never an
/// answer, so "no echo" can only mean the tunnel was closed.
pub async fn echo<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, message: &str) -> bool {
    if stream.write_all(message.as_bytes()).await.is_err() {
        return false;
    }
    let mut reply = vec![0u8; message.len()];
    match tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut reply)).await {
        Ok(read) => read.is_ok() && reply == message.to_ascii_uppercase().as_bytes(),
        Err(_) => panic!("hang guard: no echo of {message:?} and no close within 10 s"),
    }
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

/// The balancer binary in its own process. It listens where its arguments say (port 0 in
/// tests) and reports the bound address in its "balancer ready" log line, which is how a
/// test learns it: no port is ever chosen by the test and handed over.
#[derive(Debug)]
pub struct BinaryBalancer {
    pub addr: SocketAddr,
    pub pid: u32,
    /// What runs, for failure messages.
    what: String,
    child: tokio::process::Child,
    stdout: Arc<std::sync::Mutex<Vec<String>>>,
    stderr: Arc<std::sync::Mutex<String>>,
}

impl BinaryBalancer {
    /// Starts `command` (the balancer binary) with JSON logs at info level on a pipe, and
    /// waits (at most 30 s) for it to be ready.
    pub async fn start(command: tokio::process::Command) -> Self {
        Self::start_or_explain(command, "the balancer binary").await
    }

    /// As [`Self::start`], for a command that wraps the binary; `what` describes it in the
    /// failure message if it cannot start or exits before the balancer is ready.
    pub async fn start_or_explain(mut command: tokio::process::Command, what: &str) -> Self {
        command
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env_remove("BALANCER_CONFIG")
            .env_remove("BALANCER_LISTEN")
            .env_remove("BALANCER_BACKENDS")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: cannot start {command:?}: {e}"));
        let pid = child.id().expect("the child has a pid");
        let stdout = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stderr = Arc::new(std::sync::Mutex::new(String::new()));
        let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
        let lines = stdout.clone();
        tokio::spawn(async move {
            let mut line = String::new();
            while matches!(
                tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line).await,
                Ok(n) if n > 0
            ) {
                lines.lock().unwrap().push(std::mem::take(&mut line));
            }
        });
        let mut err = child.stderr.take().unwrap();
        let text = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf).await
                && n > 0
            {
                text.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut balancer = Self {
            addr: "0.0.0.0:0".parse().unwrap(),
            pid,
            what: what.to_owned(),
            child,
            stdout,
            stderr,
        };
        let ready = balancer
            .wait_for_log(Duration::from_secs(30), |l| {
                l.contains("\"balancer ready\"")
            })
            .await;
        balancer.addr = json_field(&ready, "listen")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no listen address in {ready}"));
        balancer
    }

    /// The first log line (stdout) matching `wanted`, waiting for it at most `limit`;
    /// panics with the process's output if it exits or the line does not come.
    pub async fn wait_for_log(&mut self, limit: Duration, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(line) = self.stdout.lock().unwrap().iter().find(|l| wanted(l)) {
                return line.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the readers take in the last output before reporting it.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while !(Arc::strong_count(&self.stdout) == 1
                        && Arc::strong_count(&self.stderr) == 1)
                    {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
                .await;
                panic!(
                    "{} exited ({status}) before the awaited log line\n{}",
                    self.what,
                    self.output()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: the awaited log line did not come within {limit:?}\n{}",
                self.what,
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Everything the process wrote so far, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "stdout:\n{}stderr:\n{}",
            self.stdout.lock().unwrap().concat(),
            self.stderr.lock().unwrap()
        )
    }

    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }
}

/// A string or number field's value in a JSON log line: `"name":"value"` or `"name":42`.
pub fn json_field(line: &str, name: &str) -> Option<String> {
    let start = line.find(&format!("\"{name}\":"))? + name.len() + 3;
    let rest = &line[start..];
    Some(match rest.strip_prefix('"') {
        Some(quoted) => quoted[..quoted.find('"')?].to_owned(),
        None => rest[..rest.find([',', '}'])?].to_owned(),
    })
}
