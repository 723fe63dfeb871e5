//! The SQL of the store, in one place.

use super::{LiveCounts, Retired};

/// Reads the live counters: the two live minutes, the instances active in the last
/// `active_minutes!()` minutes (one range scan of `hit_minutes`' primary key, at most
/// minutes x instances x writers rows), the per-instance totals of the instances not yet
/// retired, and the one row that compaction folds retired instances into. After compaction
/// `hit_totals` holds the rows of the instances seen in the last `retire_after` minutes only,
/// so the rows read do not grow with the instance ids that ever existed.
macro_rules! live_select {
    () => {
        concat!(
            "SELECT a.live_from, a.recent, a.active, r.retired_instances, r.retired_hits,
                    coalesce(b.ids, '{}'::text[]) AS ids,
                    coalesce(b.counts, '{}'::int8[]) AS counts
             FROM (SELECT extract(epoch FROM date_trunc('minute', now()) - interval '1 minute')::int8 AS live_from,
                          coalesce(sum(hits) FILTER (
                              WHERE minute >= date_trunc('minute', now()) - interval '1 minute'), 0)::int8 AS recent,
                          coalesce(array_agg(DISTINCT instance_id) FILTER (WHERE shard >= 0), '{}'::text[]) AS active
                     FROM hit_minutes
                    WHERE minute >= date_trunc('minute', now()) - interval '",
            super::active_minutes!(),
            " minutes') a,
                  (SELECT array_agg(instance_id ORDER BY instance_id) AS ids,
                          array_agg(n ORDER BY instance_id) AS counts
                     FROM (SELECT instance_id, sum(hits)::int8 AS n FROM hit_totals GROUP BY instance_id) t) b,
                  (SELECT coalesce(sum(instances), 0)::int8 AS retired_instances,
                          coalesce(sum(hits), 0)::int8 AS retired_hits
                     FROM hit_totals_retired) r"
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

/// Compaction takes this transaction-scoped advisory lock (`pg_try_advisory_xact_lock`), so
/// one instance at a time compacts; the others skip their turn.
pub(super) const COMPACTION_LOCK: i64 = 0x6869_7473_636d_7074; // "hitscmpt"

/// Bounds each compaction statement: it runs beside the requests, on the same pool.
pub(super) const COMPACTION_TIMEOUT: &str = "SET LOCAL statement_timeout = '10s'";

pub(super) const TRY_LOCK: &str = "SELECT pg_try_advisory_xact_lock($1)";

/// Folds the `hit_totals` rows of every instance with no `hit_minutes` bucket in the last $1
/// minutes into `hit_totals_retired`, in one statement: the rows deleted and the sum added are
/// the same rows, so no hit is lost or counted twice. A writer that bumps one of these rows
/// meanwhile either commits first (the DELETE then takes the row's newest version, re-checked,
/// with its hits) or waits for the DELETE and then inserts a fresh row: either way each hit is
/// in exactly one place. Returns (instances, rows, hits) folded.
pub(super) const FOLD_TOTALS: &str = "WITH recent AS (
        SELECT DISTINCT instance_id FROM hit_minutes
         WHERE minute >= date_trunc('minute', now()) - make_interval(mins => $1)
     ), gone AS (
        DELETE FROM hit_totals WHERE instance_id NOT IN (SELECT instance_id FROM recent)
        RETURNING instance_id, hits
     ), named AS (
        INSERT INTO retired_instances (instance_id) SELECT DISTINCT instance_id FROM gone
        ON CONFLICT (instance_id) DO NOTHING
        RETURNING 1
     ), folded AS (
        -- An upsert, not an UPDATE: were the row missing, the sum would vanish with the rows.
        INSERT INTO hit_totals_retired (instances, hits)
        VALUES ((SELECT count(*) FROM named), (SELECT coalesce(sum(hits), 0) FROM gone))
        ON CONFLICT (singleton) DO UPDATE
           SET instances = hit_totals_retired.instances + EXCLUDED.instances,
               hits = hit_totals_retired.hits + EXCLUDED.hits
     )
     SELECT (SELECT count(DISTINCT instance_id) FROM gone)::int8,
            (SELECT count(*) FROM gone)::int8,
            (SELECT coalesce(sum(hits), 0) FROM gone)::int8";

/// Replaces the per-instance buckets of each minute older than $1 minutes (and younger than
/// the retention, $2 minutes) by one bucket per minute under the reserved key
/// (instance_id '', shard -1): no writer uses shard -1, and '' is not a valid instance id.
/// The 24-hour window then sums at most one row per old minute, whatever the number of
/// instances. Returns the rows folded.
pub(super) const FOLD_MINUTES: &str = "WITH old AS (
        DELETE FROM hit_minutes
         WHERE minute < date_trunc('minute', now()) - make_interval(mins => $1)
           AND minute >= date_trunc('minute', now()) - make_interval(mins => $2)
           AND shard >= 0
        RETURNING minute, hits
     ), folded AS (
        INSERT INTO hit_minutes (minute, instance_id, shard, hits)
        SELECT minute, '', -1, sum(hits) FROM old GROUP BY minute
        ON CONFLICT (minute, instance_id, shard) DO UPDATE SET hits = hit_minutes.hits + EXCLUDED.hits
     )
     SELECT count(*)::int8 FROM old";

/// Deletes the buckets older than the retention ($1 minutes): the window never reads them.
pub(super) const EXPIRE_MINUTES: &str = "DELETE FROM hit_minutes
     WHERE minute < date_trunc('minute', now()) - make_interval(mins => $1)";

#[derive(sqlx::FromRow)]
pub(super) struct LiveRow {
    live_from: i64,
    recent: i64,
    retired_instances: i64,
    retired_hits: i64,
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
            retired: Retired {
                instances: self.retired_instances,
                hits: self.retired_hits,
            },
        }
    }
}
