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
