//! Spawning the real app on port 0 against harness-started servers.

use hits::{App, Config};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use testkit::{Postgres, Redis};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The JSON of `/api/hits`.
#[derive(Debug, serde::Deserialize, PartialEq, Eq)]
pub struct StatsJson {
    pub instance_id: String,
    pub total: i64,
    pub last_24h: i64,
    pub by_instance: BTreeMap<String, i64>,
}

/// A running app; stopped (gracefully) when dropped or by [`TestApp::stop`].
pub struct TestApp {
    pub addr: SocketAddr,
    pub instance_id: String,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// The variables an app needs, for `Config::from_vars`; `extra` overrides or adds.
pub fn vars(
    database_url: &str,
    redis_url: &str,
    instance_id: &str,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut vars: BTreeMap<String, String> = [
        ("DATABASE_URL", database_url),
        ("REDIS_URL", redis_url),
        ("INSTANCE_ID", instance_id),
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("DATABASE_ACQUIRE_TIMEOUT_MS", "1000"),
        ("DATABASE_STARTUP_TIMEOUT_SECS", "10"),
        ("SHUTDOWN_GRACE_SECS", "5"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in extra {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    vars.into_iter().collect()
}

pub async fn spawn_app(database_url: &str, redis_url: &str, instance_id: &str) -> TestApp {
    spawn_app_with(database_url, redis_url, instance_id, &[]).await
}

pub async fn spawn_app_with(
    database_url: &str,
    redis_url: &str,
    instance_id: &str,
    extra: &[(&str, &str)],
) -> TestApp {
    hits::telemetry::init();
    let config = Config::from_vars(vars(database_url, redis_url, instance_id, extra))
        .expect("valid test config");
    let app = App::build(config).await.expect("the app starts");
    let addr = app.local_addr();
    let (shutdown, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        instance_id: instance_id.to_owned(),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client"),
        shutdown: Some(shutdown),
        task: Some(task),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post(&self, path: &str) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn stats(&self) -> StatsJson {
        let response = self.get("/api/hits").await;
        assert_eq!(response.status(), 200, "GET /api/hits");
        response.json().await.expect("stats JSON")
    }

    /// Asks for a graceful stop and waits for it.
    pub async fn stop(mut self) -> std::io::Result<()> {
        self.stop_inner().await
    }

    async fn stop_inner(&mut self) -> std::io::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        match self.task.take() {
            Some(task) => tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("the app stops within 30 s")
                .expect("the app task does not panic"),
            None => Ok(()),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// A fresh database on the shared server, and a Redis of the test's own (tests stop, stall
/// and inspect it).
pub fn fresh_backends() -> (String, Redis) {
    (Postgres::shared().create_database(), Redis::start())
}

/// Rows in `hits`, straight from PostgreSQL.
pub async fn rows_in_hits(database_url: &str) -> i64 {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(database_url)
        .await
        .expect("connect");
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM hits")
        .fetch_one(&mut conn)
        .await
        .expect("count");
    n
}

/// Polls `check` every 50 ms until it returns true, at most `limit`.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
