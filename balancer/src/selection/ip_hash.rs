//! Client-IP affinity by consistent hashing: each backend owns many points on a hash ring
//! (in proportion to its weight) and a client goes to the owner of the first point after
//! the hash of its address. Adding or removing one of N backends moves only about 1/N of
//! clients; an unavailable backend's clients fall through to the next owner on the ring.
//! The address hashed is `SelectContext::client_ip`: behind trusted proxies, the client's
//! own, not the proxy's.

use std::hash::Hasher;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use siphasher::sip::SipHasher13;

use super::{SelectContext, Selector};
use crate::backend::BackendSet;

/// Ring points per unit of weight: enough for an even spread over a handful of backends.
const POINTS_PER_WEIGHT: u32 = 160;

#[derive(Debug, Default)]
pub struct IpHash {
    ring: ArcSwapOption<Ring>,
}

#[derive(Debug)]
struct Ring {
    generation: u64,
    /// (point, backend index), sorted by point.
    points: Vec<(u64, usize)>,
}

fn hash(bytes: &[u8]) -> u64 {
    let mut hasher = SipHasher13::new_with_keys(0x6869_7473_6361_6c65, 0x7269_6e67_7631);
    hasher.write(bytes);
    hasher.finish()
}

impl Ring {
    fn build(set: &BackendSet) -> Self {
        let mut points = Vec::new();
        for (index, backend) in set.backends.iter().enumerate() {
            // Points hang off the address alone, so they stay put when others come and go.
            let name = backend.addr.to_string();
            for replica in 0..POINTS_PER_WEIGHT * backend.weight() {
                points.push((hash(format!("{name}#{replica}").as_bytes()), index));
            }
        }
        points.sort_unstable();
        Self {
            generation: set.generation,
            points,
        }
    }
}

fn client_key(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => hash(&v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => hash(&v4.octets()),
            None => hash(&v6.octets()),
        },
    }
}

impl IpHash {
    fn ring(&self, set: &BackendSet) -> Arc<Ring> {
        if let Some(ring) = self.ring.load_full()
            && ring.generation == set.generation
        {
            return ring;
        }
        let ring = Arc::new(Ring::build(set));
        self.ring.store(Some(ring.clone()));
        ring
    }
}

impl Selector for IpHash {
    fn select(&self, set: &BackendSet, eligible: &[usize], ctx: &SelectContext) -> Vec<usize> {
        if eligible.is_empty() {
            return Vec::new();
        }
        let ring = self.ring(set);
        let key = client_key(ctx.client_ip);
        let start = ring.points.partition_point(|(point, _)| *point < key);
        let mut seen = vec![false; set.backends.len()];
        let mut order = Vec::with_capacity(eligible.len());
        let total = ring.points.len();
        for offset in 0..total {
            let (_, index) = ring.points[(start + offset) % total];
            if !seen[index] {
                seen[index] = true;
                if eligible.binary_search(&index).is_ok() {
                    order.push(index);
                    if order.len() == eligible.len() {
                        break;
                    }
                }
            }
        }
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::testing::set;

    fn owners(selector: &IpHash, s: &BackendSet, eligible: &[usize]) -> Vec<std::net::SocketAddr> {
        (0..2000u32)
            .map(|i| {
                let ctx = SelectContext {
                    client_ip: IpAddr::from((0x0a00_0000 + i).to_be_bytes()),
                };
                s.backends[selector.select(s, eligible, &ctx)[0]].addr
            })
            .collect()
    }

    #[test]
    fn removing_one_of_five_moves_about_a_fifth_of_clients() {
        let five = set(&[1, 1, 1, 1, 1]);
        let before = owners(&IpHash::default(), &five, &[0, 1, 2, 3, 4]);
        let mut four = set(&[1, 1, 1, 1]);
        four.generation = 2;
        let after = owners(&IpHash::default(), &four, &[0, 1, 2, 3]);
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        let removed = five.backends[4].addr;
        let owned_by_removed = before.iter().filter(|a| **a == removed).count();
        // Exactly the removed backend's clients move, and that is about 1/5 of them.
        assert_eq!(moved, owned_by_removed);
        assert!((250..=550).contains(&moved), "moved {moved} of 2000");
        // Ineligible backends are skipped, not remapped wholesale.
        let skipping = owners(&IpHash::default(), &five, &[0, 1, 2, 3]);
        let moved = before.iter().zip(&skipping).filter(|(a, b)| a != b).count();
        assert_eq!(moved, owned_by_removed);
    }
}
