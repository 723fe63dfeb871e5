//! Round robin: each eligible backend in turn.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{SelectContext, Selector, rotated};
use crate::backend::BackendSet;

#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Selector for RoundRobin {
    fn select(&self, _set: &BackendSet, eligible: &[usize], _ctx: &SelectContext) -> Vec<usize> {
        rotated(eligible, self.next.fetch_add(1, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::testing::set;

    #[test]
    fn visits_backends_in_turn_and_skips_ineligible_ones() {
        let rr = RoundRobin::default();
        let s = set(&[1, 1, 1]);
        let ctx = SelectContext {
            client_ip: [127, 0, 0, 1].into(),
        };
        let firsts: Vec<usize> = (0..6).map(|_| rr.select(&s, &[0, 1, 2], &ctx)[0]).collect();
        assert_eq!(firsts, [0, 1, 2, 0, 1, 2]);
        assert_eq!(rr.select(&s, &[0, 2], &ctx), [0, 2]);
        assert_eq!(rr.select(&s, &[0, 2], &ctx), [2, 0]);
    }
}
