//! Reports the end of passive ejections. Ejection itself happens on the request path
//! ([`crate::backend::Backend::record_failure`]) and ends by time alone; this loop only makes
//! that return visible in the log, like every other state change.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::backend::{Registry, now_millis};

pub fn spawn(registry: Arc<Registry>, every: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let now = now_millis();
            for backend in &registry.load().backends {
                if backend.ejection_ended(now) {
                    tracing::info!(backend = %backend.addr, origin = %backend.origin, reason = "ejection back-off over", "backend returned");
                }
            }
        }
    })
}
