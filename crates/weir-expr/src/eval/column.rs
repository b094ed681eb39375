//! Reading input columns as one of the four internal kinds.
//!
//! `Int64`, `Float64`, `Boolean` and `Utf8` columns are used as they are
//! (a reference-count bump). Narrower integers and `Float32` are widened
//! losslessly; `UInt64` values above `i64::MAX` become NULL.

use super::value::Value;
use crate::error::ExprError;
use crate::types::sql_type_name;
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Int16Type, Int32Type, Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef, ArrowPrimitiveType, Int64Array};
use arrow_buffer::NullBuffer;
use arrow_schema::DataType;

fn widen<T>(array: &ArrayRef) -> Value
where
    T: ArrowPrimitiveType,
    T::Native: Into<i64>,
{
    let a = array.as_primitive::<T>();
    let values: Vec<i64> = a.values().iter().map(|&v| v.into()).collect();
    Value::Int(Int64Array::new(values.into(), a.nulls().cloned()))
}

/// Reads column `index` of `columns`, checking that it has `len` rows.
pub(crate) fn read(columns: &[ArrayRef], index: usize, len: usize) -> Result<Value, ExprError> {
    let array = columns.get(index).ok_or_else(|| {
        ExprError::eval(format!(
            "batch has {} columns but the expression reads column #{index}; \
             evaluate on batches with the schema the expression was compiled for",
            columns.len()
        ))
    })?;
    if array.len() != len {
        return Err(ExprError::eval(format!(
            "column #{index} has {} rows, expected {len}",
            array.len()
        )));
    }
    let value = match array.data_type() {
        DataType::Int64 => Value::Int(array.as_primitive().clone()),
        DataType::Float64 => Value::Float(array.as_primitive().clone()),
        DataType::Boolean => Value::Bool(array.as_boolean().clone()),
        DataType::Utf8 => Value::Str(array.as_string::<i32>().clone()),
        DataType::Int32 => widen::<Int32Type>(array),
        DataType::UInt32 => widen::<UInt32Type>(array),
        DataType::Int16 => widen::<Int16Type>(array),
        DataType::UInt16 => widen::<UInt16Type>(array),
        DataType::Int8 => widen::<Int8Type>(array),
        DataType::UInt8 => widen::<UInt8Type>(array),
        DataType::UInt64 => {
            let a = array.as_primitive::<UInt64Type>();
            let values: Vec<i64> = a.values().iter().map(|&v| v as i64).collect();
            let fits = a.values().iter().all(|&v| i64::try_from(v).is_ok());
            let nulls = if fits {
                a.nulls().cloned()
            } else {
                let ok = NullBuffer::from(
                    a.values()
                        .iter()
                        .map(|&v| i64::try_from(v).is_ok())
                        .collect::<Vec<bool>>(),
                );
                NullBuffer::union(a.nulls(), Some(&ok))
            };
            Value::Int(Int64Array::new(values.into(), nulls))
        }
        DataType::Float32 => {
            let a = array.as_primitive::<Float32Type>();
            let values: Vec<f64> = a.values().iter().map(|&v| f64::from(v)).collect();
            Value::float(values, a.nulls().cloned())
        }
        other => {
            return Err(ExprError::eval(format!(
                "column #{index} has unsupported type {} ({other})",
                sql_type_name(other)
            )))
        }
    };
    Ok(value)
}
