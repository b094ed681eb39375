//! Test helpers shared by the running aggregates' property tests: value
//! strategies and an exact-arithmetic oracle (num-bigint/num-rational,
//! with a correctly rounded conversion written independently of
//! `fixed.rs`).

use num_bigint::{BigInt, BigUint};
use num_rational::BigRational;
use num_traits::{Float, One, Signed, Zero};
use proptest::prelude::*;

/// Finite values from mixes that stress exact arithmetic.
pub(super) fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![
        // Any finite bits.
        any::<u64>()
            .prop_map(f64::from_bits)
            .prop_filter("finite", |x| x.is_finite()),
        // Money-like.
        (-100_000_000i64..100_000_000).prop_map(|c| c as f64 / 100.0),
        // Huge (cancelling).
        (0.9e308f64..1.7976e308, any::<bool>()).prop_map(|(x, n)| if n { -x } else { x }),
        // Subnormals and the smallest normals.
        (0u64..1 << 53, any::<bool>()).prop_map(|(b, n)| f64::from_bits(b | (n as u64) << 63)),
        // Powers of two and their one-bit neighbours: ties and stickies.
        (-60i32..60, -1i64..=1, any::<bool>()).prop_map(|(e, d, n)| {
            let x = f64::from_bits((2f64.powi(e).to_bits() as i64 + d) as u64);
            if n {
                -x
            } else {
                x
            }
        }),
        // Zeros.
        Just(0.0),
        Just(-0.0),
    ]
}

/// Finite values, sometimes NaN or an infinity.
pub(super) fn any_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => finite(),
        1 => prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY)],
    ]
}

/// A sequence of additions (`Ok`) and removals (`Err(i)`: the value at
/// `i` modulo the values present).
pub(super) fn ops(
    values: impl Strategy<Value = f64>,
    max: usize,
) -> impl Strategy<Value = Vec<Result<f64, usize>>> {
    prop::collection::vec(
        prop_oneof![3 => values.prop_map(Ok), 2 => any::<usize>().prop_map(Err)],
        1..max,
    )
}

/// Bit equality, any NaN equal to any NaN.
pub(super) fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// A finite f64 as an exact rational.
pub(super) fn exact(x: f64) -> BigRational {
    let (m, e, s) = Float::integer_decode(x);
    let m = BigInt::from(m) * BigInt::from(s);
    if e >= 0 {
        BigRational::from_integer(m << e as usize)
    } else {
        BigRational::new(m, BigInt::one() << (-e) as usize)
    }
}

/// 2^e for -1074 <= e <= 1023, exactly.
fn pow2(e: i64) -> f64 {
    if e >= -1022 {
        f64::from_bits(((e + 1023) as u64) << 52)
    } else {
        f64::from_bits(1 << (e + 1074))
    }
}

/// `r` correctly rounded to f64 (round half to even, overflow to
/// infinity, zero to +0.0).
pub(super) fn round(r: &BigRational) -> f64 {
    if r.is_zero() {
        return 0.0;
    }
    let neg = r.is_negative();
    let num: BigUint = r.numer().abs().to_biguint().unwrap();
    let den: BigUint = r.denom().to_biguint().unwrap();
    // q = floor(num / (den · 2^e)), aiming at 2^52 <= q < 2^53 with
    // e >= -1074.
    let div = |e: i64| -> (BigUint, BigUint, BigUint) {
        let (n, d) = if e >= 0 {
            (num.clone(), &den << e as usize)
        } else {
            (&num << (-e) as usize, den.clone())
        };
        (&n / &d, &n % &d, d)
    };
    let mut e = (num.bits() as i64 - den.bits() as i64 - 53).max(-1074);
    loop {
        let (q, _, _) = div(e);
        if q.bits() > 53 {
            e += 1;
        } else if q.bits() < 53 && e > -1074 {
            e -= 1;
        } else {
            break;
        }
    }
    let (q, rem, d) = div(e);
    let mut q: u64 = q.try_into().unwrap();
    let twice = rem << 1usize;
    if twice > d || (twice == d && q & 1 == 1) {
        q += 1;
    }
    if q == 1 << 53 {
        q = 1 << 52;
        e += 1;
    }
    let v = if e + 52 > 1023 {
        f64::INFINITY
    } else {
        q as f64 * pow2(e)
    };
    if neg {
        -v
    } else {
        v
    }
}

#[test]
fn the_oracle_rounds_like_the_hardware() {
    // Products and quotients of floats are correctly rounded by the FPU.
    let xs = [
        0.1,
        3.0,
        1e300,
        1e-300,
        f64::from_bits(1),
        f64::MIN_POSITIVE,
        7.0e-310,
        f64::MAX,
        -2.5,
    ];
    for &a in &xs {
        for &b in &xs {
            let p = exact(a) * exact(b);
            assert_eq!(round(&p).to_bits(), (a * b).to_bits(), "{a:e} * {b:e}");
            let q = exact(a) / exact(b);
            assert_eq!(round(&q).to_bits(), (a / b).to_bits(), "{a:e} / {b:e}");
            let s = exact(a) + exact(b);
            let want = if a + b == 0.0 { 0.0 } else { a + b };
            assert_eq!(round(&s).to_bits(), want.to_bits(), "{a:e} + {b:e}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// IEEE addition, multiplication and division are correctly rounded:
    /// the oracle must agree with them (zeros up to their sign).
    #[test]
    fn the_oracle_agrees_with_ieee(a in finite(), b in finite()) {
        let agree = |r: &BigRational, hw: f64| {
            let v = round(r);
            same(v, hw) || (v == 0.0 && hw == 0.0)
        };
        prop_assert!(agree(&(exact(a) + exact(b)), a + b));
        prop_assert!(agree(&(exact(a) * exact(b)), a * b));
        if b != 0.0 {
            prop_assert!(agree(&(exact(a) / exact(b)), a / b));
        }
    }
}
