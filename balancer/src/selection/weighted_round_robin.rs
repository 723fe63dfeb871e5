//! Smooth weighted round robin, as nginx does it: every pick adds each backend's weight to
//! its current score, takes the highest, and subtracts the total from the winner. Weights
//! 5:1:1 give `a a b a c a a`, never a burst of five `a`s in a row.

use std::sync::Mutex;

use super::{SelectContext, Selector};
use crate::backend::BackendSet;

#[derive(Debug, Default)]
pub struct WeightedRoundRobin {
    /// Current scores by backend index, valid for one set generation.
    state: Mutex<(u64, Vec<i64>)>,
}

impl Selector for WeightedRoundRobin {
    fn select(&self, set: &BackendSet, eligible: &[usize], _ctx: &SelectContext) -> Vec<usize> {
        if eligible.is_empty() {
            return Vec::new();
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (generation, scores) = &mut *state;
        if *generation != set.generation || scores.len() != set.backends.len() {
            *generation = set.generation;
            *scores = vec![0; set.backends.len()];
        }
        let mut total = 0i64;
        let mut best = eligible[0];
        for &i in eligible {
            let weight = i64::from(set.backends[i].weight());
            scores[i] += weight;
            total += weight;
            if scores[i] > scores[best] {
                best = i;
            }
        }
        scores[best] -= total;
        let mut order: Vec<usize> = eligible.to_vec();
        // The winner first; fallbacks by how much they are owed.
        order.sort_by_key(|&i| (i != best, -scores[i]));
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::testing::set;

    #[test]
    fn spreads_weights_smoothly_like_nginx() {
        let wrr = WeightedRoundRobin::default();
        let s = set(&[5, 1, 1]);
        let ctx = SelectContext {
            client_ip: [127, 0, 0, 1].into(),
        };
        let picks: Vec<usize> = (0..7)
            .map(|_| wrr.select(&s, &[0, 1, 2], &ctx)[0])
            .collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
    }
}
