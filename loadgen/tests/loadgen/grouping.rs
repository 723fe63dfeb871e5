use std::time::Duration;

use crate::helpers::{Behavior, instance, run_loadgen, spawn_server};

/// The slow instance's answers take this long at the least.
const SLOW: Duration = Duration::from_millis(400);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_grouped_by_instance_header() {
    let a = spawn_server(instance("app-a")).await;
    let b = spawn_server(instance("app-b")).await;
    let slow = spawn_server(Behavior::Respond {
        headers: vec![("X-Instance-Id".to_owned(), "app-slow".to_owned())],
        delay: SLOW,
    })
    .await;
    let (ua, ub, us) = (a.url(), b.url(), slow.url());
    let report = run_loadgen(&["-c", "5", "-n", "30", &ua, &ub, &us]).await;
    assert_eq!(report.groups.len(), 3, "{:?}", report.groups);
    for name in ["app-a", "app-b", "app-slow"] {
        assert_eq!(
            report.groups.get(name),
            Some(&10),
            "{name}: {:?}",
            report.groups
        );
    }
    let shares: f64 = report.instances.iter().map(|i| i.share).sum();
    assert!((shares - 1.0).abs() < 1e-9);
    assert!(report.instances.iter().all(|i| i.errors == 0));
    // Each instance's latency is its own: the slow one's median is above its delay (a
    // certainty), the fast ones' far below it (400 ms for a loopback answer with no delay).
    let slow_ms = SLOW.as_secs_f64() * 1e3;
    for instance in &report.instances {
        if instance.name == "app-slow" {
            assert!(instance.p50_ms >= slow_ms, "{instance:?}");
        } else {
            assert!(instance.p50_ms < slow_ms, "{instance:?}");
        }
    }
    assert!(report.to_string().contains("app-b"));
}

#[tokio::test]
async fn group_by_names_another_header_and_missing_ones_are_counted() {
    let zoned = spawn_server(Behavior::Respond {
        headers: vec![("X-Zone".to_owned(), "eu-1".to_owned())],
        delay: Duration::ZERO,
    })
    .await;
    let bare = spawn_server(instance("no-zone-here")).await;
    let (uz, ub) = (zoned.url(), bare.url());
    let report = run_loadgen(&["--group-by", "x-zone", "-c", "2", "-n", "40", &uz, &ub]).await;
    assert_eq!(report.group_by, "x-zone");
    assert_eq!(report.groups.get("eu-1"), Some(&20));
    assert_eq!(report.groups.get("(missing)"), Some(&20));
}
