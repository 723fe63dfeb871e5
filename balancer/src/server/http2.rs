//! HTTP/2 to clients over TLS (ALPN `h2`): hyper's h2 server in front of the same
//! `Proxy::handle` as HTTP/1.1, so each stream is balanced on its own (a connection's
//! concurrent streams spread over the backends) and reaches them as an HTTP/1.1 request.
//!
//! The framing tap has nothing to follow here (h2 frames carry their own lengths, and h2
//! refuses a Content-Length that disagrees with the data), so the client bounds that it
//! enforces on HTTP/1.1 are enforced per connection by a watchdog beside hyper's
//! connection, which has no idle timeout of its own:
//!
//! - the first stream must open within `timeouts.client_header` of the handshake, and a
//!   connection with no stream open is closed (GOAWAY, then the socket) after
//!   `timeouts.keep_alive_idle`;
//! - rapid reset (CVE-2023-44487): a stream whose handler or answer the client cancels
//!   (RST_STREAM) has already cost a backend exchange; once more than
//!   `limits.h2_max_resets` streams were abandoned so, and more of them than streams
//!   completed, the connection is closed at once. Bursts of HEADERS + RST_STREAM that h2
//!   reads before hyper accepts the streams end sooner, in h2 itself
//!   (`guards::H2_MAX_PENDING_ACCEPT_RESETS`: GOAWAY with ENHANCE_YOUR_CALM).
//!
//! - a client that stops reading: an answer hyper holds a frame of for want of the
//!   client's flow-control window, while no answer on the connection moved for
//!   `timeouts.client_write`, closes the connection (as a write that makes no progress
//!   does on HTTP/1.1); a client gone altogether leaves a keep-alive PING unanswered for
//!   as long, and hyper closes the connection.
//!
//! hyper bounds the rest: `limits.h2_max_concurrent_streams` (advertised; more are
//! refused) and the header list (`limits.max_header_bytes`: 431). Request bodies are
//! bounded by the proxy (`client_body`) as on HTTP/1.1.
//!
//! Upgrades are HTTP/1.1 only: h2 refuses `Connection`/`Upgrade` in requests, extended
//! CONNECT (RFC 8441) is not advertised, and a plain CONNECT meets `proxy::guard`'s 405.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;

use super::Shared;
use crate::guards::{
    ClientGuards, H2_MAX_LOCAL_ERROR_RESETS, H2_MAX_PENDING_ACCEPT_RESETS, H2_MAX_SEND_BUFFER,
    Http2Guards,
};
use crate::proxy::body::ClientBody;
use crate::proxy::headers::Scheme;
use crate::upstream::BodyError;

/// hyper's h2 server settings under `client`'s and `http2`'s bounds.
fn builder(client: &ClientGuards, http2: &Http2Guards) -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(http2.max_concurrent_streams)
        // Bounded to 256 KiB in validation.
        .max_header_list_size(u32::try_from(client.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS)
        .max_send_buf_size(H2_MAX_SEND_BUFFER)
        // A PING after this long without a frame from the client, and the connection
        // closed if it goes unanswered as long: a peer that is gone or stopped reading.
        .keep_alive_interval(client.write)
        .keep_alive_timeout(client.write);
    builder
}

/// Why the watchdog ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// No stream opened in time.
    Idle,
    /// More streams abandoned than the bound allows.
    Resets,
    /// An answer the client has not made room for (flow control) within `client_write`.
    Stalled,
    /// Shutdown.
    Stop,
}

/// The streams of one connection, as the watchdog sees them.
#[derive(Debug)]
struct Activity {
    open: AtomicUsize,
    /// Answers whose last frame hyper took and has not come back for: it waits for the
    /// client to open its flow-control window.
    awaiting: AtomicUsize,
    /// When hyper last asked any answer for a frame, in milliseconds after `base`.
    progress: AtomicU64,
    base: Instant,
    /// Streams the client cancelled before their answer was done.
    abandoned: AtomicUsize,
    /// Streams answered to their end (or failed by the backend: not the client's doing).
    completed: AtomicUsize,
    /// Wakes the watchdog; `notify_one` keeps a permit when it is not waiting, so a
    /// change between its check and its wait is not lost.
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            open: AtomicUsize::new(0),
            awaiting: AtomicUsize::new(0),
            progress: AtomicU64::new(0),
            base: Instant::now(),
            abandoned: AtomicUsize::new(0),
            completed: AtomicUsize::new(0),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether an answer waits on the client's window while no answer moved for `write`.
    fn stalled(&self, write: Duration) -> bool {
        self.awaiting.load(Ordering::Relaxed) > 0
            && self
                .now()
                .saturating_sub(self.progress.load(Ordering::Relaxed))
                >= u64::try_from(write.as_millis()).unwrap_or(u64::MAX)
    }

    fn too_many_resets(&self, http2: &Http2Guards) -> bool {
        let abandoned = self.abandoned.load(Ordering::Relaxed);
        abandoned > http2.max_resets && abandoned > self.completed.load(Ordering::Relaxed)
    }

    /// Resolves when the connection must close: idle too long, too many resets, or a
    /// client that stopped making room for the answers.
    async fn watch(&self, client: ClientGuards, http2: Http2Guards) -> Close {
        // The first stream is the first request's head: it gets `client_header`.
        let mut allowed = client.header;
        // While streams are open, a look at the answers every half `client_write`: one
        // timer per connection, none per frame.
        let every = (client.write / 2).max(Duration::from_millis(1));
        let look = tokio::time::sleep(every);
        tokio::pin!(look);
        loop {
            while self.open.load(Ordering::Acquire) > 0 {
                tokio::select! {
                    () = self.changed.notified() => {
                        if self.too_many_resets(&http2) {
                            return Close::Resets;
                        }
                    }
                    () = look.as_mut() => {
                        if self.stalled(client.write) {
                            return Close::Stalled;
                        }
                        look.as_mut().reset(Instant::now() + every);
                    }
                }
            }
            if self.too_many_resets(&http2) {
                return Close::Resets;
            }
            let deadline = Instant::now() + allowed;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {
                        if self.open.load(Ordering::Acquire) == 0 {
                            return Close::Idle;
                        }
                        break;
                    }
                    () = self.changed.notified() => {
                        if self.too_many_resets(&http2) {
                            return Close::Resets;
                        }
                        if self.open.load(Ordering::Acquire) > 0 {
                            break;
                        }
                    }
                }
            }
            allowed = client.keep_alive_idle;
        }
    }
}

const HANDLING: u8 = 0;
const STREAMING: u8 = 1;
const DONE: u8 = 2;

/// One open stream, from hyper's call of the service to the end of the answer's body:
/// its drop tells the watchdog how the stream ended.
#[derive(Debug)]
struct StreamGuard {
    activity: Arc<Activity>,
    state: u8,
}

impl StreamGuard {
    fn open(activity: &Arc<Activity>) -> Self {
        activity.open.fetch_add(1, Ordering::AcqRel);
        activity.changed.notify_one();
        Self {
            activity: activity.clone(),
            state: HANDLING,
        }
    }

    fn set(&mut self, state: u8) {
        self.state = state;
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let counter = if self.state == DONE {
            &self.activity.completed
        } else {
            // Dropped while the handler ran or the answer streamed: the client reset the
            // stream (or the whole connection is going, when nothing counts any more).
            &self.activity.abandoned
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.activity.open.fetch_sub(1, Ordering::AcqRel);
        self.activity.changed.notify_one();
    }
}

/// An answer's body that records its stream's end, and whether hyper waits on the
/// client's flow-control window after taking a frame (it asks for the next one as soon
/// as the window has room).
#[derive(Debug)]
struct Streamed {
    inner: ClientBody,
    stream: StreamGuard,
    awaiting: bool,
}

impl Streamed {
    fn new(inner: ClientBody, mut stream: StreamGuard) -> Self {
        // A body that is over from the start is never polled: hyper sends END_STREAM with
        // the head.
        stream.set(if inner.is_end_stream() {
            DONE
        } else {
            STREAMING
        });
        Self {
            inner,
            stream,
            awaiting: false,
        }
    }
}

impl Drop for Streamed {
    fn drop(&mut self) {
        if self.awaiting {
            self.stream
                .activity
                .awaiting
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Body for Streamed {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let activity = &this.stream.activity;
        if this.awaiting {
            this.awaiting = false;
            activity.awaiting.fetch_sub(1, Ordering::Relaxed);
        }
        activity.progress.store(activity.now(), Ordering::Relaxed);
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        // A backend that fails mid-answer is not the client's doing.
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_))))
            || this.inner.is_end_stream()
        {
            this.stream.set(DONE);
        } else if matches!(polled, Poll::Ready(Some(Ok(_)))) {
            this.awaiting = true;
            this.stream
                .activity
                .awaiting
                .fetch_add(1, Ordering::Relaxed);
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

/// Serves HTTP/2 on one TLS connection until it closes; `permit` is its place under
/// `limits.max_connections`.
pub(super) async fn serve(
    stream: TlsStream<TcpStream>,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    shared: Arc<Shared>,
    hsts: Option<HeaderValue>,
) {
    let _permit = permit;
    let proxy = shared.proxy.clone();
    // A reload's bounds apply from the next connection on, as on HTTP/1.1.
    let guards = proxy.policy().guards;
    let (client, http2) = (guards.client, guards.http2);
    let activity = Arc::new(Activity::new());
    let streams = activity.clone();
    let service = service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        let stream = StreamGuard::open(&streams);
        let proxy = proxy.clone();
        let hsts = hsts.clone();
        async move {
            request.extensions_mut().insert(Scheme::Https);
            let mut response = proxy.handle(peer, request).await;
            let headers = response.headers_mut();
            // Connection-specific fields are illegal in HTTP/2 (RFC 9113 8.2.2): the
            // proxy's own `Connection: close` after a 400 or 408 means nothing here (the
            // stream ends with its answer), and hyper would strip it with a warning.
            headers.remove(header::CONNECTION);
            if let Some(hsts) = hsts {
                headers
                    .entry(header::STRICT_TRANSPORT_SECURITY)
                    .or_insert(hsts);
            }
            Ok::<_, Infallible>(response.map(|body| Streamed::new(body, stream)))
        }
    });
    let connection = builder(&client, &http2).serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let close = {
        let watchdog = std::pin::pin!(activity.watch(client, http2));
        let stopping = std::pin::pin!(shared.stop.stopping());
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(error) = ended {
                    tracing::debug!(%peer, %error, "HTTP/2 client connection ended with an error");
                }
                return;
            }
            close = watchdog => close,
            () = stopping => Close::Stop,
        }
    };
    let finish = match close {
        Close::Resets => {
            tracing::warn!(
                %peer,
                abandoned = activity.abandoned.load(Ordering::Relaxed),
                completed = activity.completed.load(Ordering::Relaxed),
                "HTTP/2 client reset too many streams: connection closed"
            );
            // Dropping hyper's connection closes the socket; the streams' tasks end with it.
            return;
        }
        Close::Stalled => {
            tracing::debug!(%peer, "HTTP/2 client stopped reading: connection closed");
            return;
        }
        Close::Idle => {
            tracing::debug!(%peer, "idle HTTP/2 connection closed");
            // GOAWAY, and the socket once the client acknowledges it; a client that does
            // not is cut off after `client_write`.
            client.write
        }
        // Streams in progress finish (the drain's grace period bounds them), new ones are
        // refused with GOAWAY.
        Close::Stop => proxy_grace(&shared),
    };
    connection.as_mut().graceful_shutdown();
    if let Ok(Err(error)) = tokio::time::timeout(finish, connection).await {
        tracing::debug!(%peer, %error, "HTTP/2 client connection ended with an error");
    }
}

fn proxy_grace(shared: &Shared) -> std::time::Duration {
    shared.proxy.policy().config.timeouts.shutdown_grace
}
