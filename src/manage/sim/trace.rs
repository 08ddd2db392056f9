//! Loads over time, as data.

/// A value over time: straight lines between points, flat before the first
/// and after the last. Two points at the same time make a step.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace(Vec<(f64, f64)>);

impl Trace {
    pub fn flat(value: f64) -> Trace {
        Trace(vec![(0.0, value)])
    }

    /// Points as `(time_s, value)`, in time order.
    pub fn new(points: &[(f64, f64)]) -> Trace {
        assert!(
            !points.is_empty() && points.windows(2).all(|w| w[0].0 <= w[1].0),
            "a trace needs points in time order"
        );
        Trace(points.to_vec())
    }

    /// Holds each `(from_s, value)` until the next one starts.
    pub fn steps(steps: &[(f64, f64)]) -> Trace {
        let mut points = Vec::new();
        for (i, &(from_s, value)) in steps.iter().enumerate() {
            points.push((from_s, value));
            if let Some(&(next_s, _)) = steps.get(i + 1) {
                points.push((next_s, value));
            }
        }
        Trace::new(&points)
    }

    /// The points, `(time_s, value)` in time order.
    pub fn points(&self) -> &[(f64, f64)] {
        &self.0
    }

    pub fn at(&self, t_s: f64) -> f64 {
        let after = self.0.partition_point(|&(pt, _)| pt <= t_s);
        match (after.checked_sub(1).map(|i| self.0[i]), self.0.get(after)) {
            (None, _) => self.0[0].1,
            (Some((_, v)), None) => v,
            (Some((t0, v0)), Some(&(t1, v1))) => v0 + (v1 - v0) * (t_s - t0) / (t1 - t0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramps_and_steps() {
        let ramp = Trace::new(&[(10.0, 0.0), (20.0, 100.0), (20.0, 5.0)]);
        assert_eq!(ramp.at(0.0), 0.0);
        assert_eq!(ramp.at(15.0), 50.0);
        assert_eq!(ramp.at(19.9).round(), 99.0);
        assert_eq!(ramp.at(20.0), 5.0);
        assert_eq!(ramp.at(99.0), 5.0);
        let steps = Trace::steps(&[(0.0, 1.0), (30.0, 2.0)]);
        assert_eq!(
            (steps.at(29.9), steps.at(30.0), steps.at(60.0)),
            (1.0, 2.0, 2.0)
        );
    }
}
