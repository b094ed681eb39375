//! Generic loops that every typed operation is built from.
//!
//! Each kernel runs once per batch over `0..len`, calling a small closure
//! per row; the closure and the [`Access`] implementations are inlined, so
//! after monomorphisation these are plain loops over `values()` slices.
//! Null handling is done on whole bitmaps: input validity is combined with
//! [`NullBuffer::union`], and "checked" kernels additionally pack a
//! per-row success bit into a bitmap 64 rows at a time (no branches) that
//! is only attached when some row actually failed.

use super::value::Access;
use arrow_buffer::{ArrowNativeType, BooleanBuffer, Buffer, NullBuffer};

/// Values and validity of a primitive result.
pub(crate) type Prim<O> = (Vec<O>, Option<NullBuffer>);

/// Runs `f` for each row, collecting values and a validity bitmap of the
/// rows where `f` reported success. The bitmap is `None` if all succeeded.
#[inline(always)]
fn checked_loop<O: ArrowNativeType>(
    len: usize,
    f: impl Fn(usize) -> (O, bool),
) -> (Vec<O>, Option<NullBuffer>) {
    let mut values = vec![O::default(); len];
    let mut words: Vec<u64> = Vec::with_capacity(len.div_ceil(64));
    let mut all_ok = true;
    for (c, chunk) in values.chunks_mut(64).enumerate() {
        let base = c * 64;
        let mut word = 0u64;
        for (j, slot) in chunk.iter_mut().enumerate() {
            let (v, ok) = f(base + j);
            *slot = v;
            word |= u64::from(ok) << j;
        }
        let full = if chunk.len() == 64 {
            u64::MAX
        } else {
            (1u64 << chunk.len()) - 1
        };
        all_ok &= word == full;
        words.push(word.to_le());
    }
    let nulls = if all_ok {
        None
    } else {
        Some(NullBuffer::new(BooleanBuffer::new(
            Buffer::from_vec(words),
            0,
            len,
        )))
    };
    (values, nulls)
}

/// `f(a)` per row; result is null where the input is.
#[inline]
pub(crate) fn map1<A: Access, O: ArrowNativeType>(
    len: usize,
    a: A,
    f: impl Fn(A::Item) -> O,
) -> Prim<O> {
    let values = (0..len).map(|i| f(a.at(i))).collect();
    (values, a.nulls().cloned())
}

/// `f(a) -> (value, ok)` per row; result is null where the input is null or
/// `ok` is false.
#[inline]
pub(crate) fn map1_checked<A: Access, O: ArrowNativeType>(
    len: usize,
    a: A,
    f: impl Fn(A::Item) -> (O, bool),
) -> Prim<O> {
    let (values, failed) = checked_loop(len, |i| f(a.at(i)));
    (values, NullBuffer::union(a.nulls(), failed.as_ref()))
}

/// `f(a, b)` per row; result is null where either input is.
#[inline]
pub(crate) fn map2<A: Access, B: Access, O: ArrowNativeType>(
    len: usize,
    a: A,
    b: B,
    f: impl Fn(A::Item, B::Item) -> O,
) -> Prim<O> {
    let values = (0..len).map(|i| f(a.at(i), b.at(i))).collect();
    (values, NullBuffer::union(a.nulls(), b.nulls()))
}

/// `f(a, b) -> (value, ok)` per row; null where an input is null or `ok` is
/// false.
#[inline]
pub(crate) fn map2_checked<A: Access, B: Access, O: ArrowNativeType>(
    len: usize,
    a: A,
    b: B,
    f: impl Fn(A::Item, B::Item) -> (O, bool),
) -> Prim<O> {
    let (values, failed) = checked_loop(len, |i| f(a.at(i), b.at(i)));
    let inputs = NullBuffer::union(a.nulls(), b.nulls());
    (values, NullBuffer::union(inputs.as_ref(), failed.as_ref()))
}

/// Boolean `f(a, b)` per row (comparisons); null where either input is.
#[inline]
pub(crate) fn cmp2<A: Access, B: Access>(
    len: usize,
    a: A,
    b: B,
    f: impl Fn(A::Item, B::Item) -> bool,
) -> (BooleanBuffer, Option<NullBuffer>) {
    let values = BooleanBuffer::collect_bool(len, |i| f(a.at(i), b.at(i)));
    (values, NullBuffer::union(a.nulls(), b.nulls()))
}

/// Boolean `f(a)` per row; null where the input is.
#[inline]
pub(crate) fn test1<A: Access>(
    len: usize,
    a: A,
    f: impl Fn(A::Item) -> bool,
) -> (BooleanBuffer, Option<NullBuffer>) {
    let values = BooleanBuffer::collect_bool(len, |i| f(a.at(i)));
    (values, a.nulls().cloned())
}

/// Drops a validity bitmap that has no nulls.
pub(crate) fn normalize(nulls: Option<NullBuffer>) -> Option<NullBuffer> {
    nulls.filter(|n| n.null_count() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::value::{Slice, Splat};

    #[test]
    fn checked_marks_failures_across_words() {
        let a: Vec<i64> = (0..130).collect();
        let s = Slice {
            values: &a,
            nulls: None,
        };
        let (v, n) = map1_checked(130, s, |x| (x * 2, x % 65 != 0));
        assert_eq!(v[129], 258);
        let n = n.expect("some failures");
        assert_eq!(n.null_count(), 2);
        assert!(n.is_null(0) && n.is_null(65) && n.is_valid(64) && n.is_valid(129));
        let (_, n) = map2_checked(130, s, Splat(1i64), |x, y| (x + y, true));
        assert!(n.is_none());
    }
}
