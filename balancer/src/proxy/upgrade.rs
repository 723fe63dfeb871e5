//! Upgraded connections (WebSocket and other `Upgrade` protocols): once the backend answered
//! 101, the client and backend connections become one byte tunnel.

use std::net::SocketAddr;
use std::sync::Mutex;

use bytes::Bytes;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::guards::TunnelGuards;

/// The open tunnels, so shutdown can wait for them (boundedly) and then close them.
#[derive(Debug, Default)]
pub struct Tunnels {
    tasks: Mutex<JoinSet<()>>,
}

impl Tunnels {
    fn tasks(&self) -> std::sync::MutexGuard<'_, JoinSet<()>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until every tunnel has closed or `deadline` passes, then closes the rest.
    pub async fn drain(&self, deadline: Instant) {
        let mut tasks = std::mem::take(&mut *self.tasks());
        if tasks.is_empty() {
            return;
        }
        tracing::info!(
            open = tasks.len(),
            "waiting for upgraded connections to close"
        );
        let closed = tokio::time::timeout_at(deadline, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if closed.is_err() {
            tracing::warn!(
                open = tasks.len(),
                "grace period over; closing upgraded connections"
            );
            tasks.shutdown().await;
        }
    }

    /// Joins the client's upgraded connection and the backend's in a task of its own,
    /// after passing on what the backend sent right behind its 101 (`early`). The switch
    /// must complete within `guards.switch`; the tunnel ends when both sides have closed,
    /// or when neither sent anything for `guards.idle`. The client's side still holds its
    /// connection's slot under `limits.max_connections` (in the framing tap beneath it).
    pub fn spawn(
        &self,
        client: OnUpgrade,
        backend: TcpStream,
        early: Bytes,
        guards: TunnelGuards,
        addr: SocketAddr,
    ) {
        let mut tasks = self.tasks();
        // Reap the finished ones so the set only holds open tunnels.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(run(client, backend, early, guards, addr));
    }
}

async fn run(
    client: OnUpgrade,
    backend: TcpStream,
    early: Bytes,
    guards: TunnelGuards,
    addr: SocketAddr,
) {
    {
        let upgraded = tokio::time::timeout(guards.switch, async {
            let mut client = TokioIo::new(client.await?);
            if !early.is_empty() {
                client.write_all(&early).await?;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(client)
        })
        .await;
        let client = match upgraded {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => {
                tracing::debug!(backend = %addr, %error, "upgrade failed");
                return;
            }
            Err(_) => {
                tracing::debug!(backend = %addr, "upgrade timed out");
                return;
            }
        };
        let spliced = crate::tunnel::splice(client, backend, guards.idle).await;
        tracing::debug!(backend = %addr, sent = spliced.sent, received = spliced.received, end = ?spliced.end, "tunnel closed");
    }
}
