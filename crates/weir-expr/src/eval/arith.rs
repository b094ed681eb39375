//! Arithmetic operators and numeric functions.
//!
//! Integer arithmetic is checked: overflow, division or modulo by zero and
//! `i64::MIN / -1` yield NULL instead of panicking or wrapping. Floating
//! point is plain IEEE (`a / b` is exactly Rust's `a / b`, nothing is
//! reassociated or fused), except that a zero divisor gives NULL and
//! domain errors of functions (`sqrt(-1)`, `ln(0)`) give NULL.

use super::kernels::{map1, map1_checked, map2, map2_checked, Prim};
use super::value::{dispatch1, dispatch2, Value};
use crate::error::ExprError;
use crate::plan::{ArithOp, Func};
use crate::types::Ty;

fn int(p: Prim<i64>) -> Value {
    Value::int(p.0, p.1)
}

fn float(p: Prim<f64>) -> Value {
    Value::float(p.0, p.1)
}

/// `a op b` where both operands (and the result) have kind `ty`.
pub(crate) fn arith(
    op: ArithOp,
    ty: Ty,
    a: &Value,
    b: &Value,
    n: usize,
) -> Result<Value, ExprError> {
    match ty {
        Ty::Int => int_arith(op, a, b, n),
        Ty::Float => float_arith(op, a, b, n),
        _ => Err(ExprError::internal("arithmetic on non-numeric kind")),
    }
}

fn int_arith(op: ArithOp, a: &Value, b: &Value, n: usize) -> Result<Value, ExprError> {
    let (a, b) = (a.ints()?, b.ints()?);
    // Division by a constant that cannot fail needs no per-row checks.
    if let super::value::Operand::Scalar(Some(d)) = b {
        if d != 0 && d != -1 {
            return Ok(dispatch1!(a, |x| match op {
                ArithOp::Div => int(map1(n, x, |v| v / d)),
                ArithOp::Mod => int(map1(n, x, |v| v % d)),
                ArithOp::Add => int(map1_checked(n, x, |v| flip(v.overflowing_add(d)))),
                ArithOp::Sub => int(map1_checked(n, x, |v| flip(v.overflowing_sub(d)))),
                ArithOp::Mul => int(map1_checked(n, x, |v| flip(v.overflowing_mul(d)))),
            }, null => Value::NULL));
        }
    }
    Ok(dispatch2!(a, b, |x, y| match op {
        ArithOp::Add => int(map2_checked(n, x, y, |u, v| flip(u.overflowing_add(v)))),
        ArithOp::Sub => int(map2_checked(n, x, y, |u, v| flip(u.overflowing_sub(v)))),
        ArithOp::Mul => int(map2_checked(n, x, y, |u, v| flip(u.overflowing_mul(v)))),
        ArithOp::Div => int(map2_checked(n, x, y, |u, v| match u.checked_div(v) {
            Some(q) => (q, true),
            None => (0, false),
        })),
        ArithOp::Mod => int(map2_checked(n, x, y, |u, v| {
            if v == 0 {
                (0, false)
            } else if v == -1 {
                // i64::MIN % -1 overflows in Rust; mathematically it is 0.
                (0, true)
            } else {
                (u % v, true)
            }
        })),
    }, null => Value::NULL))
}

/// `(value, overflowed)` to `(value, ok)`.
#[inline(always)]
fn flip((v, overflow): (i64, bool)) -> (i64, bool) {
    (v, !overflow)
}

fn float_arith(op: ArithOp, a: &Value, b: &Value, n: usize) -> Result<Value, ExprError> {
    let (a, b) = (a.floats()?, b.floats()?);
    if let super::value::Operand::Scalar(Some(d)) = b {
        if d != 0.0 {
            return Ok(dispatch1!(a, |x| match op {
                ArithOp::Add => float(map1(n, x, |v| v + d)),
                ArithOp::Sub => float(map1(n, x, |v| v - d)),
                ArithOp::Mul => float(map1(n, x, |v| v * d)),
                ArithOp::Div => float(map1(n, x, |v| v / d)),
                ArithOp::Mod => float(map1(n, x, |v| v % d)),
            }, null => Value::NULL));
        }
    }
    Ok(dispatch2!(a, b, |x, y| match op {
        ArithOp::Add => float(map2(n, x, y, |u, v| u + v)),
        ArithOp::Sub => float(map2(n, x, y, |u, v| u - v)),
        ArithOp::Mul => float(map2(n, x, y, |u, v| u * v)),
        ArithOp::Div => float(map2_checked(n, x, y, |u, v| (u / v, v != 0.0))),
        ArithOp::Mod => float(map2_checked(n, x, y, |u, v| (u % v, v != 0.0))),
    }, null => Value::NULL))
}

/// Unary minus.
pub(crate) fn neg(ty: Ty, a: &Value, n: usize) -> Result<Value, ExprError> {
    match ty {
        Ty::Int => Ok(dispatch1!(a.ints()?, |x| int(map1_checked(n, x, |v| {
            flip(v.overflowing_neg())
        })), null => Value::NULL)),
        Ty::Float => {
            Ok(dispatch1!(a.floats()?, |x| float(map1(n, x, |v| -v)), null => Value::NULL))
        }
        _ => Err(ExprError::internal("negation of non-numeric kind")),
    }
}

fn float_fn(
    f: fn(f64) -> f64,
    ok: fn(f64) -> bool,
    a: &Value,
    n: usize,
) -> Result<Value, ExprError> {
    Ok(
        dispatch1!(a.floats()?, |x| float(map1_checked(n, x, |v| (f(v), ok(v)))), null => Value::NULL),
    )
}

fn always(_: f64) -> bool {
    true
}

/// Domain of logarithms: positive (NaN passes through as NaN).
fn positive_or_nan(v: f64) -> bool {
    v > 0.0 || v.is_nan()
}

/// SQL `sign` for doubles: -1, 0 or 1 (zero and NaN are returned as is).
fn float_sign(v: f64) -> f64 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        v
    }
}

/// `round(x, digits)`, half away from zero.
fn round_digits(x: f64, digits: i64) -> f64 {
    if !x.is_finite() {
        return x;
    }
    let d = digits.clamp(-400, 400) as i32;
    if d >= 0 {
        let p = 10f64.powi(d);
        let y = x * p;
        if !y.is_finite() || !p.is_finite() {
            return x;
        }
        y.round() / p
    } else {
        let p = 10f64.powi(-d);
        if !p.is_finite() {
            return 0.0;
        }
        (x / p).round() * p
    }
}

/// `round(x, digits)` for integers: rounds to a multiple of `10^-digits`
/// (half away from zero) when `digits < 0`; NULL on overflow.
fn round_int(x: i64, digits: i64) -> (i64, bool) {
    if digits >= 0 {
        return (x, true);
    }
    if digits < -19 {
        return (0, true);
    }
    let p = 10i128.pow(digits.unsigned_abs() as u32);
    let q = i128::from(x);
    let r = (q.abs() + p / 2) / p * p * q.signum();
    match i64::try_from(r) {
        Ok(v) => (v, true),
        Err(_) => (0, false),
    }
}

/// Numeric built-ins. `ty` is the result kind; argument kinds were fixed by
/// the type checker (see `check::functions`).
pub(crate) fn call(func: Func, ty: Ty, args: &[Value], n: usize) -> Result<Value, ExprError> {
    let arg = |i: usize| {
        args.get(i)
            .ok_or_else(|| ExprError::internal("missing function argument"))
    };
    let a = arg(0)?;
    match (func, ty) {
        (Func::Abs, Ty::Int) => Ok(dispatch1!(a.ints()?, |x| int(map1_checked(n, x, |v| {
            match v.checked_abs() {
                Some(r) => (r, true),
                None => (0, false),
            }
        })), null => Value::NULL)),
        (Func::Abs, Ty::Float) => float_fn(f64::abs, always, a, n),
        (Func::Sign, Ty::Int) => {
            Ok(dispatch1!(a.ints()?, |x| int(map1(n, x, i64::signum)), null => Value::NULL))
        }
        (Func::Sign, Ty::Float) => float_fn(float_sign, always, a, n),
        (Func::Floor | Func::Ceil | Func::Trunc, Ty::Int) => Ok(a.clone()),
        (Func::Floor, Ty::Float) => float_fn(f64::floor, always, a, n),
        (Func::Ceil, Ty::Float) => float_fn(f64::ceil, always, a, n),
        (Func::Trunc, Ty::Float) => float_fn(f64::trunc, always, a, n),
        (Func::Round, Ty::Int) if args.len() == 1 => Ok(a.clone()),
        (Func::Round, Ty::Float) if args.len() == 1 => float_fn(f64::round, always, a, n),
        (Func::Round, Ty::Int) => Ok(dispatch2!(a.ints()?, arg(1)?.ints()?, |x, d| {
            int(map2_checked(n, x, d, round_int))
        }, null => Value::NULL)),
        (Func::Round, Ty::Float) => Ok(dispatch2!(a.floats()?, arg(1)?.ints()?, |x, d| {
            float(map2(n, x, d, round_digits))
        }, null => Value::NULL)),
        (Func::Sqrt, _) => float_fn(f64::sqrt, |v| v >= 0.0 || v.is_nan(), a, n),
        (Func::Cbrt, _) => float_fn(f64::cbrt, always, a, n),
        (Func::Exp, _) => float_fn(f64::exp, always, a, n),
        (Func::Ln, _) => float_fn(f64::ln, positive_or_nan, a, n),
        (Func::Log10, _) => float_fn(f64::log10, positive_or_nan, a, n),
        (Func::Log2, _) => float_fn(f64::log2, positive_or_nan, a, n),
        (Func::Sigmoid, _) => float_fn(|v| 1.0 / (1.0 + (-v).exp()), always, a, n),
        (Func::LogBase, _) => Ok(dispatch2!(a.floats()?, arg(1)?.floats()?, |b, x| {
            float(map2_checked(n, b, x, |b, x| {
                (x.ln() / b.ln(), positive_or_nan(b) && b != 1.0 && positive_or_nan(x))
            }))
        }, null => Value::NULL)),
        (Func::Power, _) => Ok(dispatch2!(a.floats()?, arg(1)?.floats()?, |x, y| {
            float(map2_checked(n, x, y, |x, y| {
                let complex = x < 0.0 && y.is_finite() && y.fract() != 0.0;
                let pole = x == 0.0 && y < 0.0;
                (x.powf(y), !complex && !pole)
            }))
        }, null => Value::NULL)),
        _ => Err(ExprError::internal(
            "numeric function called with wrong kind",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_helpers() {
        assert_eq!(round_digits(2.345, 2), 2.35);
        assert_eq!(round_digits(-2.5, 0), -3.0);
        assert_eq!(round_digits(1234.5, -2), 1200.0);
        assert_eq!(round_digits(1.0, 1000), 1.0);
        assert_eq!(round_digits(1e300, -1000), 0.0);
        assert_eq!(round_int(1250, -2), (1300, true));
        assert_eq!(round_int(-1250, -2), (-1300, true));
        assert_eq!(round_int(1249, -2), (1200, true));
        assert!(!round_int(i64::MAX, -1).1);
        assert_eq!(round_int(i64::MAX, -30), (0, true));
        assert!(!round_int(9_000_000_000_000_000_000, -19).1);
        assert_eq!(round_int(7, 3), (7, true));
    }
}
