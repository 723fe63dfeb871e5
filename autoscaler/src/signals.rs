//! What the balancer measures, read through its admin API: per backend its state, requests
//! in flight and request counter ([`AdminClient::list`]), turned into requests per second
//! over a sliding window ([`RateWindow`]); and the calls that change the set (add, drain,
//! remove).
//!
//! The client is a small async HTTP/1.1 one over a tokio socket, like the `balancer admin`
//! CLI's blocking one: one request per connection (`Connection: close`), the whole exchange
//! under a timeout, the answer read up to a cap. The admin API is meant for loopback or a
//! private network; the token is sent as a bearer token and never logged.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest answer read (a list of the most backends the balancer holds fits easily).
const MAX_ANSWER_BYTES: u64 = 4 * 1024 * 1024;
/// The most samples a [`RateWindow`] keeps, whatever its length and the interval.
const MAX_SAMPLES: usize = 10_000;

/// A failed admin call, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot reach the balancer's admin API at {addr}: {source}")]
    Io {
        addr: Arc<str>,
        source: std::io::Error,
    },
    #[error("the balancer's admin API at {addr} did not answer within {timeout:?}")]
    Timeout { addr: Arc<str>, timeout: Duration },
    #[error("the balancer's admin API at {addr} sent an unreadable answer")]
    Garbled { addr: Arc<str> },
    #[error("the balancer's admin API refused {what}: {status} {message}")]
    Refused {
        what: String,
        status: u16,
        message: String,
    },
}

/// One backend as the admin API lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendStatus {
    pub address: SocketAddr,
    /// `healthy`, `unhealthy`, `ejected`, `draining` or `drained`.
    pub state: String,
    pub in_flight: u64,
    /// Requests sent to it since it joined the set.
    pub requests: u64,
    /// Latencies to response head measured since it joined: how many, and their sum in
    /// milliseconds (0 from a balancer that does not report them).
    pub latency_count: u64,
    pub latency_sum_ms: f64,
}

/// The balancer's admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    /// `HOST:PORT`, resolved at each call (a balancer recreated by compose may come back
    /// on another address under the same name).
    addr: Arc<str>,
    token: Option<SecretString>,
    timeout: Duration,
}

impl AdminClient {
    pub fn new(addr: impl ToString, token: Option<SecretString>, timeout: Duration) -> Self {
        AdminClient {
            addr: addr.to_string().into(),
            token,
            timeout,
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Every backend of the set.
    pub async fn list(&self) -> Result<Vec<BackendStatus>, AdminError> {
        let answer = self
            .expect_ok("the list", "GET", "/api/backends", None)
            .await?;
        let garbled = || AdminError::Garbled {
            addr: self.addr.clone(),
        };
        let backends = answer["backends"].as_array().ok_or_else(garbled)?;
        backends
            .iter()
            .map(|b| {
                Some(BackendStatus {
                    address: b["address"].as_str()?.parse().ok()?,
                    state: b["state"].as_str()?.to_owned(),
                    in_flight: b["in_flight"].as_u64()?,
                    requests: b["requests"].as_u64()?,
                    latency_count: b["latency_count"].as_u64().unwrap_or(0),
                    latency_sum_ms: b["latency_sum_ms"].as_f64().unwrap_or(0.0),
                })
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(garbled)
    }

    /// Adds `address`; it gets traffic once the balancer's health check passes (with
    /// `wait_for_first_pass`, the default). Already there is fine.
    pub async fn add(&self, address: SocketAddr) -> Result<(), AdminError> {
        let body = json!({ "address": address.to_string() });
        match self
            .expect_ok(
                &format!("adding {address}"),
                "POST",
                "/api/backends",
                Some(&body),
            )
            .await
        {
            Err(AdminError::Refused { status: 409, .. }) => Ok(()),
            other => other.map(drop),
        }
    }

    /// Sends no new requests to `address`; those in flight finish.
    pub async fn drain(&self, address: SocketAddr) -> Result<(), AdminError> {
        let path = format!("/api/backends/{}/drain", encode(address));
        self.expect_ok(&format!("draining {address}"), "POST", &path, None)
            .await
            .map(drop)
    }

    /// Records a scaling decision in the balancer (its dashboard shows it); `event` is
    /// the body `POST /api/scaling-events` takes.
    pub async fn report(&self, event: &Value) -> Result<(), AdminError> {
        self.expect_ok(
            "a scaling event",
            "POST",
            "/api/scaling-events",
            Some(event),
        )
        .await
        .map(drop)
    }

    /// The scaling events the balancer keeps (its newest 100), oldest first.
    pub async fn list_events(&self) -> Result<Vec<Value>, AdminError> {
        let answer = self
            .expect_ok("the scaling events", "GET", "/api/scaling-events", None)
            .await?;
        answer["events"]
            .as_array()
            .cloned()
            .ok_or_else(|| AdminError::Garbled {
                addr: self.addr.clone(),
            })
    }

    /// Takes `address` out of the set. Already gone is fine.
    pub async fn remove(&self, address: SocketAddr) -> Result<(), AdminError> {
        let path = format!("/api/backends/{}", encode(address));
        match self
            .expect_ok(&format!("removing {address}"), "DELETE", &path, None)
            .await
        {
            Err(AdminError::Refused { status: 404, .. }) => Ok(()),
            other => other.map(drop),
        }
    }

    async fn expect_ok(
        &self,
        what: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, AdminError> {
        let (status, answer) = self.call(method, path, body).await?;
        if (200..300).contains(&status) {
            return Ok(answer);
        }
        Err(AdminError::Refused {
            what: what.to_owned(),
            status,
            message: answer["error"]
                .as_str()
                .map_or_else(|| answer.to_string(), str::to_owned),
        })
    }

    /// One request on its own connection; returns the status and the JSON body.
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), AdminError> {
        let addr = &self.addr;
        let exchange = async {
            let io = |source| AdminError::Io {
                addr: addr.clone(),
                source,
            };
            let mut stream = TcpStream::connect(&**addr).await.map_err(io)?;
            let body = body.map(Value::to_string).unwrap_or_default();
            let mut request = format!(
                "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            )
            .into_bytes();
            if let Some(token) = &self.token {
                request.extend_from_slice(b"Authorization: Bearer ");
                request.extend_from_slice(token.expose_secret().as_bytes());
                request.extend_from_slice(b"\r\n");
            }
            request.extend_from_slice(b"\r\n");
            request.extend_from_slice(body.as_bytes());
            stream.write_all(&request).await.map_err(io)?;
            let mut answer = Vec::new();
            stream
                .take(MAX_ANSWER_BYTES)
                .read_to_end(&mut answer)
                .await
                .map_err(io)?;
            parse_answer(&answer).ok_or_else(|| AdminError::Garbled { addr: addr.clone() })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| AdminError::Timeout {
                addr: addr.clone(),
                timeout: self.timeout,
            })?
    }
}

/// `[` and `]` (of an IPv6 address) are not allowed raw in a request target.
fn encode(address: SocketAddr) -> String {
    address.to_string().replace('[', "%5B").replace(']', "%5D")
}

/// The status and JSON body of a whole `Connection: close` answer (the admin API always
/// sends a Content-Length body, never chunked).
fn parse_answer(answer: &[u8]) -> Option<(u16, Value)> {
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&answer[..split]).ok()?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let json = serde_json::from_slice(&answer[split + 4..]).ok()?;
    Some((status, json))
}

/// Requests per second to the instances in service, over the last `window`, and the mean
/// latency of those requests over the same window.
///
/// The balancer's counters are per backend and vanish with it, so a plain "sum now minus sum
/// then" would lose a removed instance's requests and read a scale-down as a drop in load.
/// Instead each sample adds the members' increments since the previous sample to running
/// totals, which only grow; the rate is the request total's difference over the window (the
/// mean latency: the latency sum's difference over the latency count's). A backend absent
/// from the previous sample joined since, with its counters at zero, so all of its count is
/// new; one whose request counter went down was removed and added again, and counts from
/// zero too.
#[derive(Debug)]
pub struct RateWindow {
    window: Duration,
    previous: HashMap<SocketAddr, Totals>,
    total: Totals,
    samples: VecDeque<(Instant, Totals)>,
}

/// Cumulative counters: requests, and latencies measured (count, sum in ms).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Totals {
    requests: u64,
    latency_count: u64,
    latency_sum_ms: f64,
}

impl Totals {
    fn of(backend: &BackendStatus) -> Self {
        Totals {
            requests: backend.requests,
            latency_count: backend.latency_count,
            latency_sum_ms: backend.latency_sum_ms,
        }
    }
}

impl RateWindow {
    pub fn new(window: Duration) -> Self {
        RateWindow {
            window,
            previous: HashMap::new(),
            total: Totals::default(),
            samples: VecDeque::new(),
        }
    }

    /// Records the counters listed at `now`, counting the increments of `members` only,
    /// and forgets samples the window no longer needs (it keeps the newest one older than
    /// the window: its start).
    pub fn push(&mut self, now: Instant, backends: &[BackendStatus], members: &[SocketAddr]) {
        for backend in backends.iter().filter(|b| members.contains(&b.address)) {
            let now = Totals::of(backend);
            let before = self
                .previous
                .get(&backend.address)
                .copied()
                .filter(|before| {
                    before.requests <= now.requests && before.latency_count <= now.latency_count
                })
                .unwrap_or_default();
            self.total.requests += now.requests - before.requests;
            self.total.latency_count += now.latency_count - before.latency_count;
            self.total.latency_sum_ms += (now.latency_sum_ms - before.latency_sum_ms).max(0.0);
        }
        self.previous = backends
            .iter()
            .map(|b| (b.address, Totals::of(b)))
            .collect();
        self.samples.push_back((now, self.total));
        while self.samples.len() > 2
            && (self.samples.len() > MAX_SAMPLES
                || now.saturating_duration_since(self.samples[1].0) >= self.window)
        {
            self.samples.pop_front();
        }
    }

    /// Requests per second from the oldest sample kept to the newest; `None` before two.
    pub fn rate(&self) -> Option<f64> {
        let (first_at, first) = self.samples.front()?;
        let (last_at, last) = self.samples.back()?;
        let span = last_at.saturating_duration_since(*first_at).as_secs_f64();
        (span > 0.0).then(|| (last.requests - first.requests) as f64 / span)
    }

    /// The mean latency (ms) of the requests measured over the window; `None` when none was.
    pub fn mean_latency_ms(&self) -> Option<f64> {
        let (_, first) = self.samples.front()?;
        let (_, last) = self.samples.back()?;
        let count = last.latency_count - first.latency_count;
        (count > 0).then(|| (last.latency_sum_ms - first.latency_sum_ms) / count as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(port: u16, requests: u64) -> BackendStatus {
        BackendStatus {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            state: "healthy".into(),
            in_flight: 0,
            requests,
            latency_count: requests,
            latency_sum_ms: requests as f64 * 2.0,
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn rate_is_the_members_requests_over_the_span() {
        let mut w = RateWindow::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let members = [addr(1), addr(2)];
        assert_eq!(w.rate(), None);
        w.push(t0, &[status(1, 100), status(2, 50), status(3, 7)], &members);
        assert_eq!(w.rate(), None, "one sample is no rate");
        w.push(
            t0 + Duration::from_secs(2),
            &[status(1, 300), status(2, 50), status(3, 900)],
            &members,
        );
        // 200 requests to the members in 2 s; backend 3 is not one of them.
        assert_eq!(w.rate(), Some(100.0));
    }

    #[test]
    fn a_member_that_joined_counts_from_zero() {
        let mut w = RateWindow::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let members = [addr(1), addr(2)];
        w.push(t0, &[status(1, 100)], &members);
        w.push(
            t0 + Duration::from_secs(1),
            &[status(1, 150), status(2, 30)],
            &members,
        );
        assert_eq!(w.rate(), Some(80.0));
        // Removed and added again: its counter restarted at zero.
        w.push(
            t0 + Duration::from_secs(2),
            &[status(1, 200), status(2, 5)],
            &members,
        );
        // (50 + 30 + 50 + 5) requests in 2 s.
        assert_eq!(w.rate(), Some(67.5));
    }

    #[test]
    fn a_removed_member_keeps_the_requests_it_served() {
        let mut w = RateWindow::new(Duration::from_secs(10));
        let t0 = Instant::now();
        w.push(t0, &[status(1, 0), status(2, 0)], &[addr(1), addr(2)]);
        w.push(
            t0 + Duration::from_secs(1),
            &[status(1, 50), status(2, 50)],
            &[addr(1), addr(2)],
        );
        // 2 left the set: the load it carried moved to 1, and the rate stays 100/s.
        w.push(t0 + Duration::from_secs(2), &[status(1, 150)], &[addr(1)]);
        assert_eq!(w.rate(), Some(100.0));
    }

    #[test]
    fn old_samples_leave_the_window() {
        let mut w = RateWindow::new(Duration::from_secs(1));
        let t0 = Instant::now();
        for i in 0..10u64 {
            w.push(
                t0 + Duration::from_millis(250 * i),
                &[status(1, 1000 * i)],
                &[addr(1)],
            );
        }
        // The window's start and what follows: 4 steps of 250 ms, 4000 requests.
        assert_eq!(w.samples.len(), 5);
        assert_eq!(w.rate(), Some(4000.0));
    }

    #[test]
    fn mean_latency_is_over_the_window_and_the_members() {
        let mut w = RateWindow::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |requests, count, sum| BackendStatus {
            latency_count: count,
            latency_sum_ms: sum,
            ..status(1, requests)
        };
        let other = |sum| BackendStatus {
            latency_count: 1,
            latency_sum_ms: sum,
            ..status(2, 1)
        };
        assert_eq!(w.mean_latency_ms(), None);
        w.push(t0, &[at(10, 10, 1000.0), other(1.0)], &[addr(1)]);
        assert_eq!(w.mean_latency_ms(), None, "one sample");
        // 10 more requests measured, 300 ms more in all: 30 ms each. The non-member's
        // slow requests do not count.
        w.push(
            t0 + Duration::from_secs(1),
            &[at(20, 20, 1300.0), other(90_000.0)],
            &[addr(1)],
        );
        assert_eq!(w.mean_latency_ms(), Some(30.0));
        // No request measured since: the mean stays that of the window.
        w.push(
            t0 + Duration::from_secs(2),
            &[at(20, 20, 1300.0)],
            &[addr(1)],
        );
        assert_eq!(w.mean_latency_ms(), Some(30.0));
    }

    #[test]
    fn answers_are_parsed() {
        let answer = b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\n\r\n{\"a\":1}\n";
        assert_eq!(parse_answer(answer), Some((201, json!({"a": 1}))));
        assert_eq!(parse_answer(b"HTTP/1.1 200 OK\r\n"), None);
        assert_eq!(encode("[::1]:80".parse().unwrap()), "%5B::1%5D:80");
    }
}
