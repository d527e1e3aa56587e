//! Small statistics over measured samples: nearest-rank percentiles, fixed-width histograms and
//! per-second counts, for the report and `summary.json`.

use serde::Serialize;

/// Distribution of one measurement, seconds unless said otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Distribution {
    pub count: usize,
    pub min: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
}

/// The `p`-th percentile (0 < p <= 100) of ascending `sorted` by nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

impl Distribution {
    pub fn of(values: &[f64]) -> Distribution {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        let count = v.len();
        Distribution {
            count,
            min: v.first().copied(),
            p50: percentile(&v, 50.0),
            p90: percentile(&v, 90.0),
            p99: percentile(&v, 99.0),
            max: v.last().copied(),
            mean: (count > 0).then(|| v.iter().sum::<f64>() / count as f64),
        }
    }
}

/// `bins` equal-width bins from 0 to the largest value: (low, high, count).
pub fn histogram(values: &[f64], bins: usize) -> Vec<(f64, f64, f64)> {
    let max = values.iter().copied().filter(|x| x.is_finite()).fold(0.0_f64, f64::max);
    if values.is_empty() || bins == 0 {
        return Vec::new();
    }
    let width = if max > 0.0 { max / bins as f64 } else { 1.0 };
    let mut counts = vec![0.0; bins];
    for &v in values.iter().filter(|x| x.is_finite()) {
        let i = ((v.max(0.0) / width) as usize).min(bins - 1);
        counts[i] += 1.0;
    }
    counts.into_iter().enumerate().map(|(i, c)| (i as f64 * width, (i + 1) as f64 * width, c)).collect()
}

/// How many of `times` (seconds since start) fall in each whole second from 0 to `until`.
pub fn per_second(times: &[f64], until: f64) -> Vec<(f64, f64)> {
    let n = until.max(0.0).ceil() as usize + 1;
    let mut counts = vec![0.0; n];
    for &t in times.iter().filter(|t| t.is_finite() && **t >= 0.0) {
        if let Some(c) = counts.get_mut(t as usize) {
            *c += 1.0;
        }
    }
    counts.into_iter().enumerate().map(|(i, c)| (i as f64, c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let d = Distribution::of(&v);
        assert_eq!((d.p50, d.p90, d.p99, d.max, d.min), (Some(50.0), Some(90.0), Some(99.0), Some(100.0), Some(1.0)));
        assert_eq!(d.mean, Some(50.5));
        assert_eq!(Distribution::of(&[]).p50, None);
        assert_eq!(Distribution::of(&[3.0, f64::NAN]).count, 1);
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
    }

    #[test]
    fn histogram_and_rates() {
        let h = histogram(&[0.0, 1.0, 2.0, 3.9, 4.0], 4);
        assert_eq!(h.iter().map(|b| b.2).collect::<Vec<_>>(), vec![1.0, 1.0, 1.0, 2.0]);
        assert_eq!(h[3].1, 4.0);
        let r = per_second(&[0.1, 0.9, 2.5, 99.0], 3.0);
        assert_eq!(r, vec![(0.0, 2.0), (1.0, 0.0), (2.0, 1.0), (3.0, 0.0)]);
    }
}
