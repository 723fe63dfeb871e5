//! The balancer's own HTTP/1.1 client, seen from the backend's socket: scripted backends
//! answer with exact bytes (chunked, close-delimited, interim 1xx, bodiless, broken) and
//! record what reached them on which connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::helpers::{Answer, Running, config, eventually, raw, send};

/// What the backend does after writing a scripted answer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum After {
    /// Waits for the next request on the same connection.
    Keep,
    /// Closes the connection.
    Close,
}

/// One scripted answer, used for the next request that arrives on any connection.
#[derive(Clone, Debug)]
struct Reply {
    bytes: &'static [u8],
    after: After,
}

fn reply(bytes: &'static [u8], after: After) -> Reply {
    Reply { bytes, after }
}

/// A request as the backend received it: the connection it came on and its raw bytes.
#[derive(Clone, Debug)]
struct Received {
    connection: usize,
    bytes: String,
}

struct Scripted {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    /// Connections the backend has closed (its socket dropped, so its FIN is sent).
    closed: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Scripted {
    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// Reads one request (head, then a body framed by Content-Length or chunked coding).
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map(|v| v.trim().parse::<usize>().unwrap());
    let chunked = head.contains("transfer-encoding: chunked");
    let complete = |buf: &[u8]| -> Option<usize> {
        match (length, chunked) {
            (Some(n), _) => (buf.len() >= head_end + n).then_some(head_end + n),
            (None, true) => buf[head_end..]
                .windows(5)
                .position(|w| w == b"0\r\n\r\n")
                .map(|i| head_end + i + 5),
            (None, false) => Some(head_end),
        }
    };
    let end = loop {
        if let Some(end) = complete(buf) {
            break end;
        }
        let mut chunk = [0u8; 65536];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    Some(buf.drain(..end).collect())
}

async fn scripted(replies: Vec<Reply>) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let replies = Arc::new(Mutex::new(replies.into_iter()));
    let log = received.clone();
    let closed = Arc::new(AtomicUsize::new(0));
    let closes = closed.clone();
    let task = tokio::spawn(async move {
        let mut connection = 0;
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            connection += 1;
            let (log, replies, closes) = (log.clone(), replies.clone(), closes.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(request) = read_request(&mut stream, &mut buf).await {
                    log.lock().unwrap().push(Received {
                        connection,
                        bytes: String::from_utf8_lossy(&request).into_owned(),
                    });
                    let Some(reply) = replies.lock().unwrap().next() else {
                        break;
                    };
                    if stream.write_all(reply.bytes).await.is_err() || reply.after == After::Close {
                        break;
                    }
                }
                drop(stream);
                closes.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    Scripted {
        addr,
        received,
        closed,
        task,
    }
}

async fn balancer_for(backend: &Scripted) -> crate::helpers::Running {
    let mut config = config(&[]);
    config.backends = vec![backend.addr.to_string().parse().unwrap()];
    Running::start(config).await
}

fn post(path: &str, body: &'static [u8], headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut builder = Request::post(path).header("host", "app.test");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::from_static(body))).unwrap()
}

async fn get(addr: SocketAddr, path: &str) -> Answer {
    crate::helpers::get(addr, path).await
}

#[tokio::test]
async fn chunked_answers_are_decoded_and_their_connection_reused() {
    let backend = scripted(vec![
        reply(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n",
            After::Keep,
        ),
        reply(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond", After::Keep),
    ])
    .await;
    let balancer = balancer_for(&backend).await;
    let first = get(balancer.addr, "/one").await;
    assert_eq!((first.status, first.body.as_str()), (200, "hello, world"));
    let second = get(balancer.addr, "/two").await;
    assert_eq!((second.status, second.body.as_str()), (200, "second"));
    let received = backend.received();
    assert_eq!(received.len(), 2);
    assert_eq!(
        received[0].connection, received[1].connection,
        "the connection was reused"
    );
    assert!(
        received[0].bytes.starts_with("GET /one HTTP/1.1\r\n"),
        "{}",
        received[0].bytes
    );
}

#[tokio::test]
async fn close_delimited_answers_are_read_to_the_end_and_never_reused() {
    let backend = scripted(vec![
        reply(
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",
            After::Close,
        ),
        reply(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            After::Keep,
        ),
    ])
    .await;
    let balancer = balancer_for(&backend).await;
    let first = get(balancer.addr, "/").await;
    assert_eq!((first.status, first.body.as_str()), (200, "until the end"));
    let second = get(balancer.addr, "/").await;
    assert_eq!((second.status, second.body.as_str()), (200, "ok"));
    let received = backend.received();
    assert_ne!(received[0].connection, received[1].connection);
}

#[tokio::test]
async fn interim_answers_are_skipped_and_bodiless_answers_read_no_body() {
    let backend = scripted(vec![
        reply(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\nmade",
            After::Keep,
        ),
        // HEAD: the length describes the body a GET would get; none follows.
        reply(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", After::Keep),
        reply(b"HTTP/1.1 204 No Content\r\n\r\n", After::Keep),
        reply(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlast", After::Keep),
    ])
    .await;
    let balancer = balancer_for(&backend).await;
    let created = send(balancer.addr, post("/", b"data", &[])).await;
    assert_eq!((created.status, created.body.as_str()), (201, "made"));
    let head = Request::head("/")
        .header("host", "app.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let head = send(balancer.addr, head).await;
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    assert_eq!(head.headers["content-length"], "100");
    let empty = get(balancer.addr, "/").await;
    assert_eq!((empty.status, empty.body.as_str()), (204, ""));
    let last = get(balancer.addr, "/").await;
    assert_eq!((last.status, last.body.as_str()), (200, "last"));
    let received = backend.received();
    assert_eq!(received.len(), 4);
    assert!(
        received
            .iter()
            .all(|r| r.connection == received[0].connection),
        "one connection for all: {received:?}"
    );
}

#[tokio::test]
async fn request_bodies_keep_their_length_or_are_rechunked() {
    let backend = scripted(vec![
        reply(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", After::Keep),
        reply(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", After::Keep),
    ])
    .await;
    let balancer = balancer_for(&backend).await;
    let answer = send(balancer.addr, post("/len", b"0123456789", &[])).await;
    assert_eq!(answer.status, 200);
    let chunked = raw(
        balancer.addr,
        b"POST /chunked HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    )
    .await;
    assert!(chunked.starts_with("HTTP/1.1 200"), "{chunked}");
    let received = backend.received();
    let with_length = &received[0].bytes;
    assert!(
        with_length.contains("content-length: 10\r\n"),
        "{with_length}"
    );
    assert!(with_length.ends_with("\r\n\r\n0123456789"), "{with_length}");
    assert!(!with_length.contains("transfer-encoding"), "{with_length}");
    let rechunked = &received[1].bytes;
    assert!(
        rechunked.contains("transfer-encoding: chunked\r\n"),
        "{rechunked}"
    );
    assert!(!rechunked.contains("content-length"), "{rechunked}");
    let body = &rechunked[rechunked.find("\r\n\r\n").unwrap() + 4..];
    let decoded: String = body
        .split("\r\n")
        .collect::<Vec<_>>()
        .chunks(2)
        .filter(|pair| pair.len() == 2)
        .map(|pair| pair[1])
        .collect();
    assert_eq!(decoded, "abcde", "{body:?}");
}

#[tokio::test]
async fn a_pooled_connection_the_backend_closed_is_replaced_without_an_error() {
    let backend = scripted(vec![
        // Keep-alive promised, then the backend closes the idle connection anyway.
        reply(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst",
            After::Close,
        ),
        reply(
            b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond",
            After::Keep,
        ),
    ])
    .await;
    let balancer = balancer_for(&backend).await;
    assert_eq!(get(balancer.addr, "/").await.body, "first");
    // Wait until the backend has closed the pooled connection. Whether the balancer's
    // reactor has seen the FIN yet when the next request comes (the connection is dropped
    // on its way out of the pool) or not (the head's write or the first read finds it
    // closed, before anything was sent) is up to the scheduler; both must end the same way.
    let closed = backend.closed.clone();
    assert!(
        eventually(Duration::from_secs(10), async || closed
            .load(Ordering::SeqCst)
            == 1)
        .await,
        "hang guard: the backend closed its connection"
    );
    let second = get(balancer.addr, "/").await;
    assert_eq!((second.status, second.body.as_str()), (200, "second"));
    let received = backend.received();
    assert_eq!(received.len(), 2, "each request reached the backend once");
    assert_ne!(received[0].connection, received[1].connection);
}

#[tokio::test]
async fn broken_answers_give_502_and_truncated_bodies_abort_the_response() {
    let backend = scripted(vec![
        reply(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
            After::Close,
        ),
        reply(b"SPDY/3 200 OK\r\n\r\n", After::Close),
        reply(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            After::Close,
        ),
        reply(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            After::Keep,
        ),
    ])
    .await;
    let balancer = balancer_for(&backend).await;
    assert_eq!(
        get(balancer.addr, "/").await.status,
        502,
        "conflicting lengths"
    );
    assert_eq!(get(balancer.addr, "/").await.status, 502, "not HTTP");
    // The backend promised 10 bytes and sent 5: the client's connection must end without a
    // complete answer (hyper may not even have flushed the head), never wait or look whole.
    let mut stream = TcpStream::connect(balancer.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("the client's connection is closed")
        .ok();
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.is_empty() || (out.starts_with("HTTP/1.1 200") && out.ends_with("\r\n\r\nshort")),
        "the answer is cut short: {out:?}"
    );
    // The balancer is still serving.
    let fine = get(balancer.addr, "/").await;
    assert_eq!((fine.status, fine.body.as_str()), (200, "ok"));
}

#[tokio::test]
async fn an_early_answer_during_an_upload_reaches_the_client() {
    // The backend answers 413 after the head, without reading the body.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (answered, client_has_answer) = tokio::sync::oneshot::channel::<()>();
    let backend = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            head.extend_from_slice(&buf[..n]);
        }
        stream
            .write_all(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big\n")
            .await
            .unwrap();
        // Keep the socket open without reading, as a busy server would, until the client
        // has its answer: the answer cannot have been forced out by this end closing.
        let _ = tokio::time::timeout(Duration::from_secs(30), client_has_answer).await;
        drop(stream);
    });
    let mut config = config(&[]);
    config.backends = vec![addr.to_string().parse().unwrap()];
    let balancer = Running::start(config).await;
    // 64 MiB announced; only the first part is ever sent by this client.
    let mut client = TcpStream::connect(balancer.addr).await.unwrap();
    client
        .write_all(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 67108864\r\n\r\n")
        .await
        .unwrap();
    client.write_all(&vec![b'x'; 256 * 1024]).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut answer))
        .await
        .expect("answered while the upload was still going")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let _ = answered.send(());
    backend.await.unwrap();
}
