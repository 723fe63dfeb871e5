//! The client side: accepts connections, serves HTTP/1.1 with keep-alive under limits and
//! timeouts, and drains gracefully on shutdown.

use std::convert::Infallible;
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
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

use crate::config::Config;
use crate::framing::{Findings, FramingTap};
use crate::guards::{ClientGuards, Guards};
use crate::proxy::Proxy;
use crate::proxy::body::ClientBody;
use crate::proxy::error::ProxyError;
use crate::upstream::BodyError;

/// Serves until `shutdown` completes, then stops accepting and gives in-flight requests
/// up to the grace period to finish.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    config: Arc<Config>,
    shutdown: impl Future<Output = ()>,
) {
    // The connection limit is the start-up one (a reload refuses to change it); the other
    // client bounds are read from the policy in force at each accept.
    let guards = Guards::from_config(&config);
    let mut client = guards.client;
    let mut builder = http1_builder(&client);
    let connections = Arc::new(Semaphore::new(guards.max_connections));
    let stop = Arc::new(Stop::default());
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.expect("semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually EMFILE: back off briefly instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        // A reload's client bounds apply from the next connection on.
        let live = proxy.policy().guards.client;
        if (live.max_header_bytes, live.max_headers)
            != (client.max_header_bytes, client.max_headers)
        {
            builder = http1_builder(&live);
        }
        client = live;
        let findings = Findings::new();
        // The permit rides with the socket, so a connection that becomes a tunnel keeps
        // counting against the limit until the tunnel closes.
        let io = FramingTap::new(stream, findings.clone(), client).holding(permit);
        let requests = Arc::new(AtomicU64::new(0));
        let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let proxy = proxy.clone();
            let index = requests.fetch_add(1, Ordering::Relaxed);
            let conflicting = findings.is_conflicting(index);
            let vouched = findings.vouches_for(index);
            let connect = request.method() == hyper::Method::CONNECT;
            let findings = findings.clone();
            async move {
                let mut response = if conflicting {
                    tracing::debug!(%peer, "refused a request with both Content-Length and Transfer-Encoding");
                    ProxyError::BadRequest("both Content-Length and Transfer-Encoding")
                        .into_response()
                } else if !vouched {
                    // The framing checks could not follow the connection this far: refuse
                    // rather than forward what they did not see.
                    tracing::debug!(%peer, "refused a request the framing tap could not follow");
                    ProxyError::BadRequest("request framing could not be followed").into_response()
                } else {
                    proxy.handle(peer, request).await
                };
                let status = response.status();
                if status == hyper::StatusCode::SWITCHING_PROTOCOLS
                    || (connect && status.is_success())
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
        let builder = builder.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut io = io;
            let mut service = service;
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
                if let Err(error) = ended {
                    tracing::debug!(%peer, %error, "client connection ended with an error");
                    return;
                }
                // Upgraded (hyper handed the socket to the tunnel) or closed: done.
                let Some(parts) = connection.into_parts() else {
                    return;
                };
                let mut tap = parts.io.into_inner();
                if !tap.take_parked() || !parts.read_buf.is_empty() || stop.requested() {
                    return;
                }
                // Empty, but it still holds hyper's read buffer.
                drop(parts.read_buf);
                // Idle: hyper's buffers went with its connection; wait on the bare socket
                // and start a new one when the next request begins.
                tap.release_buffers();
                tracing::trace!(%peer, "idle connection parked");
                let woke = {
                    let readable = std::pin::pin!(tokio::time::timeout_at(
                        tap.idle_deadline(),
                        tap.get_ref().readable()
                    ));
                    matches!(stop.or(readable).await, Some(Ok(Ok(()))))
                };
                if !woke {
                    return;
                }
                io = tap;
                service = parts.service;
            }
        });
    }
    drop(listener);
    let grace = proxy.policy().config.timeouts.shutdown_grace;
    tracing::info!(
        ?grace,
        "shutting down: no longer accepting, draining in-flight requests"
    );
    let deadline = tokio::time::Instant::now() + grace;
    stop.request();
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
}

/// hyper's server settings for client connections under `client`'s header limits.
fn http1_builder(client: &ClientGuards) -> Arc<http1::Builder> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // The framing tap bounds head reads and idle keep-alive separately; hyper's one
        // timer covers both as one wait.
        .header_read_timeout(None)
        .max_header_size(client.max_header_bytes)
        .max_headers(client.max_headers)
        .keep_alive(true);
    Arc::new(builder)
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
