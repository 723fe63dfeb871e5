//! Where instances come from: one trait, [`Provider`], so the scaler never knows whether an
//! instance is a child process ([`local`]), a container or a cloud machine.
//!
//! A provider starts an instance and reports the address it serves on once it listens; it
//! never touches the balancer (the scaler adds and drains, so the order "healthy before
//! traffic, drained before stopped" is enforced in one place).

pub mod docker;
pub mod local;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;

/// A running instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The provider's name for it (the app's `INSTANCE_ID` for the local provider).
    pub id: String,
    /// Where it serves HTTP, as the balancer should reach it.
    pub address: SocketAddr,
}

/// A provider's failure, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("cannot start an instance: {0}")]
    Start(String),
    #[error("cannot stop instance {id}: {reason}")]
    Stop { id: String, reason: String },
    #[error("no instance {0}")]
    Unknown(String),
}

/// Starts, stops and lists instances of the app.
pub trait Provider: Send + Sync + 'static {
    /// Starts one instance and returns once it listens (its address known), within the
    /// provider's own bound.
    fn start(&self) -> impl Future<Output = Result<Instance, ProviderError>> + Send;

    /// Stops `id`: gracefully first (it finishes what it has), for good after a bound.
    fn stop(&self, id: &str) -> impl Future<Output = Result<(), ProviderError>> + Send;

    /// The instances running now; one that exited by itself is no longer listed.
    fn list(&self) -> impl Future<Output = Result<Vec<Instance>, ProviderError>> + Send;

    /// CPU used by each of `instances`, in cores (1.0 = one CPU fully busy), for those the
    /// provider can measure; a provider without the figure returns none (the local one:
    /// the CPU metric then has no observation and does not take part in decisions).
    fn cpu(&self, instances: &[Instance]) -> impl Future<Output = HashMap<String, f64>> + Send {
        let _ = instances;
        async { HashMap::new() }
    }
}
