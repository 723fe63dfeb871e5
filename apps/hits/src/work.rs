//! The optional simulated cost of a hit (`WORK_MS`), off by default.
//!
//! Each instance has `WORK_CONCURRENCY` workers and a hit holds one for `WORK_MS`, as a fixed
//! pool of synchronous workers would. One instance then serves at most
//! `WORK_CONCURRENCY * 1000 / WORK_MS` hits per second, and adding instances behind the
//! balancer adds capacity, even on one machine: what the tutorial sets out to show.

use crate::config::WorkConfig;
use crate::metrics::Metrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// A request waits at most this long for a free worker before it is refused.
const QUEUE_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct SimulatedWork {
    workers: Semaphore,
    duration: Duration,
    metrics: Arc<Metrics>,
}

#[derive(Debug, thiserror::Error)]
#[error("no simulated worker was free within {QUEUE_LIMIT:?}")]
pub struct WorkersBusy;

impl SimulatedWork {
    pub fn new(config: &WorkConfig, metrics: Arc<Metrics>) -> SimulatedWork {
        SimulatedWork {
            workers: Semaphore::new(config.concurrency),
            duration: config.duration,
            metrics,
        }
    }

    pub async fn perform(&self) -> Result<(), WorkersBusy> {
        if self.duration.is_zero() {
            return Ok(());
        }
        let permit = tokio::time::timeout(QUEUE_LIMIT, self.workers.acquire())
            .await
            .map_err(|_| WorkersBusy)?
            .map_err(|_| WorkersBusy)?;
        let _busy = Busy::start(&self.metrics);
        tokio::time::sleep(self.duration).await;
        drop(permit);
        Ok(())
    }
}

/// Counts a hit in `hits_work_in_progress` while it holds a worker, including when its
/// request is dropped halfway (the client went away).
struct Busy<'a>(&'a Metrics);

impl<'a> Busy<'a> {
    fn start(metrics: &'a Metrics) -> Busy<'a> {
        metrics.work_started();
        Busy(metrics)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.work_finished();
    }
}
