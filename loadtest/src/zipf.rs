//! Zipf sampler over ranks `0..n`: rank `k` (0-based) has probability ∝ `1 / (k + 1)^s`.
//!
//! An exact inverse-CDF table (n floats, built once) and a binary search per draw:
//! no allocation and a few dozen nanoseconds per sample for the link counts used here.

use rand::Rng;

/// Zipf-distributed ranks `0..n`.
#[derive(Debug, Clone)]
pub struct Zipf {
    /// Cumulative unnormalised weights: `cdf[k] = Σ_{i ≤ k} 1/(i+1)^s`.
    cdf: Vec<f64>,
}

impl Zipf {
    /// A sampler over `n ≥ 1` ranks with exponent `s ≥ 0` (`s = 0` is uniform).
    ///
    /// # Errors
    /// `n == 0`, or `s` negative or not finite.
    pub fn new(n: usize, s: f64) -> anyhow::Result<Zipf> {
        anyhow::ensure!(n > 0, "zipf: need at least one rank");
        anyhow::ensure!(s.is_finite() && s >= 0.0, "zipf: exponent must be finite and >= 0, got {s}");
        let mut acc = 0.0;
        let cdf = (0..n)
            .map(|k| {
                #[allow(clippy::cast_precision_loss)] // ranks far below 2^53
                let w = ((k + 1) as f64).powf(-s);
                acc += w;
                acc
            })
            .collect();
        Ok(Zipf { cdf })
    }

    /// Number of ranks.
    pub fn len(&self) -> usize {
        self.cdf.len()
    }

    /// Always false (a sampler has at least one rank).
    pub fn is_empty(&self) -> bool {
        self.cdf.is_empty()
    }

    /// Exact probability of rank `k` (0 outside `0..n`).
    pub fn probability(&self, k: usize) -> f64 {
        let total = self.total();
        match k {
            0 => self.cdf.first().map_or(0.0, |c| c / total),
            _ => match (self.cdf.get(k), self.cdf.get(k - 1)) {
                (Some(c), Some(p)) => (c - p) / total,
                _ => 0.0,
            },
        }
    }

    /// Draws a rank.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        let u = rng.random::<f64>() * self.total();
        self.cdf.partition_point(|&c| c <= u).min(self.cdf.len() - 1)
    }

    fn total(&self) -> f64 {
        self.cdf.last().copied().unwrap_or(1.0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;

    #[test]
    fn probabilities_sum_to_one_and_follow_the_power_law() {
        let z = Zipf::new(100, 1.0).unwrap();
        let sum: f64 = (0..100).map(|k| z.probability(k)).sum();
        assert!((sum - 1.0).abs() < 1e-12);
        // p(0) / p(k) = (k+1)^s
        assert!((z.probability(0) / z.probability(9) - 10.0).abs() < 1e-9);
        assert_eq!(z.probability(100), 0.0);
        let u = Zipf::new(4, 0.0).unwrap();
        assert!((0..4).all(|k| (u.probability(k) - 0.25).abs() < 1e-12));
        assert!(Zipf::new(0, 1.0).is_err() && Zipf::new(3, -1.0).is_err());
    }

    #[test]
    fn single_rank() {
        let z = Zipf::new(1, 2.0).unwrap();
        let mut rng = SmallRng::seed_from_u64(1);
        assert!((0..1000).all(|_| z.sample(&mut rng) == 0));
    }
}
