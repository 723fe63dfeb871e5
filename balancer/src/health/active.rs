//! Active health checks: every interval, a `GET <path>` to each backend on a fresh
//! connection (in `mode = "tcp"` without a path: a TCP connect). `rise` passes in a row bring a backend up, `fall` failures take it down
//! (HAProxy's model); a backend still pending goes up on its first pass.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, Uri, header};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::backend::{Backend, Health, Registry};
use crate::config::{Config, HealthConfig};
use crate::guards::BackendGuards;
use crate::upstream::{self, Connection, Outcome, RequestBody};

/// Whether active checks run: with a path, or in layer-4 mode (where a connect is the
/// check, for backends that may not speak HTTP).
pub fn enabled(config: &Config) -> bool {
    config.health.path.is_some() || config.mode == crate::config::Mode::Tcp
}

/// Checks every `health.interval` while they are `enabled`. It follows the configuration
/// in force (`configs`): a reload that changes the health settings restarts the rhythm
/// with them, one that removes the path stops the checks.
pub fn spawn(registry: Arc<Registry>, mut configs: watch::Receiver<Arc<Config>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let (on, config) = {
                let current = configs.borrow_and_update();
                (enabled(&current), current.health.clone())
            };
            if on {
                // The first round is one interval away: the caller (start-up) has just run
                // one itself, and after a reload there is no hurry.
                let start = tokio::time::Instant::now() + config.interval;
                let mut ticker = tokio::time::interval_at(start, config.interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = ticker.tick() => check_all(&registry, &config).await,
                        changed = configs.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            if same_settings(&configs.borrow_and_update().health, &config) {
                                continue;
                            }
                            break;
                        }
                    }
                }
            } else if configs.changed().await.is_err() {
                return;
            }
        }
    })
}

fn same_settings(a: &HealthConfig, b: &HealthConfig) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

/// Runs one round of checks concurrently; each is bounded by the check timeout.
pub async fn check_all(registry: &Registry, config: &HealthConfig) {
    let set = registry.load_full();
    let mut checks = JoinSet::new();
    for backend in &set.backends {
        let backend = backend.clone();
        let config = config.clone();
        checks.spawn(async move {
            let outcome = probe(&backend, &config).await;
            apply(&backend, outcome, &config);
        });
    }
    while checks.join_next().await.is_some() {}
}

async fn probe(backend: &Backend, config: &HealthConfig) -> Result<(), String> {
    let Some(path) = config.path.as_deref() else {
        // Layer 4: accepting a connection is all a backend is asked.
        return match tokio::time::timeout(
            config.timeout,
            tokio::net::TcpStream::connect(backend.addr),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(format!("connect failed: {error}")),
            Err(_) => Err(format!("connect timed out after {:?}", config.timeout)),
        };
    };
    let uri: Uri = path.parse().map_err(|e| format!("path {path:?}: {e}"))?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::USER_AGENT,
        HeaderValue::from_static("hitscale-balancer-healthcheck"),
    );
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    let request = upstream::RequestHead {
        method: &Method::GET,
        uri: &uri,
        headers: &headers,
        host_fallback: Some(&backend.origin),
        request_id: None,
    };
    let exchange = async {
        let connection = Connection::connect(backend.addr, config.timeout)
            .await
            .map_err(|e| e.to_string())?;
        let guards = BackendGuards::within(config.timeout);
        let answered = upstream::send(
            connection,
            &request,
            &mut RequestBody::Empty,
            false,
            &guards,
        )
        .await
        .map_err(|e| format!("request failed: {e}"))?;
        let status = match answered.outcome {
            Outcome::Response(parts, _) | Outcome::Switched(parts, ..) => parts.status.as_u16(),
        };
        if config.expected_status.contains(status) {
            Ok(())
        } else {
            Err(format!("status {status}"))
        }
    };
    match tokio::time::timeout(config.timeout, exchange).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!("timed out after {:?}", config.timeout)),
    }
}

/// Moves the backend's state machine and logs every change with its reason.
fn apply(backend: &Backend, outcome: Result<(), String>, config: &HealthConfig) {
    use std::sync::atomic::Ordering::Relaxed;
    let state = backend.health();
    match outcome {
        Ok(()) => {
            backend.check_failures.store(0, Relaxed);
            let passes = backend.check_successes.fetch_add(1, Relaxed) + 1;
            let up = match state {
                Health::Up => false,
                Health::Pending => true,
                Health::Down => passes >= config.rise.get(),
            };
            if up {
                backend.set_health(Health::Up);
                tracing::info!(backend = %backend.addr, origin = %backend.origin, reason = "health check passed", passes, "backend up");
            }
        }
        Err(reason) => {
            backend.check_successes.store(0, Relaxed);
            let failures = backend.check_failures.fetch_add(1, Relaxed) + 1;
            let down = state != Health::Down && failures >= config.fall.get();
            if down {
                backend.set_health(Health::Down);
                tracing::warn!(backend = %backend.addr, origin = %backend.origin, reason, failures, "backend down");
            } else if state != Health::Down {
                tracing::debug!(backend = %backend.addr, reason, failures, "health check failed");
            }
        }
    }
}

/// Checks need a fresh view; this is the longest a caller should wait for a first round.
pub fn first_round_budget(config: &HealthConfig) -> Duration {
    config.timeout + Duration::from_millis(100)
}
