//! loadgen: an HTTP load generator that shows how responses spread across the instances
//! behind a load balancer, with honest latency (HDR histograms, coordinated-omission
//! corrected open model).
//!
//! [`run`] takes the command-line [`Opts`], validates them into a [`RunConfig`], runs the
//! load and returns a typed [`Report`]; the binary only prints it.

pub mod cli;
pub mod client;
pub mod collector;
pub mod config;
pub mod http1;
pub mod live;
pub mod outcome;
pub mod recorder;
pub mod report;
pub mod runner;
pub mod schedule;
pub mod transport;

pub use cli::Opts;
pub use config::{ConfigError, RunConfig};
pub use report::{Report, StopReason};
pub use runner::{RunError, run_config};
pub use tokio_util::sync::CancellationToken;

/// Validates `opts`, runs the load, and returns the report; Ctrl-C or SIGTERM end the run
/// early with a partial report.
pub async fn run(opts: Opts) -> Result<Report, RunError> {
    let config = RunConfig::from_opts(&opts)?;
    // Installed before the first request goes out, so a signal from then on is never fatal.
    let mut signals = hitscale_signal::Shutdown::listen().map_err(RunError::Signals)?;
    let shutdown = CancellationToken::new();
    let cancel = shutdown.clone();
    let signals = tokio::spawn(async move {
        signals.requested().await;
        cancel.cancel();
    });
    let report = run_config(config, shutdown).await;
    signals.abort();
    report
}
