//! The response body sent to the client. It streams frame by frame: nothing is buffered
//! beyond one read from the backend.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::backend::{Backend, InFlight};
use crate::proxy::Policy;
use crate::upstream::{BodyError, ResponseBody};

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

/// A backend's response body. As soon as it has been read to its end, its connection goes
/// back to the backend's pool and the request stops counting as in flight. A body the
/// backend breaks off (truncated, malformed, stalled past `backend_body`) counts against
/// it; one the client stops reading does not (it is dropped, never failed).
#[derive(Debug)]
pub struct ProxiedBody {
    inner: ResponseBody,
    backend: Arc<Backend>,
    in_flight: Option<InFlight>,
    /// The request's policy, for the passive-ejection settings (shared, to keep the body
    /// small; the request's own handle, moved here).
    policy: Arc<Policy>,
}

impl ProxiedBody {
    pub fn new(
        inner: ResponseBody,
        backend: Arc<Backend>,
        in_flight: InFlight,
        policy: Arc<Policy>,
    ) -> Self {
        let mut body = Self {
            inner,
            backend,
            in_flight: Some(in_flight),
            policy,
        };
        // A bodiless answer (HEAD, 204, 304, Content-Length: 0) is complete already.
        body.finish_if_complete();
        body
    }

    fn finish_if_complete(&mut self) {
        if self.in_flight.is_some() && self.inner.is_end_stream() {
            if let Some(connection) = self.inner.take_reusable() {
                self.backend.pool.put(connection);
            }
            self.in_flight = None;
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Self::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Self::Proxied(body) => {
                let polled = Pin::new(&mut body.inner).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Err(error))) => {
                        tracing::debug!(backend = %body.backend.addr, %error, "response body failed");
                        body.backend
                            .record_failure(&body.policy.config.passive, "response body failed");
                        body.in_flight = None;
                    }
                    Poll::Ready(_) => body.finish_if_complete(),
                    Poll::Pending => {}
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
