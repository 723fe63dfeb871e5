//! The app under churn (issue 15): counters of instances gone for an hour are compacted, so
//! the page reads a bounded number of counter rows however many instance ids ever existed,
//! and every figure stays exact, with writers running while compaction runs.

use crate::helpers::*;
use hits::store::{CompactPolicy, LIVE_QUERY, RETAIN_MINUTES, Store, WINDOW_QUERY};
use sqlx::Connection;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::task::JoinSet;

const PAST_IDS: i64 = 10_000;
/// Hits of the past instances: 6 per id, on 3 shards (writers) each.
const PAST_HITS: i64 = 60_000;

async fn store_for(db: &str, redis_url: &str) -> Store {
    let config = hits::Config::from_vars(vars(db, redis_url, "compactor", &[])).unwrap();
    Store::connect(&config.database).await.expect("store")
}

/// Rows in `hits` and the counters, seeded as 10,000 instances that served between 2 and
/// about 19 hours ago (4 of each 5 hits) or more than 26 hours ago (the rest: past the
/// 24-hour window and the retention). The counters are derived from the very rows inserted,
/// so `total == count(*) FROM hits` holds before and after.
async fn seed_past_instances(conn: &mut sqlx::PgConnection) {
    sqlx::query(
        "WITH seed AS MATERIALIZED (
             SELECT 'past-' || lpad((g % 10000)::text, 5, '0') AS instance_id,
                    (g % 3)::int2 AS shard,
                    CASE WHEN g % 5 = 0
                         THEN now() - interval '26 hours' - make_interval(mins => g % 300)
                         ELSE now() - interval '2 hours' - make_interval(mins => g % 1000)
                    END AS created_at
               FROM generate_series(1, $1::int4) AS g
         ), h AS (
             INSERT INTO hits (instance_id, created_at) SELECT instance_id, created_at FROM seed
         ), t AS (
             INSERT INTO hit_totals (instance_id, shard, hits)
             SELECT instance_id, shard, count(*) FROM seed GROUP BY 1, 2
         )
         INSERT INTO hit_minutes (minute, instance_id, shard, hits)
         SELECT date_trunc('minute', created_at), instance_id, shard, count(*) FROM seed GROUP BY 1, 2, 3",
    )
    .bind(PAST_HITS as i32)
    .execute(&mut *conn)
    .await
    .expect("seed");
    sqlx::query("ANALYZE").execute(&mut *conn).await.unwrap();
}

async fn count(conn: &mut sqlx::PgConnection, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&mut *conn).await.unwrap();
    n
}

/// What EXPLAIN ANALYZE says a statement read: rows out of the counter tables' scans (times
/// loops) plus rows their filters removed, and the shared buffers of the whole statement.
#[derive(Debug)]
struct Reads {
    counter_rows: u64,
    buffers: u64,
}

async fn explain(conn: &mut sqlx::PgConnection, sql: &str) -> Reads {
    let lines: Vec<(String,)> = sqlx::query_as(&format!("EXPLAIN (ANALYZE, BUFFERS) {sql}"))
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    if std::env::var_os("SHOW_PLANS").is_some() {
        for (line,) in &lines {
            eprintln!("{line}");
        }
    }
    let number_after = |line: &str, key: &str| -> u64 {
        line.split(key)
            .nth(1)
            .map(|rest| {
                rest.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .and_then(|digits| digits.parse().ok())
            .unwrap_or(0)
    };
    let mut reads = Reads {
        counter_rows: 0,
        buffers: 0,
    };
    let mut in_counter_scan = false;
    for (line,) in &lines {
        if line.contains("(actual") {
            in_counter_scan = [
                " on hit_totals ",
                " on hit_minutes ",
                " on hit_totals_retired ",
            ]
            .iter()
            .any(|table| line.contains(table));
            if in_counter_scan {
                let actual = line.split("(actual").nth(1).unwrap_or("");
                reads.counter_rows +=
                    number_after(actual, "rows=") * number_after(actual, "loops=").max(1);
            }
        } else if in_counter_scan && line.contains("Rows Removed by Filter:") {
            reads.counter_rows += number_after(line, "Rows Removed by Filter: ");
        }
        // The first Buffers line belongs to the top node: the whole statement.
        if reads.buffers == 0 && line.trim_start().starts_with("Buffers:") {
            reads.buffers = number_after(line, "hit=") + number_after(line, "read=");
        }
    }
    reads
}

/// The live-minute start the app would use now, as the window query's parameter.
async fn window_sql(conn: &mut sqlx::PgConnection) -> (i64, String) {
    let live_from = count(
        conn,
        "SELECT extract(epoch FROM date_trunc('minute', now()) - interval '1 minute')::int8",
    )
    .await;
    (
        live_from,
        WINDOW_QUERY.replace("$1", &format!("{live_from}")),
    )
}

fn figure(page: &str, id: &str) -> i64 {
    let start = page
        .find(&format!("<div id=\"{id}\">"))
        .unwrap_or_else(|| panic!("{id} in {page}"))
        + id.len()
        + 11;
    page[start..]
        .split('<')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("{id} is a number in {page}"))
}

/// The summed row of earlier instances: (label, hits).
fn others_row(page: &str) -> (String, i64) {
    let row = page
        .split("<tr class=\"others\"><td>")
        .nth(1)
        .unwrap_or_else(|| panic!("an others row in {page}"));
    let label = row.split("</td>").next().unwrap().to_owned();
    let hits = row
        .split("<td class=\"n\">")
        .nth(1)
        .and_then(|n| n.split('<').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("hits in the others row of {page}"));
    (label, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_past_instances_are_compacted_and_the_page_reads_a_bounded_number_of_rows() {
    let (db, redis) = fresh_backends();
    let app = spawn_app(&db, &redis.url(), "churn-now").await;
    let store = store_for(&db, &redis.url()).await;
    let mut conn = sqlx::PgConnection::connect(&db).await.unwrap();
    seed_past_instances(&mut conn).await;
    let in_window = count(
        &mut conn,
        "SELECT count(*) FROM hits WHERE created_at >= now() - interval '23 hours'",
    )
    .await;
    assert_eq!(in_window, PAST_HITS * 4 / 5);

    // Before compaction: every page sums every instance id that ever existed.
    let page = app.get("/").await.text().await.unwrap();
    assert_eq!(figure(&page, "total"), PAST_HITS + 1, "{page}");
    assert_eq!(figure(&page, "last24h"), in_window + 1, "{page}");
    let others_before = others_row(&page);
    assert_eq!(
        others_before,
        (
            "10000 earlier instances <small>(no hit in the last 10 minutes)</small>".to_owned(),
            PAST_HITS
        )
    );
    let live_before = explain(&mut conn, LIVE_QUERY).await;
    let (live_from, window) = window_sql(&mut conn).await;
    let window_before = explain(&mut conn, &window).await;
    assert!(
        live_before.counter_rows >= (PAST_IDS * 3) as u64,
        "before compaction the page reads every instance's rows: {live_before:?}"
    );

    let done = store
        .compact(CompactPolicy::default())
        .await
        .unwrap()
        .expect("nobody else holds the compaction lock");
    assert_eq!(done.instances, PAST_IDS, "{done:?}");
    assert_eq!(done.total_rows, PAST_IDS * 3, "{done:?}");
    assert_eq!(done.hits, PAST_HITS, "{done:?}");
    let expired = count(
        &mut conn,
        "SELECT count(*) FROM (SELECT DISTINCT date_trunc('minute', created_at), instance_id
                                 FROM hits WHERE created_at < now() - interval '25 hours') x",
    )
    .await;
    assert!(
        done.expired_rows > 0 && done.expired_rows <= expired * 3,
        "buckets past the retention are deleted: {done:?}"
    );
    assert_eq!(
        count(&mut conn, "SELECT count(*) FROM hit_minutes WHERE minute < date_trunc('minute', now()) - interval '25 hours'").await,
        0
    );

    // After: the same figures, from a bounded number of rows.
    let page = app.get("/").await.text().await.unwrap();
    assert_eq!(figure(&page, "total"), PAST_HITS + 2, "{page}");
    assert_eq!(
        figure(&page, "total"),
        rows_in_hits(&db).await,
        "the total is the number of rows in hits"
    );
    assert_eq!(figure(&page, "last24h"), in_window + 2, "{page}");
    assert_eq!(
        others_row(&page),
        others_before,
        "the same earlier-instances row"
    );
    assert!(
        page.contains("<tr class=\"mine\"><td><code>churn-now</code></td><td class=\"n\">2</td>"),
        "{page}"
    );
    assert_eq!(
        store.window_before(live_from).await.unwrap(),
        in_window,
        "the window from the folded buckets (not from the cache) is exact"
    );
    let live_after = explain(&mut conn, LIVE_QUERY).await;
    let window_after = explain(&mut conn, &window).await;
    // Rows left: this instance's buckets of the last 10 minutes and totals (a few per
    // writer) and the retired row; the window: one folded bucket per old minute (1,000 were
    // seeded) plus the last hour's per-instance buckets.
    assert!(
        live_after.counter_rows <= 50,
        "the page reads a bounded number of counter rows after compaction: {live_after:?} (before: {live_before:?})"
    );
    assert!(
        window_after.counter_rows <= 1_000 + 60 * 4,
        "the window reads one bucket per old minute: {window_after:?} (before: {window_before:?})"
    );
    assert!(
        window_before.counter_rows >= (PAST_HITS * 4 / 5 / 2) as u64,
        "{window_before:?}"
    );
    // The deleted rows' pages are read until (auto)vacuum frees them: what the next
    // autovacuum round does, as nearly all the rows of both tables were just deleted.
    sqlx::query("VACUUM hit_totals, hit_minutes")
        .execute(&mut conn)
        .await
        .unwrap();
    let live_vacuumed = explain(&mut conn, LIVE_QUERY).await;
    let window_vacuumed = explain(&mut conn, &window).await;
    eprintln!(
        "page statement, counter rows read: {} before, {} after compaction; buffers {} -> {} \
         ({} after vacuum); window statement: rows {} -> {}, buffers {} -> {} ({} after vacuum)",
        live_before.counter_rows,
        live_after.counter_rows,
        live_before.buffers,
        live_after.buffers,
        live_vacuumed.buffers,
        window_before.counter_rows,
        window_after.counter_rows,
        window_before.buffers,
        window_after.buffers,
        window_vacuumed.buffers,
    );

    // A second pass finds nothing more to fold.
    let again = store
        .compact(CompactPolicy::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.instances, again.hits, again.minute_rows), (0, 0, 0));
}

/// An instance id that comes back after it was retired counts from its return, its earlier
/// hits stay in the summed row, and retiring it again neither loses nor double-counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_comes_back_after_compaction_keeps_exact_counts() {
    let (db, redis) = fresh_backends();
    let store = store_for(&db, &redis.url()).await;
    let mut conn = sqlx::PgConnection::connect(&db).await.unwrap();
    sqlx::query(
        "WITH h AS (INSERT INTO hits (instance_id, created_at)
                    SELECT 'back-1', now() - interval '2 hours' FROM generate_series(1, 5))
         , t AS (INSERT INTO hit_totals (instance_id, shard, hits) VALUES ('back-1', 0, 5))
         INSERT INTO hit_minutes (minute, instance_id, shard, hits)
         VALUES (date_trunc('minute', now() - interval '2 hours'), 'back-1', 0, 5)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let done = store
        .compact(CompactPolicy::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((done.instances, done.hits), (1, 5));

    let app = spawn_app(&db, &redis.url(), "back-1").await;
    app.get("/").await;
    let page = app.get("/").await.text().await.unwrap();
    assert_eq!(figure(&page, "total"), 7, "{page}");
    assert!(
        page.contains("<tr class=\"mine\"><td><code>back-1</code></td><td class=\"n\">2</td>"),
        "counts from its return: {page}"
    );
    assert_eq!(
        others_row(&page),
        (
            "1 earlier instance <small>(no hit in the last 10 minutes)</small>".to_owned(),
            5
        )
    );
    let stats = app.stats().await;
    assert_eq!(stats.by_instance, [("back-1".to_owned(), 2)].into());
    assert_eq!(stats.total, 7);

    // Active: the default policy leaves it alone.
    let done = store
        .compact(CompactPolicy::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((done.instances, done.hits), (0, 0));
    // Retired again (a policy that retires everyone): one distinct id, every hit once.
    let done = store
        .compact(CompactPolicy {
            retire_after_minutes: -1,
            retain_minutes: RETAIN_MINUTES,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!((done.instances, done.hits), (1, 2));
    assert_eq!(
        count(&mut conn, "SELECT instances FROM hit_totals_retired").await,
        1
    );
    let stats = app.stats().await;
    assert_eq!(stats.total, 7);
    assert_eq!(stats.total, rows_in_hits(&db).await);
}

/// Writers of two instances commit hits while compaction folds their very rows (a policy
/// that retires every instance and folds every minute, the live ones included) over and
/// over: every acknowledged hit is counted exactly once in the totals and in the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_hit_is_lost_or_counted_twice_while_compaction_runs_under_writes() {
    let (db, redis) = fresh_backends();
    let redis_url = redis.url();
    let (a, b) = tokio::join!(
        spawn_app(&db, &redis_url, "race-a"),
        spawn_app(&db, &redis_url, "race-b"),
    );
    let apps = Arc::new([a, b]);
    let store = store_for(&db, &redis_url).await;
    const HITS: usize = 600;
    const IN_FLIGHT: usize = 16;

    let writing = Arc::new(AtomicBool::new(true));
    let compactor = {
        let writing = writing.clone();
        let store = store.clone();
        tokio::spawn(async move {
            let everything = CompactPolicy {
                retire_after_minutes: -1,
                retain_minutes: RETAIN_MINUTES,
            };
            let (mut passes, mut folding) = (0u32, 0u32);
            while writing.load(Ordering::Relaxed) {
                let done = store.compact(everything).await.expect("compaction");
                if let Some(done) = done {
                    passes += 1;
                    if done.total_rows > 0 && done.minute_rows > 0 {
                        folding += 1;
                    }
                }
            }
            (passes, folding)
        })
    };

    let mut tasks = JoinSet::new();
    for worker in 0..IN_FLIGHT {
        let apps = apps.clone();
        tasks.spawn(async move {
            let mut i = worker;
            let mut ok = 0;
            while i < HITS {
                let response = apps[i % 2].get("/").await;
                assert_eq!(response.status(), 200, "request {i}");
                ok += 1;
                i += IN_FLIGHT;
            }
            ok
        });
    }
    let mut answered = 0;
    while let Some(ok) = tasks.join_next().await {
        answered += ok.expect("worker");
    }
    writing.store(false, Ordering::Relaxed);
    let (passes, folding) = tokio::time::timeout(Duration::from_secs(30), compactor)
        .await
        .expect("the compaction loop ends")
        .unwrap();
    assert_eq!(answered, HITS);
    assert!(
        folding > 0,
        "compaction folded live rows while writers ran ({passes} passes)"
    );

    let mut conn = sqlx::PgConnection::connect(&db).await.unwrap();
    let rows = rows_in_hits(&db).await;
    assert_eq!(rows, HITS as i64);
    assert_eq!(
        count(
            &mut conn,
            "SELECT (SELECT coalesce(sum(hits), 0) FROM hit_totals)::int8
                  + (SELECT hits FROM hit_totals_retired)"
        )
        .await,
        rows,
        "totals: live rows plus the retired row"
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT coalesce(sum(hits), 0)::int8 FROM hit_minutes"
        )
        .await,
        rows,
        "minute buckets"
    );
    for app in apps.iter() {
        let stats = app.stats().await;
        assert_eq!(stats.total, rows, "{stats:?}");
    }
    // The window, computed from PostgreSQL now (the live minutes plus the folded ones).
    assert_eq!(
        count(
            &mut conn,
            "SELECT coalesce(sum(hits), 0)::int8 FROM hit_minutes
              WHERE minute >= date_trunc('minute', now()) - interval '1439 minutes'"
        )
        .await,
        rows
    );
    assert_eq!(
        count(&mut conn, "SELECT instances FROM hit_totals_retired").await,
        2,
        "two distinct ids, however often folded"
    );
}

/// The app compacts by itself: a pass runs at start-up, before the app serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_compacts_at_start_up() {
    let (db, redis) = fresh_backends();
    let mut conn = sqlx::PgConnection::connect(&db).await.unwrap();
    // The tables exist once an app has migrated; with compaction off it folds nothing.
    let first = spawn_app_with(
        &db,
        &redis.url(),
        "first",
        &[("COMPACT_INTERVAL_SECS", "0")],
    )
    .await;
    seed_past_instances(&mut conn).await;
    assert_eq!(
        count(&mut conn, "SELECT instances FROM hit_totals_retired").await,
        0
    );
    first.stop().await.unwrap();

    let app = spawn_app(&db, &redis.url(), "second").await;
    let json: serde_json::Value = app.get("/api/hits").await.json().await.unwrap();
    assert_eq!(json["retired_instances"], PAST_IDS, "{json}");
    assert_eq!(json["retired_hits"], PAST_HITS, "{json}");
    assert_eq!(json["total"], PAST_HITS, "{json}");
    assert_eq!(json["by_instance"], serde_json::json!({}), "{json}");
    assert_eq!(count(&mut conn, "SELECT count(*) FROM hit_totals").await, 0);
}
