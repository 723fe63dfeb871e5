//! Idle keep-alive connections to one backend.
//!
//! A connection comes back here only after its exchange is complete (the response body was
//! read to its end), so whatever is taken out is ready for a request. One that the backend
//! closed while it sat idle is noticed on the way out and dropped.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::upstream::{ConnectError, Connection};

/// Idle connections, most recently used last (reusing warm connections first lets the
/// backend close the cold ones).
#[derive(Debug)]
pub struct Pool {
    idle: Mutex<Vec<(Box<Connection>, Instant)>>,
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

    /// An idle connection that is still open, if there is one.
    pub fn take(&self) -> Option<Box<Connection>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((connection, since)) = idle.pop() {
            if since.elapsed() <= self.idle_timeout && connection.is_reusable() {
                return Some(connection);
            }
        }
        None
    }

    pub fn put(&self, connection: Box<Connection>) {
        if self.max_idle == 0 {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= self.max_idle {
            // Drop the oldest: it is the likeliest to be closed by the backend soon.
            idle.remove(0);
        }
        idle.push((connection, Instant::now()));
    }

    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// A pooled connection that is ready for a request, or a new one.
pub async fn checkout(
    pool: &Pool,
    addr: SocketAddr,
    connect_timeout: Duration,
) -> Result<Box<Connection>, ConnectError> {
    match pool.take() {
        Some(connection) => Ok(connection),
        None => Connection::connect(addr, connect_timeout).await,
    }
}
