//! Intermediate values of vectorised evaluation, and typed views of them.
//!
//! A [`Value`] is either a whole column of one of the four kinds or a single
//! constant ([`Value::Scalar`]) that stands for every row, so `amount > 0`
//! never materialises an array of zeros. Kernels read values through the
//! [`Access`] trait, implemented by array views and by [`Splat`] (a scalar
//! repeated); [`Operand`] is the "array or scalar" sum the evaluator hands
//! around, and the `dispatch2!` macro turns a pair of operands into
//! concrete `Access` types so that each kernel is monomorphised per
//! array/scalar combination — no per-row dispatch.

use crate::error::ExprError;
use crate::plan::Scalar;
use crate::types::Ty;
use arrow_array::builder::StringBuilder;
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, PrimitiveArray, StringArray,
};
use arrow_buffer::{BooleanBuffer, NullBuffer};
use std::sync::Arc;

/// Result of evaluating a node on a batch.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    /// The same value in every row.
    Scalar(Scalar),
    Bool(BooleanArray),
    Int(Int64Array),
    Float(Float64Array),
    Str(StringArray),
}

/// Random access to the values of an operand (validity is separate).
pub(crate) trait Access: Copy {
    type Item: Copy;
    /// Value at row `i` (unspecified, but never panicking, for null rows).
    fn at(&self, i: usize) -> Self::Item;
    /// Validity of the rows, `None` if all are valid.
    fn nulls(&self) -> Option<&NullBuffer>;
    #[inline]
    fn valid(&self, i: usize) -> bool {
        self.nulls().is_none_or(|n| n.is_valid(i))
    }
}

/// A primitive array's values and validity.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slice<'a, T> {
    pub(crate) values: &'a [T],
    pub(crate) nulls: Option<&'a NullBuffer>,
}

/// A non-null scalar repeated for every row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Splat<T>(pub(crate) T);

impl<T: Copy> Access for Slice<'_, T> {
    type Item = T;
    #[inline(always)]
    fn at(&self, i: usize) -> T {
        self.values[i]
    }
    #[inline(always)]
    fn nulls(&self) -> Option<&NullBuffer> {
        self.nulls
    }
}

impl<T: Copy> Access for Splat<T> {
    type Item = T;
    #[inline(always)]
    fn at(&self, _i: usize) -> T {
        self.0
    }
    #[inline(always)]
    fn nulls(&self) -> Option<&NullBuffer> {
        None
    }
}

impl Access for &BooleanArray {
    type Item = bool;
    #[inline(always)]
    fn at(&self, i: usize) -> bool {
        self.value(i)
    }
    #[inline(always)]
    fn nulls(&self) -> Option<&NullBuffer> {
        Array::nulls(*self)
    }
}

impl<'a> Access for &'a StringArray {
    type Item = &'a str;
    #[inline(always)]
    fn at(&self, i: usize) -> &'a str {
        let array: &'a StringArray = self;
        array.value(i)
    }
    #[inline(always)]
    fn nulls(&self) -> Option<&NullBuffer> {
        Array::nulls(*self)
    }
}

/// An operand: an array view, or a scalar (`None` = NULL) for all rows.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Operand<A: Access> {
    Arr(A),
    Scalar(Option<A::Item>),
}

impl<A: Access> Operand<A> {
    /// Row `i` with nulls as `None`. For row-at-a-time code (strings,
    /// CASE), where the per-row branch is negligible next to the work.
    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<A::Item> {
        match self {
            Operand::Arr(a) => a.valid(i).then(|| a.at(i)),
            Operand::Scalar(s) => *s,
        }
    }

    /// Whether this is the NULL scalar (so every result row is NULL).
    pub(crate) fn is_null(&self) -> bool {
        matches!(self, Operand::Scalar(None))
    }
}

pub(crate) type IntOp<'a> = Operand<Slice<'a, i64>>;
pub(crate) type FloatOp<'a> = Operand<Slice<'a, f64>>;
pub(crate) type BoolOp<'a> = Operand<&'a BooleanArray>;
pub(crate) type StrOp<'a> = Operand<&'a StringArray>;

/// Runs `$body` with `$x`/`$y` bound to concrete [`Access`] types for each
/// array/scalar combination of two operands; `$null` if either is NULL.
macro_rules! dispatch2 {
    ($a:expr, $b:expr, |$x:ident, $y:ident| $body:expr, null => $null:expr) => {{
        use $crate::eval::value::{Operand, Splat};
        match ($a, $b) {
            (Operand::Arr($x), Operand::Arr($y)) => $body,
            (Operand::Arr($x), Operand::Scalar(Some(s))) => {
                let $y = Splat(s);
                $body
            }
            (Operand::Scalar(Some(s)), Operand::Arr($y)) => {
                let $x = Splat(s);
                $body
            }
            (Operand::Scalar(Some(s)), Operand::Scalar(Some(t))) => {
                let $x = Splat(s);
                let $y = Splat(t);
                $body
            }
            _ => $null,
        }
    }};
}
pub(crate) use dispatch2;

/// Same as [`dispatch2!`] for one operand.
macro_rules! dispatch1 {
    ($a:expr, |$x:ident| $body:expr, null => $null:expr) => {{
        use $crate::eval::value::{Operand, Splat};
        match $a {
            Operand::Arr($x) => $body,
            Operand::Scalar(Some(s)) => {
                let $x = Splat(s);
                $body
            }
            Operand::Scalar(None) => $null,
        }
    }};
}
pub(crate) use dispatch1;

fn mismatch(want: &str, got: &Value) -> ExprError {
    let got = match got {
        Value::Scalar(_) => "scalar",
        Value::Bool(_) => "BOOLEAN",
        Value::Int(_) => "BIGINT",
        Value::Float(_) => "DOUBLE",
        Value::Str(_) => "VARCHAR",
    };
    ExprError::internal(&format!("expected {want} operand, got {got}"))
}

fn prim<T: arrow_array::ArrowPrimitiveType>(a: &PrimitiveArray<T>) -> Slice<'_, T::Native> {
    Slice {
        values: a.values(),
        nulls: a.nulls(),
    }
}

impl Value {
    pub(crate) const NULL: Value = Value::Scalar(Scalar::Null);

    pub(crate) fn is_scalar(&self) -> bool {
        matches!(self, Value::Scalar(_))
    }

    pub(crate) fn int(values: Vec<i64>, nulls: Option<NullBuffer>) -> Value {
        Value::Int(Int64Array::new(values.into(), nulls))
    }

    pub(crate) fn float(values: Vec<f64>, nulls: Option<NullBuffer>) -> Value {
        Value::Float(Float64Array::new(values.into(), nulls))
    }

    pub(crate) fn bool(values: BooleanBuffer, nulls: Option<NullBuffer>) -> Value {
        Value::Bool(BooleanArray::new(values, nulls))
    }

    pub(crate) fn ints(&self) -> Result<IntOp<'_>, ExprError> {
        match self {
            Value::Int(a) => Ok(Operand::Arr(prim(a))),
            Value::Scalar(Scalar::Int(v)) => Ok(Operand::Scalar(Some(*v))),
            Value::Scalar(Scalar::Null) => Ok(Operand::Scalar(None)),
            other => Err(mismatch("BIGINT", other)),
        }
    }

    pub(crate) fn floats(&self) -> Result<FloatOp<'_>, ExprError> {
        match self {
            Value::Float(a) => Ok(Operand::Arr(prim(a))),
            Value::Scalar(Scalar::Float(v)) => Ok(Operand::Scalar(Some(*v))),
            Value::Scalar(Scalar::Null) => Ok(Operand::Scalar(None)),
            other => Err(mismatch("DOUBLE", other)),
        }
    }

    pub(crate) fn bools(&self) -> Result<BoolOp<'_>, ExprError> {
        match self {
            Value::Bool(a) => Ok(Operand::Arr(a)),
            Value::Scalar(Scalar::Bool(v)) => Ok(Operand::Scalar(Some(*v))),
            Value::Scalar(Scalar::Null) => Ok(Operand::Scalar(None)),
            other => Err(mismatch("BOOLEAN", other)),
        }
    }

    pub(crate) fn strs(&self) -> Result<StrOp<'_>, ExprError> {
        match self {
            Value::Str(a) => Ok(Operand::Arr(a)),
            Value::Scalar(Scalar::Str(v)) => Ok(Operand::Scalar(Some(v.as_ref()))),
            Value::Scalar(Scalar::Null) => Ok(Operand::Scalar(None)),
            other => Err(mismatch("VARCHAR", other)),
        }
    }

    /// Validity of an array value; `None` for scalars and arrays without
    /// nulls.
    pub(crate) fn nulls(&self) -> Option<&NullBuffer> {
        match self {
            Value::Scalar(_) => None,
            Value::Bool(a) => a.nulls(),
            Value::Int(a) => a.nulls(),
            Value::Float(a) => a.nulls(),
            Value::Str(a) => a.nulls(),
        }
    }

    /// Row `i` is NULL.
    pub(crate) fn is_null_at(&self, i: usize) -> bool {
        match self {
            Value::Scalar(s) => *s == Scalar::Null,
            _ => self.nulls().is_some_and(|n| n.is_null(i)),
        }
    }

    /// Converts a 1-row array (the result of evaluating a node whose inputs
    /// were all scalars) to a scalar. Scalars pass through.
    pub(crate) fn into_first_scalar(self) -> Value {
        let s = match &self {
            Value::Scalar(_) => return self,
            _ if self.is_null_at(0) => Scalar::Null,
            Value::Bool(a) if !a.is_empty() => Scalar::Bool(a.value(0)),
            Value::Int(a) if !a.is_empty() => Scalar::Int(a.value(0)),
            Value::Float(a) if !a.is_empty() => Scalar::Float(a.value(0)),
            Value::Str(a) if !a.is_empty() => Scalar::Str(Arc::from(a.value(0))),
            _ => Scalar::Null,
        };
        Value::Scalar(s)
    }

    /// A boolean value as an array of `len` rows (scalars are broadcast).
    pub(crate) fn into_bool_array(self, len: usize) -> Result<BooleanArray, ExprError> {
        match self {
            Value::Bool(a) => Ok(a),
            Value::Scalar(Scalar::Bool(b)) => Ok(BooleanArray::new(
                if b {
                    BooleanBuffer::new_set(len)
                } else {
                    BooleanBuffer::new_unset(len)
                },
                None,
            )),
            Value::Scalar(Scalar::Null) => Ok(BooleanArray::new_null(len)),
            other => Err(mismatch("BOOLEAN", &other)),
        }
    }

    /// Final conversion to an Arrow array of `len` rows of kind `ty`.
    pub(crate) fn into_array(self, ty: Ty, len: usize) -> Result<ArrayRef, ExprError> {
        let array: ArrayRef = match (self, ty.concrete()) {
            (Value::Bool(a), Ty::Bool) => Arc::new(a),
            (Value::Int(a), Ty::Int) => Arc::new(a),
            (Value::Float(a), Ty::Float) => Arc::new(a),
            (Value::Str(a), Ty::Str) => Arc::new(a),
            (Value::Scalar(s), ty) => broadcast(&s, ty, len)?,
            (other, ty) => return Err(mismatch(ty.name(), &other)),
        };
        Ok(array)
    }
}

/// Materialises a scalar as an array of `len` rows of kind `ty`.
pub(crate) fn broadcast(s: &Scalar, ty: Ty, len: usize) -> Result<ArrayRef, ExprError> {
    let array: ArrayRef = match (s, ty.concrete()) {
        (Scalar::Null, Ty::Bool | Ty::Null) => Arc::new(BooleanArray::new_null(len)),
        (Scalar::Null, Ty::Int) => Arc::new(Int64Array::new_null(len)),
        (Scalar::Null, Ty::Float) => Arc::new(Float64Array::new_null(len)),
        (Scalar::Null, Ty::Str) => Arc::new(StringArray::new_null(len)),
        (Scalar::Bool(_), Ty::Bool) => Arc::new(Value::Scalar(s.clone()).into_bool_array(len)?),
        (Scalar::Int(v), Ty::Int) => Arc::new(Int64Array::from_value(*v, len)),
        (Scalar::Float(v), Ty::Float) => Arc::new(Float64Array::from_value(*v, len)),
        (Scalar::Str(v), Ty::Str) => {
            let mut b = StringBuilder::with_capacity(len, v.len().saturating_mul(len));
            crate::eval::strings::check_capacity(v.len().saturating_mul(len))?;
            for _ in 0..len {
                b.append_value(v);
            }
            Arc::new(b.finish())
        }
        _ => return Err(ExprError::internal("scalar does not match its type")),
    };
    Ok(array)
}
