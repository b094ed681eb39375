//! `approx_distinct` over a window that loses values: a multiset of
//! hashes, exact up to 1024 distinct, then the HyperLogLog estimate of
//! the distinct hashes present, maintained under removals.

use std::collections::HashMap;

use crate::hash::FastBuild;
use crate::state::{Damaged, StateReader, StateWriter};

/// Distinct counts up to this are exact (as `Distinct` in aggregate.rs).
const EXACT_LIMIT: usize = 1024;
/// HyperLogLog index bits: 4096 registers (as in aggregate.rs).
pub(crate) const HLL_BITS: u32 = 12;
const REGISTERS: usize = 1 << HLL_BITS;
/// Once built, the sketch is kept until the distinct count falls to this
/// (hysteresis: no rebuild per event around the exact limit).
const DROP_AT: usize = EXACT_LIMIT / 2;

/// The register and rank of a hash, for this sketch and fixed windows'
/// (`hll_add` in aggregate.rs): the same values give the same estimate.
#[inline]
pub(crate) fn hll_slot(h: u64) -> (usize, u8) {
    let idx = (h >> (64 - HLL_BITS)) as usize;
    let rest = (h << HLL_BITS) | (1 << (HLL_BITS - 1));
    let rank = rest.leading_zeros() as u8 + 1;
    (idx, rank)
}

/// 2^-rank as a multiple of 2^-64 (ranks are 0 to 53).
#[inline]
fn term(rank: u8) -> u128 {
    1 << (64 - rank as u32)
}

/// The HyperLogLog registers of the distinct hashes present, with what
/// removals need.
#[derive(Clone, Debug)]
struct Sketch {
    /// Distinct hashes present per (register, rank), keyed
    /// `register << 6 | rank`.
    ranks: HashMap<u64, u32, FastBuild>,
    /// Per register, the largest rank present (0: none).
    regs: Box<[u8]>,
    /// Registers at 0.
    zeros: u32,
    /// Σ 2^-regs[i], exactly, in units of 2^-64.
    sum: u128,
}

impl Sketch {
    fn new() -> Self {
        Sketch {
            ranks: HashMap::default(),
            regs: vec![0; REGISTERS].into_boxed_slice(),
            zeros: REGISTERS as u32,
            sum: REGISTERS as u128 * term(0),
        }
    }

    #[inline]
    fn key(reg: usize, rank: u8) -> u64 {
        (reg as u64) << 6 | rank as u64
    }

    fn add(&mut self, h: u64) {
        let (reg, rank) = hll_slot(h);
        *self.ranks.entry(Self::key(reg, rank)).or_insert(0) += 1;
        let old = self.regs[reg];
        if rank > old {
            self.set(reg, old, rank);
        }
    }

    fn remove(&mut self, h: u64) {
        let (reg, rank) = hll_slot(h);
        let key = Self::key(reg, rank);
        let Some(n) = self.ranks.get_mut(&key) else {
            debug_assert!(false, "removing a hash the sketch lacks");
            return;
        };
        *n -= 1;
        if *n > 0 {
            return;
        }
        self.ranks.remove(&key);
        if rank == self.regs[reg] {
            let next = (1..rank)
                .rev()
                .find(|&r| self.ranks.contains_key(&Self::key(reg, r)))
                .unwrap_or(0);
            self.set(reg, rank, next);
        }
    }

    #[inline]
    fn set(&mut self, reg: usize, old: u8, new: u8) {
        self.sum = self.sum - term(old) + term(new);
        self.zeros = self.zeros + (new == 0) as u32 - (old == 0) as u32;
        self.regs[reg] = new;
    }

    /// The estimate, with the formula of `Distinct::count` in aggregate.rs
    /// (the sum of 2^-register is exact here, correctly rounded once).
    fn estimate(&self) -> i64 {
        let m = REGISTERS as f64;
        // Exact scaling by 2^-64.
        let sum = self.sum as f64 * f64::from_bits((1023 - 64) << 52);
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / sum;
        let est = if raw <= 2.5 * m && self.zeros > 0 {
            m * (m / self.zeros as f64).ln()
        } else {
            raw
        };
        est.round() as i64
    }

    fn heap_bytes(&self) -> usize {
        // A hashbrown entry of 12 bytes padded to 16, plus a control byte.
        self.regs.len() + self.ranks.capacity() * 17
    }
}

/// `approx_distinct` of a window: a multiset of 64-bit hashes with
/// add and remove.
///
/// While at most 1024 distinct hashes are present the count is exact;
/// above, it is the HyperLogLog estimate of `Distinct` in aggregate.rs
/// over the distinct hashes present (registers = largest rank per
/// register), kept up to date in O(1) amortised per add and remove: per
/// register the count of hashes at each rank, the registers' maxima, the
/// count of empty registers and Σ 2^-register held exactly. That sum is
/// the one difference: `Distinct::count` adds 2^-register in f64 in
/// register order, which is exact (so the results are equal) as long as
/// every register is at most 40, that is, short of about 2^40 distinct
/// hashes or adversarial ones; beyond, this is the correctly rounded sum.
#[derive(Clone, Debug, Default)]
pub struct SlidingDistinct {
    hashes: HashMap<u64, u32, FastBuild>,
    sketch: Option<Box<Sketch>>,
}

impl SlidingDistinct {
    /// No hashes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one occurrence of `h`.
    pub fn add(&mut self, h: u64) {
        let n = self.hashes.entry(h).or_insert(0);
        *n += 1;
        if *n > 1 {
            return;
        }
        if let Some(s) = &mut self.sketch {
            s.add(h);
        } else if self.hashes.len() > EXACT_LIMIT {
            self.build();
        }
    }

    #[cold]
    fn build(&mut self) {
        let mut s = Sketch::new();
        for &h in self.hashes.keys() {
            s.add(h);
        }
        self.sketch = Some(Box::new(s));
    }

    /// Removes one occurrence of `h`, which must be present.
    pub fn remove(&mut self, h: u64) {
        let Some(n) = self.hashes.get_mut(&h) else {
            debug_assert!(false, "removing a hash never added");
            return;
        };
        *n -= 1;
        if *n > 0 {
            return;
        }
        self.hashes.remove(&h);
        if let Some(s) = &mut self.sketch {
            if self.hashes.len() <= DROP_AT {
                self.sketch = None;
            } else {
                s.remove(h);
            }
        }
    }

    /// The number of distinct hashes present (exact).
    pub fn distinct(&self) -> usize {
        self.hashes.len()
    }

    /// The `approx_distinct` result: exact up to 1024, else the estimate.
    pub fn count(&self) -> i64 {
        match &self.sketch {
            Some(s) if self.hashes.len() > EXACT_LIMIT => s.estimate(),
            _ => self.hashes.len() as i64,
        }
    }

    /// Approximate heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.hashes.capacity() * 17 + self.sketch.as_ref().map_or(0, |s| s.heap_bytes())
    }

    /// Writes the state for a checkpoint: the hashes and their counts, in
    /// hash order (the sketch is rebuilt on load).
    pub fn save(&self, w: &mut StateWriter<'_>) {
        let mut hs: Vec<(u64, u32)> = self.hashes.iter().map(|(&h, &n)| (h, n)).collect();
        hs.sort_unstable();
        w.u64(hs.len() as u64);
        for (h, n) in hs {
            w.i64(h as i64);
            w.u64(n as u64);
        }
    }

    /// Reads back what [`SlidingDistinct::save`] wrote.
    pub fn load(r: &mut StateReader<'_>) -> Result<Self, Damaged> {
        let len = r.count(9)?;
        let mut d = SlidingDistinct {
            hashes: HashMap::with_capacity_and_hasher(len, FastBuild::default()),
            sketch: None,
        };
        for _ in 0..len {
            let h = r.i64()? as u64;
            let n = u32::try_from(r.u64()?).map_err(|_| Damaged)?;
            if n == 0 || d.hashes.insert(h, n).is_some() {
                return Err(Damaged);
            }
        }
        if d.hashes.len() > EXACT_LIMIT {
            d.build();
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::round;
    use super::*;
    use crate::hash::mix64;
    use num_bigint::BigInt;
    use num_rational::BigRational;
    use num_traits::Zero;
    use proptest::prelude::*;

    /// `Distinct` of aggregate.rs rebuilt from scratch over the distinct
    /// hashes present (its `add`, `hll_add` and `count`, verbatim).
    fn oracle(live: &std::collections::BTreeSet<u64>) -> i64 {
        if live.len() <= 1024 {
            return live.len() as i64;
        }
        let regs = registers(live);
        let m = regs.len() as f64;
        let sum: f64 = regs.iter().map(|&r| 2f64.powi(-(r as i32))).sum();
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / sum;
        let zeros = regs.iter().filter(|&&r| r == 0).count();
        let est = if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        };
        est.round() as i64
    }

    fn registers(live: &std::collections::BTreeSet<u64>) -> Vec<u8> {
        let mut regs = vec![0u8; 1 << 12];
        for &h in live {
            let idx = (h >> (64 - 12)) as usize;
            let rest = (h << 12) | (1 << (12 - 1));
            let rank = rest.leading_zeros() as u8 + 1;
            if regs[idx] < rank {
                regs[idx] = rank;
            }
        }
        regs
    }

    /// A small deterministic generator for long operation sequences.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            mix64(self.0)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Adds and removes hashes drawn from `universe` so that the distinct
    /// count grows, shrinks, grows and shrinks (adding with odds `up`% in
    /// the growing quarters, 100 - `up`% in the others), and checks
    /// against the oracle at every step near the exact limit and every
    /// `every` steps elsewhere.
    /// Returns the most distinct hashes present at once and how often the
    /// sketch was built or dropped.
    fn wander(seed: u64, universe: &[u64], steps: usize, up: u64, every: usize) -> (usize, usize) {
        let mut rng = Rng(seed);
        let mut d = SlidingDistinct::new();
        let mut live: Vec<u64> = Vec::new();
        let mut set = std::collections::BTreeMap::<u64, u32>::new();
        let mut most = 0;
        let mut flips = 0;
        // Grow, shrink, grow: the phase decides the odds of adding.
        for step in 0..steps {
            let phase = (step * 4 / steps) % 2;
            let sketched = d.sketch.is_some();
            let add = live.is_empty() || rng.below(100) < if phase == 0 { up } else { 100 - up };
            if add {
                let h = universe[rng.below(universe.len() as u64) as usize];
                d.add(h);
                live.push(h);
                *set.entry(h).or_insert(0) += 1;
            } else {
                let h = live.swap_remove(rng.below(live.len() as u64) as usize);
                d.remove(h);
                let n = set.get_mut(&h).unwrap();
                *n -= 1;
                if *n == 0 {
                    set.remove(&h);
                }
            }
            assert_eq!(d.distinct(), set.len());
            most = most.max(set.len());
            flips += (d.sketch.is_some() != sketched) as usize;
            let near = set.len().abs_diff(EXACT_LIMIT) <= 4;
            if near || step % every == 0 {
                let keys = set.keys().copied().collect();
                assert_eq!(
                    d.count(),
                    oracle(&keys),
                    "step {step}, {} distinct",
                    set.len()
                );
            }
        }
        // Checkpoints give back the same count, which goes on the same.
        let mut buf = Vec::new();
        d.save(&mut StateWriter(&mut buf));
        let mut r = StateReader::new(&buf);
        let mut back = SlidingDistinct::load(&mut r).unwrap();
        assert!(r.done());
        assert_eq!(back.count(), d.count());
        for &h in universe.iter().take(50) {
            back.add(h);
            d.add(h);
        }
        assert_eq!(back.count(), d.count());
        (most, flips)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(6))]

        #[test]
        fn distinct_matches_a_rebuilt_sketch(seed in any::<u64>(), size in 2000usize..4000) {
            let universe: Vec<u64> = (0..size as u64).map(|i| mix64(i ^ seed)).collect();
            let (most, flips) = wander(seed, &universe, 8 * size, 85, 29);
            // Built, dropped below half the limit, built again.
            prop_assert!(most > EXACT_LIMIT && flips >= 3, "{} {}", most, flips);
        }
    }

    /// Up to about 20,000 distinct: the raw HyperLogLog estimate (above
    /// 2.5 × 4096), not only linear counting.
    #[test]
    fn distinct_counts_far_above_the_limit() {
        let universe: Vec<u64> = (0..1_000_000u64).map(mix64).collect();
        let (most, _) = wander(7, &universe, 100_000, 90, 997);
        assert!(most > 12_000, "{most}");
    }

    /// Hashes of chosen register and rank (rank up to 53).
    fn crafted(reg: u64, rank: u32, noise: u64) -> u64 {
        let rest = if rank >= 53 {
            0
        } else {
            (1u64 << 51 >> (rank - 1)) | (noise & ((1u64 << 51 >> (rank - 1)) - 1))
        };
        reg << 52 | rest
    }

    /// With registers above 40, the sum of 2^-register is the exact one,
    /// correctly rounded (checked with rationals).
    #[test]
    fn high_ranks_use_the_exact_sum() {
        let mut rng = Rng(3);
        let mut d = SlidingDistinct::new();
        let mut set = std::collections::BTreeSet::new();
        for i in 0..3000u64 {
            let reg = rng.below(4096);
            let rank = if i % 3 == 0 {
                41 + rng.below(13) as u32
            } else {
                1 + rng.below(6) as u32
            };
            let h = crafted(reg, rank, rng.next());
            assert_eq!(hll_slot(h), (reg as usize, rank as u8));
            d.add(h);
            set.insert(h);
        }
        let gone: Vec<u64> = set.iter().copied().step_by(5).take(300).collect();
        let mut live = set;
        for h in gone {
            d.remove(h);
            live.remove(&h);
        }
        assert_eq!(d.distinct(), live.len());
        let regs = registers(&live);
        let mut sum = BigRational::zero();
        for &r in &regs {
            sum += BigRational::new(BigInt::from(1), BigInt::from(1) << r as usize);
        }
        let sum = round(&sum);
        let m = 4096f64;
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / sum;
        let zeros = regs.iter().filter(|&&r| r == 0).count();
        let est = if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        };
        assert_eq!(d.count(), est.round() as i64);
    }

    #[test]
    fn exact_up_to_the_limit_and_dropped_below_half() {
        let mut d = SlidingDistinct::new();
        for i in 0..1024u64 {
            d.add(mix64(i));
            d.add(mix64(i));
        }
        assert_eq!(d.count(), 1024);
        assert!(d.sketch.is_none());
        d.add(mix64(5000));
        assert!(d.sketch.is_some());
        d.remove(mix64(5000));
        assert_eq!(d.count(), 1024);
        assert!(d.sketch.is_some());
        for i in 0..600u64 {
            d.remove(mix64(i));
            d.remove(mix64(i));
        }
        assert_eq!(d.count(), 424);
        assert!(d.sketch.is_none());
    }
}
