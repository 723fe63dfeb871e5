//! One run through every phase the issue asks for, with loadgen's rate ramps:
//!
//! 1. ramp 5 -> 30 rps, then hold 30: the count rises to 3 (target 10 rps per instance),
//!    then holds still while the load is steady inside the tolerance band;
//! 2. ramp 30 -> 60 rps: the count rises to the max (4), not beyond;
//! 3. ramp 60 -> 3 rps, then hold 3: the count falls to the min (1), the first removal no
//!    sooner than the stabilization window after the load began to fall;
//!
//! and through all of it, not one failed request. The run's chart is written to
//! `target/autoscaler-scaling.svg` (the README shows a copy, `docs/autoscaler.svg`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use autoscaler::controller::{Direction, Policy, Targets};
use autoscaler::metrics::Metrics;
use autoscaler::provider::Provider;
use autoscaler::{Round, Scaler, ScalerConfig};
use clap::Parser;
use tokio::sync::{oneshot, watch};

use crate::harness::{Backing, TestBalancer};
use crate::plot::{Phase, svg};

const TOKEN: &str = "autoscaler-test-token-0123456789";
const TARGET_RPS: f64 = 10.0;
const MIN: u32 = 1;
const MAX: u32 = 4;
const WINDOW: Duration = Duration::from_secs(2);
const RATE_WINDOW: Duration = Duration::from_secs(2);
const TOLERANCE: f64 = 0.2;
/// A hang guard for each wait on the scaler, far above what a phase takes.
const PHASE_GUARD: Duration = Duration::from_secs(60);

/// Runs loadgen's open model with `args` against `url` and returns its report.
async fn load(url: &str, args: &[&str]) -> loadgen::Report {
    let mut all = vec!["loadgen", url, "-q", "-c", "64", "--timeout", "10s"];
    all.extend_from_slice(args);
    let opts = loadgen::Opts::try_parse_from(all).expect("loadgen options");
    let config = loadgen::RunConfig::from_opts(&opts).expect("valid loadgen run");
    loadgen::run_config(config, loadgen::CancellationToken::new())
        .await
        .expect("loadgen ran")
}

/// Waits (on the scaler's published rounds) until the last round satisfies `wanted`.
async fn until(
    rounds: &mut watch::Receiver<VecDeque<Round>>,
    what: &str,
    wanted: impl Fn(&Round) -> bool,
) -> Round {
    let found = tokio::time::timeout(
        PHASE_GUARD,
        rounds.wait_for(|r| r.back().is_some_and(&wanted)),
    )
    .await
    .unwrap_or_else(|_| panic!("hang guard: never {what}"))
    .expect("the scaler runs");
    found.back().cloned().expect("a round")
}

fn now(rounds: &watch::Receiver<VecDeque<Round>>) -> Duration {
    rounds.borrow().back().map_or(Duration::ZERO, |r| r.at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_follow_the_load_without_a_failed_request() {
    let backing = Backing::start(&[
        ("WRITE_CONCURRENCY", "2"),
        ("DATABASE_STARTUP_TIMEOUT_SECS", "20"),
        ("SHUTDOWN_GRACE_SECS", "5"),
    ]);
    let provider = Arc::new(backing.provider("scaling"));

    // The balancer needs one backend to start: the first instance, which the scaler
    // then adopts (it is the provider's).
    let first = provider.start().await.expect("the first instance starts");
    let balancer = TestBalancer::start(first.address, TOKEN).await;
    let url = balancer.url.clone();

    let metrics = Arc::new(Metrics::default());
    let scaler = Scaler::new(
        ScalerConfig {
            interval: Duration::from_millis(200),
            report_as: Some("autoscaler-test".into()),
            // Two seconds, and a 20 % band: a scheduling stall on a busy machine makes
            // loadgen's open model send the late requests in a burst, which a shorter
            // window would read as a load change.
            rate_window: RATE_WINDOW,
            ready_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(10),
            policy: Policy {
                min: MIN,
                max: MAX,
                max_step: 2,
                tolerance: TOLERANCE,
                scale_down_window: WINDOW,
                targets: Targets {
                    rps_per_instance: Some(TARGET_RPS),
                    ..Targets::default()
                },
            },
        },
        provider.clone(),
        balancer.admin(),
        metrics.clone(),
    );
    let mut rounds = scaler.rounds();
    let (stop_scaler, scaler_stopped) = oneshot::channel::<()>();
    let scaler_task = tokio::spawn(scaler.run(async move {
        let _ = scaler_stopped.await;
    }));
    until(&mut rounds, "adopted the first instance", |r| {
        r.instances == 1
    })
    .await;

    let mut phases = Vec::new();
    let mut reports = Vec::new();

    // 1. Up to 3, then steady.
    let start = now(&rounds);
    let run = tokio::spawn({
        let url = url.clone();
        async move { load(&url, &["--rate", "5:30", "--ramp", "6s", "-d", "16s"]).await }
    });
    let reached = until(&mut rounds, "3 instances at 30 rps", |r| r.instances == 3).await;
    reports.push(run.await.expect("loadgen task"));
    let end = now(&rounds);
    phases.push(Phase {
        name: "ramp 5→30 rps, hold".into(),
        from: start.as_secs_f64(),
        to: end.as_secs_f64(),
    });
    // Steady: from the ramp's end (6 s) plus the rate window and a margin (the measured
    // rate has caught up), or the count reaching 3 if later, to the end of the run.
    let steady_from =
        (start + Duration::from_secs(6) + RATE_WINDOW + Duration::from_millis(500)).max(reached.at);
    let steady: Vec<Round> = rounds
        .borrow()
        .iter()
        .filter(|r| r.at > steady_from && r.at <= end)
        .cloned()
        .collect();
    let steady_seconds = steady
        .last()
        .map_or(0.0, |r| (r.at - steady_from).as_secs_f64());
    assert!(
        steady.len() >= 10,
        "the steady phase is long enough to show something: {} rounds",
        steady.len()
    );
    assert!(
        steady
            .iter()
            .all(|r| r.direction == Direction::None && r.instances == 3),
        "no change at steady load inside the tolerance: {steady:#?}"
    );

    // 2. Up to the max, not beyond.
    let start = now(&rounds);
    let run = tokio::spawn({
        let url = url.clone();
        async move { load(&url, &["--rate", "30:60", "--ramp", "3s", "-d", "8s"]).await }
    });
    until(&mut rounds, "the max at 60 rps", |r| r.instances == MAX).await;
    reports.push(run.await.expect("loadgen task"));
    let end = now(&rounds);
    phases.push(Phase {
        name: "ramp 30→60".into(),
        from: start.as_secs_f64(),
        to: end.as_secs_f64(),
    });

    // 3. Down to the min, after the window.
    let start = now(&rounds);
    let run = tokio::spawn({
        let url = url.clone();
        async move { load(&url, &["--rate", "60:3", "--ramp", "4s", "-d", "12s"]).await }
    });
    let bottom = until(&mut rounds, "the min at 3 rps", |r| r.instances == MIN).await;
    reports.push(run.await.expect("loadgen task"));
    let end = now(&rounds);
    phases.push(Phase {
        name: "ramp 60→3, hold".into(),
        from: start.as_secs_f64(),
        to: end.as_secs_f64(),
    });
    let first_down = rounds
        .borrow()
        .iter()
        .find(|r| r.at > start && r.direction == Direction::Down)
        .cloned()
        .expect("a scale-down");
    assert!(
        first_down.at >= start + WINDOW,
        "no removal within the stabilization window after the load began to fall: {first_down:?} (phase from {start:?})"
    );

    // Everything is recorded: stop the scaler (it retires the last instance) and the rest.
    let _ = stop_scaler.send(());
    tokio::time::timeout(PHASE_GUARD, scaler_task)
        .await
        .expect("hang guard: the scaler stops")
        .expect("the scaler task");
    assert!(
        provider.list().await.expect("list").is_empty(),
        "the scaler stopped every instance it ran"
    );
    let events = balancer
        .admin()
        .list_events()
        .await
        .expect("the balancer lists the scaling events");
    balancer.stop().await;

    let all: Vec<Round> = rounds.borrow().iter().cloned().collect();
    let requests: u64 = reports.iter().map(|r| r.requests).sum();
    let failures: u64 = reports.iter().map(|r| r.failures).sum();
    let peak = all.iter().map(|r| r.instances).max().unwrap_or(0);
    let ups = all.iter().filter(|r| r.direction == Direction::Up).count();
    let downs = all
        .iter()
        .filter(|r| r.direction == Direction::Down)
        .count();
    let rendered = metrics.render();

    let chart = svg(
        &all,
        &phases,
        MAX,
        &format!(
            "target {TARGET_RPS} rps/instance ±{}%, min {MIN}, max {MAX}, window {WINDOW:?}: {requests} requests, {failures} failed",
            TOLERANCE * 100.0
        ),
    );
    let out = crate::harness::hits_binary()
        .parent()
        .and_then(|p| p.parent())
        .expect("target/")
        .join("autoscaler-scaling.svg");
    std::fs::write(&out, chart).expect("write the chart");
    eprintln!(
        "figures: {} rounds over {:.1} s, steady phase {steady_seconds:.1} s without a change, {requests} requests, {failures} failed, statuses {:?}, peak {peak} instances, {ups} scale-ups, {downs} scale-downs, min reached at {:.1} s (load began to fall at {:.1} s, first removal at {:.1} s); chart: {}",
        all.len(),
        all.last().map_or(0.0, |r| r.at.as_secs_f64()),
        reports.iter().flat_map(|r| r.status.iter()).fold(
            std::collections::BTreeMap::new(),
            |mut m, (k, v)| {
                *m.entry(k.clone()).or_insert(0u64) += v;
                m
            }
        ),
        bottom.at.as_secs_f64(),
        start.as_secs_f64(),
        first_down.at.as_secs_f64(),
        out.display()
    );

    assert!(requests > 500, "the load ran: {requests} requests");
    assert_eq!(
        failures, 0,
        "not one failed request through the whole run: {reports:#?}"
    );
    assert_eq!(peak, MAX, "never above the max");
    assert!(
        all.iter()
            .all(|r| r.instances >= MIN || r.at == Duration::ZERO),
        "never below the min"
    );
    assert!(
        rendered.contains("autoscaler_decisions_total{direction=\"up\"}")
            && rendered.contains("autoscaler_decisions_total{direction=\"down\"}"),
        "decisions are on /metrics: {rendered}"
    );
    // Every change was reported to the balancer (its dashboard lists them), with the
    // figures behind it; the ring keeps the newest 100, far more than this run makes.
    let reported = |direction: &str| {
        events
            .iter()
            .filter(|e| e["direction"] == direction)
            .collect::<Vec<_>>()
    };
    assert_eq!(reported("up").len(), ups, "{events:#?}");
    assert_eq!(reported("down").len(), downs, "{events:#?}");
    for event in reported("up").into_iter().chain(reported("down")) {
        assert_eq!(event["source"], "autoscaler-test", "{event}");
        assert_ne!(event["current"], event["desired"], "{event}");
        assert!(event["figures"]["rps_per_instance"].is_number(), "{event}");
        assert_eq!(
            event["figures"]["rps_per_instance_target"], TARGET_RPS,
            "{event}"
        );
        assert!(
            event["reason"]
                .as_str()
                .is_some_and(|r| r.contains("rps_per_instance at")),
            "{event}"
        );
    }
    // A scale-down held by the window was reported once when the hold began.
    assert!(
        events.iter().any(|e| e["reason"]
            .as_str()
            .is_some_and(|r| r.contains("stabilization window"))),
        "{events:#?}"
    );
}
