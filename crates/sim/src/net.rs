//! The simulated network between managers (and between clients and managers).
//!
//! Nothing here has a queue of its own: a message that survives [`Network::fate`] becomes a
//! delivery event in the simulator's one event queue, at `now + latency`. Latency is drawn
//! per message, so two messages on one link may arrive in either order (reordering); a
//! message may be lost, or delivered twice with two latencies (duplication).
//!
//! Partitions are sets of directed links that are cut: a symmetric partition cuts both
//! directions, an asymmetric one only some. Several may overlap (each is healed on its own
//! schedule); a link is up only if no active cut names it. A message is checked when it is
//! sent and again when it would be delivered, so a partition also stops what is in flight,
//! as a broken TCP connection would.
//!
//! Invariant: every decision is drawn from the simulator's RNG, in the order messages are
//! sent, so the network's behaviour is a function of the seed.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use rand::rngs::StdRng;

/// Base one-way latency, µs.
const LATENCY_MIN: u64 = 200;
const LATENCY_MAX: u64 = 2_000;
/// Occasional latency spikes (per mille, and their range in µs).
const SPIKE_PER_MILLE: u32 = 15;
const SPIKE_MIN: u64 = 10_000;
const SPIKE_MAX: u64 = 60_000;

/// What happens to one message.
#[derive(Debug, PartialEq, Eq)]
pub enum Fate {
    /// The link is cut or the receiver is down: the sender's transport notices.
    Unreachable,
    /// Lost on the way, silently.
    Lost,
    /// Delivered after each of these latencies (two: duplicated).
    Deliver(Vec<u64>),
}

/// A node slowed down: its messages take longer and its clock ticks less often.
#[derive(Clone, Copy, Debug)]
pub struct Slow {
    pub generation: u64,
    pub extra_latency: u64,
    pub tick_factor: u64,
}

#[derive(Default)]
pub struct Network {
    /// Active partitions by generation: the directed links each one cuts.
    cuts: BTreeMap<u64, BTreeSet<(u64, u64)>>,
    /// Per mille of messages lost (a loss burst raises it for a while).
    pub loss_per_mille: u32,
    pub loss_generation: u64,
    /// Per mille of messages duplicated.
    pub dup_per_mille: u32,
    pub slow: BTreeMap<u64, Slow>,
}

impl Network {
    pub fn connected(&self, from: u64, to: u64) -> bool {
        !self.cuts.values().any(|cut| cut.contains(&(from, to)))
    }

    pub fn cut(&mut self, generation: u64, links: BTreeSet<(u64, u64)>) {
        self.cuts.insert(generation, links);
    }

    pub fn heal(&mut self, generation: u64) {
        self.cuts.remove(&generation);
    }

    pub fn heal_all(&mut self) {
        self.cuts.clear();
        self.loss_per_mille = 0;
        self.dup_per_mille = 0;
        self.slow.clear();
    }

    /// Whether any partition is active.
    pub fn partitioned(&self) -> bool {
        !self.cuts.is_empty()
    }

    pub fn extra_latency(&self, node: u64) -> u64 {
        self.slow.get(&node).map(|s| s.extra_latency).unwrap_or(0)
    }

    /// One latency draw for a message between `from` and `to` (either may be a client, which
    /// is never slow).
    pub fn latency(&self, rng: &mut StdRng, from: u64, to: u64) -> u64 {
        let mut l = rng.random_range(LATENCY_MIN..=LATENCY_MAX);
        if rng.random_range(0..1000) < SPIKE_PER_MILLE {
            l += rng.random_range(SPIKE_MIN..=SPIKE_MAX);
        }
        l + self.extra_latency(from) + self.extra_latency(to)
    }

    /// Decides the fate of a message between managers.
    pub fn fate(&self, rng: &mut StdRng, from: u64, to: u64, receiver_up: bool) -> Fate {
        if !receiver_up || !self.connected(from, to) {
            return Fate::Unreachable;
        }
        if self.loss_per_mille > 0 && rng.random_range(0..1000) < self.loss_per_mille {
            return Fate::Lost;
        }
        let mut latencies = vec![self.latency(rng, from, to)];
        if self.dup_per_mille > 0 && rng.random_range(0..1000) < self.dup_per_mille {
            latencies.push(self.latency(rng, from, to));
        }
        Fate::Deliver(latencies)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn partitions_overlap_and_heal_separately() {
        let mut net = Network::default();
        net.cut(1, BTreeSet::from([(1, 2), (2, 1)]));
        net.cut(2, BTreeSet::from([(1, 2)]));
        assert!(!net.connected(1, 2));
        net.heal(1);
        assert!(!net.connected(1, 2));
        assert!(net.connected(2, 1), "asymmetric: the other way is up");
        net.heal(2);
        assert!(net.connected(1, 2));
        let mut rng = StdRng::seed_from_u64(7);
        assert_eq!(net.fate(&mut rng, 1, 2, false), Fate::Unreachable);
        assert!(matches!(net.fate(&mut rng, 1, 2, true), Fate::Deliver(_)));
    }
}
