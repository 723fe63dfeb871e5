//! Body types on both sides of the proxy. Both stream frame by frame: nothing is buffered
//! beyond what hyper holds for one read.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::backend::{Backend, InFlight};
use crate::pool::UpstreamSender;

/// The request body sent to a backend.
#[derive(Debug)]
pub enum UpstreamBody {
    /// No body: such a request can be rebuilt and retried.
    Empty,
    /// The client's body, streamed; `client_failed` records that the client's framing was
    /// broken (bad chunking, early close) so the proxy answers 400, not 502.
    Streaming {
        /// The frame read ahead to validate framing, sent first.
        first: Option<Frame<Bytes>>,
        inner: Incoming,
        client_failed: Arc<AtomicBool>,
    },
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Empty => Poll::Ready(None),
            Self::Streaming {
                first,
                inner,
                client_failed,
            } => {
                if let Some(frame) = first.take() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                let polled = Pin::new(inner).poll_frame(cx);
                if let Poll::Ready(Some(Err(_))) = &polled {
                    client_failed.store(true, Ordering::Relaxed);
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Streaming { first, inner, .. } => first.is_none() && inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Streaming { first, inner, .. } => {
                let buffered = first
                    .as_ref()
                    .and_then(|f| f.data_ref())
                    .map_or(0, |d| d.len() as u64);
                let rest = inner.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + buffered);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + buffered);
                }
                hint
            }
        }
    }
}

/// The response body sent to the client.
#[derive(Debug)]
pub enum ClientBody {
    /// A short answer made by the balancer itself (errors).
    Full(Option<Bytes>),
    /// A backend's body, streamed.
    Proxied(ProxiedBody),
}

impl ClientBody {
    pub fn text(text: impl Into<Bytes>) -> Self {
        Self::Full(Some(text.into()))
    }

    pub fn empty() -> Self {
        Self::Full(None)
    }
}

/// A backend's response body. When it ends, its connection goes back to the pool and the
/// request stops counting as in flight.
#[derive(Debug)]
pub struct ProxiedBody {
    inner: Incoming,
    connection: Option<(UpstreamSender, Arc<Backend>)>,
    in_flight: Option<InFlight>,
}

impl ProxiedBody {
    pub fn new(
        inner: Incoming,
        sender: UpstreamSender,
        backend: Arc<Backend>,
        in_flight: InFlight,
    ) -> Self {
        Self {
            inner,
            connection: Some((sender, backend)),
            in_flight: Some(in_flight),
        }
    }

    fn finish(&mut self) {
        if let Some((sender, backend)) = self.connection.take() {
            backend.pool.put(sender);
        }
        self.in_flight = None;
    }
}

impl Drop for ProxiedBody {
    fn drop(&mut self) {
        // A body hyper never polled because it was known to be empty (HEAD, 204, 304,
        // Content-Length: 0) still completed its exchange.
        if self.inner.is_end_stream() {
            self.finish();
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Self::Proxied(body) => {
                let polled = Pin::new(&mut body.inner).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => body.finish(),
                    Poll::Ready(Some(Err(_))) => {
                        // The connection is broken: do not pool it.
                        body.connection = None;
                        body.in_flight = None;
                    }
                    _ => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(data) => data.is_none(),
            Self::Proxied(body) => body.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(Some(data)) => SizeHint::with_exact(data.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
            Self::Proxied(body) => body.inner.size_hint(),
        }
    }
}
