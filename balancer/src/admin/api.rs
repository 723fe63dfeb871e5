//! The admin JSON API. Every change takes the registry's writer lock, builds the successor
//! set and swaps it in, so requests always see a whole set, before or after, and a request
//! in flight keeps the backend it chose until it ends.
//!
//! | call | effect |
//! |---|---|
//! | `GET /api/backends` | every backend with its state and counters (requests, and the count and sum of the latencies to response head, cumulative) |
//! | `POST /api/backends` `{"address":"IP:PORT","weight":N}` | adds one (kept across DNS re-resolution) |
//! | `DELETE /api/backends/{address}` | removes one; its in-flight requests finish |
//! | `PUT /api/backends/{address}/weight` `{"weight":N}` | sets its weight (1-1000) |
//! | `POST /api/backends/{address}/drain` | no new requests nor sticky sessions |
//! | `POST /api/backends/{address}/resume` | takes requests again |
//! | `GET /api/scaling-events[?after=N]` | an autoscaler's recent decisions ([`super::scaling`]) |
//! | `POST /api/scaling-events` `{"source","direction","current","desired","reason","figures"}` | records one |
//! | `GET /metrics` | Prometheus text exposition ([`crate::metrics`]) |

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::{AdminState, BODY_TIMEOUT, MAX_BACKENDS, MAX_BODY_BYTES};
use crate::backend::{Backend, BackendSet, Health, MAX_REMOVED, now_millis};
use crate::guards::PoolGuards;
use crate::pool::Pool;

/// Accepted weights, as in the config (`weight=N`).
const WEIGHTS: std::ops::RangeInclusive<u64> = 1..=1000;

/// A refused call: its status, message and the offending field if one is to blame.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: String,
    field: Option<Cow<'static, str>>,
}

fn refuse(status: StatusCode, message: impl Into<String>, field: Option<&'static str>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
        field: field.map(Cow::Borrowed),
    }
}

type Answer = Result<(StatusCode, Value), Refusal>;

pub async fn handle(
    state: &AdminState,
    pool: PoolGuards,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if !state.authorized(authorization) {
        tracing::warn!(%peer, %method, path, "admin call refused: missing or wrong bearer token");
        let mut response = reply(Err(refuse(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
            None,
        )));
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        // A caller without the token gets no kept-alive connection to try again on.
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return response;
    }
    if path == "/metrics" && method == Method::GET {
        return metrics(state);
    }
    let answer = route(state, pool, &method, &path, request).await;
    match &answer {
        Ok((status, _)) if method != Method::GET => {
            tracing::info!(%peer, %method, path, status = status.as_u16(), "admin change applied")
        }
        Err(refusal) => {
            tracing::info!(%peer, %method, path, status = refusal.status.as_u16(), error = refusal.message, "admin call refused")
        }
        Ok(_) => {}
    }
    reply(answer)
}

fn reply(answer: Answer) -> Response<Full<Bytes>> {
    let (status, body) = match answer {
        Ok(ok) => ok,
        Err(refusal) => {
            let mut body = json!({ "error": refusal.message });
            if let Some(field) = refusal.field {
                body["field"] = json!(field);
            }
            (refusal.status, body)
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(body.to_string() + "\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

/// The Prometheus exposition, rendered from the live set at this moment.
fn metrics(state: &AdminState) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(crate::metrics::render(
        &state.metrics,
    ))));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

async fn route(
    state: &AdminState,
    pool: PoolGuards,
    method: &Method,
    path: &str,
    request: Request<Incoming>,
) -> Answer {
    if path == "/metrics" {
        return Err(not_allowed("GET"));
    }
    if path == "/api/scaling-events" {
        return match *method {
            Method::GET => Ok((
                StatusCode::OK,
                state
                    .scaling
                    .list(super::scaling::after_of(request.uri().query())),
            )),
            Method::POST => {
                let body = read_json_within(request, super::scaling::MAX_EVENT_BYTES).await?;
                state
                    .scaling
                    .record(&body, super::scaling::unix_millis())
                    .map(|event| (StatusCode::CREATED, event))
                    .map_err(|invalid| {
                        refuse(
                            StatusCode::BAD_REQUEST,
                            invalid.message,
                            Some(invalid.field),
                        )
                    })
            }
            _ => Err(not_allowed("GET or POST")),
        };
    }
    let Some(rest) = path.strip_prefix("/api/backends") else {
        return Err(refuse(StatusCode::NOT_FOUND, "no such endpoint", None));
    };
    let rest = rest.trim_start_matches('/');
    if rest.is_empty() {
        return match *method {
            Method::GET => Ok((StatusCode::OK, list(state))),
            Method::POST => add(state, pool, read_json(request).await?),
            _ => Err(not_allowed("GET or POST")),
        };
    }
    let (address, action) = match rest.split_once('/') {
        Some((address, action)) => (address, Some(action)),
        None => (rest, None),
    };
    let address = parse_address(address)?;
    match (action, method) {
        (None, &Method::DELETE) => remove(state, address),
        (None, _) => Err(not_allowed("DELETE")),
        (Some("weight"), &Method::PUT) => {
            let body = read_json(request).await?;
            let weight = weight_field(&body, true)?.expect("required");
            reweight(state, address, weight)
        }
        (Some("drain"), &Method::POST) => drain(state, address, true),
        (Some("resume"), &Method::POST) => drain(state, address, false),
        (Some("weight"), _) => Err(not_allowed("PUT")),
        (Some("drain" | "resume"), _) => Err(not_allowed("POST")),
        (Some(_), _) => Err(refuse(StatusCode::NOT_FOUND, "no such endpoint", None)),
    }
}

fn not_allowed(allowed: &str) -> Refusal {
    refuse(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed here (use {allowed})"),
        None,
    )
}

/// `IP:PORT` from a path segment; `[`, `]` and `:` may come percent-encoded.
fn parse_address(segment: &str) -> Result<SocketAddr, Refusal> {
    let decoded = segment
        .replace("%5B", "[")
        .replace("%5b", "[")
        .replace("%5D", "]")
        .replace("%5d", "]")
        .replace("%3A", ":")
        .replace("%3a", ":");
    decoded.parse().map_err(|_| {
        refuse(
            StatusCode::BAD_REQUEST,
            "address must be IP:PORT (e.g. 127.0.0.1:9001 or [::1]:9001)",
            Some("address"),
        )
    })
}

/// The request body as a JSON object, read within the size and time caps.
async fn read_json(request: Request<Incoming>) -> Result<serde_json::Map<String, Value>, Refusal> {
    read_json_within(request, MAX_BODY_BYTES).await
}

/// [`read_json`] with a body cap of `limit` bytes.
async fn read_json_within(
    request: Request<Incoming>,
    limit: usize,
) -> Result<serde_json::Map<String, Value>, Refusal> {
    let body = Limited::new(request.into_body(), limit);
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, body.collect()).await {
        Err(_) => {
            return Err(refuse(
                StatusCode::REQUEST_TIMEOUT,
                "request body too slow",
                None,
            ));
        }
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
            return Err(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over {limit} bytes"),
                None,
            ));
        }
        Ok(Err(_)) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "unreadable request body",
                None,
            ));
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(refuse(
            StatusCode::BAD_REQUEST,
            "body must be a JSON object",
            None,
        )),
    }
}

/// `weight` from a body: an integer 1-1000; `required` or optional.
fn weight_field(
    body: &serde_json::Map<String, Value>,
    required: bool,
) -> Result<Option<u32>, Refusal> {
    let bad = || {
        refuse(
            StatusCode::BAD_REQUEST,
            "weight must be 1-1000",
            Some("weight"),
        )
    };
    match body.get("weight") {
        None if required => Err(bad()),
        None => Ok(None),
        Some(value) => value
            .as_u64()
            .filter(|w| WEIGHTS.contains(w))
            .map(|w| Some(w as u32))
            .ok_or_else(bad),
    }
}

fn unknown_fields(
    body: &serde_json::Map<String, Value>,
    known: &[&'static str],
) -> Result<(), Refusal> {
    match body.keys().find(|k| !known.contains(&k.as_str())) {
        Some(name) => {
            // Named back only if it looks like a field name: it is the client's text.
            let plain =
                name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            let mut refusal = refuse(
                StatusCode::BAD_REQUEST,
                format!("unknown field (expected {})", known.join(", ")),
                None,
            );
            refusal.field = Some(if plain {
                Cow::Owned(name.clone())
            } else {
                Cow::Borrowed("body")
            });
            Err(refusal)
        }
        None => Ok(()),
    }
}

/// What a backend is doing, as the API reports it, with the reason when there is one.
pub(super) fn state_of(backend: &Backend, now: u64) -> (&'static str, Option<&'static str>) {
    if backend.is_draining() {
        if backend.in_flight() > 0 {
            ("draining", None)
        } else {
            ("drained", None)
        }
    } else if backend.is_ejected(now) {
        let reason = backend.ejection_reason();
        (
            "ejected",
            Some(if reason.is_empty() {
                "passive health check"
            } else {
                reason
            }),
        )
    } else {
        match backend.health() {
            Health::Up => ("healthy", None),
            Health::Down => ("unhealthy", Some("failing active health checks")),
            Health::Pending => ("unhealthy", Some("awaiting its first health check")),
        }
    }
}

fn describe(backend: &Backend, now: u64) -> Value {
    let (state, reason) = state_of(backend, now);
    // Cumulative, like `requests`: a reader takes differences over its own window (the
    // autoscaler's latency signal), so no window is imposed here.
    let (buckets, latency_sum_nanos) = backend.stats.latency();
    let latency_count: u64 = buckets.iter().sum();
    json!({
        "address": backend.addr.to_string(),
        "origin": &*backend.origin,
        "weight": backend.weight(),
        "state": state,
        "reason": reason,
        "in_flight": backend.in_flight(),
        "requests": backend.requests(),
        "failures": backend.failures(),
        "latency_count": latency_count,
        "latency_sum_ms": latency_sum_nanos as f64 / 1e6,
        "added_by_api": backend.added_by_api,
    })
}

fn list(state: &AdminState) -> Value {
    let set = state.registry.load_full();
    let now = now_millis();
    json!({
        "generation": set.generation,
        "backends": set.backends.iter().map(|b| describe(b, now)).collect::<Vec<_>>(),
    })
}

fn unknown_backend(address: SocketAddr) -> Refusal {
    refuse(
        StatusCode::NOT_FOUND,
        format!("no backend {address}"),
        Some("address"),
    )
}

fn add(state: &AdminState, pool: PoolGuards, body: serde_json::Map<String, Value>) -> Answer {
    unknown_fields(&body, &["address", "weight"])?;
    let address = match body.get("address") {
        Some(Value::String(text)) => parse_address(text)?,
        _ => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "address must be IP:PORT (e.g. 127.0.0.1:9001 or [::1]:9001)",
                Some("address"),
            ));
        }
    };
    let weight = weight_field(&body, false)?.unwrap_or(1);
    let mut edits = state.registry.writer();
    let current = state.registry.load_full();
    if current.backends.iter().any(|b| b.addr == address) {
        return Err(refuse(
            StatusCode::CONFLICT,
            format!("backend {address} already exists"),
            Some("address"),
        ));
    }
    if current.backends.len() >= MAX_BACKENDS {
        return Err(refuse(
            StatusCode::CONFLICT,
            format!("the backend set is full ({MAX_BACKENDS})"),
            None,
        ));
    }
    edits.removed.retain(|a| *a != address);
    let config = state.config.borrow().clone();
    // As discovery does: with awaited health checks, traffic only after a first pass.
    let initial = if config.health.path.is_some() && config.health.wait_for_first_pass {
        Health::Pending
    } else {
        Health::Up
    };
    let backend = Arc::new(
        Backend::new(
            address,
            address.to_string().into(),
            weight,
            state.sticky.id_for(address),
            initial,
            Pool::new(pool.max_idle, pool.idle),
        )
        .added_by_api(),
    );
    let mut backends = current.backends.clone();
    backends.push(backend.clone());
    state.registry.store(BackendSet {
        generation: current.generation + 1,
        backends,
    });
    Ok((StatusCode::CREATED, describe(&backend, now_millis())))
}

fn remove(state: &AdminState, address: SocketAddr) -> Answer {
    let mut edits = state.registry.writer();
    let current = state.registry.load_full();
    let Some(backend) = current.backends.iter().find(|b| b.addr == address).cloned() else {
        return Err(unknown_backend(address));
    };
    // Requests in flight hold their own `Arc` and finish; no new one can choose it.
    backend.start_draining();
    if !edits.removed.contains(&address) {
        if edits.removed.len() >= MAX_REMOVED {
            edits.removed.pop_front();
        }
        edits.removed.push_back(address);
    }
    state.registry.store(BackendSet {
        generation: current.generation + 1,
        backends: current
            .backends
            .iter()
            .filter(|b| b.addr != address)
            .cloned()
            .collect(),
    });
    Ok((StatusCode::OK, describe(&backend, now_millis())))
}

fn reweight(state: &AdminState, address: SocketAddr, weight: u32) -> Answer {
    let _edits = state.registry.writer();
    let current = state.registry.load_full();
    let Some(backend) = current.backends.iter().find(|b| b.addr == address) else {
        return Err(unknown_backend(address));
    };
    backend.set_weight(weight);
    // A new generation: weighted selectors rebuild their state from the new weights.
    state.registry.store(BackendSet {
        generation: current.generation + 1,
        backends: current.backends.clone(),
    });
    Ok((StatusCode::OK, describe(backend, now_millis())))
}

fn drain(state: &AdminState, address: SocketAddr, draining: bool) -> Answer {
    let _edits = state.registry.writer();
    let current = state.registry.load_full();
    let Some(backend) = current.backends.iter().find(|b| b.addr == address) else {
        return Err(unknown_backend(address));
    };
    // Selection reads the flag for every request: the next one already avoids it.
    if draining {
        backend.start_draining();
    } else {
        backend.stop_draining();
    }
    Ok((StatusCode::OK, describe(backend, now_millis())))
}
