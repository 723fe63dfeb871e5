//! Least response time: the lowest peak-EWMA latency times (requests in flight + 1), per
//! unit of weight. Peak-EWMA reacts to a slowdown at once and forgets it gradually, so a
//! backend that turns slow stops getting traffic quickly and is probed again later.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{SelectContext, Selector, rotated};
use crate::backend::BackendSet;

#[derive(Debug, Default)]
pub struct LeastResponseTime {
    tie_breaker: AtomicUsize,
}

impl Selector for LeastResponseTime {
    fn select(&self, set: &BackendSet, eligible: &[usize], _ctx: &SelectContext) -> Vec<usize> {
        let mut order = rotated(eligible, self.tie_breaker.fetch_add(1, Ordering::Relaxed));
        let cost = |i: usize| {
            let b = &set.backends[i];
            b.latency_micros() * f64::from(b.in_flight() + 1) / f64::from(b.weight().max(1))
        };
        let mut costs: Vec<(f64, usize)> = order.iter().map(|&i| (cost(i), i)).collect();
        costs.sort_by(|a, b| a.0.total_cmp(&b.0));
        order.clear();
        order.extend(costs.into_iter().map(|(_, i)| i));
        order
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::selection::testing::set;

    #[test]
    fn prefers_the_faster_backend() {
        let lrt = LeastResponseTime::default();
        let s = set(&[1, 1]);
        s.backends[0].record_latency(Duration::from_millis(50));
        s.backends[1].record_latency(Duration::from_millis(2));
        let ctx = SelectContext {
            client_ip: [127, 0, 0, 1].into(),
        };
        for _ in 0..4 {
            assert_eq!(lrt.select(&s, &[0, 1], &ctx), [1, 0]);
        }
    }
}
