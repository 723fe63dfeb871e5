//! Upgraded connections (WebSocket and other `Upgrade` protocols): once the backend answered
//! 101, the client and backend connections become one byte tunnel.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the client's side gets to complete the switch after the 101.
const SWITCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Joins the client's upgraded connection and the backend's in a task of its own, after
/// passing on what the backend sent right behind its 101 (`early`). The tunnel ends when
/// both sides have closed, or when neither sent anything for `idle`.
pub fn spawn_tunnel(
    client: OnUpgrade,
    backend: TcpStream,
    early: Bytes,
    idle: Duration,
    addr: SocketAddr,
) {
    tokio::spawn(async move {
        let upgraded = tokio::time::timeout(SWITCH_TIMEOUT, async {
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
        let (sent, received) = tunnel(client, backend, idle).await;
        tracing::debug!(backend = %addr, sent, received, "tunnel closed");
    });
}

/// Copies both ways with an idle timeout; returns bytes client→backend and backend→client.
async fn tunnel<C, B>(mut client: C, mut backend: B, idle: Duration) -> (u64, u64)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut up = vec![0u8; 16 * 1024];
    let mut down = vec![0u8; 16 * 1024];
    let (mut sent, mut received) = (0u64, 0u64);
    let (mut client_open, mut backend_open) = (true, true);
    while client_open || backend_open {
        let step = tokio::time::timeout(idle, async {
            tokio::select! {
                n = client.read(&mut up), if client_open => match n {
                    Ok(0) | Err(_) => {
                        client_open = false;
                        backend.shutdown().await
                    }
                    Ok(n) => {
                        sent += n as u64;
                        backend.write_all(&up[..n]).await
                    }
                },
                n = backend.read(&mut down), if backend_open => match n {
                    Ok(0) | Err(_) => {
                        backend_open = false;
                        client.shutdown().await
                    }
                    Ok(n) => {
                        received += n as u64;
                        client.write_all(&down[..n]).await
                    }
                },
            }
        })
        .await;
        if !matches!(step, Ok(Ok(()))) {
            break;
        }
    }
    (sent, received)
}
