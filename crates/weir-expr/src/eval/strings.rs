//! String operators and functions, and `LIKE`.
//!
//! String results are built row by row straight into an Arrow
//! `StringBuilder` through `fmt::Write` (no per-row `String`). Positions
//! and lengths are in characters, 1-based like SQL. Results larger than
//! Arrow's 2 GiB per-array limit are reported as an evaluation error instead
//! of panicking.

use super::kernels::{cmp2, map1, map2, test1};
use super::logic;
use super::value::{dispatch1, dispatch2, StrOp, Value};
use crate::error::ExprError;
use crate::like::LikePattern;
use crate::plan::Func;
use arrow_array::builder::StringBuilder;
use arrow_buffer::{BooleanBuffer, NullBuffer};
use std::fmt::Write;

/// Errors if a string array would need more than `i32::MAX` bytes.
pub(crate) fn check_capacity(bytes: usize) -> Result<(), ExprError> {
    if bytes > i32::MAX as usize {
        Err(ExprError::eval(
            "string result exceeds the 2 GiB limit of an Arrow Utf8 array",
        ))
    } else {
        Ok(())
    }
}

/// Builds a string array of `n` rows; `row(i, out)` writes row `i` into
/// `out` and returns `Ok(true)`, or writes nothing and returns `Ok(false)`
/// for NULL.
pub(crate) fn write_rows(
    n: usize,
    mut row: impl FnMut(usize, &mut StringBuilder) -> Result<bool, std::fmt::Error>,
) -> Result<Value, ExprError> {
    let mut out = StringBuilder::with_capacity(n, n * 8);
    for i in 0..n {
        let present =
            row(i, &mut out).map_err(|_| ExprError::internal("writing to string builder"))?;
        if present {
            check_capacity(out.values_slice().len())?;
            out.append_value("");
        } else {
            out.append_null();
        }
    }
    Ok(Value::Str(out.finish()))
}

fn int(p: (Vec<i64>, Option<NullBuffer>)) -> Value {
    Value::int(p.0, p.1)
}

fn boolean(p: (BooleanBuffer, Option<NullBuffer>)) -> Value {
    Value::bool(p.0, p.1)
}

/// `a || b` (NULL if either is NULL).
pub(crate) fn concat_op(a: &Value, b: &Value, n: usize) -> Result<Value, ExprError> {
    let (a, b) = (a.strs()?, b.strs()?);
    if a.is_null() || b.is_null() {
        return Ok(Value::NULL);
    }
    write_rows(n, |i, out| match (a.get(i), b.get(i)) {
        (Some(x), Some(y)) => {
            out.write_str(x)?;
            out.write_str(y)?;
            Ok(true)
        }
        _ => Ok(false),
    })
}

/// `x [NOT] LIKE pattern`.
pub(crate) fn like(
    x: &Value,
    pattern: Option<&LikePattern>,
    dynamic: Option<&Value>,
    negated: bool,
    n: usize,
) -> Result<Value, ExprError> {
    let result = match (pattern, dynamic) {
        (Some(p), _) => {
            dispatch1!(x.strs()?, |s| boolean(test1(n, s, |v| p.matches(v))), null => Value::NULL)
        }
        (None, Some(d)) => dispatch2!(x.strs()?, d.strs()?, |s, p| boolean(cmp2(n, s, p, |v, p| {
            LikePattern::new(p).matches(v)
        })), null => Value::NULL),
        (None, None) => return Err(ExprError::internal("LIKE without pattern")),
    };
    if negated {
        logic::not(&result, n)
    } else {
        Ok(result)
    }
}

/// Byte range of the SQL substring starting at 1-based character `start`
/// with `len` characters (to the end if `None`); `None` for a negative
/// length.
fn substr_range(s: &str, start: i64, len: Option<i64>) -> Option<(usize, usize)> {
    let end_char = match len {
        Some(l) if l < 0 => return None,
        Some(l) => Some(start.saturating_add(l)),
        None => None,
    };
    let first = start.max(1);
    if let Some(e) = end_char {
        if e <= first {
            return Some((0, 0));
        }
    }
    let mut begin = s.len();
    let mut end = s.len();
    for (pos, (byte, _)) in (1i64..).zip(s.char_indices()) {
        if pos == first {
            begin = byte;
        }
        if Some(pos) == end_char {
            end = byte;
            break;
        }
    }
    Some((begin, end.max(begin)))
}

fn write_replaced(out: &mut StringBuilder, s: &str, from: &str, to: &str) -> std::fmt::Result {
    if from.is_empty() {
        return out.write_str(s);
    }
    let mut last = 0;
    for (at, _) in s.match_indices(from) {
        out.write_str(s.get(last..at).unwrap_or_default())?;
        out.write_str(to)?;
        last = at + from.len();
    }
    out.write_str(s.get(last..).unwrap_or_default())
}

fn strpos(s: &str, sub: &str) -> i64 {
    match s.find(sub) {
        Some(b) => s.get(..b).map_or(0, |p| p.chars().count() as i64) + 1,
        None => 0,
    }
}

fn str_arg<'a>(args: &'a [Value], i: usize) -> Result<StrOp<'a>, ExprError> {
    args.get(i)
        .ok_or_else(|| ExprError::internal("missing function argument"))?
        .strs()
}

/// String built-ins. Argument kinds were fixed by the type checker.
pub(crate) fn call(func: Func, args: &[Value], n: usize) -> Result<Value, ExprError> {
    match func {
        Func::Length => Ok(dispatch1!(str_arg(args, 0)?, |s| {
            int(map1(n, s, |v: &str| v.chars().count() as i64))
        }, null => Value::NULL)),
        Func::Strpos => Ok(dispatch2!(str_arg(args, 0)?, str_arg(args, 1)?, |s, p| {
            int(map2(n, s, p, strpos))
        }, null => Value::NULL)),
        Func::StartsWith => Ok(dispatch2!(str_arg(args, 0)?, str_arg(args, 1)?, |s, p| {
            boolean(cmp2(n, s, p, |v: &str, p: &str| v.starts_with(p)))
        }, null => Value::NULL)),
        Func::EndsWith => Ok(dispatch2!(str_arg(args, 0)?, str_arg(args, 1)?, |s, p| {
            boolean(cmp2(n, s, p, |v: &str, p: &str| v.ends_with(p)))
        }, null => Value::NULL)),
        Func::Lower | Func::Upper | Func::Trim | Func::Ltrim | Func::Rtrim => {
            let s = str_arg(args, 0)?;
            if s.is_null() {
                return Ok(Value::NULL);
            }
            write_rows(n, |i, out| {
                let Some(v) = s.get(i) else {
                    return Ok(false);
                };
                match func {
                    Func::Lower if v.is_ascii() => {
                        for c in v.chars() {
                            out.write_char(c.to_ascii_lowercase())?;
                        }
                    }
                    Func::Upper if v.is_ascii() => {
                        for c in v.chars() {
                            out.write_char(c.to_ascii_uppercase())?;
                        }
                    }
                    Func::Lower => {
                        for c in v.chars().flat_map(char::to_lowercase) {
                            out.write_char(c)?;
                        }
                    }
                    Func::Upper => {
                        for c in v.chars().flat_map(char::to_uppercase) {
                            out.write_char(c)?;
                        }
                    }
                    Func::Trim => out.write_str(v.trim())?,
                    Func::Ltrim => out.write_str(v.trim_start())?,
                    _ => out.write_str(v.trim_end())?,
                }
                Ok(true)
            })
        }
        Func::Substr => {
            let s = str_arg(args, 0)?;
            let start = args
                .get(1)
                .ok_or_else(|| ExprError::internal("missing substr start"))?
                .ints()?;
            let len = match args.get(2) {
                Some(v) => Some(v.ints()?),
                None => None,
            };
            write_rows(n, |i, out| {
                let (Some(v), Some(st)) = (s.get(i), start.get(i)) else {
                    return Ok(false);
                };
                let l = match &len {
                    Some(l) => match l.get(i) {
                        Some(l) => Some(l),
                        None => return Ok(false),
                    },
                    None => None,
                };
                match substr_range(v, st, l) {
                    Some((b, e)) => {
                        out.write_str(v.get(b..e).unwrap_or_default())?;
                        Ok(true)
                    }
                    None => Ok(false),
                }
            })
        }
        Func::Replace => {
            let (s, from, to) = (str_arg(args, 0)?, str_arg(args, 1)?, str_arg(args, 2)?);
            write_rows(n, |i, out| match (s.get(i), from.get(i), to.get(i)) {
                (Some(v), Some(f), Some(t)) => write_replaced(out, v, f, t).map(|_| true),
                _ => Ok(false),
            })
        }
        Func::Concat => {
            let parts = (0..args.len())
                .map(|i| str_arg(args, i))
                .collect::<Result<Vec<_>, _>>()?;
            write_rows(n, |i, out| {
                for p in &parts {
                    if let Some(v) = p.get(i) {
                        out.write_str(v)?;
                    }
                }
                Ok(true)
            })
        }
        _ => Err(ExprError::internal("not a string function")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(s: &str, start: i64, len: Option<i64>) -> Option<&str> {
        substr_range(s, start, len).map(|(b, e)| &s[b..e])
    }

    #[test]
    fn substr_semantics() {
        assert_eq!(sub("hello", 2, Some(3)), Some("ell"));
        assert_eq!(sub("hello", 2, None), Some("ello"));
        assert_eq!(sub("hello", 0, Some(2)), Some("h"));
        assert_eq!(sub("hello", -5, Some(2)), Some(""));
        assert_eq!(sub("hello", 4, Some(100)), Some("lo"));
        assert_eq!(sub("hello", 9, None), Some(""));
        assert_eq!(sub("héllo", 2, Some(2)), Some("él"));
        assert_eq!(sub("hello", 1, Some(-1)), None);
        assert_eq!(sub("hello", i64::MAX, Some(i64::MAX)), Some(""));
        assert_eq!(sub("hello", i64::MIN, Some(i64::MAX)), Some(""));
        assert_eq!(sub("", 1, None), Some(""));
    }

    #[test]
    fn strpos_and_replace() {
        assert_eq!(strpos("héllo", "l"), 3);
        assert_eq!(strpos("abc", "z"), 0);
        assert_eq!(strpos("abc", ""), 1);
        let mut b = StringBuilder::new();
        write_replaced(&mut b, "a-b-c", "-", "+").expect("write");
        b.append_value("");
        write_replaced(&mut b, "abc", "", "x").expect("write");
        b.append_value("");
        let a = b.finish();
        assert_eq!(a.value(0), "a+b+c");
        assert_eq!(a.value(1), "abc");
    }
}
