//! The page lists the instances that served recently and sums all the others in one row,
//! so a stack scaled up and down many times still shows a short table that adds up.

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_without_recent_hits_are_summed_in_one_row() {
    use sqlx::Connection;
    let (db, redis) = fresh_backends();
    let app = spawn_app(&db, &redis.url(), "web-now").await;

    // Counter rows as earlier instances left them: two served two hours ago, one three
    // minutes ago (still active). `hits` itself is never read by the page.
    let mut conn = sqlx::PgConnection::connect(&db).await.unwrap();
    for (instance, minutes_ago, hits) in [("gone-1", 120, 3), ("gone-2", 125, 4), ("web-2", 3, 5)] {
        sqlx::query(
            "INSERT INTO hit_minutes (minute, instance_id, shard, hits)
             VALUES (date_trunc('minute', now()) - make_interval(mins => $2), $1, 0, $3)",
        )
        .bind(instance)
        .bind(minutes_ago)
        .bind(hits as i64)
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query("INSERT INTO hit_totals (instance_id, shard, hits) VALUES ($1, 0, $2)")
            .bind(instance)
            .bind(hits as i64)
            .execute(&mut conn)
            .await
            .unwrap();
    }

    let response = app.get("/").await;
    assert_eq!(response.status(), 200);
    let page = response.text().await.unwrap();
    assert!(page.contains("<div id=\"total\">13<"), "{page}");
    let listed = page.find("<td><code>web-2</code></td><td class=\"n\">5</td>");
    let mine = page.find("<tr class=\"mine\"><td><code>web-now</code></td><td class=\"n\">1</td>");
    let others = page.find(
        "<tr class=\"others\"><td>2 earlier instances <small>(no hit in the last 10 minutes)</small></td><td class=\"n\">7</td>",
    );
    assert!(
        listed.is_some() && mine.is_some() && others.is_some(),
        "web-2 (5 hits), web-now (1) and one row of 7 hits for the earlier two: {page}"
    );
    assert!(
        listed < mine && mine < others,
        "busiest active instance first, the summed row last: {page}"
    );
    assert!(
        !page.contains("gone-1") && !page.contains("gone-2"),
        "{page}"
    );

    // The JSON keeps every instance (backwards compatible) and says which are active.
    let json: serde_json::Value = app.get("/api/hits").await.json().await.unwrap();
    assert_eq!(
        json["by_instance"],
        serde_json::json!({"gone-1": 3, "gone-2": 4, "web-2": 5, "web-now": 1})
    );
    assert_eq!(
        json["active_instances"],
        serde_json::json!(["web-2", "web-now"])
    );
    assert_eq!(json["total"], 13);
}
