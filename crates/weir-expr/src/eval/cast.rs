//! `CAST` and the implicit BIGINT → DOUBLE conversion.
//!
//! Conversions that can fail on data (text that is not a number, a double
//! outside the BIGINT range or NaN) give NULL. DOUBLE → BIGINT rounds to the
//! nearest integer, ties to even (PostgreSQL's behaviour). Text → BOOLEAN
//! accepts `true/false, t/f, yes/no, y/n, on/off, 1/0` (any case, trimmed).

use super::kernels::{map1, map1_checked, test1};
use super::strings::write_rows;
use super::value::{dispatch1, Value};
use crate::error::ExprError;
use crate::types::Ty;
use std::fmt::Write;

/// 2^63 as a double: the first double above the BIGINT range.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

/// DOUBLE → BIGINT, `None` when out of range or NaN.
pub(crate) fn float_to_int(v: f64) -> Option<i64> {
    let r = v.round_ties_even();
    (-TWO_POW_63..TWO_POW_63).contains(&r).then_some(r as i64)
}

fn parse_bool(s: &str) -> Option<bool> {
    let t = s.trim();
    const TRUE: [&str; 6] = ["true", "t", "yes", "y", "on", "1"];
    const FALSE: [&str; 6] = ["false", "f", "no", "n", "off", "0"];
    if TRUE.iter().any(|w| w.eq_ignore_ascii_case(t)) {
        Some(true)
    } else if FALSE.iter().any(|w| w.eq_ignore_ascii_case(t)) {
        Some(false)
    } else {
        None
    }
}

/// Text form of a double: Rust's shortest round-trip representation
/// (`0.1`, `1`, `1e-7` is `0.0000001`), with `NaN`, `Infinity`, `-Infinity`.
pub(crate) fn write_float(out: &mut impl Write, v: f64) -> std::fmt::Result {
    if v.is_nan() {
        out.write_str("NaN")
    } else if v.is_infinite() {
        out.write_str(if v > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        write!(out, "{v}")
    }
}

/// Converts `a` (kind `from`) to kind `to`.
pub(crate) fn cast(a: &Value, from: Ty, to: Ty, n: usize) -> Result<Value, ExprError> {
    let int = |p: super::kernels::Prim<i64>| Value::int(p.0, p.1);
    let float = |p: super::kernels::Prim<f64>| Value::float(p.0, p.1);
    let boolean = |p: (arrow_buffer::BooleanBuffer, _)| Value::bool(p.0, p.1);
    let unwrap = |p: (Option<i64>, bool)| (p.0.unwrap_or(0), p.1);
    Ok(match (from, to) {
        (f, t) if f == t => a.clone(),
        (Ty::Null, _) => Value::NULL,
        (_, Ty::Null) => return Err(ExprError::internal("cast to NULL kind")),
        (Ty::Int, Ty::Float) => {
            dispatch1!(a.ints()?, |x| float(map1(n, x, |v| v as f64)), null => Value::NULL)
        }
        (Ty::Float, Ty::Int) => dispatch1!(a.floats()?, |x| int(map1_checked(n, x, |v| {
            let r = float_to_int(v);
            unwrap((r, r.is_some()))
        })), null => Value::NULL),
        (Ty::Bool, Ty::Int) => {
            dispatch1!(a.bools()?, |x| int(map1(n, x, i64::from)), null => Value::NULL)
        }
        (Ty::Bool, Ty::Float) => {
            dispatch1!(a.bools()?, |x| float(map1(n, x, |v| f64::from(u8::from(v)))), null => Value::NULL)
        }
        (Ty::Int, Ty::Bool) => {
            dispatch1!(a.ints()?, |x| boolean(test1(n, x, |v| v != 0)), null => Value::NULL)
        }
        (Ty::Float, Ty::Bool) => {
            dispatch1!(a.floats()?, |x| boolean(test1(n, x, |v| v != 0.0)), null => Value::NULL)
        }
        (Ty::Str, Ty::Int) => dispatch1!(a.strs()?, |x| int(map1_checked(n, x, |s| {
            let r = s.trim().parse::<i64>().ok();
            unwrap((r, r.is_some()))
        })), null => Value::NULL),
        (Ty::Str, Ty::Float) => dispatch1!(a.strs()?, |x| float(map1_checked(n, x, |s| {
            match s.trim().parse::<f64>() {
                Ok(v) => (v, true),
                Err(_) => (0.0, false),
            }
        })), null => Value::NULL),
        (Ty::Str, Ty::Bool) => {
            let x = a.strs()?;
            let values = arrow_buffer::BooleanBuffer::collect_bool(n, |i| {
                x.get(i).and_then(parse_bool).unwrap_or(false)
            });
            let valid = arrow_buffer::BooleanBuffer::collect_bool(n, |i| {
                x.get(i).and_then(parse_bool).is_some()
            });
            Value::bool(
                values,
                super::kernels::normalize(Some(arrow_buffer::NullBuffer::new(valid))),
            )
        }
        (Ty::Int, Ty::Str) => {
            let x = a.ints()?;
            write_rows(n, |i, out| match x.get(i) {
                Some(v) => write!(out, "{v}").map(|_| true),
                None => Ok(false),
            })?
        }
        (Ty::Float, Ty::Str) => {
            let x = a.floats()?;
            write_rows(n, |i, out| match x.get(i) {
                Some(v) => write_float(out, v).map(|_| true),
                None => Ok(false),
            })?
        }
        (Ty::Bool, Ty::Str) => {
            let x = a.bools()?;
            write_rows(n, |i, out| match x.get(i) {
                Some(v) => out
                    .write_str(if v { "true" } else { "false" })
                    .map(|_| true),
                None => Ok(false),
            })?
        }
        (Ty::Bool | Ty::Int | Ty::Float | Ty::Str, _) => {
            return Err(ExprError::internal("unsupported cast"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_to_int_edges() {
        assert_eq!(float_to_int(2.5), Some(2));
        assert_eq!(float_to_int(3.5), Some(4));
        assert_eq!(float_to_int(-2.5), Some(-2));
        assert_eq!(float_to_int(-TWO_POW_63), Some(i64::MIN));
        let below = f64::from_bits(TWO_POW_63.to_bits() - 1);
        assert_eq!(float_to_int(below), Some(9_223_372_036_854_774_784));
        assert_eq!(float_to_int(TWO_POW_63), None);
        assert_eq!(float_to_int(f64::NAN), None);
        assert_eq!(float_to_int(f64::INFINITY), None);
        assert_eq!(parse_bool(" Yes "), Some(true));
        assert_eq!(parse_bool("0"), Some(false));
        assert_eq!(parse_bool("maybe"), None);
    }
}
