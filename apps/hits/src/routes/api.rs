//! `/api/hits`: the same figures as JSON. GET records nothing; POST records one hit.

use super::AppState;
use crate::error::{AppError, Format};
use crate::stats::Stats;
use axum::Json;
use axum::extract::State;

pub async fn current(State(state): State<AppState>) -> Result<Json<Stats>, AppError> {
    let stats = Stats::current(&state.instance_id, &state.store, &state.cache)
        .await
        .map_err(|e| AppError::from_store(e, Format::Json))?;
    Ok(Json(stats))
}

pub async fn record(State(state): State<AppState>) -> Result<Json<Stats>, AppError> {
    super::record_hit(&state, Format::Json).await.map(Json)
}
