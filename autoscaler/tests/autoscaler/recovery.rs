//! An instance that dies by itself (killed, crashed) leaves the balancer at the next round,
//! and the count is brought back to `--min` with a new, healthy instance.

use std::sync::Arc;
use std::time::Duration;

use autoscaler::controller::{Policy, Targets};
use autoscaler::metrics::Metrics;
use autoscaler::provider::Provider;
use autoscaler::{Scaler, ScalerConfig};

use crate::harness::{Backing, TestBalancer};

const TOKEN: &str = "autoscaler-recovery-token-0123456789";
const GUARD: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_instance_is_removed_and_replaced() {
    let backing = Backing::start(&[]);
    let provider = Arc::new(backing.provider("recovery"));
    let first = provider.start().await.expect("the first instance starts");
    let balancer = TestBalancer::start(first.address, TOKEN).await;
    let admin = balancer.admin();

    let scaler = Scaler::new(
        ScalerConfig {
            interval: Duration::from_millis(200),
            report_as: None,
            rate_window: Duration::from_secs(1),
            ready_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(10),
            policy: Policy {
                min: 2,
                max: 2,
                max_step: 1,
                tolerance: 0.1,
                scale_down_window: Duration::from_secs(2),
                targets: Targets {
                    rps_per_instance: Some(1000.0),
                    ..Targets::default()
                },
            },
        },
        provider.clone(),
        admin.clone(),
        Arc::new(Metrics::default()),
    );
    let mut rounds = scaler.rounds();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let scaler_task = tokio::spawn(scaler.run(async move {
        let _ = stopped.await;
    }));
    tokio::time::timeout(
        GUARD,
        rounds.wait_for(|r| r.back().is_some_and(|r| r.instances == 2)),
    )
    .await
    .expect("hang guard: two instances")
    .expect("the scaler runs");

    // SIGKILL one: no drain, no goodbye.
    let killed_after = rounds.borrow().back().expect("a round").at;
    let victim = provider.list().await.expect("list").remove(0);
    let pid = provider.pid(&victim.id).expect("running");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("SIGKILL");

    // A round sees one in service, and ends with two again.
    let replaced = tokio::time::timeout(
        GUARD,
        rounds.wait_for(|r| {
            r.back()
                .is_some_and(|r| r.at > killed_after && r.current == 1 && r.instances == 2)
        }),
    )
    .await
    .expect("hang guard: the dead instance is replaced")
    .expect("the scaler runs")
    .back()
    .cloned()
    .expect("a round");
    let backends = admin.list().await.expect("list");
    assert!(
        backends.iter().all(|b| b.address != victim.address),
        "the dead instance left the balancer: {backends:?} ({replaced:?})"
    );
    assert_eq!(
        backends.iter().filter(|b| b.state == "healthy").count(),
        2,
        "{backends:?}"
    );

    let _ = stop.send(());
    tokio::time::timeout(GUARD, scaler_task)
        .await
        .expect("hang guard: the scaler stops")
        .expect("the scaler task");
    assert!(provider.list().await.expect("list").is_empty());
    balancer.stop().await;
}
