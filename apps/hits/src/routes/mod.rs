//! The HTTP surface: one module per group of routes, assembled with the cross-cutting layers.

pub mod api;
pub mod health;
pub mod page;

use crate::cache::WindowCache;
use crate::metrics::Metrics;
use crate::middleware;
use crate::recorder::Recorder;
use crate::store::Store;
use crate::work::SimulatedWork;
use axum::Router;
use axum::routing::get;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub instance_id: Arc<str>,
    pub store: Store,
    pub cache: Arc<WindowCache>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub work: Arc<SimulatedWork>,
    /// Set once shutdown begins, so `/readyz` tells balancers to stop sending traffic.
    pub draining: Arc<AtomicBool>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(page::hit_page))
        .route("/api/hits", get(api::current).post(api::record))
        .route("/healthz", get(health::alive))
        .route("/readyz", get(health::ready))
        .route("/metrics", get(health::metrics))
        .fallback(page::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::observe,
        ))
        .with_state(state)
}
