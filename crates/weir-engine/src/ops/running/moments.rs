//! Count, exact sum and exact sum of squares: avg, var and stddev with
//! exact add and remove.

use super::exact_sum::ExactSum;
use super::fixed::{load_fixed, save_fixed, split, Fixed};
use crate::state::{Damaged, StateReader, StateWriter};

/// The weight of bit 0 of the sum of squares: 2^-2148, the square of the
/// sums' 2^-1074, so that the square of every finite f64 (from 2^-2148
/// to below 2^2048) is an exact integer.
const SQUARE_UNIT: i64 = 2148;

/// Running moments of f64 values (integers are converted to f64 first)
/// for `avg`, `stddev_pop` and `stddev_samp`.
///
/// Keeps n, the exact Σx (an [`ExactSum`]) and the exact Σx² of the
/// finite values (a fixed-point integer on the 2^-2148 grid, so no square
/// underflows or overflows: squares are exact for every finite x). The
/// results are functions of these exact quantities with a fixed sequence
/// of roundings, so they do not depend on the order of additions and
/// removals:
///
/// - `avg = round(Σx) / n`: the correctly rounded sum (as
///   [`ExactSum::value`]), then one f64 division by `n as f64`;
/// - `D = n·Σx² − (Σx)²` computed exactly (never negative), then
///   `var_pop = round(D) / ((n·n) as f64)` and
///   `var_samp = round(D) / ((n·(n−1)) as f64)`, `round` being correct
///   rounding to f64 (half to even, overflow to infinity) and the integer
///   products converted to f64 by correct rounding (exact below 2^53);
/// - `stddev = sqrt(var)` (correctly rounded by IEEE).
///
/// Because `round(D)` is an f64, `var` is infinite when `D` exceeds the
/// f64 range (values above about 1e154/n in magnitude) and loses
/// precision when `D` is subnormal (spreads below about 1e-154·n).
///
/// NULL rules: `avg` and `stddev_pop` need n ≥ 1, `stddev_samp` n ≥ 2.
/// Non-finite values: `avg` follows [`ExactSum::value`] (NaN with any NaN
/// or both infinities, else the infinity divided by n); `var` and
/// `stddev` are NaN while any non-finite value is present.
#[derive(Clone, Debug, Default)]
pub struct Moments {
    n: u64,
    sum: ExactSum,
    squares: Fixed,
}

impl Moments {
    /// No values.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `x`.
    #[inline]
    pub fn add(&mut self, x: f64) {
        self.n += 1;
        self.sum.add(x);
        self.square(x, false);
    }

    /// Removes `x`, which must have been added: exactly undoes
    /// [`Moments::add`] of the same value.
    #[inline]
    pub fn remove(&mut self, x: f64) {
        debug_assert!(self.n > 0, "removing from empty moments");
        self.n = self.n.saturating_sub(1);
        self.sum.remove(x);
        self.square(x, true);
    }

    #[inline]
    fn square(&mut self, x: f64, remove: bool) {
        if x.is_finite() && x != 0.0 {
            // x = m·2^(p-1074), so x² = m²·2^(2p-2148).
            let (_, m, p) = split(x);
            self.squares.add(remove, m as u128 * m as u128, 2 * p);
        }
    }

    /// The number of values (including NaN and infinities).
    #[inline]
    pub fn count(&self) -> u64 {
        self.n
    }

    /// The correctly rounded sum of the values.
    pub fn sum(&self) -> f64 {
        self.sum.value()
    }

    /// The mean, `None` without values.
    pub fn avg(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum.value() / self.n as f64)
    }

    /// `round(n·Σx² − (Σx)²)`, NaN with non-finite values present.
    fn rounded_d(&self) -> f64 {
        if self.sum.non_finite_value().is_some() {
            return f64::NAN;
        }
        let (_, s) = self.sum.fixed().magnitude();
        let (sign, q) = self.squares.magnitude();
        debug_assert!(sign >= 0);
        let nq = q.mul_u64(self.n);
        match nq.checked_sub(&s.square()) {
            Some(d) => d.to_f64(false, SQUARE_UNIT),
            None => {
                debug_assert!(false, "n·Σx² < (Σx)²: removals did not match additions");
                0.0
            }
        }
    }

    /// The population variance, `None` without values.
    pub fn var_pop(&self) -> Option<f64> {
        let n = self.n as u128;
        (n > 0).then(|| self.rounded_d() / (n * n) as f64)
    }

    /// The sample variance, `None` with fewer than two values.
    pub fn var_samp(&self) -> Option<f64> {
        let n = self.n as u128;
        (n > 1).then(|| self.rounded_d() / (n * (n - 1)) as f64)
    }

    /// The population standard deviation, `None` without values.
    pub fn stddev_pop(&self) -> Option<f64> {
        self.var_pop().map(f64::sqrt)
    }

    /// The sample standard deviation, `None` with fewer than two values.
    pub fn stddev_samp(&self) -> Option<f64> {
        self.var_samp().map(f64::sqrt)
    }

    /// Approximate heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.sum.heap_bytes() + self.squares.heap_bytes()
    }

    /// Writes the state for a checkpoint.
    pub fn save(&self, w: &mut StateWriter<'_>) {
        w.u64(self.n);
        self.sum.save(w);
        save_fixed(&self.squares, w);
    }

    /// Reads back what [`Moments::save`] wrote.
    pub fn load(r: &mut StateReader<'_>) -> Result<Self, Damaged> {
        Ok(Moments {
            n: r.u64()?,
            sum: ExactSum::load(r)?,
            squares: load_fixed(r)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{any_value, exact, finite, ops, round, same};
    use super::*;
    use num_rational::BigRational;
    use num_traits::Zero;
    use proptest::prelude::*;

    /// The oracle: exact rationals, then the documented roundings.
    struct Want {
        avg: Option<f64>,
        var_pop: Option<f64>,
        var_samp: Option<f64>,
    }

    fn oracle(live: &[f64]) -> Want {
        let n = live.len() as u128;
        if live.iter().any(|x| !x.is_finite()) {
            let nan = live.iter().any(|x| x.is_nan());
            let pos = live.contains(&f64::INFINITY);
            let neg = live.contains(&f64::NEG_INFINITY);
            let s = if nan || (pos && neg) {
                f64::NAN
            } else if pos {
                f64::INFINITY
            } else {
                f64::NEG_INFINITY
            };
            return Want {
                avg: Some(s / n as f64),
                var_pop: Some(f64::NAN),
                var_samp: (n > 1).then_some(f64::NAN),
            };
        }
        let mut s = BigRational::zero();
        let mut q = BigRational::zero();
        for &x in live {
            let e = exact(x);
            q += &e * &e;
            s += e;
        }
        let d = BigRational::from_integer((n as u64).into()) * q - &s * &s;
        assert!(!num_traits::Signed::is_negative(&d));
        let d = round(&d);
        Want {
            avg: (n > 0).then(|| round(&s) / n as f64),
            var_pop: (n > 0).then(|| d / (n * n) as f64),
            var_samp: (n > 1).then(|| d / (n * (n - 1)) as f64),
        }
    }

    fn same_opt(a: Option<f64>, b: Option<f64>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => same(a, b),
            (a, b) => a.is_none() && b.is_none(),
        }
    }

    fn check(steps: &[Result<f64, usize>]) -> Result<(), TestCaseError> {
        let mut m = Moments::new();
        let mut live: Vec<f64> = Vec::new();
        for step in steps {
            match *step {
                Ok(x) => {
                    m.add(x);
                    live.push(x);
                }
                Err(i) if !live.is_empty() => {
                    let x = live.swap_remove(i % live.len());
                    m.remove(x);
                }
                Err(_) => {}
            }
            let want = oracle(&live);
            prop_assert_eq!(m.count(), live.len() as u64);
            prop_assert!(
                same_opt(m.avg(), want.avg),
                "avg {:?} != {:?}",
                m.avg(),
                want.avg
            );
            prop_assert!(
                same_opt(m.var_pop(), want.var_pop),
                "var_pop {:?} != {:?} for {:?}",
                m.var_pop(),
                want.var_pop,
                live
            );
            prop_assert!(same_opt(m.var_samp(), want.var_samp));
            prop_assert!(same_opt(m.stddev_pop(), want.var_pop.map(f64::sqrt)));
            prop_assert!(same_opt(m.stddev_samp(), want.var_samp.map(f64::sqrt)));
        }
        // Checkpoints give back the same moments.
        let mut buf = Vec::new();
        m.save(&mut StateWriter(&mut buf));
        let mut r = StateReader::new(&buf);
        let back = Moments::load(&mut r).unwrap();
        prop_assert!(r.done());
        prop_assert_eq!(back.count(), m.count());
        prop_assert!(same_opt(back.avg(), m.avg()));
        prop_assert!(same_opt(back.var_samp(), m.var_samp()));
        Ok(())
    }

    /// Values around a common offset: the cancellation that makes the
    /// naive formula fail.
    fn offset() -> impl Strategy<Value = f64> {
        (
            prop_oneof![Just(0.0), Just(1e9), Just(-3e15), Just(1e-3)],
            -1000i64..1000,
        )
            .prop_map(|(base, d)| base + d as f64 * 0.125)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn moments_match_exact_rationals(steps in ops(finite(), 40)) {
            check(&steps)?;
        }

        #[test]
        fn moments_match_with_non_finite(steps in ops(any_value(), 30)) {
            check(&steps)?;
        }

        #[test]
        fn moments_match_near_an_offset(steps in ops(offset(), 60)) {
            check(&steps)?;
        }
    }

    #[test]
    fn known_values() {
        let mut m = Moments::new();
        assert_eq!(m.avg(), None);
        assert_eq!(m.stddev_pop(), None);
        m.add(3.0);
        assert_eq!(m.stddev_pop(), Some(0.0));
        assert_eq!(m.stddev_samp(), None);
        m.remove(3.0);
        for x in [2i64, 4, 4, 4, 5, 5, 7, 9] {
            m.add(x as f64);
        }
        assert_eq!(m.avg(), Some(5.0));
        // D = 8·232 − 40² = 256.
        assert_eq!(m.stddev_samp(), Some((256.0f64 / 56.0).sqrt()));
        assert_eq!(m.stddev_pop(), Some(2.0));
        // Exact where Welford's running sums are not: 1e9 + {0, 1, 2}
        // has D = 6.
        let mut m = Moments::new();
        for x in [1e9, 1e9 + 1.0, 1e9 + 2.0] {
            m.add(x);
        }
        assert_eq!(m.var_pop(), Some(6.0 / 9.0));
        // A constant window has exactly zero variance.
        let mut m = Moments::new();
        for _ in 0..7 {
            m.add(0.1);
        }
        assert_eq!(m.var_samp().map(f64::to_bits), Some(0));
        // Squares beyond the f64 range are exact; D is not, here.
        let mut m = Moments::new();
        m.add(1e200);
        m.add(-1e200);
        assert_eq!(m.avg(), Some(0.0));
        assert_eq!(m.var_pop(), Some(f64::INFINITY));
        m.remove(-1e200);
        assert_eq!(m.var_pop(), Some(0.0));
    }

    #[test]
    fn money_like_sizes() {
        let mut m = Moments::new();
        for i in 0..1000u32 {
            m.add(12.34 + i as f64 * 1.01);
        }
        // Reported in the module doc of `running`.
        assert!(m.heap_bytes() <= 64, "{}", m.heap_bytes());
    }
}
