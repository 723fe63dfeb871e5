//! hitscale's autoscaler: adds and removes app instances behind the balancer with the load,
//! the way the Kubernetes Horizontal Pod Autoscaler decides, without failing a request.
//!
//! [`signals`] reads what the balancer measures (its admin API), [`controller`] decides
//! (pure: the HPA formula, tolerance, stabilization window, bounds, step limit),
//! [`provider`] starts and stops instances (child processes: [`provider::local`]), and
//! [`scaler`] runs the loop and keeps the order that never fails a request (healthy before
//! traffic, drained and removed before stopped). [`metrics`] exposes every decision.

pub mod config;
pub mod controller;
pub mod metrics;
pub mod provider;
pub mod scaler;
pub mod signals;

pub use config::{Config, ConfigError, Opts};
pub use controller::{Controller, Decision, Direction, Observation, Policy, Targets};
pub use scaler::{Round, Scaler, ScalerConfig};
pub use signals::AdminClient;
