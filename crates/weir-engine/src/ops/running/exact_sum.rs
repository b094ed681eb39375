//! Exact sums: of f64 values (correctly rounded once, when read) and of
//! i64 values (in i128).

use super::fixed::{load_fixed, save_fixed, split, Fixed};
use crate::state::{Damaged, StateReader, StateWriter};

/// The weight of bit 0 of an [`ExactSum`]: 2^-1074, the smallest
/// subnormal, of which every finite f64 is an integer multiple.
pub(super) const SUM_UNIT: i64 = 1074;

/// Counts of non-finite values, kept apart (rare: boxed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct NonFinite {
    nan: u64,
    pos_inf: u64,
    neg_inf: u64,
}

/// The exact sum of a multiset of f64 values, with exact removal.
///
/// Finite values are added into a fixed-point integer on the 2^-1074 grid
/// that covers only the chunks touched so far (typically 3–4 limbs, held
/// inline, for money-like values). [`ExactSum::value`] is the exact sum
/// correctly rounded to f64, round half to even: independent of the order
/// of additions and removals. Semantics:
///
/// - an exact zero gives +0.0 (also for sums of -0.0 alone);
/// - an exact sum beyond the f64 range rounds to ±infinity (as IEEE
///   rounding of the exact value does);
/// - non-finite inputs are counted, so they can be removed: the value is
///   NaN while any NaN or both infinities are present, ±infinity while
///   only that infinity is.
///
/// The count of values is the caller's (an empty sum reads +0.0).
#[derive(Clone, Debug, Default)]
pub struct ExactSum {
    fixed: Fixed,
    non_finite: Option<Box<NonFinite>>,
}

impl ExactSum {
    /// An empty sum.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `x`.
    #[inline]
    pub fn add(&mut self, x: f64) {
        self.apply(x, false);
    }

    /// Removes `x`, which must have been added: exactly undoes
    /// [`ExactSum::add`] of the same value.
    #[inline]
    pub fn remove(&mut self, x: f64) {
        self.apply(x, true);
    }

    #[inline]
    fn apply(&mut self, x: f64, remove: bool) {
        if !x.is_finite() {
            self.count_non_finite(x, remove);
            return;
        }
        if x == 0.0 {
            return;
        }
        let (neg, m, p) = split(x);
        self.fixed.add(neg != remove, m as u128, p);
    }

    #[cold]
    fn count_non_finite(&mut self, x: f64, remove: bool) {
        let nf = self.non_finite.get_or_insert_with(Default::default);
        let n = if x.is_nan() {
            &mut nf.nan
        } else if x > 0.0 {
            &mut nf.pos_inf
        } else {
            &mut nf.neg_inf
        };
        if remove {
            debug_assert!(*n > 0, "removing a non-finite value never added");
            *n = n.saturating_sub(1);
        } else {
            *n += 1;
        }
        if **nf == NonFinite::default() {
            self.non_finite = None;
        }
    }

    /// What the non-finite values make of the sum, if any are present.
    #[inline]
    pub(super) fn non_finite_value(&self) -> Option<f64> {
        let nf = self.non_finite.as_deref()?;
        Some(if nf.nan > 0 || (nf.pos_inf > 0 && nf.neg_inf > 0) {
            f64::NAN
        } else if nf.pos_inf > 0 {
            f64::INFINITY
        } else {
            f64::NEG_INFINITY
        })
    }

    /// The sum, correctly rounded (see the type's doc).
    pub fn value(&self) -> f64 {
        if let Some(v) = self.non_finite_value() {
            return v;
        }
        let (sign, mag) = self.fixed.magnitude();
        mag.to_f64(sign < 0, SUM_UNIT)
    }

    /// The exact finite part, for the variance.
    pub(super) fn fixed(&self) -> &Fixed {
        &self.fixed
    }

    /// Approximate heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.fixed.heap_bytes()
            + self
                .non_finite
                .as_ref()
                .map_or(0, |_| std::mem::size_of::<NonFinite>())
    }

    /// Writes the state for a checkpoint (a canonical form: equal sums of
    /// the same non-finite counts write the same bytes).
    pub fn save(&self, w: &mut StateWriter<'_>) {
        let nf = self.non_finite.as_deref().cloned().unwrap_or_default();
        w.u64(nf.nan);
        w.u64(nf.pos_inf);
        w.u64(nf.neg_inf);
        save_fixed(&self.fixed, w);
    }

    /// Reads back what [`ExactSum::save`] wrote.
    pub fn load(r: &mut StateReader<'_>) -> Result<Self, Damaged> {
        let nf = NonFinite {
            nan: r.u64()?,
            pos_inf: r.u64()?,
            neg_inf: r.u64()?,
        };
        let fixed = load_fixed(r)?;
        Ok(ExactSum {
            fixed,
            non_finite: (nf != NonFinite::default()).then(|| Box::new(nf)),
        })
    }
}

/// The exact sum of i64 values, in i128 (exact for any realistic count:
/// 2^64 additions of i64::MAX would be needed to overflow).
///
/// [`IntSum::value`] is `None` (NULL) when the exact sum of the values
/// present does not fit in an i64: the overflow rule applies to the
/// *final* sum only, so intermediate sums may exceed the range and come
/// back (unlike a checked fold, whose NULL depends on the order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IntSum {
    /// The i128 sum in two halves: eight-byte aligned, so the sum packs
    /// beside other accumulators without padding.
    lo: u64,
    hi: i64,
}

impl IntSum {
    /// An empty sum.
    pub fn new() -> Self {
        Self::default()
    }

    #[inline]
    fn sum(&self) -> i128 {
        ((self.hi as i128) << 64) | self.lo as i128
    }

    #[inline]
    fn set(&mut self, sum: i128) {
        self.lo = sum as u64;
        self.hi = (sum >> 64) as i64;
    }

    /// Adds `x`.
    #[inline]
    pub fn add(&mut self, x: i64) {
        self.set(self.sum() + x as i128);
    }

    /// Removes `x`, which must have been added.
    #[inline]
    pub fn remove(&mut self, x: i64) {
        self.set(self.sum() - x as i128);
    }

    /// The sum, or `None` when it does not fit in an i64.
    #[inline]
    pub fn value(&self) -> Option<i64> {
        i64::try_from(self.sum()).ok()
    }

    /// Writes the state for a checkpoint.
    pub fn save(&self, w: &mut StateWriter<'_>) {
        w.i64(self.lo as i64);
        w.i64(self.hi);
    }

    /// Reads back what [`IntSum::save`] wrote.
    pub fn load(r: &mut StateReader<'_>) -> Result<Self, Damaged> {
        let lo = r.i64()? as u64;
        let hi = r.i64()?;
        Ok(IntSum { lo, hi })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{any_value, exact, finite, ops, round, same};
    use super::*;
    use num_rational::BigRational;
    use num_traits::Zero;
    use proptest::prelude::*;

    /// The oracle: the exact rational sum of the values present,
    /// correctly rounded (written independently of `fixed.rs`), with this
    /// module's rules for zero and non-finite values.
    fn oracle(live: &[f64]) -> f64 {
        let nan = live.iter().any(|x| x.is_nan());
        let pos = live.contains(&f64::INFINITY);
        let neg = live.contains(&f64::NEG_INFINITY);
        if nan || (pos && neg) {
            return f64::NAN;
        }
        if pos {
            return f64::INFINITY;
        }
        if neg {
            return f64::NEG_INFINITY;
        }
        let mut s = BigRational::zero();
        for &v in live {
            s += exact(v);
        }
        round(&s)
    }

    fn sum_of(xs: &[f64]) -> f64 {
        let mut s = ExactSum::new();
        for &x in xs {
            s.add(x);
        }
        s.value()
    }

    #[test]
    fn exact_cases() {
        // Overflow in the middle does not matter; only the exact result.
        assert_eq!(sum_of(&[1e308, 1e308, -1e308]), 1e308);
        let mut s = ExactSum::new();
        s.add(1e308);
        s.add(1e308);
        assert_eq!(s.value(), f64::INFINITY);
        s.remove(1e308);
        assert_eq!(s.value(), 1e308);
        // The exact sum of the doubles 0.1, 0.2, 0.3 rounds to 0.6 (a
        // left-to-right float sum gives 0.6000000000000001).
        assert_eq!(sum_of(&[0.1, 0.2, 0.3]), 0.6);
        assert_eq!(0.1 + 0.2 + 0.3, 0.6000000000000001);
        // Ties round to even; anything below a tie breaks it.
        let e = f64::EPSILON; // 2^-52
        assert_eq!(sum_of(&[1.0, e / 2.0]), 1.0);
        assert_eq!(sum_of(&[1.0, e, e / 2.0]), 1.0 + 2.0 * e);
        assert_eq!(sum_of(&[1.0, e / 2.0, f64::from_bits(1)]), 1.0 + e);
        assert_eq!(sum_of(&[-1.0, -e / 2.0, -f64::from_bits(1)]), -1.0 - e);
        // The largest finite value plus half an ulp is a tie rounding to
        // an even mantissa: beyond the range, infinity.
        let half_ulp = 2f64.powi(970);
        assert_eq!(sum_of(&[f64::MAX, half_ulp]), f64::INFINITY);
        assert_eq!(sum_of(&[f64::MAX, half_ulp, -f64::from_bits(1)]), f64::MAX);
        assert_eq!(sum_of(&[f64::MAX, f64::MAX, -f64::MAX]), f64::MAX);
        // Subnormals are exact.
        let tiny = f64::from_bits(1);
        assert_eq!(sum_of(&[tiny, tiny, tiny]), f64::from_bits(3));
        assert_eq!(
            sum_of(&[f64::MIN_POSITIVE, -tiny]),
            f64::from_bits((1 << 52) - 1)
        );
        // Zeros: +0.0, whatever their signs.
        assert_eq!(sum_of(&[-0.0, -0.0]).to_bits(), 0);
        assert_eq!(sum_of(&[]).to_bits(), 0);
        assert_eq!(sum_of(&[1.5, -1.5]).to_bits(), 0);
        // Huge and tiny: nothing is lost.
        assert_eq!(sum_of(&[1e300, tiny, -1e300]), tiny);
        // Non-finite values.
        let mut s = ExactSum::new();
        s.add(f64::INFINITY);
        s.add(1.0);
        assert_eq!(s.value(), f64::INFINITY);
        s.add(f64::NEG_INFINITY);
        assert!(s.value().is_nan());
        s.remove(f64::INFINITY);
        assert_eq!(s.value(), f64::NEG_INFINITY);
        s.add(f64::NAN);
        s.remove(f64::NEG_INFINITY);
        assert!(s.value().is_nan());
        s.remove(f64::NAN);
        assert_eq!(s.value(), 1.0);
        assert!(s.non_finite.is_none());
    }

    #[test]
    fn money_like_sums_stay_inline() {
        let mut s = ExactSum::new();
        for i in 0..10_000u32 {
            s.add(i as f64 * 0.01 + 1234.56);
        }
        for i in 0..9_000u32 {
            s.remove(i as f64 * 0.01 + 1234.56);
        }
        assert_eq!(s.heap_bytes(), 0);
        let want = oracle(
            &(9_000..10_000u32)
                .map(|i| i as f64 * 0.01 + 1234.56)
                .collect::<Vec<_>>(),
        );
        assert_eq!(s.value().to_bits(), want.to_bits());
    }

    #[test]
    fn int_sum_is_null_only_when_the_final_sum_overflows() {
        let mut s = IntSum::new();
        s.add(i64::MAX);
        s.add(1);
        assert_eq!(s.value(), None);
        s.add(-2);
        assert_eq!(s.value(), Some(i64::MAX - 1));
        s.remove(i64::MAX); // -1
        s.add(i64::MIN);
        assert_eq!(s.value(), None);
        s.add(2);
        assert_eq!(s.value(), Some(i64::MIN + 1));
        let mut buf = Vec::new();
        s.add(i64::MIN);
        s.save(&mut StateWriter(&mut buf));
        let back = IntSum::load(&mut StateReader::new(&buf)).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.value(), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn sum_matches_exact_rationals_after_every_step(steps in ops(finite(), 80)) {
            check(&steps)?;
        }

        #[test]
        fn sum_with_non_finite_matches_after_every_step(steps in ops(any_value(), 80)) {
            check(&steps)?;
        }

        #[test]
        fn int_sum_matches_i128(xs in prop::collection::vec(any::<i64>(), 0..40), k in 0usize..40) {
            let mut s = IntSum::new();
            for &x in &xs {
                s.add(x);
            }
            let k = k.min(xs.len());
            for &x in &xs[..k] {
                s.remove(x);
            }
            let want: i128 = xs[k..].iter().map(|&x| x as i128).sum();
            prop_assert_eq!(s.value(), i64::try_from(want).ok());
        }
    }

    fn check(ops: &[Result<f64, usize>]) -> Result<(), TestCaseError> {
        let mut s = ExactSum::new();
        let mut live: Vec<f64> = Vec::new();
        for op in ops {
            match *op {
                Ok(x) => {
                    s.add(x);
                    live.push(x);
                }
                Err(i) if !live.is_empty() => {
                    let x = live.swap_remove(i % live.len());
                    s.remove(x);
                }
                Err(_) => {}
            }
            let want = oracle(&live);
            let got = s.value();
            prop_assert!(same(got, want), "{got:e} != {want:e} for {live:?}");
            // Checkpoints give back the same sum, which goes on the same.
            let mut buf = Vec::new();
            s.save(&mut StateWriter(&mut buf));
            let mut r = StateReader::new(&buf);
            let mut back = ExactSum::load(&mut r).unwrap();
            prop_assert!(r.done());
            prop_assert!(same(back.value(), got));
            back.add(1.0);
            s.add(1.0);
            prop_assert!(same(back.value(), s.value()));
            s.remove(1.0);
        }
        Ok(())
    }
}
