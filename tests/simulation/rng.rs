//! The checker's generator: the simulator's own splitmix64 ([`SimRng`]) under a seed of its
//! own, so that a seed names the same run on every machine and with every version of every
//! dependency, with the draws the checker needs on top.

use helix_wal::SimRng;

/// Seeds the checker's stream apart from the simulator's, which gets the same seed.
const CHECKER_SEED_MASK: u64 = 0xC0FF_EE00_D15E_A5E5;

/// The checker's seeded generator.
#[derive(Debug, Clone)]
pub struct Rng(SimRng);

impl Rng {
    /// A generator whose whole output is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        Self(SimRng::new(seed ^ CHECKER_SEED_MASK))
    }

    /// A number in `0..bound` (`bound > 0`).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0.below(bound)
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high, "Rng::between({low}, {high})");
        low + self.below(high - low + 1)
    }

    /// True once in `denominator` draws, on average.
    pub fn one_in(&mut self, denominator: u64) -> bool {
        self.below(denominator) == 0
    }

    /// Picks an index with probability proportional to its weight.
    pub fn weighted(&mut self, weights: &[u64]) -> usize {
        let total: u64 = weights.iter().sum();
        let mut pick = self.below(total);
        for (position, weight) in weights.iter().enumerate() {
            if pick < *weight {
                return position;
            }
            pick -= weight;
        }
        unreachable!("pick is below the total weight")
    }

    /// `length` bytes that depend only on `nonce`, so every payload the checker ever appends is
    /// distinct from every other one of the same length.
    pub fn payload(nonce: u64, length: usize) -> Vec<u8> {
        let mut bytes = vec![0; length];
        Rng::new(nonce.wrapping_mul(0x2545_F491_4F6C_DD1D))
            .0
            .fill(&mut bytes);
        bytes
    }
}
