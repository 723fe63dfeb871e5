//! A backend's response body, read from its connection as the client's side asks for it.
//! When the last byte has been read, the connection can be taken back for another request.

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::chunked::{ChunkError, Decoded, Decoder};
use super::connection::Connection;

/// Why a response body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("backend closed the connection before the end of the body")]
    Truncated,
    #[error("invalid chunked body from backend: {0}")]
    Chunked(#[from] ChunkError),
    #[error("reading the backend's body failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("backend sent nothing of its body for {0:?}")]
    Stalled(Duration),
}

#[derive(Debug)]
enum Framing {
    /// This many bytes remain.
    Length(u64),
    Chunked(Decoder),
    UntilClose,
}

#[derive(Debug)]
pub struct ResponseBody {
    /// `None` once the body failed, or after the connection was taken back.
    connection: Option<Box<Connection>>,
    framing: Framing,
    /// The backend allows another request on the connection after this body.
    keep_alive: bool,
    /// The whole body was read (or the connection closed, for `UntilClose`).
    complete: bool,
    /// How long a read may find nothing before the body fails.
    idle: Option<Duration>,
    /// Since when reads have found nothing (cleared by each byte).
    waiting_since: Option<Instant>,
    /// Armed lazily, only when a read has to wait.
    timer: Option<Pin<Box<Sleep>>>,
}

impl ResponseBody {
    pub(super) fn exact(connection: Box<Connection>, length: u64, keep_alive: bool) -> Self {
        Self {
            connection: Some(connection),
            framing: Framing::Length(length),
            keep_alive,
            complete: length == 0,
            idle: None,
            waiting_since: None,
            timer: None,
        }
    }

    pub(super) fn chunked(connection: Box<Connection>, keep_alive: bool) -> Self {
        Self {
            connection: Some(connection),
            framing: Framing::Chunked(Decoder::new()),
            keep_alive,
            complete: false,
            idle: None,
            waiting_since: None,
            timer: None,
        }
    }

    pub(super) fn until_close(connection: Box<Connection>) -> Self {
        Self {
            connection: Some(connection),
            framing: Framing::UntilClose,
            keep_alive: false,
            complete: false,
            idle: None,
            waiting_since: None,
            timer: None,
        }
    }

    /// Fails the body when the backend sends nothing for `idle` while it is being read.
    /// The wait counts from the read that found nothing, so a client that reads slowly
    /// (and so polls late) is not taken for a stalled backend.
    pub(super) fn idle_bound(mut self, idle: Duration) -> Self {
        self.idle = Some(idle);
        self
    }

    /// A read found nothing: whether the idle bound has passed (else a wake-up is set).
    fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(idle) = self.idle else {
            return false;
        };
        let deadline = *self.waiting_since.get_or_insert_with(Instant::now) + idle;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).is_ready()
    }

    /// The connection, if the body was read to its end and the connection may carry another
    /// request. Called once; later calls return `None`.
    pub fn take_reusable(&mut self) -> Option<Box<Connection>> {
        if self.complete && self.keep_alive {
            self.connection.take().filter(|c| c.read.is_empty())
        } else {
            None
        }
    }

    fn fail(
        &mut self,
        error: impl Into<BodyError>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.connection = None;
        Poll::Ready(Some(Err(error.into())))
    }
}

/// One read into `buf`, registering for a wake-up if nothing is there yet. It goes through
/// the stream's `poll_read`, which remembers a short read and skips the next futile system
/// call.
fn poll_read_buf(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    pin!(stream.read_buf(buf)).poll(cx)
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.complete {
            return Poll::Ready(None);
        }
        let Some(connection) = this.connection.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            let buf = &mut connection.read;
            match &mut this.framing {
                Framing::Length(remaining) => {
                    if !buf.is_empty() {
                        let n = usize::try_from(*remaining)
                            .unwrap_or(usize::MAX)
                            .min(buf.len());
                        *remaining -= n as u64;
                        this.complete = *remaining == 0;
                        return Poll::Ready(Some(Ok(Frame::data(buf.split_to(n).freeze()))));
                    }
                }
                Framing::Chunked(decoder) => match decoder.decode(buf) {
                    Ok(Decoded::Data(data)) => {
                        // Finish eagerly when the terminator is already here, so the
                        // connection is free as soon as the client has the last byte.
                        if decoder.settle(buf).is_ok() && decoder.is_done() {
                            this.complete = true;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(Decoded::Done) => {
                        this.complete = true;
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(error) => return this.fail(error),
                },
                Framing::UntilClose => {
                    if !buf.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(buf.split().freeze()))));
                    }
                }
            }
            connection.reserve_read();
            let read = match poll_read_buf(&mut connection.stream, &mut connection.read, cx) {
                Poll::Ready(read) => read,
                Poll::Pending => {
                    if this.stalled(cx) {
                        let idle = this.idle.unwrap_or_default();
                        return this.fail(BodyError::Stalled(idle));
                    }
                    return Poll::Pending;
                }
            };
            this.waiting_since = None;
            match read {
                Ok(0) if matches!(this.framing, Framing::UntilClose) => {
                    this.complete = true;
                    this.connection = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(BodyError::Truncated),
                Ok(_) => {}
                Err(error) => return this.fail(error),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.complete
            || match &self.framing {
                Framing::Chunked(decoder) => decoder.is_done(),
                _ => false,
            }
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            _ if self.complete => SizeHint::with_exact(0),
            Framing::Length(remaining) => SizeHint::with_exact(remaining),
            _ => SizeHint::default(),
        }
    }
}
