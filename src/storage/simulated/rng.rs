//! The simulator's pseudo-random generator: splitmix64, written here so that the sequence of
//! faults for a seed never changes with a dependency's version or the machine it runs on.
//! Only integer arithmetic and exact integer-to-float conversions are used. Public, so that a
//! simulation test draws its workload from the same reproducible generator as the faults.

/// A seeded splitmix64 generator. Not for cryptography: it only has to be fast, well mixed and
/// reproducible.
#[derive(Debug, Clone)]
pub struct SimRng {
    state: u64,
}

impl SimRng {
    /// A generator whose whole output is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    /// A number in `0..bound`. Multiply-shift keeps the bias below 2^-64 per unit of `bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "SimRng::below needs a positive bound");
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// True with probability `probability` (clamped to [0, 1]). Draws nothing when the answer
    /// is certain, so a disabled fault does not shift the sequence of the others.
    pub fn chance(&mut self, probability: f64) -> bool {
        if probability <= 0.0 {
            return false;
        }
        if probability >= 1.0 {
            return true;
        }
        // 53 random bits convert to f64 exactly, so the comparison is the same everywhere.
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit < probability
    }

    /// Fills `buffer` with random bytes.
    pub fn fill(&mut self, buffer: &mut [u8]) {
        for chunk in buffer.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SimRng;

    // Proves the generator is a pure function of the seed (same seed, same stream; different
    // seeds, different streams) and that `below` and `chance` respect their bounds.
    #[test]
    fn deterministic_and_bounded() {
        let mut first = SimRng::new(7);
        let mut second = SimRng::new(7);
        let mut other = SimRng::new(8);
        let a: Vec<u64> = (0..16).map(|_| first.next_u64()).collect();
        let b: Vec<u64> = (0..16).map(|_| second.next_u64()).collect();
        let c: Vec<u64> = (0..16).map(|_| other.next_u64()).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut rng = SimRng::new(1);
        assert!((0..1000).all(|_| rng.below(10) < 10));
        assert!(!(0..1000).any(|_| rng.chance(0.0)));
        assert!((0..1000).all(|_| rng.chance(1.0)));
        let hits = (0..10_000).filter(|_| rng.chance(0.25)).count();
        assert!(
            (2000..3000).contains(&hits),
            "chance(0.25) hit {hits} of 10000"
        );
    }
}
