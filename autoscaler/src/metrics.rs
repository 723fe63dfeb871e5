//! The autoscaler's Prometheus metrics, and the small HTTP server that serves them on
//! `--listen` (`GET /metrics`; anything else is 404). Label values are fixed words
//! (directions, actions), so the label sets never grow.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::controller::{Decision, Direction, Observation};

pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// Scrapes served at once; a scraper is one client, a few are plenty.
const MAX_CONNECTIONS: usize = 8;
/// The longest a metrics connection lives.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ActionLabel {
    action: &'static str,
}

/// The figures behind every decision.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    instances: Gauge,
    desired: Gauge,
    recommendation: Gauge,
    decisions: Family<DirectionLabel, Counter>,
    failures: Family<ActionLabel, Counter>,
    rps_per_instance: Gauge<f64, AtomicU64>,
    in_flight_per_instance: Gauge<f64, AtomicU64>,
    cpu_per_instance: Gauge<f64, AtomicU64>,
    latency_ms: Gauge<f64, AtomicU64>,
    ratio: Gauge<f64, AtomicU64>,
    /// The last decision's time (Unix seconds), and its direction as -1, 0 or 1.
    last_decision_at: Gauge<f64, AtomicU64>,
    last_change_at: Gauge<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let metrics = Metrics {
            instances: Gauge::default(),
            desired: Gauge::default(),
            recommendation: Gauge::default(),
            decisions: Family::default(),
            failures: Family::default(),
            rps_per_instance: Gauge::default(),
            in_flight_per_instance: Gauge::default(),
            cpu_per_instance: Gauge::default(),
            latency_ms: Gauge::default(),
            ratio: Gauge::default(),
            last_decision_at: Gauge::default(),
            last_change_at: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "autoscaler_instances",
            "Instances in service (healthy in the balancer, not draining)",
            metrics.instances.clone(),
        );
        registry.register(
            "autoscaler_desired_instances",
            "The count the last decision aimed at",
            metrics.desired.clone(),
        );
        registry.register(
            "autoscaler_recommended_instances",
            "The last recommendation before stabilization and step limits",
            metrics.recommendation.clone(),
        );
        registry.register(
            "autoscaler_decisions",
            "Decisions made, by direction (up, down, none)",
            metrics.decisions.clone(),
        );
        registry.register(
            "autoscaler_action_failures",
            "Scaling actions that failed, by action (start, add, ready, drain, remove, stop)",
            metrics.failures.clone(),
        );
        registry.register(
            "autoscaler_observed_rps_per_instance",
            "Requests per second per instance in service, over the rate window",
            metrics.rps_per_instance.clone(),
        );
        registry.register(
            "autoscaler_observed_in_flight_per_instance",
            "Requests in flight per instance in service",
            metrics.in_flight_per_instance.clone(),
        );
        registry.register(
            "autoscaler_observed_cpu_per_instance",
            "CPU per instance in service, in cores (0 when the provider does not measure it)",
            metrics.cpu_per_instance.clone(),
        );
        registry.register(
            "autoscaler_observed_latency_ms",
            "Mean time to response head over the rate window, as the balancer measures it",
            metrics.latency_ms.clone(),
        );
        registry.register(
            "autoscaler_last_decision_timestamp_seconds",
            "When the last decision was made (Unix time)",
            metrics.last_decision_at.clone(),
        );
        registry.register(
            "autoscaler_last_change_timestamp_seconds",
            "When the last decision that changed the count was made (Unix time)",
            metrics.last_change_at.clone(),
        );
        registry.register(
            "autoscaler_usage_ratio",
            "Observed over target, the largest over the metrics with a target",
            metrics.ratio.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    /// Records one decision and the figures it was made from.
    pub fn decided(&self, decision: &Decision, observation: &Observation) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_decision_at.set(now);
        if decision.direction != Direction::None {
            self.last_change_at.set(now);
        }
        self.cpu_per_instance
            .set(observation.cpu_per_instance.unwrap_or(0.0));
        self.latency_ms.set(observation.latency_ms.unwrap_or(0.0));
        let rps = observation.rps_per_instance;
        let in_flight = observation.in_flight_per_instance;
        self.instances.set(i64::from(decision.current));
        self.desired.set(i64::from(decision.desired));
        self.recommendation.set(i64::from(decision.recommendation));
        self.decisions
            .get_or_create(&DirectionLabel {
                direction: decision.direction.as_str(),
            })
            .inc();
        self.rps_per_instance.set(rps.unwrap_or(0.0));
        self.in_flight_per_instance.set(in_flight.unwrap_or(0.0));
        self.ratio.set(decision.ratio.unwrap_or(0.0));
    }

    /// The count in service changed (an instance joined or left).
    pub fn set_instances(&self, count: usize) {
        self.instances.set(count as i64);
    }

    pub fn failed(&self, action: &'static str) {
        self.failures.get_or_create(&ActionLabel { action }).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` on `listener` until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(answer(&request, &metrics)) }
            });
            let connection = http1::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
            drop(permit);
        });
    }
}

fn answer(request: &Request<hyper::body::Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) =
        if request.uri().path() == "/metrics" && request.method() == hyper::Method::GET {
            (StatusCode::OK, CONTENT_TYPE, metrics.render())
        } else {
            (
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "not found; try GET /metrics\n".to_owned(),
            )
        };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

/// Binds `addr` for [`serve`]; the error names the flag.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("--listen {addr}: cannot listen: {e}")))
}
