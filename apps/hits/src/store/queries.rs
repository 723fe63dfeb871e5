//! The SQL of the store, in one place.

use super::LiveCounts;

/// Reads the live counters: the two live minutes, the instances active in the last
/// `active_minutes!()` minutes (one range scan of `hit_minutes`' primary key, at most
/// minutes x instances x writers rows) and the per-instance totals.
macro_rules! live_select {
    () => {
        concat!(
            "SELECT a.live_from, a.recent, a.active,
                    coalesce(b.ids, '{}'::text[]) AS ids,
                    coalesce(b.counts, '{}'::int8[]) AS counts
             FROM (SELECT extract(epoch FROM date_trunc('minute', now()) - interval '1 minute')::int8 AS live_from,
                          coalesce(sum(hits) FILTER (
                              WHERE minute >= date_trunc('minute', now()) - interval '1 minute'), 0)::int8 AS recent,
                          coalesce(array_agg(DISTINCT instance_id), '{}'::text[]) AS active
                     FROM hit_minutes
                    WHERE minute >= date_trunc('minute', now()) - interval '",
            super::active_minutes!(),
            " minutes') a,
                  (SELECT array_agg(instance_id ORDER BY instance_id) AS ids,
                          array_agg(n ORDER BY instance_id) AS counts
                     FROM (SELECT instance_id, sum(hits)::int8 AS n FROM hit_totals GROUP BY instance_id) t) b"
        )
    };
}

pub(super) const LIVE: &str = live_select!();

/// One batch: $1 instance, $2 shard, $3 number of hits. All parts of a statement see the same
/// snapshot, so the SELECT reads the counters as they were before this batch; the caller adds
/// the batch itself.
pub(super) const RECORD: &str = concat!(
    "WITH inserted AS (
        INSERT INTO hits (instance_id) SELECT $1 FROM generate_series(1, $3::int4)
     ), minute_bucket AS (
        INSERT INTO hit_minutes (minute, instance_id, shard, hits)
        VALUES (date_trunc('minute', now()), $1, $2, $3)
        ON CONFLICT (minute, instance_id, shard) DO UPDATE SET hits = hit_minutes.hits + EXCLUDED.hits
     ), total AS (
        INSERT INTO hit_totals (instance_id, shard, hits) VALUES ($1, $2, $3)
        ON CONFLICT (instance_id, shard) DO UPDATE SET hits = hit_totals.hits + EXCLUDED.hits
     ) ",
    live_select!()
);

pub(super) const DEPLOYMENT: &str = "SELECT id::text FROM deployment";

/// $1: the first live minute as Unix seconds.
pub(super) const WINDOW_BEFORE: &str = "SELECT coalesce(sum(hits), 0)::int8 FROM hit_minutes
     WHERE minute >= to_timestamp($1) - interval '1438 minutes' AND minute < to_timestamp($1)";

#[derive(sqlx::FromRow)]
pub(super) struct LiveRow {
    live_from: i64,
    recent: i64,
    active: Vec<String>,
    ids: Vec<String>,
    counts: Vec<i64>,
}

impl LiveRow {
    pub(super) fn into_counts(self) -> LiveCounts {
        LiveCounts {
            live_from: self.live_from,
            recent: self.recent,
            by_instance: self.ids.into_iter().zip(self.counts).collect(),
            active: self.active.into_iter().collect(),
        }
    }
}
