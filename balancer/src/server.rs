//! The client side: accepts connections on the public listeners (plain HTTP, and HTTPS
//! when TLS is on), serves HTTP/1.1 with keep-alive under limits and timeouts, and drains
//! gracefully on shutdown.
//!
//! A TLS connection is served by the same code as a plain one once its handshake is done:
//! the serving is generic over the stream ([`ClientStream`]), so the framing tap, hyper,
//! idle parking and the drain are one path. The handshake itself is bounded in time
//! (`timeouts.tls_handshake`) and in number (`limits.max_handshakes`: a connection that
//! finds every handshake slot taken is closed at once, so a flood of silent clients costs
//! sockets for at most the handshake timeout and never queues up).
//!
//! A TLS client that negotiates `h2` by ALPN is served by [`http2`] instead: hyper's
//! HTTP/2 server in front of the same proxy, under the same connection limit.
//!
//! An HTTP/1.1 connection the balancer ends after an answer (`Connection: close`, an
//! error, a request it refuses, a client that pipelined more) gets a lingering close, as
//! nginx's `lingering_close`: closing a socket with unread bytes, or one the client still
//! writes to, makes the kernel send a reset, and a reset that reaches the client before
//! it read the answer destroys the answer. So the write side is shut (the client sees the
//! end of the answer), and what the client still sends is read and discarded until it
//! closes too, within `guards::LingerGuards` (time in all, time with nothing received,
//! bytes). The connection keeps its `max_connections` place meanwhile; shutdown cuts it
//! short. An idle connection closed by `keep_alive_idle` answered nothing since, and one
//! whose socket failed (a reset, a client too slow to send or to read) has no answer left
//! to protect: those are closed at once.

mod http2;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::config::Config;
use crate::framing::{Findings, FramingTap};
use crate::guards::{ClientGuards, Guards, LingerGuards};
use crate::proxy::Proxy;
use crate::proxy::body::ClientBody;
use crate::proxy::error::ProxyError;
use crate::proxy::headers::Scheme;
use crate::tls::Tls;
use crate::tls::redirect::Redirect;
use crate::upstream::BodyError;

/// What a listener serves.
#[derive(Debug, Clone)]
pub enum Front {
    /// Plain HTTP, proxied.
    Plain,
    /// Plain HTTP answered with a redirect to HTTPS (the ACME challenge path excepted).
    Redirect(Redirect),
    /// HTTPS.
    Tls(Tls),
}

/// A bound listener and what it serves.
#[derive(Debug)]
pub struct Listener {
    pub socket: TcpListener,
    pub front: Front,
}

/// A client's byte stream: a TCP socket, or TLS over one. Idle parking waits on the TCP
/// socket underneath.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    fn tcp(&self) -> &TcpStream;
}

impl ClientStream for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl ClientStream for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// What every connection of every listener shares.
struct Shared {
    proxy: Arc<Proxy>,
    /// The start-up bounds: the connection and handshake limits (a reload refuses to
    /// change them), and the client bounds `builder` was made for. Each connection takes
    /// the client bounds of the policy in force when it is accepted.
    guards: Guards,
    builder: http1::Builder,
    connections: Arc<Semaphore>,
    handshakes: Arc<Semaphore>,
    /// Requested when shutdown begins.
    stop: Stop,
}

/// The shutdown signal every connection task waits on beside its connection.
///
/// A `watch` channel's `changed()` (or a `select!`) is polled again at every wake-up of
/// the task, which is several times per request; here the signal is polled once, to
/// register the task, and after that each wake-up costs one atomic load.
#[derive(Debug, Default)]
struct Stop {
    requested: std::sync::atomic::AtomicBool,
    notify: Notify,
}

impl Stop {
    fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Runs `work` until it completes (`Some`) or a stop is requested (`None`).
    async fn or<F: Future + Unpin>(&self, mut work: F) -> Option<F::Output> {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        let mut registered = false;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(output) = Pin::new(&mut work).poll(cx) {
                return Poll::Ready(Some(output));
            }
            if !registered {
                registered = true;
                if notified.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
            }
            // After the registration: a request made before it is seen here, one made
            // after it wakes this task.
            if self.requested() {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }

    /// Resolves once shutdown has begun (at once if it already has).
    async fn stopping(&self) {
        let _ = self.or(std::future::pending::<()>()).await;
    }
}

/// hyper's server settings for client connections under `client`'s header limits.
fn http1_builder(client: &ClientGuards) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // The framing tap bounds head reads and idle keep-alive separately; hyper's one
        // timer covers both as one wait.
        .header_read_timeout(None)
        .max_header_size(client.max_header_bytes)
        .max_headers(client.max_headers)
        .keep_alive(true);
    builder
}

/// Serves until `shutdown` completes, then stops accepting and gives in-flight requests
/// up to the grace period to finish.
pub async fn serve(
    listeners: Vec<Listener>,
    proxy: Arc<Proxy>,
    config: Arc<Config>,
    shutdown: impl Future<Output = ()>,
) {
    let guards = Guards::from_config(&config);
    let connections = Arc::new(Semaphore::new(guards.max_connections));
    let shared = Arc::new(Shared {
        proxy: proxy.clone(),
        guards,
        builder: http1_builder(&guards.client),
        connections: connections.clone(),
        handshakes: Arc::new(Semaphore::new(guards.tls.max_handshakes)),
        stop: Stop::default(),
    });
    // A set, so the loops (and their listeners) go when this future is dropped.
    let mut accepting = JoinSet::new();
    for listener in listeners {
        accepting.spawn(accept(listener, shared.clone()));
    }
    shutdown.await;
    // The grace period of the configuration in force now, reloads included.
    let grace = proxy.policy().config.timeouts.shutdown_grace;
    tracing::info!(
        ?grace,
        "shutting down: no longer accepting, draining in-flight requests"
    );
    let deadline = tokio::time::Instant::now() + grace;
    shared.stop.request();
    // Each loop ends at once on the stop, dropping its listener.
    while accepting.join_next().await.is_some() {}
    // Tunnels hold their connection's permit too: this waits for them as well.
    let all = u32::try_from(guards.max_connections).unwrap_or(u32::MAX);
    match tokio::time::timeout_at(deadline, connections.acquire_many(all)).await {
        Ok(_) => tracing::info!("all connections drained"),
        Err(_) => tracing::warn!("grace period over; closing remaining connections"),
    }
    // Upgraded connections left hyper's hands at their 101: they get what is left of the
    // same grace period.
    proxy.tunnels().drain(deadline).await;
}

/// Accepts on one listener until shutdown begins.
async fn accept(listener: Listener, shared: Arc<Shared>) {
    let Listener { socket, front } = listener;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually EMFILE: back off briefly instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shared.stop.stopping() => break,
        };
        // The slot is taken after the accept: with several listeners (the redirect and
        // HTTPS), a loop waiting to accept must not hold a slot the other needs. At the
        // limit, this one accepted connection waits unserved, and the loop accepts nothing
        // more, so the rest wait in the kernel's backlog as before.
        let permit = tokio::select! {
            permit = shared.connections.clone().acquire_owned() => permit.expect("semaphore is never closed"),
            () = shared.stop.stopping() => break,
        };
        let _ = stream.set_nodelay(true);
        match &front {
            Front::Plain => {
                tokio::spawn(serve_connection(stream, peer, permit, shared.clone(), None));
            }
            Front::Redirect(redirect) => {
                tokio::spawn(serve_connection(
                    stream,
                    peer,
                    permit,
                    shared.clone(),
                    Some(Answering::Redirect(redirect.clone())),
                ));
            }
            Front::Tls(tls) => {
                // Taken here, in accept order, so a full house is decided before the
                // connection costs a task.
                let Ok(handshake) = shared.handshakes.clone().try_acquire_owned() else {
                    tracing::debug!(%peer, "TLS handshake limit reached: connection closed");
                    continue;
                };
                tokio::spawn(handshake_then_serve(
                    stream,
                    peer,
                    permit,
                    handshake,
                    tls.clone(),
                    shared.clone(),
                ));
            }
        }
    }
}

/// Completes the TLS handshake within `timeouts.tls_handshake`, then serves the
/// connection; the handshake slot is given back as soon as the handshake ends.
async fn handshake_then_serve(
    stream: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    handshake: OwnedSemaphorePermit,
    tls: Tls,
    shared: Arc<Shared>,
) {
    let handshaking = std::pin::pin!(tokio::time::timeout(
        shared.guards.tls.handshake,
        tls.acceptor.accept(stream)
    ));
    let Some(accepted) = shared.stop.or(handshaking).await else {
        return;
    };
    drop(handshake);
    let stream = match accepted {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake not completed in time: connection closed");
            return;
        }
    };
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        http2::serve(stream, peer, permit, shared, tls.hsts).await;
        return;
    }
    let answering = Answering::Tls { hsts: tls.hsts };
    serve_connection(stream, peer, permit, shared, Some(answering)).await;
}

/// What a connection does besides proxying.
#[derive(Clone)]
enum Answering {
    /// Plain HTTP with TLS on: redirect.
    Redirect(Redirect),
    /// Over TLS: tell the backend, and add HSTS if configured.
    Tls {
        hsts: Option<hyper::header::HeaderValue>,
    },
}

/// Serves HTTP/1.1 on one client connection until it closes, parking it while idle.
async fn serve_connection<S: ClientStream>(
    stream: S,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    shared: Arc<Shared>,
    answering: Option<Answering>,
) {
    let proxy = shared.proxy.clone();
    // A reload's client bounds apply from the next connection on; hyper's settings are
    // made again only if its header limits changed.
    let client = proxy.policy().guards.client;
    let linger = proxy.policy().guards.linger;
    let start_up = shared.guards.client;
    let reloaded;
    let builder = if (client.max_header_bytes, client.max_headers)
        == (start_up.max_header_bytes, start_up.max_headers)
    {
        &shared.builder
    } else {
        reloaded = http1_builder(&client);
        &reloaded
    };
    let findings = Findings::new();
    // The permit rides with the socket, so a connection that becomes a tunnel keeps
    // counting against the limit until the tunnel closes.
    let mut io = FramingTap::new(stream, findings.clone(), client).holding(permit);
    let requests = Arc::new(AtomicU64::new(0));
    let mut service = service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        let proxy = proxy.clone();
        let index = requests.fetch_add(1, Ordering::Relaxed);
        let conflicting = findings.is_conflicting(index);
        let vouched = findings.vouches_for(index);
        let connect = request.method() == hyper::Method::CONNECT;
        let findings = findings.clone();
        let answering = answering.clone();
        async move {
            let redirected = match &answering {
                Some(Answering::Redirect(redirect)) if vouched && !conflicting => {
                    redirect.answer(&request)
                }
                Some(Answering::Tls { .. }) => {
                    request.extensions_mut().insert(Scheme::Https);
                    None
                }
                _ => None,
            };
            let mut response = if conflicting {
                tracing::debug!(%peer, "refused a request with both Content-Length and Transfer-Encoding");
                ProxyError::BadRequest("both Content-Length and Transfer-Encoding").into_response()
            } else if !vouched {
                // The framing checks could not follow the connection this far: refuse
                // rather than forward what they did not see.
                tracing::debug!(%peer, "refused a request the framing tap could not follow");
                ProxyError::BadRequest("request framing could not be followed").into_response()
            } else if let Some(redirect) = redirected {
                redirect
            } else {
                proxy.handle(peer, request).await
            };
            if let Some(Answering::Tls { hsts: Some(hsts) }) = &answering {
                // The app's own policy, if it sends one, is kept.
                response
                    .headers_mut()
                    .entry(hyper::header::STRICT_TRANSPORT_SECURITY)
                    .or_insert_with(|| hsts.clone());
            }
            let status = response.status();
            if status == hyper::StatusCode::SWITCHING_PROTOCOLS || (connect && status.is_success())
            {
                findings.switched(index);
            } else if findings.must_close_after(index) {
                response.headers_mut().insert(
                    hyper::header::CONNECTION,
                    hyper::header::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, Infallible>(response.map(|body| Answered::new(body, findings)))
        }
    });
    let stop = &shared.stop;
    loop {
        // Boxed: while the connection is parked, the task keeps only the tap.
        let mut connection = Box::new(
            builder
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades(),
        );
        let ended = match stop.or(&mut *connection).await {
            Some(ended) => ended,
            None => {
                // Finish the request in progress, then close instead of keeping alive.
                Pin::new(&mut *connection).graceful_shutdown();
                (&mut *connection).await
            }
        };
        if let Err(error) = &ended {
            tracing::debug!(%peer, %error, "client connection ended with an error");
        }
        // Upgraded: hyper handed the socket to the tunnel.
        let Some(parts) = connection.into_parts() else {
            return;
        };
        let mut tap = parts.io.into_inner();
        // Taken first: while it is set the tap's shutdown leaves the socket open.
        let parked = tap.take_parked();
        if ended.as_ref().is_err_and(failed_on_io) {
            // A reset, or a client too slow to send its head or take its answer: nothing
            // is left that it would read.
            return;
        }
        if ended.is_err() || !parked || !parts.read_buf.is_empty() {
            // Closed after an answer (or hyper's own error answer), or the client ended.
            linger_close(tap, linger, stop).await;
            return;
        }
        if stop.requested() {
            return;
        }
        // Empty, but it still holds hyper's read buffer.
        drop(parts.read_buf);
        // Idle: hyper's buffers went with its connection; wait on the bare socket and
        // start a new one when the next request begins. Over TLS the socket is the one
        // under the TLS session: the tap only parks after a read found nothing, so no
        // decrypted bytes wait inside the session.
        tap.release_buffers();
        tracing::trace!(%peer, "idle connection parked");
        let woke = {
            let readable = std::pin::pin!(tokio::time::timeout_at(
                tap.idle_deadline(),
                tap.get_ref().tcp().readable()
            ));
            matches!(stop.or(readable).await, Some(Ok(Ok(()))))
        };
        if !woke {
            return;
        }
        io = tap;
        service = parts.service;
    }
}

/// Whether hyper's connection ended because the socket failed (a reset, or one of the
/// tap's timeouts), rather than on something the client sent (which hyper answers).
fn failed_on_io(error: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(error) = source {
        if error.is::<std::io::Error>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// Shuts the write side of a connection the balancer ends, then reads and discards what
/// the client still sends until it closes too (end of stream), goes quiet for
/// `bounds.idle`, sends `bounds.max_bytes`, or `bounds.time` has passed; shutdown cuts it
/// short. Only then is the socket closed: with nothing unread, the kernel ends it with a
/// FIN, not a reset that could destroy the answer the client is still reading.
async fn linger_close<S: ClientStream>(mut tap: FramingTap<S>, bounds: LingerGuards, stop: &Stop) {
    if bounds.max_bytes == 0 {
        return;
    }
    let lingering = std::pin::pin!(tokio::time::timeout(bounds.time, async {
        // hyper shut the write side already when it ended cleanly; after an error it may
        // not have. A second shutdown changes nothing; a failed one means the client is
        // gone (or stopped reading past `client_write`): nothing is left to protect.
        if tokio::io::AsyncWriteExt::shutdown(&mut tap).await.is_err() {
            return 0;
        }
        // The bytes are read raw from the TCP socket, under TLS too: none of them is used.
        let tcp = tap.get_ref().tcp();
        let mut buf = vec![0u8; 4096];
        let mut discarded = 0usize;
        loop {
            if !matches!(
                tokio::time::timeout(bounds.idle, tcp.readable()).await,
                Ok(Ok(()))
            ) {
                return discarded;
            }
            match tcp.try_read(&mut buf) {
                Ok(0) => return discarded,
                Ok(n) => {
                    discarded += n;
                    if discarded >= bounds.max_bytes {
                        return discarded;
                    }
                }
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return discarded,
            }
        }
    }));
    if let Some(Ok(discarded)) = stop.or(lingering).await
        && discarded > 0
    {
        tracing::trace!(discarded, "lingering close: client bytes discarded");
    }
}

/// A response body that tells the framing tap when its exchange is over (its last frame
/// handed to hyper, or the body dropped because the connection ended), so the tap knows
/// when the connection is idle.
#[derive(Debug)]
struct Answered {
    inner: ClientBody,
    findings: Option<Arc<Findings>>,
}

impl Answered {
    fn new(inner: ClientBody, findings: Arc<Findings>) -> Self {
        Self {
            inner,
            findings: Some(findings),
        }
    }

    fn done(&mut self) {
        if let Some(findings) = self.findings.take() {
            findings.answered();
        }
    }
}

impl Drop for Answered {
    fn drop(&mut self) {
        self.done();
    }
}

impl Body for Answered {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_))))
            || this.inner.is_end_stream()
        {
            this.done();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
