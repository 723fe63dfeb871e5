//! Pooled keep-alive HTTP/1.1 connections to one backend.
//!
//! The pool is ours rather than a generic client's so the proxy knows whether a request
//! reached a backend: a connect failure hands the request back untouched, which is what
//! makes retrying it on the next candidate safe.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::proxy::body::UpstreamBody;

pub type UpstreamSender = SendRequest<UpstreamBody>;

/// Why no connection could be had; in every case nothing was sent.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("connect timed out")]
    TimedOut,
    #[error("handshake failed: {0}")]
    Handshake(#[from] hyper::Error),
}

/// Idle connections, most recently used last (reusing warm connections first lets the
/// backend close the cold ones).
#[derive(Debug)]
pub struct Pool {
    idle: Mutex<Vec<(UpstreamSender, Instant)>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
        }
    }

    /// An idle connection whose previous exchange is complete, if one is left open.
    pub fn take(&self) -> Option<UpstreamSender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((sender, since)) = idle.pop() {
            if sender.is_closed() || since.elapsed() > self.idle_timeout {
                continue;
            }
            return Some(sender);
        }
        None
    }

    pub fn put(&self, sender: UpstreamSender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= self.max_idle {
            // Drop the oldest: it is the likeliest to be closed by the backend soon.
            idle.remove(0);
        }
        idle.push((sender, Instant::now()));
    }

    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Opens a new connection to `addr` within `timeout`.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<UpstreamSender, ConnectError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::TimedOut)??;
    stream.set_nodelay(true)?;
    let (sender, connection) = Builder::new().handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(backend = %addr, %error, "backend connection ended with an error");
        }
    });
    Ok(sender)
}

/// A pooled connection that is ready for a request, or a new one.
pub async fn checkout(
    pool: &Pool,
    addr: SocketAddr,
    connect_timeout: Duration,
) -> Result<UpstreamSender, ConnectError> {
    let mut may_wait = true;
    while let Some(mut sender) = pool.take() {
        if sender.is_ready() {
            return Ok(sender);
        }
        // The connection task may still be finishing the previous exchange; that takes
        // microseconds. Wait briefly, once per checkout, and drop connections that need longer.
        if may_wait {
            may_wait = false;
            if let Ok(Ok(())) =
                tokio::time::timeout(Duration::from_millis(20), sender.ready()).await
            {
                return Ok(sender);
            }
        }
    }
    connect(addr, connect_timeout).await
}
