//! Summaries of samples: median with min/max, nearest-rank percentiles.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub p99: f64,
}

/// Nearest-rank percentile of an ascending slice; `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Median (mean of the two middle values for an even count), min, max, p99 of the finite
/// samples; `None` when there are none.
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    let mut s: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    Some(Summary {
        n,
        median,
        min: s[0],
        max: s[n - 1],
        p99: percentile(&s, 99.0).unwrap_or(median),
    })
}

/// Points of the empirical CDF: (value, fraction of samples <= value).
pub fn cdf(samples: &[f64]) -> Vec<(f64, f64)> {
    let mut s: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
    s.sort_by(f64::total_cmp);
    let n = s.len() as f64;
    s.iter()
        .enumerate()
        .map(|(i, &v)| (v, (i + 1) as f64 / n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        let s = summarize(&[3.0, 1.0, 2.0, f64::NAN]).expect("some");
        assert_eq!((s.n, s.median, s.min, s.max), (3, 2.0, 1.0, 3.0));
        assert_eq!(
            summarize(&[1.0, 2.0, 3.0, 4.0]).map(|s| s.median),
            Some(2.5)
        );
        assert_eq!(summarize(&[]), None);
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(summarize(&hundred).map(|s| s.p99), Some(99.0));
        assert_eq!(cdf(&[2.0, 1.0]), vec![(1.0, 0.5), (2.0, 1.0)]);
    }

    proptest! {
        #[test]
        fn median_within_bounds(v in proptest::collection::vec(-1e9f64..1e9, 1..200)) {
            let s = summarize(&v).expect("non-empty");
            prop_assert!(s.min <= s.median && s.median <= s.max);
            prop_assert!(s.min <= s.p99 && s.p99 <= s.max);
            let c = cdf(&v);
            prop_assert_eq!(c.len(), v.len());
            prop_assert!(c.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1));
            prop_assert!((c[c.len() - 1].1 - 1.0).abs() < 1e-12);
        }
    }
}
