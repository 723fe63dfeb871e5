//! Test harness: real PostgreSQL and Redis servers, started from the system's binaries in
//! temporary directories, each listening only on a Unix socket in its directory.
//!
//! Unix sockets, not TCP ports: a port found free and then handed to a server can be taken
//! by another process in between (and again at a restart); a socket path in our own temp
//! dir cannot.
//!
//! Nothing here is a mock. When a server binary is missing the harness panics with a message
//! that says what to install (`scripts/install-deps`), so a test never passes by skipping.
//!
//! Every server runs under a tiny `sh` supervisor whose standard input is a pipe held by the
//! test process. When the handle is dropped, or the test process dies for any reason, the pipe
//! closes and the supervisor stops the server: no server outlives the tests that started it,
//! not even the shared ones kept in statics (whose destructors never run).
//!
//! [`chromium`] drives headless chromium for the browser tests, under the same rule: missing,
//! it fails loudly.

pub mod chromium;
mod postgres;
mod process;
mod redis;

pub use postgres::Postgres;
pub use redis::{Frozen, Redis};

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Waits until something accepts TCP connections on `127.0.0.1:port`, at most `limit`.
pub fn wait_for_port(port: u16, limit: Duration) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// A short random-enough name for databases and temp dirs (time and a process-wide counter).
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_{}_{nanos:x}_{n}", std::process::id())
}
