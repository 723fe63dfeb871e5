//! The byte tunnel between a client and a backend, for an upgraded HTTP connection
//! (`proxy::upgrade`) and for every connection of a `mode = "tcp"` listener (`l4`).
//!
//! Bytes are copied both ways by tokio's `copy_bidirectional`, which passes a half-close
//! on (one side's end of stream shuts the other's write side, and the other direction goes
//! on) and ends when both directions have. The idle bound is a watchdog beside it: each
//! read that brings bytes stamps the time (a clock read, no timer operation), and the one
//! timer only moves when it fires, to the last stamp plus the idle time. So a busy tunnel
//! costs no timer work per read, and one that carried nothing for `idle` is closed.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Each direction's copy buffer.
const BUFFER_BYTES: usize = 16 * 1024;

/// How a tunnel ended, and what it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spliced {
    /// Bytes from the client to the backend.
    pub sent: u64,
    /// Bytes from the backend to the client.
    pub received: u64,
    pub end: End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both sides closed their direction.
    Closed,
    /// Nothing moved either way for the idle time.
    Idle,
    /// A read or write failed (a reset, usually).
    Error,
}

/// Copies both ways until both sides have closed, either fails, or nothing moved for
/// `idle`.
pub async fn splice<C, B>(client: C, backend: B, idle: Duration) -> Spliced
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let base = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let mut client = Stamped::new(client, base, activity.clone(), sent.clone());
    let mut backend = Stamped::new(backend, base, activity.clone(), received.clone());
    let copy = tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut backend,
        BUFFER_BYTES,
        BUFFER_BYTES,
    );
    tokio::pin!(copy);
    let watchdog = tokio::time::sleep_until(base + idle);
    tokio::pin!(watchdog);
    let end = std::future::poll_fn(|cx| {
        if let Poll::Ready(copied) = copy.as_mut().poll(cx) {
            return Poll::Ready(if copied.is_ok() {
                End::Closed
            } else {
                End::Error
            });
        }
        loop {
            if watchdog.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let last = base + Duration::from_nanos(activity.load(Ordering::Relaxed));
            if Instant::now() >= last + idle {
                return Poll::Ready(End::Idle);
            }
            watchdog.as_mut().reset(last + idle);
        }
    })
    .await;
    Spliced {
        sent: sent.load(Ordering::Relaxed),
        received: received.load(Ordering::Relaxed),
        end,
    }
}

/// A stream whose reads stamp the tunnel's last activity and count the bytes read.
struct Stamped<S> {
    inner: S,
    base: Instant,
    activity: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl<S> Stamped<S> {
    fn new(inner: S, base: Instant, activity: Arc<AtomicU64>, bytes: Arc<AtomicU64>) -> Self {
        Self {
            inner,
            base,
            activity,
            bytes,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Stamped<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            let since = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.activity.store(since, Ordering::Relaxed);
            self.bytes.fetch_add(read as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Stamped<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn carries_both_ways_and_passes_a_half_close_on() {
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (backend, mut backend_peer) = tokio::io::duplex(64);
        let spliced = tokio::spawn(splice(client, backend, Duration::from_secs(30)));
        client_peer.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        backend_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        // The client closes its side: the backend sees the end, and can still answer.
        client_peer.shutdown().await.unwrap();
        assert_eq!(backend_peer.read(&mut got).await.unwrap(), 0);
        backend_peer.write_all(b"pong!").await.unwrap();
        drop(backend_peer);
        let mut answer = Vec::new();
        client_peer.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"pong!");
        let spliced = spliced.await.unwrap();
        assert_eq!(
            spliced,
            Spliced {
                sent: 4,
                received: 5,
                end: End::Closed
            }
        );
    }

    #[tokio::test]
    async fn an_idle_tunnel_ends_after_the_idle_time_counted_from_the_last_byte() {
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (backend, mut backend_peer) = tokio::io::duplex(64);
        let idle = Duration::from_millis(300);
        let spliced = tokio::spawn(splice(client, backend, idle));
        // The client's own pause, then one byte: the idle time counts again from it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        client_peer.write_all(b"x").await.unwrap();
        let mut byte = [0u8; 1];
        backend_peer.read_exact(&mut byte).await.unwrap();
        let last_byte = Instant::now();
        let spliced = tokio::time::timeout(Duration::from_secs(10), spliced)
            .await
            .expect("the idle tunnel ended")
            .unwrap();
        assert_eq!(spliced.end, End::Idle);
        assert_eq!(spliced.sent, 1);
        // Timers never fire early: an end before this would have ignored the byte.
        assert!(last_byte.elapsed() >= idle - Duration::from_millis(5));
    }
}
