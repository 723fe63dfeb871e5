//! The `hits` binary: `hits` serves; `hits healthcheck` checks a running instance.

use hits::{App, Config, telemetry};
use hitscale_signal::Shutdown;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: hits [healthcheck]

  hits              serve (configured by environment variables; see .env.example)
  hits healthcheck  exit 0 if the app on 127.0.0.1:$PORT answers GET /healthz with 200";

#[tokio::main]
async fn main() -> ExitCode {
    // A missing .env is normal; a malformed one is an error worth stopping for.
    if let Err(error) = dotenvy::dotenv()
        && !error.not_found()
    {
        eprintln!("hits: cannot load .env: {error}");
        return ExitCode::from(2);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => serve().await,
        ["healthcheck"] => healthcheck(),
        ["-h" | "--help" | "help"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        ["-V" | "--version"] => {
            println!("hits {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("hits: unknown arguments {args:?}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

async fn serve() -> ExitCode {
    telemetry::init();
    // First of all: once the port answers, SIGTERM must stop the app gracefully, not kill it.
    let mut shutdown = match Shutdown::listen() {
        Ok(shutdown) => shutdown,
        Err(error) => {
            eprintln!("hits: cannot listen for SIGINT and SIGTERM: {error}");
            return ExitCode::FAILURE;
        }
    };
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("hits: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    let app = match App::build(config).await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!(%error, "cannot start");
            eprintln!("hits: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    let stop = async move {
        let signal = shutdown.requested().await;
        tracing::info!("received {signal}");
    };
    match app.run_until_stopped(stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hits: server error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn healthcheck() -> ExitCode {
    let port = match std::env::var("PORT").ok().filter(|p| !p.trim().is_empty()) {
        None => 8000,
        Some(raw) => match raw.trim().parse() {
            Ok(port) => port,
            Err(_) => {
                eprintln!("hits healthcheck: PORT: {raw:?} is not a valid port number");
                return ExitCode::from(2);
            }
        },
    };
    match hits::healthcheck::check(port, Duration::from_secs(2)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("hits healthcheck: {reason}");
            ExitCode::FAILURE
        }
    }
}
