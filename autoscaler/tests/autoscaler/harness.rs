//! What every end-to-end test here sets up the same way: the `hits` executable, a local
//! provider on testkit's PostgreSQL and Redis, and a balancer run in-process with its admin
//! listener (token-protected), fast health checks and awaited first passes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use autoscaler::AdminClient;
use autoscaler::provider::local::{LocalConfig, LocalProvider};
use balancer::Balancer;
use balancer::config::{BackendSpec, Config as BalancerConfig};
use secrecy::SecretString;
use testkit::{Postgres, Redis};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The `hits` executable beside this test's own directory (`target/<profile>/hits`):
/// `cargo test --workspace` builds it; `cargo test -p autoscaler` alone does not.
pub fn hits_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    let hits = profile_dir.join("hits");
    assert!(
        hits.is_file(),
        "{} is missing: build it first with `cargo build -p hits` (or run `cargo test --workspace`)",
        hits.display()
    );
    hits
}

/// A database of its own on the shared PostgreSQL, and a Redis of its own; `env` is what
/// an instance needs to use them (plus `extra`).
pub struct Backing {
    pub env: Vec<(String, String)>,
    _redis: Redis,
}

impl Backing {
    pub fn start(extra: &[(&str, &str)]) -> Self {
        let database_url = Postgres::shared().create_database();
        let redis = Redis::start();
        let mut env = vec![
            ("DATABASE_URL".to_owned(), database_url),
            ("REDIS_URL".to_owned(), redis.url()),
            ("DATABASE_POOL_SIZE".to_owned(), "4".to_owned()),
        ];
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        Backing { env, _redis: redis }
    }

    /// A local provider of `hits` children on this backing, ids `<prefix>-...`.
    pub fn provider(&self, prefix: &str) -> LocalProvider {
        LocalProvider::new(LocalConfig {
            binary: hits_binary(),
            env: self.env.clone(),
            id_prefix: prefix.into(),
            start_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(10),
        })
    }
}

/// A balancer in-process, its one configured backend `first` (it needs one to start).
pub struct TestBalancer {
    pub url: String,
    pub admin_addr: SocketAddr,
    token: &'static str,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestBalancer {
    pub async fn start(first: SocketAddr, token: &'static str) -> Self {
        let mut config = BalancerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            backends: vec![BackendSpec {
                host: "127.0.0.1".into(),
                port: first.port(),
                weight: 1,
            }],
            ..BalancerConfig::default()
        };
        config.health.path = Some("/readyz".into());
        config.health.interval = Duration::from_millis(100);
        config.health.timeout = Duration::from_secs(2);
        config.health.wait_for_first_pass = true;
        config.timeouts.shutdown_grace = Duration::from_secs(5);
        config.admin.listen = Some("127.0.0.1:0".parse().unwrap());
        config.admin.token = Some(balancer::admin::auth::AdminToken::from_text(token));
        config.validate().expect("valid balancer config");
        let balancer = Balancer::build(config).await.expect("the balancer starts");
        let url = format!("http://{}/", balancer.local_addr().unwrap());
        let admin_addr = balancer.admin_addr().expect("admin listener");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(balancer.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        TestBalancer {
            url,
            admin_addr,
            token,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// An admin client with the token.
    pub fn admin(&self) -> AdminClient {
        AdminClient::new(
            self.admin_addr,
            Some(SecretString::from(self.token)),
            Duration::from_secs(5),
        )
    }

    /// Stops it gracefully (bounded).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(60), task).await;
        }
    }
}

impl Drop for TestBalancer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
