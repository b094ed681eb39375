//! SQL-syntax expressions for weir pipeline steps (`filter`, `derive`,
//! `emit ... where`).
//!
//! An expression is [`parse`]d into an [`Expr`], then [`compile`]d against
//! an Arrow [`Schema`] into a [`CompiledExpr`]: column names are resolved to
//! indices, types are checked, and constant subtrees are folded. A compiled
//! expression is evaluated on a whole [`RecordBatch`] at once; each operator
//! runs one tight loop over the column's value slice, and NULL handling is
//! done on validity bitmaps, once per batch.
//!
//! ```
//! use std::sync::Arc;
//! use arrow_array::{Array, Int64Array, RecordBatch};
//! use arrow_schema::{DataType, Field, Schema};
//!
//! let schema = Arc::new(Schema::new(vec![Field::new("amount_cents", DataType::Int64, true)]));
//! let batch = RecordBatch::try_new(
//!     schema.clone(),
//!     vec![Arc::new(Int64Array::from(vec![Some(250), None, Some(-5)]))],
//! )
//! .unwrap();
//! let keep = weir_expr::compile_predicate("amount_cents > 0", &schema).unwrap();
//! let mask = keep.evaluate_predicate(&batch).unwrap();
//! assert_eq!(mask.iter().collect::<Vec<_>>(), vec![Some(true), Some(false), Some(false)]);
//! ```
//!
//! # Language
//!
//! * Literals: integers (`BIGINT`), numbers with a decimal point or exponent
//!   (`DOUBLE`), `'strings'` (`''` escapes a quote), `TRUE`, `FALSE`, `NULL`.
//! * Columns: `[A-Za-z_][A-Za-z0-9_]*` (case-sensitive) or `"any name"`.
//!   Keywords are case-insensitive; reserved words (`AND OR NOT IS NULL IN
//!   BETWEEN LIKE CASE WHEN THEN ELSE END CAST AS TRUE FALSE`) must be
//!   quoted to be used as column names. `--` starts a comment.
//! * Operators, loosest first: `OR`; `AND`; `NOT`; comparisons
//!   (`= <> != < <= > >=`, `IS [NOT] NULL`, `[NOT] IN (...)`,
//!   `[NOT] BETWEEN a AND b`, `[NOT] LIKE p`); `||`; `+ -`; `* / %`;
//!   unary `- +`. Binary operators associate to the left. Nesting (including
//!   the length of operator chains such as `a + b + c ...`) is limited to 200
//!   levels; use `IN (...)` rather than long `OR` chains.
//! * `CASE WHEN c THEN v ... [ELSE v] END`, `CASE x WHEN v THEN r ... END`,
//!   `CAST(x AS t)` with `t` one of `BIGINT INT INTEGER SMALLINT`, `DOUBLE
//!   [PRECISION] FLOAT REAL`, `VARCHAR TEXT STRING`, `BOOLEAN BOOL`.
//! * Functions (case-insensitive): `abs sign sqrt cbrt exp ln log10 log2
//!   log(x) log(base, x) power/pow floor ceil/ceiling round(x[, d]) trunc mod
//!   sigmoid least greatest coalesce nullif lower upper length/char_length
//!   trim ltrim rtrim substr/substring(s, start[, len]) concat replace
//!   starts_with ends_with strpos`.
//!
//! # Types and semantics
//!
//! Values are BOOLEAN, BIGINT (`i64`), DOUBLE (`f64`) or VARCHAR. Input
//! columns may be `Boolean`, `Int8`..`Int64`, `UInt8`..`UInt64`, `Float32`,
//! `Float64` or `Utf8`; integers widen to BIGINT (a `UInt64` value above
//! `i64::MAX` reads as NULL) and `Float32` to DOUBLE. Results are always
//! `Boolean`, `Int64`, `Float64` or `Utf8` arrays — a bare reference to an
//! `Int32`/`UInt64`/`Float32` column returns the widened array. The bare
//! literal `NULL` has type BOOLEAN.
//!
//! * BIGINT op BIGINT is BIGINT (`/` truncates toward zero, `%` takes the
//!   sign of the dividend); with a DOUBLE on either side it is DOUBLE.
//!   Comparisons between BIGINT and DOUBLE compare as DOUBLE.
//! * DOUBLE arithmetic is plain IEEE 754 and evaluated exactly as written:
//!   `CAST(x AS DOUBLE) / 10000` is bit-for-bit `(x as f64) / 10000.0`, and
//!   `a / (b / c)` is never reassociated or fused. NaN compares unequal to
//!   everything; `%` on doubles is `fmod` (Rust's `%`).
//! * NULL propagates through operators and functions; `AND`/`OR`/`NOT` use
//!   SQL three-valued logic; `x IN (...)` is NULL rather than FALSE when it
//!   finds no match but the list (or `x`) contains NULL. `concat`,
//!   `coalesce`, `least` and `greatest` skip NULL arguments.
//! * Evaluation never panics on data. Integer overflow, division or modulo by
//!   zero (integer *and* double), `sqrt`/`ln`/`log` outside their domain,
//!   `power` with a complex or infinite result (`(-8)^(1/3)`, `0^-1`), an
//!   invalid `CAST` (`'abc'` to BIGINT) and a DOUBLE → BIGINT cast out of
//!   range or of NaN all yield NULL.
//! * `CAST(double AS BIGINT)` rounds to nearest, ties to even (as
//!   PostgreSQL); `round(x)` / `round(x, d)` round half away from zero.
//!   `CAST(text AS BOOLEAN)` accepts `true/false/t/f/yes/no/y/n/on/off/1/0`.
//! * Strings: positions and lengths count characters, `substr` and `strpos`
//!   are 1-based (`strpos` is 0 when absent), `trim` removes Unicode
//!   whitespace, `LIKE` is case-sensitive with `%`, `_` and `\` escapes.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod ast;
mod check;
mod error;
mod eval;
mod lexer;
mod like;
mod parser;
mod plan;
mod types;

pub use ast::{BinaryOp, CastType, Expr, Literal, UnaryOp};
pub use error::ExprError;
pub use parser::parse;
pub use types::sql_type_name;

use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::{DataType, Schema};
use plan::Plan;

/// An expression checked against a schema, ready to evaluate on batches of
/// that schema. Cheap to clone and shareable across threads.
#[derive(Debug, Clone)]
pub struct CompiledExpr {
    source: String,
    plan: Plan,
    data_type: DataType,
    columns: Vec<String>,
    /// `(schema index, expected Arrow type)` of every referenced column.
    inputs: Vec<(usize, DataType)>,
}

/// Parses `src` and type-checks it against `schema`.
pub fn compile(src: &str, schema: &Schema) -> Result<CompiledExpr, ExprError> {
    let expr = parse(src)?;
    let checked = check::check(&expr, schema)?;
    let inputs = checked
        .indices
        .iter()
        .map(|&i| (i, schema.field(i).data_type().clone()))
        .collect();
    Ok(CompiledExpr {
        source: src.to_string(),
        data_type: checked.plan.ty().data_type(),
        plan: checked.plan,
        columns: checked.columns,
        inputs,
    })
}

/// Like [`compile`], but also requires the result to be BOOLEAN, for
/// filters. Errors with `expected BOOLEAN predicate, found DOUBLE` and the
/// position of the expression's top-level node otherwise.
pub fn compile_predicate(src: &str, schema: &Schema) -> Result<CompiledExpr, ExprError> {
    let compiled = compile(src, schema)?;
    if compiled.data_type != DataType::Boolean {
        let position = parse(src).map(|e| e.position()).ok();
        return Err(ExprError::Type {
            message: format!(
                "expected BOOLEAN predicate, found {}",
                sql_type_name(&compiled.data_type)
            ),
            position,
        });
    }
    Ok(compiled)
}

impl CompiledExpr {
    /// Arrow type of the result: `Boolean`, `Int64`, `Float64` or `Utf8`.
    pub fn data_type(&self) -> &DataType {
        &self.data_type
    }

    /// Names of the input columns the expression reads, in order of first
    /// use, without duplicates.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The source text the expression was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the expression on every row of `batch`, which must have the
    /// schema the expression was compiled against (at least: the referenced
    /// columns at the same positions with the same types). Returns an array
    /// of [`CompiledExpr::data_type`] with `batch.num_rows()` rows.
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<ArrayRef, ExprError> {
        self.check_batch(batch)?;
        let len = batch.num_rows();
        let value = eval::eval(&self.plan, batch.columns(), len)?;
        value.into_array(self.plan.ty(), len)
    }

    /// Evaluates a BOOLEAN expression as a filter mask: NULL counts as
    /// false, so the result has no nulls. Errors if the expression is not
    /// BOOLEAN (use [`compile_predicate`] to catch that at compile time).
    pub fn evaluate_predicate(&self, batch: &RecordBatch) -> Result<BooleanArray, ExprError> {
        if self.data_type != DataType::Boolean {
            return Err(ExprError::eval(format!(
                "expected BOOLEAN predicate, found {}",
                sql_type_name(&self.data_type)
            )));
        }
        self.check_batch(batch)?;
        let len = batch.num_rows();
        let value = eval::eval(&self.plan, batch.columns(), len)?;
        let array = value.into_bool_array(len)?;
        Ok(match array.nulls() {
            None => array,
            Some(nulls) => BooleanArray::new(array.values() & nulls.inner(), None),
        })
    }

    fn check_batch(&self, batch: &RecordBatch) -> Result<(), ExprError> {
        for ((index, expected), name) in self.inputs.iter().zip(&self.columns) {
            let Some(column) = batch.columns().get(*index) else {
                return Err(ExprError::eval(format!(
                    "batch has {} columns, but column \"{name}\" is #{index} in the schema \
                     the expression was compiled for",
                    batch.num_columns()
                )));
            };
            if column.data_type() != expected {
                return Err(ExprError::eval(format!(
                    "column \"{name}\" (#{index}) is {} in the batch but was {} when the \
                     expression was compiled",
                    column.data_type(),
                    expected
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_expr_is_send_sync() {
        fn assert_send_sync<T: Send + Sync + Clone + std::fmt::Debug>() {}
        assert_send_sync::<CompiledExpr>();
        assert_send_sync::<ExprError>();
    }
}
