//! Test servers on 127.0.0.1 port 0 (a small hand-written HTTP/1.1 server with scripted
//! behaviours) and a way to run loadgen in-process with command-line arguments.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use loadgen::{CancellationToken, Opts, Report, RunConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// What a test server does with each request.
#[derive(Debug, Clone)]
pub enum Behavior {
    /// Answers 200 with these extra headers after `delay`.
    Respond {
        headers: Vec<(String, String)>,
        delay: Duration,
    },
    /// Gives a new `sid` cookie to requests without one and names the instance after the
    /// session: a perfectly sticky backend, so cookie handling shows in the groups.
    SessionPerCookie,
    /// Reads the request, then resets the connection.
    Reset,
    /// Reads the request and never answers; closes only after the client has closed.
    Silent,
    /// Answers every request with these exact bytes, then closes the connection when
    /// `close` is set (whatever the response says).
    Raw { response: Vec<u8>, close: bool },
}

pub fn instance(name: &str) -> Behavior {
    Behavior::Respond {
        headers: vec![("X-Instance-Id".to_owned(), name.to_owned())],
        delay: Duration::ZERO,
    }
}

/// A server that lives as long as this value.
pub struct TestServer {
    pub addr: SocketAddr,
    requests: Arc<AtomicU64>,
    last_request: Arc<Mutex<String>>,
    task: JoinHandle<()>,
}

impl TestServer {
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The raw text (head and body) of the latest request.
    pub fn last_request(&self) -> String {
        self.last_request.lock().expect("not poisoned").clone()
    }

    /// Requests read so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn spawn_server(behavior: Behavior) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let requests = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&requests);
    let last_request = Arc::new(Mutex::new(String::new()));
    let last = Arc::clone(&last_request);
    let sessions = Arc::new(AtomicU64::new(0));
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let behavior = behavior.clone();
            let seen = Seen {
                requests: Arc::clone(&counter),
                last: Arc::clone(&last),
                sessions: Arc::clone(&sessions),
            };
            tokio::spawn(async move {
                let _ = serve(stream, behavior, seen).await;
            });
        }
    });
    TestServer {
        addr,
        requests,
        last_request,
        task,
    }
}

/// A port on which nothing listens, and nothing can start listening while this lives: the
/// socket is bound but never listens, so connections are refused (RST) and the port is not
/// free for another test's server to be given.
pub struct RefusingPort {
    pub addr: SocketAddr,
    _bound: TcpSocket,
}

impl RefusingPort {
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

pub fn refusing_port() -> RefusingPort {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(([127, 0, 0, 1], 0).into()).expect("bind");
    RefusingPort {
        addr: socket.local_addr().expect("local addr"),
        _bound: socket,
    }
}

/// Polls `check` every 10 ms until it holds, at most 30 s (a hang guard, not a measure).
pub async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}

/// What the server keeps about the requests it read.
struct Seen {
    requests: Arc<AtomicU64>,
    last: Arc<Mutex<String>>,
    sessions: Arc<AtomicU64>,
}

struct RequestHead {
    close: bool,
    cookie_sid: Option<String>,
    raw: String,
}

/// Reads one request (head and Content-Length body); `None` when the peer closed.
async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<RequestHead> {
    let head_end = loop {
        if let Some(position) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break position + 4;
        }
        if buffer.len() > 64 * 1024 {
            return None;
        }
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    let mut content_length = 0usize;
    let mut close = false;
    let mut cookie_sid = None;
    for line in head.lines().skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim() {
            "content-length" => content_length = value.parse().unwrap_or(0),
            "connection" => close = value == "close",
            "cookie" => {
                cookie_sid = value
                    .split(';')
                    .filter_map(|pair| pair.trim().strip_prefix("sid="))
                    .map(str::to_owned)
                    .next();
            }
            _ => {}
        }
    }
    while buffer.len() < head_end + content_length {
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    let raw = String::from_utf8_lossy(&buffer[..head_end + content_length]).into_owned();
    buffer.drain(..head_end + content_length);
    Some(RequestHead {
        close,
        cookie_sid,
        raw,
    })
}

async fn serve(mut stream: TcpStream, behavior: Behavior, seen: Seen) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    while let Some(request) = read_request(&mut stream, &mut buffer).await {
        *seen.last.lock().expect("not poisoned") = request.raw.clone();
        seen.requests.fetch_add(1, Ordering::SeqCst);
        let mut extra = String::new();
        match &behavior {
            Behavior::Respond { headers, delay } => {
                tokio::time::sleep(*delay).await;
                for (name, value) in headers {
                    extra.push_str(&format!("{name}: {value}\r\n"));
                }
            }
            Behavior::SessionPerCookie => {
                let sid = match request.cookie_sid {
                    Some(sid) => sid,
                    None => {
                        let sid = format!("s{}", seen.sessions.fetch_add(1, Ordering::SeqCst));
                        extra.push_str(&format!("Set-Cookie: sid={sid}; Path=/\r\n"));
                        sid
                    }
                };
                extra.push_str(&format!("X-Instance-Id: {sid}\r\n"));
            }
            Behavior::Reset => {
                socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
                return Ok(());
            }
            Behavior::Silent => {
                // Only the client's own timeout can end this exchange.
                let mut chunk = [0u8; 1024];
                while stream.read(&mut chunk).await.is_ok_and(|n| n > 0) {}
                return Ok(());
            }
            Behavior::Raw { response, close } => {
                stream.write_all(response).await?;
                if *close || request.close {
                    return Ok(());
                }
                continue;
            }
        }
        let response = format!("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n{extra}\r\nok");
        stream.write_all(response.as_bytes()).await?;
        if request.close {
            return Ok(());
        }
    }
    Ok(())
}

/// Runs loadgen in-process as `loadgen -q ARGS...`, bounded so a hang fails the test.
pub async fn run_loadgen(args: &[&str]) -> Report {
    let opts = Opts::try_parse_from(["loadgen", "-q"].iter().chain(args.iter()))
        .expect("test arguments parse");
    let config = RunConfig::from_opts(&opts).expect("test arguments are valid");
    tokio::time::timeout(
        Duration::from_secs(30),
        loadgen::run_config(config, CancellationToken::new()),
    )
    .await
    .expect("loadgen finished within 30s")
    .expect("loadgen ran")
}
