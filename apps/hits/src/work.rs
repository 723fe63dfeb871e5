//! The optional simulated cost of a hit (`WORK_MS`), off by default.
//!
//! Each instance has `WORK_CONCURRENCY` workers and a hit holds one for `WORK_MS`, as a fixed
//! pool of synchronous workers would. One instance then serves at most
//! `WORK_CONCURRENCY * 1000 / WORK_MS` hits per second, and adding instances behind the
//! balancer adds capacity, even on one machine: what the tutorial sets out to show.

use crate::config::WorkConfig;
use std::time::Duration;
use tokio::sync::Semaphore;

/// A request waits at most this long for a free worker before it is refused.
const QUEUE_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct SimulatedWork {
    workers: Semaphore,
    duration: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("no simulated worker was free within {QUEUE_LIMIT:?}")]
pub struct WorkersBusy;

impl SimulatedWork {
    pub fn new(config: &WorkConfig) -> SimulatedWork {
        SimulatedWork {
            workers: Semaphore::new(config.concurrency),
            duration: config.duration,
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
        tokio::time::sleep(self.duration).await;
        drop(permit);
        Ok(())
    }
}
