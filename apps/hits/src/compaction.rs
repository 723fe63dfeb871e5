//! Runs counter compaction ([`Store::compact`]) from the app itself: once at start-up, then
//! every `COMPACT_INTERVAL_SECS`. Every instance tries; a PostgreSQL advisory lock lets one
//! at a time do it, so a fleet compacts about once per interval and never twice at once.

use crate::store::{CompactPolicy, Store};
use std::time::Duration;
use tokio::task::JoinHandle;

/// The periodic compaction task; stopped when dropped.
#[derive(Debug)]
pub struct Compactor {
    task: Option<JoinHandle<()>>,
}

impl Compactor {
    /// Compacts once now (so an instance starting after many others leaves a short table
    /// before it serves), then every `interval` in the background. `None` does nothing.
    pub async fn start(store: Store, interval: Option<Duration>) -> Compactor {
        let Some(interval) = interval else {
            return Compactor { task: None };
        };
        compact_once(&store).await;
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await; // the first tick is immediate: start-up already compacted
            loop {
                ticks.tick().await;
                compact_once(&store).await;
            }
        });
        Compactor { task: Some(task) }
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        // An aborted pass drops its connection mid-transaction: PostgreSQL rolls it back,
        // so a pass is applied whole or not at all.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// One pass, logged; a failure is logged and retried at the next interval (compaction is an
/// optimisation: the figures are exact without it).
async fn compact_once(store: &Store) {
    match store.compact(CompactPolicy::default()).await {
        Ok(Some(done)) => tracing::info!(
            retired_instances = done.instances,
            total_rows_folded = done.total_rows,
            hits_folded = done.hits,
            minute_rows_folded = done.minute_rows,
            minute_rows_expired = done.expired_rows,
            "compacted the hit counters"
        ),
        Ok(None) => tracing::debug!("another instance is compacting the hit counters"),
        Err(error) => tracing::warn!(%error, "could not compact the hit counters"),
    }
}
