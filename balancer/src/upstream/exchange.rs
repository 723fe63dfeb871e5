//! One request/response exchange on a connection.

use std::future::Future as _;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::response::Parts;
use http::{HeaderMap, Method, StatusCode, Uri, Version};
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::guards::BackendGuards;

use super::body::ResponseBody;
use super::connection::Connection;
use super::request::{self, Framing, RequestBody, WriteError};
use super::response::{self, BodyLength, Invalid};

/// The request as the proxy rewrote it.
#[derive(Debug)]
pub struct RequestHead<'a> {
    pub method: &'a Method,
    /// Only the path and query are sent (origin form).
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    /// Sent as `Host` when `headers` has none.
    pub host_fallback: Option<&'a str>,
    /// An X-Request-Id value to send besides `headers` (which must not hold one then).
    pub request_id: Option<&'a [u8]>,
}

#[derive(Debug)]
pub enum Outcome {
    /// A final answer with its body still to read.
    Response(Parts, ResponseBody),
    /// `101 Switching Protocols`: the connection is now the new protocol's, with the bytes
    /// the backend already sent after the 101.
    Switched(Parts, TcpStream, Bytes),
}

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Not one byte of the request reached the backend.
    #[error("request not sent: {0}")]
    NotSent(std::io::Error),
    /// The client's body was malformed or ended early.
    #[error("the client's request body failed")]
    ClientBody,
    /// The client stopped sending its body: its fault, not the backend's.
    #[error("the client's request body stalled")]
    ClientBodyTimeout,
    /// The backend stopped reading the request (`backend_body`).
    #[error("backend stopped reading the request")]
    Stalled,
    /// No answer within `response_header` of the request's last byte.
    #[error("backend did not answer in time")]
    ResponseTimeout,
    #[error("backend I/O failed: {0}")]
    Io(std::io::Error),
    #[error("backend closed the connection without answering")]
    Closed,
    #[error("invalid response from backend: {0}")]
    Invalid(#[from] Invalid),
}

impl From<WriteError> for ExchangeError {
    fn from(error: WriteError) -> Self {
        match error {
            WriteError::NotSent(e) => Self::NotSent(e),
            WriteError::Client => Self::ClientBody,
            WriteError::ClientTimeout => Self::ClientBodyTimeout,
            WriteError::Stalled => Self::Stalled,
            WriteError::Io(e) => Self::Io(e),
        }
    }
}

/// An answer's head, and how long the backend took to give it.
#[derive(Debug)]
pub struct Answered {
    pub outcome: Outcome,
    /// From the request's last byte to the answer's head: the backend's own time. `None`
    /// when it answered before the body was all sent (the time is then the client's too).
    pub waited: Option<Duration>,
}

/// Sends the request on `connection` and reads the answer's head. A body is written while
/// the head is awaited, so a backend that answers early (say 413) is heard; the body then
/// stops and the connection is not reused. `upgrade` says the client asked for a protocol
/// switch: only then is a 101 accepted.
///
/// The backend's `response_header` time starts when the request's last byte has left:
/// time spent receiving a slow client's body is bounded by `client_body` per read, and
/// is not the backend's.
pub async fn send(
    mut connection: Box<Connection>,
    head: &RequestHead<'_>,
    body: &mut RequestBody,
    upgrade: bool,
    guards: &BackendGuards,
) -> Result<Answered, ExchangeError> {
    let framing = Framing::of(body, head.headers);
    request::encode_head(
        &mut connection.write,
        head.method,
        head.uri,
        head.headers,
        head.host_fallback,
        head.request_id,
        framing,
    );
    let Connection {
        stream,
        read,
        write,
        spans,
        ..
    } = &mut *connection;
    // The head goes out first and alone decides "not sent": reading only starts once a
    // byte has left, so a dead connection's end of stream cannot pass for an answer.
    // Almost always the head fits the socket's buffer at once: the idle bound (and the
    // clock read and timer it costs) only for a write that has to wait.
    let coalesced = {
        let mut writing = std::pin::pin!(request::write_head(stream, write, body, framing));
        match std::future::poll_fn(|cx| Poll::Ready(writing.as_mut().poll(cx))).await {
            Poll::Ready(written) => written?,
            Poll::Pending => tokio::time::timeout(guards.body, writing)
                .await
                .map_err(|_| ExchangeError::Stalled)??,
        }
    };
    let mut body_sent = framing == Framing::None;
    let mut sent_at = Instant::now();
    let answer = if body_sent {
        tokio::time::timeout_at(
            sent_at + guards.response_header,
            read_head(stream, read, spans, upgrade),
        )
        .await
        .map_err(|_| ExchangeError::ResponseTimeout)??
    } else {
        let (mut reader, mut writer) = stream.split();
        let writing = request::write_body(&mut writer, write, body, framing, coalesced, guards);
        let reading = read_head(&mut reader, read, spans, upgrade);
        // Armed only once the body is all sent.
        let deadline = tokio::time::sleep_until(sent_at);
        tokio::pin!(writing, reading, deadline);
        loop {
            tokio::select! {
                biased;
                answer = &mut reading => break answer?,
                written = &mut writing, if !body_sent => {
                    written?;
                    body_sent = true;
                    sent_at = Instant::now();
                    deadline.as_mut().reset(sent_at + guards.response_header);
                }
                () = &mut deadline, if body_sent => return Err(ExchangeError::ResponseTimeout),
            }
        }
    };
    let waited = body_sent.then(|| sent_at.elapsed());

    let mut parts = parts_with(answer.status);
    if answer.status == StatusCode::SWITCHING_PROTOCOLS {
        parts.headers = answer.headers;
        let (stream, early) = (*connection).into_parts();
        return Ok(Answered {
            outcome: Outcome::Switched(parts, stream, early.freeze()),
            waited,
        });
    }
    let (length, must_close) = response::body_length(&answer, *head.method == Method::HEAD)?;
    let keep_alive = body_sent && !must_close && response::keeps_alive(&answer);
    parts.headers = answer.headers;
    let body = match length {
        BodyLength::Exact(n) => ResponseBody::exact(connection, n, keep_alive),
        BodyLength::Chunked => ResponseBody::chunked(connection, keep_alive),
        BodyLength::UntilClose => ResponseBody::until_close(connection),
    }
    .idle_bound(guards.body);
    Ok(Answered {
        outcome: Outcome::Response(parts, body),
        waited,
    })
}

/// Reads until a final (or, when `upgrade`, a 101) response head is complete; other 1xx
/// answers are read past.
async fn read_head<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut bytes::BytesMut,
    spans: &mut Vec<response::Span>,
    upgrade: bool,
) -> Result<response::Head, ExchangeError> {
    loop {
        if !buf.is_empty()
            && let Some(head) = response::parse(buf, spans)?
        {
            if head.status == StatusCode::SWITCHING_PROTOCOLS && !upgrade {
                return Err(Invalid::Malformed.into());
            }
            if head.status.is_informational() && head.status != StatusCode::SWITCHING_PROTOCOLS {
                continue;
            }
            return Ok(head);
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        match stream.read_buf(buf).await {
            Ok(0) if buf.is_empty() => return Err(ExchangeError::Closed),
            Ok(0) => return Err(Invalid::Malformed.into()),
            Ok(_) => {}
            Err(error) => return Err(ExchangeError::Io(error)),
        }
    }
}

/// The parts of a response with this status, HTTP/1.1 and no headers yet.
fn parts_with(status: StatusCode) -> Parts {
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.version = Version::HTTP_11;
    parts
}
