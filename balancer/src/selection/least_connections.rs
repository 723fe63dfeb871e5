//! Least connections: the backend with the fewest requests in flight per unit of weight;
//! ties go round robin so an idle pool is not all sent to the first backend.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{SelectContext, Selector, rotated};
use crate::backend::BackendSet;

#[derive(Debug, Default)]
pub struct LeastConnections {
    tie_breaker: AtomicUsize,
}

impl Selector for LeastConnections {
    fn select(&self, set: &BackendSet, eligible: &[usize], _ctx: &SelectContext) -> Vec<usize> {
        let mut order = rotated(eligible, self.tie_breaker.fetch_add(1, Ordering::Relaxed));
        // Stable sort keeps the rotation among equals.
        order.sort_by_key(|&i| {
            let b = &set.backends[i];
            u64::from(b.in_flight()) * 1_000_000 / u64::from(b.weight().max(1))
        });
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::testing::set;

    #[test]
    fn prefers_the_backend_with_fewer_requests_in_flight() {
        let lc = LeastConnections::default();
        let s = set(&[1, 1]);
        let ctx = SelectContext {
            client_ip: [127, 0, 0, 1].into(),
        };
        let _busy = [s.backends[0].track(), s.backends[0].track()];
        for _ in 0..4 {
            assert_eq!(lc.select(&s, &[0, 1], &ctx), [1, 0]);
        }
    }
}
