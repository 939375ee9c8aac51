//! The checker's own pseudo-random generator (splitmix64), so that a seed names the same run on
//! every machine and with every version of every dependency.

/// A seeded splitmix64 generator.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator whose whole output is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed ^ 0xC0FF_EE00_D15E_A5E5,
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    /// A number in `0..bound` (`bound > 0`).
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "Rng::below needs a positive bound");
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high, "Rng::between({low}, {high})");
        low + self.below(high - low + 1)
    }

    /// True `numerator` times in `denominator`.
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
        let mut generator = Rng::new(nonce.wrapping_mul(0x2545_F491_4F6C_DD1D));
        let mut bytes = Vec::with_capacity(length + 8);
        while bytes.len() < length {
            bytes.extend_from_slice(&generator.next_u64().to_le_bytes());
        }
        bytes.truncate(length);
        bytes
    }
}
