//! Three-valued logic (`AND`, `OR`, `NOT`, `IS NULL`) and row selection
//! (`CASE`, `coalesce`, `least`, `greatest`).
//!
//! `AND`/`OR` work on whole bitmaps: with values `v` and validity `m`,
//! `a AND b` is valid where both are valid or either is a valid FALSE, and
//! symmetrically for `OR`. Selection builds the result from a row mask in
//! one pass per branch, taking branches in reverse so the first matching
//! `WHEN` wins.

use super::value::{Access, Operand, Value};
use crate::error::ExprError;
use crate::plan::Scalar;
use crate::types::Ty;
use arrow_array::builder::StringBuilder;
use arrow_array::{Array, BooleanArray};
use arrow_buffer::{ArrowNativeType, BooleanBuffer, NullBuffer};

fn and_arrays(a: &BooleanArray, b: &BooleanArray) -> BooleanArray {
    let values = a.values() & b.values();
    let nulls = match (a.nulls(), b.nulls()) {
        (None, None) => None,
        (Some(na), None) => Some(na.inner() | &!b.values()),
        (None, Some(nb)) => Some(nb.inner() | &!a.values()),
        (Some(na), Some(nb)) => {
            let both = na.inner() & nb.inner();
            let a_false = na.inner() & &!a.values();
            let b_false = nb.inner() & &!b.values();
            Some(&(&both | &a_false) | &b_false)
        }
    };
    BooleanArray::new(
        values,
        super::kernels::normalize(nulls.map(NullBuffer::new)),
    )
}

fn or_arrays(a: &BooleanArray, b: &BooleanArray) -> BooleanArray {
    let values = a.values() | b.values();
    let nulls = match (a.nulls(), b.nulls()) {
        (None, None) => None,
        (Some(na), None) => Some(na.inner() | b.values()),
        (None, Some(nb)) => Some(nb.inner() | a.values()),
        (Some(na), Some(nb)) => {
            let both = na.inner() & nb.inner();
            let a_true = na.inner() & a.values();
            let b_true = nb.inner() & b.values();
            Some(&(&both | &a_true) | &b_true)
        }
    };
    BooleanArray::new(
        values,
        super::kernels::normalize(nulls.map(NullBuffer::new)),
    )
}

/// `a AND b`.
pub(crate) fn and(a: Value, b: Value, n: usize) -> Result<Value, ExprError> {
    match (&a, &b) {
        (Value::Scalar(Scalar::Bool(false)), _) | (_, Value::Scalar(Scalar::Bool(false))) => {
            Ok(Value::Scalar(Scalar::Bool(false)))
        }
        (Value::Scalar(Scalar::Bool(true)), _) => Ok(b),
        (_, Value::Scalar(Scalar::Bool(true))) => Ok(a),
        _ => Ok(Value::Bool(and_arrays(
            &a.into_bool_array(n)?,
            &b.into_bool_array(n)?,
        ))),
    }
}

/// `a OR b`.
pub(crate) fn or(a: Value, b: Value, n: usize) -> Result<Value, ExprError> {
    match (&a, &b) {
        (Value::Scalar(Scalar::Bool(true)), _) | (_, Value::Scalar(Scalar::Bool(true))) => {
            Ok(Value::Scalar(Scalar::Bool(true)))
        }
        (Value::Scalar(Scalar::Bool(false)), _) => Ok(b),
        (_, Value::Scalar(Scalar::Bool(false))) => Ok(a),
        _ => Ok(Value::Bool(or_arrays(
            &a.into_bool_array(n)?,
            &b.into_bool_array(n)?,
        ))),
    }
}

/// `NOT a`.
pub(crate) fn not(a: &Value, _n: usize) -> Result<Value, ExprError> {
    Ok(match a.bools()? {
        Operand::Scalar(s) => Value::Scalar(s.map_or(Scalar::Null, |v| Scalar::Bool(!v))),
        Operand::Arr(arr) => Value::bool(!arr.values(), arr.nulls().cloned()),
    })
}

/// `a IS [NOT] NULL` (never NULL itself).
pub(crate) fn is_null(a: &Value, negated: bool, n: usize) -> Value {
    match a {
        Value::Scalar(s) => Value::Scalar(Scalar::Bool((*s == Scalar::Null) != negated)),
        _ => {
            let values = match (a.nulls(), negated) {
                (None, false) => BooleanBuffer::new_unset(n),
                (None, true) => BooleanBuffer::new_set(n),
                (Some(nulls), false) => !nulls.inner(),
                (Some(nulls), true) => nulls.inner().clone(),
            };
            Value::bool(values, None)
        }
    }
}

/// Rows where a boolean value is TRUE (NULL counts as not TRUE).
pub(crate) fn true_mask(v: &Value, n: usize) -> Result<BooleanBuffer, ExprError> {
    Ok(match v.bools()? {
        Operand::Scalar(Some(b)) => {
            if b {
                BooleanBuffer::new_set(n)
            } else {
                BooleanBuffer::new_unset(n)
            }
        }
        Operand::Scalar(None) => BooleanBuffer::new_unset(n),
        Operand::Arr(arr) => match arr.nulls() {
            None => arr.values().clone(),
            Some(nulls) => arr.values() & nulls.inner(),
        },
    })
}

/// Rows where `v` is not NULL.
pub(crate) fn valid_mask(v: &Value, n: usize) -> BooleanBuffer {
    match v {
        Value::Scalar(s) if *s == Scalar::Null => BooleanBuffer::new_unset(n),
        _ => match v.nulls() {
            Some(nulls) => nulls.inner().clone(),
            None => BooleanBuffer::new_set(n),
        },
    }
}

fn select_prim<A: Access, B: Access<Item = A::Item>>(
    n: usize,
    mask: &BooleanBuffer,
    a: Operand<A>,
    b: Operand<B>,
) -> (Vec<A::Item>, Option<NullBuffer>)
where
    A::Item: ArrowNativeType,
{
    let pick = |i: usize| {
        if mask.value(i) {
            a.get(i)
        } else {
            b.get(i)
        }
    };
    let values = (0..n).map(|i| pick(i).unwrap_or_default()).collect();
    let valid = BooleanBuffer::collect_bool(n, |i| pick(i).is_some());
    (
        values,
        super::kernels::normalize(Some(NullBuffer::new(valid))),
    )
}

/// Row-wise `if mask { a } else { b }` for values of kind `ty`.
pub(crate) fn select(
    ty: Ty,
    mask: &BooleanBuffer,
    a: &Value,
    b: &Value,
    n: usize,
) -> Result<Value, ExprError> {
    Ok(match ty {
        Ty::Int => {
            let (v, nulls) = select_prim(n, mask, a.ints()?, b.ints()?);
            Value::int(v, nulls)
        }
        Ty::Float => {
            let (v, nulls) = select_prim(n, mask, a.floats()?, b.floats()?);
            Value::float(v, nulls)
        }
        Ty::Bool | Ty::Null => {
            let (a, b) = (a.bools()?, b.bools()?);
            let pick = |i: usize| if mask.value(i) { a.get(i) } else { b.get(i) };
            let values = BooleanBuffer::collect_bool(n, |i| pick(i).unwrap_or(false));
            let valid = BooleanBuffer::collect_bool(n, |i| pick(i).is_some());
            Value::bool(
                values,
                super::kernels::normalize(Some(NullBuffer::new(valid))),
            )
        }
        Ty::Str => {
            let (a, b) = (a.strs()?, b.strs()?);
            let mut out = StringBuilder::with_capacity(n, 0);
            let mut bytes = 0usize;
            for i in 0..n {
                let v = if mask.value(i) { a.get(i) } else { b.get(i) };
                match v {
                    Some(s) => {
                        bytes += s.len();
                        super::strings::check_capacity(bytes)?;
                        out.append_value(s);
                    }
                    None => out.append_null(),
                }
            }
            Value::Str(out.finish())
        }
    })
}

/// Searched `CASE`: `branches` are `(condition, value)` pairs.
pub(crate) fn case(
    ty: Ty,
    branches: &[(Value, Value)],
    otherwise: Value,
    n: usize,
) -> Result<Value, ExprError> {
    let mut result = otherwise;
    for (cond, value) in branches.iter().rev() {
        match cond {
            Value::Scalar(Scalar::Bool(true)) => result = value.clone(),
            Value::Scalar(_) => {}
            _ => {
                let mask = true_mask(cond, n)?;
                result = select(ty, &mask, value, &result, n)?;
            }
        }
    }
    Ok(result)
}

/// `coalesce(args...)`: first non-NULL argument per row.
pub(crate) fn coalesce(ty: Ty, args: &[Value], n: usize) -> Result<Value, ExprError> {
    let mut iter = args.iter().rev();
    let mut result = iter.next().cloned().unwrap_or(Value::NULL);
    for arg in iter {
        match arg {
            Value::Scalar(Scalar::Null) => {}
            Value::Scalar(_) => result = arg.clone(),
            _ if arg.nulls().is_none() => result = arg.clone(),
            _ => result = select(ty, &valid_mask(arg, n), arg, &result, n)?,
        }
    }
    Ok(result)
}

/// `least` / `greatest`: extreme non-NULL argument per row (NULL only if
/// all arguments are NULL).
pub(crate) fn extreme(
    ty: Ty,
    args: &[Value],
    greatest: bool,
    n: usize,
) -> Result<Value, ExprError> {
    let mut iter = args.iter();
    let mut acc = iter.next().cloned().unwrap_or(Value::NULL);
    let op = if greatest {
        crate::plan::CmpOp::Gt
    } else {
        crate::plan::CmpOp::Lt
    };
    for cand in iter {
        // take `cand` where it is non-null and (acc is null or cand beats acc)
        let better = super::compare::compare(op, ty, cand, &acc, n)?;
        let better = true_mask(&better, n)?;
        let acc_null = !&valid_mask(&acc, n);
        let mask = &valid_mask(cand, n) & &(&acc_null | &better);
        acc = select(ty, &mask, cand, &acc, n)?;
    }
    Ok(acc)
}
