//! Running min or max over a window that loses its oldest entries: a
//! monotonic deque.

use std::collections::VecDeque;

use crate::state::{Damaged, StateReader, StateWriter};

/// A value [`Extremes`] can track: i64 or f64.
pub trait ExtremeValue: Copy + std::fmt::Debug {
    /// A key ordering values for the extreme sought: of two values, the
    /// one with the larger key wins (for `max`: the larger value; for
    /// `min`: the smaller one). Equal keys are equal values.
    fn rank(self, max: bool) -> i64;
    /// The value reported: the value itself, or one canonical NaN.
    fn canonical(self) -> Self;
    /// The value's bits, for checkpoints.
    fn to_word(self) -> u64;
    /// The value back from [`ExtremeValue::to_word`].
    fn from_word(w: u64) -> Self;
}

impl ExtremeValue for i64 {
    #[inline]
    fn rank(self, max: bool) -> i64 {
        if max {
            self
        } else {
            !self
        }
    }
    #[inline]
    fn canonical(self) -> Self {
        self
    }
    fn to_word(self) -> u64 {
        self as u64
    }
    fn from_word(w: u64) -> Self {
        w as i64
    }
}

impl ExtremeValue for f64 {
    /// IEEE 754 total order for numbers (so -0.0 < +0.0), NaN below every
    /// number for both min and max: NaN loses to any number, as with
    /// `f64::max`/`f64::min`.
    #[inline]
    fn rank(self, max: bool) -> i64 {
        if self.is_nan() {
            return i64::MIN;
        }
        // As in `f64::total_cmp`; never i64::MIN for a number.
        let b = self.to_bits() as i64;
        let t = b ^ (((b >> 63) as u64) >> 1) as i64;
        if max {
            t
        } else {
            !t
        }
    }
    #[inline]
    fn canonical(self) -> Self {
        if self.is_nan() {
            f64::NAN
        } else {
            self
        }
    }
    fn to_word(self) -> u64 {
        self.to_bits()
    }
    fn from_word(w: u64) -> Self {
        f64::from_bits(w)
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry<V> {
    time: i64,
    seq: u64,
    value: V,
}

impl<V> Entry<V> {
    #[inline]
    fn at(&self) -> (i64, u64) {
        (self.time, self.seq)
    }
}

/// The running min or max of a window of values ordered by arrival
/// `(time, seq)`, losing its oldest entries.
///
/// A monotonic deque: it keeps, in `(time, seq)` order, only the entries
/// no later entry dominates (for max: is at least as large), so ranks
/// strictly decrease from the front, the front is the extreme, and each
/// entry is pushed and popped once (O(1) amortised). The newest entry is
/// never dominated, so the deque is empty only when the window is.
///
/// Semantics, equal to a fold with `f64::max`/`f64::min` over the window
/// except for zeros: NaN is ignored unless every value is NaN (then the
/// result is the canonical `f64::NAN`); -0.0 is smaller than +0.0 (max of
/// both is +0.0, min is -0.0), a deterministic rule where the fold's
/// result depends on the platform and the order.
#[derive(Clone, Debug)]
pub struct Extremes<V> {
    max: bool,
    entries: VecDeque<Entry<V>>,
}

impl<V: ExtremeValue> Extremes<V> {
    /// An empty running max (`max` true) or min.
    pub fn new(max: bool) -> Self {
        Extremes {
            max,
            entries: VecDeque::new(),
        }
    }

    /// Prefetches the deque's ends (what the next push and eviction read).
    #[inline]
    pub fn prefetch(&self) {
        let (a, b) = self.entries.as_slices();
        crate::prefetch::prefetch(a.as_ptr());
        let back = if b.is_empty() { a } else { b };
        crate::prefetch::prefetch(back.as_ptr().wrapping_add(back.len().saturating_sub(1)));
    }

    /// Empties the deque, keeping its allocation.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Whether this is a max (else a min).
    pub fn is_max(&self) -> bool {
        self.max
    }

    /// Adds a value that arrived after every entry present (`(time, seq)`
    /// above theirs): the usual case.
    #[inline]
    pub fn push(&mut self, time: i64, seq: u64, value: V) {
        debug_assert!(self.entries.back().is_none_or(|e| e.at() < (time, seq)));
        let rank = value.rank(self.max);
        while self
            .entries
            .back()
            .is_some_and(|e| e.value.rank(self.max) <= rank)
        {
            self.entries.pop_back();
        }
        self.entries.push_back(Entry { time, seq, value });
    }

    /// Adds a value at any position in `(time, seq)` order (an
    /// out-of-order event inside the window). It is dropped when a later
    /// entry dominates it; otherwise it drops the earlier entries it
    /// dominates.
    pub fn insert(&mut self, time: i64, seq: u64, value: V) {
        let at = self.entries.partition_point(|e| e.at() < (time, seq));
        debug_assert!(self.entries.get(at).is_none_or(|e| e.at() != (time, seq)));
        if at == self.entries.len() {
            self.push(time, seq, value);
            return;
        }
        let rank = value.rank(self.max);
        // Ranks decrease from the front: the first later entry is the
        // largest of them.
        if self.entries[at].value.rank(self.max) >= rank {
            return;
        }
        // The earlier entries it dominates are those just before it.
        let from = self
            .entries
            .range(..at)
            .rev()
            .take_while(|e| e.value.rank(self.max) <= rank)
            .count();
        let from = at - from;
        self.entries.drain(from..at);
        self.entries.insert(from, Entry { time, seq, value });
    }

    /// Removes the entries with time at or before `time` (the window's
    /// front moved past them).
    #[inline]
    pub fn evict_through(&mut self, time: i64) {
        while self.entries.front().is_some_and(|e| e.time <= time) {
            self.entries.pop_front();
        }
    }

    /// The min or max, `None` when the window is empty.
    #[inline]
    pub fn value(&self) -> Option<V> {
        self.entries.front().map(|e| e.value.canonical())
    }

    /// Entries kept (at most the window's).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is kept (the window is empty).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Approximate heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry<V>>()
    }

    /// Writes the state for a checkpoint.
    pub fn save(&self, w: &mut StateWriter<'_>) {
        w.u8(self.max as u8);
        w.u64(self.entries.len() as u64);
        for e in &self.entries {
            w.i64(e.time);
            w.u64(e.seq);
            w.i64(e.value.to_word() as i64);
        }
    }

    /// Reads back what [`Extremes::save`] wrote (and checks the deque's
    /// order).
    pub fn load(r: &mut StateReader<'_>) -> Result<Self, Damaged> {
        let max = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(Damaged),
        };
        let n = r.count(17)?;
        let mut entries: VecDeque<Entry<V>> = VecDeque::with_capacity(n);
        for _ in 0..n {
            let e = Entry {
                time: r.i64()?,
                seq: r.u64()?,
                value: V::from_word(r.i64()? as u64),
            };
            if let Some(b) = entries.back() {
                if b.at() >= e.at() || b.value.rank(max) <= e.value.rank(max) {
                    return Err(Damaged);
                }
            }
            entries.push_back(e);
        }
        Ok(Extremes { max, entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the deque must equal: a fold over the entries present with
    /// the documented rule (NaN ignored unless all NaN; -0.0 < +0.0).
    fn fold_f64(live: &[(i64, u64, f64)], max: bool) -> Option<f64> {
        let pick = |a: f64, b: f64| -> f64 {
            if a.is_nan() {
                b
            } else if b.is_nan() || a.total_cmp(&b).is_ge() == max {
                a
            } else {
                b
            }
        };
        let v = live.iter().map(|e| e.2).reduce(pick)?;
        Some(if v.is_nan() { f64::NAN } else { v })
    }

    /// Today's fold in aggregate.rs.
    fn fold_std(live: &[(i64, u64, f64)], max: bool) -> Option<f64> {
        live.iter()
            .map(|e| e.2)
            .reduce(|a, b| if max { a.max(b) } else { a.min(b) })
    }

    #[derive(Debug, Clone)]
    enum Op<V> {
        /// A value at a time offset from the newest entry's time (negative
        /// offsets arrive out of order).
        Add(i64, V),
        /// Evict through the newest time minus this.
        Evict(i64),
    }

    fn ops<V: std::fmt::Debug + Clone>(
        values: impl Strategy<Value = V>,
    ) -> impl Strategy<Value = Vec<Op<V>>> {
        prop::collection::vec(
            prop_oneof![
                6 => (-6i64..4, values).prop_map(|(d, v)| Op::Add(d, v)),
                1 => (0i64..8).prop_map(Op::Evict),
            ],
            1..120,
        )
    }

    /// Runs `ops` through a deque and a list of entries present, checking
    /// after each step with `check(deque, entries present in order)`.
    fn run<V: ExtremeValue>(
        ops: &[Op<V>],
        max: bool,
        mut check: impl FnMut(&Extremes<V>, &[(i64, u64, V)]) -> Result<(), TestCaseError>,
    ) -> Result<(), TestCaseError> {
        let mut x = Extremes::new(max);
        let mut live: Vec<(i64, u64, V)> = Vec::new();
        let mut newest = 0i64;
        let mut seq = 0u64;
        let mut evicted = i64::MIN;
        for op in ops {
            match op {
                Op::Add(d, v) => {
                    let t = (newest + d).max(evicted.saturating_add(1));
                    seq += 1;
                    let at = live.partition_point(|e| (e.0, e.1) < (t, seq));
                    if at == live.len() {
                        x.push(t, seq, *v);
                    } else {
                        x.insert(t, seq, *v);
                    }
                    live.insert(at, (t, seq, *v));
                    newest = newest.max(t);
                }
                Op::Evict(d) => {
                    evicted = evicted.max(newest - d);
                    x.evict_through(evicted);
                    live.retain(|e| e.0 > evicted);
                }
            }
            prop_assert!(x.len() <= live.len());
            check(&x, &live)?;
        }
        // Checkpoints give back the same deque.
        let mut buf = Vec::new();
        x.save(&mut StateWriter(&mut buf));
        let mut r = StateReader::new(&buf);
        let back = Extremes::<V>::load(&mut r).unwrap();
        prop_assert!(r.done());
        prop_assert_eq!(back.len(), x.len());
        prop_assert_eq!(back.value().map(V::to_word), x.value().map(V::to_word));
        Ok(())
    }

    fn floats() -> impl Strategy<Value = f64> {
        prop_oneof![
            4 => (-20i32..20).prop_map(|v| v as f64 / 4.0),
            1 => Just(f64::NAN),
            1 => Just(-0.0),
            1 => Just(0.0),
            1 => Just(f64::INFINITY),
            1 => Just(f64::NEG_INFINITY),
            1 => any::<f64>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn int_extremes_match_a_rescan(steps in ops(-20i64..20), max in any::<bool>()) {
            run(&steps, max, |x, live| {
                let vals = live.iter().map(|e| e.2);
                let want = if max { vals.max() } else { vals.min() };
                prop_assert_eq!(x.value(), want);
                Ok(())
            })?;
        }

        #[test]
        fn int_extremes_at_the_limits(steps in ops(prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(0i64)]), max in any::<bool>()) {
            run(&steps, max, |x, live| {
                let vals = live.iter().map(|e| e.2);
                let want = if max { vals.max() } else { vals.min() };
                prop_assert_eq!(x.value(), want);
                Ok(())
            })?;
        }

        #[test]
        fn float_extremes_match_a_rescan(steps in ops(floats()), max in any::<bool>()) {
            run(&steps, max, |x, live| {
                let got = x.value();
                let want = fold_f64(live, max);
                prop_assert_eq!(got.map(f64::to_bits), want.map(f64::to_bits), "{:?}", live);
                // And today's `f64::max`/`min` fold, up to the sign of zero
                // and the NaN payload.
                let old = fold_std(live, max);
                let agrees = match (got, old) {
                    (Some(a), Some(b)) => a == b || (a.is_nan() && b.is_nan()),
                    (a, b) => a.is_none() && b.is_none(),
                };
                prop_assert!(agrees, "{:?} vs {:?}", got, old);
                Ok(())
            })?;
        }
    }

    #[test]
    fn zeros_and_nan() {
        let mut x = Extremes::new(true);
        x.push(1, 0, f64::NAN);
        assert!(x.value().unwrap().is_nan());
        x.push(2, 0, -0.0);
        x.push(3, 0, 0.0);
        assert_eq!(x.value().unwrap().to_bits(), 0);
        let mut n = Extremes::new(false);
        n.push(1, 0, 0.0);
        n.push(2, 0, -0.0);
        n.push(3, 0, f64::NAN);
        assert_eq!(n.value().unwrap().to_bits(), (-0.0f64).to_bits());
        n.evict_through(2);
        assert!(n.value().unwrap().is_nan());
        n.evict_through(3);
        assert_eq!(n.value(), None);
        // An out-of-order entry dominated by a later one is not kept.
        let mut m = Extremes::new(true);
        m.push(1, 0, 5i64);
        m.push(3, 0, 4);
        m.insert(2, 0, 3);
        assert_eq!(m.len(), 2);
        m.insert(2, 1, 6);
        assert_eq!(m.len(), 2);
        assert_eq!(m.value(), Some(6));
        m.evict_through(2);
        assert_eq!(m.value(), Some(4));
    }
}
