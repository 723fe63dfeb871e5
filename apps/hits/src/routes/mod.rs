//! The HTTP surface: one module per group of routes, assembled with the cross-cutting layers.

pub mod api;
pub mod health;
pub mod page;

use crate::cache::WindowCache;
use crate::error::{AppError, Format};
use crate::metrics::Metrics;
use crate::middleware;
use crate::recorder::Recorder;
use crate::stats::Stats;
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

/// One hit: the simulated work (if any), the commit, then the figures including the hit.
async fn record_hit(state: &AppState, format: Format) -> Result<Stats, AppError> {
    state
        .work
        .perform()
        .await
        .map_err(|e| AppError::unavailable(e.to_string(), format))?;
    let counts = state
        .recorder
        .record()
        .await
        .map_err(|e| AppError::from_record(e, format))?;
    Stats::with_counts(&state.instance_id, &counts, &state.store, &state.cache)
        .await
        .map_err(|e| AppError::from_store(e, format))
}
