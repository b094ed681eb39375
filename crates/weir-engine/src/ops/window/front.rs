//! The running aggregates of a sliding window's key: one per aggregate,
//! over the key's *front window* (its events with time in
//! `(T - size, T]`, `T` its newest event time), kept up to date as events
//! enter and leave so an in-order event's aggregates are read in O(1)
//! amortised instead of rescanning its window.
//!
//! The accumulators come from [`crate::ops::running`]: their results do
//! not depend on the order values were added or removed in (float sums
//! are exact sums rounded once), so the running front window gives the
//! same bits as a rescan of the same events, which is what an
//! out-of-order event (inserted behind the newest) gets: its own window
//! is not the front window.

use smallvec::SmallVec;
use weir_config::{Aggregate, AggregateFunction};

use super::super::aggregate::{InputKind, Value};
use super::events::Layout;
use crate::ops::running::{ExactSum, Extremes, IntSum, Moments, SlidingDistinct};

/// One aggregate's running state.
pub(super) enum Running {
    /// `count(*)` or `count(col)`: values present.
    Count(i64),
    /// Integer sum and the number of values in it.
    IntSum(IntSum, i64),
    /// Float sum and the number of values in it (boxed: an exact sum is
    /// six words, and the largest variant sizes every accumulator).
    FloatSum(Box<ExactSum>, i64),
    /// Integer min or max.
    IntExt(Extremes<i64>),
    /// Float min or max.
    FloatExt(Extremes<f64>),
    /// avg, stddev or stddev_pop (boxed: the largest by far).
    Moments(Box<Moments>, AggregateFunction, bool),
    /// approx_distinct over value hashes.
    Distinct(Box<SlidingDistinct>),
}

impl Running {
    /// An empty accumulator for `agg` reading `kind` values.
    pub(super) fn new(agg: &Aggregate, kind: InputKind) -> Running {
        let float = kind == InputKind::Float;
        match agg.function {
            AggregateFunction::Count => Running::Count(0),
            AggregateFunction::Sum if float => Running::FloatSum(Box::new(ExactSum::new()), 0),
            AggregateFunction::Sum => Running::IntSum(IntSum::new(), 0),
            AggregateFunction::Min | AggregateFunction::Max => {
                let max = agg.function == AggregateFunction::Max;
                if float {
                    Running::FloatExt(Extremes::new(max))
                } else {
                    Running::IntExt(Extremes::new(max))
                }
            }
            f @ (AggregateFunction::Avg
            | AggregateFunction::StddevSamp
            | AggregateFunction::StddevPop) => Running::Moments(Box::new(Moments::new()), f, float),
            AggregateFunction::ApproxDistinct => {
                Running::Distinct(Box::new(SlidingDistinct::new()))
            }
        }
    }

    /// Back to empty, keeping allocations where that is cheap (the
    /// extremes' deques and the boxes).
    pub(super) fn reset(&mut self) {
        match self {
            Running::Count(n) => *n = 0,
            Running::IntSum(s, n) => {
                *s = IntSum::new();
                *n = 0;
            }
            Running::FloatSum(s, n) => {
                **s = ExactSum::new();
                *n = 0;
            }
            Running::IntExt(e) => e.clear(),
            Running::FloatExt(e) => e.clear(),
            Running::Moments(m, ..) => **m = Moments::new(),
            Running::Distinct(d) => **d = SlidingDistinct::new(),
        }
    }

    /// Adds a present value (`bits` per the input kind) of the event at
    /// `(time, seq)`; `newest`: no event of the window is after it.
    #[inline]
    pub(super) fn add(&mut self, time: i64, seq: u64, bits: u64, newest: bool) {
        match self {
            Running::Count(n) => *n += 1,
            Running::IntSum(s, n) => {
                s.add(bits as i64);
                *n += 1;
            }
            Running::FloatSum(s, n) => {
                s.add(f64::from_bits(bits));
                *n += 1;
            }
            Running::IntExt(e) if newest => e.push(time, seq, bits as i64),
            Running::IntExt(e) => e.insert(time, seq, bits as i64),
            Running::FloatExt(e) if newest => e.push(time, seq, f64::from_bits(bits)),
            Running::FloatExt(e) => e.insert(time, seq, f64::from_bits(bits)),
            Running::Moments(m, _, float) => m.add(as_f64(bits, *float)),
            Running::Distinct(d) => d.add(bits),
        }
    }

    /// Removes a present value that left the window (extremes leave
    /// through [`Running::evict_through`]).
    #[inline]
    pub(super) fn remove(&mut self, bits: u64) {
        match self {
            Running::Count(n) => *n -= 1,
            Running::IntSum(s, n) => {
                s.remove(bits as i64);
                *n -= 1;
            }
            Running::FloatSum(s, n) => {
                s.remove(f64::from_bits(bits));
                *n -= 1;
            }
            Running::IntExt(_) | Running::FloatExt(_) => {}
            Running::Moments(m, _, float) => m.remove(as_f64(bits, *float)),
            Running::Distinct(d) => d.remove(bits),
        }
    }

    /// The window now starts after `time`.
    #[inline]
    pub(super) fn evict_through(&mut self, time: i64) {
        match self {
            Running::IntExt(e) => e.evict_through(time),
            Running::FloatExt(e) => e.evict_through(time),
            _ => {}
        }
    }

    /// The aggregate of the window.
    #[inline]
    pub(super) fn result(&self) -> Value {
        match self {
            Running::Count(n) => Value::Int(*n),
            Running::IntSum(s, n) if *n > 0 => s.value().map_or(Value::Null, Value::Int),
            Running::FloatSum(s, n) if *n > 0 => Value::Float(s.value()),
            Running::IntSum(..) | Running::FloatSum(..) => Value::Null,
            Running::IntExt(e) => e.value().map_or(Value::Null, Value::Int),
            Running::FloatExt(e) => e.value().map_or(Value::Null, Value::Float),
            Running::Moments(m, f, _) => {
                let v = match f {
                    AggregateFunction::Avg => m.avg(),
                    AggregateFunction::StddevPop => m.stddev_pop(),
                    _ => m.stddev_samp(),
                };
                v.map_or(Value::Null, Value::Float)
            }
            Running::Distinct(d) => Value::Int(d.count()),
        }
    }
}

#[inline]
fn as_f64(bits: u64, float: bool) -> f64 {
    if float {
        f64::from_bits(bits)
    } else {
        bits as i64 as f64
    }
}

/// How many accumulators a key holds in line, in its own state: reading
/// them is then no cache miss of its own (most windows compute a few
/// aggregates; more spill to the heap).
const INLINE_AGGREGATES: usize = 3;

/// Running aggregates of a window over events laid out as
/// [`Layout`] says.
pub(super) struct FrontWindow {
    pub(super) aggs: SmallVec<[Running; INLINE_AGGREGATES]>,
}

impl FrontWindow {
    /// Empty accumulators for `aggs` reading `kinds`.
    pub(super) fn new(aggs: &[Aggregate], kinds: &[InputKind]) -> FrontWindow {
        FrontWindow {
            aggs: aggs
                .iter()
                .zip(kinds)
                .map(|(a, k)| Running::new(a, *k))
                .collect(),
        }
    }

    /// Prefetches the accumulators where they spilled to the heap.
    #[inline]
    pub(super) fn prefetch(&self) {
        if self.aggs.spilled() {
            crate::prefetch::prefetch(self.aggs.as_ptr());
        }
    }

    /// Prefetches the extremes' deques (reads the accumulators: after the
    /// state holding them, and [`FrontWindow::prefetch`]).
    #[inline]
    pub(super) fn prefetch_deques(&self) {
        for a in &self.aggs {
            match a {
                Running::IntExt(e) => e.prefetch(),
                Running::FloatExt(e) => e.prefetch(),
                _ => {}
            }
        }
    }

    /// Back to empty (for a rescan), without allocating.
    pub(super) fn reset(&mut self) {
        for a in &mut self.aggs {
            a.reset();
        }
    }

    /// Adds event `e` (laid out per `layout`, with the validity word when
    /// `bits`) as the event `seq`.
    #[inline(always)]
    pub(super) fn add(&mut self, layout: &Layout, bits: bool, e: &[u64], seq: u64, newest: bool) {
        let (time, valid) = (e[0] as i64, layout.bits(e, bits));
        for (i, a) in self.aggs.iter_mut().enumerate() {
            if valid & (1 << i) != 0 {
                a.add(time, seq, layout.value(e, bits, i), newest);
            }
        }
    }

    /// Removes event `e`, which left the window.
    #[inline]
    pub(super) fn remove(&mut self, layout: &Layout, bits: bool, e: &[u64]) {
        let valid = layout.bits(e, bits);
        for (i, a) in self.aggs.iter_mut().enumerate() {
            if valid & (1 << i) != 0 {
                a.remove(layout.value(e, bits, i));
            }
        }
    }

    /// The window now starts after `time`.
    #[inline]
    pub(super) fn evict_through(&mut self, time: i64) {
        for a in &mut self.aggs {
            a.evict_through(time);
        }
    }
}
