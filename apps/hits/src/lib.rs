//! hits: the sample app. Every `GET /` is a hit stored durably in PostgreSQL; the figures it
//! shows come from counters kept in the same transactions, with the one expensive figure
//! (the 24-hour window) cached in Redis. Every response names the instance that served it.
//!
//! `main.rs` only loads `.env`, sets up logging, reads [`config::Config`] and calls
//! [`startup::App::build`] then [`startup::App::run_until_stopped`].

pub mod cache;
pub mod compaction;
pub mod config;
pub mod error;
pub mod healthcheck;
pub mod metrics;
pub mod middleware;
pub mod recorder;
pub mod routes;
pub mod startup;
pub mod stats;
pub mod store;
pub mod telemetry;
pub mod work;

pub use config::Config;
pub use startup::App;
