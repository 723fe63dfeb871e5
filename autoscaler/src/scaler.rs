//! The loop: every interval, read the balancer's figures, let the [`Controller`] decide, and
//! act through the [`Provider`] and the admin API, in the order that never fails a request:
//!
//! - **add**: start the instance, add it to the balancer (which, with awaited health checks,
//!   sends it nothing until its first check passes), and count it in service only once the
//!   balancer lists it `healthy`; one that does not get there within `ready_timeout` is
//!   removed and stopped;
//! - **remove**: drain it through the admin API (no new request; those in flight finish),
//!   wait until the balancer lists it `drained` (none in flight, bounded by
//!   `drain_timeout`), remove it from the balancer, and only then stop it.
//!
//! The instances of one step are started (or retired) concurrently, and the step is done
//! before the next decision, so a decision always counts what is really in service.
//! An instance that exits by itself is taken out of the balancer at the next round.
//! On shutdown the scaler retires every instance it runs, the same way.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::controller::{Controller, Decision, Direction, Observation, Policy};
use crate::metrics::Metrics;
use crate::provider::{Instance, Provider};
use crate::signals::{AdminClient, BackendStatus, RateWindow};

/// How often a wait for a state (healthy, drained) asks the balancer again.
const STATE_POLL: Duration = Duration::from_millis(50);
/// The most rounds kept in the published history (for plots and tests).
pub const MAX_ROUNDS: usize = 100_000;

/// The loop's timing and policy, validated by [`crate::config`].
#[derive(Debug, Clone)]
pub struct ScalerConfig {
    pub interval: Duration,
    /// Report each decision that changes the count (or is held back) to the balancer's
    /// admin API, which shows it in its dashboard; the name it is reported under.
    pub report_as: Option<String>,
    pub rate_window: Duration,
    pub ready_timeout: Duration,
    pub drain_timeout: Duration,
    pub policy: Policy,
}

/// One round, as published for plots and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct Round {
    /// Since the scaler started.
    pub at: Duration,
    /// In service when the round decided.
    pub current: u32,
    /// In service once it acted.
    pub instances: u32,
    pub desired: u32,
    pub direction: Direction,
    /// Requests per second to all instances in service, over the rate window.
    pub rps: Option<f64>,
    pub ratio: Option<f64>,
    /// The metric whose recommendation won.
    pub metric: Option<&'static str>,
    /// Mean latency (ms) over the rate window, CPU per instance (cores).
    pub latency_ms: Option<f64>,
    pub cpu_per_instance: Option<f64>,
}

/// The autoscaler: owns the instances it started (or found running at start-up).
pub struct Scaler<P: Provider> {
    config: ScalerConfig,
    provider: Arc<P>,
    admin: AdminClient,
    controller: Controller,
    rates: RateWindow,
    /// In service, oldest first (scale-down retires the newest).
    members: Vec<Instance>,
    metrics: Arc<Metrics>,
    started: Instant,
    rounds: watch::Sender<VecDeque<Round>>,
    /// What the last report said (direction, limit, desired), so a steady state is
    /// reported once, not every round.
    last_reported: Option<(Direction, Option<&'static str>, u32)>,
}

impl<P: Provider> Scaler<P> {
    pub fn new(
        config: ScalerConfig,
        provider: Arc<P>,
        admin: AdminClient,
        metrics: Arc<Metrics>,
    ) -> Self {
        Scaler {
            controller: Controller::new(config.policy.clone()),
            rates: RateWindow::new(config.rate_window),
            config,
            provider,
            admin,
            members: Vec::new(),
            metrics,
            started: Instant::now(),
            rounds: watch::Sender::new(VecDeque::new()),
            last_reported: None,
        }
    }

    /// Every round so far (the latest [`MAX_ROUNDS`]), updated after each.
    pub fn rounds(&self) -> watch::Receiver<VecDeque<Round>> {
        self.rounds.subscribe()
    }

    /// Adopts the instances the provider already runs (adding them to the balancer if
    /// needed), then decides every interval until `shutdown` completes, then retires every
    /// instance.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        match self.provider.list().await {
            Ok(running) => {
                for instance in running {
                    match ready(
                        &self.admin,
                        instance.address,
                        self.config.ready_timeout,
                        true,
                    )
                    .await
                    {
                        Ok(()) => {
                            tracing::info!(instance = %instance.id, address = %instance.address, "adopted a running instance");
                            self.members.push(instance);
                        }
                        Err((action, error)) => {
                            tracing::warn!(instance = %instance.id, action, %error, "cannot adopt a running instance; leaving it alone");
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot list the running instances"),
        }
        self.metrics.set_instances(self.members.len());
        let mut ticks = tokio::time::interval(self.config.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = ticks.tick() => self.round().await,
            }
        }
        let all = std::mem::take(&mut self.members);
        tracing::info!(
            instances = all.len(),
            "shutting down: retiring every instance"
        );
        self.retire(all).await;
    }

    async fn round(&mut self) {
        let now = Instant::now();
        self.forget_exited().await;
        let backends = match self.admin.list().await {
            Ok(backends) => backends,
            Err(error) => {
                tracing::warn!(%error, "no figures this round");
                self.metrics.failed("list");
                return;
            }
        };
        let addresses: Vec<SocketAddr> = self.members.iter().map(|m| m.address).collect();
        self.rates.push(now, &backends, &addresses);
        let current = self.members.len() as u32;
        let rps = self.rates.rate();
        let in_flight: u64 = backends
            .iter()
            .filter(|b| addresses.contains(&b.address))
            .map(|b| b.in_flight)
            .sum();
        let per = |total: f64| (current > 0).then(|| total / f64::from(current));
        // CPU only when it is a target: a stats sample costs the engine about a second.
        let cpu_per_instance = if self.controller.policy().targets.cpu_per_instance.is_some() {
            let cpu = self.provider.cpu(&self.members).await;
            // Averaged over the instances measured; none measured is no observation.
            (!cpu.is_empty()).then(|| cpu.values().sum::<f64>() / cpu.len() as f64)
        } else {
            None
        };
        let observation = Observation {
            rps_per_instance: rps.and_then(per),
            in_flight_per_instance: per(in_flight as f64),
            cpu_per_instance,
            latency_ms: self.rates.mean_latency_ms(),
        };
        let decision = self.controller.decide(now, current, &observation);
        log(&decision, &observation, rps);
        self.metrics.decided(&decision, &observation);
        self.report(&decision, &observation).await;
        match decision.direction {
            Direction::Up => self.add(decision.desired - current).await,
            Direction::Down => {
                let keep = decision.desired as usize;
                let leaving = self.members.split_off(keep.min(self.members.len()));
                self.retire(leaving).await;
            }
            Direction::None => {}
        }
        self.metrics.set_instances(self.members.len());
        let round = Round {
            at: now.duration_since(self.started),
            current,
            instances: self.members.len() as u32,
            desired: decision.desired,
            direction: decision.direction,
            rps,
            ratio: decision.ratio,
            metric: decision.metric,
            latency_ms: observation.latency_ms,
            cpu_per_instance: observation.cpu_per_instance,
        };
        self.rounds.send_modify(|rounds| {
            if rounds.len() == MAX_ROUNDS {
                rounds.pop_front();
            }
            rounds.push_back(round);
        });
    }

    /// Reports `decision` to the balancer (its dashboard lists it): every change, and a
    /// held or steady state once when it begins. A failed report is logged and counted,
    /// never retried: the decision stands whatever the dashboard shows.
    async fn report(&mut self, decision: &Decision, observation: &Observation) {
        let Some(source) = &self.config.report_as else {
            return;
        };
        let key = (decision.direction, decision.limited_by, decision.desired);
        if decision.direction == Direction::None && self.last_reported == Some(key) {
            return;
        }
        self.last_reported = Some(key);
        let event = event(source, decision, observation, self.controller.policy());
        if let Err(error) = self.admin.report(&event).await {
            tracing::warn!(%error, "cannot report the decision to the balancer");
            self.metrics.failed("report");
        }
    }

    /// Takes instances that exited by themselves out of the set and out of the balancer.
    async fn forget_exited(&mut self) {
        let Ok(running) = self.provider.list().await else {
            return;
        };
        let (alive, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut self.members)
            .into_iter()
            .partition(|m| running.iter().any(|r| r.id == m.id));
        self.members = alive;
        for instance in gone {
            tracing::warn!(instance = %instance.id, address = %instance.address, "instance is gone; removing it from the balancer");
            if let Err(error) = self.admin.remove(instance.address).await {
                tracing::warn!(%error, "cannot remove a gone instance");
                self.metrics.failed("remove");
            }
        }
    }

    /// Starts `count` instances at once; each joins the set once the balancer finds it
    /// healthy.
    async fn add(&mut self, count: u32) {
        let mut starting = JoinSet::new();
        for _ in 0..count {
            let provider = self.provider.clone();
            let admin = self.admin.clone();
            let timeout = self.config.ready_timeout;
            starting.spawn(async move { launch(&*provider, &admin, timeout).await });
        }
        while let Some(result) = starting.join_next().await {
            match result {
                Ok(Ok(instance)) => {
                    tracing::info!(instance = %instance.id, address = %instance.address, "instance in service");
                    self.members.push(instance);
                }
                Ok(Err((action, error))) => {
                    tracing::warn!(action, %error, "could not add an instance");
                    self.metrics.failed(action);
                }
                Err(error) => tracing::error!(%error, "an instance start panicked"),
            }
        }
    }

    /// Drains, removes and stops `leaving`, all at once.
    async fn retire(&self, leaving: Vec<Instance>) {
        let mut retiring = JoinSet::new();
        for instance in leaving {
            let provider = self.provider.clone();
            let admin = self.admin.clone();
            let timeout = self.config.drain_timeout;
            let metrics = self.metrics.clone();
            retiring.spawn(async move {
                let failures = retire(&*provider, &admin, &instance, timeout).await;
                for action in failures {
                    metrics.failed(action);
                }
            });
        }
        while retiring.join_next().await.is_some() {}
    }
}

fn log(decision: &Decision, observation: &Observation, rps: Option<f64>) {
    tracing::info!(
        direction = decision.direction.as_str(),
        current = decision.current,
        desired = decision.desired,
        recommendation = decision.recommendation,
        window_max = decision.window_max,
        ratio = decision.ratio,
        metric = decision.metric,
        within_tolerance = decision.within_tolerance,
        limited_by = decision.limited_by,
        rps_total = rps,
        rps_per_instance = observation.rps_per_instance,
        in_flight_per_instance = observation.in_flight_per_instance,
        cpu_per_instance = observation.cpu_per_instance,
        latency_ms = observation.latency_ms,
        "decision"
    );
}

/// The figures to 3 decimals (a report is for people; the log keeps full precision).
fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// A decision as the balancer's `POST /api/scaling-events` takes it: the figures behind
/// it (each metric observed, with its target) and a one-line reason.
pub fn event(
    source: &str,
    decision: &Decision,
    observation: &Observation,
    policy: &Policy,
) -> serde_json::Value {
    let mut figures = serde_json::Map::new();
    for (name, observed, target) in observation.with_targets(&policy.targets) {
        if let Some(observed) = observed {
            figures.insert(name.into(), round3(observed).into());
        }
        if let Some(target) = target {
            figures.insert(format!("{name}_target"), round3(target).into());
        }
    }
    if let Some(ratio) = decision.ratio {
        figures.insert("ratio".into(), round3(ratio).into());
    }
    figures.insert("recommendation".into(), decision.recommendation.into());
    figures.insert("window_max".into(), decision.window_max.into());
    let metric = decision.metric.unwrap_or("no metric");
    let ratio = decision.ratio.map_or_else(
        || "nothing observed".to_owned(),
        |r| format!("{metric} at {:.2}x its target", r),
    );
    let reason = match (decision.direction, decision.limited_by) {
        (_, Some(limit)) => format!("{ratio}; held by the {limit}"),
        (Direction::Up, None) if decision.ratio.is_none() => {
            format!("{ratio}; brought up to the min")
        }
        (Direction::None, None) if decision.within_tolerance && decision.ratio.is_some() => {
            format!(
                "{ratio}, within the tolerance of {:.0} %",
                policy.tolerance * 100.0
            )
        }
        _ => ratio,
    };
    serde_json::json!({
        "source": source,
        "direction": decision.direction.as_str(),
        "current": decision.current,
        "desired": decision.desired,
        "reason": reason.chars().take(200).collect::<String>(),
        "figures": figures,
    })
}

/// Starts one instance and waits until the balancer sends it traffic; on any failure,
/// undoes what was done and names the step that failed.
async fn launch<P: Provider>(
    provider: &P,
    admin: &AdminClient,
    ready_timeout: Duration,
) -> Result<Instance, (&'static str, String)> {
    let instance = provider
        .start()
        .await
        .map_err(|e| ("start", e.to_string()))?;
    match ready(admin, instance.address, ready_timeout, true).await {
        Ok(()) => Ok(instance),
        Err(error) => {
            let _ = admin.remove(instance.address).await;
            let _ = provider.stop(&instance.id).await;
            Err(error)
        }
    }
}

/// Adds `address` to the balancer (if `add`) and waits until it is listed `healthy`.
async fn ready(
    admin: &AdminClient,
    address: SocketAddr,
    timeout: Duration,
    add: bool,
) -> Result<(), (&'static str, String)> {
    if add {
        admin
            .add(address)
            .await
            .map_err(|e| ("add", e.to_string()))?;
    }
    wait_for(admin, timeout, address, "healthy")
        .await
        .map_err(|last| {
            (
                "ready",
                format!("{address} not healthy within {timeout:?} (last seen: {last})"),
            )
        })
}

/// Drain, wait until drained, remove, stop; returns the actions that failed.
async fn retire<P: Provider>(
    provider: &P,
    admin: &AdminClient,
    instance: &Instance,
    drain_timeout: Duration,
) -> Vec<&'static str> {
    let address = instance.address;
    let mut failures = Vec::new();
    match admin.drain(address).await {
        Ok(()) => {
            if let Err(last) = wait_for(admin, drain_timeout, address, "drained").await {
                // Removal still lets its requests finish (they hold the backend), and the
                // app's own graceful stop finishes what it is serving.
                tracing::warn!(instance = %instance.id, %address, timeout = ?drain_timeout, last, "not drained in time; removing it anyway");
                failures.push("drain");
            }
        }
        Err(error) => {
            tracing::warn!(instance = %instance.id, %error, "cannot drain; removing it anyway");
            failures.push("drain");
        }
    }
    if let Err(error) = admin.remove(address).await {
        // Stopping it now could fail requests the balancer still sends it: keep it running.
        tracing::error!(instance = %instance.id, %error, "cannot remove it from the balancer; not stopping it");
        failures.push("remove");
        return failures;
    }
    match provider.stop(&instance.id).await {
        Ok(()) => tracing::info!(instance = %instance.id, %address, "instance retired"),
        Err(error) => {
            tracing::warn!(instance = %instance.id, %error, "cannot stop it");
            failures.push("stop");
        }
    }
    failures
}

/// Polls the balancer's list until it shows `address` in `state`, at most `timeout`; the
/// error is the last state seen, for the log.
async fn wait_for(
    admin: &AdminClient,
    timeout: Duration,
    address: SocketAddr,
    state: &str,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match admin.list().await {
            Ok(backends) => match backends.iter().find(|b| b.address == address) {
                Some(BackendStatus { state: now, .. }) if now == state => return Ok(()),
                Some(BackendStatus { state: now, .. }) => now.clone(),
                None => "not in the set".to_owned(),
            },
            Err(error) => error.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(STATE_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::Targets;

    fn policy() -> Policy {
        Policy {
            min: 1,
            max: 4,
            max_step: 2,
            tolerance: 0.1,
            scale_down_window: Duration::from_secs(10),
            targets: Targets {
                rps_per_instance: Some(20.0),
                latency_ms: Some(100.0),
                ..Targets::default()
            },
        }
    }

    /// What the balancer's dashboard shows: the winning metric in the reason, each metric
    /// observed with its target among the figures, and what held a change back.
    #[test]
    fn a_reported_event_carries_the_figures_and_the_reason() {
        let mut controller = Controller::new(policy());
        let t0 = Instant::now();
        let busy = Observation {
            rps_per_instance: Some(80.0),
            latency_ms: Some(40.0),
            ..Observation::default()
        };
        let up = controller.decide(t0, 1, &busy);
        let event = super::event("as-test", &up, &busy, &policy());
        assert_eq!(event["direction"], "up");
        assert_eq!(
            (event["current"].as_u64(), event["desired"].as_u64()),
            (Some(1), Some(3))
        );
        assert_eq!(
            event["reason"],
            "rps_per_instance at 4.00x its target; held by the max step"
        );
        let figures = &event["figures"];
        assert_eq!(figures["rps_per_instance"], 80.0);
        assert_eq!(figures["rps_per_instance_target"], 20.0);
        assert_eq!(figures["latency_ms"], 40.0);
        assert_eq!(figures["latency_ms_target"], 100.0);
        assert_eq!(figures["ratio"], 4.0);
        assert!(figures.get("cpu_per_instance").is_none(), "{figures}");

        let idle = Observation {
            rps_per_instance: Some(2.0),
            ..Observation::default()
        };
        let held = controller.decide(t0 + Duration::from_secs(1), 3, &idle);
        let event = super::event("as-test", &held, &idle, &policy());
        assert_eq!(event["direction"], "none");
        assert!(
            event["reason"]
                .as_str()
                .unwrap()
                .ends_with("held by the stabilization window"),
            "{event}"
        );
        let first = Controller::new(policy()).decide(t0, 0, &Observation::default());
        let event = super::event("as-test", &first, &Observation::default(), &policy());
        assert_eq!(event["reason"], "nothing observed; brought up to the min");
    }
}
