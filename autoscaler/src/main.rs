//! The `autoscaler` binary: parse and validate the configuration, set up logging, serve
//! `/metrics`, and run the scaler until SIGINT/SIGTERM, then retire the instances it runs.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use autoscaler::config::{Config, Opts, ProviderConfig, TOKEN_VAR};
use autoscaler::metrics::{self, Metrics};
use autoscaler::provider::Provider;
use autoscaler::provider::docker::DockerProvider;
use autoscaler::provider::local::LocalProvider;
use autoscaler::{AdminClient, Scaler, ScalerConfig};
use clap::Parser;
use hitscale_signal::Shutdown;

/// Each admin call's bound, connect to last byte.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let opts = Opts::parse();
    let config = match Config::from_opts(&opts, std::env::var(TOKEN_VAR).ok()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("autoscaler: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("autoscaler: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("autoscaler: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    // Before anything is started: a signal from then on retires the instances gracefully.
    let mut shutdown = Shutdown::listen().context("cannot listen for SIGINT and SIGTERM")?;
    let metrics = Arc::new(Metrics::default());
    let listener = metrics::bind(config.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, "serving /metrics");
    let server = tokio::spawn(metrics::serve(listener, metrics.clone()));
    let admin = AdminClient::new(config.admin, config.token, ADMIN_TIMEOUT);
    admin
        .list()
        .await
        .context("the balancer's admin API (--admin) must answer at start-up")?;
    tracing::info!(policy = ?config.scaler.policy, interval = ?config.scaler.interval, "autoscaler started");
    let stopped = async move {
        let signal = shutdown.requested().await;
        tracing::info!("received {signal}");
    };
    match config.provider {
        ProviderConfig::Local(local) => {
            let provider = LocalProvider::new(local);
            scale(config.scaler, provider, admin, metrics, stopped).await;
        }
        ProviderConfig::Docker(docker) => {
            let (image, network) = (docker.image.clone(), docker.network.clone());
            let provider = DockerProvider::connect(docker)
                .await
                .context("the Docker provider cannot start")?;
            tracing::info!(%image, %network, "docker provider ready");
            scale(config.scaler, provider, admin, metrics, stopped).await;
        }
    }
    server.abort();
    Ok(())
}

async fn scale<P: Provider>(
    config: ScalerConfig,
    provider: P,
    admin: AdminClient,
    metrics: Arc<Metrics>,
    stopped: impl std::future::Future<Output = ()>,
) {
    Scaler::new(config, Arc::new(provider), admin, metrics)
        .run(stopped)
        .await;
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}
