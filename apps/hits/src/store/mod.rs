//! PostgreSQL: the source of truth for hits, and the counters that make reading them cheap.
//!
//! A batch of hits is one statement: the rows go into `hits` and the batch's writer bumps its
//! own counter rows in `hit_totals` and `hit_minutes`, atomically. The same statement reads
//! back the counters, so the requests of a batch get their figures without a second query.
//!
//! [`Store::compact`] keeps the counters' size bounded under churn: the rows of instances gone
//! for [`CompactPolicy::retire_after_minutes`] are folded into one row, old minute buckets into
//! one bucket per minute, and buckets past the 24-hour window are deleted.

mod queries;

use crate::config::DatabaseConfig;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("DATABASE_URL: {0}")]
    BadUrl(sqlx::Error),
}

/// An instance is active when it served a hit in the last `active_minutes!()` minutes: in
/// whole minute buckets of `hit_minutes`, so the current minute and that many before it.
/// A macro so that the SQL text can embed it.
macro_rules! active_minutes {
    () => {
        10
    };
}
pub(crate) use active_minutes;

/// See [`active_minutes`]: the page lists active instances one by one and sums the others.
pub const ACTIVE_MINUTES: u32 = active_minutes!();

/// How long an instance must have served nothing before compaction folds its totals into the
/// retired row. Well past [`ACTIVE_MINUTES`], so the instances the page lists one by one are
/// never folded; and the page's cost is bounded by the instances seen in this many minutes.
pub const RETIRE_AFTER_MINUTES: i32 = 60;
const _: () = assert!(RETIRE_AFTER_MINUTES > ACTIVE_MINUTES as i32);

/// Minute buckets are kept this long: the 24-hour window reads 1,440 of them; the hour more
/// leaves room for an instance whose clock or cached minute lags.
pub const RETAIN_MINUTES: i32 = 25 * 60;

/// What [`Store::compact`] folds. The app always uses the default; tests fold everything
/// (a negative `retire_after_minutes`) to race compaction against live writers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactPolicy {
    /// Instances with no minute bucket in this many minutes are retired, and minute buckets
    /// older than this are folded to one per minute.
    pub retire_after_minutes: i32,
    /// Minute buckets older than this are deleted.
    pub retain_minutes: i32,
}

impl Default for CompactPolicy {
    fn default() -> Self {
        CompactPolicy {
            retire_after_minutes: RETIRE_AFTER_MINUTES,
            retain_minutes: RETAIN_MINUTES,
        }
    }
}

/// What one compaction pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Instance ids whose totals were folded into the retired row.
    pub instances: i64,
    /// `hit_totals` rows deleted (instances x writers).
    pub total_rows: i64,
    /// The hits those rows held, now in the retired row.
    pub hits: i64,
    /// `hit_minutes` rows folded into one bucket per minute.
    pub minute_rows: i64,
    /// `hit_minutes` rows past the retention, deleted.
    pub expired_rows: i64,
}

/// The instances compaction retired, summed: the page shows them in its "earlier instances"
/// row together with the inactive instances not yet retired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retired {
    /// Distinct instance ids ever retired.
    pub instances: i64,
    pub hits: i64,
}

/// The counters as PostgreSQL saw them: everything but the cached 24-hour window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveCounts {
    /// Unix time (seconds) of the first minute counted live; earlier minutes of the last 24
    /// hours come from [`Store::window_before`], which is cached.
    pub live_from: i64,
    /// Hits in the live minutes (the previous and the current one).
    pub recent: i64,
    /// All-time hits per instance not retired by compaction (an instance that came back after
    /// it was retired counts from its return; its earlier hits are in `retired`).
    pub by_instance: BTreeMap<String, i64>,
    /// The instances with a hit in the last [`ACTIVE_MINUTES`] minutes.
    pub active: BTreeSet<String>,
    /// The instances compaction folded, summed.
    pub retired: Retired,
}

/// The statement every page and API answer reads the counters with (the hit's own statement
/// runs it after its writes): public for EXPLAIN in tests and benchmarks.
pub const LIVE_QUERY: &str = queries::LIVE;

/// The statement of the 24-hour window before the live minutes ($1: the first live minute,
/// Unix seconds): public for EXPLAIN in tests and benchmarks.
pub const WINDOW_QUERY: &str = queries::WINDOW_BEFORE;

impl LiveCounts {
    /// Every hit ever recorded: the per-instance totals plus the retired ones.
    pub fn total(&self) -> i64 {
        self.by_instance.values().sum::<i64>() + self.retired.hits
    }

    /// Adds a batch that the statement wrote but, by snapshot rules, did not read back.
    fn with_batch(mut self, instance_id: &str, hits: i64) -> LiveCounts {
        self.recent += hits;
        *self.by_instance.entry(instance_id.to_owned()).or_insert(0) += hits;
        if !self.active.contains(instance_id) {
            self.active.insert(instance_id.to_owned());
        }
        self
    }
}

/// The connection pool and the queries of the app.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Connects and applies the embedded migrations, retrying while the database is
    /// unreachable for at most `startup_timeout` (compose may start us first).
    pub async fn connect(config: &DatabaseConfig) -> Result<Store, StoreError> {
        let options = PgConnectOptions::from_str(config.url())
            .map_err(StoreError::BadUrl)?
            // A runaway query must not hold a connection (and a request) forever.
            .options([("statement_timeout", "10s")])
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1));
        let pool = PgPoolOptions::new()
            .max_connections(config.pool_size)
            .acquire_timeout(config.acquire_timeout)
            .connect_lazy_with(options);
        let store = Store { pool };
        store.migrate_with_retry(config.startup_timeout).await?;
        Ok(store)
    }

    async fn migrate_with_retry(&self, limit: Duration) -> Result<(), StoreError> {
        let deadline = Instant::now() + limit;
        let mut backoff = Duration::from_millis(250);
        loop {
            // sqlx holds a PostgreSQL advisory lock while migrating, so instances that start
            // together apply each migration once.
            match sqlx::migrate!("./migrations").run(&self.pool).await {
                Ok(()) => return Ok(()),
                Err(sqlx::migrate::MigrateError::Execute(sqlx::Error::Io(_)))
                | Err(sqlx::migrate::MigrateError::Execute(sqlx::Error::PoolTimedOut))
                    if Instant::now() + backoff < deadline =>
                {
                    tracing::warn!(retry_in = ?backoff, "database unreachable at start-up; retrying");
                }
                Err(
                    sqlx::migrate::MigrateError::Execute(sqlx::Error::Io(_))
                    | sqlx::migrate::MigrateError::Execute(sqlx::Error::PoolTimedOut),
                ) => {
                    return Err(StoreError::Database(sqlx::Error::PoolTimedOut));
                }
                Err(other) => return Err(other.into()),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Records `hits` hits served by `instance_id`, counted on writer `shard`'s rows, and
    /// returns the counters including them.
    pub async fn record(
        &self,
        instance_id: &str,
        shard: i16,
        hits: i32,
    ) -> Result<LiveCounts, StoreError> {
        let row: queries::LiveRow = sqlx::query_as(queries::RECORD)
            .bind(instance_id)
            .bind(shard)
            .bind(hits)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.into_counts().with_batch(instance_id, i64::from(hits)))
    }

    /// The counters now, recording nothing.
    pub async fn live(&self) -> Result<LiveCounts, StoreError> {
        let row: queries::LiveRow = sqlx::query_as(queries::LIVE).fetch_one(&self.pool).await?;
        Ok(row.into_counts())
    }

    /// Hits in the 1438 minutes before `live_from`: together with the two live minutes, the
    /// last 24 hours to the minute. These minutes no longer change, so the sum is cacheable.
    pub async fn window_before(&self, live_from: i64) -> Result<i64, StoreError> {
        let (sum,): (i64,) = sqlx::query_as(queries::WINDOW_BEFORE)
            .bind(live_from as f64)
            .fetch_one(&self.pool)
            .await?;
        Ok(sum)
    }

    /// One compaction pass; `None` when another instance holds the compaction lock (it is
    /// compacting now). Three short transactions, each bounded by a statement timeout and
    /// each under the lock: the totals first, then the minute buckets, then the expired
    /// buckets. Each touches one counter table only, and a writer's statement locks one row of
    /// each, so compaction and writers never wait on each other in a cycle.
    pub async fn compact(&self, policy: CompactPolicy) -> Result<Option<Compacted>, StoreError> {
        let mut done = Compacted::default();
        let Some((instances, total_rows, hits)) = self
            .locked(|tx| {
                Box::pin(async move {
                    sqlx::query_as::<_, (i64, i64, i64)>(queries::FOLD_TOTALS)
                        .bind(policy.retire_after_minutes)
                        .fetch_one(&mut **tx)
                        .await
                })
            })
            .await?
        else {
            return Ok(None);
        };
        done.instances = instances;
        done.total_rows = total_rows;
        done.hits = hits;
        let Some((minute_rows,)) = self
            .locked(|tx| {
                Box::pin(async move {
                    sqlx::query_as::<_, (i64,)>(queries::FOLD_MINUTES)
                        .bind(policy.retire_after_minutes)
                        .bind(policy.retain_minutes)
                        .fetch_one(&mut **tx)
                        .await
                })
            })
            .await?
        else {
            return Ok(Some(done));
        };
        done.minute_rows = minute_rows;
        if let Some(expired) = self
            .locked(|tx| {
                Box::pin(async move {
                    sqlx::query(queries::EXPIRE_MINUTES)
                        .bind(policy.retain_minutes)
                        .execute(&mut **tx)
                        .await
                })
            })
            .await?
        {
            done.expired_rows = expired.rows_affected() as i64;
        }
        Ok(Some(done))
    }

    /// Runs `step` in a transaction holding the compaction lock; `None` when another session
    /// holds it.
    async fn locked<T, F>(&self, step: F) -> Result<Option<T>, StoreError>
    where
        F: for<'t> FnOnce(
            &'t mut sqlx::Transaction<'static, sqlx::Postgres>,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, sqlx::Error>> + Send + 't>,
        >,
    {
        let mut tx = self.pool.begin().await?;
        sqlx::query(queries::COMPACTION_TIMEOUT)
            .execute(&mut *tx)
            .await?;
        let (locked,): (bool,) = sqlx::query_as(queries::TRY_LOCK)
            .bind(queries::COMPACTION_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            tx.rollback().await?;
            return Ok(None);
        }
        let value = step(&mut tx).await?;
        tx.commit().await?;
        Ok(Some(value))
    }

    /// The id of the deployment this database belongs to (migration 0002): the namespace of
    /// the Redis cache's keys.
    pub async fn deployment_id(&self) -> Result<String, StoreError> {
        let (id,): (String,) = sqlx::query_as(queries::DEPLOYMENT)
            .fetch_one(&self.pool)
            .await?;
        Ok(id)
    }

    /// True when a query round-trips.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
