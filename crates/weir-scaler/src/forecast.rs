//! The predictive term's forecast: a Theil–Sen line through the input
//! rates of a sliding window.
//!
//! Theil–Sen (the median of the slopes between every pair of points, then
//! the median intercept) is chosen over Holt's double exponential
//! smoothing because it has no smoothing constants to tune per workload,
//! it is deterministic and order-free over the window, and it is robust:
//! up to 29 % of the points may be outliers (a scrape that caught a burst,
//! a worker restarting) before the line moves arbitrarily, where one wild
//! point shifts Holt's level and trend at once. Its cost, O(n²) pairs for
//! n points, is small at one point per scrape over a minute or two
//! (60 points: 1,770 slopes).

use std::collections::VecDeque;

/// The most points kept: older ones are dropped first, whatever the
/// window, so a fit stays cheap at short intervals.
pub const MAX_POINTS: usize = 240;

/// A fitted line `rate = intercept + slope × t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    pub slope: f64,
    pub intercept: f64,
}

impl Fit {
    /// The line's value at `t`.
    pub fn at(&self, t: f64) -> f64 {
        self.intercept + self.slope * t
    }
}

/// Points `(t, rate)` over the last `window` seconds.
#[derive(Debug, Clone)]
pub struct TheilSen {
    window: f64,
    points: VecDeque<(f64, f64)>,
}

impl TheilSen {
    pub fn new(window: f64) -> TheilSen {
        TheilSen {
            window,
            points: VecDeque::new(),
        }
    }

    /// Adds a point and drops those older than the window. A point at or
    /// before the newest one replaces the points from its time on (a clock
    /// that went back, or a repeated tick).
    pub fn push(&mut self, t: f64, rate: f64) {
        if !t.is_finite() || !rate.is_finite() {
            return;
        }
        while self.points.back().is_some_and(|&(u, _)| u >= t) {
            self.points.pop_back();
        }
        self.points.push_back((t, rate));
        while self
            .points
            .front()
            .is_some_and(|&(u, _)| u < t - self.window)
            || self.points.len() > MAX_POINTS
        {
            self.points.pop_front();
        }
    }

    /// The line through the window, once it holds 3 points or more (with
    /// fewer, one outlier would be the trend).
    pub fn fit(&self) -> Option<Fit> {
        let n = self.points.len();
        if n < 3 {
            return None;
        }
        let mut slopes = Vec::with_capacity(n * (n - 1) / 2);
        for (i, &(ti, yi)) in self.points.iter().enumerate() {
            for &(tj, yj) in self.points.iter().skip(i + 1) {
                // Times strictly increase (push keeps them so).
                slopes.push((yj - yi) / (tj - ti));
            }
        }
        let slope = median(&mut slopes);
        let mut intercepts: Vec<f64> = self.points.iter().map(|&(t, y)| y - slope * t).collect();
        let intercept = median(&mut intercepts);
        Some(Fit { slope, intercept })
    }
}

/// The median (the mean of the middle two for an even count).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_line_is_fitted_exactly() {
        let mut ts = TheilSen::new(60.0);
        for t in 0..10 {
            ts.push(t as f64, 1000.0 + 50.0 * t as f64);
        }
        let fit = ts.fit().unwrap();
        assert_eq!(fit.slope, 50.0);
        assert_eq!(fit.at(20.0), 2000.0);
    }

    #[test]
    fn an_outlier_does_not_move_the_line() {
        let mut ts = TheilSen::new(60.0);
        for t in 0..20 {
            let y = if t == 17 { 1e9 } else { 500.0 };
            ts.push(t as f64, y);
        }
        let fit = ts.fit().unwrap();
        assert_eq!(fit.slope, 0.0);
        assert_eq!(fit.at(35.0), 500.0);
    }

    #[test]
    fn old_points_leave_the_window_and_few_points_fit_nothing() {
        let mut ts = TheilSen::new(10.0);
        ts.push(0.0, 1.0);
        ts.push(1.0, 2.0);
        assert!(ts.fit().is_none());
        for t in 2..100 {
            ts.push(t as f64, 7.0);
        }
        assert_eq!(ts.points.len(), 11);
        assert_eq!(ts.fit().unwrap().at(1000.0), 7.0);
        // A clock going back replaces the newer points.
        ts.push(50.0, 3.0);
        assert_eq!(ts.points.back(), Some(&(50.0, 3.0)));
    }

    proptest! {
        /// With fewer than 29 % of the points corrupted, the fitted slope
        /// of a clean line stays the line's.
        #[test]
        fn robust_to_a_few_outliers(
            base in 0.0f64..1e6,
            slope in -1e4f64..1e4,
            bad in proptest::collection::btree_set(0usize..30, 0..5),
            junk in -1e9f64..1e9,
        ) {
            let mut ts = TheilSen::new(100.0);
            for t in 0..30 {
                let y = if bad.contains(&t) { junk } else { base + slope * t as f64 };
                ts.push(t as f64, y);
            }
            let fit = ts.fit().unwrap();
            prop_assert!((fit.slope - slope).abs() <= 1e-6 * (1.0 + slope.abs()),
                "slope {} vs {}", fit.slope, slope);
        }
    }
}
