//! Liveness, readiness and metrics.

use super::AppState;
use crate::cache::CacheState;
use crate::metrics;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use std::sync::atomic::Ordering;

/// The process is up and serving HTTP; says nothing of its dependencies.
pub async fn alive() -> &'static str {
    "ok\n"
}

/// Ready to take traffic: PostgreSQL answers (within the pool's acquire timeout) and the
/// process is not shutting down. Redis' state is reported but never makes us unready: the app
/// serves without it.
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let (postgres, redis) = tokio::join!(state.store.ping(), state.cache.probe());
    let draining = state.draining.load(Ordering::Relaxed);
    let ready = postgres.is_ok() && !draining;
    let body = serde_json::json!({
        "status": if ready { "ready" } else if draining { "draining" } else { "unavailable" },
        "instance_id": &*state.instance_id,
        "postgres": if postgres.is_ok() { "up" } else { "down" },
        "redis": if redis == CacheState::Up { "up" } else { "down" },
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// The metrics in OpenMetrics when the scraper asks for it (Prometheus does), else in the
/// Prometheus text format.
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = metrics::Format::negotiate(accept);
    (
        [
            (header::CONTENT_TYPE, format.content_type()),
            (header::VARY, "accept"),
        ],
        state.metrics.render(format),
    )
}
