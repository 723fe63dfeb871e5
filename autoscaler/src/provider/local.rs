//! The local provider: each instance is a `hits` child process on `127.0.0.1`, port 0 (the
//! OS picks a free one, so no port is ever chosen and raced for). The address is read back
//! from the app's own start-up log line (`"hits is serving"`, logged as JSON with its `addr`
//! field), so nothing about the app had to change.
//!
//! The child inherits the autoscaler's environment (`DATABASE_URL`, `REDIS_URL`, ...), plus
//! the configured extra variables, with `HOST`, `PORT`, `INSTANCE_ID`, `LOG_FORMAT` and
//! `RUST_LOG` set by the provider (the address line must be there and parseable). Its output
//! is forwarded to our log at debug level (its standard error at warn), line by line, so its
//! pipes never fill. A child is stopped with SIGTERM (the app finishes in-flight requests
//! within its grace period), then killed after `stop_timeout`; the handles kill their
//! children when dropped, so a test that fails leaves none behind.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{Instance, Provider, ProviderError};

/// Lines of a failed start's standard error kept for its error message.
const STDERR_LINES_KEPT: usize = 20;

/// How the local provider starts instances.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// The `hits` executable.
    pub binary: PathBuf,
    /// Added to (or replacing) the inherited environment of each instance.
    pub env: Vec<(String, String)>,
    /// Instance ids are `<prefix>-<start time>-<n>`.
    pub id_prefix: String,
    /// From spawn to the address line.
    pub start_timeout: Duration,
    /// From SIGTERM to the kill.
    pub stop_timeout: Duration,
}

struct Running {
    address: SocketAddr,
    child: Child,
}

/// Instances as child processes of this one.
pub struct LocalProvider {
    config: LocalConfig,
    /// Makes ids unique across runs of the autoscaler (the app keeps counts per id).
    epoch: u64,
    next: AtomicU64,
    running: Mutex<HashMap<String, Running>>,
}

impl std::fmt::Debug for LocalProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalProvider")
            .field("binary", &self.config.binary)
            .field("running", &self.running.lock().map(|r| r.len()).ok())
            .finish_non_exhaustive()
    }
}

impl LocalProvider {
    pub fn new(config: LocalConfig) -> Self {
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        LocalProvider {
            config,
            epoch,
            next: AtomicU64::new(1),
            running: Mutex::new(HashMap::new()),
        }
    }

    /// The process id of instance `id`, while it runs.
    pub fn pid(&self, id: &str) -> Option<u32> {
        self.running().get(id).and_then(|r| r.child.id())
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        // A panic while holding the lock leaves a consistent map (every change is one call).
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn spawn(&self) -> Result<Instance, ProviderError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{:x}-{n}", self.config.id_prefix, self.epoch);
        let mut command = Command::new(&self.config.binary);
        command
            .envs(self.config.env.iter().map(|(k, v)| (k, v)))
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("INSTANCE_ID", &id)
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info,sqlx=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| {
            ProviderError::Start(format!(
                "{}: {e} (build it with `cargo build -p hits`, or give its path with --hits-binary)",
                self.config.binary.display()
            ))
        })?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");

        let errors = Arc::new(Mutex::new(VecDeque::new()));
        let kept = errors.clone();
        let stderr_id = id.clone();
        let stderr_task = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::warn!(instance = %stderr_id, "{line}");
                let mut kept = kept
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if kept.len() == STDERR_LINES_KEPT {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        });

        let mut lines = BufReader::new(stdout).lines();
        let address = tokio::time::timeout(self.config.start_timeout, async {
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(instance = %id, "{line}");
                if line.contains("\"hits is serving\"")
                    && let Some(addr) = json_field(&line, "addr")
                {
                    return addr.parse::<SocketAddr>().ok();
                }
            }
            None
        })
        .await;
        let address = match address {
            Ok(Some(address)) => address,
            failed => {
                let _ = child.start_kill();
                let status = child.wait().await.ok();
                // The child is gone: its stderr reaches EOF once the reader has every line
                // (without this wait the message could miss the very line that says why).
                let _ = tokio::time::timeout(Duration::from_secs(2), stderr_task).await;
                let stderr = errors
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n");
                let what = if failed.is_err() {
                    format!(
                        "instance {id} did not report its address within {:?}",
                        self.config.start_timeout
                    )
                } else {
                    format!("instance {id} exited before serving ({status:?})")
                };
                return Err(ProviderError::Start(format!(
                    "{what}; its stderr:\n{stderr}"
                )));
            }
        };
        let log_id = id.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(instance = %log_id, "{line}");
            }
        });
        tracing::info!(instance = %id, %address, pid = ?child.id(), "instance started");
        self.running()
            .insert(id.clone(), Running { address, child });
        Ok(Instance { id, address })
    }

    async fn terminate(&self, id: &str) -> Result<(), ProviderError> {
        let Some(Running { mut child, .. }) = self.running().remove(id) else {
            return Err(ProviderError::Unknown(id.to_owned()));
        };
        if let Some(pid) = child
            .id()
            .and_then(|pid| rustix::process::Pid::from_raw(pid as i32))
        {
            // Already gone is fine: the wait below reaps it.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let status = match tokio::time::timeout(self.config.stop_timeout, child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                tracing::warn!(instance = %id, timeout = ?self.config.stop_timeout, "instance did not stop after SIGTERM; killing it");
                child.kill().await.map_err(|e| ProviderError::Stop {
                    id: id.to_owned(),
                    reason: e.to_string(),
                })?;
                child.wait().await
            }
        };
        let status = status.map_err(|e| ProviderError::Stop {
            id: id.to_owned(),
            reason: e.to_string(),
        })?;
        tracing::info!(instance = %id, %status, "instance stopped");
        Ok(())
    }
}

impl Provider for LocalProvider {
    async fn start(&self) -> Result<Instance, ProviderError> {
        self.spawn().await
    }

    async fn stop(&self, id: &str) -> Result<(), ProviderError> {
        self.terminate(id).await
    }

    async fn list(&self) -> Result<Vec<Instance>, ProviderError> {
        let mut running = self.running();
        running.retain(|id, r| match r.child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                tracing::warn!(instance = %id, %status, "instance exited by itself");
                false
            }
            Err(error) => {
                tracing::warn!(instance = %id, %error, "cannot check the instance; forgetting it");
                false
            }
        });
        let mut instances: Vec<Instance> = running
            .iter()
            .map(|(id, r)| Instance {
                id: id.clone(),
                address: r.address,
            })
            .collect();
        instances.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(instances)
    }
}

/// A string or number field's value in a JSON log line: `"name":"value"` or `"name":42`.
fn json_field(line: &str, name: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    match &value[name] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::json_field;

    #[test]
    fn the_address_is_read_from_the_serving_line() {
        let line = r#"{"timestamp":"2026-01-01T00:00:00Z","level":"INFO","message":"hits is serving","addr":"127.0.0.1:41234","instance_id":"a-1"}"#;
        assert_eq!(json_field(line, "addr").as_deref(), Some("127.0.0.1:41234"));
        assert_eq!(json_field("not json", "addr"), None);
    }
}
