//! Comparisons, `BETWEEN` and `IN`.
//!
//! Operands always have the same kind here (the type checker converts
//! BIGINT to DOUBLE when mixing). Doubles compare with IEEE semantics (NaN
//! is unequal to everything), strings compare byte-wise (which is code
//! point order), `FALSE < TRUE`.

use super::kernels::{cmp2, test1};
use super::logic;
use super::value::{dispatch1, dispatch2, Access, Value};
use crate::error::ExprError;
use crate::plan::{CmpOp, ConstSet};
use crate::types::Ty;
use arrow_buffer::{BooleanBuffer, NullBuffer};

fn bool_value(p: (BooleanBuffer, Option<NullBuffer>)) -> Value {
    Value::bool(p.0, p.1)
}

#[inline(always)]
fn ordered<A, B>(n: usize, op: CmpOp, a: A, b: B) -> Value
where
    A: Access,
    B: Access<Item = A::Item>,
    A::Item: PartialOrd,
{
    bool_value(match op {
        CmpOp::Eq => cmp2(n, a, b, |x, y| x == y),
        CmpOp::NotEq => cmp2(n, a, b, |x, y| x != y),
        CmpOp::Lt => cmp2(n, a, b, |x, y| x < y),
        CmpOp::LtEq => cmp2(n, a, b, |x, y| x <= y),
        CmpOp::Gt => cmp2(n, a, b, |x, y| x > y),
        CmpOp::GtEq => cmp2(n, a, b, |x, y| x >= y),
    })
}

/// `a op b`, both of kind `ty`.
pub(crate) fn compare(
    op: CmpOp,
    ty: Ty,
    a: &Value,
    b: &Value,
    n: usize,
) -> Result<Value, ExprError> {
    Ok(match ty {
        Ty::Int => {
            dispatch2!(a.ints()?, b.ints()?, |x, y| ordered(n, op, x, y), null => Value::NULL)
        }
        Ty::Float => {
            dispatch2!(a.floats()?, b.floats()?, |x, y| ordered(n, op, x, y), null => Value::NULL)
        }
        Ty::Bool => {
            dispatch2!(a.bools()?, b.bools()?, |x, y| ordered(n, op, x, y), null => Value::NULL)
        }
        Ty::Str => {
            dispatch2!(a.strs()?, b.strs()?, |x, y| ordered(n, op, x, y), null => Value::NULL)
        }
        Ty::Null => Value::NULL,
    })
}

/// `x BETWEEN low AND high` = `x >= low AND x <= high` (3-valued).
pub(crate) fn between(
    ty: Ty,
    x: &Value,
    low: &Value,
    high: &Value,
    negated: bool,
    n: usize,
) -> Result<Value, ExprError> {
    let ge = compare(CmpOp::GtEq, ty, x, low, n)?;
    let le = compare(CmpOp::LtEq, ty, x, high, n)?;
    let both = logic::and(ge, le, n)?;
    if negated {
        logic::not(&both, n)
    } else {
        Ok(both)
    }
}

/// `x IN (list)` for a non-constant list: OR of equalities (3-valued, so a
/// NULL candidate makes a non-match NULL).
pub(crate) fn in_list(
    ty: Ty,
    x: &Value,
    list: &[Value],
    negated: bool,
    n: usize,
) -> Result<Value, ExprError> {
    let mut acc = Value::Scalar(crate::plan::Scalar::Bool(false));
    for item in list {
        let eq = compare(CmpOp::Eq, ty, x, item, n)?;
        acc = logic::or(acc, eq, n)?;
    }
    if negated {
        logic::not(&acc, n)
    } else {
        Ok(acc)
    }
}

/// `x IN (constants)`.
pub(crate) fn in_set(
    x: &Value,
    set: &ConstSet,
    has_null: bool,
    negated: bool,
    n: usize,
) -> Result<Value, ExprError> {
    let (found, nulls) = match set {
        ConstSet::Int(s) => {
            let small = s.len() <= 16;
            dispatch1!(x.ints()?, |a| test1(n, a, |v| if small {
                s.contains(&v)
            } else {
                s.binary_search(&v).is_ok()
            }), null => return Ok(Value::NULL))
        }
        ConstSet::Float(s) => {
            dispatch1!(x.floats()?, |a| test1(n, a, |v| s.contains(&v)), null => return Ok(Value::NULL))
        }
        ConstSet::Str(s) => dispatch1!(x.strs()?, |a| test1(n, a, |v| {
            s.binary_search_by(|probe| (**probe).cmp(v)).is_ok()
        }), null => return Ok(Value::NULL)),
        ConstSet::Bool(s) => {
            dispatch1!(x.bools()?, |a| test1(n, a, |v| s.contains(&v)), null => return Ok(Value::NULL))
        }
    };
    // A miss is NULL (not FALSE) when the list contained NULL.
    let nulls = if has_null {
        let hit_or_null = NullBuffer::new(found.clone());
        NullBuffer::union(nulls.as_ref(), Some(&hit_or_null))
    } else {
        nulls
    };
    let result = Value::bool(found, super::kernels::normalize(nulls));
    if negated {
        logic::not(&result, n)
    } else {
        Ok(result)
    }
}
