//! One TCP connection to a backend, with the bytes read from it but not yet consumed.

use std::net::SocketAddr;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;

use super::response::Span;

/// The read buffer's starting size; it grows only for larger response heads.
const READ_BUFFER: usize = 16 * 1024;

/// Why no connection could be had; in every case nothing was sent.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("connect timed out")]
    TimedOut,
}

#[derive(Debug)]
pub struct Connection {
    pub(super) stream: TcpStream,
    /// Bytes received and not yet consumed (the rest of a read that held more than a head).
    pub(super) read: BytesMut,
    /// Scratch space for encoding request heads, kept to avoid an allocation per request.
    pub(super) write: Vec<u8>,
    /// Scratch space for parsing response heads.
    pub(super) spans: Vec<Span>,
    addr: SocketAddr,
}

impl Connection {
    /// Opens a new connection to `addr` within `timeout`. It lives in a box of its own, so
    /// handing it between pool, exchange and body moves a pointer.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Box<Self>, ConnectError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ConnectError::TimedOut)??;
        stream.set_nodelay(true)?;
        Ok(Box::new(Self {
            stream,
            read: BytesMut::with_capacity(READ_BUFFER),
            write: Vec::with_capacity(1024),
            spans: Vec::with_capacity(16),
            addr,
        }))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether an idle connection may carry another request: the backend has neither closed
    /// it nor sent anything unasked. This costs no system call unless the reactor has seen
    /// an event on the socket since the last read.
    pub fn is_reusable(&self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readable: end of stream, an error or stray bytes, all of which end the
            // connection; or a stale readiness flag, which the read clears.
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Makes room for at least one more read of a useful size.
    pub(super) fn reserve_read(&mut self) {
        if self.read.capacity() - self.read.len() < READ_BUFFER / 4 {
            self.read.reserve(READ_BUFFER);
        }
    }

    /// Splits off the connection's parts for a tunnel: the stream and what was read past
    /// the 101 answer.
    pub(super) fn into_parts(self) -> (TcpStream, BytesMut) {
        (self.stream, self.read)
    }
}
