//! Zipf sampler: the empirical distribution of many draws matches the exact probabilities.

#![allow(clippy::unwrap_used)]

use loadtest::zipf::Zipf;
use rand::SeedableRng;
use rand::rngs::SmallRng;

fn histogram(z: &Zipf, draws: usize, seed: u64) -> Vec<u64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut h = vec![0u64; z.len()];
    for _ in 0..draws {
        h[z.sample(&mut rng)] += 1;
    }
    h
}

/// Pearson's chi-square statistic of observed counts against the sampler's probabilities.
fn chi_square(z: &Zipf, h: &[u64], draws: usize) -> f64 {
    h.iter()
        .enumerate()
        .map(|(k, &o)| {
            let e = z.probability(k) * draws as f64;
            (o as f64 - e).powi(2) / e
        })
        .sum()
}

#[test]
fn frequencies_match_probabilities() {
    for (n, s) in [(100, 1.1), (200, 0.8), (10, 2.0), (50, 0.0)] {
        let z = Zipf::new(n, s).unwrap();
        let draws = 400_000;
        let h = histogram(&z, draws, 11);
        assert_eq!(h.iter().sum::<u64>(), draws as u64);
        // Every rank within 6 binomial standard deviations of its expectation.
        for (k, &o) in h.iter().enumerate() {
            let p = z.probability(k);
            let e = p * draws as f64;
            let sd = (draws as f64 * p * (1.0 - p)).sqrt();
            assert!((o as f64 - e).abs() <= 6.0 * sd + 1.0, "n={n} s={s} rank {k}: {o} vs {e:.1}");
        }
        // Chi-square with n-1 degrees of freedom: mean n-1, sd sqrt(2(n-1)); allow 6 sd.
        let df = (n - 1) as f64;
        let chi = chi_square(&z, &h, draws);
        assert!(chi < df + 6.0 * (2.0 * df).sqrt(), "n={n} s={s}: chi-square {chi:.1}, df {df}");
    }
}

#[test]
fn popularity_is_a_power_law() {
    let z = Zipf::new(1000, 1.0).unwrap();
    let draws = 1_000_000;
    let h = histogram(&z, draws, 5);
    // f(1)/f(k) ≈ k^s for the head of the distribution.
    for k in [2usize, 5, 10] {
        let ratio = h[0] as f64 / h[k - 1] as f64;
        assert!((ratio / k as f64 - 1.0).abs() < 0.08, "f(1)/f({k}) = {ratio:.2}");
    }
    // The top 1% of links take far more than 1% of the clicks (H(10)/H(1000) ≈ 39%).
    let top: u64 = h[..10].iter().sum();
    let share = top as f64 / draws as f64;
    assert!((share - 0.3908).abs() < 0.01, "top-10 share {share:.3}");
    // Uniform when s = 0.
    let u = Zipf::new(4, 0.0).unwrap();
    let h = histogram(&u, 100_000, 9);
    assert!(h.iter().all(|&c| (c as f64 / 25_000.0 - 1.0).abs() < 0.03), "{h:?}");
}

#[test]
fn same_seed_same_draws() {
    let z = Zipf::new(50, 1.2).unwrap();
    assert_eq!(histogram(&z, 1000, 3), histogram(&z, 1000, 3));
    assert_ne!(histogram(&z, 1000, 3), histogram(&z, 1000, 4));
}
