//! Shared fixtures for the integration tests: a small batch covering every
//! supported input type (with NULLs and edge values) and typed accessors.
#![allow(dead_code)]

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, UInt32Array, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use std::sync::Arc;

pub fn schema() -> SchemaRef {
    batch().schema()
}

/// Five rows. Columns:
/// i   Int64   [1, -7, NULL, i64::MAX, 0]
/// j   Int64   [2, 2, 3, 1, 0]
/// m   Int64   [i64::MIN, -1, 5, NULL, 2]
/// f   Float64 [1.5, -2.0, 0.0, NULL, 100.25]
/// g   Float64 [0.5, NULL, 4.0, 2.0, -1.0]
/// s   Utf8    ["apple", "Banana", NULL, "cherry pie", ""]
/// t   Utf8    ["app", "an", "x", NULL, ""]
/// num Utf8    ["12", " -7 ", "abc", NULL, "1e3"]
/// b   Boolean [true, false, NULL, true, false]
/// c   Boolean [NULL, NULL, NULL, false, true]
/// i32c Int32  [1, -2, NULL, i32::MAX, i32::MIN]
/// u32c UInt32 [u32::MAX, 0, 1, NULL, 7]
/// u64c UInt64 [1, u64::MAX, NULL, 5, i64::MAX]
/// f32c Float32 [0.5, NULL, 1.25, -3.0, 0.1]
pub fn batch() -> RecordBatch {
    let cols: Vec<(&str, ArrayRef)> = vec![
        (
            "i",
            Arc::new(Int64Array::from(vec![
                Some(1),
                Some(-7),
                None,
                Some(i64::MAX),
                Some(0),
            ])),
        ),
        ("j", Arc::new(Int64Array::from(vec![2, 2, 3, 1, 0]))),
        (
            "m",
            Arc::new(Int64Array::from(vec![
                Some(i64::MIN),
                Some(-1),
                Some(5),
                None,
                Some(2),
            ])),
        ),
        (
            "f",
            Arc::new(Float64Array::from(vec![
                Some(1.5),
                Some(-2.0),
                Some(0.0),
                None,
                Some(100.25),
            ])),
        ),
        (
            "g",
            Arc::new(Float64Array::from(vec![
                Some(0.5),
                None,
                Some(4.0),
                Some(2.0),
                Some(-1.0),
            ])),
        ),
        (
            "s",
            Arc::new(StringArray::from(vec![
                Some("apple"),
                Some("Banana"),
                None,
                Some("cherry pie"),
                Some(""),
            ])),
        ),
        (
            "t",
            Arc::new(StringArray::from(vec![
                Some("app"),
                Some("an"),
                Some("x"),
                None,
                Some(""),
            ])),
        ),
        (
            "num",
            Arc::new(StringArray::from(vec![
                Some("12"),
                Some(" -7 "),
                Some("abc"),
                None,
                Some("1e3"),
            ])),
        ),
        (
            "b",
            Arc::new(BooleanArray::from(vec![
                Some(true),
                Some(false),
                None,
                Some(true),
                Some(false),
            ])),
        ),
        (
            "c",
            Arc::new(BooleanArray::from(vec![
                None,
                None,
                None,
                Some(false),
                Some(true),
            ])),
        ),
        (
            "i32c",
            Arc::new(Int32Array::from(vec![
                Some(1),
                Some(-2),
                None,
                Some(i32::MAX),
                Some(i32::MIN),
            ])),
        ),
        (
            "u32c",
            Arc::new(UInt32Array::from(vec![
                Some(u32::MAX),
                Some(0),
                Some(1),
                None,
                Some(7),
            ])),
        ),
        (
            "u64c",
            Arc::new(UInt64Array::from(vec![
                Some(1),
                Some(u64::MAX),
                None,
                Some(5),
                Some(i64::MAX as u64),
            ])),
        ),
        (
            "f32c",
            Arc::new(Float32Array::from(vec![
                Some(0.5),
                None,
                Some(1.25),
                Some(-3.0),
                Some(0.1),
            ])),
        ),
    ];
    let fields: Vec<Field> = cols
        .iter()
        .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
        .collect();
    let arrays = cols.into_iter().map(|(_, a)| a).collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("valid batch")
}

pub fn eval(src: &str) -> ArrayRef {
    let b = batch();
    let e = weir_expr::compile(src, &b.schema()).unwrap_or_else(|e| panic!("{src}: {e}"));
    let out = e.evaluate(&b).unwrap_or_else(|e| panic!("{src}: {e}"));
    assert_eq!(out.len(), b.num_rows(), "{src}");
    assert_eq!(out.data_type(), e.data_type(), "{src}");
    out
}

pub fn ints(src: &str) -> Vec<Option<i64>> {
    let a = eval(src);
    assert_eq!(a.data_type(), &DataType::Int64, "{src}");
    a.as_primitive::<Int64Type>().iter().collect()
}

pub fn floats(src: &str) -> Vec<Option<f64>> {
    let a = eval(src);
    assert_eq!(a.data_type(), &DataType::Float64, "{src}");
    a.as_primitive::<Float64Type>().iter().collect()
}

pub fn strs(src: &str) -> Vec<Option<String>> {
    let a = eval(src);
    assert_eq!(a.data_type(), &DataType::Utf8, "{src}");
    a.as_string::<i32>()
        .iter()
        .map(|v| v.map(str::to_string))
        .collect()
}

pub fn bools(src: &str) -> Vec<Option<bool>> {
    let a = eval(src);
    assert_eq!(a.data_type(), &DataType::Boolean, "{src}");
    a.as_boolean().iter().collect()
}

/// Shorthand for an expected string column.
pub fn s(v: &[Option<&str>]) -> Vec<Option<String>> {
    v.iter().map(|x| x.map(str::to_string)).collect()
}

pub const T: Option<bool> = Some(true);
pub const F: Option<bool> = Some(false);
pub const N: Option<bool> = None;
