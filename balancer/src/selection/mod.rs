//! Backend selection policy: which backend a request should go to, in order of preference.
//!
//! A [`Selector`] orders the eligible backends; it never forwards anything. Because it
//! returns every candidate in order, retries simply try the next one and a sticky cookie
//! just moves its backend to the front: both are filters over this sequence.

mod ip_hash;
mod least_connections;
mod least_response_time;
mod power_of_two_choices;
mod round_robin;
mod weighted_round_robin;

use std::net::IpAddr;

pub use ip_hash::IpHash;
pub use least_connections::LeastConnections;
pub use least_response_time::LeastResponseTime;
pub use power_of_two_choices::PowerOfTwoChoices;
pub use round_robin::RoundRobin;
pub use weighted_round_robin::WeightedRoundRobin;

use crate::backend::BackendSet;
use crate::config::Algorithm;

/// What a selector may base its choice on.
#[derive(Debug, Clone, Copy)]
pub struct SelectContext {
    /// The client's address: in HTTP mode the one `proxy::headers::client_ip` finds (the
    /// peer, or behind trusted proxies the address their `X-Forwarded-For` names); in
    /// layer-4 mode the peer's.
    pub client_ip: IpAddr,
}

pub trait Selector: Send + Sync + std::fmt::Debug {
    /// Orders `eligible` (indices into `set.backends`, ascending) by preference: the first
    /// is where the request goes, the rest are fallbacks. Returns each index once.
    fn select(&self, set: &BackendSet, eligible: &[usize], ctx: &SelectContext) -> Vec<usize>;
}

pub fn for_algorithm(algorithm: Algorithm) -> Box<dyn Selector> {
    match algorithm {
        Algorithm::RoundRobin => Box::new(RoundRobin::default()),
        Algorithm::WeightedRoundRobin => Box::new(WeightedRoundRobin::default()),
        Algorithm::LeastConnections => Box::new(LeastConnections::default()),
        Algorithm::LeastResponseTime => Box::new(LeastResponseTime::default()),
        Algorithm::IpHash => Box::new(IpHash::default()),
        Algorithm::PowerOfTwoChoices => Box::new(PowerOfTwoChoices::default()),
    }
}

/// `eligible` rotated to start at `start`: the round-robin order, also used to break ties.
fn rotated(eligible: &[usize], start: usize) -> Vec<usize> {
    if eligible.is_empty() {
        return Vec::new();
    }
    let start = start % eligible.len();
    let mut order = Vec::with_capacity(eligible.len());
    order.extend_from_slice(&eligible[start..]);
    order.extend_from_slice(&eligible[..start]);
    order
}

#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::backend::{Backend, BackendSet, Health};
    use crate::pool::Pool;

    pub fn set(weights: &[u32]) -> BackendSet {
        BackendSet {
            generation: 1,
            backends: weights
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    Arc::new(Backend::new(
                        format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
                        "test".into(),
                        *w,
                        String::new(),
                        Health::Up,
                        Pool::new(1, Duration::from_secs(1)),
                    ))
                })
                .collect(),
        }
    }
}
