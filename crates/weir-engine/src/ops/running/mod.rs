//! Running (incremental) aggregates for sliding windows.
//!
//! A sliding window emits, for each event, the aggregates of its key's
//! events in `(t - size, t]`. Rescanning that window per event costs
//! O(window) per event. These accumulators instead keep the aggregates
//! of a key's *front window* up to date as events enter and leave it:
//! add and remove in O(1) amortised, read in O(1) (O(limbs) for floats).
//! The sliding window keeps them per key (`ops/window/front.rs`).
//!
//! Incremental results must be exactly those of a rescan of the same
//! window, whatever the order of arrival and eviction. Float `+=` cannot
//! do that (rounding depends on the order), so the semantics are
//! order-independent by construction:
//!
//! - [`ExactSum`]: sums of floats are the exact sum, correctly rounded
//!   (half to even) once when read; [`IntSum`]: integer sums in i128,
//!   NULL only when the final sum leaves the i64 range.
//! - [`Moments`]: avg/var/stddev from the exact count, Σx and Σx², with a
//!   fixed, documented sequence of roundings.
//! - [`Extremes`]: min/max with a monotonic deque ordered by arrival.
//! - [`SlidingDistinct`]: `approx_distinct` from a multiset of hashes,
//!   exact up to 1024 distinct, then the HyperLogLog estimate of the
//!   hashes present, maintained under removals.
//!
//! Every type checkpoints with `save`/`load` over
//! [`StateWriter`](crate::state::StateWriter) and
//! [`StateReader`](crate::state::StateReader) and reports approximate
//! heap bytes. Sizes on x86-64: `ExactSum` is 48 bytes with no heap for
//! sums spanning up to 4 chunks of 32 bits (money-like values: cents to
//! millions); `Moments` is 96 bytes plus the sum of squares' limbs on the
//! heap once they pass 4 (48 bytes for money-like values).

mod distinct;
mod exact_sum;
mod extremes;
mod fixed;
mod moments;
#[cfg(test)]
mod testing;

pub use distinct::SlidingDistinct;
pub(crate) use distinct::{hll_slot, HLL_BITS};
pub use exact_sum::{ExactSum, IntSum};
pub use extremes::{ExtremeValue, Extremes};
pub use moments::Moments;

#[cfg(test)]
mod tests {
    use super::*;

    /// The sizes the module doc reports.
    #[test]
    fn sizes() {
        assert_eq!(std::mem::size_of::<ExactSum>(), 48);
        assert_eq!(std::mem::size_of::<Moments>(), 96);
        // A sliding window of 1000 money-like values (decimal amounts with
        // cents, as parsed from text: full 53-bit mantissas) over many
        // events, between `lo` and `hi` cents.
        let window = |lo: u64, hi: u64| {
            let mut m = Moments::new();
            let mut s = ExactSum::new();
            let mut x = 12345u64;
            let mut vals = std::collections::VecDeque::new();
            for _ in 0..20_000 {
                x = crate::hash::mix64(x);
                let v = (lo + x % (hi - lo)) as f64 / 100.0;
                m.add(v);
                s.add(v);
                vals.push_back(v);
                if vals.len() > 1000 {
                    let old = vals.pop_front().unwrap();
                    m.remove(old);
                    s.remove(old);
                }
            }
            (s.heap_bytes(), m.heap_bytes())
        };
        let cents = window(1, 100_000_000); // 0.01 to 1e6
        let prices = window(100, 100_000); // 1.00 to 1000.00
        println!(
            "money 0.01..1e6: ExactSum heap {} B, Moments heap {} B",
            cents.0, cents.1
        );
        println!(
            "money 1..1000: ExactSum heap {} B, Moments heap {} B",
            prices.0, prices.1
        );
        assert_eq!(cents.0, 0);
        assert_eq!(prices.0, 0);
        assert!(cents.1 <= 48 && prices.1 <= 48, "{cents:?} {prices:?}");
    }
}
