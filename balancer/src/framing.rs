//! A read-side tap on each client connection that finds requests carrying both
//! Content-Length and Transfer-Encoding.
//!
//! hyper resolves that conflict the way RFC 9112 6.1 allows (Transfer-Encoding wins, the
//! connection closes afterwards) and drops the Content-Length header before the request
//! reaches us, so the conflict is invisible later. Request smuggling lives in exactly this
//! disagreement between hops, so we refuse such requests outright: the tap follows message
//! boundaries (head, then Content-Length or chunked body) as the bytes pass through and
//! records the index of the first offending request; the proxy answers that one with 400.
//! When the tap meets anything it does not follow (a parse error hyper will reject anyway,
//! an upgrade), it stops looking.
//!
//! Because it knows where heads begin and end, the tap also enforces the two client-side
//! waits that hyper cannot tell apart: a head must arrive whole within `client_header` of
//! its first byte (or of the accept, for the first request: slowloris), and a kept-alive
//! connection with no request in flight is closed after `keep_alive_idle`. The timer is
//! one `Sleep` per connection, re-armed lazily: a request that arrives whole in one read
//! costs a clock read, not a timer registration.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// What the tap found, shared with the connection's request handler.
#[derive(Debug)]
pub struct Findings {
    /// Index (0-based, per connection) of the first request with both headers.
    first_conflict: AtomicU64,
    /// Responses completed on this connection (their bodies sent or dropped): when it equals
    /// the heads the tap has seen, nothing is in flight.
    answered: AtomicU64,
    /// When the last response completed, in nanoseconds after `base`.
    answered_at: AtomicU64,
    base: Instant,
}

impl Findings {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            first_conflict: AtomicU64::new(u64::MAX),
            answered: AtomicU64::new(0),
            answered_at: AtomicU64::new(0),
            base: Instant::now(),
        })
    }

    /// Records that one response is complete.
    pub fn answered(&self) {
        let at = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.answered_at.store(at, Ordering::Relaxed);
        self.answered.fetch_add(1, Ordering::Release);
    }

    fn last_answer(&self) -> Instant {
        self.base + Duration::from_nanos(self.answered_at.load(Ordering::Relaxed))
    }

    /// Whether request number `index` on this connection had conflicting framing.
    pub fn is_conflicting(&self, index: u64) -> bool {
        self.first_conflict.load(Ordering::Relaxed) == index
    }
}

#[derive(Debug)]
enum State {
    /// Collecting a request head.
    Head,
    /// Skipping a body of known length.
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    Trailers,
    /// Not following this connection any further.
    Off,
}

/// How long a read that found nothing may wait.
enum Wait {
    Unbounded,
    /// The connection is closed if nothing arrives by then.
    Until(Instant),
    /// Nothing to enforce now; evaluate again at this time.
    Recheck(Instant),
}

/// The client-side waits the tap enforces.
#[derive(Debug, Clone, Copy)]
pub struct ClientTimeouts {
    /// From a head's first byte (or the accept) to its end.
    pub header: Duration,
    /// From the end of the last response to the next request's first byte.
    pub keep_alive_idle: Duration,
}

#[derive(Debug)]
pub struct FramingTap<IO> {
    inner: IO,
    state: State,
    line: Vec<u8>,
    heads: u64,
    max_head: usize,
    findings: Arc<Findings>,
    timeouts: ClientTimeouts,
    /// When the head being waited for began: the accept, then each head's first byte.
    head_since: Option<Instant>,
    /// Armed at or before the earliest deadline; checked against the real one when it fires.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<IO> FramingTap<IO> {
    pub fn new(
        inner: IO,
        max_head: usize,
        findings: Arc<Findings>,
        timeouts: ClientTimeouts,
    ) -> Self {
        Self {
            inner,
            state: State::Head,
            line: Vec::new(),
            heads: 0,
            max_head,
            findings,
            timeouts,
            head_since: Some(Instant::now()),
            timer: None,
        }
    }

    /// What bounds the wait that a read found nothing for.
    fn wait(&mut self) -> Wait {
        if !matches!(self.state, State::Head) {
            // In a body, after an upgrade, or off: no client-side wait is ours to bound.
            return Wait::Unbounded;
        }
        if let Some(since) = self.head_since {
            return Wait::Until(since + self.timeouts.header);
        }
        if self.findings.answered.load(Ordering::Acquire) < self.heads {
            // A request is in flight: waiting for its answer is the backend's timeout. Look
            // again later: the answer may end without this connection being read again, and
            // the idle time then counts from its end.
            return Wait::Recheck(Instant::now() + self.timeouts.keep_alive_idle);
        }
        Wait::Until(self.findings.last_answer() + self.timeouts.keep_alive_idle)
    }

    /// Called when a read found nothing: waits for the deadline, or reports it passed.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let (deadline, enforced) = match self.wait() {
                Wait::Unbounded => return Poll::Pending,
                Wait::Until(deadline) => (deadline, true),
                Wait::Recheck(at) => (at, false),
            };
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if timer.deadline() > deadline {
                timer.as_mut().reset(deadline);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // The timer fired: at this deadline, or at an earlier one since moved on.
            if enforced && Instant::now() >= deadline {
                let what = if self.head_since.is_some() {
                    "request head not received in time"
                } else {
                    "keep-alive connection idle"
                };
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)));
            }
            let next = if enforced {
                deadline
            } else {
                Instant::now() + self.timeouts.keep_alive_idle
            };
            timer.as_mut().reset(next);
        }
    }

    /// Notes the time a head begins and ends, after `inspect` ran on newly read bytes.
    fn track_heads(&mut self, heads_before: u64) {
        if self.heads != heads_before {
            self.head_since = None;
        }
        if matches!(self.state, State::Head) && !self.line.is_empty() && self.head_since.is_none() {
            self.head_since = Some(Instant::now());
        }
    }

    fn inspect(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            // The usual case: a whole head at the start of what was read. It is parsed where
            // it lies; only a head split across reads is collected line by line.
            if matches!(self.state, State::Head)
                && self.line.is_empty()
                && let Some(length) = self.take_head(bytes)
            {
                bytes = &bytes[length..];
                continue;
            }
            match self.state {
                State::Off => return,
                State::Body(remaining) => {
                    let n = remaining.min(bytes.len() as u64);
                    bytes = &bytes[n as usize..];
                    self.state = if remaining == n {
                        State::Head
                    } else {
                        State::Body(remaining - n)
                    };
                }
                State::ChunkData(remaining) => {
                    let n = remaining.min(bytes.len() as u64);
                    bytes = &bytes[n as usize..];
                    self.state = if remaining == n {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(remaining - n)
                    };
                }
                State::Head | State::ChunkSize | State::ChunkEnd | State::Trailers => {
                    // Collect up to the end of the line (or of the head).
                    let Some(end) = bytes.iter().position(|&b| b == b'\n') else {
                        self.line.extend_from_slice(bytes);
                        if self.line.len() > self.max_head {
                            self.stop();
                        }
                        return;
                    };
                    self.line.extend_from_slice(&bytes[..=end]);
                    bytes = &bytes[end + 1..];
                    if self.line.len() > self.max_head {
                        self.stop();
                        return;
                    }
                    self.line_done();
                }
            }
        }
    }

    fn stop(&mut self) {
        self.state = State::Off;
        self.line = Vec::new();
    }

    /// `self.line` holds bytes up to a newline.
    fn line_done(&mut self) {
        match self.state {
            State::Head => {
                if self.line == b"\r\n" || self.line == b"\n" {
                    // Empty lines before a request are tolerated (RFC 9112 2.2).
                    self.line.clear();
                    return;
                }
                // httparse ends a head at an empty line after any line ending, so
                // `\n\r\n` too (found by the property tests: missing it misframed the body).
                if !(self.line.ends_with(b"\n\r\n") || self.line.ends_with(b"\n\n")) {
                    return;
                }
                self.head_done();
            }
            State::ChunkSize => {
                // The backend client's rule, so both sides agree on where a body ends; a line
                // it does not take whole (bare LF, `+5`, no digits) stops the tap.
                use crate::upstream::chunked::parse_chunk_size;
                self.state = match parse_chunk_size(&self.line) {
                    Ok(httparse::Status::Complete((length, 0))) if length == self.line.len() => {
                        State::Trailers
                    }
                    Ok(httparse::Status::Complete((length, n))) if length == self.line.len() => {
                        State::ChunkData(n)
                    }
                    _ => State::Off,
                };
                self.line.clear();
            }
            State::ChunkEnd => {
                self.state = State::ChunkSize;
                self.line.clear();
            }
            State::Trailers => {
                if self.line == b"\r\n" || self.line == b"\n" {
                    self.state = State::Head;
                }
                self.line.clear();
            }
            _ => {}
        }
    }

    /// `self.line` holds a complete head, collected line by line.
    fn head_done(&mut self) {
        let line = std::mem::take(&mut self.line);
        if self.take_head(&line).is_none() {
            self.stop();
            return;
        }
        if !matches!(self.state, State::Off) {
            self.line = line;
            self.line.clear();
        }
    }

    /// Judges the head at the front of `bytes` and moves past it: returns its length, or
    /// `None` if it is not complete yet. Anything unparsable turns the tap off (hyper
    /// refuses it anyway).
    fn take_head(&mut self, bytes: &[u8]) -> Option<usize> {
        // Uninitialised slots: zeroing 128 headers (4 KiB) for every request costs more
        // than parsing a typical head.
        let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; 128];
        let mut request = httparse::Request::new(&mut []);
        let length = match request.parse_with_uninit_headers(bytes, &mut headers) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return None,
            Err(_) => {
                self.stop();
                return Some(bytes.len());
            }
        };
        let index = self.heads;
        self.heads += 1;
        let mut lengths = request
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("content-length"));
        let content_length = lengths.next();
        let chunked = request
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
        let upgrade = request.method == Some("CONNECT")
            || request
                .headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case("upgrade"));
        if chunked && content_length.is_some() {
            let _ = self.findings.first_conflict.compare_exchange(
                u64::MAX,
                index,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        let content_length = content_length
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let more_lengths = lengths.next().is_some();
        self.state = if upgrade || more_lengths {
            // What follows is another protocol, or hyper refuses the request.
            State::Off
        } else if chunked {
            State::ChunkSize
        } else if let Some(content_length) = content_length {
            State::Body(content_length)
        } else {
            State::Head
        };
        if matches!(self.state, State::Off) {
            self.line = Vec::new();
        }
        Some(length)
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for FramingTap<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        match polled {
            Poll::Ready(Ok(())) if !matches!(this.state, State::Off) => {
                let heads_before = this.heads;
                this.inspect(&buf.filled()[before..]);
                this.track_heads(heads_before);
                polled
            }
            Poll::Pending => this.poll_deadline(cx),
            _ => polled,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FramingTap<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: ClientTimeouts = ClientTimeouts {
        header: Duration::from_secs(10),
        keep_alive_idle: Duration::from_secs(60),
    };

    fn scan(chunks: &[&[u8]]) -> (Arc<Findings>, u64) {
        let findings = Findings::new();
        let mut tap = FramingTap::new((), 8192, findings.clone(), TIMEOUTS);
        for chunk in chunks {
            tap.inspect(chunk);
        }
        (findings, tap.heads)
    }

    #[test]
    fn follows_pipelined_messages_and_flags_the_conflicting_one() {
        let (findings, heads) = scan(&[
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhel",
            b"loGET /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext\r\nabc\r\n0\r\nT: 1\r\n\r\n",
            b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ]);
        assert_eq!(heads, 3);
        assert!(findings.is_conflicting(2));
        assert!(!findings.is_conflicting(0) && !findings.is_conflicting(1));
    }

    #[test]
    fn a_body_that_looks_like_a_request_is_not_mistaken_for_one() {
        let body = b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let head = format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let (findings, heads) = scan(&[head.as_bytes(), body]);
        assert_eq!(heads, 1);
        assert!(!findings.is_conflicting(0));
    }
}
