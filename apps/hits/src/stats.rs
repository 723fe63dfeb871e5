//! The figures every page and API answer shows, assembled from the live counters and the
//! cached 24-hour window.

use crate::cache::WindowCache;
use crate::store::{LiveCounts, Store, StoreError};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// The instance that served this response.
    pub instance_id: String,
    pub total: i64,
    /// Hits in the last 24 hours, to the minute.
    pub last_24h: i64,
    /// All-time hits of every instance not yet retired by compaction (no hit for
    /// [`RETIRE_AFTER_MINUTES`](crate::store::RETIRE_AFTER_MINUTES) minutes); an instance
    /// that came back after it was retired counts from its return.
    pub by_instance: BTreeMap<String, i64>,
    /// Distinct instance ids retired by compaction, summed in `retired_hits`.
    pub retired_instances: i64,
    /// Their hits: `total` is the sum of `by_instance` plus this.
    pub retired_hits: i64,
    /// The instances that served a hit in the last
    /// [`ACTIVE_MINUTES`](crate::store::ACTIVE_MINUTES) minutes, sorted.
    pub active_instances: BTreeSet<String>,
}

impl Stats {
    pub fn new(instance_id: &str, counts: &LiveCounts, window_before: i64) -> Stats {
        Stats {
            instance_id: instance_id.to_owned(),
            total: counts.total(),
            last_24h: window_before + counts.recent,
            by_instance: counts.by_instance.clone(),
            retired_instances: counts.retired.instances,
            retired_hits: counts.retired.hits,
            active_instances: counts.active.clone(),
        }
    }

    /// The figures now, from PostgreSQL and the cache, recording nothing.
    pub async fn current(
        instance_id: &str,
        store: &Store,
        cache: &WindowCache,
    ) -> Result<Stats, StoreError> {
        let counts = store.live().await?;
        Stats::with_counts(instance_id, &counts, store, cache).await
    }

    pub async fn with_counts(
        instance_id: &str,
        counts: &LiveCounts,
        store: &Store,
        cache: &WindowCache,
    ) -> Result<Stats, StoreError> {
        let window = cache.window_before(store, counts.live_from).await?;
        Ok(Stats::new(instance_id, counts, window))
    }
}
