//! The `loadgen` binary: parses options, builds the runtime, prints the report.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use loadgen::Opts;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let opts = Opts::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal (not in `docker compose logs`), unless NO_COLOR is set.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .init();

    let runtime = match opts.threads {
        Some(0) => {
            eprintln!("error: --threads must be at least 1");
            return ExitCode::from(2);
        }
        // One thread: no cross-thread wake-ups at all, which is what a one-core
        // comparison with wrk and oha should measure.
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(threads) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let json = opts.json;
    match runtime.block_on(loadgen::run(opts)) {
        Ok(report) => {
            let text = if json {
                format!("{}\n", report.to_json())
            } else {
                report.to_string()
            };
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
