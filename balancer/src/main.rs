//! `balancer`: reads config, sets up logging, runs the balancer until SIGTERM or Ctrl-C;
//! SIGHUP (and, with `--watch-config`, a change of the config file) reloads the config.

use std::process::ExitCode;

use anyhow::Context as _;
use balancer::Balancer;
use balancer::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse_recording_sources();
    if let Some(Command::Healthcheck { addr }) = &cli.command {
        let target = cli.healthcheck_addr(*addr);
        return if balancer::healthcheck(target) {
            ExitCode::SUCCESS
        } else {
            eprintln!("balancer healthcheck: nothing accepts connections at {target}");
            ExitCode::FAILURE
        };
    }
    if let Some(Command::Admin { addr, action }) = &cli.command {
        let Some(target) = cli.admin_addr(*addr) else {
            eprintln!("balancer admin: give --addr HOST:PORT or BALANCER_ADMIN_LISTEN");
            return ExitCode::from(2);
        };
        return match balancer::admin::client::run(target, cli.admin_token.as_ref(), action) {
            Ok(output) => {
                print!("{output}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("balancer admin: {error}");
                ExitCode::FAILURE
            }
        };
    }
    balancer::telemetry::init(
        std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")),
    );
    let threads = cli.threads;
    let loaded = cli.watch_config().and_then(|watch| {
        let sources = cli.into_sources(std::env::var("BALANCER_BACKENDS").ok())?;
        Ok((sources.load()?, sources, watch))
    });
    let (config, sources, watch) = match loaded {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("balancer: invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    match run(config, sources, watch, threads) {
        Ok(()) => ExitCode::SUCCESS,
        // A certificate file that cannot be served is a configuration error like any other.
        Err(error) if certificate_error(&error).is_some() => {
            let tls = certificate_error(&error).expect("just checked");
            tracing::error!("invalid configuration: {tls}");
            eprintln!("balancer: invalid configuration: {tls}");
            ExitCode::from(2)
        }
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("balancer: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The TLS set-up error inside a start-up failure, if that is what it was.
fn certificate_error(error: &anyhow::Error) -> Option<&balancer::tls::TlsError> {
    error
        .downcast_ref::<std::io::Error>()
        .and_then(|e| e.get_ref())
        .and_then(|e| e.downcast_ref::<balancer::tls::TlsError>())
}

fn run(
    config: balancer::config::Config,
    sources: balancer::config::Sources,
    watch: bool,
    threads: Option<std::num::NonZeroUsize>,
) -> anyhow::Result<()> {
    let mut builder = match threads.map(std::num::NonZeroUsize::get) {
        // One core's worth of work needs no scheduler shared between threads.
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = builder
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        // Before binding: once the port answers, SIGTERM stops the balancer, never kills it.
        let mut shutdown =
            hitscale_signal::Shutdown::listen().context("listening for SIGINT and SIGTERM")?;
        // SIGHUP too: its default action would end the process instead of reloading it.
        let hangups = balancer::reload::Hangups::listen().context("listening for SIGHUP")?;
        let listen = config.listen;
        let mut balancer = Balancer::build_from(config, sources)
            .await
            .with_context(|| format!("starting the balancer (listen {listen})"))?;
        balancer.reload_on_hangup(hangups);
        if watch {
            let file = balancer.watch_config_file()?;
            tracing::info!(file = %file.display(), every = ?balancer::reload::WATCH_POLL, "watching the config file: a change reloads it");
        }
        balancer
            .run_until_stopped(async move {
                let signal = shutdown.requested().await;
                tracing::info!("received {signal}");
            })
            .await;
        Ok(())
    })
}
