//! Two instances on one database under concurrent load: exact totals, exact per-instance
//! counts, and migrations that tolerate instances starting together.

use crate::helpers::*;
use std::sync::Arc;
use tokio::task::JoinSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_under_concurrent_load_give_exact_counts() {
    let (db, redis) = fresh_backends();
    // Both start at once against an empty database: the migrations must run exactly once.
    let redis_url = redis.url();
    let (a, b) = tokio::join!(
        spawn_app(&db, &redis_url, "app-a"),
        spawn_app(&db, &redis_url, "app-b"),
    );
    let apps = Arc::new([a, b]);
    const PER_APP: usize = 300;
    const IN_FLIGHT: usize = 32;

    let mut tasks = JoinSet::new();
    for worker in 0..IN_FLIGHT {
        let apps = apps.clone();
        tasks.spawn(async move {
            let mut ok = [0usize; 2];
            let mut i = worker;
            while i < PER_APP * 2 {
                let which = i % 2;
                let response = apps[which].get("/").await;
                assert_eq!(response.status(), 200, "request {i}");
                assert_eq!(
                    response.headers()["x-instance-id"],
                    apps[which].instance_id.as_str()
                );
                ok[which] += 1;
                i += IN_FLIGHT;
            }
            ok
        });
    }
    let mut answered = [0usize; 2];
    while let Some(result) = tasks.join_next().await {
        let ok = result.expect("worker");
        answered[0] += ok[0];
        answered[1] += ok[1];
    }
    assert_eq!(answered, [PER_APP, PER_APP]);

    for app in apps.iter() {
        let stats = app.stats().await;
        assert_eq!(stats.total, (PER_APP * 2) as i64, "{stats:?}");
        assert_eq!(stats.last_24h, (PER_APP * 2) as i64, "{stats:?}");
        assert_eq!(stats.by_instance["app-a"], PER_APP as i64);
        assert_eq!(stats.by_instance["app-b"], PER_APP as i64);
    }
    assert_eq!(rows_in_hits(&db).await, (PER_APP * 2) as i64);

    // Concurrent hits were gathered into fewer transactions than hits.
    let metrics = apps[0].get("/metrics").await.text().await.unwrap();
    let batches = crate::hits::metric(&metrics, "hits_write_batches_total");
    assert!(
        batches < PER_APP as u64,
        "expected group commits, got {batches} batches for {PER_APP} hits"
    );
}
