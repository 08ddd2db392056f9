//! Statistics the bench summary and the plots share, computed in one place
//! so a table and a figure of the same run always agree.

/// The smallest, the median and the largest of some values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    /// `None` without values. The median of an even count is the mean of the
    /// two middle values. Values sort by `f64::total_cmp`, so a NaN never
    /// panics: it counts as the largest.
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Some(Self {
            min: sorted[0],
            median,
            max: sorted[n - 1],
        })
    }
}

/// The coefficient of variation in %: the sample standard deviation over
/// the mean. `None` with fewer than two values or a mean of zero.
pub fn cv_pct(values: &[f64]) -> Option<f64> {
    let n = values.len();
    if n < 2 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if mean == 0.0 {
        return None;
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    Some(var.sqrt() / mean.abs() * 100.0)
}

/// The two-sided p-value of the Mann-Whitney U (rank-sum) test that `a`
/// and `b` come from the same distribution. Exact (every split of the
/// pooled ranks counted) when no value is tied and both sides have at most
/// [`EXACT_MAX`] values; otherwise the normal approximation with the tie
/// correction and a continuity correction.
pub fn mann_whitney_p(a: &[f64], b: &[f64]) -> f64 {
    let (n1, n2) = (a.len(), b.len());
    if n1 == 0 || n2 == 0 {
        return 1.0;
    }
    // U of `a`: pairs where a's value is larger, ties counting one half.
    let mut u2: f64 = 0.0; // twice U, to stay in whole numbers
    for x in a {
        for y in b {
            u2 += match x.total_cmp(y) {
                std::cmp::Ordering::Greater => 2.0,
                std::cmp::Ordering::Equal => 1.0,
                std::cmp::Ordering::Less => 0.0,
            };
        }
    }
    let u: f64 = u2 / 2.0;
    let mut pooled: Vec<f64> = a.iter().chain(b).copied().collect();
    pooled.sort_by(f64::total_cmp);
    let ties: Vec<usize> = pooled
        .chunk_by(|x, y| x == y)
        .map(<[f64]>::len)
        .filter(|len| *len > 1)
        .collect();
    let (n1f, n2f) = (n1 as f64, n2 as f64);
    let u_small = u.min(n1f * n2f - u);
    if ties.is_empty() && n1 <= EXACT_MAX && n2 <= EXACT_MAX {
        let counts = u_counts(n1, n2);
        let total: f64 = counts.iter().sum();
        let tail: f64 = counts.iter().take(u_small as usize + 1).sum();
        return (2.0 * tail / total).min(1.0);
    }
    let n = n1f + n2f;
    let tie_term: f64 = ties
        .iter()
        .map(|t| {
            let t = *t as f64;
            t * t * t - t
        })
        .sum();
    let var = n1f * n2f / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    if var <= 0.0 {
        return 1.0; // every value the same
    }
    let z = ((n1f * n2f / 2.0 - u_small) - 0.5).max(0.0) / var.sqrt();
    (2.0 * normal_upper_tail(z)).min(1.0)
}

/// Sides up to this size get the exact distribution of U.
pub const EXACT_MAX: usize = 30;

/// How many of the C(n1+n2, n1) splits give each U = 0, 1, …, n1·n2.
fn u_counts(n1: usize, n2: usize) -> Vec<f64> {
    // f[i][j][u]: splits of i values of one side and j of the other with U = u,
    // built up by adding the largest value to one side or the other.
    let mut f = vec![vec![Vec::<f64>::new(); n2 + 1]; n1 + 1];
    for (i, row) in f.iter_mut().enumerate() {
        for (j, cell) in row.iter_mut().enumerate() {
            if i == 0 || j == 0 {
                *cell = vec![1.0];
            }
        }
    }
    for i in 1..=n1 {
        for j in 1..=n2 {
            let mut counts = vec![0.0; i * j + 1];
            // The largest value on the first side beats all j of the other.
            for (u, c) in f[i - 1][j].iter().enumerate() {
                counts[u + j] += c;
            }
            for (u, c) in f[i][j - 1].iter().enumerate() {
                counts[u] += c;
            }
            f[i][j] = counts;
        }
    }
    std::mem::take(&mut f[n1][n2])
}

/// P(Z > z) for a standard normal Z (Abramowitz and Stegun 7.1.26 for erfc,
/// absolute error below 1.5e-7).
fn normal_upper_tail(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erfc = poly * (-x * x).exp();
    let erfc = if x >= 0.0 { erfc } else { 2.0 - erfc };
    erfc / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cv_is_the_sample_deviation_over_the_mean() {
        assert_eq!(cv_pct(&[5.0]), None);
        assert_eq!(cv_pct(&[0.0, 0.0]), None);
        assert_eq!(cv_pct(&[4.0, 4.0, 4.0]), Some(0.0));
        // mean 10, sample sd sqrt(((−1)² + 0 + 1²) / 2) = 1
        let cv = cv_pct(&[9.0, 10.0, 11.0]).unwrap();
        assert!((cv - 10.0).abs() < 1e-12, "{cv}");
    }

    /// Counted by hand: of the C(10, 5) = 252 splits of 5 against 5, one
    /// has U = 0 and four have U ≤ 2 (U = 0, 1, and the two ways to make 2).
    #[test]
    fn rank_test_exact_values() {
        let low = [1.0, 2.0, 3.0, 4.0, 5.0];
        let high = [6.0, 7.0, 8.0, 9.0, 10.0];
        let p = mann_whitney_p(&low, &high);
        assert!((p - 2.0 / 252.0).abs() < 1e-12, "{p}");
        assert_eq!(mann_whitney_p(&high, &low), p, "symmetric");
        // U = 2: 5 and 6 each beat the other side's 4, and nothing else.
        let p = mann_whitney_p(&[1.0, 2.0, 3.0, 5.0, 6.0], &[4.0, 7.0, 8.0, 9.0, 10.0]);
        assert!((p - 2.0 * 4.0 / 252.0).abs() < 1e-12, "{p}");
        // Interleaved: no evidence at all.
        let p = mann_whitney_p(&[1.0, 4.0, 5.0, 8.0, 9.0], &[2.0, 3.0, 6.0, 7.0, 10.0]);
        assert!(p > 0.5, "{p}");
    }

    /// With ties the normal approximation, worked by hand: U = 0, mean 12.5,
    /// variance 25/12 · (11 − 12/90) = 22.639, z = (12.5 − 0.5)/4.758 = 2.522,
    /// p = 2 · 0.005834 = 0.01167.
    #[test]
    fn rank_test_with_ties() {
        let p = mann_whitney_p(&[1.0, 2.0, 2.0, 3.0, 4.0], &[5.0, 6.0, 6.0, 7.0, 8.0]);
        assert!((p - 0.01167).abs() < 2e-4, "{p}");
        assert_eq!(mann_whitney_p(&[3.0; 5], &[3.0; 5]), 1.0);
    }

    fn spread(values: &[f64]) -> Option<(f64, f64, f64)> {
        Spread::of(values).map(|s| (s.min, s.median, s.max))
    }

    #[test]
    fn odd_and_even_counts_in_any_order() {
        assert_eq!(spread(&[]), None);
        assert_eq!(spread(&[4.0]), Some((4.0, 4.0, 4.0)));
        assert_eq!(spread(&[3.0, 1.0, 2.0]), Some((1.0, 2.0, 3.0)));
        assert_eq!(spread(&[20.0, 10.0]), Some((10.0, 15.0, 20.0)));
        assert_eq!(spread(&[5.0, -1.0, 7.0, 1.0]), Some((-1.0, 3.0, 7.0)));
    }

    #[test]
    fn a_nan_sorts_last_instead_of_panicking() {
        let s = Spread::of(&[f64::NAN, 1.0, 2.0]).unwrap();
        assert_eq!((s.min, s.median), (1.0, 2.0));
        assert!(s.max.is_nan());
    }
}
