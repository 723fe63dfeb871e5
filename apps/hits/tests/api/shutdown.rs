//! SIGTERM semantics: stop accepting, finish what is in flight, lose no acknowledged hit.

use crate::helpers::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests_then_refuses_new_ones() {
    let (db, redis) = fresh_backends();
    // Each hit holds a simulated worker for 400 ms, so requests are surely in flight.
    let app = spawn_app_with(
        &db,
        &redis.url(),
        "sd-1",
        &[("WORK_MS", "400"), ("WORK_CONCURRENCY", "8")],
    )
    .await;
    let addr = app.addr;
    let client = app.client.clone();
    let in_flight: Vec<_> = (0..5)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .get(format!("http://{addr}/"))
                    .send()
                    .await
                    .map(|r| r.status())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    app.stop().await.expect("clean stop");
    for request in in_flight {
        let status = request.await.unwrap().expect("in-flight request answered");
        assert_eq!(status, 200);
    }
    assert_eq!(
        rows_in_hits(&db).await,
        5,
        "all acknowledged hits were committed"
    );
    let refused =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await;
    assert!(
        matches!(refused, Ok(Err(_))),
        "no longer accepting: {refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_work_limits_an_instance_capacity() {
    let (db, redis) = fresh_backends();
    let app = spawn_app_with(
        &db,
        &redis.url(),
        "w-1",
        &[("WORK_MS", "100"), ("WORK_CONCURRENCY", "1")],
    )
    .await;
    let started = std::time::Instant::now();
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (client, url) = (app.client.clone(), app.url("/"));
        requests.spawn(async move { client.get(url).send().await.map(|r| r.status()) });
    }
    while let Some(status) = requests.join_next().await {
        assert_eq!(status.unwrap().unwrap(), 200);
    }
    // One worker, 100 ms each: four hits cannot all be answered in less than 400 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
}
