use std::time::Duration;

use crate::helpers::{Behavior, instance, run_loadgen, spawn_server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_grouped_by_instance_header() {
    let a = spawn_server(instance("app-a")).await;
    let b = spawn_server(instance("app-b")).await;
    let c = spawn_server(instance("app-c")).await;
    let (ua, ub, uc) = (a.url(), b.url(), c.url());
    let report = run_loadgen(&["-c", "5", "-n", "300", &ua, &ub, &uc]).await;
    assert_eq!(report.groups.len(), 3, "{:?}", report.groups);
    for name in ["app-a", "app-b", "app-c"] {
        assert_eq!(
            report.groups.get(name),
            Some(&100),
            "{name}: {:?}",
            report.groups
        );
    }
    let shares: f64 = report.instances.iter().map(|i| i.share).sum();
    assert!((shares - 1.0).abs() < 1e-9);
    assert!(
        report
            .instances
            .iter()
            .all(|i| i.p99_ms >= i.p50_ms && i.errors == 0)
    );
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
