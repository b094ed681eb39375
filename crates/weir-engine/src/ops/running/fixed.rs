//! Sparse fixed-point big integers: the exact core of
//! [`ExactSum`](super::ExactSum) and [`Moments`](super::Moments).
//!
//! A [`Fixed`] is `Σ limbs[i] · 2^(32·(base + i))`: 32-bit chunks held in
//! signed 64-bit limbs, so additions and subtractions are lazy (no carry
//! propagation) until a limb nears the i64 range. Only the chunk range
//! touched so far is stored, inline up to [`INLINE`] limbs (no heap for
//! money-like sums), on the heap beyond. The unit (the weight of bit 0) is
//! the caller's: 2^-1074 for sums of f64 (every finite f64 is an integer
//! multiple of it), 2^-2148 for sums of their squares.
//!
//! [`Mag`] is a normalised magnitude (plain u32 chunks) on the stack for
//! reading: rounding to f64 and the small products of the variance.

/// Limbs kept inline before spilling to the heap.
const INLINE: usize = 4;
/// A limb whose magnitude reaches this hands its high part to the next
/// limb (pieces added are below 2^34, so limbs stay far from i64 limits).
const CARRY_AT: u64 = 1 << 62;
/// The highest chunk index a [`Fixed`] may use. Squares of the largest
/// f64 on the 2^-2148 grid reach chunk 131; 2^64 of them add two chunks.
const MAX_CHUNK: usize = 136;
/// Chunks a [`Mag`] can hold: a [`Fixed`] plus the split of its top limb,
/// times a 64-bit count (two more chunks), or a square of a sum.
pub(super) const MAG_CHUNKS: usize = 144;

#[derive(Clone, Debug)]
enum Store {
    Inline {
        base: u8,
        len: u8,
        buf: [i64; INLINE],
    },
    Heap {
        base: u8,
        limbs: Box<[i64]>,
    },
}

/// A signed big integer over the chunks `[base, base + len)`, lazily
/// carried (see the module doc).
#[derive(Clone, Debug)]
pub(super) struct Fixed {
    store: Store,
}

impl Default for Fixed {
    fn default() -> Self {
        Fixed {
            store: Store::Inline {
                base: 0,
                len: 0,
                buf: [0; INLINE],
            },
        }
    }
}

impl Fixed {
    /// The chunk index of the first limb and the limbs.
    #[inline]
    pub(super) fn parts(&self) -> (usize, &[i64]) {
        match &self.store {
            Store::Inline { base, len, buf } => (*base as usize, &buf[..*len as usize]),
            Store::Heap { base, limbs } => (*base as usize, limbs),
        }
    }

    #[inline]
    fn parts_mut(&mut self) -> (usize, &mut [i64]) {
        match &mut self.store {
            Store::Inline { base, len, buf } => (*base as usize, &mut buf[..*len as usize]),
            Store::Heap { base, limbs } => (*base as usize, limbs),
        }
    }

    /// Replaces the contents with `limbs` starting at chunk `base`.
    fn set(&mut self, base: usize, limbs: &[i64]) {
        assert!(
            base + limbs.len() <= MAX_CHUNK + 1,
            "fixed-point sum out of range"
        );
        let base = if limbs.is_empty() { 0 } else { base as u8 };
        if limbs.len() <= INLINE {
            let mut buf = [0; INLINE];
            buf[..limbs.len()].copy_from_slice(limbs);
            self.store = Store::Inline {
                base,
                len: limbs.len() as u8,
                buf,
            };
        } else {
            self.store = Store::Heap {
                base,
                limbs: limbs.into(),
            };
        }
    }

    /// Heap bytes held.
    pub(super) fn heap_bytes(&self) -> usize {
        match &self.store {
            Store::Inline { .. } => 0,
            Store::Heap { limbs, .. } => limbs.len() * 8,
        }
    }

    /// Adds `±m · 2^p` (`m` below 2^107: a 53-bit mantissa or the 106-bit
    /// square of one).
    #[inline]
    pub(super) fn add(&mut self, neg: bool, m: u128, p: u32) {
        if m == 0 {
            return;
        }
        debug_assert!(m < 1 << 107);
        let tz = m.trailing_zeros();
        let (m, p) = (m >> tz, p + tz);
        let lo = (p / 32) as usize;
        let s = p % 32;
        // The pieces of m << s by chunk: each below 2^33 (the middle one
        // may take two overlapping parts).
        let a = ((m as u64) as u128) << s;
        let b = (m >> 64) << s;
        let pieces = [
            a as u64 & 0xffff_ffff,
            (a >> 32) as u64 & 0xffff_ffff,
            (a >> 64) as u64 + (b as u64 & 0xffff_ffff),
            (b >> 32) as u64 & 0xffff_ffff,
            (b >> 64) as u64,
        ];
        let last = pieces.iter().rposition(|&x| x != 0).unwrap_or(0);
        self.ensure(lo, lo + last);
        let (base, limbs) = self.parts_mut();
        let at = lo - base;
        let mut over = false;
        for (l, &x) in limbs[at..=at + last].iter_mut().zip(&pieces[..=last]) {
            if neg {
                *l -= x as i64;
            } else {
                *l += x as i64;
            }
            over |= l.unsigned_abs() >= CARRY_AT;
        }
        if over {
            self.normalize();
        }
    }

    /// Makes the stored range cover chunks `lo..=hi`.
    #[inline]
    fn ensure(&mut self, lo: usize, hi: usize) {
        let (base, limbs) = self.parts();
        if !limbs.is_empty() && lo >= base && hi < base + limbs.len() {
            return;
        }
        self.grow(lo, hi);
    }

    #[cold]
    fn grow(&mut self, lo: usize, hi: usize) {
        // Normalising first drops stale zero limbs left by removals.
        self.normalize();
        let (base, limbs) = self.parts();
        let (nlo, nhi) = if limbs.is_empty() {
            (lo, hi)
        } else {
            (lo.min(base), hi.max(base + limbs.len() - 1))
        };
        let mut buf = [0i64; MAX_CHUNK + 1];
        let at = base.saturating_sub(nlo);
        buf[at..at + limbs.len()].copy_from_slice(limbs);
        self.set(nlo, &buf[..nhi - nlo + 1]);
    }

    /// Propagates carries so every limb but the top one is in
    /// `[0, 2^32)` and the top one in `[-2^32, 2^32)`, then drops zero
    /// limbs at both ends (and a top limb of -1, folded into the one
    /// below): a canonical form for a value, empty for zero.
    pub(super) fn normalize(&mut self) {
        let (base, limbs) = self.parts();
        let mut buf = [0i64; MAX_CHUNK + 3];
        let mut len = limbs.len();
        buf[..len].copy_from_slice(limbs);
        let mut base = base;
        let mut i = 0;
        while i + 1 < len || (i + 1 == len && !(-(1 << 32)..1 << 32).contains(&buf[i])) {
            let c = buf[i] >> 32;
            buf[i] -= c << 32;
            if i + 1 == len {
                len += 1;
            }
            buf[i + 1] += c;
            i += 1;
        }
        while len > 0 && buf[len - 1] == 0 {
            len -= 1;
        }
        while len > 1 && buf[len - 1] == -1 {
            len -= 1;
            buf[len - 1] -= 1 << 32;
        }
        let mut first = 0;
        while first < len && buf[first] == 0 {
            first += 1;
        }
        base += first;
        self.set(base, &buf[first..len]);
    }

    /// The sign (-1, 0 or 1) and the magnitude.
    pub(super) fn magnitude(&self) -> (i8, Mag) {
        let (base, limbs) = self.parts();
        let mut mag = Mag::zero(base as i64);
        let len = limbs.len();
        if len == 0 {
            return (0, mag);
        }
        let mut v = [0i64; MAX_CHUNK + 1];
        v[..len].copy_from_slice(limbs);
        propagate(&mut v[..len]);
        let top = v[len - 1];
        let sign = if top < 0 {
            -1
        } else if top > 0 || v[..len - 1].iter().any(|&x| x != 0) {
            1
        } else {
            return (0, mag);
        };
        if sign < 0 {
            for x in &mut v[..len] {
                *x = -*x;
            }
            propagate(&mut v[..len]);
        }
        for (d, &x) in mag.d.iter_mut().zip(&v[..len]) {
            *d = x as u32;
        }
        // The top limb (now non-negative, below 2^63) spans two chunks.
        mag.d[len] = (v[len - 1] >> 32) as u32;
        mag.len = len + 1;
        mag.trim();
        (sign, mag)
    }
}

/// Carries every limb but the last into `[0, 2^32)`.
fn propagate(v: &mut [i64]) {
    for i in 0..v.len() - 1 {
        let c = v[i] >> 32;
        v[i] -= c << 32;
        v[i + 1] += c;
    }
}

/// A non-negative integer `Σ d[i] · 2^(32·(base + i))`, on the stack.
#[derive(Clone)]
pub(super) struct Mag {
    /// The chunk index of `d[0]` (may be negative for intermediate
    /// values).
    base: i64,
    len: usize,
    d: [u32; MAG_CHUNKS],
}

impl Mag {
    fn zero(base: i64) -> Self {
        Mag {
            base,
            len: 0,
            d: [0; MAG_CHUNKS],
        }
    }

    /// Drops zero chunks at the top.
    fn trim(&mut self) {
        while self.len > 0 && self.d[self.len - 1] == 0 {
            self.len -= 1;
        }
    }

    /// Whether the value is zero.
    pub(super) fn is_zero(&self) -> bool {
        self.d[..self.len].iter().all(|&x| x == 0)
    }

    /// The chunk at absolute index `i` (zero outside the stored range).
    #[inline]
    fn chunk(&self, i: i64) -> u32 {
        let j = i - self.base;
        if j >= 0 && (j as usize) < self.len {
            self.d[j as usize]
        } else {
            0
        }
    }

    /// Bits `[lo, lo + n)` (absolute bit indices, `n` at most 64).
    fn bits(&self, lo: i64, n: u32) -> u64 {
        if n == 0 {
            return 0;
        }
        let c = lo.div_euclid(32);
        let s = lo.rem_euclid(32);
        let acc = self.chunk(c) as u128
            | (self.chunk(c + 1) as u128) << 32
            | (self.chunk(c + 2) as u128) << 64;
        let v = (acc >> s) as u64;
        if n >= 64 {
            v
        } else {
            v & ((1 << n) - 1)
        }
    }

    /// Whether any bit below absolute bit index `pos` is set.
    fn any_below(&self, pos: i64) -> bool {
        let c = pos.div_euclid(32);
        let s = pos.rem_euclid(32);
        if self.chunk(c) & ((1u64 << s) - 1) as u32 != 0 {
            return true;
        }
        let below = (c - self.base).clamp(0, self.len as i64) as usize;
        self.d[..below].iter().any(|&x| x != 0)
    }

    /// The absolute index of the highest set bit (the value is non-zero).
    fn top_bit(&self) -> i64 {
        let top = self.len - 1;
        (self.base + top as i64) * 32 + 31 - self.d[top].leading_zeros() as i64
    }

    /// `self · 2^(-unit)` correctly rounded to f64 (round half to even,
    /// overflow to infinity), with the sign `neg`. Zero gives +0.0.
    pub(super) fn to_f64(&self, neg: bool, unit: i64) -> f64 {
        if self.is_zero() {
            return 0.0;
        }
        let top = self.top_bit();
        // The lowest bit the result can keep: 53 bits below the top, but
        // never below 2^-1074.
        let lo = (top - 52).max(unit - 1074);
        let mut q = self.bits(lo, (top - lo + 1).max(0) as u32);
        let half = self.bits(lo - 1, 1) != 0;
        if half && (q & 1 != 0 || self.any_below(lo - 1)) {
            q += 1;
        }
        let mut e = lo - unit; // the result is q · 2^e
        if q == 1 << 53 {
            q = 1 << 52;
            e += 1;
        }
        let bits = if q < 1 << 52 {
            // Subnormal (or zero): only possible on the 2^-1074 grid.
            debug_assert_eq!(e, -1074);
            q
        } else if e + 1075 >= 2047 {
            f64::INFINITY.to_bits()
        } else {
            (((e + 1074) as u64) << 52) + q
        };
        let v = f64::from_bits(bits);
        if neg {
            -v
        } else {
            v
        }
    }

    /// `self²`.
    pub(super) fn square(&self) -> Mag {
        let mut out = Mag::zero(2 * self.base);
        let n = self.len;
        if n == 0 {
            return out;
        }
        assert!(2 * n <= MAG_CHUNKS, "square out of range");
        let mut acc = [0u128; MAG_CHUNKS];
        for i in 0..n {
            for j in 0..n {
                acc[i + j] += self.d[i] as u128 * self.d[j] as u128;
            }
        }
        let mut carry = 0u128;
        for (d, &a) in out.d.iter_mut().zip(&acc[..2 * n]) {
            let t = a + carry;
            *d = t as u32;
            carry = t >> 32;
        }
        debug_assert_eq!(carry, 0);
        out.len = 2 * n;
        out.trim();
        out
    }

    /// `self · k`.
    pub(super) fn mul_u64(&self, k: u64) -> Mag {
        let mut out = Mag::zero(self.base);
        assert!(self.len + 2 <= MAG_CHUNKS, "product out of range");
        let mut carry = 0u128;
        for (o, &d) in out.d.iter_mut().zip(&self.d[..self.len]) {
            let t = d as u128 * k as u128 + carry;
            *o = t as u32;
            carry = t >> 32;
        }
        out.d[self.len] = carry as u32;
        out.d[self.len + 1] = (carry >> 32) as u32;
        out.len = self.len + 2;
        out.trim();
        out
    }

    /// `self - other`, or `None` when that is negative.
    pub(super) fn checked_sub(&self, other: &Mag) -> Option<Mag> {
        if other.is_zero() {
            return Some(self.clone());
        }
        if self.is_zero() {
            return None;
        }
        let lo = self.base.min(other.base);
        let hi = (self.base + self.len as i64).max(other.base + other.len as i64);
        assert!((hi - lo) as usize <= MAG_CHUNKS, "difference out of range");
        let mut out = Mag::zero(lo);
        let mut borrow = 0i64;
        for (k, o) in out.d[..(hi - lo) as usize].iter_mut().enumerate() {
            let i = lo + k as i64;
            let t = self.chunk(i) as i64 - other.chunk(i) as i64 - borrow;
            *o = t.rem_euclid(1 << 32) as u32;
            borrow = (t < 0) as i64;
        }
        if borrow != 0 {
            return None;
        }
        out.len = (hi - lo) as usize;
        out.trim();
        Some(out)
    }
}

/// Splits a finite, non-zero f64 into `|x| = m · 2^(p - 1074)` with
/// `m < 2^53` and `p >= 0`: the mantissa and the position of its lowest
/// bit on the 2^-1074 grid.
#[inline]
pub(super) fn split(x: f64) -> (bool, u64, u32) {
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as u32;
    let frac = bits & ((1 << 52) - 1);
    let (m, p) = if exp == 0 {
        (frac, 0)
    } else {
        (frac | 1 << 52, exp - 1)
    };
    (bits >> 63 != 0, m, p)
}

/// Writes a [`Fixed`] in its canonical form.
pub(super) fn save_fixed(f: &Fixed, w: &mut crate::state::StateWriter<'_>) {
    let mut f = f.clone();
    f.normalize();
    let (base, limbs) = f.parts();
    w.u64(base as u64);
    w.u64(limbs.len() as u64);
    for &l in limbs {
        w.i64(l);
    }
}

/// Reads what [`save_fixed`] wrote.
pub(super) fn load_fixed(
    r: &mut crate::state::StateReader<'_>,
) -> Result<Fixed, crate::state::Damaged> {
    use crate::state::Damaged;
    let base = r.u64()? as usize;
    let len = r.count(8)?;
    if base > MAX_CHUNK || base + len > MAX_CHUNK + 1 {
        return Err(Damaged);
    }
    let mut buf = [0i64; MAX_CHUNK + 1];
    for l in &mut buf[..len] {
        *l = r.i64()?;
        if l.unsigned_abs() >= CARRY_AT {
            return Err(Damaged);
        }
    }
    let mut f = Fixed::default();
    f.set(base, &buf[..len]);
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(f: &Fixed) -> i128 {
        let (base, limbs) = f.parts();
        limbs
            .iter()
            .enumerate()
            .map(|(i, &l)| (l as i128) << (32 * (base + i)))
            .sum()
    }

    #[test]
    fn lazy_limbs_normalise_and_trim() {
        let mut f = Fixed::default();
        // Chunks 0..=2 (values up to 2^96 fit in i128 for the check).
        let xs: [(bool, u128, u32); 6] = [
            (false, (1 << 53) - 1, 7),
            (true, 3, 40),
            (false, 1 << 52, 0),
            (true, (1 << 53) - 1, 7),
            (false, 5, 33),
            (true, 1 << 52, 0),
        ];
        let mut want = 0i128;
        for (neg, m, p) in xs {
            f.add(neg, m, p);
            want += if neg { -1 } else { 1 } * ((m as i128) << p);
            assert_eq!(value(&f), want);
            let mut g = f.clone();
            g.normalize();
            assert_eq!(value(&g), want);
        }
        // What is left: 5·2^33 - 3·2^40, in canonical form.
        f.normalize();
        let (base, limbs) = f.parts();
        assert_eq!(base, 1);
        assert_eq!(limbs.len(), 1);
        f.add(false, 3, 40);
        f.add(true, 5, 33);
        f.normalize();
        assert!(f.parts().1.is_empty());
        assert_eq!(f.magnitude().0, 0);
    }

    #[test]
    fn limbs_near_the_carry_bound_are_carried() {
        // Limbs as about 2^30 additions into each would leave them.
        let start = [(1i64 << 62) - 1, -(1i64 << 62) + 5, 1i64 << 61];
        let mut f = Fixed::default();
        f.set(0, &start);
        let mut want = value(&f);
        f.add(false, 1, 0);
        want += 1;
        assert_eq!(value(&f), want);
        // Carried: every limb is small again.
        assert!(f.parts().1.iter().all(|l| l.unsigned_abs() <= 1 << 32));
        f.set(0, &start);
        f.add(true, 1, 32);
        assert_eq!(value(&f), want - 1 - (1 << 32));
        let (sign, mag) = f.magnitude();
        assert_eq!(sign, 1);
        assert_eq!(
            mag.bits(0, 64) as i128 | (mag.bits(64, 64) as i128) << 64,
            want - 1 - (1 << 32)
        );
    }

    #[test]
    fn rounding_at_the_edges() {
        let mut f = Fixed::default();
        // The largest subnormal plus the smallest one: the smallest normal.
        f.add(false, (1 << 52) - 1, 0);
        f.add(false, 1, 0);
        assert_eq!(f.magnitude().1.to_f64(false, 1074), f64::MIN_POSITIVE);
        // On the fine grid, half of 2^-1074 is a tie that rounds to even
        // (zero); a hair more rounds up.
        let mut g = Fixed::default();
        g.add(false, 1, 1073);
        assert_eq!(g.magnitude().1.to_f64(false, 2148), 0.0);
        g.add(false, 1, 0);
        assert_eq!(g.magnitude().1.to_f64(false, 2148), f64::from_bits(1));
    }
}
