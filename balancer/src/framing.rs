//! A read-side tap on each client connection that follows message boundaries, finds
//! requests carrying both Content-Length and Transfer-Encoding, and enforces the
//! client-side waits.
//!
//! hyper resolves that conflict the way RFC 9112 6.1 allows (Transfer-Encoding wins, the
//! connection closes afterwards) and drops the Content-Length header before the request
//! reaches us, so the conflict is invisible later. Request smuggling lives in exactly this
//! disagreement between hops, so we refuse such requests outright: the tap follows message
//! boundaries (head, then Content-Length or chunked body) as the bytes pass through and
//! records the index of the first offending request; the proxy answers that one with 400.
//!
//! The tap fails closed. When it meets anything it cannot follow (a head or chunk size it
//! cannot parse, differing Content-Lengths, bytes that arrived while an upgrade's answer
//! was still open), it records the index of the first request it cannot vouch for: the
//! server closes the connection after the answer in progress and refuses that request and
//! any later one. A request asking for an upgrade (or CONNECT) is followed like any other
//! until its answer: only a real switch (101, or 2xx to CONNECT) ends the tap's watch,
//! and the tunnel's own idle bound takes over.
//!
//! Because it knows where heads begin and end, the tap also enforces the two client-side
//! waits that hyper cannot tell apart: a head must arrive whole within `client_header` of
//! its first byte (or of the accept, for the first request: slowloris), and a kept-alive
//! connection with no request in flight is closed after `keep_alive_idle`. The timer is
//! one `Sleep` per connection, re-armed lazily: a request that arrives whole in one read
//! costs a clock read, not a timer registration. On the write side, a write that makes no
//! progress for `client_write` (a client that stopped reading) ends the connection.
//! Request bodies are bounded where they are read, by the proxy (`client_body`).
//!
//! The idle time starts when the answer ends (recorded in [`Findings`]), not at the tap's
//! next look. While a request is in flight the tap looks again after
//! `guards::IDLE_PARK_AFTER`; a request that outlasts that look has its end wake the tap.
//! (Fast answers, nearly all, so cost no lock and no wake-up.) After `guards::IDLE_PARK_AFTER` of
//! idleness the tap reports an end of stream of its own (and skips the shutdown hyper
//! then asks for): hyper's connection ends and frees its buffers, and the server parks the
//! bare socket until the next request (see `server`).
//!
//! The tap also holds the connection's slot under `limits.max_connections`: it lives as
//! long as the socket, through an upgrade into a tunnel.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

use crate::guards::{CLIENT_HEADER_SLOTS, ClientGuards, IDLE_PARK_AFTER};

const NONE: u64 = u64::MAX;

/// What the tap found, shared with the connection's request handler.
#[derive(Debug)]
pub struct Findings {
    /// Index (0-based, per connection) of the first request with both headers.
    first_conflict: AtomicU64,
    /// Index of the first request the tap cannot vouch for: it lost track of the message
    /// boundaries at or before its head.
    lost_at: AtomicU64,
    /// Index of the request whose answer switched protocols.
    switched: AtomicU64,
    /// Responses completed on this connection (their bodies sent or dropped): when it equals
    /// the heads the tap has seen, nothing is in flight.
    answered: AtomicU64,
    /// When the last response completed, in nanoseconds after `base`.
    answered_at: AtomicU64,
    base: Instant,
    /// The connection's task, when the tap waits on an answer: its end starts the idle
    /// time, which nothing else would wake the tap for.
    reader: Mutex<Option<Waker>>,
    /// Whether `reader` holds a waker: most answers end with none, and skip the lock.
    reader_set: AtomicBool,
}

impl Findings {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            first_conflict: AtomicU64::new(NONE),
            lost_at: AtomicU64::new(NONE),
            switched: AtomicU64::new(NONE),
            answered: AtomicU64::new(0),
            answered_at: AtomicU64::new(0),
            base: Instant::now(),
            reader: Mutex::new(None),
            reader_set: AtomicBool::new(false),
        })
    }

    /// Records that one response is complete.
    pub fn answered(&self) {
        let at = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.answered_at.store(at, Ordering::Relaxed);
        // SeqCst pairs with `wake_when_answered`: either it sees this answer, or this sees
        // its waker.
        self.answered.fetch_add(1, Ordering::SeqCst);
        if !self.reader_set.swap(false, Ordering::SeqCst) {
            return;
        }
        let reader = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(reader) = reader {
            reader.wake();
        }
    }

    /// Asks to be woken when the answer in flight completes.
    fn wake_when_answered(&self, waker: &Waker) {
        let mut reader = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        if !reader.as_ref().is_some_and(|r| r.will_wake(waker)) {
            *reader = Some(waker.clone());
        }
        self.reader_set.store(true, Ordering::SeqCst);
    }

    /// Records that request number `index` is answered with a protocol switch; called
    /// before its answer is handed to hyper.
    pub fn switched(&self, index: u64) {
        self.switched.store(index, Ordering::Release);
    }

    fn last_answer(&self) -> Instant {
        self.base + Duration::from_nanos(self.answered_at.load(Ordering::Relaxed))
    }

    /// Whether request number `index` on this connection had conflicting framing.
    pub fn is_conflicting(&self, index: u64) -> bool {
        self.first_conflict.load(Ordering::Relaxed) == index
    }

    /// Whether the tap followed the connection up to and through request `index`'s head,
    /// so every framing check ran on it.
    pub fn vouches_for(&self, index: u64) -> bool {
        index < self.lost_at.load(Ordering::Acquire)
    }

    /// Whether the connection must close after answering request `index`: the tap cannot
    /// vouch for what follows it.
    pub fn must_close_after(&self, index: u64) -> bool {
        self.lost_at.load(Ordering::Acquire) <= index.saturating_add(1)
    }

    fn lose_from(&self, index: u64) {
        self.lost_at.fetch_min(index, Ordering::AcqRel);
    }
}

#[derive(Debug, Clone, Copy)]
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
    /// Request `index` asked for a protocol switch and its answer is not known yet; what
    /// arrives meanwhile belongs to the new protocol or to the next request, which cannot
    /// be told apart (`early`: some did).
    AwaitingSwitch {
        index: u64,
        early: bool,
    },
    /// The protocol switched: the bytes are a tunnel's, bounded by its own idle timeout.
    Tunnel,
    /// Boundaries lost: nothing more from this connection is forwarded.
    Lost,
}

/// How long a read that found nothing may wait.
enum Wait {
    Unbounded,
    /// The connection is closed if nothing arrives by then.
    Until(Instant, &'static str),
    /// Nothing to enforce now; evaluate again at this time, or (`wake`) sooner if the
    /// answer in flight ends first.
    Recheck {
        at: Instant,
        wake: bool,
    },
    /// Idle: at this time, end hyper's connection so it frees its buffers (see `parked`).
    Park(Instant),
}

#[derive(Debug)]
pub struct FramingTap<IO> {
    inner: IO,
    state: State,
    line: Vec<u8>,
    heads: u64,
    /// A request head that asked for a switch: it may happen once its body (if any) ends.
    switch_pending: Option<u64>,
    findings: Arc<Findings>,
    guards: ClientGuards,
    /// When the head being waited for began: the accept, then each head's first byte; when
    /// the tap got lost, the moment it did.
    head_since: Option<Instant>,
    /// Armed at or before the earliest deadline; checked against the real one when it fires.
    timer: Option<Pin<Box<Sleep>>>,
    /// Since when writes to the client have made no progress.
    write_since: Option<Instant>,
    write_timer: Option<Pin<Box<Sleep>>>,
    /// The connection's slot under `limits.max_connections`, released with the socket.
    _permit: Option<OwnedSemaphorePermit>,
    /// The tap reported an end of stream it did not see, to make hyper give the idle
    /// connection back (with `poll_shutdown` skipped): the server parks the bare socket.
    parked: bool,
    /// Whether idling may park the connection: not once a request asked for an upgrade
    /// (hyper keeps that upgrade pending until its connection ends, and would take the
    /// socket with it).
    parkable: bool,
    /// The number of heads seen when a recheck last came due: equal to `heads` once the
    /// request in flight has outlasted the first look.
    looked_again: u64,
}

impl<IO> FramingTap<IO> {
    pub fn new(inner: IO, findings: Arc<Findings>, guards: ClientGuards) -> Self {
        Self {
            inner,
            state: State::Head,
            line: Vec::new(),
            heads: 0,
            switch_pending: None,
            findings,
            guards,
            head_since: Some(Instant::now()),
            timer: None,
            write_since: None,
            write_timer: None,
            _permit: None,
            parked: false,
            parkable: true,
            looked_again: 0,
        }
    }

    pub fn get_ref(&self) -> &IO {
        &self.inner
    }

    /// Whether the last end of stream was the tap's own, for parking; resets it.
    pub fn take_parked(&mut self) -> bool {
        std::mem::take(&mut self.parked)
    }

    /// Frees what the tap holds beyond its fixed state, while the connection is parked.
    pub fn release_buffers(&mut self) {
        self.line = Vec::new();
        self.timer = None;
        self.write_timer = None;
    }

    /// When an idle connection is closed.
    pub fn idle_deadline(&self) -> Instant {
        self.findings.last_answer() + self.guards.keep_alive_idle
    }

    /// Keeps `permit` until the connection (or the tunnel it became) is dropped.
    pub fn holding(mut self, permit: OwnedSemaphorePermit) -> Self {
        self._permit = Some(permit);
        self
    }

    /// Settles an open switch once its answer is known.
    fn resolve_switch(&mut self) {
        let State::AwaitingSwitch { index, early } = self.state else {
            return;
        };
        if self.findings.switched.load(Ordering::Acquire) == index {
            self.state = State::Tunnel;
            self.line = Vec::new();
        } else if self.findings.answered.load(Ordering::Acquire) > index {
            if early {
                self.lose();
            } else {
                self.state = State::Head;
            }
        }
    }

    /// What bounds the wait that a read found nothing for.
    fn wait(&mut self) -> Wait {
        self.resolve_switch();
        let in_flight = self.findings.answered.load(Ordering::Acquire) < self.heads;
        match self.state {
            // Every body read is bounded by the proxy (`client_body`), and hyper reads a
            // body only for it; a tunnel bounds its own idle time.
            State::Body(_)
            | State::ChunkSize
            | State::ChunkData(_)
            | State::ChunkEnd
            | State::Trailers
            | State::Tunnel => return Wait::Unbounded,
            State::AwaitingSwitch { .. } => {
                return Wait::Recheck {
                    at: Instant::now() + self.guards.keep_alive_idle,
                    wake: true,
                };
            }
            State::Lost if in_flight => {
                return Wait::Recheck {
                    at: Instant::now() + self.guards.header,
                    wake: true,
                };
            }
            State::Lost => {
                let since = self.head_since.map_or(self.findings.last_answer(), |s| {
                    s.max(self.findings.last_answer())
                });
                return Wait::Until(since + self.guards.header, "request framing not followed");
            }
            State::Head => {}
        }
        if let Some(since) = self.head_since {
            return Wait::Until(
                since + self.guards.header,
                "request head not received in time",
            );
        }
        if in_flight {
            // A request is in flight: waiting for its answer is the backend's timeout. Look
            // again later: the answer may end without this connection being read again, and
            // the idle time (and parking) then counts from its end. Most answers end within
            // the parking delay, so the first look is a timer only: asking the answer to
            // wake the task costs a lock, and a wake-up in the middle of the connection's
            // own poll costs a whole extra poll of it, on every request. Only a request
            // still in flight at that look asks to be woken when it ends.
            if self.looked_again == self.heads {
                return Wait::Recheck {
                    at: Instant::now() + self.guards.keep_alive_idle,
                    wake: true,
                };
            }
            return Wait::Recheck {
                at: Instant::now() + IDLE_PARK_AFTER.min(self.guards.keep_alive_idle),
                wake: false,
            };
        }
        let park_at = self.findings.last_answer() + IDLE_PARK_AFTER;
        let idle_until = self.idle_deadline();
        // Not while a write is stuck: hyper's unsent answer would go with its connection.
        if self.parkable
            && self.line.is_empty()
            && self.write_since.is_none()
            && park_at < idle_until
        {
            return Wait::Park(park_at);
        }
        Wait::Until(idle_until, "keep-alive connection idle")
    }

    /// Called when a read found nothing: waits for the deadline, or reports it passed.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let (deadline, enforced, park) = match self.wait() {
                Wait::Unbounded => return Poll::Pending,
                Wait::Until(deadline, what) => (deadline, Some(what), false),
                Wait::Recheck { at, wake } => {
                    if wake {
                        self.findings.wake_when_answered(cx.waker());
                        // It may have completed just before the registration.
                        if self.findings.answered.load(Ordering::SeqCst) >= self.heads
                            && matches!(self.state, State::Head)
                        {
                            continue;
                        }
                    }
                    (at, None, false)
                }
                Wait::Park(at) => (at, None, true),
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
            if park && Instant::now() >= deadline {
                self.parked = true;
                return Poll::Ready(Ok(()));
            }
            if let Some(what) = enforced
                && Instant::now() >= deadline
            {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)));
            }
            let next = if enforced.is_some() || park {
                deadline
            } else {
                // A recheck came due: if the same request is still in flight, the next
                // look is woken by its end.
                self.looked_again = self.heads;
                Instant::now() + self.guards.keep_alive_idle.min(self.guards.header)
            };
            timer.as_mut().reset(next);
        }
    }

    /// Called when a write made no progress: waits for `client_write`, or reports it passed.
    fn poll_write_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let deadline = *self.write_since.get_or_insert_with(Instant::now) + self.guards.write;
        let timer = self
            .write_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        match timer.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "client stopped reading",
            )),
        }
    }

    /// Passes a write's outcome on, bounding a write that cannot progress.
    fn guard_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending => match self.poll_write_deadline(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(error) => Poll::Ready(Err(error)),
            },
            ready => {
                self.write_since = None;
                ready
            }
        }
    }

    /// Notes the time a head begins and ends, after `inspect` ran on newly read bytes.
    fn track_heads(&mut self, heads_before: u64) {
        if !matches!(self.state, State::Head | State::AwaitingSwitch { .. }) {
            // In a body the proxy bounds the reads; lost or switched, the head timer is
            // not the bound any more.
            if self.heads != heads_before && !matches!(self.state, State::Lost) {
                self.head_since = None;
            }
            return;
        }
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
                State::Lost | State::Tunnel => return,
                State::AwaitingSwitch { index, .. } => {
                    // Tunnel bytes or the next request: undecidable until the answer, so
                    // nothing after this request is vouched for unless it switches.
                    self.state = State::AwaitingSwitch { index, early: true };
                    self.findings.lose_from(index + 1);
                    return;
                }
                State::Body(remaining) => {
                    let n = remaining.min(bytes.len() as u64);
                    bytes = &bytes[n as usize..];
                    self.state = if remaining == n {
                        self.message_done()
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
                        if self.line.len() > self.guards.max_header_bytes {
                            self.lose();
                        }
                        return;
                    };
                    self.line.extend_from_slice(&bytes[..=end]);
                    bytes = &bytes[end + 1..];
                    if self.line.len() > self.guards.max_header_bytes {
                        self.lose();
                        return;
                    }
                    self.line_done();
                }
            }
        }
    }

    /// The state after a complete message: the next head, or the wait for a switch.
    fn message_done(&mut self) -> State {
        match self.switch_pending.take() {
            Some(index) => State::AwaitingSwitch {
                index,
                early: false,
            },
            None => State::Head,
        }
    }

    /// The tap can no longer follow this connection: from the request whose head it was
    /// reading (or the next one, mid-body), nothing is vouched for.
    fn lose(&mut self) {
        self.findings.lose_from(self.heads);
        self.state = State::Lost;
        self.line = Vec::new();
        self.head_since = Some(Instant::now());
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
                // it does not take whole (bare LF, `+5`, no digits) stops the tap, closed.
                use crate::upstream::chunked::parse_chunk_size;
                let size = match parse_chunk_size(&self.line) {
                    Ok(httparse::Status::Complete((length, n))) if length == self.line.len() => {
                        Ok(n)
                    }
                    _ => Err(()),
                };
                self.line.clear();
                match size {
                    Ok(0) => self.state = State::Trailers,
                    Ok(n) => self.state = State::ChunkData(n),
                    Err(_) => self.lose(),
                }
            }
            State::ChunkEnd => {
                self.state = State::ChunkSize;
                self.line.clear();
            }
            State::Trailers => {
                if self.line == b"\r\n" || self.line == b"\n" {
                    self.state = self.message_done();
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
            self.lose();
            return;
        }
        if !matches!(self.state, State::Lost) {
            self.line = line;
            self.line.clear();
        }
    }

    /// Judges the head at the front of `bytes` and moves past it: returns its length, or
    /// `None` if it is not complete yet. Anything the tap cannot follow loses it (hyper
    /// refuses such a head anyway).
    fn take_head(&mut self, bytes: &[u8]) -> Option<usize> {
        // Uninitialised slots: zeroing 128 headers (4 KiB) for every request costs more
        // than parsing a typical head.
        let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() };
            CLIENT_HEADER_SLOTS];
        let mut request = httparse::Request::new(&mut []);
        let length = match request.parse_with_uninit_headers(bytes, &mut headers) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return None,
            Err(_) => {
                self.lose();
                return Some(bytes.len());
            }
        };
        let index = self.heads;
        self.heads += 1;
        let mut content_length = None;
        let mut lengths_agree = true;
        let mut transfer_encoding = None;
        let mut upgrade = request.method == Some("CONNECT");
        for header in request.headers.iter() {
            if header.name.eq_ignore_ascii_case("content-length") {
                // Equal repeated values (in one header or several) are one length, as
                // hyper reads them; differing or unreadable ones hyper refuses.
                for part in header.value.split(|&b| b == b',') {
                    let value = crate::upstream::content_length_value(part);
                    match (value, content_length) {
                        (None, _) => lengths_agree = false,
                        (Some(v), Some(previous)) if v != previous => lengths_agree = false,
                        (Some(v), _) => content_length = Some(v),
                    }
                }
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                transfer_encoding = Some(header.value);
            } else if header.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        if transfer_encoding.is_some() && (content_length.is_some() || !lengths_agree) {
            let _ = self.findings.first_conflict.compare_exchange(
                NONE,
                index,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        if upgrade {
            self.switch_pending = Some(index);
            self.parkable = false;
        }
        let chunked_last = transfer_encoding.map(|value| {
            value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        });
        match chunked_last {
            Some(true) => self.state = State::ChunkSize,
            // A body framed by another coding, or by lengths that disagree: hyper refuses
            // the request, and neither it nor anything after it is vouched for.
            Some(false) => {
                self.findings.lose_from(index);
                self.lose();
            }
            None if !lengths_agree => {
                self.findings.lose_from(index);
                self.lose();
            }
            None => match content_length {
                Some(n) if n > 0 => self.state = State::Body(n),
                _ => self.state = self.message_done(),
            },
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
        this.resolve_switch();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        match polled {
            Poll::Ready(Ok(())) if !matches!(this.state, State::Lost | State::Tunnel) => {
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
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.guard_write(cx, polled)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.guard_write(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.parked {
            // hyper ends its connection after the tap's own end of stream: the socket
            // stays open, parked by the server.
            return Poll::Ready(Ok(()));
        }
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.guard_write(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.guard_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUARDS: ClientGuards = ClientGuards {
        header: Duration::from_secs(10),
        keep_alive_idle: Duration::from_secs(60),
        body: Duration::from_secs(10),
        write: Duration::from_secs(10),
        max_header_bytes: 8192,
        max_headers: 100,
    };

    fn scan(chunks: &[&[u8]]) -> (Arc<Findings>, u64) {
        let findings = Findings::new();
        let mut tap = FramingTap::new((), findings.clone(), GUARDS);
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
    fn equal_lengths_are_followed_and_what_cannot_be_followed_is_not_vouched_for() {
        let (findings, heads) = scan(&[
            b"POST /a HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2, 2\r\n\r\nhi",
            b"GET /b HTTP/1.1\r\n\r\n",
        ]);
        assert_eq!(heads, 2);
        assert!(findings.vouches_for(1) && !findings.must_close_after(1));

        for lost in [
            &b"POST /b HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi"[..],
            b"POST /b HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nhi",
            b"GET /b HTTP/1.1\r\nBad Header\r\n\r\n",
        ] {
            let (findings, _) =
                scan(&[b"GET /a HTTP/1.1\r\n\r\n", lost, b"GET /c HTTP/1.1\r\n\r\n"]);
            let text = String::from_utf8_lossy(lost);
            assert!(findings.vouches_for(0), "{text}");
            assert!(findings.must_close_after(0), "{text}");
            assert!(
                !findings.vouches_for(1) && !findings.vouches_for(2),
                "{text}"
            );
        }

        // A bad chunk size mid-body: that request was checked, nothing after it is.
        let (findings, _) = scan(&[
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"GET /b HTTP/1.1\r\n\r\n",
        ]);
        assert!(findings.vouches_for(0) && findings.must_close_after(0));
        assert!(!findings.vouches_for(1));
    }

    #[test]
    fn bytes_behind_an_upgrade_are_not_vouched_for_until_its_answer() {
        let (findings, heads) = scan(&[
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            b"GET /next HTTP/1.1\r\n\r\n",
        ]);
        assert_eq!(heads, 1);
        assert!(findings.vouches_for(0) && findings.must_close_after(0));
        assert!(!findings.vouches_for(1));
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
