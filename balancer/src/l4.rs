//! The layer-4 listener (`mode = "tcp"`): each client connection goes to one backend,
//! chosen by the same selection policy as HTTP requests, and its bytes are copied both
//! ways unread ([`crate::tunnel`]). Nothing is parsed, so TLS passes through untouched and
//! the backends need not speak HTTP.
//!
//! What layer 4 cannot do, by construction: balance the requests of one kept-alive
//! connection separately (the connection is the unit), read a sticky cookie (use ip-hash
//! to keep a client on one backend), or add forwarding headers.
//!
//! What it shares with the HTTP listener: the backend set and its health (active checks are
//! TCP connects when no `health.path` is set), drain (a draining backend gets no new
//! connection; it is drained when its last connection closes: connections are what its
//! in-flight count counts here), passive ejection on connect failures, `limits.max_connections`,
//! `timeouts.connect` and `timeouts.tunnel_idle`, and the bounded graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::backend::{Registry, now_millis};
use crate::metrics::Outcome;
use crate::proxy::Proxy;
use crate::selection::SelectContext;
use crate::tunnel::{self, End};

/// Everything a layer-4 connection needs, shared by all of them. The selection policy,
/// bounds and settings are the HTTP proxy's `Policy` in force when a connection arrives,
/// so a configuration reload applies to layer 4 as it does to HTTP (the proxy itself
/// serves nothing in this mode).
#[derive(Debug)]
pub struct Layer4 {
    proxy: Arc<Proxy>,
    registry: Arc<Registry>,
}

impl Layer4 {
    pub fn new(proxy: Arc<Proxy>, registry: Arc<Registry>) -> Self {
        Self { proxy, registry }
    }

    /// One client connection, from the choice of a backend to the end of the tunnel.
    async fn serve(&self, client: TcpStream, peer: SocketAddr) {
        let policy = self.proxy.policy();
        let (config, guards) = (&policy.config, &policy.guards);
        let set = self.registry.load_full();
        let now = now_millis();
        let mut eligible: Vec<usize> = (0..set.backends.len())
            .filter(|&i| set.backends[i].is_available(now))
            .collect();
        if eligible.is_empty() && config.fail_open {
            eligible = (0..set.backends.len())
                .filter(|&i| !set.backends[i].is_draining())
                .collect();
        }
        if eligible.is_empty() {
            tracing::warn!(%peer, "no backend available: connection closed");
            return;
        }
        let order = policy.selector().select(
            &set,
            &eligible,
            &SelectContext {
                client_ip: peer.ip(),
            },
        );
        // Nothing has been read from the client yet, so a backend that refuses the
        // connection can always be replaced by the next candidate.
        let attempts = config.retry.max_attempts.get() as usize;
        for backend in order.iter().take(attempts).map(|&i| &set.backends[i]) {
            // The connection counts as the backend's in-flight work for its whole life:
            // least-connections and drain see it.
            let in_flight = backend.track();
            let started = Instant::now();
            let connected =
                tokio::time::timeout(guards.backend.connect, TcpStream::connect(backend.addr))
                    .await;
            let stream = match connected {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, backend = %backend.addr, %error, "connect failed");
                    backend.record_failure(&config.passive, "connect failed");
                    backend.stats.record(Outcome::ConnectFailed);
                    continue;
                }
                Err(_) => {
                    tracing::debug!(%peer, backend = %backend.addr, "connect timed out");
                    backend.record_failure(&config.passive, "connect timed out");
                    backend.stats.record(Outcome::ConnectFailed);
                    continue;
                }
            };
            // Connect time is the one latency layer 4 can see (least-response-time).
            backend.record_latency(started.elapsed());
            backend.record_success();
            let _ = stream.set_nodelay(true);
            let spliced = tunnel::splice(client, stream, guards.tunnel.idle).await;
            drop(in_flight);
            match spliced.end {
                End::Idle => {
                    tracing::debug!(%peer, backend = %backend.addr, sent = spliced.sent, received = spliced.received, "idle connection closed (timeouts.tunnel_idle)");
                }
                end => {
                    tracing::debug!(%peer, backend = %backend.addr, sent = spliced.sent, received = spliced.received, ?end, "connection closed");
                }
            }
            return;
        }
        tracing::warn!(%peer, "no backend accepted the connection: closed");
    }
}

/// Accepts until `shutdown` completes, then stops accepting and gives open connections up
/// to the grace period before closing them.
pub async fn serve(listener: TcpListener, layer4: Arc<Layer4>, shutdown: impl Future<Output = ()>) {
    // The start-up limit (a reload refuses to change it).
    let max = layer4.proxy.policy().guards.max_connections;
    let slots = Arc::new(Semaphore::new(max));
    let mut open = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (client, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Usually EMFILE: back off briefly instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = client.set_nodelay(true);
        // Reap the finished ones, so the set holds only open connections.
        while open.try_join_next().is_some() {}
        let layer4 = layer4.clone();
        open.spawn(async move {
            layer4.serve(client, peer).await;
            drop(permit);
        });
    }
    drop(listener);
    while open.try_join_next().is_some() {}
    if open.is_empty() {
        return;
    }
    let grace = layer4.proxy.policy().config.timeouts.shutdown_grace;
    tracing::info!(
        open = open.len(),
        ?grace,
        "shutting down: no longer accepting, waiting for open connections"
    );
    let drained =
        tokio::time::timeout(grace, async { while open.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            open = open.len(),
            "grace period over; closing remaining connections"
        );
        open.shutdown().await;
    }
}
