//! Arrow columns as PostgreSQL array parameters, in the binary format.
//!
//! The upsert binds each column of a batch as one array parameter and
//! unnests them on the server, so a batch is one statement whatever its
//! size. Encoding straight from the Arrow buffers into the outgoing message
//! copies each value once and allocates nothing per row (the `postgres`
//! crate's `Vec<Option<T>>` parameters would need a copy of every column,
//! and a string per value for `NUMERIC`, which has no Rust type there).
//!
//! Binary array format (see PostgreSQL's `array_recv`): number of
//! dimensions, a has-nulls flag, the element type's OID, per dimension its
//! length and lower bound, then each element as a 4-byte length (-1 for
//! NULL) followed by the element's own binary form.

use std::error::Error;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type, UInt32Type, UInt64Type};
use arrow_array::{Array, ArrowPrimitiveType, PrimitiveArray};
use bytes::{BufMut, BytesMut};
use postgres::types::{IsNull, Kind, ToSql, Type};

use crate::sql::ColumnKind;

type EncodeError = Box<dyn Error + Sync + Send>;

/// The rows of a batch that are sent: all of them, or (when the batch holds
/// an id more than once) the last row of each id, in order.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rows<'a> {
    All(usize),
    Selected(&'a [usize]),
}

impl Rows<'_> {
    pub(crate) fn len(self) -> usize {
        match self {
            Rows::All(n) => n,
            Rows::Selected(rows) => rows.len(),
        }
    }

    fn for_each(self, mut f: impl FnMut(usize)) {
        match self {
            Rows::All(n) => (0..n).for_each(&mut f),
            Rows::Selected(rows) => rows.iter().copied().for_each(&mut f),
        }
    }
}

/// The output ids, bound as `numeric[]` (a `u64` may exceed `BIGINT`).
#[derive(Debug)]
pub(crate) struct IdArray<'a> {
    pub(crate) ids: &'a [u64],
    pub(crate) rows: Rows<'a>,
}

/// One sink column of a batch, bound as an array of its SQL type.
#[derive(Debug)]
pub(crate) struct ColumnArray<'a> {
    pub(crate) array: &'a dyn Array,
    pub(crate) kind: ColumnKind,
    pub(crate) rows: Rows<'a>,
}

impl ToSql for IdArray<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, EncodeError> {
        expect_array_of(ty, &Type::NUMERIC)?;
        put_header(out, Type::NUMERIC.oid(), self.rows.len(), false)?;
        // At most 4 + 8 + 5 * 2 bytes per id.
        out.reserve(self.rows.len() * 22);
        self.rows.for_each(|i| put_numeric_u64(out, self.ids[i]));
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(ty.kind(), Kind::Array(_))
    }

    fn to_sql_checked(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, EncodeError> {
        self.to_sql(ty, out)
    }
}

impl ToSql for ColumnArray<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, EncodeError> {
        let element = self.kind.bind_type();
        expect_array_of(ty, &element)?;
        let has_nulls = self.array.null_count() > 0;
        put_header(out, element.oid(), self.rows.len(), has_nulls)?;
        let a = self.array;
        let mismatch = || -> EncodeError {
            format!(
                "column holds {} values, expected {}",
                a.data_type(),
                self.kind.arrow_name()
            )
            .into()
        };
        match self.kind {
            ColumnKind::Boolean => {
                let values = a.as_boolean_opt().ok_or_else(mismatch)?;
                out.reserve(self.rows.len() * 5);
                self.rows.for_each(|i| {
                    if values.is_null(i) {
                        out.put_i32(-1);
                    } else {
                        out.put_i32(1);
                        out.put_u8(u8::from(values.value(i)));
                    }
                });
            }
            ColumnKind::Int32 => put_fixed::<Int32Type>(out, a, self.rows, 4, |o, v| o.put_i32(v))
                .ok_or_else(mismatch)?,
            ColumnKind::Int64 => put_fixed::<Int64Type>(out, a, self.rows, 8, |o, v| o.put_i64(v))
                .ok_or_else(mismatch)?,
            ColumnKind::UInt32 => {
                put_fixed::<UInt32Type>(out, a, self.rows, 8, |o, v| o.put_i64(i64::from(v)))
                    .ok_or_else(mismatch)?
            }
            ColumnKind::Float32 => {
                put_fixed::<Float32Type>(out, a, self.rows, 4, |o, v| o.put_f32(v))
                    .ok_or_else(mismatch)?
            }
            ColumnKind::Float64 => {
                put_fixed::<Float64Type>(out, a, self.rows, 8, |o, v| o.put_f64(v))
                    .ok_or_else(mismatch)?
            }
            ColumnKind::UInt64 => {
                let values: &PrimitiveArray<UInt64Type> =
                    a.as_primitive_opt().ok_or_else(mismatch)?;
                out.reserve(self.rows.len() * 22);
                self.rows.for_each(|i| {
                    if values.is_null(i) {
                        out.put_i32(-1);
                    } else {
                        put_numeric_u64(out, values.value(i));
                    }
                });
            }
            ColumnKind::Utf8 => {
                let values = a.as_string_opt::<i32>().ok_or_else(mismatch)?;
                // Arrow's i32 offsets bound each value below 2 GiB, so its
                // length always fits the element's i32 length field.
                out.reserve(values.value_data().len() + self.rows.len() * 4);
                self.rows.for_each(|i| {
                    if values.is_null(i) {
                        out.put_i32(-1);
                    } else {
                        let s = values.value(i).as_bytes();
                        out.put_i32(s.len() as i32);
                        out.put_slice(s);
                    }
                });
            }
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(ty.kind(), Kind::Array(_))
    }

    fn to_sql_checked(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, EncodeError> {
        self.to_sql(ty, out)
    }
}

/// The statement casts each parameter to an array of a known type; a
/// different one means the statement and the encoder disagree.
fn expect_array_of(ty: &Type, element: &Type) -> Result<(), EncodeError> {
    match ty.kind() {
        Kind::Array(e) if e == element => Ok(()),
        _ => Err(format!("parameter is {ty}, expected {element}[]").into()),
    }
}

/// A one-dimensional array of `len` elements of type `element`, starting
/// at index 1 (an empty array has no dimensions).
fn put_header(
    out: &mut BytesMut,
    element: u32,
    len: usize,
    has_nulls: bool,
) -> Result<(), EncodeError> {
    let len = i32::try_from(len).map_err(|_| format!("{len} rows do not fit one array"))?;
    out.put_i32(i32::from(len > 0));
    out.put_i32(i32::from(has_nulls));
    out.put_u32(element);
    if len > 0 {
        out.put_i32(len);
        out.put_i32(1);
    }
    Ok(())
}

/// Elements of a fixed `width` from a primitive column; `None` when the
/// column is not of type `T`.
fn put_fixed<T: ArrowPrimitiveType>(
    out: &mut BytesMut,
    array: &dyn Array,
    rows: Rows<'_>,
    width: i32,
    put: impl Fn(&mut BytesMut, T::Native),
) -> Option<()> {
    let values: &PrimitiveArray<T> = array.as_primitive_opt()?;
    out.reserve(rows.len() * (4 + width as usize));
    rows.for_each(|i| {
        if values.is_null(i) {
            out.put_i32(-1);
        } else {
            out.put_i32(width);
            put(out, values.value(i));
        }
    });
    Some(())
}

/// Base-10000 digits of `v`, most significant first, trailing zero digits
/// dropped (PostgreSQL's normal form); returns the digits and the weight
/// (the power of 10000 of the first digit).
fn numeric_digits(mut v: u64) -> ([i16; 5], usize, i16) {
    // u64::MAX has 20 decimal digits: 5 base-10000 digits.
    let mut rev = [0i16; 5];
    let mut n = 0;
    while v > 0 {
        rev[n] = (v % 10_000) as i16;
        v /= 10_000;
        n += 1;
    }
    let weight = n as i16 - 1;
    let mut digits = [0i16; 5];
    for k in 0..n {
        digits[k] = rev[n - 1 - k];
    }
    let mut len = n;
    while len > 0 && digits[len - 1] == 0 {
        len -= 1;
    }
    (digits, len, if len == 0 { 0 } else { weight })
}

/// One `NUMERIC` element holding a `u64`: digit count, weight, sign
/// (positive), display scale (0), then the digits.
fn put_numeric_u64(out: &mut BytesMut, v: u64) {
    let (digits, len, weight) = numeric_digits(v);
    out.put_i32(8 + 2 * len as i32);
    out.put_i16(len as i16);
    out.put_i16(weight);
    out.put_u16(0x0000);
    out.put_u16(0);
    for d in &digits[..len] {
        out.put_i16(*d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits(v: u64) -> (Vec<i16>, i16) {
        let (d, len, weight) = numeric_digits(v);
        (d[..len].to_vec(), weight)
    }

    #[test]
    fn numeric_digits_are_base_10000_without_trailing_zeros() {
        assert_eq!(digits(0), (vec![], 0));
        assert_eq!(digits(7), (vec![7], 0));
        assert_eq!(digits(10_000), (vec![1], 1));
        assert_eq!(digits(123_456_789), (vec![1, 2345, 6789], 2));
        // 1 0000 0000 0001 in groups of four digits.
        assert_eq!(digits(1_000_000_000_001), (vec![1, 0, 0, 1], 3));
        assert_eq!(digits(u64::MAX), (vec![1844, 6744, 737, 955, 1615], 4));
    }

    #[test]
    fn an_id_array_is_encoded_exactly() {
        let ids = [10_000u64, 0, 42];
        let rows = [2usize, 0];
        let mut out = BytesMut::new();
        let arr = IdArray {
            ids: &ids,
            rows: Rows::Selected(&rows),
        };
        arr.to_sql(&Type::NUMERIC_ARRAY, &mut out).unwrap();
        let mut want = BytesMut::new();
        for v in [1i32, 0, 1700, 2, 1] {
            want.put_i32(v);
        }
        // 42: one digit, weight 0.
        want.put_i32(10);
        for v in [1i16, 0, 0, 0, 42] {
            want.put_i16(v);
        }
        // 10000: one digit, weight 1.
        want.put_i32(10);
        for v in [1i16, 1, 0, 0, 1] {
            want.put_i16(v);
        }
        assert_eq!(out, want);
        let Err(err) = arr.to_sql(&Type::INT8_ARRAY, &mut out) else {
            panic!("an int8[] parameter must be refused");
        };
        assert_eq!(err.to_string(), "parameter is _int8, expected numeric[]");
    }

    #[test]
    fn a_column_of_another_type_is_an_error_not_a_panic() {
        let strings = arrow_array::StringArray::from(vec!["a"]);
        let column = ColumnArray {
            array: &strings,
            kind: ColumnKind::Int64,
            rows: Rows::All(1),
        };
        let Err(err) = column.to_sql(&Type::INT8_ARRAY, &mut BytesMut::new()) else {
            panic!("strings must not be encoded as int8");
        };
        assert_eq!(err.to_string(), "column holds Utf8 values, expected Int64");
    }
}
