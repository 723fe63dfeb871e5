//! Every bound the balancer puts on a connection or a request, assembled in one place from
//! the [`Config`]: what a client may send and how slowly, how long a backend may take, how
//! long a tunnel may idle, and the fixed sizes the parsers work with. The rest of the code
//! takes its limits from here, so a reader finds them all together and a new wait cannot
//! quietly go without one.
//!
//! Where each bound is enforced:
//!
//! | bound | enforced by |
//! |---|---|
//! | `limits.max_connections` (client connections and the tunnels they became) | `server` (a semaphore permit held by the connection's I/O until it is dropped); `l4` (a permit per connection task) |
//! | `limits.max_header_bytes`, `limits.max_headers` | hyper's parser (431) and the `framing` tap |
//! | `timeouts.client_header` (a head from its first byte), `keep_alive_idle` | `framing` tap |
//! | `timeouts.client_write` (a client that stopped reading) | `framing` tap, write side; the switch after a 101 |
//! | lingering close of an HTTP/1.1 client connection: `timeouts.lingering_time` in all, `timeouts.lingering_timeout` with nothing received, `limits.lingering_bytes` discarded (0: off) | `server` (after the write side is shut, until the client's end of stream) |
//! | `timeouts.client_body` (idle between request body reads) | `upstream::request` (408) |
//! | `timeouts.connect` | `upstream::connection`; `l4` |
//! | `timeouts.response_header` (from the request's last byte) | `upstream::exchange` |
//! | `timeouts.backend_body` (idle either way on a backend body) | `upstream::request`, `upstream::body` |
//! | `timeouts.tunnel_idle` (nothing moved either way) | `tunnel`, for `proxy::upgrade` and every `l4` connection |
//! | `limits.max_idle_per_backend`, `timeouts.pool_idle` | `pool` |
//! | response head size and header count | `upstream::response` (constants below) |
//! | `timeouts.tls_handshake` (from the accept to the end of the handshake) | `server` (the TLS accept) |
//! | `limits.max_handshakes` (handshakes in progress; one more is closed at once) | `server` (a semaphore permit held until the handshake ends) |
//! | HTTP/2: `limits.h2_max_concurrent_streams` (SETTINGS_MAX_CONCURRENT_STREAMS; more are refused) | hyper's h2 (`server::http2`) |
//! | HTTP/2: header list size (`limits.max_header_bytes`, SETTINGS_MAX_HEADER_LIST_SIZE) | hyper's h2 (431, or the stream reset) |
//! | HTTP/2: first stream within `timeouts.client_header` of the handshake, then `keep_alive_idle` with no stream open | `server::http2` (a watchdog beside the connection; hyper's h2 has no idle timeout) |
//! | HTTP/2: `timeouts.client_write` (an answer held for want of the client's flow-control window while nothing moved; a PING unanswered) | `server::http2` watchdog; hyper's h2 keep-alive PING |
//! | HTTP/2: answer bytes buffered per stream (`H2_MAX_SEND_BUFFER`) | h2 |
//! | HTTP/2: rapid reset (CVE-2023-44487): more than `limits.h2_max_resets` streams reset before their answer was done, and more of them than completed streams, closes the connection; streams reset before hyper accepted them (`H2_MAX_PENDING_ACCEPT_RESETS`) and our own error resets (`H2_MAX_LOCAL_ERROR_RESETS`) end it with GOAWAY | `server::http2`; h2 |
//!
//! Guards fail closed: when the framing tap cannot follow a connection any more (a head it
//! cannot parse, a body framing it does not understand, bytes that arrived while an upgrade
//! was undecided), the connection is closed after the answer in progress, and every further
//! request on it is refused rather than forwarded unchecked.

use std::time::Duration;

use crate::config::Config;

/// Header slots of the framing tap's parser: the most `limits.max_headers` may be, so any
/// head the tap cannot parse is one hyper refuses too.
pub const CLIENT_HEADER_SLOTS: usize = 128;
/// A client connection idle this long (no request in flight, nothing received) gives
/// hyper's buffers back and waits on the bare socket (`server`), as nginx frees its buffers
/// when a connection turns to keep-alive: idle connections then cost about a kilobyte each
/// instead of hyper's 16 KiB. Short, so buffers freed by one connection are reused by the
/// next instead of piling up; yet long enough that a busy connection, whose next request
/// follows within a round trip, never pays for the rebuild.
pub const IDLE_PARK_AFTER: Duration = Duration::from_millis(50);
/// HTTP/2: streams the client reset before hyper took them from h2's queue; past this h2
/// answers GOAWAY (ENHANCE_YOUR_CALM). h2's own default: a burst of HEADERS + RST_STREAM
/// pairs read in one go lands here.
pub const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// HTTP/2: streams the balancer itself reset because the client erred (a malformed
/// header block, a flow-control violation); past this h2 ends the connection with GOAWAY.
pub const H2_MAX_LOCAL_ERROR_RESETS: usize = 256;
/// HTTP/2: answer bytes h2 may hold per stream beyond what the client's socket took
/// (hyper's default is 400 KiB): with `limits.h2_max_concurrent_streams` streams, what one
/// slow-reading connection can pin in memory until `client_write` cuts it off.
pub const H2_MAX_SEND_BUFFER: usize = 64 * 1024;
/// The most headers a backend's answer may carry.
pub const BACKEND_MAX_HEADERS: usize = 128;
/// The largest response head accepted from a backend.
pub const BACKEND_MAX_HEAD_BYTES: usize = 64 * 1024;

/// Smallest and largest accepted `limits.max_header_bytes`: below 1 KiB ordinary browsers
/// fail; hyper's read buffer (about 400 KiB) would cut in before anything larger.
const HEADER_BYTES: (usize, usize) = (1024, 256 * 1024);
const MAX_CONNECTIONS: usize = 1_000_000;
const MAX_IDLE_PER_BACKEND: usize = 100_000;
const MAX_HANDSHAKES: usize = 1_000_000;
/// RFC 9113 recommends allowing at least 100; far more only multiplies what one
/// connection may hold.
const H2_MAX_CONCURRENT_STREAMS: usize = 10_000;
const H2_MAX_RESETS: usize = 1_000_000;
/// Far more than any answer's worth of a client's racing writes; past it a client is
/// sending on purpose, and lingering only costs reads.
const LINGERING_BYTES: usize = 1024 * 1024 * 1024;
/// No wait may be zero (it would fire at once) or longer than a day (effectively none,
/// and far enough to overflow an `Instant` on some platforms).
const LONGEST_WAIT: Duration = Duration::from_secs(24 * 3600);
const SHORTEST_WAIT: Duration = Duration::from_millis(1);

/// The bounds on one client connection.
#[derive(Debug, Clone, Copy)]
pub struct ClientGuards {
    /// From a head's first byte (or the accept, for the first request) to its end.
    pub header: Duration,
    /// From the end of the last response to the next request's first byte.
    pub keep_alive_idle: Duration,
    /// Idle time between two reads of a request body.
    pub body: Duration,
    /// How long a write to the client may make no progress.
    pub write: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
}

/// The bounds on one exchange with a backend.
#[derive(Debug, Clone, Copy)]
pub struct BackendGuards {
    pub connect: Duration,
    /// From the request's last byte to the answer's head.
    pub response_header: Duration,
    /// Idle time, either way, while a body moves to or from the backend.
    pub body: Duration,
    /// Idle time between reads of the client's request body (the client's fault: 408).
    pub client_body: Duration,
}

impl BackendGuards {
    /// Every wait bounded by one duration (a health check's).
    pub fn within(timeout: Duration) -> Self {
        Self {
            connect: timeout,
            response_header: timeout,
            body: timeout,
            client_body: timeout,
        }
    }
}

/// The bounds on the lingering close of an HTTP/1.1 client connection (nginx's
/// `lingering_close`): after the balancer shut its side, what the client still sends is
/// read and discarded until the client closes too, within these bounds, so the answer it
/// has not read yet is not destroyed by a reset.
#[derive(Debug, Clone, Copy)]
pub struct LingerGuards {
    /// The whole lingering, from the write side's shutdown.
    pub time: Duration,
    /// Closed once nothing came for this long.
    pub idle: Duration,
    /// Closed once this many bytes were discarded; 0: no lingering at all.
    pub max_bytes: usize,
}

/// The bounds on an upgraded connection.
#[derive(Debug, Clone, Copy)]
pub struct TunnelGuards {
    /// How long the client's side gets to complete the switch after the 101.
    pub switch: Duration,
    /// Closed when neither side sent anything for this long.
    pub idle: Duration,
}

/// The bounds on each backend's pool of idle connections.
#[derive(Debug, Clone, Copy)]
pub struct PoolGuards {
    pub max_idle: usize,
    pub idle: Duration,
}

/// The bounds on a TLS connection before it speaks HTTP.
#[derive(Debug, Clone, Copy)]
pub struct TlsGuards {
    /// From the accept to the end of the handshake.
    pub handshake: Duration,
    /// Handshakes in progress at once.
    pub max_handshakes: usize,
}

/// The bounds particular to an HTTP/2 client connection (the [`ClientGuards`] apply
/// too: header bytes, `client_header` for the first stream, `keep_alive_idle`,
/// `client_body`, `client_write`).
#[derive(Debug, Clone, Copy)]
pub struct Http2Guards {
    /// Streams open at once on one connection.
    pub max_concurrent_streams: u32,
    /// Streams the client may abandon (reset before their answer was done) before the
    /// connection is judged by the ratio of abandoned to completed streams.
    pub max_resets: usize,
}

/// Every per-connection and per-request bound.
#[derive(Debug, Clone, Copy)]
pub struct Guards {
    pub max_connections: usize,
    pub tls: TlsGuards,
    pub http2: Http2Guards,
    pub client: ClientGuards,
    pub linger: LingerGuards,
    pub backend: BackendGuards,
    pub tunnel: TunnelGuards,
    pub pool: PoolGuards,
}

impl Guards {
    pub fn from_config(config: &Config) -> Self {
        let t = &config.timeouts;
        let l = &config.limits;
        Self {
            max_connections: l.max_connections,
            tls: TlsGuards {
                handshake: t.tls_handshake,
                max_handshakes: l.max_handshakes,
            },
            http2: Http2Guards {
                // Bounded far below u32::MAX in validation.
                max_concurrent_streams: u32::try_from(l.h2_max_concurrent_streams)
                    .unwrap_or(u32::MAX),
                max_resets: l.h2_max_resets,
            },
            client: ClientGuards {
                header: t.client_header,
                keep_alive_idle: t.keep_alive_idle,
                body: t.client_body,
                write: t.client_write,
                max_header_bytes: l.max_header_bytes,
                max_headers: l.max_headers,
            },
            linger: LingerGuards {
                time: t.lingering_time,
                idle: t.lingering_timeout,
                max_bytes: l.lingering_bytes,
            },
            backend: BackendGuards {
                connect: t.connect,
                response_header: t.response_header,
                body: t.backend_body,
                client_body: t.client_body,
            },
            tunnel: TunnelGuards {
                switch: t.client_write,
                idle: t.tunnel_idle,
            },
            pool: PoolGuards {
                max_idle: l.max_idle_per_backend,
                idle: t.pool_idle,
            },
        }
    }
}

/// Checks every limit and timeout against its bounds; the message names the key.
pub(crate) fn check_bounds(config: &Config) -> Result<(), (&'static str, String)> {
    let l = &config.limits;
    for (name, value, low, high) in [
        (
            "limits.max_connections",
            l.max_connections,
            1,
            MAX_CONNECTIONS,
        ),
        (
            "limits.max_header_bytes",
            l.max_header_bytes,
            HEADER_BYTES.0,
            HEADER_BYTES.1,
        ),
        ("limits.max_headers", l.max_headers, 1, CLIENT_HEADER_SLOTS),
        (
            "limits.max_idle_per_backend",
            l.max_idle_per_backend,
            0,
            MAX_IDLE_PER_BACKEND,
        ),
        ("limits.max_handshakes", l.max_handshakes, 1, MAX_HANDSHAKES),
        (
            "limits.h2_max_concurrent_streams",
            l.h2_max_concurrent_streams,
            1,
            H2_MAX_CONCURRENT_STREAMS,
        ),
        ("limits.h2_max_resets", l.h2_max_resets, 1, H2_MAX_RESETS),
        (
            "limits.lingering_bytes",
            l.lingering_bytes,
            0,
            LINGERING_BYTES,
        ),
    ] {
        if !(low..=high).contains(&value) {
            return Err((name, format!("is {value}: must be {low}-{high}")));
        }
    }
    let t = &config.timeouts;
    for (name, value) in [
        ("timeouts.connect", t.connect),
        ("timeouts.response_header", t.response_header),
        ("timeouts.client_header", t.client_header),
        ("timeouts.client_body", t.client_body),
        ("timeouts.client_write", t.client_write),
        ("timeouts.backend_body", t.backend_body),
        ("timeouts.keep_alive_idle", t.keep_alive_idle),
        ("timeouts.tunnel_idle", t.tunnel_idle),
        ("timeouts.pool_idle", t.pool_idle),
        ("timeouts.shutdown_grace", t.shutdown_grace),
        ("timeouts.tls_handshake", t.tls_handshake),
        ("timeouts.lingering_time", t.lingering_time),
        ("timeouts.lingering_timeout", t.lingering_timeout),
    ] {
        if !(SHORTEST_WAIT..=LONGEST_WAIT).contains(&value) {
            return Err((
                name,
                format!("is {value:?}: must be between {SHORTEST_WAIT:?} and {LONGEST_WAIT:?}"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Config {
        Config {
            backends: vec!["127.0.0.1:80".parse().unwrap()],
            ..Config::default()
        }
    }

    #[test]
    fn defaults_are_within_bounds_and_each_bound_is_enforced_by_name() {
        valid().validate().unwrap();
        type Breaker = fn(&mut Config);
        let cases: [(&str, Breaker); 13] = [
            ("limits.lingering_bytes", |c| {
                c.limits.lingering_bytes = LINGERING_BYTES + 1
            }),
            ("timeouts.lingering_time", |c| {
                c.timeouts.lingering_time = Duration::ZERO
            }),
            ("timeouts.lingering_timeout", |c| {
                c.timeouts.lingering_timeout = Duration::from_secs(u64::MAX)
            }),
            ("limits.h2_max_concurrent_streams", |c| {
                c.limits.h2_max_concurrent_streams = 0
            }),
            ("limits.h2_max_resets", |c| c.limits.h2_max_resets = 0),
            ("limits.max_handshakes", |c| c.limits.max_handshakes = 0),
            ("timeouts.tls_handshake", |c| {
                c.timeouts.tls_handshake = Duration::ZERO
            }),
            ("limits.max_headers", |c| {
                c.limits.max_headers = CLIENT_HEADER_SLOTS + 1
            }),
            ("limits.max_headers", |c| c.limits.max_headers = 0),
            ("limits.max_header_bytes", |c| {
                c.limits.max_header_bytes = usize::MAX
            }),
            ("limits.max_connections", |c| c.limits.max_connections = 0),
            ("timeouts.client_body", |c| {
                c.timeouts.client_body = Duration::ZERO
            }),
            ("timeouts.tunnel_idle", |c| {
                c.timeouts.tunnel_idle = Duration::from_secs(u64::MAX)
            }),
        ];
        for (key, break_it) in cases {
            let mut config = valid();
            break_it(&mut config);
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains(key), "{key}: {error}");
        }
    }
}
