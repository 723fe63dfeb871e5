//! Writing a request: its head, encoded once into a reused buffer, then its body, framed by
//! the client's `Content-Length` or re-chunked.

use bytes::{Buf, Bytes};
use http::{HeaderMap, Method, Uri, header};
use http_body::Frame;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::guards::BackendGuards;

/// A first body frame up to this size goes out in the same write as the head.
const COALESCE_LIMIT: usize = 16 * 1024;

/// What a request sends after its head.
#[derive(Debug)]
pub enum RequestBody {
    /// No body: such a request can be rebuilt and retried.
    Empty,
    /// The client's body, streamed as it arrives.
    Streaming {
        /// The frame read ahead (to check the body's framing before choosing a backend),
        /// sent first.
        first: Option<Frame<Bytes>>,
        rest: Incoming,
    },
}

/// How the body is delimited on the wire to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body at all.
    None,
    /// The request's own `Content-Length` header says it.
    Length,
    /// `Transfer-Encoding: chunked`, added by us.
    Chunked,
}

impl Framing {
    pub(super) fn of(body: &RequestBody, headers: &HeaderMap) -> Self {
        match body {
            RequestBody::Empty => Self::None,
            RequestBody::Streaming { .. } if headers.contains_key(header::CONTENT_LENGTH) => {
                Self::Length
            }
            RequestBody::Streaming { .. } => Self::Chunked,
        }
    }
}

/// Why writing failed.
#[derive(Debug)]
pub(super) enum WriteError {
    /// The first write was refused: not one byte of the request left.
    NotSent(std::io::Error),
    /// The client's body was malformed or ended early.
    Client,
    /// The client sent nothing of its body for `client_body`.
    ClientTimeout,
    /// The backend accepted nothing of the body for `backend_body`.
    Stalled,
    Io(std::io::Error),
}

/// Encodes `METHOD target HTTP/1.1`, the headers and the framing header into `out`.
pub(super) fn encode_head(
    out: &mut Vec<u8>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    host_fallback: Option<&str>,
    request_id: Option<&[u8]>,
    framing: Framing,
) {
    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(if target.is_empty() {
        b"/"
    } else {
        target.as_bytes()
    });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(host) = host_fallback
        && !headers.contains_key(header::HOST)
    {
        // HTTP/1.0 clients may omit Host; HTTP/1.1 backends require one.
        push_header(out, b"host", host.as_bytes());
    }
    for (name, value) in headers {
        push_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if let Some(id) = request_id {
        push_header(out, b"x-request-id", id);
    }
    if framing == Framing::Chunked {
        push_header(out, b"transfer-encoding", b"chunked");
    }
    out.extend_from_slice(b"\r\n");
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn push_chunk_size(out: &mut Vec<u8>, len: usize) {
    use std::io::Write as _;
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{len:x}\r\n");
}

/// Writes the head already encoded in `out`, with a small first body frame riding along.
/// The first system call decides whether anything was sent: if it fails, nothing was, and
/// `body` is untouched. Returns whether the first frame went out with the head.
pub(super) async fn write_head<W: AsyncWrite + Unpin>(
    stream: &mut W,
    out: &mut Vec<u8>,
    body: &RequestBody,
    framing: Framing,
) -> Result<bool, WriteError> {
    let mut coalesced = false;
    if let RequestBody::Streaming {
        first: Some(frame), ..
    } = body
        && let Some(data) = frame.data_ref()
        && data.len() <= COALESCE_LIMIT
    {
        encode_data(out, data, framing);
        coalesced = true;
    }
    let written = stream.write(out).await.map_err(WriteError::NotSent)?;
    if written == 0 {
        return Err(WriteError::NotSent(std::io::ErrorKind::WriteZero.into()));
    }
    stream
        .write_all(&out[written..])
        .await
        .map_err(WriteError::Io)?;
    Ok(coalesced)
}

/// Writes the rest of the body after [`write_head`] (`coalesced`: the first frame already
/// went with the head). Each read from the client and each write to the backend has its
/// own idle bound, so a slow client is told apart from a backend that stopped reading.
pub(super) async fn write_body<W: AsyncWrite + Unpin>(
    stream: &mut W,
    out: &mut Vec<u8>,
    body: &mut RequestBody,
    framing: Framing,
    coalesced: bool,
    guards: &BackendGuards,
) -> Result<(), WriteError> {
    let RequestBody::Streaming { first, rest } = body else {
        return Ok(());
    };
    let mut next = first.take();
    if coalesced {
        next = None;
    }
    loop {
        let frame = match next.take() {
            Some(frame) => frame,
            None => match tokio::time::timeout(guards.client_body, rest.frame()).await {
                Err(_) => return Err(WriteError::ClientTimeout),
                Ok(Some(Ok(frame))) => frame,
                Ok(Some(Err(_))) => return Err(WriteError::Client),
                Ok(None) => break,
            },
        };
        match frame.into_data() {
            Ok(data) => {
                tokio::time::timeout(guards.body, write_data(stream, out, data, framing))
                    .await
                    .map_err(|_| WriteError::Stalled)??;
            }
            // Request trailers are not forwarded: few backends read them, and a chunked
            // body ends cleanly without them.
            Err(_trailers) => {}
        }
    }
    if framing == Framing::Chunked {
        tokio::time::timeout(guards.body, stream.write_all(b"0\r\n\r\n"))
            .await
            .map_err(|_| WriteError::Stalled)?
            .map_err(WriteError::Io)?;
    }
    Ok(())
}

fn encode_data(out: &mut Vec<u8>, data: &Bytes, framing: Framing) {
    if data.is_empty() {
        return;
    }
    if framing == Framing::Chunked {
        push_chunk_size(out, data.len());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(data);
    }
}

async fn write_data<W: AsyncWrite + Unpin>(
    stream: &mut W,
    out: &mut Vec<u8>,
    data: Bytes,
    framing: Framing,
) -> Result<(), WriteError> {
    if data.is_empty() {
        return Ok(());
    }
    if framing == Framing::Chunked {
        out.clear();
        push_chunk_size(out, data.len());
        // Size line, data and CRLF in one vectored write where the stream supports it.
        let mut chunk = (&out[..]).chain(data).chain(&b"\r\n"[..]);
        stream
            .write_all_buf(&mut chunk)
            .await
            .map_err(WriteError::Io)
    } else {
        stream.write_all(&data).await.map_err(WriteError::Io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(headers: &[(&str, &str)], host: Option<&str>, framing: Framing) -> String {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let mut out = Vec::new();
        let uri: Uri = "/a/b?c=d".parse().unwrap();
        encode_head(&mut out, &Method::POST, &uri, &map, host, None, framing);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn head_has_request_line_headers_in_order_and_blank_line() {
        assert_eq!(
            head(
                &[("host", "example"), ("x-a", "1"), ("x-a", "2")],
                Some("fallback"),
                Framing::None
            ),
            "POST /a/b?c=d HTTP/1.1\r\nhost: example\r\nx-a: 1\r\nx-a: 2\r\n\r\n"
        );
    }

    #[test]
    fn host_fallback_only_when_missing_and_chunked_framing_is_declared() {
        assert_eq!(
            head(&[], Some("backend:80"), Framing::Chunked),
            "POST /a/b?c=d HTTP/1.1\r\nhost: backend:80\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn data_is_chunked_with_a_hex_size_line() {
        let mut out = Vec::new();
        encode_data(
            &mut out,
            &Bytes::from_static(b"hello world, hi!"),
            Framing::Chunked,
        );
        assert_eq!(out, b"10\r\nhello world, hi!\r\n");
        out.clear();
        encode_data(&mut out, &Bytes::from_static(b"raw"), Framing::Length);
        assert_eq!(out, b"raw");
    }
}
