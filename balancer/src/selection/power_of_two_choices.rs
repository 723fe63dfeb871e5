//! Power of two choices: pick two eligible backends at random and prefer the one with fewer
//! requests in flight. Nearly as good as least-connections without scanning every backend,
//! and without the herd effect of everyone picking the same least-loaded backend.

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{SelectContext, Selector, rotated};
use crate::backend::BackendSet;

#[derive(Debug, Default)]
pub struct PowerOfTwoChoices {
    rotation: AtomicUsize,
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(RandomState::new().hash_one(0u64) | 1);
}

/// xorshift64*: plenty for load spreading, no dependency, no lock.
fn random(bound: usize) -> usize {
    RNG.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound as u64) as usize
    })
}

impl Selector for PowerOfTwoChoices {
    fn select(&self, set: &BackendSet, eligible: &[usize], _ctx: &SelectContext) -> Vec<usize> {
        let n = eligible.len();
        if n < 2 {
            return eligible.to_vec();
        }
        let a = random(n);
        let b = (a + 1 + random(n - 1)) % n;
        let (a, b) = (eligible[a], eligible[b]);
        let (first, second) = if set.backends[b].in_flight() < set.backends[a].in_flight() {
            (b, a)
        } else {
            (a, b)
        };
        let mut order = Vec::with_capacity(n);
        order.push(first);
        order.push(second);
        order.extend(
            rotated(eligible, self.rotation.fetch_add(1, Ordering::Relaxed))
                .into_iter()
                .filter(|&i| i != first && i != second),
        );
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::testing::set;

    #[test]
    fn never_picks_the_busier_of_two_and_spreads_otherwise() {
        let p2c = PowerOfTwoChoices::default();
        let s = set(&[1, 1]);
        let ctx = SelectContext {
            client_ip: [127, 0, 0, 1].into(),
        };
        let mut counts = [0; 2];
        for _ in 0..200 {
            let order = p2c.select(&s, &[0, 1], &ctx);
            assert_eq!(order.len(), 2);
            counts[order[0]] += 1;
        }
        assert!(counts[0] > 40 && counts[1] > 40, "{counts:?}");
        let _busy = s.backends[1].track();
        for _ in 0..50 {
            assert_eq!(p2c.select(&s, &[0, 1], &ctx)[0], 0);
        }
    }
}
