//! What wraps every request: a span with a request id, the `X-Instance-Id` header, and the
//! request metrics.

use crate::metrics::Route;
use crate::routes::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tracing::Instrument;

pub const INSTANCE_HEADER: &str = "x-instance-id";
const REQUEST_ID_HEADER: &str = "x-request-id";

pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let started = Instant::now();
    let route = Route::from(request.extensions().get::<MatchedPath>());
    // A caller's id (a balancer's) is kept when it is short and printable; else we make one.
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| {
            format!(
                "{}-{}",
                state.instance_id,
                NEXT_ID.fetch_add(1, Ordering::Relaxed)
            )
        });
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        route = route.as_str(),
        request_id = %request_id,
        instance_id = %state.instance_id,
    );
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&state.instance_id) {
        headers.insert(INSTANCE_HEADER, value);
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert(REQUEST_ID_HEADER, value);
    }
    let elapsed = started.elapsed();
    state.metrics.observe_request(route, status, elapsed);
    span.in_scope(|| tracing::debug!(status, elapsed_ms = elapsed.as_secs_f64() * 1e3, "answered"));
    response
}
