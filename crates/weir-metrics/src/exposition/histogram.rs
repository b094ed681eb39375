//! Histogram maths of an exposition's readers (`weir top`): the increase between two scrapes and
//! quantiles estimated from cumulative buckets as Prometheus'
//! `histogram_quantile` does.

/// One histogram: cumulative bucket counts by upper bound.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// `(le, cumulative count)`, sorted by `le`.
    pub buckets: Vec<(f64, f64)>,
    pub count: Option<f64>,
    pub sum: Option<f64>,
}

impl Histogram {
    /// Observations in total (the `+Inf` bucket, else `_count`).
    pub fn total(&self) -> f64 {
        match self.buckets.last() {
            Some((le, c)) if *le == f64::INFINITY => *c,
            _ => self.count.unwrap_or(0.0),
        }
    }

    /// The increase from `prev` to `self`, if they have the same buckets;
    /// after a reset (a count went down), `self` itself.
    pub fn since(&self, prev: &Histogram) -> Option<Histogram> {
        if self.buckets.len() != prev.buckets.len()
            || self
                .buckets
                .iter()
                .zip(&prev.buckets)
                .any(|(a, b)| a.0 != b.0)
        {
            return None;
        }
        if self.total() < prev.total() {
            return Some(self.clone());
        }
        let sub = |a: Option<f64>, b: Option<f64>| Some((a? - b?).max(0.0));
        Some(Histogram {
            buckets: self
                .buckets
                .iter()
                .zip(&prev.buckets)
                .map(|(a, b)| (a.0, (a.1 - b.1).max(0.0)))
                .collect(),
            count: sub(self.count, prev.count),
            sum: sub(self.sum, prev.sum),
        })
    }

    /// The `q` quantile estimated as Prometheus' `histogram_quantile`
    /// does: linear interpolation within the bucket holding the rank (the
    /// first bucket's lower bound is 0); a rank in the `+Inf` bucket gives
    /// the highest finite bound. `None` without observations or without a
    /// `+Inf` bucket.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let (last_le, _) = *self.buckets.last()?;
        if last_le != f64::INFINITY || !(0.0..=1.0).contains(&q) {
            return None;
        }
        // Counts must not go down from bucket to bucket; a scrape racing
        // with observations can make them.
        let mut running = 0.0f64;
        let buckets: Vec<(f64, f64)> = self
            .buckets
            .iter()
            .map(|&(le, c)| {
                running = running.max(c);
                (le, running)
            })
            .collect();
        let total = running;
        if total.is_nan() || total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let i = buckets.iter().position(|&(_, c)| c >= rank)?;
        if i == buckets.len() - 1 {
            return Some(if i == 0 { 0.0 } else { buckets[i - 1].0 });
        }
        let (upper, count) = buckets[i];
        let (lower, below) = if i == 0 {
            if upper <= 0.0 {
                return Some(upper);
            }
            (0.0, 0.0)
        } else {
            buckets[i - 1]
        };
        let in_bucket = count - below;
        if in_bucket <= 0.0 {
            return Some(upper);
        }
        Some(lower + (upper - lower) * (rank - below) / in_bucket)
    }
}

/// A quantile estimate and whether it covers only the interval between the
/// scrapes (`false`: everything since the process started, as there was
/// no traffic in the interval).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub value: f64,
    pub interval: bool,
}

/// The `q` quantile of a histogram over the interval if it saw
/// observations, else over its whole life.
pub fn estimate(prev: Option<&Histogram>, cur: &Histogram, q: f64) -> Option<Estimate> {
    if let Some(delta) = prev.and_then(|p| cur.since(p)) {
        if delta.total() > 0.0 {
            if let Some(value) = delta.quantile(q) {
                return Some(Estimate {
                    value,
                    interval: true,
                });
            }
        }
    }
    cur.quantile(q).map(|value| Estimate {
        value,
        interval: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(buckets: &[(f64, f64)]) -> Histogram {
        Histogram {
            buckets: buckets.to_vec(),
            count: buckets.last().map(|b| b.1),
            sum: None,
        }
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let inf = f64::INFINITY;
        let h = hist(&[(0.1, 50.0), (0.2, 90.0), (1.0, 100.0), (inf, 100.0)]);
        let close = |a: Option<f64>, b: f64| {
            let a = a.unwrap();
            assert!((a - b).abs() < 1e-9, "{a} != {b}");
        };
        close(h.quantile(0.5), 0.1);
        close(h.quantile(0.25), 0.05);
        close(h.quantile(0.7), 0.15);
        close(h.quantile(0.99), 0.2 + 0.8 * 0.9);
        close(h.quantile(1.0), 1.0);
        // A rank in the +Inf bucket gives the highest finite bound.
        let h = hist(&[(0.1, 50.0), (1.0, 90.0), (inf, 100.0)]);
        close(h.quantile(0.99), 1.0);
        // No observations, no +Inf bucket, nothing at all: no estimate.
        assert_eq!(hist(&[(0.1, 0.0), (inf, 0.0)]).quantile(0.5), None);
        assert_eq!(hist(&[(0.1, 5.0)]).quantile(0.5), None);
        assert_eq!(hist(&[]).quantile(0.5), None);
        // Non-monotonic counts are evened out.
        let h = hist(&[(0.1, 50.0), (0.2, 40.0), (inf, 100.0)]);
        close(h.quantile(0.5), 0.1);
    }

    #[test]
    fn interval_quantiles_use_the_increase_else_all_time() {
        let inf = f64::INFINITY;
        let prev = hist(&[(0.01, 100.0), (1.0, 100.0), (inf, 100.0)]);
        let cur = hist(&[(0.01, 100.0), (1.0, 200.0), (inf, 200.0)]);
        let e = estimate(Some(&prev), &cur, 0.5).unwrap();
        assert!(e.interval);
        assert!((e.value - 0.505).abs() < 1e-9, "{}", e.value);
        // No traffic in the interval: cumulative, marked.
        let e = estimate(Some(&cur), &cur, 0.5).unwrap();
        assert!(!e.interval);
        assert!((e.value - 0.01).abs() < 1e-9);
        // A reset (process restarted) counts from zero.
        let small = hist(&[(0.01, 0.0), (1.0, 4.0), (inf, 4.0)]);
        let e = estimate(Some(&cur), &small, 0.5).unwrap();
        assert!(e.interval);
        // Different buckets: cumulative.
        let other = hist(&[(0.5, 100.0), (inf, 300.0)]);
        assert!(!estimate(Some(&cur), &other, 0.5).unwrap().interval);
        assert!(!estimate(None, &cur, 0.5).unwrap().interval);
    }
}
