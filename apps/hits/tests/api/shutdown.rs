//! SIGTERM semantics: stop accepting, finish what is in flight, lose no acknowledged hit.

use crate::helpers::*;
use crate::hits::metric;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests_then_refuses_new_ones() {
    let (db, redis) = fresh_backends();
    // Each hit holds a simulated worker for 2 s: the stop is asked while all five hold one.
    let app = spawn_app_with(
        &db,
        &redis.url(),
        "sd-1",
        &[
            ("WORK_MS", "2000"),
            ("WORK_CONCURRENCY", "8"),
            ("SHUTDOWN_GRACE_SECS", "30"),
        ],
    )
    .await;
    let addr = app.addr;
    let client = app.client.clone();
    let stop_asked = Arc::new(AtomicBool::new(false));
    let in_flight: Vec<_> = (0..5)
        .map(|_| {
            let (client, stop_asked) = (client.clone(), stop_asked.clone());
            tokio::spawn(async move {
                let status = client
                    .get(format!("http://{addr}/"))
                    .send()
                    .await
                    .map(|r| r.status());
                (status, stop_asked.load(Ordering::SeqCst))
            })
        })
        .collect();
    // The event: the app itself reports the five hits inside, each holding a worker.
    let inside = eventually(Duration::from_secs(30), || async {
        let metrics = app.get("/metrics").await.text().await.unwrap();
        metric(&metrics, "hits_work_in_progress") == 5
    })
    .await;
    assert!(inside, "the five requests never were in the app at once");
    stop_asked.store(true, Ordering::SeqCst);
    app.stop().await.expect("clean stop");
    for request in in_flight {
        let (status, after_stop) = request.await.unwrap();
        assert_eq!(status.expect("in-flight request answered"), 200);
        assert!(after_stop, "answered only after the stop was asked");
    }
    assert_eq!(
        rows_in_hits(&db).await,
        5,
        "all acknowledged hits were committed"
    );
    let refused = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::net::TcpStream::connect(addr),
    )
    .await;
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
