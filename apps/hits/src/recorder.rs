//! Group commit: the hits of concurrent requests are gathered into one statement.
//!
//! A request hands its hit to a bounded queue and waits for the commit that contains it; only
//! then does it answer. `WRITE_CONCURRENCY` writer tasks take turns draining the queue: while
//! one commits, the next gathers what arrived meanwhile, so batches grow with load and each
//! commit's cost is shared by every request in it. Each writer counts on its own rows (its
//! shard), so writers never wait on each other's row locks. A request is answered 200 only
//! after its commit: an acknowledged hit is never lost.

use crate::config::WriteConfig;
use crate::metrics::Metrics;
use crate::store::{LiveCounts, Store, StoreError};
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinSet;

#[derive(Debug, Clone, thiserror::Error)]
pub enum RecordError {
    #[error("too many hits are waiting to be written")]
    Overloaded,
    #[error("the hit was not confirmed in time")]
    TimedOut,
    #[error("the database did not store the hit: {0}")]
    Database(String),
    #[error("the app is shutting down")]
    ShuttingDown,
}

type Reply = oneshot::Sender<Result<Arc<LiveCounts>, RecordError>>;

/// The handle requests use; cheap to clone.
#[derive(Debug, Clone)]
pub struct Recorder {
    queue: mpsc::Sender<Reply>,
    config: WriteConfig,
}

/// The writer tasks; [`Writers::finish`] waits until every queued hit is answered.
#[derive(Debug)]
pub struct Writers {
    tasks: JoinSet<()>,
}

impl Recorder {
    pub fn start(
        store: Store,
        instance_id: String,
        config: WriteConfig,
        metrics: Arc<Metrics>,
    ) -> (Recorder, Writers) {
        let (queue, receiver) = mpsc::channel(config.queue);
        let receiver = Arc::new(Mutex::new(receiver));
        let instance_id: Arc<str> = instance_id.into();
        let mut tasks = JoinSet::new();
        for shard in 0..config.writers {
            tasks.spawn(writer(
                shard as i16,
                store.clone(),
                instance_id.clone(),
                receiver.clone(),
                config.max_batch,
                metrics.clone(),
            ));
        }
        (Recorder { queue, config }, Writers { tasks })
    }

    /// Records one hit; returns the counters as of the commit that stored it.
    pub async fn record(&self) -> Result<Arc<LiveCounts>, RecordError> {
        let (reply, done) = oneshot::channel();
        self.queue.try_send(reply).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => RecordError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => RecordError::ShuttingDown,
        })?;
        match tokio::time::timeout(self.config.timeout, done).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RecordError::ShuttingDown),
            Err(_) => Err(RecordError::TimedOut),
        }
    }
}

impl Writers {
    /// Waits for the writers to drain the queue; they stop once every [`Recorder`] is dropped.
    pub async fn finish(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn writer(
    shard: i16,
    store: Store,
    instance_id: Arc<str>,
    receiver: Arc<Mutex<mpsc::Receiver<Reply>>>,
    max_batch: usize,
    metrics: Arc<Metrics>,
) {
    let mut batch: Vec<Reply> = Vec::with_capacity(max_batch.min(1024));
    loop {
        {
            let mut receiver = receiver.lock().await;
            if receiver.recv_many(&mut batch, max_batch).await == 0 {
                return;
            }
        }
        // Requests that gave up (timed out or disconnected) are not written: nobody would be
        // told, and a hit is only what a client was answered for.
        batch.retain(|reply| !reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let size = i32::try_from(batch.len()).unwrap_or(i32::MAX);
        let result = store.record(&instance_id, shard, size).await;
        match result {
            Ok(counts) => {
                metrics.hits_recorded(batch.len() as u64);
                let counts = Arc::new(counts);
                for reply in batch.drain(..) {
                    let _ = reply.send(Ok(counts.clone()));
                }
            }
            Err(error) => {
                tracing::error!(%error, shard, hits = size, "could not store a batch of hits");
                let message = short_reason(&error);
                for reply in batch.drain(..) {
                    let _ = reply.send(Err(RecordError::Database(message.clone())));
                }
            }
        }
    }
}

fn short_reason(error: &StoreError) -> String {
    match error {
        StoreError::Database(sqlx::Error::PoolTimedOut) => {
            "no database connection available".into()
        }
        StoreError::Database(sqlx::Error::Io(_)) => "database unreachable".into(),
        _ => "database error".into(),
    }
}
