//! The four value kinds expressions compute with, and how Arrow types map
//! onto them.
//!
//! Input columns come in many Arrow integer/float widths; internally every
//! value is one of BOOLEAN, BIGINT (`i64`), DOUBLE (`f64`) or VARCHAR, which
//! keeps the number of evaluation kernels small. `Null` is only used by the
//! type checker for the untyped `NULL` literal before it is coerced.

use arrow_schema::DataType;

/// Internal value kind of an expression node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Ty {
    /// `BOOLEAN` — Arrow `Boolean`.
    Bool,
    /// `BIGINT` — Arrow `Int64`.
    Int,
    /// `DOUBLE` — Arrow `Float64`.
    Float,
    /// `VARCHAR` — Arrow `Utf8`.
    Str,
    /// Type of the bare `NULL` literal; coerces to any other kind.
    Null,
}

impl Ty {
    /// SQL name used in messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Ty::Bool => "BOOLEAN",
            Ty::Int => "BIGINT",
            Ty::Float => "DOUBLE",
            Ty::Str => "VARCHAR",
            Ty::Null => "NULL",
        }
    }

    /// Arrow type of arrays of this kind. An expression whose type is still
    /// `Null` after checking (e.g. the bare literal `NULL`) evaluates to a
    /// `Boolean` array of nulls, so it is also usable as a predicate.
    pub(crate) fn data_type(self) -> DataType {
        match self {
            Ty::Bool | Ty::Null => DataType::Boolean,
            Ty::Int => DataType::Int64,
            Ty::Float => DataType::Float64,
            Ty::Str => DataType::Utf8,
        }
    }

    /// The kind after resolving `Null` to its default (BOOLEAN).
    pub(crate) fn concrete(self) -> Ty {
        if self == Ty::Null {
            Ty::Bool
        } else {
            self
        }
    }

    /// BIGINT or DOUBLE.
    pub(crate) fn is_numeric(self) -> bool {
        matches!(self, Ty::Int | Ty::Float)
    }

    /// Kind an input column of Arrow type `dt` is read as, if supported.
    pub(crate) fn from_arrow(dt: &DataType) -> Option<Ty> {
        match dt {
            DataType::Boolean => Some(Ty::Bool),
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64 => Some(Ty::Int),
            DataType::Float32 | DataType::Float64 => Some(Ty::Float),
            DataType::Utf8 => Some(Ty::Str),
            _ => None,
        }
    }
}

/// Common numeric kind of two operands: BIGINT if both are BIGINT (or NULL),
/// DOUBLE if either is DOUBLE. `None` if either is not numeric.
pub(crate) fn numeric_common(a: Ty, b: Ty) -> Option<Ty> {
    match (a, b) {
        (Ty::Null, Ty::Null) => Some(Ty::Int),
        (Ty::Null, t) | (t, Ty::Null) if t.is_numeric() => Some(t),
        (Ty::Int, Ty::Int) => Some(Ty::Int),
        (Ty::Int | Ty::Float, Ty::Int | Ty::Float) => Some(Ty::Float),
        _ => None,
    }
}

/// Common kind of values that end up in the same result column (CASE
/// branches, COALESCE arguments, IN lists, comparison operands). `NULL`
/// unifies with anything, BIGINT with DOUBLE gives DOUBLE; otherwise the kinds
/// must be equal.
pub(crate) fn unify(a: Ty, b: Ty) -> Option<Ty> {
    match (a, b) {
        (Ty::Null, t) | (t, Ty::Null) => Some(t),
        (x, y) if x == y => Some(x),
        (x, y) => numeric_common(x, y),
    }
}

/// SQL name of an Arrow data type, for messages (`BIGINT`, `DOUBLE`,
/// `VARCHAR`, ...). Types the crate cannot read still get a descriptive name.
pub fn sql_type_name(dt: &DataType) -> &'static str {
    match dt {
        DataType::Null => "NULL",
        DataType::Boolean => "BOOLEAN",
        DataType::Int8 => "TINYINT",
        DataType::Int16 => "SMALLINT",
        DataType::Int32 => "INTEGER",
        DataType::Int64 => "BIGINT",
        DataType::UInt8 => "UTINYINT",
        DataType::UInt16 => "USMALLINT",
        DataType::UInt32 => "UINTEGER",
        DataType::UInt64 => "UBIGINT",
        DataType::Float16 => "HALF",
        DataType::Float32 => "REAL",
        DataType::Float64 => "DOUBLE",
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR",
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => "BLOB",
        DataType::Date32 | DataType::Date64 => "DATE",
        DataType::Time32(_) | DataType::Time64(_) => "TIME",
        DataType::Timestamp(_, _) => "TIMESTAMP",
        DataType::Duration(_) | DataType::Interval(_) => "INTERVAL",
        DataType::Decimal32(_, _)
        | DataType::Decimal64(_, _)
        | DataType::Decimal128(_, _)
        | DataType::Decimal256(_, _) => "DECIMAL",
        DataType::List(_)
        | DataType::ListView(_)
        | DataType::LargeList(_)
        | DataType::LargeListView(_)
        | DataType::FixedSizeList(_, _) => "LIST",
        DataType::Struct(_) => "STRUCT",
        DataType::Map(_, _) => "MAP",
        DataType::Union(_, _) => "UNION",
        DataType::Dictionary(_, _) => "DICTIONARY",
        DataType::RunEndEncoded(_, _) => "RUN_END_ENCODED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unify_rules() {
        assert_eq!(unify(Ty::Int, Ty::Float), Some(Ty::Float));
        assert_eq!(unify(Ty::Null, Ty::Str), Some(Ty::Str));
        assert_eq!(unify(Ty::Str, Ty::Int), None);
        assert_eq!(unify(Ty::Bool, Ty::Bool), Some(Ty::Bool));
        assert_eq!(numeric_common(Ty::Bool, Ty::Int), None);
        assert_eq!(numeric_common(Ty::Null, Ty::Null), Some(Ty::Int));
    }

    #[test]
    fn names() {
        assert_eq!(sql_type_name(&DataType::Int64), "BIGINT");
        assert_eq!(sql_type_name(&DataType::Float64), "DOUBLE");
        assert_eq!(sql_type_name(&DataType::Utf8), "VARCHAR");
        assert_eq!(Ty::Float.name(), "DOUBLE");
    }
}
