//! The Docker provider: each instance is a container of the `hits` image on the compose
//! network, driven through the Engine API (`bollard`, over the Unix socket).
//!
//! - **start**: create and start a container named `<prefix>-<start time>-<n>` with the
//!   configured environment (the same as compose's `hits` service), `INSTANCE_ID` set to
//!   that name, labels naming the autoscaler that owns it ([`OWNER_LABEL`]), a health check
//!   every second (`hits healthcheck`, the image's own, checked more often so a new instance
//!   counts sooner), on the configured network. It returns only once Docker reports the
//!   container healthy, with its address on that network; the scaler then registers the
//!   address through the balancer's admin API (explicit registration: the containers have
//!   no DNS alias the balancer resolves, so the balancer's discovery never adds or drops
//!   them behind the scaler's back) and waits for the balancer's own health check too.
//! - **stop**: `docker stop` (SIGTERM, the app finishes what it serves, SIGKILL after
//!   `stop_timeout`), then remove. The scaler calls it only after draining the instance
//!   and taking it out of the balancer.
//! - **list**: the running containers with this owner's label; a stopped or dead one of
//!   ours is removed, so nothing leaks. The scaler adopts what `list` finds at start-up, so
//!   a restarted autoscaler picks up the containers it started before.
//! - **cpu**: one stats sample per container (Docker's own two readings a second apart),
//!   as cores: `Δ container CPU time / Δ system CPU time × online CPUs`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, ContainerStatsResponse, HealthConfig,
    HealthStatusEnum, HostConfig,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, RemoveContainerOptions,
    StatsOptions, StopContainerOptions,
};
use futures_util::StreamExt;

use super::{Instance, Provider, ProviderError};

/// The label naming the autoscaler that owns a container (its `--docker-owner`).
pub const OWNER_LABEL: &str = "io.hitscale.autoscaler.owner";
/// Set on every container an autoscaler starts, whoever the owner.
pub const MANAGED_LABEL: &str = "io.hitscale.autoscaler.managed";
/// How often a starting container's state is read.
const STATE_POLL: Duration = Duration::from_millis(250);
/// One stats sample's bound (Docker takes about a second to make it).
const STATS_TIMEOUT: Duration = Duration::from_secs(5);
/// The Engine API calls' own timeout, in seconds (bollard's unit).
const API_TIMEOUT_SECS: u64 = 60;

/// How the Docker provider starts containers.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// The Engine API's Unix socket.
    pub socket: String,
    /// The image to run (compose names it `<project>-hits`).
    pub image: String,
    /// The network the containers join (compose's `<project>_default`), where the balancer
    /// reaches them.
    pub network: String,
    /// The port the app listens on inside the container.
    pub port: u16,
    /// The containers' environment (`DATABASE_URL`, `REDIS_URL`, ...).
    pub env: Vec<(String, String)>,
    /// The [`OWNER_LABEL`] value: which autoscaler's containers these are.
    pub owner: String,
    /// Container names (and instance ids) are `<prefix>-<start time>-<n>`.
    pub id_prefix: String,
    /// From create to healthy.
    pub start_timeout: Duration,
    /// From SIGTERM to SIGKILL.
    pub stop_timeout: Duration,
}

/// Instances as containers.
pub struct DockerProvider {
    config: DockerConfig,
    docker: Docker,
    epoch: u64,
    next: AtomicU64,
}

impl std::fmt::Debug for DockerProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerProvider")
            .field("config", &self.config.image)
            .field("network", &self.config.network)
            .finish_non_exhaustive()
    }
}

fn start_error(what: &str, error: impl std::fmt::Display) -> ProviderError {
    ProviderError::Start(format!("{what}: {error}"))
}

fn is_not_found(error: &DockerError) -> bool {
    matches!(
        error,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl DockerProvider {
    /// Connects to the Engine API and checks it answers (and that the image and network
    /// exist), so a wrong setting stops the autoscaler at start-up, not at its first
    /// scale-up.
    pub async fn connect(config: DockerConfig) -> Result<Self, ProviderError> {
        let docker = Docker::connect_with_socket(
            &config.socket,
            API_TIMEOUT_SECS,
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|e| {
            start_error(
                &format!("cannot use the Docker socket {}", config.socket),
                e,
            )
        })?;
        docker.ping().await.map_err(|e| {
            start_error(
                &format!("the Docker engine at {} does not answer", config.socket),
                e,
            )
        })?;
        docker
            .inspect_image(&config.image)
            .await
            .map_err(|e| start_error(&format!("image {}", config.image), e))?;
        docker
            .inspect_network(
                &config.network,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
            .map_err(|e| start_error(&format!("network {}", config.network), e))?;
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(DockerProvider {
            config,
            docker,
            epoch,
            next: AtomicU64::new(1),
        })
    }

    fn labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (OWNER_LABEL.to_owned(), self.config.owner.clone()),
            (MANAGED_LABEL.to_owned(), "true".to_owned()),
        ])
    }

    async fn create(&self) -> Result<Instance, ProviderError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{:x}-{n}", self.config.id_prefix, self.epoch);
        let mut env: Vec<String> = self
            .config
            .env
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "INSTANCE_ID" | "PORT" | "HOST"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        env.push(format!("INSTANCE_ID={name}"));
        env.push(format!("PORT={}", self.config.port));
        env.push("HOST=0.0.0.0".to_owned());
        let seconds = |s: u64| i64::try_from(Duration::from_secs(s).as_nanos()).unwrap_or(i64::MAX);
        let body = ContainerCreateBody {
            image: Some(self.config.image.clone()),
            hostname: Some(name.clone()),
            env: Some(env),
            labels: Some(self.labels()),
            healthcheck: Some(HealthConfig {
                test: Some(vec!["CMD".into(), "hits".into(), "healthcheck".into()]),
                interval: Some(seconds(1)),
                timeout: Some(seconds(3)),
                retries: Some(3),
                start_period: Some(seconds(30)),
                start_interval: None,
            }),
            stop_timeout: i64::try_from(self.config.stop_timeout.as_secs()).ok(),
            host_config: Some(HostConfig {
                network_mode: Some(self.config.network.clone()),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        self.docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    ..CreateContainerOptions::default()
                }),
                body,
            )
            .await
            .map_err(|e| start_error(&format!("cannot create container {name}"), e))?;
        let started = async {
            self.docker
                .start_container(
                    &name,
                    None::<bollard::query_parameters::StartContainerOptions>,
                )
                .await
                .map_err(|e| start_error(&format!("cannot start container {name}"), e))?;
            self.healthy(&name).await
        }
        .await;
        match started {
            Ok(address) => {
                tracing::info!(instance = %name, %address, image = %self.config.image, "container started and healthy");
                Ok(Instance { id: name, address })
            }
            Err(error) => {
                // Nothing of a failed start is left behind.
                let _ = self.remove(&name).await;
                Err(error)
            }
        }
    }

    /// Waits until Docker reports `name` healthy, and returns its address on the network.
    async fn healthy(&self, name: &str) -> Result<SocketAddr, ProviderError> {
        let deadline = Instant::now() + self.config.start_timeout;
        loop {
            let inspected = self
                .docker
                .inspect_container(name, None::<InspectContainerOptions>)
                .await
                .map_err(|e| start_error(&format!("cannot inspect container {name}"), e))?;
            let state = inspected.state.unwrap_or_default();
            if matches!(
                state.status,
                Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD)
            ) {
                return Err(ProviderError::Start(format!(
                    "container {name} exited before it was healthy (exit code {:?}; see `docker logs {name}`)",
                    state.exit_code
                )));
            }
            let health = state.health.and_then(|h| h.status);
            let ip = inspected
                .network_settings
                .and_then(|n| n.networks)
                .and_then(|mut networks| networks.remove(&self.config.network))
                .and_then(|endpoint| endpoint.ip_address)
                .and_then(|ip| ip.parse::<IpAddr>().ok());
            if let (Some(HealthStatusEnum::HEALTHY), Some(ip)) = (health, ip) {
                return Ok(SocketAddr::new(ip, self.config.port));
            }
            if Instant::now() >= deadline {
                return Err(ProviderError::Start(format!(
                    "container {name} not healthy within {:?} (health {health:?}, address {ip:?})",
                    self.config.start_timeout
                )));
            }
            tokio::time::sleep(STATE_POLL).await;
        }
    }

    /// Removes `name`, running or not, with its anonymous volumes.
    async fn remove(&self, name: &str) -> Result<(), DockerError> {
        match self
            .docker
            .remove_container(
                name,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..RemoveContainerOptions::default()
                }),
            )
            .await
        {
            Err(error) if !is_not_found(&error) => Err(error),
            _ => Ok(()),
        }
    }

    /// One CPU sample of `id`, in cores.
    async fn cpu_of(&self, id: &str) -> Option<f64> {
        let mut stats = self.docker.stats(
            id,
            Some(StatsOptions {
                stream: false,
                one_shot: false,
            }),
        );
        let sample = tokio::time::timeout(STATS_TIMEOUT, stats.next())
            .await
            .ok()??
            .ok()?;
        cores(&sample)
    }
}

/// CPU use in cores from one stats answer (its reading and the one before it).
fn cores(sample: &ContainerStatsResponse) -> Option<f64> {
    let now = sample.cpu_stats.as_ref()?;
    let before = sample.precpu_stats.as_ref()?;
    let used = now.cpu_usage.as_ref()?.total_usage? as f64
        - before.cpu_usage.as_ref()?.total_usage? as f64;
    // A zero earlier reading is Docker's "none yet" (a container's first sample).
    let system = now.system_cpu_usage? as f64 - before.system_cpu_usage.filter(|&s| s > 0)? as f64;
    let cpus = f64::from(now.online_cpus.filter(|&n| n > 0)?);
    (system > 0.0 && used >= 0.0).then(|| used / system * cpus)
}

impl Provider for DockerProvider {
    async fn start(&self) -> Result<Instance, ProviderError> {
        self.create().await
    }

    async fn stop(&self, id: &str) -> Result<(), ProviderError> {
        let stop_error = |e: DockerError| ProviderError::Stop {
            id: id.to_owned(),
            reason: e.to_string(),
        };
        match self
            .docker
            .stop_container(
                id,
                Some(StopContainerOptions {
                    t: i32::try_from(self.config.stop_timeout.as_secs()).ok(),
                    signal: None,
                }),
            )
            .await
        {
            Err(error) if is_not_found(&error) => {
                return Err(ProviderError::Unknown(id.to_owned()));
            }
            Err(error) => return Err(stop_error(error)),
            Ok(()) => {}
        }
        self.remove(id).await.map_err(stop_error)?;
        tracing::info!(instance = %id, "container stopped and removed");
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Instance>, ProviderError> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{OWNER_LABEL}={}", self.config.owner)],
        )]);
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..ListContainersOptions::default()
            }))
            .await
            .map_err(|e| start_error("cannot list containers", e))?;
        let mut instances = Vec::new();
        for container in containers {
            let Some(name) = container
                .names
                .as_ref()
                .and_then(|names| names.first())
                .map(|n| n.trim_start_matches('/').to_owned())
            else {
                continue;
            };
            let running =
                container.state.as_ref().map(ToString::to_string).as_deref() == Some("running");
            if !running {
                tracing::warn!(instance = %name, state = ?container.state, "container of ours is not running; removing it");
                if let Err(error) = self.remove(&name).await {
                    tracing::warn!(instance = %name, %error, "cannot remove it");
                }
                continue;
            }
            let ip = container
                .network_settings
                .and_then(|n| n.networks)
                .and_then(|mut networks| networks.remove(&self.config.network))
                .and_then(|endpoint| endpoint.ip_address)
                .and_then(|ip| ip.parse::<IpAddr>().ok());
            match ip {
                Some(ip) => instances.push(Instance {
                    id: name,
                    address: SocketAddr::new(ip, self.config.port),
                }),
                None => {
                    tracing::warn!(instance = %name, network = %self.config.network, "container of ours is not on the network; leaving it out");
                }
            }
        }
        instances.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(instances)
    }

    async fn cpu(&self, instances: &[Instance]) -> HashMap<String, f64> {
        let samples = futures_util::future::join_all(
            instances
                .iter()
                .map(|i| async move { (i.id.clone(), self.cpu_of(&i.id).await) }),
        )
        .await;
        samples
            .into_iter()
            .filter_map(|(id, cores)| Some((id, cores?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerCpuStats, ContainerCpuUsage};

    fn reading(total: u64, system: u64) -> ContainerCpuStats {
        ContainerCpuStats {
            cpu_usage: Some(ContainerCpuUsage {
                total_usage: Some(total),
                ..ContainerCpuUsage::default()
            }),
            system_cpu_usage: Some(system),
            online_cpus: Some(2),
            ..ContainerCpuStats::default()
        }
    }

    #[test]
    fn cores_are_the_share_of_system_time_times_the_cpus() {
        // 0.5 s of CPU while the 2-CPU system counted 2 s (1 s wall): half a core.
        let sample = ContainerStatsResponse {
            cpu_stats: Some(reading(1_500_000_000, 10_000_000_000)),
            precpu_stats: Some(reading(1_000_000_000, 8_000_000_000)),
            ..ContainerStatsResponse::default()
        };
        assert_eq!(cores(&sample), Some(0.5));
        // No previous reading (Docker's first sample of a new container): no figure.
        let first = ContainerStatsResponse {
            cpu_stats: Some(reading(1, 1)),
            ..ContainerStatsResponse::default()
        };
        assert_eq!(cores(&first), None);
    }
}
